//! OCSF 1.9.0 output (`format = "ocsf"`, the default `ocsf_version`): every event type from
//! both kinds of source encodes to a record that validates against the OCSF 1.9.0 JSON Schema
//! of its class, obeys the rules the schemas cannot check and uses no class or attribute 1.9.0
//! deprecates; the validator and the deprecation check reject what they must; the mapping is
//! the documented one; 1.9.0 says what 1.8.0 says, only in 1.9.0's classes and attributes.

use crate::support;

use std::path::Path;

use serde_json::{json, Value};
use support::events::{event_of_type, every_kind_of_event, from_source};
use support::harness::superset_changes_beside_an_ocsf_sink;
use support::ocsf::{
    assert_mapped_in, assert_valid_in, deprecations, encode_in, errors_in, fixtures, load,
    rule_errors_in, Version,
};

const V1_9: Version = Version::V1_9_0;

fn encode(event: &Value) -> Value {
    encode_in(V1_9, event)
}

fn is_rejected(record: &Value) -> bool {
    !errors_in(V1_9, record).is_empty()
}

/// Panics unless `good`, changed by `change` (which `what` names), is rejected.
fn rejected_after(good: &Value, what: &str, change: &dyn Fn(&mut Value)) {
    let mut record = good.clone();
    change(&mut record);
    assert!(is_rejected(&record), "{what}");
}

// --- every event type validates and uses nothing deprecated -------------------------------------

#[test]
fn every_event_type_from_superset_and_kylin_is_valid_ocsf_1_9_0_without_anything_deprecated() {
    for event in &every_kind_of_event() {
        let record = encode(event);
        // Valid against its class schema, the rules, and no deprecated class or attribute.
        assert_valid_in(V1_9, &record);
        assert_eq!(record["metadata"]["version"], "1.9.0");
    }
}

#[test]
fn each_event_type_maps_to_the_documented_1_9_0_class_and_activity() {
    let expected: [(&str, u64, u64); 16] = [
        ("user.observed", 5003, 2),
        ("user.created", 3007, 1),
        ("user.updated", 3007, 2),
        ("user.deleted", 3007, 3),
        ("user.reactivated", 3007, 4),
        ("user.deactivated", 3007, 5),
        ("user.locked", 3007, 6),
        ("user.unlocked", 3007, 7),
        ("user.password_changed", 3007, 8),
        ("user.role_added", 3007, 16),
        ("user.role_removed", 3007, 17),
        ("user.group_added", 3006, 3),
        ("user.group_removed", 3006, 4),
        ("user.login", 3002, 1),
        ("user.login_failed", 3002, 1),
        // The example call is of a read-only tool.
        ("agent.tool_called", 6003, 2),
    ];
    assert_mapped_in(V1_9, &expected);
    let r = encode(&event_of_type("audit.action"));
    assert_eq!(r["class_uid"], 6003);
}

// --- the validator and the deprecation check reject what they must -----------------------------

#[test]
fn the_1_9_0_validator_accepts_the_valid_examples_and_rejects_every_invalid_one() {
    let examples = fixtures(V1_9).join("examples");
    let expected = load(&examples.join("expected.json"));
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 46);
    for (file, verdict) in expected {
        let record = load(&examples.join(file));
        let accepted = errors_in(V1_9, &record).is_empty();
        let should = verdict["schema"] == "accept" && verdict["rules"] == "accept";
        assert_eq!(accepted, should, "{file}: {:?}", errors_in(V1_9, &record));
        if verdict["rules"] == "reject" {
            assert!(!rule_errors_in(V1_9, &record).is_empty(), "{file}");
        }
    }
}

