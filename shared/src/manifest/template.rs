//! Templates in tool paths and bodies: text with `{{ ... }}` placeholders, parsed once at load
//! and rendered for every call.
//!
//! Placeholders:
//! - `{{payload}}`: the whole webhook payload; `{{payload/a/0/b}}`: a JSON pointer into it;
//! - `{{stages.<stage>}}`, `{{stages.<stage>/a/b}}`: an earlier stage's response body;
//! - `{{execution_id}}`, `{{tenant}}`, `{{source}}`.
//!
//! Whitespace inside the braces is ignored. A single `{` or `}` is plain text; there is no
//! escape for a literal `{{`. Substituted strings are inserted as they are; other JSON values as
//! their JSON text (`42`, `true`, `null`, `{"a":1}`). A path template percent-encodes what it
//! substitutes, never its own text. In a [`JsonTemplate`], a string that is exactly one
//! placeholder becomes the referenced JSON value itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

/// What a render reads from: the delivery and the run so far.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    /// The webhook payload.
    pub payload: &'a Json,
    /// Response bodies of the stages that already succeeded, by stage name.
    pub stages: &'a BTreeMap<String, Json>,
    /// `{{execution_id}}`.
    pub execution_id: &'a str,
    /// `{{tenant}}`.
    pub tenant: &'a str,
    /// `{{source}}`: the source id.
    pub source: &'a str,
}

/// A template that does not parse, or a reference that finds nothing when rendered. Neither
/// gets better by retrying: the executor blocks the run with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` with no `}}` after it.
    #[error("`{{{{` at byte {at} is never closed by `}}}}`")]
    Unclosed { at: usize },
    /// A `}}` outside any placeholder.
    #[error("`}}}}` at byte {at} closes no `{{{{`")]
    Unopened { at: usize },
    /// A placeholder that names nothing Sluice knows.
    #[error(
        "unknown placeholder `{{{{{placeholder}}}}}`: expected payload, payload/<pointer>, \
         stages.<stage>/<pointer>, execution_id, tenant or source"
    )]
    Unknown { placeholder: String },
    /// A known kind of placeholder written wrongly (bad pointer escape, bad stage name).
    #[error("placeholder `{{{{{placeholder}}}}}`: {reason}")]
    Invalid {
        placeholder: String,
        reason: &'static str,
    },
    /// A reference with nothing behind it at render time.
    #[error("`{{{{{placeholder}}}}}` resolves to nothing")]
    Unresolved { placeholder: String },
}

impl TemplateError {
    /// Always false: the same template and inputs fail the same way again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What a placeholder refers to. Displays as written between the braces, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `payload` (empty pointer) or `payload/<pointer>`.
    Payload {
        pointer: String,
    },
    /// `stages.<stage>` (empty pointer) or `stages.<stage>/<pointer>`.
    Stage {
        stage: String,
        pointer: String,
    },
    ExecutionId,
    Tenant,
    Source,
}

impl Placeholder {
    /// Parses the text between `{{` and `}}`, already trimmed.
    fn parse(text: &str) -> Result<Self, TemplateError> {
        let invalid = |reason| TemplateError::Invalid {
            placeholder: text.to_owned(),
            reason,
        };
        let placeholder = match text {
            "execution_id" => Placeholder::ExecutionId,
            "tenant" => Placeholder::Tenant,
            "source" => Placeholder::Source,
            "payload" => Placeholder::Payload {
                pointer: String::new(),
            },
            _ if text.starts_with("payload/") => Placeholder::Payload {
                pointer: text["payload".len()..].to_owned(),
            },
            _ => {
                let Some(rest) = text.strip_prefix("stages.") else {
                    return Err(TemplateError::Unknown {
                        placeholder: text.to_owned(),
                    });
                };
                let (stage, pointer) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                if !super::model::is_stage_name(stage) {
                    return Err(invalid(
                        "a stage name is 1 to 64 letters, digits, '_', '-' or '.'",
                    ));
                }
                Placeholder::Stage {
                    stage: stage.to_owned(),
                    pointer: pointer.to_owned(),
                }
            }
        };
        let pointer = match &placeholder {
            Placeholder::Payload { pointer } | Placeholder::Stage { pointer, .. } => pointer,
            _ => return Ok(placeholder),
        };
        if !escapes_are_valid(pointer) {
            return Err(invalid("in a JSON pointer '~' must be followed by 0 or 1"));
        }
        Ok(placeholder)
    }

