//! End to end against a REAL Apache Superset, started by `scripts/superset.sh`: 6.1.0, or the
//! release named by `SUPERSET_VERSION` (4.1.4, 5.0.0, 6.0.0) for both.
//!
//! Ignored by a plain `cargo test`; `scripts/test.sh` starts Superset (with short-lived access
//! tokens) and runs these one at a time with `--ignored`. Each test takes its own baseline, so
//! what earlier tests or runs left in Superset does not matter. Changes are made as `admin`;
//! rollcall polls as the `rollcall` service account.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use rollcall::event::EventType;
use rollcall::source::superset::demo::{Admin, Demo, Step};
use support::harness::{kind, kinds, superset_event_types, Harness};
use support::wait;

fn url() -> String {
    std::env::var("ROLLCALL_SUPERSET_URL").unwrap_or_else(|_| "http://127.0.0.1:8088".into())
}

/// Whether the release under test has no `roles/search/`, so that membership changed through
/// the roles API waits for a full read (docs/superset.md, Releases 4.1 to 6.1).
fn before_6() -> bool {
    std::env::var("SUPERSET_VERSION").is_ok_and(|v| v.starts_with("4.") || v.starts_with("5."))
}

/// The service account's password, written by `scripts/superset.sh start`.
fn password_file() -> PathBuf {
    std::env::var("ROLLCALL_SUPERSET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.superset")))
        .join("rollcall-password")
}

fn harness(extra: &str) -> Harness {
    Harness::with_account(&url(), "rollcall", &password_file(), extra)
}