#[test]
fn the_deprecation_check_finds_a_deprecated_class_and_deprecated_attributes() {
    let examples = fixtures(V1_9).join("examples");
    let group = load(&examples.join("3006_group_management.valid.deprecated_user.json"));
    assert!(errors_in(V1_9, &group).is_empty(), "valid, only deprecated");
    let found = deprecations(V1_9, &group);
    assert!(
        found.iter().any(|d| d.contains("/user "))
            && found.iter().any(|d| d.contains("/actor/app_name")),
        "{found:?}"
    );

    // What rollcall sent in 1.8.0, declared as 1.9.0: its class is deprecated.
    let mut account_change = encode_in(Version::V1_8_0, &event_of_type("user.updated"));
    account_change["metadata"]["version"] = json!("1.9.0");
    let found = deprecations(V1_9, &account_change);
    assert!(
        found.iter().any(|d| d.starts_with("class 3001")),
        "{found:?}"
    );

    // A 1.9.0 group record carrying its member the 1.8.0 way.
    let mut record = encode(&event_of_type("user.group_added"));
    record["user"] = record["users"][0].clone();
    assert!(errors_in(V1_9, &record).is_empty());
    assert!(!deprecations(V1_9, &record).is_empty());
}

#[test]
fn a_broken_1_9_0_record_is_rejected() {
    let good = encode(&event_of_type("user.role_added"));
    assert_valid_in(V1_9, &good);
    let broken = |what: &str, change: &dyn Fn(&mut Value)| rejected_after(&good, what, change);
    broken("iam_roles as one object", &|r| {
        r["iam_roles"] = r["iam_roles"][0].clone()
    });
    broken("the singular iam_role 3007 does not have", &|r| {
        r["iam_role"] = r["iam_roles"][0].clone()
    });
    broken("a role id as an integer", &|r| {
        r["iam_roles"][0]["uid"] = json!(3)
    });
    broken("3001's user_result in 3007", &|r| {
        r["user_result"] = r["user"].clone()
    });
    broken("3001's type_uid", &|r| r["type_uid"] = json!(300101));
    broken("metadata.version 1.8.0", &|r| {
        r["metadata"]["version"] = json!("1.8.0")
    });
    broken("a caption of 3005", &|r| {
        r["activity_name"] = json!("Assign Privileges")
    });
    broken("a record-integrity attestation without the profile", &|r| {
        r["attestation_list"] = json!([{"fingerprint": {"algorithm_id": 3, "value": "00"}}])
    });

    let group = encode(&event_of_type("user.group_added"));
    let mut users_object = group.clone();
    users_object["users"] = group["users"][0].clone();
    assert!(is_rejected(&users_object), "users as one object");
}

#[test]
fn the_ai_operation_attributes_are_valid_only_with_their_profile_and_what_it_requires() {
    let mut call = event_of_type("agent.tool_called");
    call["data"]["agent_id"] = json!("claude-desktop");
    let good = encode(&call);
    assert_valid_in(V1_9, &good);
    let broken = |what: &str, change: &dyn Fn(&mut Value)| rejected_after(&good, what, change);
    broken("ai_agent without the profile declared", &|r| {
        r["metadata"].as_object_mut().unwrap().remove("profiles");
    });
    broken("an ai_agent with neither name nor uid", &|r| {
        r["ai_agent"] = json!({"type_id": 0})
    });
    broken("a delegation without its uid", &|r| {
        r["delegation"] = json!({"issuer_uid": "gateway"})
    });
    broken("an unknown profile", &|r| {
        r["metadata"]["profiles"] = json!(["ai_operation", "no_such_profile"])
    });
    // Two profiles, listed in any order, pick the folder that has both.
    let mut attested = good.clone();
    attested["metadata"]["profiles"] = json!(["record_integrity", "ai_operation"]);
    attested["attestation_list"] = json!([{"fingerprint": {"algorithm_id": 3, "value": "00"}}]);
    assert!(
        errors_in(V1_9, &attested).is_empty(),
        "{:?}",
        errors_in(V1_9, &attested)
    );
    // The 1.8.0 way of naming the agent is still valid in 1.9.0, but deprecated.
    let mut old_way = good.clone();
    old_way["actor"]["app_uid"] = json!("claude-desktop");
    assert!(errors_in(V1_9, &old_way).is_empty());
    assert!(
        deprecations(V1_9, &old_way)
            .iter()
            .any(|d| d.contains("/actor/app_uid")),
        "{:?}",
        deprecations(V1_9, &old_way)
    );
}

// --- what the records hold -----------------------------------------------------------------------