    /// The value referred to, if there is one in `ctx`.
    pub fn resolve<'c>(&self, ctx: &TemplateContext<'c>) -> Option<Cow<'c, Json>> {
        let text = |s: &str| Some(Cow::Owned(Json::String(s.to_owned())));
        match self {
            Placeholder::Payload { pointer } => ctx.payload.pointer(pointer).map(Cow::Borrowed),
            Placeholder::Stage { stage, pointer } => ctx
                .stages
                .get(stage)
                .and_then(|body| body.pointer(pointer))
                .map(Cow::Borrowed),
            Placeholder::ExecutionId => text(ctx.execution_id),
            Placeholder::Tenant => text(ctx.tenant),
            Placeholder::Source => text(ctx.source),
        }
    }

    /// The earlier stage this placeholder reads, if it reads one.
    pub fn stage(&self) -> Option<&str> {
        match self {
            Placeholder::Stage { stage, .. } => Some(stage),
            _ => None,
        }
    }

    fn resolve_or_err<'c>(
        &self,
        ctx: &TemplateContext<'c>,
    ) -> Result<Cow<'c, Json>, TemplateError> {
        self.resolve(ctx).ok_or_else(|| TemplateError::Unresolved {
            placeholder: self.to_string(),
        })
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::Payload { pointer } => write!(f, "payload{pointer}"),
            Placeholder::Stage { stage, pointer } => write!(f, "stages.{stage}{pointer}"),
            Placeholder::ExecutionId => f.write_str("execution_id"),
            Placeholder::Tenant => f.write_str("tenant"),
            Placeholder::Source => f.write_str("source"),
        }
    }
}

/// RFC 6901: `~` only as `~0` or `~1`.
fn escapes_are_valid(pointer: &str) -> bool {
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(Placeholder),
}

/// How substituted values are written into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escaping {
    Verbatim,
    PercentEncoded,
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    escaping: Escaping,
}

impl Template {
    /// A template whose substitutions are inserted verbatim (body text).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, Escaping::Verbatim)
    }

    /// A URL path template: substitutions are percent-encoded (all but `A-Z a-z 0-9 - . _ ~`).
    pub fn parse_path(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, Escaping::PercentEncoded)
    }

    fn parse_with(text: &str, escaping: Escaping) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        loop {
            let rest = &text[offset..];
            let open = rest.find("{{");
            let literal = &rest[..open.unwrap_or(rest.len())];
            if let Some(close) = literal.find("}}") {
                return Err(TemplateError::Unopened { at: offset + close });
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_owned()));
            }
            let Some(open) = open else { break };
            let inner_start = offset + open + 2;
            let inner_len = text[inner_start..]
                .find("}}")
                .ok_or(TemplateError::Unclosed { at: offset + open })?;
            let inner = &text[inner_start..inner_start + inner_len];
            if inner.contains("{{") {
                return Err(TemplateError::Unclosed { at: offset + open });
            }
            parts.push(Part::Ref(Placeholder::parse(inner.trim())?));
            offset = inner_start + inner_len + 2;
        }
        Ok(Self {
            source: text.to_owned(),
            parts,
            escaping,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            Part::Ref(placeholder) => Some(placeholder),
            Part::Text(_) => None,
        })
    }

    /// The text between the placeholders.
    pub(super) fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Text(text) => Some(text.as_str()),
            Part::Ref(_) => None,
        })
    }

    /// The placeholder, when the template is exactly one placeholder and nothing else.
    fn sole_placeholder(&self) -> Option<&Placeholder> {
        match self.parts.as_slice() {
            [Part::Ref(placeholder)] => Some(placeholder),
            _ => None,
        }
    }

    /// Renders the template; fails on the first reference that finds nothing.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref(placeholder) => {
                    let value = placeholder.resolve_or_err(ctx)?;
                    let text = match value.as_ref() {
                        Json::String(s) => Cow::Borrowed(s.as_str()),
                        other => Cow::Owned(other.to_string()),
                    };
                    match self.escaping {
                        Escaping::Verbatim => out.push_str(&text),
                        Escaping::PercentEncoded => push_percent_encoded(&mut out, &text),
                    }
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn push_percent_encoded(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// A bad template string inside a JSON body, and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {pointer:?}: {error}")]
pub struct JsonTemplateError {
    /// JSON pointer to the string within the body (`""` when the body itself is the string).
    pub pointer: String,
    #[source]
    pub error: TemplateError,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Json),
    Text(Template),
    Whole(Placeholder),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate {
    root: Node,
}

impl JsonTemplate {
    /// Parses every string in `value` (object keys stay literal).
    pub fn parse(value: &Json) -> Result<Self, JsonTemplateError> {
        let mut pointer = String::new();
        Ok(Self {
            root: parse_node(value, &mut pointer)?,
        })
    }

    /// The placeholders, depth first.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut found = Vec::new();
        collect_placeholders(&self.root, &mut found);
        found
    }

    /// Renders the body: sole placeholders become the referenced values, other strings text.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<Json, TemplateError> {
        render_node(&self.root, ctx)
    }
}

