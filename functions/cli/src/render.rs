//! Tables and summaries for people; `--json` bypasses all of this.

use std::fmt::Write;

use serde_json::Value;

use crate::command::{Command, Connector, Executions, Switches};

/// What a person reads for a command's successful answer.
pub fn render(command: &Command, body: &Value) -> String {
    match command {
        Command::Executions(Executions::List { .. }) => {
            let mut out = executions_table(body["items"].as_array());
            if let Some(next) = body["next_cursor"].as_str() {
                let _ = writeln!(out, "more: --cursor {next}");
            }
            out
        }
        Command::Executions(Executions::Show { .. }) => {
            let mut out = fields(
                &body["execution"],
                &[
                    "id",
                    "tenant",
                    "source",
                    "pipeline",
                    "run_key",
                    "status",
                    "stage",
                    "stage_name",
                    "attempt_count",
                    "blocked_reason",
                    "replay_of",
                    "created_at_ms",
                    "updated_at_ms",
                ],
            );
            out.push('\n');
            out.push_str(&ledger_table(body["ledger"].as_array()));
            if let Some(next) = body["next_ledger_cursor"].as_str() {
                let _ = writeln!(out, "more: --ledger-cursor {next}");
            }
            out
        }
        Command::Replay { .. } => fields(body, &["status", "execution_id", "replay_of"]),
        Command::Switches(Switches::List) => switches_table(body["items"].as_array()),
        Command::Switches(Switches::Set { .. }) => {
            fields(&body["switch"], &["key", "scope", "set_by", "reason"])
        }
        Command::Switches(Switches::Clear { .. }) | Command::Connector(Connector::Limit { .. }) => {
            let mut out = String::new();
            for (key, value) in body.as_object().into_iter().flatten() {
                let _ = writeln!(out, "{key}: {}", text(value));
            }
            out
        }
        Command::Connector(Connector::Show { .. }) => {
            let mut out = fields(body, &["connector", "in_flight", "limit", "limit_override"]);
            out.push_str(&fields(
                &body["breaker"],
                &["state", "consecutive_failures", "open_until_ms", "probe"],
            ));
            let switches = body["switches"].as_array().map_or(0, Vec::len);
            let _ = writeln!(out, "switches: {switches}");
            out
        }
        Command::Health => {
            let mut out = fields(
                body,
                &["status", "version", "sources", "connectors", "pipelines"],
            );
            for (name, breaker) in body["breakers"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "breaker {name}: {}", text(breaker));
            }
            for (name, alarm) in body["alarms"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "alarm {name}: {}", text(alarm));
            }
            out
        }
        Command::Reliability => {
            // The scalar figures; `--json` has the nested ones (breakers, alarms, slo).
            let mut out = String::new();
            for (key, value) in body.as_object().into_iter().flatten() {
                if !value.is_object() && !value.is_array() {
                    let _ = writeln!(out, "{key}: {}", text(value));
                }
            }
            if let Some(met) = body["slo"]["all_met"].as_bool() {
                let _ = writeln!(out, "slo all_met: {met}");
            }
            out
        }
        Command::DeadLetters => {
            let items = body["items"].as_array();
            let mut out = String::new();
            for item in items.into_iter().flatten() {
                let _ = writeln!(out, "{}", shorten(&text(item), 160));
            }
            if out.is_empty() {
                out.push_str("(none)\n");
            }
            out
        }
        Command::Validate { .. } => String::new(),
    }
}

fn executions_table(items: Option<&Vec<Value>>) -> String {
    table(
        &[
            "ID", "STATUS", "SOURCE", "PIPELINE", "STAGE", "ATTEMPTS", "REASON",
        ],
        items.into_iter().flatten().map(|e| {
            vec![
                text(&e["id"]),
                text(&e["status"]),
                text(&e["source"]),
                text(&e["pipeline"]),
                stage(e),
                text(&e["attempt_count"]),
                text(&e["blocked_reason"]),
            ]
        }),
    )
}

fn ledger_table(events: Option<&Vec<Value>>) -> String {
    table(
        &["SEQ", "AT_MS", "STAGE", "KIND", "DETAIL"],
        events.into_iter().flatten().map(|e| {
            vec![
                text(&e["seq"]),
                text(&e["at_ms"]),
                text(&e["stage"]),
                text(&e["kind"]),
                shorten(&text(&e["detail"]), 80),
            ]
        }),
    )
}

fn switches_table(items: Option<&Vec<Value>>) -> String {
    table(
        &["KEY", "SCOPE", "SET_BY", "SET_AT_MS", "REASON"],
        items.into_iter().flatten().map(|s| {
            vec![
                text(&s["key"]),
                text(&s["scope"]),
                text(&s["set_by"]),
                text(&s["set_at_ms"]),
                shorten(&text(&s["reason"]), 60),
            ]
        }),
    )
}

/// `stage_name (index)`, or the index alone.
fn stage(e: &Value) -> String {
    match e["stage_name"].as_str() {
        Some(name) => format!("{name} ({})", text(&e["stage"])),
        None => text(&e["stage"]),
    }
}

/// `name: value` lines for the fields present in `body`.
fn fields(body: &Value, names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        if let Some(value) = body.get(*name) {
            let _ = writeln!(out, "{name}: {}", text(value));
        }
    }
    out
}

/// A value as one line: strings bare, null as `-`, anything else as compact JSON.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.replace(['\n', '\r', '\t'], " "),
        other => other.to_string(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Left-aligned columns two spaces apart, a header row first; `(none)` for no rows.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns_and_says_when_empty() {
        let rows = vec![
            vec!["exe_1".to_owned(), "BLOCKED".to_owned()],
            vec!["exe_22".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "STATUS"], rows.into_iter()),
            "ID      STATUS\nexe_1   BLOCKED\nexe_22  -\n"
        );
        assert_eq!(table(&["ID"], std::iter::empty()), "(none)\n");
    }

    #[test]
    fn values_are_one_line_and_long_ones_shortened() {
        assert_eq!(text(&json!("a\nb")), "a b");
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