#[test]
fn an_update_is_the_account_before_as_user_and_after_as_updated_user() {
    let event = from_source("superset://", "user.updated");
    let r = encode(&event);
    assert_eq!(r["activity_name"], "Update");
    assert_eq!(r["user"]["email_addr"], event["data"]["before"]["email"]);
    assert_eq!(
        r["updated_user"]["email_addr"],
        event["data"]["user"]["email"]
    );
    assert!(r.get("user_result").is_none(), "deprecated in 1.9.0");
}

#[test]
fn a_role_is_an_iam_role_with_its_name_and_id_and_a_group_member_is_in_users() {
    let event = event_of_type("user.role_added");
    let r = encode(&event);
    assert_eq!(r["iam_roles"], json!([{"name": "Alpha", "uid": "3"}]));
    assert!(r.get("privileges").is_none());
    assert_eq!(r["user"]["name"], event["data"]["user"]["username"]);

    let r = encode(&from_source("superset://", "user.group_added"));
    assert_eq!(r["group"], json!({"name": "finance", "uid": "2"}));
    assert_eq!(r["users"][0]["uid"], "1");
    assert_eq!(r["users"].as_array().unwrap().len(), 1);
    assert!(
        r.get("user").is_none(),
        "3006 `user` is deprecated in 1.9.0"
    );
    let r = encode(&from_source("kylin://", "user.group_removed"));
    assert_eq!(r["users"][0]["name"], "erin");
}

#[test]
fn a_kylin_lock_carries_its_reason_in_status_detail() {
    let r = encode(&from_source("kylin://", "user.locked"));
    let detail = r["status_detail"].as_str().unwrap();
    assert!(detail.contains("10 failed logins"), "{detail}");
    assert!(r["message"].as_str().unwrap().ends_with(detail));
}

