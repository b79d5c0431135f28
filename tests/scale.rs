//! What makes a cycle's cost independent of the number of users (docs/superset-setup.md,
//! Large Supersets): full reconciles that read id ranges at once and still see everyone, an id
//! range whose filter Superset drops refused like any keyset page, membership read on its own
//! interval, and idle cycles that write nothing.

use crate::support;

use rollcall::runner::CycleOptions;
use rollcall::text::error_chain;
use support::harness::{kind, kinds, Harness};
use support::sim::{Fault, FaultKind, Sim, SimOptions};

const USERS: &str = "/api/v1/security/users/";
const ROLES_SEARCH: &str = "/api/v1/security/roles/search/";

/// Users requests that read an id range below some id (`opr:lt`): only range reads do.
fn range_reads(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path == USERS && r.q.as_deref().is_some_and(|q| q.contains("opr:lt")))
        .count()
}

#[tokio::test]
async fn a_full_reconcile_of_a_large_superset_reads_id_ranges_at_once_and_misses_no_one() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(2_500, &[4]);
    let mut h = Harness::new(&sim.url, "");
    let first = h.cycle().await;
    assert_eq!(first.users, 2_501);
    assert!(
        range_reads(&sim) > 0,
        "the rest of the ids was read in ranges"
    );
    // A change and a deletion in different ranges; a full read finds exactly them.
    sim.update_user(300, |u| u.last_name = "Changed".into());
    assert!(sim.delete_user(2_200));
    let full = h.full().await;
    assert_eq!(full.users, 2_500);
    assert_eq!(
        kinds(&h.new_events()),
        [kind("user.updated", 300), kind("user.deleted", 2_200)]
    );
    assert!(
        h.full().await.events == 0,
        "a second read finds nothing new"
    );
}

#[tokio::test]
async fn one_reader_reads_one_range_when_reconcile_concurrency_is_1() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(2_500, &[4]);
    let mut h = Harness::new(&sim.url, "reconcile_concurrency = 1");
    assert_eq!(h.cycle().await.users, 2_501);
    assert_eq!(range_reads(&sim), 0);
}

#[tokio::test]
async fn an_id_range_whose_filter_is_dropped_fails_the_read_instead_of_being_trusted() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(2_500, &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    // After `_info`, the first page and the highest id: range reads come back unfiltered, also
    // when asked again (a race would pass): four ranges, each page asked four times at most.
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 3,
        times: 16,
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
        err.contains("Superset ignored part of a query") && err.contains(" and < "),
        "a range read was refused: {err}"
    );
    // Nothing was taken for deleted on the way, and the next read is whole again.
    let next = h.full().await;
    assert_eq!((next.users, next.events), (2_501, 0));
}

#[tokio::test]
async fn with_a_membership_interval_polls_in_between_skip_the_role_lists() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "membership_interval = \"1h\"");
    h.cycle().await;
    let before = sim
        .requests()
        .iter()
        .filter(|r| r.path == ROLES_SEARCH)
        .count();
    h.cycle().await;
    h.cycle().await;
    let after = sim
        .requests()
        .iter()
        .filter(|r| r.path == ROLES_SEARCH)
        .count();
    assert_eq!(
        after - before,
        1,
        "read once in the hour, by the first incremental poll"
    );
}

#[tokio::test]
async fn without_a_membership_interval_every_poll_compares_the_role_lists() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    let count = || {
        sim.requests()
            .iter()
            .filter(|r| r.path == ROLES_SEARCH)
            .count()
    };
    let before = count();
    h.cycle().await;
    h.cycle().await;
    assert_eq!(count() - before, 2);
}

#[tokio::test]
async fn an_idle_cycle_writes_no_user_and_keeps_its_poll_time_for_status() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(50, &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    h.cycle().await;
    let stored = h.store().stored_source_state("test").unwrap().unwrap();
    let idle = h.cycle().await;
    assert_eq!((idle.events, idle.users_written), (0, 0));
    assert_eq!(
        h.store().stored_source_state("test").unwrap().unwrap(),
        stored,
        "nothing written"
    );
    let seen = h.store().source_state("test").unwrap();
    assert!(seen.last_poll > stored.last_poll, "status sees the poll");
}
