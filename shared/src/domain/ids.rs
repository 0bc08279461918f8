//! Identifier newtypes. Generated ids carry a prefix so a reader of logs knows what they name.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest id Sluice accepts (DynamoDB keys allow 2 KiB; ours stay far below).
pub const MAX_ID_LEN: usize = 256;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        id_type!($(#[$doc])* $name, allow_hash = true);
    };
    ($(#[$doc:meta])* $name:ident, allow_hash = $allow_hash:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps `value`; rejects empty, oversize, or control-character ids.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                validate(stringify!($name), &value, $allow_hash)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

/// An id that breaks the rules of [`id_type!`]'s `parse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    /// Which id type refused it.
    pub kind: &'static str,
    /// Why.
    pub reason: &'static str,
}

fn validate(kind: &'static str, value: &str, allow_hash: bool) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId {
            kind,
            reason: "empty",
        });
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidId {
            kind,
            reason: "longer than 256 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidId {
            kind,
            reason: "contains a control character",
        });
    }
    if !allow_hash && value.contains('#') {
        return Err(InvalidId {
            kind,
            reason: "contains '#', the key separator",
        });
    }
    Ok(())
}

id_type!(
    /// One pipeline run. `exe_` + 26 characters.
    ExecutionId
);
id_type!(
    /// A webhook sender as configured (`github-acme`, `stripe`, ...).
    SourceId,
    allow_hash = false
);
id_type!(
    /// The sender's id for one delivery (GitHub's X-GitHub-Delivery, Stripe's event id, ...).
    DeliveryId
);
id_type!(
    /// A tenant, from the source's configuration or the caller's verified JWT.
    TenantId,
    allow_hash = false
);
id_type!(
    /// An HTTP service that tools call.
    ConnectorId,
    allow_hash = false
);
id_type!(
    /// A tool (action type) on a connector.
    ToolName,
    allow_hash = false
);
id_type!(
    /// A pipeline as configured.
    PipelineName,
    allow_hash = false
);
id_type!(
    /// What makes two deliveries the same run (GitHub: repository + head SHA).
    RunKey
);
id_type!(
    /// Whoever holds a lease or a slot: one worker's attempt at one thing. `hld_` + ULID.
    HolderId
);

impl ExecutionId {
    /// The execution id of the run `run_key` of `source` for `tenant`: the same inputs give
    /// the same id, so a second create for one run key lands on the first one's item, and two
    /// tenants with the same run key on one source get two executions. The digest covers
    /// `tenant 0x00 source 0x00 run_key` (neither a tenant nor a source holds a NUL).
    pub fn for_run_key(tenant: &TenantId, source: &SourceId, run_key: &RunKey) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(tenant.as_str().as_bytes());
        hasher.update([0u8]);
        hasher.update(source.as_str().as_bytes());
        hasher.update([0u8]);
        hasher.update(run_key.as_str().as_bytes());
        let digest = hex::encode(hasher.finalize());
        Self(format!("exe_{}", &digest[..26]))
    }

    /// A fresh random execution id (replays).
    pub fn random() -> Self {
        Self(format!(
            "exe_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ))
    }
}

impl HolderId {
    /// A fresh random holder id.
    pub fn random() -> Self {
        Self(format!(
            "hld_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_key_ids_are_stable_and_distinct() {
        let s = SourceId::parse("github").unwrap();
        let t = TenantId::parse("acme").unwrap();
        let key = |k: &str| RunKey::parse(k).unwrap();
        let a = ExecutionId::for_run_key(&t, &s, &key("acme/app@abc"));
        let b = ExecutionId::for_run_key(&t, &s, &key("acme/app@abc"));
        let c = ExecutionId::for_run_key(&t, &s, &key("acme/app@abd"));
        let other_tenant =
            ExecutionId::for_run_key(&TenantId::parse("beta").unwrap(), &s, &key("acme/app@abc"));
        let other_source = ExecutionId::for_run_key(
            &t,
            &SourceId::parse("gitlab").unwrap(),
            &key("acme/app@abc"),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, other_tenant);
        assert_ne!(a, other_source);
        assert_eq!(a.as_str().len(), 30);
        assert!(a.as_str().starts_with("exe_"));
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(SourceId::parse("").is_err());
        assert!(SourceId::parse("a\nb").is_err());
        assert!(SourceId::parse("x".repeat(257)).is_err());
        assert!(SourceId::parse("x".repeat(256)).is_ok());
        assert!(SourceId::parse("a#b").is_err());
        assert!(DeliveryId::parse("a#b").is_ok());
    }
}
