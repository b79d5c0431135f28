//! Validates events against the JSON Schemas in `schemas/`, offline.
//!
//! Each event type's schema is compiled once, on first use. The event schemas reference
//! `common.schema.json` by its `$id` (`urn:rollcall:schema:common`); it is registered in memory
//! under that id, so nothing is ever fetched (jsonschema is built without its HTTP and file
//! resolvers).

use std::sync::OnceLock;

use jsonschema::{Resource, Validator};
use rollcall::event::EventType;
use serde_json::Value;

/// Where the schema files live.
pub const SCHEMA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/");

/// The file every event schema takes the envelope and the user record from.
pub const COMMON_SCHEMA: &str = "common.schema.json";

/// The `$id` of `common.schema.json`, which the event schemas' `$ref`s name.
const COMMON_ID: &str = "urn:rollcall:schema:common";

/// `user.created` → `user.created.schema.json`.
pub fn schema_file_name(event_type: &str) -> String {
    format!("{event_type}.schema.json")
}

/// Reads and parses one file of `schemas/`.
pub fn load_schema(file_name: &str) -> Value {
    let path = format!("{SCHEMA_DIR}{file_name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Compiles the schema of `event_type` (with `common.schema.json` available to its `$ref`s),
/// checking formats (`uuid`, `date-time`), which draft 2020-12 otherwise only annotates.
pub fn compile(event_type: &str) -> Result<Validator, String> {
    let file = schema_file_name(event_type);
    let common = Resource::from_contents(load_schema(COMMON_SCHEMA))
        .map_err(|e| format!("{COMMON_SCHEMA}: {e}"))?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_resource(COMMON_ID, common)
        .build(&load_schema(&file))
        .map_err(|e| format!("{file}: {e}"))
}

/// The compiled schema of `event_type`, or `None` if rollcall has no such type.
pub fn validator(event_type: &str) -> Option<&'static Validator> {
    static VALIDATORS: [OnceLock<Validator>; EventType::ALL.len()] =
        [const { OnceLock::new() }; EventType::ALL.len()];
    let i = EventType::ALL
        .iter()
        .position(|t| t.as_str() == event_type)?;
    Some(VALIDATORS[i].get_or_init(|| compile(event_type).unwrap_or_else(|e| panic!("{e}"))))
}

/// Every way `event` fails the schema of its `type`, one readable line each; empty if valid.
pub fn event_errors(event: &Value) -> Vec<String> {
    let Some(event_type) = event.get("type").and_then(Value::as_str) else {
        return vec!["the event has no string `type`, so no schema applies".into()];
    };
    let Some(validator) = validator(event_type) else {
        return vec![format!("no schema for event type `{event_type}`")];
    };
    validator
        .iter_errors(event)
        .map(|e| {
            let at = e.instance_path.as_str();
            let at = if at.is_empty() { "/" } else { at };
            format!("at {at}: {e} (schema {})", e.schema_path.as_str())
        })
        .collect()
}

/// Panics with a readable message if `event` (one parsed event) does not match the schema of
/// its `type`.
pub fn assert_valid_event(event: &Value) {
    let errors = event_errors(event);
    if !errors.is_empty() {
        panic!(
            "{} event (sequence {}) does not match its schema:\n  {}\nevent: {}",
            event["type"],
            event["sequence"],
            errors.join("\n  "),
            serde_json::to_string_pretty(event).unwrap_or_default()
        );
    }
}

/// Same for every line of a JSONL text; returns the parsed events. An empty text is valid (no
/// events), a blank line is not.
pub fn assert_valid_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("JSONL line {} is not JSON ({e}): {line:?}", i + 1));
            let errors = event_errors(&event);
            if !errors.is_empty() {
                panic!(
                    "JSONL line {}: {} event does not match its schema:\n  {}\nline: {line}",
                    i + 1,
                    event["type"],
                    errors.join("\n  ")
                );
            }
            event
        })
        .collect()
}
