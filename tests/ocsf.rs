//! OCSF output (`format = "ocsf"`): every event type from both kinds of source encodes to a
//! record that validates against the OCSF 1.8.0 JSON Schema of its class and obeys the rules
//! the schemas cannot check; the validator itself rejects broken records; the mapping, the
//! severities and the de-duplication id are the documented ones; no stored input panics.

use crate::support;

use std::borrow::Cow;
use std::collections::BTreeSet;

use rollcall::encode::{Binding, Encoder, Envelope, Format, Mode};
use rollcall::event::EventType;
use rollcall::store::StoredEvent;
use serde_json::{json, Value};
use support::events::{event_of_type, every_kind_of_event, from_source, types_of};
use support::ocsf::{
    assert_mapped_in, assert_valid, assert_valid_in, declared, encode, errors, errors_in, load,
    rule_errors, try_encode, try_encode_in, Version, FIXTURES, STORE,
};

fn is_rejected(record: &Value) -> bool {
    !errors(record).is_empty()
}

// --- every event type validates ------------------------------------------------------------

#[test]
fn every_event_type_from_superset_and_kylin_validates_against_its_ocsf_class_schema() {
    let events = every_kind_of_event();
    let by = |scheme: &str| -> BTreeSet<&str> {
        events
            .iter()
            .filter(|e| e["source"].as_str().unwrap().starts_with(scheme))
            .map(|e| e["type"].as_str().unwrap())
            .collect()
    };
    let kylin_only = ["user.locked", "user.unlocked", "user.password_changed"];
    let superset: BTreeSet<&str> = EventType::ALL
        .iter()
        .filter(|t| t.from_source())
        .map(|t| t.as_str())
        .filter(|t| !kylin_only.contains(t))
        .collect();
    assert_eq!(by("superset://"), superset, "every Superset type");
    let superset_only = [
        "user.role_added",
        "user.role_removed",
        "user.login",
        "audit.action",
        "agent.tool_called",
    ];
    let kylin: BTreeSet<&str> = EventType::ALL
        .iter()
        .filter(|t| t.from_source())
        .map(|t| t.as_str())
        .filter(|t| !superset_only.contains(t))
        .collect();
    assert_eq!(by("kylin://"), kylin, "every Kylin type");
    for event in &events {
        let record = encode(event);
        assert_valid(&record);
    }
}

#[test]
fn type_uid_is_class_uid_times_100_plus_activity_id_for_every_record() {
    for event in every_kind_of_event() {
        let r = encode(&event);
        let (class, activity) = (r["class_uid"].as_u64(), r["activity_id"].as_u64());
        assert_eq!(
            r["type_uid"].as_u64(),
            Some(class.unwrap() * 100 + activity.unwrap()),
            "{}",
            event["type"]
        );
        assert_eq!(r["category_uid"].as_u64(), Some(class.unwrap() / 1000));
    }
}

#[test]
fn each_event_type_maps_to_the_documented_class_and_activity() {
    let expected: [(&str, u64, u64); 15] = [
        ("user.observed", 5003, 2),
        ("user.created", 3001, 1),
        ("user.reactivated", 3001, 2),
        ("user.deactivated", 3001, 5),
        ("user.deleted", 3001, 6),
        ("user.password_changed", 3001, 3),
        ("user.locked", 3001, 9),
        ("user.unlocked", 3001, 12),
        ("user.updated", 3001, 99),
        ("user.login", 3002, 1),
        ("user.login_failed", 3002, 1),
        ("user.role_added", 3005, 1),
        ("user.role_removed", 3005, 2),
        ("user.group_added", 3006, 3),
        ("user.group_removed", 3006, 4),
    ];
    assert_mapped_in(Version::V1_8_0, &expected);
    for t in ["audit.action", "agent.tool_called"] {
        assert_eq!(encode(&event_of_type(t))["class_uid"], 6003, "{t}");
    }
}

// --- the validator rejects what it must -------------------------------------------------------

#[test]
fn the_validator_accepts_the_valid_examples_and_rejects_every_invalid_one() {
    let expected = load(&std::path::Path::new(FIXTURES).join("examples/expected.json"));
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 25);
    for (file, verdict) in expected {
        let record = load(&std::path::Path::new(FIXTURES).join("examples").join(file));
        let accepted = errors(&record).is_empty();
        let should = verdict["schema"] == "accept" && verdict["rules"] == "accept";
        assert_eq!(accepted, should, "{file}: {:?}", errors(&record));
    }
}

