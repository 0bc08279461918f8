//! The one error a manifest can fail with: what is wrong, in which file, on which line, at which
//! field.

use std::fmt;

use super::locate::repeated_key_line;

/// A manifest that cannot be used. Displays as `file:line: field: message`; parts that are not
/// known are left out (`file` is empty for an error found in the environment, not the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    /// One-based.
    pub line: Option<usize>,
    /// Dotted path such as `pipelines.review.stages[1].connector`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = self.file.clone();
        if let Some(line) = self.line {
            prefix = format!("{prefix}:{line}");
        }
        for part in [prefix.as_str(), self.field.as_str()] {
            if !part.is_empty() {
                write!(f, "{part}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Something the manifest allows but should be looked at: logged at load (`tracing::warn!`),
/// never refused. Displays as `file:line: field: message`, as [`ManifestError`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWarning {
    pub file: String,
    /// One-based.
    pub line: Option<usize>,
    /// Dotted path such as `sources.github.tenant`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let as_error = ManifestError {
            file: self.file.clone(),
            line: self.line,
            field: self.field.clone(),
            message: self.message.clone(),
        };
        fmt::Display::fmt(&as_error, f)
    }
}

/// How serde's own messages begin; the text before `": " + stem` in a serde_yaml message is the
/// path of the field at fault.
const SERDE_MESSAGE_STEMS: &[&str] = &[
    "invalid type",
    "invalid value",
    "invalid length",
    "unknown variant",
    "unknown field",
    "missing field",
    "duplicate field",
    "duplicate entry",
    "data did not match",
];

impl ManifestError {
    /// A YAML syntax or shape error in `text`, with serde_yaml's line and the path it reports.
    pub(super) fn from_yaml(file: &str, text: &str, error: &serde_yaml::Error) -> Self {
        let location = error.location();
        let mut rendered = error.to_string();
        if let Some(at) = &location {
            rendered = rendered.replacen(
                &format!(" at line {} column {}", at.line(), at.column()),
                "",
                1,
            );
        }
        let (path, message) = split_path(&rendered);
        let mut line = location.as_ref().map(|at| at.line());
        // Name the key itself for unknown, missing and repeated keys, not only the map holding
        // it; a repeated key is shown where it repeats, not where its map starts.
        let mut key = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|stem| message.strip_prefix(stem)?.split('`').next());
        if let Some(repeated) = message
            .strip_prefix("duplicate entry with key \"")
            .and_then(|rest| rest.strip_suffix('"'))
        {
            key = Some(repeated);
            line = location
                .as_ref()
                .and_then(|at| repeated_key_line(text, at.line(), at.column(), repeated))
                .or(line);
        }
        let field = match (path, key) {
            ("", Some(key)) => key.to_owned(),
            (path, Some(key)) => format!("{path}.{key}"),
            (path, None) => path.to_owned(),
        };
        Self {
            file: file.to_owned(),
            line,
            field,
            message: message.to_owned(),
        }
    }
}

/// Splits `path: message` as serde_yaml writes it (no path for the document root).
fn split_path(text: &str) -> (&str, &str) {
    let is_stem = |s: &str| SERDE_MESSAGE_STEMS.iter().any(|stem| s.starts_with(stem));
    if is_stem(text) {
        return ("", text);
    }
    text.match_indices(": ")
        .map(|(i, _)| (&text[..i], &text[i + 2..]))
        .find(|(_, message)| is_stem(message))
        .unwrap_or(("", text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_unknown_parts() {
        let mut e = ManifestError {
            file: "sluice.yaml".into(),
            line: Some(4),
            field: "sources.a.scheme".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "sluice.yaml:4: sources.a.scheme: bad");
        e.line = None;
        assert_eq!(e.to_string(), "sluice.yaml: sources.a.scheme: bad");
        e.file.clear();
        assert_eq!(e.to_string(), "sources.a.scheme: bad");
    }

    #[test]
    fn serde_paths_are_split_from_messages() {
        assert_eq!(
            split_path("sources.a: invalid type: integer `5`, expected a map"),
            ("sources.a", "invalid type: integer `5`, expected a map")
        );
        assert_eq!(split_path("invalid type: x"), ("", "invalid type: x"));
        assert_eq!(
            split_path("did not find expected key"),
            ("", "did not find expected key")
        );
    }
}