#[test]
fn an_agents_tool_call_is_api_activity_of_the_ai_operation_profile_as_the_user_it_acted_for() {
    let calls: Vec<Value> = every_kind_of_event()
        .into_iter()
        .filter(|e| e["type"] == "agent.tool_called")
        .collect();
    let read = encode(&calls[0]);
    assert_eq!(read["metadata"]["profiles"], json!(["ai_operation"]));
    assert_eq!(read["api"]["operation"], "list_databases");
    assert_eq!(
        read["actor"],
        json!({
            "user": {"uid": "1", "name": "admin", "full_name": "Admin User"},
            "application": {"name": "MCP client"},
        }),
        "the user is the principal; the agent is never described in the actor"
    );
    assert!(read.get("ai_agent").is_none(), "the client gave no id");
    assert!(
        read.get("delegation").is_none(),
        "Superset logs no delegation id"
    );
    let finished: chrono::DateTime<chrono::Utc> = calls[0]["data"]["finished_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(read["time"], finished.timestamp_millis());
    for aggregate_only in ["duration", "start_time", "end_time", "count"] {
        assert!(read.get(aggregate_only).is_none(), "{aggregate_only}");
    }
    assert_eq!(read["unmapped"]["data"], calls[0]["data"]);
    assert_eq!(
        (read["status_id"].clone(), read["status_detail"].clone()),
        (
            json!(0),
            json!("the tool returned without an error object, as it also does when it refuses its arguments")
        ),
        "Superset's success is only that the tool returned"
    );
    assert_eq!(encode(&calls[1])["status"], "Failure");
    let anonymous = encode(&calls[3]);
    assert_eq!(
        anonymous["actor"],
        json!({"application": {"name": "MCP client"}}),
        "no user is made up"
    );

    let mut write = calls[0].clone();
    write["data"]["tool"] = json!("execute_sql");
    write["data"]["can_write"] = json!(true);
    write["data"]["agent_id"] = json!("claude-desktop");
    write["data"]["started_at"] = Value::Null;
    let write = encode(&write);
    assert_valid_in(V1_9, &write);
    assert_eq!(
        (
            write["activity_id"].clone(),
            write["activity_name"].clone(),
            write["severity"].clone()
        ),
        (json!(99), json!("execute_sql"), json!("Low"))
    );
    assert_eq!(write["ai_agent"], json!({"uid": "claude-desktop"}));
    assert!(
        write["actor"].get("app_uid").is_none(),
        "deprecated in 1.9.0"
    );
}

#[test]
fn an_action_log_row_keeps_its_duration_only_in_unmapped() {
    let event = event_of_type("audit.action");
    assert!(event["data"]["duration_ms"].is_i64());
    let r = encode(&event);
    assert!(r.get("duration").is_none(), "1.9.0 keeps it for aggregates");
    assert_eq!(r["unmapped"]["data"], event["data"]);
    assert_eq!(
        encode_in(Version::V1_8_0, &event)["duration"],
        event["data"]["duration_ms"]
    );
}

/// A record without what only says which class, activity and version it is, and with each
/// fact 1.9.0 carries in an attribute of its own moved to where 1.8.0 carries it.
fn as_facts(mut record: Value) -> Value {
    let r = record.as_object_mut().unwrap();
    for key in [
        "class_uid",
        "class_name",
        "activity_id",
        "activity_name",
        "type_uid",
        "type_name",
    ] {
        r.remove(key);
    }
    r["metadata"].as_object_mut().unwrap().remove("version");
    if let Some(after) = r.remove("updated_user") {
        r.insert("user_result".into(), after);
    }
    if let Some(roles) = r.remove("iam_roles") {
        r.insert("privileges".into(), json!([roles[0]["name"]]));
    }
    if let Some(users) = r.remove("users") {
        r.insert("user".into(), users[0].clone());
    }
    if r["metadata"]["event_code"] == "user.locked" {
        r.remove("status_detail");
    }
    // 1.9.0 has no attribute for one call's times: they are in `unmapped.data` in both.
    for timing in ["duration", "start_time", "end_time"] {
        r.remove(timing);
    }
    if let Some(profiles) = r["metadata"].as_object_mut().unwrap().remove("profiles") {
        assert_eq!(profiles, json!(["ai_operation"]));
        let actor = r["actor"].as_object_mut().unwrap();
        let application = actor.remove("application").unwrap();
        actor.insert("app_name".into(), application["name"].clone());
        if let Some(agent) = r.remove("ai_agent") {
            r["actor"]["app_uid"] = agent["uid"].clone();
        }
    }
    record
}

#[test]
fn both_versions_carry_the_same_facts_for_every_event() {
    for event in every_kind_of_event() {
        let (v1_8, v1_9) = (encode_in(Version::V1_8_0, &event), encode(&event));
        assert_eq!(v1_8["category_uid"], v1_9["category_uid"]);
        assert_eq!(as_facts(v1_8), as_facts(v1_9), "{}", event["type"]);
    }
}

// --- a running sink ---------------------------------------------------------------------------

#[tokio::test]
async fn an_ocsf_sink_without_ocsf_version_sends_valid_1_9_0_records_of_every_superset_change() {
    let (events, records) = superset_changes_beside_an_ocsf_sink(None, V1_9).await;
    assert_eq!(records.len(), events.len(), "one record per event");
    for (event, record) in events.iter().zip(&records) {
        assert_eq!(record["metadata"]["uid"], event["id"]);
        assert_eq!(record["metadata"]["version"], "1.9.0");
    }
    let classes: std::collections::BTreeSet<u64> = records
        .iter()
        .map(|r| r["class_uid"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [3002, 3006, 3007, 5003].into());
}

// --- the documentation ---------------------------------------------------------------------------

#[test]
fn the_1_9_0_fixtures_readme_names_every_schema_it_holds() {
    let dir = fixtures(V1_9);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let schemas = dir.join("json-schema");
    let mut named = 0;
    for entry in std::fs::read_dir(&schemas).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "profiles" {
            continue;
        }
        let class = Path::new(&name).file_stem().unwrap().to_str().unwrap();
        assert!(readme.contains(&format!("`{class}`")), "{name}");
        named += 1;
    }
    // A profile's schemas by their path: `profiles/<profiles>/<class>`.
    for profile in std::fs::read_dir(schemas.join("profiles")).unwrap() {
        let profile = profile.unwrap();
        let folder = profile.file_name().into_string().unwrap();
        for entry in std::fs::read_dir(profile.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let class = Path::new(&name).file_stem().unwrap().to_str().unwrap();
            assert!(
                readme.contains(&format!("`profiles/{folder}/{class}`")),
                "{folder}/{name}"
            );
            named += 1;
        }
    }
    assert_eq!(named, 12);
}