#[test]
fn a_type_uid_the_schema_accepts_but_the_activity_contradicts_is_caught_by_the_rule_check() {
    let file = "examples/6003_api_activity.invalid.type_uid_activity_mismatch_schema_accepts.json";
    let record = load(&std::path::Path::new(FIXTURES).join(file));
    let rules = rule_errors(&record);
    assert!(rules.iter().any(|e| e.starts_with("type_uid")), "{rules:?}");
}

#[test]
fn a_broken_encoded_record_is_rejected() {
    let good = encode(&event_of_type("user.role_added"));
    assert_valid(&good);

    let mut no_privileges = good.clone();
    no_privileges.as_object_mut().unwrap().remove("privileges");
    assert!(is_rejected(&no_privileges), "3005 without privileges");

    let mut integer_uid = good.clone();
    integer_uid["user"]["uid"] = json!(7);
    assert!(is_rejected(&integer_uid), "user.uid as an integer");

    let mut unknown = good.clone();
    unknown["superset_role"] = json!("Alpha");
    assert!(is_rejected(&unknown), "an attribute OCSF does not define");

    let mut iso_time = good.clone();
    iso_time["time"] = json!("2026-11-23T07:31:19Z");
    assert!(is_rejected(&iso_time), "an ISO time");

    let mut wrong_type = good.clone();
    wrong_type["type_uid"] = json!(300502);
    assert!(is_rejected(&wrong_type), "a type_uid of another activity");

    let mut wrong_caption = good;
    wrong_caption["severity"] = json!("Critical");
    assert!(
        is_rejected(&wrong_caption),
        "a caption that contradicts its id"
    );
}

// --- what the records hold ---------------------------------------------------------------------

