//! The Kylin source against the Kylin 5 simulator: every event type it derives, that a refused
//! login costs Kylin exactly one failed login and stops the source, how bad answers are
//! reported, paging under concurrent creates, a 100k-user Kylin, a Superset and a Kylin source
//! side by side, and `rollcall demo` against a Kylin.

use crate::support;

use std::time::Duration;

use rollcall::runner::CycleOptions;
use rollcall_sim::kylin::{
    Fault, FaultKind, KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD, ROLE_ADMIN, ROLE_ANALYST,
    ROLE_MODELER, SEEDED_PASSWORD,
};
use support::harness::{kinds, kylin_event_types, Harness};
use support::ocsf::Version;

fn kind(t: &str, subject: &str) -> (String, String) {
    (t.to_owned(), subject.to_owned())
}

/// A harness polling `sim` as `username` with `password`.
fn as_account(sim: &KylinSim, username: &str, password: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sources = Harness::kylin_source(&dir, "test", &sim.url, username, password, "");
    Harness::with_sources(dir, &sources)
}

/// The error of a cycle that must fail.
async fn failure(h: &mut Harness) -> String {
    let err = h
        .try_cycle(CycleOptions::default())
        .await
        .expect_err("the cycle should fail");
    let mut text = err.to_string();
    let mut cur = std::error::Error::source(&err);
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

#[tokio::test]
async fn every_kylin_event_type_appears_from_the_simulator() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["alice", "bob", "carol", "dave"] {
        sim.add_user(name, SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "emit_initial_snapshot = true");
    h.add_ocsf_sink(Some(Version::V1_8_0));
    h.cycle().await;
    let first = h.new_events();
    assert_eq!(
        kinds(&first),
        ["ADMIN", "alice", "bob", "carol", "dave"].map(|u| kind("user.observed", u))
    );
    assert!(first.iter().all(|e| e["source"] == "kylin://test"));
    assert_eq!(first[1]["data"]["user"]["groups"][0]["name"], ROLE_ANALYST);

    sim.advance(Duration::from_secs(1));
    sim.add_user("erin", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    sim.delete_user("dave");
    sim.set_disabled("alice", true);
    sim.set_authorities("bob", &[ROLE_MODELER]);
    for _ in 0..3 {
        sim.fail_login("carol");
    }
    h.cycle().await;
    let second = h.new_events();
    assert_eq!(
        kinds(&second),
        [
            kind("user.deactivated", "alice"),
            kind("user.group_removed", "bob"),
            kind("user.group_added", "bob"),
            kind("user.login_failed", "carol"),
            kind("user.locked", "carol"),
            kind("user.deleted", "dave"),
            kind("user.created", "erin"),
        ]
    );
    assert_eq!(second[3]["data"]["new_failures"], 3);
    let lock = &second[4]["data"];
    assert_eq!(lock["wrong_time"], 3);
    assert_eq!(lock["duration_seconds"], 30);
    assert_eq!(lock["permanent"], false);

    sim.advance(Duration::from_secs(1));
    sim.set_disabled("alice", false);
    sim.update_user("bob", |_| {});
    sim.change_password("carol", "NewPassword@456");
    sim.delete_user("erin");
    sim.add_user("erin", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    h.cycle().await;
    let third = h.new_events();
    assert_eq!(
        kinds(&third),
        [
            kind("user.reactivated", "alice"),
            kind("user.updated", "bob"),
            kind("user.unlocked", "carol"),
            kind("user.password_changed", "carol"),
            kind("user.deleted", "erin"),
            kind("user.created", "erin"),
        ]
    );
    let silent = &third[1]["data"];
    assert_eq!(silent["changes"], serde_json::json!([]));
    assert!(silent["note"].as_str().unwrap().contains("password reset"));
    assert_ne!(
        third[4]["data"]["user"]["uuid"],
        third[5]["data"]["user"]["uuid"]
    );

    // Nothing changed, nothing emitted.
    h.cycle().await;
    assert!(h.new_events().is_empty());

    // The OCSF sink beside it got every one of them as a valid OCSF record, in the same order.
    let events = h.events();
    let records = h.ocsf_records(Version::V1_8_0);
    let ids = |v: &[serde_json::Value], at: &[&str]| -> Vec<String> {
        v.iter()
            .map(|e| {
                at.iter()
                    .fold(e, |e, k| &e[*k])
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&records, &["metadata", "uid"]), ids(&events, &["id"]));
    assert!(records
        .iter()
        .all(|r| r["metadata"]["log_name"] == "kylin://test"));
}

#[tokio::test]
async fn a_session_is_authenticated_once_with_the_exact_accept() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    h.cycle().await;
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].basic_auth && !requests[0].session_cookie);
    assert!(!requests[1].basic_auth && requests[1].session_cookie);
    assert!(requests.iter().all(|r| r.accept.as_deref()
        == Some("application/vnd.apache.kylin-v4-public+json")
        && r.path.contains("page_offset=0&page_size=1000")));

    // An expired session is renewed with one more Basic authentication.
    sim.expire_sessions();
    h.cycle().await;
    let renewed: Vec<bool> = sim.requests()[2..].iter().map(|r| r.basic_auth).collect();
    assert_eq!(renewed, [false, true]);
}

#[tokio::test]
async fn a_wrong_password_costs_kylin_exactly_one_failed_login() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let mut h = as_account(&sim, ADMIN, "not-the-password");
    let first = failure(&mut h).await;
    assert!(
        first.contains("KE-010003208") && first.contains("retry-login"),
        "{first}"
    );
    let sent = sim.requests().len();
    for _ in 0..3 {
        let later = failure(&mut h).await;
        assert!(
            later.contains("refused at")
                && later.contains(&first[first.find("Kylin at").unwrap()..]),
            "a later cycle says when and why: {later}"
        );
    }
    assert_eq!(sim.requests().len(), sent, "a stopped source sends nothing");
    assert_eq!(sim.failed_logins(ADMIN), 1);
    assert!(!sim.user(ADMIN).unwrap().locked);
}

