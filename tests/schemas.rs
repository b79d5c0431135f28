//! The JSON Schemas in `schemas/` against what rollcall actually emits: every event the diff can
//! derive must validate, and malformed events must not.

use crate::support;

use std::collections::BTreeSet;

use rollcall::diff::{diff, DiffOptions};
use rollcall::event::EventType;
use serde_json::{json, Value};
use support::events::{event_of_type, every_kind_of_event, snap, stamp, types_of, user};
use support::schema::{
    assert_valid_event, assert_valid_jsonl, compile, event_errors, load_schema, schema_file_name,
    COMMON_SCHEMA, SCHEMA_DIR,
};

/// Asserts that `event` fails its schema with an error located at the JSON pointer `at`.
fn assert_rejected(event: &Value, at: &str, why: &str) {
    let errors = event_errors(event);
    assert!(
        !errors.is_empty(),
        "an event with {why} passed its schema: {event:#}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("at {at}: "))),
        "an event with {why} was rejected, but not at {at}: {errors:#?}"
    );
}

// --- the schema files -------------------------------------------------------------------------

#[test]
fn every_event_type_has_a_schema_that_compiles_offline() {
    for t in EventType::ALL {
        let file = schema_file_name(t.as_str());
        assert!(
            std::path::Path::new(SCHEMA_DIR).join(&file).is_file(),
            "missing schemas/{file}"
        );
        compile(t.as_str()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn every_schema_file_is_a_valid_draft_2020_12_schema() {
    let mut files = 0;
    for entry in std::fs::read_dir(SCHEMA_DIR).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        files += 1;
        let schema = load_schema(&name);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name} must declare draft 2020-12"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name} is not a valid schema: {e}");
        }
    }
    assert_eq!(files, EventType::ALL.len() + 1, "one per type plus common");
}

#[test]
fn no_schema_file_without_an_event_type() {
    let known: BTreeSet<String> = EventType::ALL
        .iter()
        .map(|t| schema_file_name(t.as_str()))
        .chain([COMMON_SCHEMA.to_string()])
        .collect();
    for entry in std::fs::read_dir(SCHEMA_DIR).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(known.contains(&name), "schemas/{name} names no event type");
        }
    }
}

#[test]
fn each_schema_pins_its_type_and_id_closes_data_and_admits_only_extension_attributes() {
    for t in EventType::ALL {
        let schema = load_schema(&schema_file_name(t.as_str()));
        assert_eq!(schema["properties"]["type"]["const"], t.as_str());
        assert_eq!(
            schema["$id"],
            t.dataschema(),
            "{t}: `$id` is what events name"
        );
        assert_eq!(
            schema["properties"]["dataschema"]["const"],
            t.dataschema(),
            "{t}"
        );
        assert_eq!(
            schema["additionalProperties"]["$ref"], "urn:rollcall:schema:common#/$defs/extension",
            "{t}"
        );
        assert_eq!(
            schema["properties"]["data"]["additionalProperties"], false,
            "{t}"
        );
    }
}

#[test]
fn an_extension_attribute_is_accepted_and_a_misnamed_one_is_not() {
    let mut event = event_of_type("user.created");
    event["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    event["dataschema"] = json!("urn:rollcall:schema:user.created");
    assert_valid_event(&event);
    event["Bad_Name"] = json!("x");
    assert!(!support::schema::event_errors(&event).is_empty());
    let mut wrong = event_of_type("user.created");
    wrong["dataschema"] = json!("urn:rollcall:schema:user.deleted");
    assert!(
        !support::schema::event_errors(&wrong).is_empty(),
        "a type names its own schema"
    );
}

// --- what the library emits validates ---------------------------------------------------------

#[test]
fn events_derived_by_the_diff_match_their_schemas() {
    let events = every_kind_of_event();
    let all: BTreeSet<&str> = EventType::ALL
        .iter()
        .filter(|t| t.from_source())
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types_of(&events), all, "the example must cover every type");
    for event in &events {
        assert_valid_event(event);
    }
}

#[test]
fn events_survive_a_jsonl_round_trip_and_validate_line_by_line() {
    let events = every_kind_of_event();
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    assert_eq!(assert_valid_jsonl(&text), events);
}

/// Every event of a signed store's log, checkpoints included, as stored.
fn chained_events() -> Vec<Value> {
    let (_dir, store) = support::chain::signed_store(3);
    store
        .events_from(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.bytes).unwrap())
        .collect()
}

#[test]
fn events_as_the_store_chains_them_and_its_checkpoints_match_their_schemas() {
    let stored = chained_events();
    assert_eq!(
        types_of(&stored),
        BTreeSet::from(["user.created", "rollcall.checkpoint"])
    );
    for event in &stored {
        assert!(event["chainhash"].is_string(), "{event}");
        assert_valid_event(event);
    }
    let mut checkpoint = stored
        .into_iter()
        .find(|e| e["type"] == "rollcall.checkpoint")
        .unwrap();
    checkpoint["data"]["signature"] = json!("not base64 of 64 bytes");
    assert_rejected(&checkpoint, "/data/signature", "a malformed signature");
    checkpoint["chainhash"] = json!("ABC");
    assert_rejected(
        &checkpoint,
        "/chainhash",
        "a chainhash that is not 64 hex digits",
    );
}

