//! Validates OCSF records offline against the JSON Schemas of their OCSF version in
//! `tests/fixtures/ocsf/` (1.8.0 at its top, 1.9.0 in `1.9.0/`), then applies the rules those
//! schemas cannot express (docs/ocsf-rules.md, "What the schemas do not check"): `type_uid`,
//! `category_uid`, the captions against the version's `captions.json`, and
//! `metadata.version`. Apart from validity, [`deprecations`] finds every class or attribute a
//! record uses that its version deprecates; rollcall's own records must use none
//! ([`assert_valid_in`]).
//!
//! Also encodes stored events as OCSF through the library's own encoder, as a sink would. The
//! functions without a version are those of 1.8.0, the version the older tests pin.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use jsonschema::Validator;
use rollcall::encode::{Binding, Encoder, Envelope, Format, Mode, Unreadable};
use rollcall::store::StoredEvent;
use serde_json::Value;

pub use rollcall::encode::ocsf::Version;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ocsf/");

/// The encoder of a sink with `format = "ocsf"` and the given `ocsf_version` (mode and binding
/// do not matter to OCSF).
pub const fn encoder(version: Version) -> Encoder {
    Encoder {
        format: Format::Ocsf,
        mode: Mode::Structured,
        binding: Binding::Http,
        ocsf: version,
    }
}

/// The id of the store whose log the events the tests encode are in: what a 1.9.0 record
/// names as its chain (`chain_uid`).
pub const STORE: &str = "01a2085a-0000-7000-8000-000000000000";

/// Where the fixtures of a version are.
pub fn fixtures(version: Version) -> PathBuf {
    match version {
        Version::V1_8_0 => PathBuf::from(FIXTURES),
        Version::V1_9_0 => Path::new(FIXTURES).join("1.9.0"),
    }
}

/// What a record of `version` must declare in `metadata.version`: written here, not taken
/// from the library under test.
pub fn declared(version: Version) -> &'static str {
    match version {
        Version::V1_8_0 => "1.8.0",
        Version::V1_9_0 => "1.9.0",
    }
}

/// Encodes one CloudEvent (as stored at `offset`) as OCSF 1.8.0.
pub fn try_encode(event: &Value, offset: u64) -> Result<Vec<u8>, Unreadable> {
    try_encode_in(Version::V1_8_0, event, offset)
}

/// Encodes one CloudEvent (as stored at `offset`) as OCSF `version`.
pub fn try_encode_in(version: Version, event: &Value, offset: u64) -> Result<Vec<u8>, Unreadable> {
    let stored = StoredEvent {
        offset,
        bytes: serde_json::to_vec(event).unwrap().into(),
    };
    let envelope = Envelope::parse(&stored)?;
    Ok(encoder(version).encode(&envelope, STORE)?.body.into_owned())
}

/// Encodes one CloudEvent as OCSF 1.8.0 and parses the record; panics if it cannot be encoded.
pub fn encode(event: &Value) -> Value {
    encode_in(Version::V1_8_0, event)
}

/// Encodes one CloudEvent as OCSF `version` and parses the record; panics if it cannot be
/// encoded.
pub fn encode_in(version: Version, event: &Value) -> Value {
    let bytes = try_encode_in(version, event, 7).unwrap_or_else(|e| {
        panic!(
            "{} cannot be encoded as OCSF {}: {e}: {}",
            event["type"],
            declared(version),
            std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
        )
    });
    serde_json::from_slice(&bytes).unwrap()
}

/// The schema file of a class: `json-schema/<uid>_<name>.json` in the fixtures of `version`,
/// or with profiles `json-schema/profiles/<profiles>/<uid>_<name>.json`, the profile names
/// sorted and joined with `+` as OCSF's published schemas name their folders
/// (`ai_operation+record_integrity`), so the order a record lists them in does not matter.
pub fn schema_path(version: Version, class_uid: u64, profiles: &[&str]) -> Option<PathBuf> {
    let mut dir = fixtures(version).join("json-schema");
    if !profiles.is_empty() {
        let mut names = profiles.to_vec();
        names.sort_unstable();
        dir = dir.join("profiles").join(names.join("+"));
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

/// A class schema: the document (walked for deprecations) and its compiled validator.
type Schema = (Value, Validator);

/// A schema file, parsed and compiled once per test binary.
fn schema(path: &Path) -> &'static Schema {
    static CACHE: OnceLock<Mutex<Vec<(PathBuf, &'static Schema)>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if let Some((_, s)) = cache.iter().find(|(p, _)| p == path) {
        return s;
    }
    let document = load(path);
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&document)
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()));
    let s: &'static Schema = Box::leak(Box::new((document, compiled)));
    cache.push((path.to_owned(), s));
    s
}

fn captions(version: Version) -> &'static Value {
    static V1_8_0: OnceLock<Value> = OnceLock::new();
    static V1_9_0: OnceLock<Value> = OnceLock::new();
    let cell = match version {
        Version::V1_8_0 => &V1_8_0,
        Version::V1_9_0 => &V1_9_0,
    };
    cell.get_or_init(|| load(&fixtures(version).join("captions.json")))
}