#[tokio::test]
async fn a_locked_service_account_stops_the_source_with_a_clear_error() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_user("svc", SEEDED_PASSWORD, &[ROLE_ADMIN]);
    sim.lock("svc", 3);
    let mut h = as_account(&sim, "svc", SEEDED_PASSWORD);
    let err = failure(&mut h).await;
    assert!(
        err.contains("KE-010003005") && err.contains("locked") && err.contains("retry-login"),
        "{err}"
    );
    let sent = sim.requests().len();
    assert!(failure(&mut h).await.contains("refused at"));
    assert_eq!(sim.requests().len(), sent);
    assert_eq!(sim.failed_logins("svc"), 0);
}

#[tokio::test]
async fn a_disabled_service_account_stops_the_source_with_a_clear_error() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_user("svc", SEEDED_PASSWORD, &[ROLE_ADMIN]);
    sim.set_disabled("svc", true);
    let mut h = as_account(&sim, "svc", SEEDED_PASSWORD);
    let err = failure(&mut h).await;
    assert!(
        err.contains("KE-010003008") && err.contains("disabled"),
        "{err}"
    );
    let sent = sim.requests().len();
    assert!(failure(&mut h).await.contains("refused at"));
    assert_eq!(sim.requests().len(), sent);
}

#[tokio::test]
async fn html_empty_and_error_answers_are_clear_errors_and_the_next_cycle_recovers() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let mut h = Harness::kylin(&sim.url, "");
    let fault = |kind| Fault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind,
    };
    sim.inject(fault(FaultKind::Html));
    let html = failure(&mut h).await;
    assert!(
        html.contains("expected JSON") && html.contains("text/html"),
        "{html}"
    );
    sim.inject(fault(FaultKind::Empty));
    let empty = failure(&mut h).await;
    assert!(empty.contains("empty body"), "{empty}");
    sim.inject(fault(FaultKind::Status(500)));
    let error = failure(&mut h).await;
    assert!(
        error.contains("HTTP 500") && error.contains("simulated fault"),
        "{error}"
    );
    assert!(!error.contains("org.apache"), "no stack trace: {error}");
    assert_eq!(h.cycle().await.users, 1);
    assert_eq!(sim.failed_logins(ADMIN), 0);
}

#[tokio::test]
async fn a_page_shifted_by_a_concurrent_create_loses_and_invents_nothing() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        sim.add_user(name, SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "page_size = 2\nemit_initial_snapshot = true");
    // "aaa" sorts first: created before the second page is read, it pushes u2 onto that page.
    sim.inject(Fault {
        path_contains: "page_offset=1".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::InsertUser("aaa".into()),
    });
    assert_eq!(h.cycle().await.users, 7);
    let subjects: Vec<String> = h
        .new_events()
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects, ["ADMIN", "aaa", "u1", "u2", "u3", "u4", "u5"]);
    // Two pages of the first read, then four of the second.
    assert_eq!(sim.requests().len(), 2 + 4);
}

