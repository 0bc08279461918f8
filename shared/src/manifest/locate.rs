//! Field paths (`pipelines.review.stages[1].connector`) and the line a path sits on in the
//! manifest's text.
//!
//! The locator walks block-style YAML by indentation and `- ` list items. It does not parse
//! YAML: it is only used to point a human at a line after the document already parsed. Flow
//! style (`{ a: 1 }`, `[1, 2]`) is not entered; the line of the deepest enclosing key is given
//! instead.

use std::fmt;

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// A path from the document root to a field, shown as `a.b[2].c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldPath(Vec<Step>);

impl FieldPath {
    /// The document root.
    pub(super) fn root() -> Self {
        Self::default()
    }

    /// This path extended by mapping key `key`.
    pub(super) fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        Self(steps)
    }

    /// This path extended by list index `index`.
    pub(super) fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A line that holds YAML content (not blank, not a comment, not a document marker).
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    /// One-based line number.
    number: usize,
    /// Column where `text` starts.
    indent: usize,
    text: &'a str,
}

impl Line<'_> {
    fn is_item(&self) -> bool {
        self.text == "-" || self.text.starts_with("- ")
    }
}

/// The one-based line of `path` in `text`, or of its deepest ancestor found there; `None` when
/// not even the first step is found.
pub(super) fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    let mut scope: Vec<Line<'_>> = text
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start_matches(' ');
            let content = trimmed.trim_end();
            let skip = content.is_empty()
                || content.starts_with('#')
                || content == "---"
                || content == "...";
            (!skip).then(|| Line {
                number: i + 1,
                indent: raw.len() - trimmed.len(),
                text: content,
            })
        })
        .collect();
    let mut found = None;
    for step in &path.0 {
        let Some(level) = scope.first().map(|l| l.indent) else {
            break;
        };
        let at_level = |l: &Line<'_>| l.indent == level;
        match step {
            Step::Key(key) => {
                let Some(pos) = scope
                    .iter()
                    .position(|l| at_level(l) && key_of(l.text) == Some(key.as_str()))
                else {
                    break;
                };
                let line = scope[pos];
                found = Some(line.number);
                // A list under a key may sit at the key's own indentation.
                scope = scope[pos + 1..]
                    .iter()
                    .take_while(|l| {
                        l.indent > line.indent || (l.indent == line.indent && l.is_item())
                    })
                    .copied()
                    .collect();
            }
            Step::Index(index) => {
                let Some(pos) = scope
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| at_level(l) && l.is_item())
                    .map(|(pos, _)| pos)
                    .nth(*index)
                else {
                    break;
                };
                let dash = scope[pos];
                found = Some(dash.number);
                let rest = &dash.text[1..];
                let inline = rest.trim_start();
                let mut block = Vec::new();
                if !inline.is_empty() {
                    // `- name: a`: the item's first key sits after the dash.
                    block.push(Line {
                        number: dash.number,
                        indent: dash.indent + 1 + (rest.len() - inline.len()),
                        text: inline,
                    });
                }
                block.extend(
                    scope[pos + 1..]
                        .iter()
                        .take_while(|l| l.indent > dash.indent)
                        .copied(),
                );
                scope = block;
            }
        }
    }
    found
}

/// The line where `key` appears a second time in the block mapping whose first key sits at
/// one-based `line` and `column` (where serde_yaml reports a duplicate key).
pub(super) fn repeated_key_line(
    text: &str,
    line: usize,
    column: usize,
    key: &str,
) -> Option<usize> {
    let indent = column.checked_sub(1)?;
    let mut seen = 0;
    for (i, raw) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let trimmed = raw.trim_start_matches(' ');
        let here = raw.len() - trimmed.len();
        // The map's first line may start with `- `; the others are indented exactly.
        if i + 1 > line {
            if trimmed.is_empty() || trimmed.starts_with('#') || here > indent {
                continue;
            }
            if here < indent {
                break;
            }
        }
        let content = raw.get(indent..)?.trim_end();
        if key_of(content) == Some(key) {
            seen += 1;
            if seen == 2 {
                return Some(i + 1);
            }
        }
    }
    None
}

/// The key of a `key: value` or `key:` line, unquoted.
fn key_of(text: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        if let Some(rest) = text.strip_prefix(quote) {
            let end = rest.find(quote)?;
            let after = rest[end + 1..].trim_start();
            return after.starts_with(':').then_some(&rest[..end]);
        }
    }
    let end = text
        .find(": ")
        .or_else(|| text.strip_suffix(':').map(str::len))?;
    Some(text[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment
sources:
  github-demo:
    scheme: github
    run_key:
      - pointer: /a
      - header: X-B

pipelines:
  review:
    stages:
    - name: one
      tool: t1
    -
      name: two
      tool: t2
  'quoted.key':
    stages: []
";

    fn path(steps: &[&str]) -> FieldPath {
        steps
            .iter()
            .fold(FieldPath::root(), |p, s| match s.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(s),
            })
    }

    #[test]
    fn paths_display_dotted_with_indices() {
        let p = path(&["pipelines", "review", "stages", "1", "connector"]);
        assert_eq!(p.to_string(), "pipelines.review.stages[1].connector");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn finds_keys_items_and_inline_item_keys() {
        assert_eq!(line_of(DOC, &path(&["sources"])), Some(2));
        assert_eq!(
            line_of(DOC, &path(&["sources", "github-demo", "scheme"])),
            Some(4)
        );
        let header = path(&["sources", "github-demo", "run_key", "1", "header"]);
        assert_eq!(line_of(DOC, &header), Some(7));
        let tool = path(&["pipelines", "review", "stages", "0", "tool"]);
        assert_eq!(line_of(DOC, &tool), Some(13));
        let name = path(&["pipelines", "review", "stages", "1", "name"]);
        assert_eq!(line_of(DOC, &name), Some(15));
        assert_eq!(
            line_of(DOC, &path(&["pipelines", "quoted.key", "stages"])),
            Some(18)
        );
    }

    #[test]
    fn finds_the_second_occurrence_of_a_repeated_key() {
        let doc = "a:\n  - x: 1\n    # c\n    y:\n      x: 3\n    x: 2\n  - x: 4\n";
        assert_eq!(repeated_key_line(doc, 2, 5, "x"), Some(6));
        assert_eq!(repeated_key_line(doc, 2, 5, "y"), None);
    }

    #[test]
    fn falls_back_to_the_deepest_ancestor_or_none() {
        let missing = path(&["pipelines", "review", "stages", "0", "retry"]);
        assert_eq!(line_of(DOC, &missing), Some(12));
        assert_eq!(line_of(DOC, &path(&["connectors"])), None);
        assert_eq!(line_of("", &path(&["sources"])), None);
    }
}