fn parse_node(value: &Json, pointer: &mut String) -> Result<Node, JsonTemplateError> {
    Ok(match value {
        Json::String(text) => {
            let template = Template::parse(text).map_err(|error| JsonTemplateError {
                pointer: pointer.clone(),
                error,
            })?;
            if let Some(placeholder) = template.sole_placeholder() {
                Node::Whole(placeholder.clone())
            } else if template.placeholders().next().is_some() {
                Node::Text(template)
            } else {
                Node::Literal(value.clone())
            }
        }
        Json::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                nodes.push(with_token(pointer, &i.to_string(), |p| {
                    parse_node(item, p)
                })?);
            }
            Node::Array(nodes)
        }
        Json::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, item) in map {
                let node = with_token(pointer, key, |p| parse_node(item, p))?;
                fields.push((key.clone(), node));
            }
            Node::Object(fields)
        }
        other => Node::Literal(other.clone()),
    })
}

/// Runs `f` with `token` appended to `pointer` (escaped per RFC 6901), then restores it.
fn with_token<T>(pointer: &mut String, token: &str, f: impl FnOnce(&mut String) -> T) -> T {
    let len = pointer.len();
    pointer.push('/');
    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
    let out = f(pointer);
    pointer.truncate(len);
    out
}

fn collect_placeholders<'n>(node: &'n Node, found: &mut Vec<&'n Placeholder>) {
    match node {
        Node::Literal(_) => {}
        Node::Text(template) => found.extend(template.placeholders()),
        Node::Whole(placeholder) => found.push(placeholder),
        Node::Array(items) => items.iter().for_each(|n| collect_placeholders(n, found)),
        Node::Object(fields) => fields
            .iter()
            .for_each(|(_, n)| collect_placeholders(n, found)),
    }
}