/// A delete and a create landing together between two page reads keep the total and the count
/// of distinct names, yet slide a user onto a page already read: missing from the list, she
/// still exists, and a read by her name says so.
#[tokio::test]
async fn a_user_slid_onto_a_page_already_read_is_not_reported_deleted() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["ka1", "ka2", "ka3", "ka4", "ka5", "svc"] {
        sim.add_user(name, SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "page_size = 2");
    h.cycle().await;
    // Page 0 is [ADMIN, ka1]; then ka1 goes and zz_new comes, so page 1 is [ka3, ka4] and ka2
    // is on no page this read sees.
    sim.inject(Fault {
        path_contains: "page_offset=1".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Replace {
            delete: "ka1".into(),
            create: "zz_new".into(),
        },
    });
    let facts = |events: Vec<serde_json::Value>| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    h.cycle().await;
    assert_eq!(
        facts(h.new_events()),
        [("user.created".into(), "zz_new".into())],
        "ka2 exists throughout and must not be reported deleted"
    );
    // ka1 was on page 0 as it was read: its deletion is the next read's to find.
    h.cycle().await;
    assert_eq!(
        facts(h.new_events()),
        [("user.deleted".into(), "ka1".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rollcall_once_polls_a_superset_and_a_kylin_source() {
    let superset = rollcall_sim::superset::Sim::start(Default::default()).await;
    let kylin = KylinSim::start(KylinOptions::default()).await;
    kylin.add_user("kim", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    let dir = tempfile::tempdir().unwrap();
    let superset_password = dir.path().join("superset.password");
    std::fs::write(&superset_password, "admin\n").unwrap();
    let sources = format!(
        "[[sources]]\nkind = \"superset\"\nname = \"bi\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {:?}\nemit_initial_snapshot = true\n\n{}",
        superset.url,
        superset_password.display().to_string(),
        Harness::kylin_source(&dir, "cubes", &kylin.url, ADMIN, "KYLIN", "emit_initial_snapshot = true"),
    );
    let h = Harness::with_sources(dir, &sources);
    let out = h.rollcall(&["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = h.events();
    let observed = |source: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["source"] == source && e["type"] == "user.observed")
            .map(|e| e["data"]["user"]["username"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(observed("superset://bi"), ["admin"]);
    assert_eq!(observed("kylin://cubes"), ["ADMIN", "kim"]);
    assert!(events
        .iter()
        .filter(|e| e["source"] == "kylin://cubes")
        .all(|e| e["subject"] == e["data"]["user"]["username"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_user_kylin_is_read_whole_in_one_session_and_loses_or_invents_nothing() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_users(100_000);
    let mut h = Harness::kylin(&sim.url, "");
    let first = h.cycle().await;
    assert_eq!((first.users, first.events), (100_001, 0));

    // Changes on the first page, the last page and both sides of a page boundary.
    sim.add_user("aaa-first", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    sim.add_user("zzz-last", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    sim.delete_user("user000999");
    sim.set_disabled("user001000", true);
    sim.set_authorities("user050000", &[ROLE_MODELER]);
    for _ in 0..3 {
        sim.fail_login("user100000");
    }
    let second = h.cycle().await;
    assert_eq!(second.users, 100_002);
    assert_eq!(
        kinds(&h.new_events()),
        [
            kind("user.created", "aaa-first"),
            kind("user.deleted", "user000999"),
            kind("user.deactivated", "user001000"),
            kind("user.group_added", "user050000"),
            kind("user.login_failed", "user100000"),
            kind("user.locked", "user100000"),
            kind("user.created", "zzz-last"),
        ]
    );

    let unchanged = h.cycle().await;
    assert_eq!((unchanged.events, unchanged.users_written), (0, 0));
    let requests = sim.requests();
    let pages = |users: usize| users.div_ceil(1000);
    // The deleted user is asked for by name once before the deletion is emitted.
    assert_eq!(requests.len(), pages(100_001) + pages(100_002) * 2 + 1);
    assert_eq!(
        requests.iter().filter(|r| r.basic_auth).count(),
        1,
        "one login for every page of every cycle"
    );
}

#[tokio::test]
async fn the_demo_shows_every_kylin_event_type_when_run_as_the_service_account() {
    use rollcall::source::kylin::demo::{Admin, Demo, Step};
    let sim = KylinSim::start(KylinOptions::default()).await;
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    let demo = Demo::new(Admin::login(&sim.url, ADMIN, ADMIN_PASSWORD).await.unwrap());
    let mut shown = std::collections::BTreeSet::new();
    for step in Step::ALL {
        let (what, expect) = demo.run(step).await.unwrap();
        h.cycle().await;
        let seen = kinds(&h.new_events());
        let expect: Vec<_> = expect.iter().map(|(t, u)| kind(t.as_str(), u)).collect();
        assert_eq!(seen, expect, "after: {what}");
        shown.extend(seen.into_iter().map(|(t, _)| t));
    }
    assert_eq!(shown, kylin_event_types());
    assert_eq!(sim.failed_logins(ADMIN), 0);
    assert!(!sim.user(ADMIN).unwrap().locked);
    assert_eq!(sim.user_count(), 1, "the demo deletes its users");
}

#[tokio::test]
async fn a_demo_refused_by_kylin_stops_after_one_failed_login() {
    use rollcall::source::{demo::DemoError, kylin::demo::Admin};
    let sim = KylinSim::start(KylinOptions::default()).await;
    let err = Admin::login(&sim.url, ADMIN, "not-the-password")
        .await
        .err()
        .expect("Kylin refuses the login");
    assert!(matches!(err, DemoError::LoginRefused { .. }), "{err}");
    assert!(err.to_string().contains("KE-010003208"), "{err}");
    assert_eq!(sim.failed_logins(ADMIN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollcall_demo_walks_a_kylin_source_through_every_step() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let h = Harness::kylin(&sim.url, "");
    let out = h.rollcall(&["demo", "--pause", "1ms"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in ["user.locked", "user.password_changed", "done:"] {
        assert!(stdout.contains(expected), "{expected} in:\n{stdout}");
    }
    assert_eq!(sim.failed_logins(ADMIN), 0);
    let demo_logins = sim
        .requests()
        .iter()
        .filter(|r| r.basic_user.as_deref() == Some(ADMIN))
        .count();
    assert_eq!(demo_logins, 1, "the service account authenticates once");
}

#[tokio::test]
async fn one_unreadable_kylin_record_stops_no_other_user_and_deletes_no_one() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["alice", "bob", "carol"] {
        sim.add_user(name, SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    h.new_events();
    // bob's record comes back broken; alice and carol change meanwhile.
    sim.update_user("alice", |u| u.disabled = true);
    sim.update_user("bob", |u| u.disabled = true);
    sim.update_user("carol", |u| u.disabled = true);
    sim.inject(Fault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::RawField {
            username: "bob".into(),
            field: "disabled".into(),
            value: serde_json::json!("not a boolean"),
        },
    });
    h.cycle().await;
    assert_eq!(
        kinds(&h.new_events()),
        [
            kind("user.deactivated", "alice"),
            kind("user.deactivated", "carol")
        ],
        "bob is neither deleted nor changed"
    );
    let state = h.store().source_state("test").unwrap();
    assert!(
        state.cursor["unreadable_users"]["bob"]
            .as_str()
            .is_some_and(|r| r.contains("unreadable record")),
        "{:?}",
        state.cursor
    );
    // Once Kylin answers for bob properly, his change comes through and the report clears.
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deactivated", "bob")]);
    let state = h.store().source_state("test").unwrap();
    assert_eq!(state.cursor["unreadable_users"], serde_json::json!({}));
}

#[tokio::test]
async fn bytes_that_are_not_utf8_in_one_kylin_record_stop_no_other_user_and_delete_no_one() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["alice", "bob"] {
        sim.add_user(name, SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    h.new_events();
    sim.update_user("alice", |u| u.disabled = true);
    sim.inject(Fault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::NotUtf8 {
            username: "bob".into(),
            field: "uuid".into(),
        },
    });
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deactivated", "alice")]);
    let state = h.store().source_state("test").unwrap();
    assert!(state.cursor["unreadable_users"]["bob"].is_string());
    h.cycle().await;
    assert!(
        h.new_events().is_empty(),
        "bob was never changed nor deleted"
    );
}
