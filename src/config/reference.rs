//! `rollcall config reference`: every key of the config file with its type, default and
//! meaning, as Markdown, rendered from the config types themselves: their doc comments and
//! serde defaults, read through `schemars` ([`table_schema`](crate::settings::table_schema)).
//! docs/configuration.md holds the same text, and a test fails when the two differ, so the
//! reference cannot drift.
//!
//! Owns how a table's schema reads to an operator. It must never list a key or a kind by hand:
//! the top level comes from `mod.rs`, the kinds from the registries (`SourceConfig::TABLES`,
//! `SinkConfig::TABLES`), the keys from their types. Nothing in its output may depend on the
//! machine it runs on (no default computed at run time), since the docs hold it.

use serde_json::{Map, Value};

use crate::sink::SinkConfig;
use crate::source::SourceConfig;

const INTRO: &str = "## Reference

Every key rollcall reads, as `rollcall config reference` prints it from rollcall's own config
types (a test fails when this section differs from it). A key left out takes its default;
\"unset\" means the key has no value until written, and its meaning says what that does.
Durations are written like \"30s\", \"15m\", \"1h 30m\" or \"1day\"; sizes are in bytes.
`[[sources]]` and `[[sinks]]` are arrays of tables, at least one of each, and the keys of each
table depend on its `kind`; `[[sources]]` tables may also stand in the files `include` names.
";

/// The whole reference: the top level (`top`, the schema of the keys outside any table) and
/// its tables, then each source kind, then each sink kind, as the registries list them.
pub fn render(top: &schemars::Schema) -> String {
    let mut out = String::from(INTRO);
    table(&mut out, "Top level", None, "", top.as_value());
    for (array, tables) in [
        ("sources", SourceConfig::TABLES),
        ("sinks", SinkConfig::TABLES),
    ] {
        for (kind, schema) in tables {
            let heading = format!("`[[{array}]]` with `kind = \"{kind}\"`");
            table(&mut out, &heading, Some(kind), array, schema().as_value());
        }
    }
    out
}

/// One table: its own description, a row per key, then a section per nested table (`[store]`,
/// named under `path`).
fn table(out: &mut String, heading: &str, kind: Option<&str>, path: &str, schema: &Value) {
    out.push_str(&format!("\n### {heading}\n\n"));
    if let Some(about) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{}\n\n", one_paragraph(about)));
    }
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    if let Some(kind) = kind {
        out.push_str(&format!(
            "| `kind` | `\"{kind}\"` | required | Which kind of table this is. |\n"
        ));
    }
    let empty = Map::new();
    let keys = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // What must be written first, then the rest; each group by name, whatever order the
    // schema's map keeps.
    let mut names: Vec<&String> = keys.keys().collect();
    names.sort_by_key(|name| (!required.contains(&name.as_str()), name.as_str()));
    let mut nested = Vec::new();
    for name in names {
        let key = &keys[name.as_str()];
        let meaning = key
            .get("description")
            .and_then(Value::as_str)
            .map(cell)
            .unwrap_or_default();
        let default = if required.contains(&name.as_str()) {
            "required".to_owned()
        } else {
            match key.get("default") {
                None | Some(Value::Null) => "unset".to_owned(),
                Some(value) => format!("`{}`", toml(value)),
            }
        };
        let nested_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let shown = if key.get("properties").is_some() {
            let shown = format!("`[{nested_path}]`");
            nested.push((nested_path, key));
            shown
        } else {
            format!("`{name}`")
        };
        out.push_str(&format!(
            "| {shown} | {} | {default} | {meaning} |\n",
            cell(&type_of(key, false))
        ));
    }
    for (path, key) in nested {
        // Its description is its row's meaning above.
        let mut keys_only = key.clone();
        if let Some(key) = keys_only.as_object_mut() {
            key.remove("description");
        }
        table(out, &format!("`[{path}]`"), None, &path, &keys_only);
    }
}

/// What a key takes, in words: its choices, or its type (`many`: of each item of a list or
/// table).
fn type_of(schema: &Value, many: bool) -> String {
    if let Some(choices) = choices(schema) {
        let quoted: Vec<String> = choices.iter().map(|c| format!("`{}`", toml(c))).collect();
        return if many {
            format!("any of {}", or_list(&quoted))
        } else {
            or_list(&quoted)
        };
    }
    if let Some(alternatives) = alternatives(schema) {
        let kinds: Vec<String> = alternatives.into_iter().map(|a| type_of(a, many)).collect();
        return or_list(&kinds);
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    let kinds: Vec<String> = types
        .into_iter()
        .map(|t| {
            let (word, words) = match t {
                "string" => match schema.get("format").and_then(Value::as_str) {
                    Some("uri") => ("URL", "URLs"),
                    Some("duration") => ("duration", "durations"),
                    _ => ("string", "strings"),
                },
                "integer" => ("integer", "integers"),
                "number" => ("number", "numbers"),
                "boolean" => ("boolean", "booleans"),
                "array" => {
                    return match schema.get("items") {
                        Some(items) => format!("list of {}", type_of(items, true)),
                        None => "list".to_owned(),
                    }
                }
                "object" => {
                    return match schema.get("additionalProperties") {
                        Some(values @ Value::Object(_)) => {
                            format!("table of {}", type_of(values, true))
                        }
                        _ => "table".to_owned(),
                    }
                }
                other => (other, other),
            };
            (if many { words } else { word }).to_owned()
        })
        .collect();
    or_list(&kinds)
}

/// The values a key may take, when the schema lists them (an enum, each variant alone or
/// grouped); `None` when it takes any value of a type.
fn choices(schema: &Value) -> Option<Vec<&Value>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.iter().filter(|v| !v.is_null()).collect());
    }
    if let Some(value) = schema.get("const") {
        return Some(vec![value]);
    }
    let mut all = Vec::new();
    for alternative in alternatives(schema)? {
        all.extend(choices(alternative)?);
    }
    Some(all)
}

