//! [`Redactor`]: replaces configured secret values (source signing secrets, connector tokens)
//! in every string of an alert's payload with `[redacted]` before it is sent or stored.

use std::fmt;

/// What a secret value becomes.
pub const REDACTED: &str = "[redacted]";

/// Secret values shorter than this are ignored: replacing them would mangle ordinary words and
/// they are too weak to be worth hiding that way.
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces known secret values in text. Its `Debug` shows how many it knows, never them.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor of `secrets` (values shorter than [`MIN_SECRET_LEN`] bytes are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every known secret replaced by [`REDACTED`].
    pub fn text(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |acc, secret| {
            if acc.contains(secret.as_str()) {
                acc.replace(secret.as_str(), REDACTED)
            } else {
                acc
            }
        })
    }

    /// Redacts every string (keys included) in `value`, in place.
    pub fn json(&self, value: &mut serde_json::Value) {
        if self.secrets.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => *s = self.text(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.json(&mut v);
                    map.insert(self.text(&key), v);
                }
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replaces_every_occurrence_in_every_string() {
        let r = Redactor::new(["tok_123456".to_owned(), "hunter2hunter2".to_owned()]);
        let mut v = json!({
            "error_code": "E_tok_123456_tok_123456",
            "pipeline": "p-hunter2hunter2",
            "nested": ["tok_123456", 7, null, {"tok_123456": true}],
            "clean": "nothing here",
        });
        r.json(&mut v);
        assert_eq!(
            v,
            json!({
                "error_code": "E_[redacted]_[redacted]",
                "pipeline": "p-[redacted]",
                "nested": ["[redacted]", 7, null, {"[redacted]": true}],
                "clean": "nothing here",
            })
        );
        assert!(!format!("{r:?}").contains("tok_"));
    }

    #[test]
    fn short_values_are_ignored_and_longer_secrets_win() {
        let r = Redactor::new([
            "abc".to_owned(),
            "secret".to_owned(),
            "secret-long".to_owned(),
        ]);
        assert_eq!(
            r.text("abc secret-long secret"),
            "abc [redacted] [redacted]"
        );
        assert_eq!(Redactor::new(Vec::new()).text("secret"), "secret");
    }
}