#[test]
fn metadata_names_ocsf_1_8_0_rollcall_and_the_event_id_and_is_the_same_on_every_encoding() {
    let event = event_of_type("user.created");
    let first = try_encode(&event, 7).unwrap();
    let again = try_encode(&event, 7).unwrap();
    assert_eq!(first, again, "a redelivery or replay sends the same bytes");
    let r: Value = serde_json::from_slice(&first).unwrap();
    let m = &r["metadata"];
    assert_eq!(m["version"], "1.8.0");
    assert_eq!(m["uid"], event["id"], "SIEMs de-duplicate on the event id");
    assert_eq!(
        m["product"],
        json!({"name": "rollcall", "version": env!("CARGO_PKG_VERSION")})
    );
    assert_eq!(m["log_name"], event["source"]);
    assert_eq!(m["event_code"], "user.created");
    assert_eq!(m["sequence"], 7);
    assert_eq!(m["original_time"], event["time"]);
    let observed: chrono::DateTime<chrono::Utc> = event["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(m["logged_time"], observed.timestamp_millis());
    assert_eq!(r["time"], observed.timestamp_millis(), "epoch milliseconds");
    assert_eq!(r["timezone_offset"], 0);
}

#[test]
fn the_user_carries_a_string_uid_name_email_and_full_name() {
    let event = from_source("superset://", "user.created");
    let r = encode(&event);
    let u = &event["data"]["user"];
    assert_eq!(r["user"]["uid"], u["id"].to_string());
    assert_eq!(r["user"]["name"], u["username"]);
    assert_eq!(r["user"]["email_addr"], u["email"]);
    assert_eq!(
        r["user"]["full_name"],
        format!(
            "{} {}",
            u["first_name"].as_str().unwrap(),
            u["last_name"].as_str().unwrap()
        )
    );

    let kylin = from_source("kylin://", "user.created");
    let r = encode(&kylin);
    assert_eq!(r["user"]["uid"], kylin["data"]["user"]["uuid"]);
    assert_eq!(r["user"]["name"], kylin["data"]["user"]["username"]);
}

#[test]
fn an_email_ocsf_would_reject_stays_only_in_unmapped() {
    let mut event = event_of_type("user.created");
    event["data"]["user"]["email"] = json!("alice-at-example");
    let r = encode(&event);
    assert_valid(&r);
    assert!(r["user"].get("email_addr").is_none());
    assert_eq!(r["unmapped"]["data"]["user"]["email"], "alice-at-example");
}

#[test]
fn unmapped_holds_the_cloudevents_data_verbatim() {
    for event in every_kind_of_event() {
        let r = encode(&event);
        assert_eq!(
            r["unmapped"],
            json!({"data": event["data"]}),
            "{}",
            event["type"]
        );
    }
}

#[test]
fn an_update_keeps_the_account_before_and_after_and_the_field_changes() {
    let event = from_source("superset://", "user.updated");
    let r = encode(&event);
    assert_eq!(r["activity_id"], 99);
    assert_eq!(r["activity_name"], "Other");
    assert_eq!(r["user"]["email_addr"], event["data"]["before"]["email"]);
    assert_eq!(
        r["user_result"]["email_addr"],
        event["data"]["user"]["email"]
    );
    assert_eq!(r["unmapped"]["data"]["changes"], event["data"]["changes"]);
    assert!(
        r["message"].as_str().unwrap().contains("email"),
        "{}",
        r["message"]
    );
}

#[test]
fn a_login_names_the_service_and_a_failed_login_keeps_status_and_counts() {
    let login = encode(&event_of_type("user.login"));
    assert_eq!(login["status_id"], 1);
    assert_eq!(
        login["service"],
        json!({"name": "Superset", "uid": "superset://prod-eu.1"})
    );

    for scheme in ["superset://", "kylin://"] {
        let event = from_source(scheme, "user.login_failed");
        let r = encode(&event);
        assert_eq!(
            (r["status_id"].clone(), r["status"].clone()),
            (json!(2), json!("Failure"))
        );
        assert_eq!(r["count"], event["data"]["new_failures"]);
        assert_eq!(
            r["unmapped"]["data"]["fail_login_count"],
            event["data"]["fail_login_count"]
        );
        assert!(r["service"]["uid"].as_str().unwrap().starts_with(scheme));
    }
}

#[test]
fn a_login_happens_at_supersets_last_login_not_when_rollcall_noticed() {
    let event = event_of_type("user.login");
    let r = encode(&event);
    let last_login = event["data"]["user"]["last_login"].as_str().unwrap();
    let at: chrono::DateTime<chrono::Utc> = last_login.parse().unwrap();
    assert_eq!(r["time"], at.timestamp_millis());
    assert_eq!(r["metadata"]["original_time"], last_login);
}

#[test]
fn roles_become_privileges_and_groups_the_group() {
    let r = encode(&event_of_type("user.role_added"));
    assert_eq!(r["privileges"], json!(["Alpha"]));
    let r = encode(&from_source("superset://", "user.group_added"));
    assert_eq!(r["group"], json!({"name": "finance", "uid": "2"}));
    let r = encode(&from_source("kylin://", "user.group_added"));
    assert_eq!(
        r["group"],
        json!({"name": "ROLE_MODELER", "uid": "ROLE_MODELER"})
    );
}

#[test]
fn severity_follows_the_documented_choices() {
    let severity = |e: &Value| encode(e)["severity_id"].as_u64().unwrap();
    assert_eq!(
        severity(&from_source("kylin://", "user.locked")),
        4,
        "a lock is High"
    );
    assert_eq!(
        severity(&event_of_type("user.deleted")),
        3,
        "a deletion is Medium"
    );
    assert_eq!(severity(&event_of_type("user.reactivated")), 3);
    assert_eq!(severity(&event_of_type("user.created")), 2);
    assert_eq!(severity(&event_of_type("user.role_added")), 2);
    assert_eq!(severity(&event_of_type("user.observed")), 1);
    assert_eq!(severity(&event_of_type("audit.action")), 1);
    let mut call = event_of_type("agent.tool_called");
    assert_eq!(severity(&call), 1, "a read-only tool is Informational");
    call["data"]["can_write"] = json!(true);
    assert_eq!(severity(&call), 2, "one that may write is Low");
    call["data"]["can_write"] = Value::Null;
    assert_eq!(severity(&call), 2, "and so is one rollcall does not know");

    let mut admin = event_of_type("user.role_added");
    admin["data"]["role"]["name"] = json!("Admin");
    assert_eq!(severity(&admin), 4, "granting Admin is High");
    let mut kylin_admin = from_source("kylin://", "user.group_added");
    kylin_admin["data"]["group"] = json!({"id": "ROLE_ADMIN", "name": "ROLE_ADMIN"});
    assert_eq!(severity(&kylin_admin), 4, "joining ROLE_ADMIN is High");

    let mut burst = event_of_type("user.login_failed");
    assert_eq!(severity(&burst), 2);
    burst["data"]["new_failures"] = json!(5);
    assert_eq!(severity(&burst), 3, "five failures in one poll is Medium");
}

#[test]
fn the_actor_is_only_who_superset_recorded() {
    let created = from_source("superset://", "user.created");
    let r = encode(&created);
    match created["data"]["user"]["created_by"].as_u64() {
        Some(by) => assert_eq!(r["actor"]["user"]["uid"], by.to_string()),
        None => assert!(r.get("actor").is_none()),
    }
    for t in [
        "user.role_added",
        "user.group_added",
        "user.deleted",
        "user.login",
    ] {
        assert!(encode(&event_of_type(t)).get("actor").is_none(), "{t}");
    }
}

#[test]
fn an_action_log_row_is_api_activity_with_the_actor_operation_objects_and_duration() {
    let events = every_kind_of_event();
    let rows: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "audit.action")
        .collect();
    assert_eq!(rows.len(), 2, "one row with a user, one without");
    let with_user = encode(rows[0]);
    assert_eq!(with_user["class_uid"], 6003);
    assert_eq!(
        with_user["activity_id"], 99,
        "db_write says nothing about the method"
    );
    assert_eq!(with_user["activity_name"], "mcp.generate_chart.db_write");
    assert_eq!(with_user["api"]["operation"], "mcp.generate_chart.db_write");
    assert_eq!(with_user["actor"]["user"]["uid"], "3");
    assert_eq!(with_user["actor"]["user"]["name"], "bob");
    assert_eq!(with_user["duration"], 41);
    assert_eq!(
        with_user["resources"],
        json!([{"type": "Dashboard", "uid": "1"}, {"type": "Chart", "uid": "5"}])
    );
    assert_eq!(with_user["http_request"]["url"]["path"], "/mcp");
    assert_eq!(
        with_user["http_request"]["referrer"],
        "http://superset/dashboard/1/"
    );
    // The log records no client address, and none is invented.
    assert_eq!(with_user["src_endpoint"], json!({"name": "unknown"}));
    let dttm: chrono::DateTime<chrono::Utc> =
        rows[0]["data"]["dttm"].as_str().unwrap().parse().unwrap();
    assert_eq!(with_user["time"], dttm.timestamp_millis());
    assert_eq!(
        with_user["metadata"]["original_time"],
        rows[0]["data"]["dttm"]
    );

    let anonymous = encode(rows[1]);
    assert_valid(&anonymous);
    assert_eq!(anonymous["actor"], json!({"user": {"name": "anonymous"}}));
    assert!(
        anonymous["http_request"]["url"].is_null(),
        "its json is not JSON"
    );

    let mut read = rows[0].clone();
    read["data"]["action"] = json!("ChartRestApi.get_list");
    let read = encode(&read);
    assert_valid(&read);
    assert_eq!(
        (read["activity_id"].clone(), read["type_uid"].clone()),
        (json!(2), json!(600302))
    );
}