/// The schema of a record's class (and declared profiles), or why there is none.
fn schema_of(version: Version, record: &Value) -> Result<&'static Schema, String> {
    let Some(class_uid) = record["class_uid"].as_u64() else {
        return Err("no integer `class_uid`, so no schema applies".into());
    };
    let profiles: Vec<&str> = record["metadata"]["profiles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema_path(version, class_uid, &profiles)
        .map(|path| schema(&path))
        .ok_or_else(|| format!("no schema for class {class_uid} with profiles {profiles:?}"))
}

/// Every way `record` fails its OCSF 1.8.0 class schema, then every rule it breaks.
pub fn errors(record: &Value) -> Vec<String> {
    errors_in(Version::V1_8_0, record)
}

/// Every way `record` fails its class schema in `version`, then every rule it breaks; empty
/// if valid.
pub fn errors_in(version: Version, record: &Value) -> Vec<String> {
    let (_, validator) = match schema_of(version, record) {
        Ok(schema) => schema,
        Err(why) => return vec![why],
    };
    let mut errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| {
            let at = e.instance_path.as_str();
            format!("at {}: {e}", if at.is_empty() { "/" } else { at })
        })
        .collect();
    errors.extend(rule_errors_in(version, record));
    errors
}

/// The checks the OCSF 1.8.0 schemas cannot make.
pub fn rule_errors(record: &Value) -> Vec<String> {
    rule_errors_in(Version::V1_8_0, record)
}

/// The checks the schemas of `version` cannot make.
pub fn rule_errors_in(version: Version, record: &Value) -> Vec<String> {
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
    if record["metadata"]["version"] != declared(version) {
        errors.push(format!(
            "metadata.version is {}, not \"{}\"",
            record["metadata"]["version"],
            declared(version)
        ));
    }
    let captions = captions(version);
    let class = &captions["classes"][class_uid.to_string()];
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
    caption("severity", &captions["severity"][severity_id.to_string()]);
    if let Some(status_id) = record["status_id"].as_u64() {
        caption("status", &captions["status"][status_id.to_string()]);
    }
    errors
}

/// Every deprecated thing `record` uses in `version`: its class, if the version deprecates it
/// (`deprecated_classes` in its captions, since the generated schemas drop class-level
/// deprecation), and the path of every attribute its class schema marks `deprecated`.
pub fn deprecations(version: Version, record: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let class_uid = record["class_uid"].to_string();
    if let Some(why) = captions(version)["deprecated_classes"].get(&class_uid) {
        found.push(format!(
            "class {class_uid} is deprecated since {}: {}",
            why["since"], why["message"]
        ));
    }
    if let Ok((document, _)) = schema_of(version, record) {
        deprecated_attributes(document, document, record, "", &mut found);
    }
    found
}

/// Walks `value` along `schema` (resolving local `$ref`s into `root`'s `$defs`), noting the
/// path of every attribute whose schema says `deprecated: true`.
fn deprecated_attributes(
    root: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    found: &mut Vec<String>,
) {
    let mut schema = schema;
    while let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        schema = &root["$defs"][name];
    }
    match value {
        Value::Object(attributes) => {
            for (name, inner) in attributes {
                let Some(attribute) = schema["properties"].get(name) else {
                    continue;
                };
                let path = format!("{at}/{name}");
                if attribute["deprecated"] == true {
                    found.push(format!("attribute {path} is deprecated"));
                }
                deprecated_attributes(root, attribute, inner, &path, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                deprecated_attributes(root, &schema["items"], item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// Panics with every error if `record` is not valid OCSF 1.8.0 or uses what 1.8.0 deprecates.
pub fn assert_valid(record: &Value) {
    assert_valid_in(Version::V1_8_0, record)
}

/// Panics with every error if `record` is not valid OCSF `version`, or uses a class or
/// attribute `version` deprecates: rollcall's records must do neither.
pub fn assert_valid_in(version: Version, record: &Value) {
    let mut errors = errors_in(version, record);
    errors.extend(deprecations(version, record));
    assert!(
        errors.is_empty(),
        "OCSF {} record (event {}) is invalid:\n  {}\nrecord: {record:#}",
        declared(version),
        record["metadata"]["event_code"],
        errors.join("\n  ")
    );
}

/// Panics unless the record of each event type's example (`events::event_of_type`) in
/// `version` has the class and activity given, and the `type_uid` they make.
pub fn assert_mapped_in(version: Version, expected: &[(&str, u64, u64)]) {
    for &(t, class, activity) in expected {
        let r = encode_in(version, &super::events::event_of_type(t));
        assert_eq!(
            (
                r["class_uid"].as_u64(),
                r["activity_id"].as_u64(),
                r["type_uid"].as_u64()
            ),
            (Some(class), Some(activity), Some(class * 100 + activity)),
            "{t} in {}",
            declared(version)
        );
    }
}

/// Every line of an OCSF JSONL text, each checked against `version`; returns the records.
pub fn assert_valid_jsonl_in(version: Version, text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("OCSF line is not JSON ({e}): {line}"));
            assert_valid_in(version, &record);
            record
        })
        .collect()
}