/// The alternatives of a `oneOf` or `anyOf`, without the `null` an unset key may also be.
fn alternatives(schema: &Value) -> Option<Vec<&Value>> {
    let list = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    Some(
        list.iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .collect(),
    )
}

/// "a", "a or b", "a, b or c".
fn or_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A value as it is written in TOML.
fn toml(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} = {}", Value::from(k.as_str()), toml(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        // A JSON string, number or boolean reads the same in TOML.
        other => other.to_string(),
    }
}

/// A doc comment as one line of text.
fn one_paragraph(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text that fits in a Markdown table cell: one line, no bare `|`.
fn cell(text: &str) -> String {
    one_paragraph(text).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> String {
        super::super::reference()
    }

    /// The reference's row of `key` in the section under `heading`.
    fn row<'r>(reference: &'r str, heading: &str, key: &str) -> &'r str {
        let section = reference
            .split("\n### ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("no section {heading}:\n{reference}"));
        section
            .lines()
            .find(|l| l.starts_with(&format!("| {key} |")))
            .unwrap_or_else(|| panic!("no row {key} under {heading}:\n{section}"))
    }

    #[test]
    fn every_kind_of_both_registries_has_its_section_with_its_kind() {
        let reference = reference();
        for (array, kinds) in [
            ("sources", SourceConfig::KINDS),
            ("sinks", SinkConfig::KINDS),
        ] {
            for kind in kinds {
                let heading = format!("`[[{array}]]` with `kind = \"{kind}\"`");
                assert!(
                    row(&reference, &heading, "`kind`").contains(&format!("`\"{kind}\"`")),
                    "{heading}"
                );
            }
        }
    }

    #[test]
    fn every_key_says_what_it_does() {
        for line in reference().lines().filter(|l| l.starts_with("| `")) {
            let meaning = line.trim_end_matches('|').rsplit(" | ").next().unwrap();
            assert!(
                meaning.trim().len() > 10,
                "a key without a doc comment (its meaning is what the reference shows): {line}"
            );
        }
    }

    #[test]
    fn a_duration_shows_its_default_as_written() {
        let reference = reference();
        let superset = "`[[sources]]` with `kind = \"superset\"`";
        assert!(
            row(&reference, superset, "`poll_interval`").starts_with(
                "| `poll_interval` | duration | `\"30s\"` | How often the source is polled"
            ),
            "{reference}"
        );
        let webhook = "`[[sinks]]` with `kind = \"webhook\"`";
        assert!(
            row(&reference, webhook, "`retry_schedule`").contains(
                "| list of durations | `[\"0s\", \"5s\", \"5m\", \"30m\", \"2h\", \"5h\", \"10h\", \"10h\"]` |"
            ),
            "{reference}"
        );
    }

    #[test]
    fn a_key_without_a_default_is_required_and_an_optional_one_unset() {
        let reference = reference();
        let kylin = "`[[sources]]` with `kind = \"kylin\"`";
        assert!(row(&reference, kylin, "`url`").starts_with("| `url` | URL | required |"));
        assert!(row(&reference, kylin, "`poll_deadline`")
            .starts_with("| `poll_deadline` | duration | unset |"));
        assert!(row(&reference, "Top level", "`[store]`")
            .starts_with("| `[store]` | table | required |"));
        assert!(
            row(&reference, "`[store]`", "`retain`").starts_with("| `retain` | duration | unset |")
        );
    }

    #[test]
    fn a_key_with_choices_lists_them_as_written_with_its_default() {
        let reference = reference();
        let kafka = "`[[sinks]]` with `kind = \"kafka\"`";
        assert!(row(&reference, kafka, "`format`")
            .starts_with("| `format` | `\"cloudevents\"` or `\"ocsf\"` | `\"cloudevents\"` |"));
        assert!(row(&reference, kafka, "`options`")
            .starts_with("| `options` | table of strings, numbers or booleans | `{}` |"));
        let webhook = "`[[sinks]]` with `kind = \"webhook\"`";
        let event_types = row(&reference, webhook, "`event_types`");
        for t in crate::event::EventType::ALL {
            assert!(
                event_types.contains(&format!("`\"{t}\"`")),
                "{t}: {event_types}"
            );
        }
    }

    #[test]
    fn a_bar_in_a_doc_comment_does_not_split_its_cell() {
        assert_eq!(cell("a | b\n   c"), "a \\| b c");
    }
}