#[test]
fn an_agents_tool_call_is_api_activity_by_the_mcp_client_as_its_user_with_only_failure_as_status() {
    let events = every_kind_of_event();
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "agent.tool_called")
        .collect();
    let tools: Vec<_> = calls.iter().map(|e| e["data"]["tool"].clone()).collect();
    assert_eq!(
        tools,
        [
            "list_databases",
            "get_chart_info",
            "get_dataset_info",
            "list_charts"
        ]
    );
    let read = encode(calls[0]);
    assert_valid(&read);
    assert_eq!(
        (read["class_uid"].clone(), read["type_uid"].clone()),
        (json!(6003), json!(600302))
    );
    assert_eq!(read["api"]["operation"], "list_databases");
    assert_eq!(
        read["actor"],
        json!({"user": {"uid": "1", "name": "admin", "full_name": "Admin User"}, "app_name": "MCP client"})
    );
    assert_eq!(read["duration"], 65);
    let at = |field: &str| -> i64 {
        let text = calls[0]["data"][field].as_str().unwrap();
        text.parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp_millis()
    };
    assert_eq!(read["start_time"], at("started_at"));
    assert_eq!(
        (read["end_time"].clone(), read["time"].clone()),
        (json!(at("finished_at")), json!(at("finished_at")))
    );
    assert_eq!(
        read["metadata"]["original_time"],
        calls[0]["data"]["finished_at"]
    );
    assert_eq!(
        (read["status_id"].clone(), read["status"].clone()),
        (json!(0), json!("Unknown")),
        "Superset's success includes calls refused for their arguments"
    );
    assert_eq!(read["src_endpoint"], json!({"name": "unknown"}));
    assert_eq!(
        read["message"],
        "an AI agent called MCP tool list_databases on Superset as admin"
    );

    let failed = encode(calls[1]);
    assert_eq!(
        (failed["status_id"].clone(), failed["status"].clone()),
        (json!(2), json!("Failure"))
    );
    let refused = encode(calls[3]);
    assert_valid(&refused);
    assert_eq!(
        refused["actor"],
        json!({"app_name": "MCP client"}),
        "no user is invented"
    );
    assert!(refused.get("start_time").is_some());

    let mut write = calls[0].clone();
    write["data"]["tool"] = json!("execute_sql");
    write["data"]["can_write"] = json!(true);
    write["data"]["agent_id"] = json!("claude-desktop");
    write["data"]["started_at"] = Value::Null;
    let write = encode(&write);
    assert_valid(&write);
    assert_eq!(
        (write["activity_id"].clone(), write["activity_name"].clone()),
        (json!(99), json!("execute_sql")),
        "a tool that may write may have written nothing: no Create or Update is claimed"
    );
    assert_eq!(write["actor"]["app_uid"], "claude-desktop");
    assert!(write.get("start_time").is_none());
}

