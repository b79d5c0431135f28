//! Bad input from Superset: each gives a clear error and changes nothing in the store, and a
//! later cycle recovers without losing or duplicating a derivation.

use crate::support;

use std::time::Duration;

use rollcall::runner::{CycleError, CycleOptions, RunnerError};
use rollcall::store::SourceState;
use rollcall::text::error_chain;
use support::harness::{kind, kinds, Harness};
use support::sim::{Fault, FaultKind, Sim, SimOptions};

const USERS: &str = "/api/v1/security/users/";

/// A simulator with a stored baseline and one pending change (carol created), plus the store
/// state before the failing cycle.
async fn pending_change() -> (Sim, Harness, u64, SourceState, u64) {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    let carol = sim.add_user("carol", "pw", &[4]);
    let state = h.store().source_state("test").unwrap();
    let head = h.store().head().unwrap();
    (sim, h, carol, state, head)
}

async fn fails_then_recovers(fault: Fault, expect: &[&str]) {
    let (sim, mut h, carol, state_before, head_before) = pending_change().await;
    sim.inject(fault);
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let msg = error_chain(&err);
    for e in expect {
        assert!(msg.contains(e), "error {msg:?} should mention {e:?}");
    }
    assert!(matches!(err, RunnerError::Cycle(CycleError::Source { .. })));
    let state = h.store().source_state("test").unwrap();
    assert_eq!(
        h.store().head().unwrap(),
        head_before,
        "no event was stored"
    );
    assert_eq!(
        state.cursor, state_before.cursor,
        "high-water marks did not move"
    );
    assert_eq!(state.last_poll, state_before.last_poll);
    assert!(state.last_error.unwrap().message.contains(expect[0]));
    // The next cycle derives the pending change exactly once.
    h.cycle().await;
    assert_eq!(kinds(&h.events()), [kind("user.created", carol)]);
    assert!(h.store().source_state("test").unwrap().last_error.is_none());
}

fn fault(path: &str, times: u32, kind: FaultKind) -> Fault {
    Fault {
        path_contains: path.into(),
        skip: 0,
        times,
        kind,
    }
}

#[tokio::test]
async fn html_instead_of_json_is_a_clear_error() {
    fails_then_recovers(
        fault(USERS, 1, FaultKind::Html),
        &["expected JSON", "text/html", "base URL"],
    )
    .await;
}

#[tokio::test]
async fn truncated_json_is_a_clear_error() {
    fails_then_recovers(
        fault(USERS, 1, FaultKind::Truncated),
        &["truncated or malformed", "Nothing was stored"],
    )
    .await;
}

#[tokio::test]
async fn persistent_5xx_is_reported_after_retries() {
    fails_then_recovers(
        fault(USERS, 3, FaultKind::Status(500)),
        &["HTTP 500", "after 3 attempts"],
    )
    .await;
}

#[tokio::test]
async fn security_api_disabled_mentions_the_setting() {
    fails_then_recovers(
        fault(USERS, 1, FaultKind::Status(404)),
        &["FAB_ADD_SECURITY_API"],
    )
    .await;
}

#[tokio::test]
async fn forbidden_explains_the_admin_role() {
    fails_then_recovers(
        fault(USERS, 1, FaultKind::Status(403)),
        &["403", "Admin role"],
    )
    .await;
}

#[tokio::test]
async fn a_transient_5xx_is_retried_within_the_cycle() {
    let (sim, mut h, carol, _, _) = pending_change().await;
    sim.inject(fault(USERS, 1, FaultKind::Status(502)));
    h.cycle().await;
    assert_eq!(kinds(&h.events()), [kind("user.created", carol)]);
}

#[tokio::test]
async fn token_expiring_mid_pagination_is_renewed_and_the_walk_continues() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    sim.add_users(150, &[4]);
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 1,
        times: 1,
        kind: FaultKind::ExpiredToken,
    });
    let report = h.cycle().await;
    assert_eq!(report.users, 151);
    let logins = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/security/login")
        .count();
    assert_eq!(
        logins, 1,
        "renewed by refresh token, not by a second password login"
    );
}

#[tokio::test]
async fn wrong_password_is_a_login_error_and_changes_nothing() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    std::fs::write(h.dir.path().join("password"), "not-the-password").unwrap();
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("refused the login of 'admin'") && err.contains("inactive"),
        "{err}"
    );
    assert_eq!(h.store().head().unwrap(), 0);
    assert!(!h.store().source_state("test").unwrap().initialized);
}

#[tokio::test]
async fn inactive_service_account_is_refused_with_the_same_clear_error() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.update_user(1, |u| u.active = false);
    let mut h = Harness::new(&sim.url, "");
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(err.contains("account is inactive"), "{err}");
}