async fn admin() -> Admin {
    Admin::login(&url(), "admin", "admin")
        .await
        .expect("Superset is running: scripts/superset.sh start")
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn every_demo_step_yields_exactly_its_events_and_nothing_else() {
    // Log the admin in before the baseline: its login is a `user.login` like anyone's.
    let mut demo = Demo::new(admin().await);
    let mut h = harness("");
    h.cycle().await;
    h.new_events();
    let mut admin_reads = Vec::new();
    let mut shown = std::collections::BTreeSet::new();
    for step in Step::ALL {
        let (what, expect) = demo.run(step).await.unwrap();
        h.cycle().await;
        if matches!(step, Step::RoleViaRolesApi) && before_6() {
            h.full().await;
        }
        // The demo's own role lookups are the admin's reads (this test's admin is not the
        // service account): they arrive as `audit.action` by user 1 after any step.
        let (admin, events): (Vec<_>, Vec<_>) = h
            .new_events()
            .into_iter()
            .partition(|e| e["type"] == "audit.action" && e["subject"] == "1");
        admin_reads.extend(admin);
        shown.extend(
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned()),
        );
        let expect: Vec<_> = expect.iter().map(|(t, id)| kind(t.as_str(), *id)).collect();
        match step {
            // One dashboard read writes two log rows (docs/superset.md S41).
            Step::Act => {
                let mut seen = kinds(&events);
                seen.dedup();
                assert_eq!(seen, expect, "after: {what}");
            }
            _ => assert_eq!(kinds(&events), expect, "after: {what}"),
        }
        match step {
            Step::Edit => {
                let fields: Vec<&str> = events[0]["data"]["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["field"].as_str().unwrap())
                    .collect();
                assert_eq!(fields, ["first_name", "email"]);
                assert_eq!(events[0]["data"]["user"]["first_name"], "Alicia");
            }
            Step::ReRole => {
                assert_eq!(events[0]["data"]["role"]["name"], "Gamma");
                assert_eq!(events[1]["data"]["role"]["name"], "Alpha");
            }
            Step::RoleViaRolesApi => assert_eq!(events[0]["data"]["role"]["name"], "sql_lab"),
            Step::Ungroup => {
                let group = events[0]["data"]["group"]["name"].as_str().unwrap();
                assert!(group.ends_with("-analysts"), "{group}");
            }
            Step::Act => assert_eq!(events[0]["data"]["action"], "DashboardRestApi.get_list"),
            Step::FailedLogin => assert_eq!(events[0]["data"]["fail_login_count"], 2),
            _ => {}
        }
    }
    // Before 6.0 the demo looks roles up in the plain roles list, which is never logged
    // (docs/superset.md S42); from 6.0 in `roles/search/`, which is.
    assert_eq!(
        !admin_reads.is_empty(),
        !before_6(),
        "the admin's role lookups were logged exactly where they go to roles/search/"
    );
    // The tour's promise: the demo shows every event type a Superset source emits.
    assert_eq!(
        shown,
        superset_event_types(),
        "the demo shows every Superset event type"
    );
    // A full reconcile agrees with what the incremental polls derived.
    h.full().await;
    assert!(
        h.new_events().is_empty(),
        "a full reconcile after the demo derives nothing more"
    );
    // And polling again and again, as nobody acts, derives nothing: no noise from our own reads.
    for _ in 0..3 {
        h.cycle().await;
    }
    assert!(h.new_events().is_empty());
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn more_than_250_users_page_correctly_and_one_deletion_is_one_event() {
    let admin = admin().await;
    let gamma = admin.role_id("Gamma").await.unwrap();
    let mut h = harness("");
    h.cycle().await;
    h.new_events();
    let prefix = format!("page{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
    let mut ids = Vec::new();
    for i in 0..260 {
        ids.push(
            admin
                .create_user(&format!("{prefix}-{i:03}"), "Passw0rd!", &[gamma])
                .await
                .unwrap(),
        );
    }
    let report = h.full().await;
    assert!(report.users >= 262, "{} users seen", report.users);
    let events = h.new_events();
    let mut created: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "user.created")
        .map(|e| e["subject"].as_str().unwrap().parse().unwrap())
        .collect();
    created.sort_unstable();
    ids.sort_unstable();
    assert_eq!(
        created, ids,
        "every new user exactly once, across three pages"
    );
    assert_eq!(events.len(), 260);

    admin.delete_user(ids[100]).await.unwrap();
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deleted", ids[100])]);
    h.full().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn an_expired_access_token_is_refreshed_without_a_new_password_login() {
    let lifetime = access_token_lifetime().await;
    assert!(
        lifetime <= 60,
        "this test needs short tokens: start Superset with SUPERSET_JWT_EXPIRES_SECONDS=20 (got {lifetime} s)"
    );
    let mut h = harness("");
    h.cycle().await;
    let logins_before = service_account_logins(&mut h);
    tokio::time::sleep(Duration::from_secs(lifetime + 3)).await;
    h.cycle().await;
    h.full().await;
    assert_eq!(
        service_account_logins(&mut h),
        logins_before,
        "renewed by refresh token, not by logging in"
    );
    assert!(h
        .new_events()
        .iter()
        .all(|e| e["data"]["user"]["username"] != "rollcall"));
}

/// The service account's `login_count` as rollcall's own snapshot saw it.
fn service_account_logins(h: &mut Harness) -> Option<i64> {
    let snapshot = h
        .store()
        .snapshot::<rollcall::source::superset::User>("test")
        .unwrap();
    snapshot
        .values()
        .find(|u| u.username == "rollcall")
        .and_then(|u| u.login_count)
}

/// exp − iat of a fresh access token.
async fn access_token_lifetime() -> u64 {
    let body = serde_json::json!({"username": "admin", "password": "admin", "provider": "db", "refresh": true});
    let tokens: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/security/login", url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = tokens["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    (claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()) as u64
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn reads_through_the_real_api_become_audit_events_and_rollcalls_own_do_not() {
    let admin = admin().await;
    let mut h = harness("");
    h.cycle().await;
    h.new_events();
    admin.read("/api/v1/dashboard/").await.unwrap();
    admin.read("/api/v1/chart/").await.unwrap();
    h.cycle().await;
    let events = h.new_events();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["action"].as_str().unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "audit.action" && e["subject"] == "1"),
        "{events:?}"
    );
    assert!(
        actions.contains(&"DashboardRestApi.get_list"),
        "{actions:?}"
    );
    assert!(actions.contains(&"ChartRestApi.get_list"), "{actions:?}");
    // Nobody acts now: rollcall's own log reads and role searches never come back as events.
    for _ in 0..4 {
        h.cycle().await;
    }
    h.full().await;
    let rest = h.new_events();
    assert!(rest.is_empty(), "{rest:?}");
}

/// Whether the release under test has the MCP service (Superset 6.1, docs/superset.md S48).
fn has_mcp_service() -> bool {
    std::env::var("SUPERSET_VERSION").map_or(true, |v| v == "6.1.0")
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn an_ai_agents_tool_call_through_the_real_mcp_service_is_one_agent_tool_called() {
    if !has_mcp_service() {
        eprintln!("skipped: the MCP service is Superset 6.1's");
        return;
    }
    let mut h = harness("");
    h.cycle().await;
    h.new_events();
    // An MCP client (scripts/mcp_call.py) starts the service over stdio, acting as admin, and
    // calls one tool; the service logs the call's rows before it answers.
    let call = tokio::task::spawn_blocking(|| {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/superset.sh"))
            .args(["mcp-call", "list_databases", r#"{"request": {}}"#])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&call.stdout).unwrap();
    assert!(answer["content"][0]["text"].is_string(), "{answer}");
    h.cycle().await;
    let events = h.new_events();
    let calls: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "agent.tool_called")
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    let d = &calls[0]["data"];
    assert_eq!(d["tool"], "list_databases");
    assert_eq!(d["logged_success"], true);
    assert_eq!(d["can_write"], false);
    assert_eq!(
        d["user"]["username"], "admin",
        "the user the service acted as"
    );
    assert_eq!(calls[0]["subject"], "1");
    let phases: Vec<_> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["query", "serialization"]);
    assert!(d["message_log_id"].is_u64(), "joined with its start: {d}");
    assert!(d["started_at"].as_str() < d["finished_at"].as_str());
    // Each row of the call is an audit.action too.
    let rows: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "audit.action")
        .map(|e| e["data"]["log_id"].clone())
        .collect();
    let joined = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["log_id"])
        .chain([&d["message_log_id"], &d["log_id"]]);
    for id in joined {
        assert!(rows.contains(id), "row {id} is no audit.action: {events:?}");
    }
}

/// The SSF event type each of rollcall's events in the steps below becomes (docs/ssf.md,
/// mapping); a user appearing is not sent.
fn set_type(event: EventType) -> Option<&'static str> {
    use EventType::*;
    Some(match event {
        UserDeactivated => "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
        UserReactivated => "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
        UserDeleted => "https://schemas.openid.net/secevent/risc/event-type/account-purged",
        UserLogin => "https://schemas.openid.net/secevent/caep/event-type/session-established",
        UserRoleAdded | UserRoleRemoved => {
            "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
        }
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn a_users_role_change_login_deactivation_reactivation_and_deletion_arrive_as_verified_sets_by_push_and_by_poll(
) {
    use crate::ssf::{Setup, POLL, RX_AUTH, TOKEN};
    use support::ssf::{self as receiver, Receiver};

    let mut demo = Demo::new(admin().await);
    // A JSONL copy of the log beside the SSF sink: each step waits until rollcall has read
    // what it changed, since a change undone before the next poll is never seen.
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("events.jsonl");
    let s = Setup::superset(
        &url(),
        "rollcall",
        &password_file(),
        &format!(
            "\n[[sinks]]\nkind = \"jsonl\"\nname = \"copy\"\npath = {:?}\n",
            file.display().to_string()
        ),
    );
    let run = s.run().await;
    let rx = Receiver::start(RX_AUTH).await;
    s.push_stream(&rx).await;
    let (code, polled) = s
        .manage(
            "POST",
            "/ssf/stream",
            Some(serde_json::json!({"delivery": {"method": POLL}})),
        )
        .await;
    assert_eq!(code, 201, "{polled}");
    let endpoint = polled["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let trust = s.trust(&polled).await;

    // Each user's SETs in the order of the changes, as the ids Superset gave them.
    let mut expected: Vec<(String, &str)> = Vec::new();
    for step in [
        Step::Create,
        Step::ReRole,
        Step::Login,
        Step::Deactivate,
        Step::Reactivate,
        Step::Delete,
    ] {
        let (what, events) = demo.run(step).await.unwrap();
        wait::until(&format!("rollcall to read that the demo {what}"), || {
            let copied = std::fs::read_to_string(&file).unwrap_or_default();
            let copied: Vec<serde_json::Value> = copied
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            events.iter().all(|(event, user)| {
                copied.iter().any(|e| {
                    e["type"] == event.as_str() && e["subject"] == user.to_string().as_str()
                })
            })
        })
        .await;
        for (event, user) in events {
            if let Some(t) = set_type(event) {
                expected.push((user.to_string(), t));
            }
        }
    }
    let subjects: std::collections::BTreeSet<String> =
        expected.iter().map(|(u, _)| u.clone()).collect();
    let ours = |claims: &serde_json::Value| {
        subjects.contains(claims["sub_id"]["sub"].as_str().unwrap_or_default())
    };
    let of = |claims: &serde_json::Value| {
        let t = claims["events"].as_object().unwrap().keys().next().unwrap();
        (
            claims["sub_id"]["sub"].as_str().unwrap().to_owned(),
            t.clone(),
        )
    };

    // Push: verified by the receiver against the published JWKS as they arrive, in order.
    wait::until("every SET of the steps pushed", || {
        rx.accepted().iter().filter(|a| ours(&a.claims)).count() >= expected.len()
    })
    .await;
    assert!(rx.refused().is_empty(), "{:?}", rx.refused());
    let pushed: Vec<_> = rx
        .accepted()
        .into_iter()
        .filter(|a| ours(&a.claims))
        .collect();
    let got: Vec<(String, String)> = pushed.iter().map(|a| of(&a.claims)).collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(u, t)| (u.clone(), (*t).to_owned()))
        .collect();
    for user in &subjects {
        let mine = |v: &Vec<(String, String)>| -> Vec<String> {
            v.iter()
                .filter(|(u, _)| u == user)
                .map(|(_, t)| t.clone())
                .collect()
        };
        assert_eq!(
            mine(&got),
            mine(&want),
            "user {user}'s SETs, in order, by push"
        );
    }

    // Poll: the same SETs (the same jti), each verified, acknowledged as they come.
    let mut taken = std::collections::BTreeMap::new();
    let mut ack: Vec<String> = Vec::new();
    while taken.values().filter(|c| ours(c)).count() < expected.len() {
        let request = serde_json::json!({"ack": ack, "maxEvents": 20});
        let (sets, _) = receiver::poll(&endpoint, TOKEN, &trust, request).await;
        ack = sets.keys().cloned().collect();
        for (jti, set) in sets {
            taken.insert(
                jti,
                set.expect("a SET that verifies with the published key"),
            );
        }
    }
    let mut by_poll: Vec<(String, String)> = taken.values().filter(|c| ours(c)).map(of).collect();
    let mut by_push = got.clone();
    by_poll.sort();
    by_push.sort();
    assert_eq!(
        by_poll, by_push,
        "the poll stream got what the push stream got"
    );
    let pushed_jtis: std::collections::BTreeSet<&str> =
        pushed.iter().map(|a| a.jti.as_str()).collect();
    assert!(
        taken
            .iter()
            .filter(|(_, c)| ours(c))
            .all(|(jti, _)| pushed_jtis.contains(jti.as_str())),
        "each change is one SET with one jti, whichever way it is delivered"
    );
    drop(run);
}

/// The copies three sinks wrote of a real lifecycle, each as `rollcall verify` sees it: the
/// file, and each of three tamperings of it at `line` (1-based), which must be named there.
fn tampered_copies_are_named_at_their_line(h: &Harness, file: &std::path::Path, args: &[&str]) {
    let original = std::fs::read_to_string(file).unwrap();
    let verify = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .arg("verify")
            .arg(file)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap(), said)
    };
    let (code, said) = verify(args);
    assert_eq!(code, 0, "{}: {said}", file.display());
    let lines: Vec<&str> = original.lines().collect();
    let i = lines.len() / 2;
    assert!(i >= 1 && i + 1 < lines.len(), "{} lines", lines.len());
    // A value an auditor would care about: who a CloudEvent is about, what a record says.
    let tamperings = support::damage::tamperings(i, |l| {
        let edited = l.replacen("\"subject\":\"", "\"subject\":\"9", 1).replacen(
            "\"message\":\"",
            "\"message\":\"not ",
            1,
        );
        assert_ne!(edited, l);
        edited
    });
    for (what, tamper) in tamperings {
        let mut copy: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        tamper(&mut copy);
        let text: String = copy.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(file, text).unwrap();
        let (code, said) = verify(args);
        let line = format!("BROKEN at line {} ", i + 1);
        let line_alone = format!("BROKEN at line {}:", i + 1);
        assert_eq!(code, 7, "{what} in {}: {said}", file.display());
        assert!(
            said.starts_with(&line) || said.starts_with(&line_alone),
            "{what} in {}: {said}",
            file.display()
        );
    }
    std::fs::write(file, original).unwrap();
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn a_real_lifecycle_in_cloudevents_and_ocsf_1_9_0_and_1_8_0_verifies_and_tampering_is_named()
{
    use support::ocsf::Version;
    let mut demo = Demo::new(admin().await);
    let mut h = harness("");
    let key = support::chain::key_file(h.dir.path());
    let ocsf = |v: &str| h.dir.path().join(format!("events.ocsf-{v}.jsonl"));
    let (ocsf_1_9, ocsf_1_8) = (ocsf("1.9.0"), ocsf("1.8.0"));
    h.edit_config(|raw| {
        let sinks: String = [("1.9.0", &ocsf_1_9), ("1.8.0", &ocsf_1_8)]
            .iter()
            .map(|(v, path)| {
                format!(
                    "[[sinks]]\nkind = \"jsonl\"\nname = \"ocsf-{v}\"\nformat = \"ocsf\"\nocsf_version = \"{v}\"\npath = {:?}\n\n",
                    path.display().to_string()
                )
            })
            .collect();
        raw.replacen(
            "\n[[sinks]]\n",
            &format!(
                "signing_key_file = {:?}\ncheckpoint_every = 5\n\n{sinks}[[sinks]]\n",
                key.display().to_string()
            ),
            1,
        )
    });
    let checkpoints = h.config().store.checkpoints().unwrap().unwrap();
    h.store().sign_checkpoints(checkpoints);
    h.cycle().await;
    for step in Step::ALL {
        demo.run(step).await.unwrap();
        h.cycle().await;
        if matches!(step, Step::RoleViaRolesApi) && before_6() {
            h.full().await;
        }
    }
    let events = h.events();
    assert!(
        events.iter().any(|e| e["type"] == "rollcall.checkpoint"),
        "signed as it went"
    );
    let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let records_1_9 = support::ocsf::assert_valid_jsonl_in(Version::V1_9_0, &text(&ocsf_1_9));
    let records_1_8 = support::ocsf::assert_valid_jsonl_in(Version::V1_8_0, &text(&ocsf_1_8));
    let users_events = events
        .iter()
        .filter(|e| e["type"] != "rollcall.checkpoint")
        .count();
    assert_eq!(
        (records_1_9.len(), records_1_8.len()),
        (users_events, users_events)
    );
    assert!(records_1_9
        .iter()
        .all(|r| r["attestation_list"][0]["fingerprint"]["value"].is_string()));
    h.stop();

    let pubkey = String::from_utf8(h.rollcall(&["pubkey"]).await.stdout).unwrap();
    let pubkey = pubkey.trim();
    tampered_copies_are_named_at_their_line(&h, &h.events_path(), &["--key", pubkey]);
    tampered_copies_are_named_at_their_line(&h, &ocsf_1_9, &[]);
    tampered_copies_are_named_at_their_line(&h, &ocsf_1_8, &["--against-store", "--key", pubkey]);
    tampered_copies_are_named_at_their_line(&h, &ocsf_1_9, &["--against-store", "--key", pubkey]);
}

/// A distinct name for users a test creates, so runs do not meet each other's.
fn unique(what: &str) -> String {
    format!("{what}{}", &uuid::Uuid::now_v7().simple().to_string()[24..])
}

fn jsonl_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every user id Superset lists now, page by page.
async fn superset_user_ids(admin: &Admin) -> std::collections::BTreeSet<u64> {
    let mut ids = std::collections::BTreeSet::new();
    for page in 0.. {
        let listed = admin
            .read(&format!(
                "/api/v1/security/users/?q=(page:{page},page_size:100)"
            ))
            .await
            .unwrap();
        let before = ids.len();
        ids.extend(
            listed["ids"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|id| id.as_u64()),
        );
        if ids.len() == before || ids.len() as u64 >= listed["count"].as_u64().unwrap() {
            break;
        }
    }
    ids
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn an_offboarding_sink_receives_exactly_the_deletions_and_deactivations_of_a_real_superset() {
    let admin = admin().await;
    let gamma = admin.role_id("Gamma").await.unwrap();
    let mut h = harness("");
    let offboarding = h.dir.path().join("offboarding.jsonl");
    h.add_sink(
        &format!(
            "[[sinks]]\nkind = \"jsonl\"\nname = \"offboarding\"\npath = {:?}\nevent_types = [\"user.deleted\", \"user.deactivated\"]\n",
            offboarding.display().to_string()
        ),
    );
    h.cycle().await;
    let name = unique("leaver");
    let leaver = admin
        .create_user(&name, "Passw0rd!", &[gamma])
        .await
        .unwrap();
    let mover = admin
        .create_user(&unique("mover"), "Passw0rd!", &[gamma])
        .await
        .unwrap();
    h.cycle().await;
    admin
        .update_user(mover, serde_json::json!({"last_name": "Moved"}))
        .await
        .unwrap();
    admin
        .update_user(leaver, serde_json::json!({"active": false}))
        .await
        .unwrap();
    h.cycle().await;
    admin.delete_user(leaver).await.unwrap();
    h.full().await;
    let everything = kinds(&h.new_events());
    assert!(
        everything.contains(&kind("user.updated", mover)),
        "{everything:?}"
    );
    assert!(
        everything.contains(&kind("user.created", leaver)),
        "{everything:?}"
    );
    assert_eq!(
        kinds(&jsonl_lines(&offboarding)),
        [
            kind("user.deactivated", leaver),
            kind("user.deleted", leaver)
        ],
        "exactly those, nothing else"
    );
    let filtered = h.look_into_store(|s| s.filtered("offboarding").unwrap());
    assert!(
        filtered >= 3,
        "the rest counted as filtered out: {filtered}"
    );
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn a_redacted_sink_never_holds_the_email_or_names_of_a_real_superset_user() {
    let admin = admin().await;
    let gamma = admin.role_id("Gamma").await.unwrap();
    let mut h = harness("");
    let key = h.dir.path().join("redact.key");
    std::fs::write(&key, "k3y-of-at-least-32-bytes-for-hmac-sha256\n").unwrap();
    let redacted = h.dir.path().join("redacted.jsonl");
    h.add_sink(
        &format!(
            "[[sinks]]\nkind = \"jsonl\"\nname = \"warehouse\"\npath = {:?}\nredact_fields = [\"email\", \"first_name\", \"last_name\"]\nredact_key_file = {:?}\n",
            redacted.display().to_string(),
            key.display().to_string()
        ),
    );
    h.cycle().await;
    let name = unique("private");
    let id = admin
        .create_user(&name, "Passw0rd!", &[gamma])
        .await
        .unwrap();
    h.cycle().await;
    admin
        .update_user(
            id,
            serde_json::json!({"first_name": "Zebulon", "last_name": "Quartermain", "email": format!("zq-{name}@example.org")}),
        )
        .await
        .unwrap();
    let alpha = admin.role_id("Alpha").await.unwrap();
    admin.add_to_role(alpha, id).await.unwrap();
    assert!(admin.try_login(&name, "Passw0rd!").await.unwrap());
    h.cycle().await;
    h.full().await;
    // The username stays (it is not in `redact_fields`), but where it is the first name too (as
    // the account was created) it is hashed with it.
    let clear = [
        format!("{name}@example.com"),
        "Demo".to_owned(),
        "Zebulon".to_owned(),
        "Quartermain".to_owned(),
        format!("zq-{name}@example.org"),
    ];
    let theirs: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| e["subject"].as_str() == Some(id.to_string().as_str()))
        .collect();
    assert!(
        theirs.len() >= 3,
        "the user's events reached the plain sink: {theirs:?}"
    );
    let text = std::fs::read_to_string(&redacted).unwrap();
    let mine: Vec<_> = jsonl_lines(&redacted)
        .into_iter()
        .filter(|e| e["subject"].as_str() == Some(id.to_string().as_str()))
        .collect();
    assert_eq!(mine.len(), theirs.len(), "the same events, redacted");
    for value in &clear {
        assert!(
            !text.contains(&format!("\"{value}\"")),
            "`{value}` in clear: {text}"
        );
        if value.contains('@') {
            assert!(!text.contains(value.as_str()), "`{value}` in clear");
        }
    }
    let created = mine.iter().find(|e| e["type"] == "user.created").unwrap();
    let user = &created["data"]["user"];
    assert!(user["email"].as_str().unwrap().starts_with("hmac-sha256:"));
    assert_eq!(user["username"], user["first_name"], "one value, one hash");
    assert_eq!(created["data"]["user"]["id"], id, "the rest as it was");
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn a_full_reconcile_of_a_real_superset_ends_with_sync_completed_and_its_user_count() {
    let admin = admin().await;
    let mut h = harness("");
    h.cycle().await;
    h.full().await;
    let count = admin
        .read("/api/v1/security/users/?q=(page_size:1)")
        .await
        .unwrap()["count"]
        .as_u64()
        .unwrap();
    let last = h.sync_markers().pop().expect("a marker");
    assert_eq!(last["source"], "superset://test");
    assert_eq!(last["data"]["mode"], "full");
    assert_eq!(last["data"]["users_seen"], count, "{last}");
    assert_eq!(last["data"]["users_known"], count, "{last}");
    assert_eq!(
        last["data"]["events"], 0,
        "nothing changed in between: {last}"
    );
    let all = h.all_events();
    assert_eq!(
        all.last().unwrap()["type"],
        "sync.completed",
        "the last event of the reconcile"
    );
}

#[tokio::test]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn a_replay_of_real_superset_events_is_marked_and_the_copy_still_verifies() {
    let admin = admin().await;
    let gamma = admin.role_id("Gamma").await.unwrap();
    let mut h = harness("");
    h.cycle().await;
    let id = admin
        .create_user(&unique("replayed"), "Passw0rd!", &[gamma])
        .await
        .unwrap();
    h.cycle().await;
    let live = h.new_events();
    assert!(live.iter().all(|e| e.get("replayed").is_none()));
    let from = live
        .iter()
        .find(|e| e["subject"].as_str() == Some(id.to_string().as_str()))
        .unwrap()["sequence"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        .to_string();
    h.stop();
    let out = h
        .rollcall(&["replay", "--sink", "siem", "--from-offset", &from])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = h.new_events();
    assert!(!replayed.is_empty());
    assert!(
        replayed.iter().all(|e| e["replayed"] == true),
        "{replayed:?}"
    );
    let verify = h
        .rollcall(&["verify", h.events_path().to_str().unwrap()])
        .await;
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.contains("duplicates"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Superset: scripts/test.sh starts one"]
async fn the_table_topics_live_keys_are_the_users_of_a_real_superset_and_a_deleted_one_a_tombstone()
{
    use rdkafka::Message;
    let admin = admin().await;
    let gamma = admin.role_id("Gamma").await.unwrap();
    let cluster = support::kafka::cluster("people", 3);
    let brokers = cluster.bootstrap_servers();
    let mut h = harness("");
    h.add_sink(
        &format!("[[sinks]]\nkind = \"kafka\"\nname = \"people\"\nbrokers = \"{brokers}\"\ntopic = \"people\"\ntable = true\n"),
    );
    h.cycle().await;
    h.rebuild_table("people").await;
    let leaver = admin
        .create_user(&unique("gone"), "Passw0rd!", &[gamma])
        .await
        .unwrap();
    h.cycle().await;
    admin.delete_user(leaver).await.unwrap();
    h.full().await;
    let ids = superset_user_ids(&admin).await;
    let messages = support::kafka::read_to_end(&brokers, "people").await;
    let mut table = std::collections::BTreeMap::new();
    for m in &messages {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        table.insert(key, m.payload().is_some());
    }
    let key = |id: u64| format!("superset://test:{id}");
    assert_eq!(
        table.get(&key(leaver)),
        Some(&false),
        "the deleted user ends in a tombstone"
    );
    let live: std::collections::BTreeSet<String> = table
        .into_iter()
        .filter(|(_, v)| *v)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(live, ids.iter().map(|id| key(*id)).collect());
}
