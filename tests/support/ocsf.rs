//! Validates OCSF records offline against the OCSF 1.8.0 JSON Schemas in
//! `tests/fixtures/ocsf/json-schema/`, then applies the rules those schemas cannot express
//! (docs/ocsf-rules.md, "What the schemas do not check"): `type_uid`, `category_uid`, the
//! captions against `captions.json`, and `metadata.version`.
//!
//! Also encodes stored events as OCSF through the library's own encoder, as a sink would.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use jsonschema::Validator;
use rollcall::encode::{Binding, Encoder, Envelope, Format, Mode, Unreadable};
use rollcall::store::StoredEvent;
use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ocsf/");

/// The encoder a sink with `format = "ocsf"` uses (mode and binding do not matter to OCSF).
pub const OCSF: Encoder = Encoder {
    format: Format::Ocsf,
    mode: Mode::Structured,
    binding: Binding::Http,
};

/// Encodes one CloudEvent (as stored at `offset`) as OCSF.
pub fn try_encode(event: &Value, offset: u64) -> Result<Vec<u8>, Unreadable> {
    let stored = StoredEvent {
        offset,
        bytes: serde_json::to_vec(event).unwrap().into(),
    };
    let envelope = Envelope::parse(&stored)?;
    Ok(OCSF.encode(&envelope)?.body.into_owned())
}

/// Encodes one CloudEvent as OCSF and parses the record; panics if it cannot be encoded.
pub fn encode(event: &Value) -> Value {
    let bytes = try_encode(event, 7).unwrap_or_else(|e| {
        panic!(
            "{} cannot be encoded as OCSF: {e}: {}",
            event["type"],
            std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
        )
    });
    serde_json::from_slice(&bytes).unwrap()
}

/// The schema file of a class: `json-schema/[profiles/<p>/]<uid>_<name>.json`.
pub fn schema_path(class_uid: u64, profiles: &[&str]) -> Option<PathBuf> {
    let mut dir = Path::new(FIXTURES).join("json-schema");
    for p in profiles {
        dir = dir.join("profiles").join(p);
    }
    let prefix = format!("{class_uid}_");
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
        })
}

pub fn load(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The compiled schema of a file, compiled once per test binary.
fn validator(path: &Path) -> &'static Validator {
    static CACHE: OnceLock<Mutex<Vec<(PathBuf, &'static Validator)>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if let Some((_, v)) = cache.iter().find(|(p, _)| p == path) {
        return v;
    }
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&load(path))
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()));
    let v: &'static Validator = Box::leak(Box::new(compiled));
    cache.push((path.to_owned(), v));
    v
}

fn captions() -> &'static Value {
    static CAPTIONS: OnceLock<Value> = OnceLock::new();
    CAPTIONS.get_or_init(|| load(&Path::new(FIXTURES).join("captions.json")))
}

/// Every way `record` fails its class schema, then every rule it breaks; empty if valid.
pub fn errors(record: &Value) -> Vec<String> {
    let Some(class_uid) = record["class_uid"].as_u64() else {
        return vec!["no integer `class_uid`, so no schema applies".into()];
    };
    let profiles: Vec<&str> = record["metadata"]["profiles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(path) = schema_path(class_uid, &profiles) else {
        return vec![format!(
            "no schema for class {class_uid} with profiles {profiles:?}"
        )];
    };
    let mut errors: Vec<String> = validator(&path)
        .iter_errors(record)
        .map(|e| {
            let at = e.instance_path.as_str();
            format!("at {}: {e}", if at.is_empty() { "/" } else { at })
        })
        .collect();
    errors.extend(rule_errors(record));
    errors
}

/// The checks the schemas cannot make.
pub fn rule_errors(record: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let class_uid = record["class_uid"].as_u64().unwrap_or_default();
    let activity_id = record["activity_id"].as_u64().unwrap_or_default();
    if record["type_uid"].as_u64() != Some(class_uid * 100 + activity_id) {
        errors.push(format!(
            "type_uid {} is not class_uid * 100 + activity_id = {}",
            record["type_uid"],
            class_uid * 100 + activity_id
        ));
    }
    if record["category_uid"].as_u64() != Some(class_uid / 1000) {
        errors.push(format!(
            "category_uid {} is not class_uid / 1000",
            record["category_uid"]
        ));
    }
    if record["metadata"]["version"] != "1.8.0" {
        errors.push(format!(
            "metadata.version is {}, not \"1.8.0\"",
            record["metadata"]["version"]
        ));
    }
    let class = &captions()["classes"][class_uid.to_string()];
    let mut caption = |field: &str, expected: &Value| {
        if let Some(sent) = record.get(field) {
            if sent != expected {
                errors.push(format!("{field} {sent} does not match its id ({expected})"));
            }
        }
    };
    caption("class_name", &class["name"]);
    caption("category_name", &class["category_name"]);
    // With 99 Other the caption is the source's own value, by rule.
    if activity_id != 99 {
        caption(
            "activity_name",
            &class["activities"][activity_id.to_string()],
        );
        caption(
            "type_name",
            &Value::from(format!(
                "{}: {}",
                class["name"].as_str().unwrap_or_default(),
                class["activities"][activity_id.to_string()]
                    .as_str()
                    .unwrap_or_default()
            )),
        );
    }
    let severity_id = record["severity_id"].as_u64().unwrap_or_default();
    caption("severity", &captions()["severity"][severity_id.to_string()]);
    if let Some(status_id) = record["status_id"].as_u64() {
        caption("status", &captions()["status"][status_id.to_string()]);
    }
    errors
}

/// Panics with every error if `record` is not valid OCSF 1.8.0.
pub fn assert_valid(record: &Value) {
    let errors = errors(record);
    assert!(
        errors.is_empty(),
        "OCSF record (event {}) is invalid:\n  {}\nrecord: {record:#}",
        record["metadata"]["event_code"],
        errors.join("\n  ")
    );
}

/// Every line of an OCSF JSONL text, each checked; returns the records.
pub fn assert_valid_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("OCSF line is not JSON ({e}): {line}"));
            assert_valid(&record);
            record
        })
        .collect()
}