fn render_node(node: &Node, ctx: &TemplateContext<'_>) -> Result<Json, TemplateError> {
    Ok(match node {
        Node::Literal(value) => value.clone(),
        Node::Text(template) => Json::String(template.render(ctx)?),
        Node::Whole(placeholder) => placeholder.resolve_or_err(ctx)?.into_owned(),
        Node::Array(items) => Json::Array(
            items
                .iter()
                .map(|n| render_node(n, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, n)| Ok((k.clone(), render_node(n, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Fixture {
        payload: Json,
        stages: BTreeMap<String, Json>,
    }

    impl Fixture {
        fn new() -> Self {
            let payload = json!({
                "repository": {"full_name": "acme/app", "stars": 7, "private": false},
                "after": "abc123",
                "labels": ["bug", "ui"],
                "nothing": null,
                "a/b": "slash",
            });
            let stages = BTreeMap::from([("create".to_owned(), json!({"id": 42, "url": "x"}))]);
            Self { payload, stages }
        }

        fn ctx(&self) -> TemplateContext<'_> {
            TemplateContext {
                payload: &self.payload,
                stages: &self.stages,
                execution_id: "exe_1",
                tenant: "acme",
                source: "github-demo",
            }
        }
    }

    #[test]
    fn text_mixes_literals_and_values() {
        let f = Fixture::new();
        let t = Template::parse(
            "{{ payload/repository/full_name }}@{{payload/after}} #{{stages.create/id}} \
             {{payload/repository/private}} {{payload/labels}} {{payload/a~1b}} \
             {{execution_id}}/{{tenant}}/{{source}} {single}",
        )
        .unwrap();
        assert_eq!(
            t.render(&f.ctx()).unwrap(),
            "acme/app@abc123 #42 false [\"bug\",\"ui\"] slash exe_1/acme/github-demo {single}"
        );
    }

    #[test]
    fn paths_percent_encode_substitutions_only() {
        let f = Fixture::new();
        let t = Template::parse_path("/repos/{{payload/repository/full_name}}/x y").unwrap();
        assert_eq!(t.render(&f.ctx()).unwrap(), "/repos/acme%2Fapp/x y");
        let mut payload = f.payload.clone();
        payload["after"] = json!("a b?c=d&é~-._");
        let ctx = TemplateContext {
            payload: &payload,
            ..f.ctx()
        };
        let t = Template::parse_path("/q/{{payload/after}}").unwrap();
        assert_eq!(t.render(&ctx).unwrap(), "/q/a%20b%3Fc%3Dd%26%C3%A9~-._");
    }

    #[test]
    fn json_bodies_substitute_whole_values() {
        let f = Fixture::new();
        let body = JsonTemplate::parse(&json!({
            "repo": "{{payload/repository}}",
            "stars": "{{ payload/repository/stars }}",
            "ticket": "{{stages.create/id}}",
            "title": "Review {{payload/repository/full_name}}",
            "nothing": "{{payload/nothing}}",
            "list": ["{{payload/after}}", 1, true, "plain"],
            "whole": "{{payload}}",
        }))
        .unwrap();
        let out = body.render(&f.ctx()).unwrap();
        assert_eq!(out["repo"], f.payload["repository"]);
        assert_eq!(out["stars"], json!(7));
        assert_eq!(out["ticket"], json!(42));
        assert_eq!(out["title"], json!("Review acme/app"));
        assert_eq!(out["nothing"], Json::Null);
        assert_eq!(out["list"], json!(["abc123", 1, true, "plain"]));
        assert_eq!(out["whole"], f.payload);
        let stages: Vec<_> = body
            .placeholders()
            .into_iter()
            .filter_map(Placeholder::stage)
            .collect();
        assert_eq!(stages, ["create"]);
    }

    #[test]
    fn missing_references_name_the_placeholder() {
        let f = Fixture::new();
        let t = Template::parse("x {{payload/missing/field}}").unwrap();
        let err = t.render(&f.ctx()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unresolved {
                placeholder: "payload/missing/field".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "`{{payload/missing/field}}` resolves to nothing"
        );
        assert!(!err.is_retryable());
        let body = JsonTemplate::parse(&json!({"id": "{{stages.later/id}}"})).unwrap();
        assert!(matches!(
            body.render(&f.ctx()),
            Err(TemplateError::Unresolved { placeholder }) if placeholder == "stages.later/id"
        ));
    }

    #[test]
    fn bad_templates_are_refused_at_parse() {
        assert_eq!(
            Template::parse("a {{payload"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            Template::parse("a }} b"),
            Err(TemplateError::Unopened { at: 2 })
        );
        assert_eq!(
            Template::parse("{{x}} }}"),
            Err(TemplateError::Unknown {
                placeholder: "x".into()
            })
        );
        assert_eq!(
            Template::parse("{{tenant}} }}"),
            Err(TemplateError::Unopened { at: 11 })
        );
        assert!(matches!(
            Template::parse("{{ {{tenant}}"),
            Err(TemplateError::Unclosed { .. })
        ));
        assert!(matches!(
            Template::parse("{{payload/a~2}}"),
            Err(TemplateError::Invalid { .. })
        ));
        assert!(matches!(
            Template::parse("{{stages./id}}"),
            Err(TemplateError::Invalid { .. })
        ));
        assert!(matches!(
            Template::parse("{{payloads}}"),
            Err(TemplateError::Unknown { .. })
        ));
        let err = JsonTemplate::parse(&json!({"a": [1, {"b/c": "{{nope}}"}]})).unwrap_err();
        assert_eq!(err.pointer, "/a/1/b~1c");
    }
}
