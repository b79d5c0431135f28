//! End to end against the Superset simulator: each event type, from a change made in
//! "Superset" to a line in the JSONL file.

use crate::support;

use std::time::Duration;

use rollcall::runner::CycleOptions;
use support::harness::{
    kind, kinds, superset_changes_beside_an_ocsf_sink, superset_event_types, Harness,
};
use support::ocsf::Version;
use support::sim::{Sim, SimOptions};

const GAMMA: u64 = 4;
const ALPHA: u64 = 3;

async fn start() -> (Sim, Harness) {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    (sim, h)
}

/// A baseline with alice and bob, stored silently.
async fn baseline() -> (Sim, Harness, u64, u64) {
    let (sim, mut h) = start().await;
    let alice = sim.add_user("alice", "pw-alice", &[GAMMA]);
    let bob = sim.add_user("bob", "pw-bob", &[GAMMA]);
    h.cycle().await;
    assert!(h.new_events().is_empty());
    (sim, h, alice, bob)
}

#[tokio::test]
async fn first_run_stores_the_snapshot_without_events() {
    let (sim, mut h) = start().await;
    sim.add_user("alice", "pw", &[GAMMA]);
    let report = h.cycle().await;
    assert!(report.full);
    assert_eq!(report.users, 2);
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn emit_initial_snapshot_emits_one_observed_per_user() {
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw", &[GAMMA]);
    let mut h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    h.cycle().await;
    assert_eq!(
        kinds(&h.events()),
        [kind("user.observed", 1), kind("user.observed", alice)]
    );
}

#[tokio::test]
async fn created_user_is_one_created_event_with_source_and_sequence() {
    let (sim, mut h, _, _) = baseline().await;
    let carol = sim.add_user("carol", "pw", &[GAMMA]);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.created", carol)]);
    let e = &events[0];
    assert_eq!(e["source"], "superset://test");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(
        e["sequence"], "00000000000000000001",
        "next after the first full reconcile's sync.completed"
    );
    assert_eq!(e["data"]["user"]["username"], "carol");
    assert_eq!(e["data"]["user"]["roles"][0]["name"], "Gamma");
}

#[tokio::test]
async fn profile_edit_is_an_update_listing_changed_fields() {
    let (sim, mut h, alice, _) = baseline().await;
    sim.update_user(alice, |u| {
        u.first_name = "Alicia".into();
        u.email = "alicia@example.com".into();
    });
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.updated", alice)]);
    let fields: Vec<&str> = events[0]["data"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["first_name", "email"]);
    assert_eq!(events[0]["data"]["changes"][0]["before"], "alice");
    assert_eq!(events[0]["data"]["changes"][0]["after"], "Alicia");
}

#[tokio::test]
async fn no_op_edit_bumps_changed_on_but_emits_nothing() {
    let (sim, mut h, alice, _) = baseline().await;
    sim.update_user(alice, |_| {});
    h.cycle().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
async fn deactivation_and_reactivation() {
    let (sim, mut h, alice, _) = baseline().await;
    sim.update_user(alice, |u| u.active = false);
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deactivated", alice)]);
    sim.update_user(alice, |u| u.active = true);
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.reactivated", alice)]);
}

#[tokio::test]
async fn role_change_through_user_edit() {
    let (sim, mut h, alice, _) = baseline().await;
    sim.update_user(alice, |u| u.roles = vec![ALPHA]);
    h.cycle().await;
    assert_eq!(
        kinds(&h.new_events()),
        [
            kind("user.role_removed", alice),
            kind("user.role_added", alice)
        ]
    );
}

#[tokio::test]
async fn role_members_replaced_through_roles_api_is_seen_without_changed_on() {
    let (sim, mut h, alice, bob) = baseline().await;
    sim.set_role_members(ALPHA, &[alice]);
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.role_added", alice)]);
    // Replacing the member list silently drops alice (docs/superset.md S32).
    sim.set_role_members(ALPHA, &[bob]);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(
        kinds(&events),
        [
            kind("user.role_removed", alice),
            kind("user.role_added", bob)
        ]
    );
    assert_eq!(events[0]["data"]["role"]["name"], "Alpha");
}

#[tokio::test]
async fn renamed_role_is_not_an_event_but_later_events_carry_the_new_name() {
    let (sim, mut h, alice, _) = baseline().await;
    sim.rename_role(GAMMA, "Viewer");
    h.cycle().await;
    assert!(h.new_events().is_empty());
    sim.update_user(alice, |u| u.last_name = "Renamed".into());
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(events[0]["data"]["user"]["roles"][0]["name"], "Viewer");
}

#[tokio::test]
async fn group_membership_through_groups_api() {
    let (sim, mut h, alice, bob) = baseline().await;
    let group = sim.add_group("analysts", &[alice]);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.group_added", alice)]);
    assert_eq!(events[0]["data"]["group"]["name"], "analysts");
    sim.set_group_members(group, &[bob]);
    h.cycle().await;
    assert_eq!(
        kinds(&h.new_events()),
        [
            kind("user.group_removed", alice),
            kind("user.group_added", bob)
        ]
    );
}

#[tokio::test]
async fn login_and_failed_login() {
    let (sim, mut h, alice, _) = baseline().await;
    assert!(sim.login("alice", "pw-alice"));
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.login", alice)]);
    assert!(!sim.login("alice", "wrong"));
    assert!(!sim.login("alice", "wrong"));
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.login_failed", alice)]);
    assert_eq!(events[0]["data"]["fail_login_count"], 2);
}

#[tokio::test]
async fn an_ocsf_sink_beside_the_cloudevents_one_gets_every_event_as_a_valid_ocsf_record() {
    let (events, records) =
        superset_changes_beside_an_ocsf_sink(Some(Version::V1_8_0), Version::V1_8_0).await;
    assert_eq!(records.len(), events.len(), "one record per event");
    for (event, record) in events.iter().zip(&records) {
        assert_eq!(record["metadata"]["uid"], event["id"]);
        assert_eq!(record["metadata"]["event_code"], event["type"]);
        assert_eq!(record["unmapped"]["data"], event["data"]);
    }
    let classes: std::collections::BTreeSet<u64> = records
        .iter()
        .map(|r| r["class_uid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        classes,
        [3001, 3002, 3005, 3006, 5003].into(),
        "{:?}",
        kinds(&events)
    );
}

#[tokio::test]
async fn deletion_is_seen_quickly_through_membership_and_confirmed_by_404() {
    let (sim, mut h, alice, _) = baseline().await;
    assert!(sim.delete_user(alice));
    let report = h.cycle().await;
    assert!(!report.full);
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.deleted", alice)]);
    assert_eq!(events[0]["data"]["user"]["username"], "alice");
    // A full reconcile later agrees and emits nothing more.
    h.full().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
async fn reused_id_is_a_deletion_and_a_creation() {
    let (sim, mut h, _, bob) = baseline().await;
    assert!(sim.delete_user(bob));
    let newcomer = sim.add_user("zed", "pw", &[GAMMA]);
    assert_eq!(
        newcomer, bob,
        "the simulator reuses the highest id, as SQLite does"
    );
    h.full().await;
    let events = h.new_events();
    assert_eq!(
        kinds(&events),
        [kind("user.deleted", bob), kind("user.created", bob)]
    );
    assert_eq!(events[0]["data"]["user"]["username"], "bob");
    assert_eq!(events[1]["data"]["user"]["username"], "zed");
}

#[tokio::test]
async fn the_service_accounts_own_logins_never_become_events() {
    let sim = Sim::start(SimOptions {
        access_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        h.cycle().await;
        h.full().await;
    }
    h.stop();
    h.cycle().await; // a new process logs in again
    assert!(h.events().is_empty(), "{:?}", kinds(&h.events()));
}

#[tokio::test]
async fn expired_access_token_is_refreshed_not_replaced_by_a_new_login() {
    let sim = Sim::start(SimOptions {
        access_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut h = Harness::new(&sim.url, "");
    for _ in 0..4 {
        h.cycle().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let requests = sim.requests();
    let logins = requests
        .iter()
        .filter(|r| r.path == "/api/v1/security/login")
        .count();
    let refreshes = requests
        .iter()
        .filter(|r| r.path == "/api/v1/security/refresh")
        .count();
    assert_eq!(logins, 1, "one password login per process");
    assert!(refreshes >= 1);
    assert!(
        requests.iter().all(|r| r.status != 401),
        "no request went out with an expired token"
    );
}

#[tokio::test]
async fn more_than_one_page_of_users_is_read_by_keyset() {
    let (sim, mut h) = start().await;
    sim.add_users(260, &[GAMMA]);
    let report = h.cycle().await;
    assert_eq!(report.users, 261);
    let pages: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/security/users/")
        .collect();
    assert_eq!(
        pages.len(),
        4,
        "three pages and the empty one that ends the walk"
    );
    assert!(pages
        .iter()
        .all(|r| r.q.as_deref().unwrap().contains("opr:gt")));
}

#[tokio::test]
async fn mass_deletion_is_held_until_confirmed() {
    let (sim, mut h) = start().await;
    sim.add_users(20, &[GAMMA]);
    h.cycle().await;
    for id in 2..=10 {
        sim.delete_user(id);
    }
    let report = h.full().await;
    assert_eq!(report.held_deletions, 9);
    assert!(h.new_events().is_empty());
    let guard = h
        .store()
        .source_state("test")
        .unwrap()
        .deletion_guard
        .unwrap();
    assert_eq!(guard.user_ids.len(), 9);
    h.try_cycle(CycleOptions {
        full: true,
        confirm_deletes: true,
    })
    .await
    .unwrap();
    let events = h.new_events();
    assert_eq!(events.len(), 9);
    assert!(events.iter().all(|e| e["type"] == "user.deleted"));
    assert!(h
        .store()
        .source_state("test")
        .unwrap()
        .deletion_guard
        .is_none());
}

#[tokio::test]
async fn mass_deletion_is_released_when_a_later_full_reconcile_agrees() {
    let (sim, mut h) = start().await;
    sim.add_users(20, &[GAMMA]);
    h.cycle().await;
    for id in 2..=10 {
        sim.delete_user(id);
    }
    h.cycle().await; // incremental: held
    assert!(h.new_events().is_empty());
    h.full().await; // agrees
    assert_eq!(h.new_events().len(), 9);
}

#[tokio::test]
async fn a_few_deletions_pass_the_guard() {
    let (sim, mut h) = start().await;
    sim.add_users(20, &[GAMMA]);
    h.cycle().await;
    for id in 2..=6 {
        sim.delete_user(id);
    }
    h.full().await;
    assert_eq!(h.new_events().len(), 5);
}

#[tokio::test]
async fn an_unchanged_cycle_derives_nothing_and_restarts_continue_the_log() {
    let (sim, mut h, alice, _) = baseline().await;
    assert_eq!(
        h.cycle().await.users_written,
        0,
        "an unchanged incremental cycle rewrites no user"
    );
    assert_eq!(
        h.full().await.users_written,
        0,
        "an unchanged full reconcile rewrites no user"
    );
    assert!(h.new_events().is_empty());
    h.stop();
    sim.update_user(alice, |u| u.last_name = "X".into());
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.updated", alice)]);
    assert_eq!(
        h.sync_markers().len(),
        2,
        "each full reconcile ended with its sync.completed, the only events before"
    );
    assert_eq!(h.store().head().unwrap(), 3);
}

#[tokio::test]
async fn server_local_times_are_converted_with_the_configured_timezone() {
    let sim = Sim::start(SimOptions {
        utc_offset_minutes: 330,
        ..Default::default()
    })
    .await;
    let mut h = Harness::new(&sim.url, "timezone = \"Asia/Kolkata\"");
    h.cycle().await;
    let before = chrono::Utc::now();
    let carol = sim.add_user("carol", "pw", &[GAMMA]);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("user.created", carol)]);
    let created: chrono::DateTime<chrono::Utc> = events[0]["data"]["user"]["created_on"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (created - before).num_seconds().abs() < 5,
        "created_on {created} is UTC, not Kolkata time"
    );
}

#[tokio::test]
async fn the_demo_shows_every_superset_event_type_when_run_as_the_service_account() {
    use rollcall::source::superset::demo::{Admin, Demo, Step};
    let (sim, mut h) = start().await;
    h.cycle().await;
    // As in the quickstart, the demo acts with the account rollcall polls with: its own role
    // lookups are noise rollcall drops, so every event below comes from a demo step.
    let mut demo = Demo::new(Admin::login(&sim.url, "admin", "admin").await.unwrap());
    let mut shown = std::collections::BTreeSet::new();
    for step in Step::ALL {
        let (what, expect) = demo.run(step).await.unwrap();
        h.cycle().await;
        let events = h.new_events();
        let mut seen = kinds(&events);
        // One dashboard read is two log rows (docs/superset.md S41).
        seen.dedup();
        let expect: Vec<_> = expect.iter().map(|(t, id)| kind(t.as_str(), *id)).collect();
        assert_eq!(seen, expect, "after: {what}");
        shown.extend(seen.into_iter().map(|(t, _)| t));
    }
    assert_eq!(shown, superset_event_types());
}