#[test]
fn a_source_may_name_its_shard_as_a_dns_label_and_nothing_else() {
    for mut event in chained_events() {
        let source = event["source"].as_str().unwrap().to_owned();
        event["source"] = json!(format!("{source}?shard=eu-1"));
        assert_valid_event(&event);
        for bad in ["?shard=EU-1", "?shard=-eu", "?shard=", "?region=eu-1"] {
            event["source"] = json!(format!("{source}{bad}"));
            assert_rejected(&event, "/source", &format!("a source ending {bad}"));
        }
    }
}

#[test]
fn login_failed_without_a_login_validates() {
    let mut before = user(5, "erin");
    before.fail_login_count = Some(1);
    let mut after = before.clone();
    after.fail_login_count = Some(3);
    let events = stamp(
        "superset://prod-eu.1",
        diff(&snap(&[before]), &snap(&[after]), &DiffOptions::default()),
    );
    assert_eq!(types_of(&events), BTreeSet::from(["user.login_failed"]));
    assert_valid_event(&events[0]);
}

#[test]
fn a_hand_written_event_validates() {
    let event = json!({
        "specversion": "1.0",
        "id": "01936b2e-8f3a-7c41-9d2e-5b7a1c0f4e21",
        "source": "superset://prod",
        "type": "user.role_added",
        "subject": "7",
        "time": "2024-11-23T12:03:04.123456Z",
        "datacontenttype": "application/json",
        "sequence": "00000000000000000042",
        "data": {
            "user": {
                "id": 7, "username": "alice", "first_name": "Alice", "last_name": "Example",
                "email": "alice@example.com", "active": true,
                "roles": [{"id": 3, "name": "Alpha"}, {"id": 4, "name": "Gamma"}],
                "groups": [],
                "login_count": 12, "fail_login_count": 0,
                "last_login": "2024-11-22T08:00:00Z",
                "created_on": "2024-01-02T03:04:05Z", "changed_on": "2024-11-23T12:00:00Z",
                "created_by": null, "changed_by": 1
            },
            "role": {"id": 3, "name": "Alpha"}
        }
    });
    assert_valid_event(&event);
}

// --- what must be rejected --------------------------------------------------------------------

#[test]
fn event_without_data_user_is_rejected() {
    for t in EventType::ALL.into_iter().filter(|t| t.from_source()) {
        let mut event = event_of_type(t.as_str());
        event["data"].as_object_mut().unwrap().remove("user");
        assert_rejected(&event, "/data", &format!("no data.user ({t})"));
    }
}

#[test]
fn unknown_type_is_rejected() {
    let mut event = event_of_type("user.created");
    event["type"] = json!("user.renamed");
    assert_eq!(
        event_errors(&event),
        ["no schema for event type `user.renamed`"]
    );
}

#[test]
fn type_that_does_not_match_the_data_is_rejected() {
    let mut event = event_of_type("user.created");
    event["type"] = json!("user.role_added");
    assert_rejected(&event, "/data", "a role_added type but no data.role");
    let mut event = event_of_type("user.group_added");
    event["type"] = json!("user.role_added");
    assert_rejected(&event, "/data", "data.group in a role event");
}

#[test]
fn an_extension_attribute_whose_value_is_not_a_cloudevents_type_is_rejected() {
    let mut event = event_of_type("user.created");
    event["partitionkey"] = json!({"nested": 1});
    assert_rejected(
        &event,
        "/partitionkey",
        "an object-valued extension attribute",
    );
}

#[test]
fn sequence_that_is_not_zero_padded_is_rejected() {
    let mut event = event_of_type("user.created");
    event["sequence"] = json!("42");
    assert_rejected(&event, "/sequence", "sequence \"42\"");
    event["sequence"] = json!(42);
    assert_rejected(&event, "/sequence", "a numeric sequence");
}

#[test]
fn id_that_is_not_a_uuid_v7_is_rejected() {
    let mut event = event_of_type("user.created");
    event["id"] = json!("not-a-uuid");
    assert_rejected(&event, "/id", "a non-UUID id");
    event["id"] = json!(uuid::Uuid::nil().to_string());
    assert_rejected(&event, "/id", "a nil (not v7) UUID");
}

#[test]
fn time_that_is_not_rfc3339_utc_is_rejected() {
    let mut event = event_of_type("user.created");
    event["time"] = json!("2024-11-23 12:00:00");
    assert_rejected(&event, "/time", "a non-RFC 3339 time");
    event["time"] = json!("2024-13-45T25:00:00Z");
    assert_rejected(&event, "/time", "an impossible date (format checked)");
    event["time"] = json!("2024-11-23T12:00:00+01:00");
    assert_rejected(&event, "/time", "a non-UTC time");
}

#[test]
fn unknown_user_field_is_rejected() {
    let mut event = event_of_type("user.created");
    event["data"]["user"]["password"] = json!("secret");
    assert_rejected(&event, "/data/user", "an extra field in the user record");
}

#[test]
fn deactivated_event_of_an_active_user_is_rejected() {
    let mut event = event_of_type("user.deactivated");
    event["data"]["user"]["active"] = json!(true);
    assert_rejected(
        &event,
        "/data/user/active",
        "an active user in user.deactivated",
    );
}

#[test]
fn source_without_the_superset_scheme_is_rejected() {
    let mut event = event_of_type("user.created");
    event["source"] = json!("prod");
    assert_rejected(&event, "/source", "a bare source name");
}

#[test]
#[should_panic(expected = "JSONL line 2")]
fn invalid_jsonl_line_is_reported_by_number() {
    let good = event_of_type("user.created");
    let mut bad = good.clone();
    bad["sequence"] = json!("2");
    assert_valid_jsonl(&format!("{good}\n{bad}\n"));
}