#[tokio::test]
async fn non_admin_service_account_gets_the_admin_role_hint() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_user("viewer", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.edit_config(|c| c.replace("username = \"admin\"", "username = \"viewer\""));
    std::fs::write(h.dir.path().join("password"), "pw").unwrap();
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("403 Forbidden") && err.contains("Admin role"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_superset_names_the_url() {
    let mut h = Harness::new("http://127.0.0.1:9", "request_timeout = \"2s\"");
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("could not reach Superset at http://127.0.0.1:9/"),
        "{err}"
    );
    assert_eq!(h.store().head().unwrap(), 0);
}

#[tokio::test]
async fn slow_superset_times_out_and_is_retried() {
    let (sim, mut h, carol, _, _) = pending_change().await;
    h.edit_config(|c| c + "request_timeout = \"1s\"\n");
    h.stop();
    sim.inject(fault(USERS, 1, FaultKind::Delay(Duration::from_secs(3))));
    h.cycle().await;
    assert_eq!(kinds(&h.events()), [kind("user.created", carol)]);
}

#[tokio::test]
async fn a_second_process_on_the_same_store_is_told_it_is_in_use() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    let path = h.config().store.path;
    let err = rollcall::store::Store::open(&path)
        .err()
        .expect("second open must fail")
        .to_string();
    assert!(err.contains("already in use"), "{err}");
}

#[tokio::test]
async fn ignored_filter_fails_loudly_instead_of_trusting_the_page() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    sim.add_users(5, &[4]);
    h.cycle().await;
    // From the second page of a keyset walk on, pages come back from id 1 again: the filter
    // is dropped, every time it is asked (a race would pass).
    // (The first request under the users path is `users/_info`, the release's capabilities.)
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 2,
        times: u32::MAX,
        kind: FaultKind::IgnoreFilters,
    });
    let err = h
        .try_cycle(CycleOptions {
            full: true,
            confirm_deletes: false,
        })
        .await
        .unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("Superset ignored part of a query") && err.contains("id > 6"),
        "{err}"
    );
}

#[tokio::test]
async fn a_page_answered_with_another_requests_filters_is_asked_again_and_the_read_goes_on() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    let first = sim.add_user("first", "pw", &[4]);
    h.cycle().await;
    h.new_events();
    sim.add_users(2_500, &[4]);
    sim.update_user(first, |u| u.last_name = "Changed".into());
    // Flask-AppBuilder's shared filter state (docs/superset.md S47): two pages of the id
    // ranges read at once come back filtered by another request's filters, here none.
    // (Under the users path: `users/_info`, the first keyset page, the highest id first.)
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 4,
        times: 2,
        kind: FaultKind::IgnoreFilters,
    });
    h.full().await;
    let events = h.new_events();
    assert_eq!(events.len(), 2_501, "every new user once, and the change");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "user.updated")
            .count(),
        1
    );
}

#[tokio::test]
async fn ignored_changed_on_filter_is_detected_on_incremental_polls() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    sim.add_users(5, &[4]);
    // The filter value has whole seconds: rows older than that second must not come back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.add_user("late", "pw", &[4]);
    h.cycle().await;
    h.edit_config(|c| c + "incremental_overlap = \"0s\"\n");
    h.stop();
    // The first request under the users path is `users/_info` (the release's capabilities).
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 1,
        times: u32::MAX,
        kind: FaultKind::IgnoreFilters,
    });
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("filter `changed_on gt") && err.contains("does not match it"),
        "{err}"
    );
}

#[tokio::test]
async fn token_still_rejected_after_renewal_is_a_clear_error() {
    let (sim, mut h, _, _, head) = pending_change().await;
    sim.inject(fault(USERS, 2, FaultKind::ExpiredToken));
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("rejected rollcall's access token even after renewing it")
            && err.contains("Token has expired"),
        "{err}"
    );
    assert_eq!(h.store().head().unwrap(), head);
}

/// A pod without the security API (or a proxy) answers a user's read with the JSON 404 of a
/// missing route: that is no proof the user is gone, so no deletion may follow from it.
#[tokio::test]
async fn a_json_404_from_a_missing_route_confirms_no_deletion() {
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    // Taken out of her only role through the roles API: missing from every role's member list,
    // so the incremental poll asks for her by id.
    sim.set_role_members(4, &[]);
    sim.inject(fault(
        &format!("{USERS}{alice}"),
        1,
        FaultKind::MissingRoute,
    ));
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("404 but not with Superset's own answer for a missing user")
            && err.contains("FAB_ADD_SECURITY_API"),
        "{err}"
    );
    assert!(
        !kinds(&h.events()).contains(&kind("user.deleted", alice)),
        "alice exists: {:?}",
        kinds(&h.events())
    );
    // Superset answers for itself again: she is there, without her role, and never deleted.
    h.cycle().await;
    assert_eq!(kinds(&h.events()), [kind("user.role_removed", alice)]);
}
