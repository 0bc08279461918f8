//! Local API auth: HS256 bearer tokens checked with a secret the local run generates (or takes
//! from `SLUICE_DEV_JWT_SECRET`) and prints.
//!
//! This stands in for API Gateway's JWT authorizer, which verifies tokens before the replay
//! function sees a request and hands it the claims. It exists only in this crate: the Lambda
//! functions never verify a token themselves, so no build of theirs contains this code.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sluice::domain::ids::TenantId;
use sluice::edge::Claims;

/// The claims a dev token carries: the same names Cognito puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Who asks (becomes `requested_by` / `set_by` in the audit trail).
    pub sub: String,
    /// The tenant the caller may see.
    #[serde(rename = "custom:tenant_id")]
    pub tenant_id: String,
    /// Expiry, epoch seconds.
    pub exp: u64,
}

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error)]
pub enum DevAuthError {
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    /// The token is malformed, badly signed, expired or lacks a claim.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The tenant claim is not a valid tenant id.
    #[error("invalid `custom:tenant_id` claim: {0}")]
    Tenant(#[source] sluice::domain::ids::InvalidId),
    /// Signing a token failed.
    #[error("cannot sign a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Verifies (and, for the printout and tests, mints) HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct DevAuth {
    secret: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for DevAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAuth").finish_non_exhaustive()
    }
}

impl DevAuth {
    /// Tokens signed with `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = secret.into();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            secret,
            validation,
        }
    }

    /// A fresh random secret (32 bytes, hex).
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self::new(hex::encode(bytes))
    }

    /// The shared secret, to print.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A token for `tenant` and subject `sub`, valid for `ttl_secs` from now.
    pub fn mint(&self, tenant: &str, sub: &str, ttl_secs: u64) -> Result<String, DevAuthError> {
        let claims = TokenClaims {
            sub: sub.to_owned(),
            tenant_id: tenant.to_owned(),
            exp: epoch_secs() + ttl_secs,
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, DevAuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(DevAuthError::Sign)
    }

    /// Verifies the value of an `Authorization` header and returns the caller's claims.
    pub fn verify_header(&self, authorization: &str) -> Result<Claims, DevAuthError> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(DevAuthError::NotBearer)?;
        self.verify(token)
    }

    /// Verifies a token and returns the caller's claims.
    pub fn verify(&self, token: &str) -> Result<Claims, DevAuthError> {
        let data = decode::<TokenClaims>(token, &self.decoding, &self.validation)
            .map_err(DevAuthError::Invalid)?;
        let tenant = TenantId::parse(data.claims.tenant_id).map_err(DevAuthError::Tenant)?;
        Ok(Claims {
            tenant,
            subject: data.claims.sub,
        })
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let auth = DevAuth::generate();
        let token = auth.mint("demo", "dev@example", 60).unwrap();
        let claims = auth.verify_header(&format!("Bearer {token}")).unwrap();
        assert_eq!(claims.tenant.as_str(), "demo");
        assert_eq!(claims.subject, "dev@example");
    }

    #[test]
    fn wrong_secret_expired_and_malformed_tokens_are_refused() {
        let auth = DevAuth::new("one");
        let other = DevAuth::new("two");
        let token = other.mint("demo", "x", 60).unwrap();
        assert!(matches!(auth.verify(&token), Err(DevAuthError::Invalid(_))));
        let expired = auth
            .sign(&TokenClaims {
                sub: "x".into(),
                tenant_id: "demo".into(),
                exp: epoch_secs() - 600,
            })
            .unwrap();
        assert!(matches!(
            auth.verify(&expired),
            Err(DevAuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.verify("a.b.c"),
            Err(DevAuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.verify_header("Basic abc"),
            Err(DevAuthError::NotBearer)
        ));
        let bad_tenant = auth
            .sign(&TokenClaims {
                sub: "x".into(),
                tenant_id: "a#b".into(),
                exp: epoch_secs() + 60,
            })
            .unwrap();
        assert!(matches!(
            auth.verify(&bad_tenant),
            Err(DevAuthError::Tenant(_))
        ));
    }

    #[test]
    fn a_token_without_a_tenant_is_refused() {
        #[derive(Serialize)]
        struct NoTenant {
            sub: String,
            exp: u64,
        }
        let auth = DevAuth::new("s");
        let token = encode(
            &Header::new(Algorithm::HS256),
            &NoTenant {
                sub: "x".into(),
                exp: epoch_secs() + 60,
            },
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(matches!(auth.verify(&token), Err(DevAuthError::Invalid(_))));
    }

    #[test]
    fn another_algorithm_is_refused() {
        let auth = DevAuth::new("s");
        let token = encode(
            &Header::new(Algorithm::HS384),
            &TokenClaims {
                sub: "x".into(),
                tenant_id: "demo".into(),
                exp: epoch_secs() + 60,
            },
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(matches!(auth.verify(&token), Err(DevAuthError::Invalid(_))));
    }
}
