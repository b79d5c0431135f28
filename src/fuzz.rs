//! Strategies for the fuzz tests of every parser of outside input (the Superset and Kylin
//! answers, the config file): arbitrary JSON, and JSON built from the hostile values an
//! adversarial server sends.
//!
//! Owns only input generation; each parser's fuzz test sits beside the parser. The normal test
//! suite runs proptest's default number of cases; `scripts/fuzz.sh` runs a million per target.
//! A fuzz test asserts only that its parser returns, `Ok` or `Err`: a panic fails it.

use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, up to a few levels deep.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value a hostile server puts where a field is expected.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-1),
            Just(0),
            any::<i64>()
        ]
        .prop_map(|n| json!(n)),
        prop_oneof![Just(u64::MAX), any::<u64>()].prop_map(|n| json!(n)),
        Just(json!(1e308)),
        Just(json!(-0.5)),
        hostile_string().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"id": 1, "name": "x", "authority": "ROLE_ADMIN"}])),
        Just(json!({"id": u64::MAX})),
    ]
}

/// Strings that broke, or could break, a parser or a terminal: dates at and beyond the edge
/// of what a date holds, control sequences, text direction overrides.
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-262143-01-01T00:00:00".to_owned()),
        Just("+262142-12-31T23:59:59.999999".to_owned()),
        Just("0000-01-01T00:00:00".to_owned()),
        Just("9999-12-31T23:59:59.999999".to_owned()),
        Just("0001-01-01T00:00:00".to_owned()),
        Just("2026-03-29T02:30:00".to_owned()),
        Just("2026-02-30T00:00:00".to_owned()),
        Just("\u{1b}[2J\u{1b}]0;pwned\u{7}".to_owned()),
        Just("\u{202e}gnp.exe".to_owned()),
        Just(String::new()),
        "[0-9T:.+-]{0,32}",
        any::<String>(),
    ]
}

/// Object keys: mostly the ones the parsers look for, so that fuzzing reaches past the first
/// missing field.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ]
}

const KEYS: &[&str] = &[
    "id",
    "ids",
    "count",
    "result",
    "username",
    "first_name",
    "last_name",
    "email",
    "active",
    "roles",
    "groups",
    "name",
    "login_count",
    "fail_login_count",
    "last_login",
    "created_on",
    "changed_on",
    "created_by",
    "changed_by",
    "user_ids",
    "users",
    "code",
    "data",
    "msg",
    "error_code",
    "error",
    "value",
    "total_size",
    "authorities",
    "authority",
    "disabled",
    "default_password",
    "locked",
    "uuid",
    "last_modified",
    "create_time",
    "locked_time",
    "wrong_time",
    "first_login_failed_time",
];

/// An object with every key of `fields`, each either a plausible value or a hostile one.
pub fn record(fields: &'static [(&'static str, Value)]) -> impl Strategy<Value = Value> {
    fields
        .iter()
        .map(|(k, plausible)| {
            prop_oneof![3 => Just(plausible.clone()), 1 => hostile_value()]
                .prop_map(move |v| (k.to_string(), v))
        })
        .collect::<Vec<_>>()
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}