#[test]
fn a_kylin_lock_says_how_long_and_happens_when_kylin_locked() {
    let event = from_source("kylin://", "user.locked");
    let r = encode(&event);
    let at: chrono::DateTime<chrono::Utc> = event["data"]["locked_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r["time"], at.timestamp_millis());
    assert!(
        r["message"].as_str().unwrap().contains("failed logins"),
        "{}",
        r["message"]
    );
}

// --- the wire ---------------------------------------------------------------------------------

#[test]
fn cloudevents_bodies_stay_the_stored_bytes_without_a_copy() {
    let event = event_of_type("user.created");
    let stored = StoredEvent {
        offset: 3,
        bytes: serde_json::to_vec(&event).unwrap().into(),
    };
    let envelope = Envelope::parse(&stored).unwrap();
    for (mode, expected) in [
        (Mode::Structured, &stored.bytes[..]),
        (Mode::Binary, envelope.data.as_bytes()),
    ] {
        let encoder = Encoder {
            format: Format::Cloudevents,
            mode,
            binding: Binding::Kafka,
            ocsf: Version::V1_8_0,
        };
        let encoded = encoder.encode(&envelope, STORE).unwrap();
        assert!(matches!(encoded.body, Cow::Borrowed(_)), "{mode:?} borrows");
        assert_eq!(&encoded.body[..], expected, "{mode:?}");
    }
}

#[test]
fn an_ocsf_body_is_plain_json_keyed_per_user_without_cloudevents_headers() {
    let event = event_of_type("user.created");
    let stored = StoredEvent {
        offset: 3,
        bytes: serde_json::to_vec(&event).unwrap().into(),
    };
    let envelope = Envelope::parse(&stored).unwrap();
    for binding in [Binding::Kafka, Binding::Http] {
        let encoder = Encoder {
            format: Format::Ocsf,
            mode: Mode::Binary,
            binding,
            ocsf: Version::V1_8_0,
        };
        let encoded = encoder.encode(&envelope, STORE).unwrap();
        assert_eq!(encoded.content_type, "application/json");
        assert!(encoded.headers.is_empty());
        assert_eq!(encoded.key, envelope.key(), "the Kafka key stays per user");
    }
}

// --- nothing stored panics ----------------------------------------------------------------------

#[test]
fn data_without_what_its_type_needs_is_an_error_that_says_what_to_do() {
    let mut event = event_of_type("user.role_added");
    event["data"].as_object_mut().unwrap().remove("role");
    let err = try_encode(&event, 9).unwrap_err();
    assert_eq!(err.offset, 9);
    let cause = err.source.to_string();
    assert!(
        cause.contains("data.role") && cause.contains("format = \"cloudevents\""),
        "{cause}"
    );

    let mut event = event_of_type("user.created");
    event["type"] = json!("user.renamed");
    let cause = try_encode(&event, 9).unwrap_err().source.to_string();
    assert!(
        cause.contains("user.renamed") && cause.contains("upgrade"),
        "{cause}"
    );
}

#[test]
fn any_mangled_data_is_encoded_validly_or_refused_never_a_panic_in_either_version() {
    let replacements = [
        json!(null),
        json!(42),
        json!("x"),
        json!([]),
        json!({}),
        json!(-1),
    ];
    for event in every_kind_of_event() {
        let mut paths: Vec<Vec<String>> = Vec::new();
        for (key, value) in event["data"].as_object().unwrap() {
            paths.push(vec![key.clone()]);
            if let Some(inner) = value.as_object() {
                paths.extend(inner.keys().map(|k| vec![key.clone(), k.clone()]));
            }
        }
        for path in &paths {
            for replacement in replacements.iter().map(Some).chain([None]) {
                let mut mangled = event.clone();
                let mut at = &mut mangled["data"];
                for k in &path[..path.len() - 1] {
                    at = &mut at[k.as_str()];
                }
                let last = path.last().unwrap();
                match replacement {
                    Some(v) => at[last.as_str()] = v.clone(),
                    None => {
                        at.as_object_mut().unwrap().remove(last);
                    }
                }
                for version in Version::ALL {
                    if let Ok(bytes) = try_encode_in(version, &mangled, 1) {
                        let record: Value = serde_json::from_slice(&bytes).unwrap();
                        assert!(
                            errors_in(version, &record).is_empty(),
                            "{} with data.{} = {replacement:?} encoded to an invalid {version:?} record: {:?}",
                            event["type"],
                            path.join("."),
                            errors_in(version, &record)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_example_events_cover_every_type() {
    let all: BTreeSet<&str> = EventType::ALL
        .iter()
        .filter(|t| t.from_source())
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types_of(&every_kind_of_event()), all);
}

// --- the documentation -------------------------------------------------------------------------

/// The record as docs/events.md shows it may elide `unmapped.data` as `"…"`, and names the
/// version of rollcall it was written with.
fn as_documented(mut record: Value, documented: &Value) -> Value {
    if documented["unmapped"]["data"] == "…" {
        record["unmapped"]["data"] = json!("…");
    }
    record["metadata"]["product"]["version"] = documented["metadata"]["product"]["version"].clone();
    record
}

#[test]
fn every_ocsf_sample_in_docs_events_md_is_what_the_encoder_makes_of_the_cloudevent_above_it() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let mut samples = 0;
    for section in text.split("\n## ").skip(1) {
        let title = section.lines().next().unwrap();
        let blocks: Vec<Value> = section
            .split("```json\n")
            .skip(1)
            .map(|b| serde_json::from_str(b.split("\n```").next().unwrap()).unwrap())
            .collect();
        let [event, documented @ ..] = &blocks[..] else {
            panic!("{title}: expected a CloudEvent and its OCSF records");
        };
        support::schema::assert_valid_event(event);
        let offset: u64 = event["sequence"].as_str().unwrap().parse().unwrap();
        // One record per OCSF version, each in the version it declares.
        let versions: Vec<Version> = documented
            .iter()
            .map(|d| {
                *Version::ALL
                    .iter()
                    .find(|v| d["metadata"]["version"] == declared(**v))
                    .unwrap_or_else(|| panic!("{title}: {}", d["metadata"]["version"]))
            })
            .collect();
        assert_eq!(versions, [Version::V1_9_0, Version::V1_8_0], "{title}");
        for (version, documented) in versions.into_iter().zip(documented) {
            let record: Value =
                serde_json::from_slice(&try_encode_in(version, event, offset).unwrap()).unwrap();
            assert_valid_in(version, &record);
            assert_eq!(
                &as_documented(record, documented),
                documented,
                "{title}, {version:?}"
            );
        }
        samples += 1;
    }
    assert_eq!(samples, 15);
}
