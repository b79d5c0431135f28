//! Every Superset release from 4.1 to 6.1 (docs/superset.md, Releases 4.1 to 6.1), simulated:
//! the same lifecycle yields the same events whatever the release allows, and offset paging on
//! the releases without keyset paging neither loses nor invents a user when pages shift.

use crate::support;

use rollcall::runner::CycleOptions;
use rollcall::text::error_chain;
use support::harness::{kind, kinds, Harness};
use support::sim::{Fault, FaultKind, Release, Sim, SimOptions};

const GAMMA: u64 = 4;
const ALPHA: u64 = 3;
const USERS: &str = "/api/v1/security/users/";

/// One step of the lifecycle: a change made in Superset and the events it must give.
struct Step {
    what: &'static str,
    change: Box<dyn Fn(&Sim)>,
    events: Vec<(String, String)>,
    /// Seen only by a full read on releases without `roles/search/`.
    through_roles_api: bool,
}

fn step(what: &'static str, change: impl Fn(&Sim) + 'static, events: &[(&str, u64)]) -> Step {
    Step {
        what,
        change: Box::new(change),
        events: events.iter().map(|(t, id)| kind(t, *id)).collect(),
        through_roles_api: false,
    }
}

/// admin is 1, alice 2, bob 3, carol (created by the lifecycle) 4; zed takes bob's id.
fn lifecycle() -> Vec<Step> {
    let (alice, bob, carol) = (2, 3, 4);
    vec![
        step(
            "create",
            |sim| {
                sim.add_user("carol", "pw-carol", &[GAMMA]);
            },
            &[("user.created", carol)],
        ),
        step(
            "rename",
            move |sim| sim.update_user(alice, |u| u.first_name = "Alicia".into()),
            &[("user.updated", alice)],
        ),
        step(
            "deactivate",
            move |sim| sim.update_user(alice, |u| u.active = false),
            &[("user.deactivated", alice)],
        ),
        step(
            "reactivate",
            move |sim| sim.update_user(alice, |u| u.active = true),
            &[("user.reactivated", alice)],
        ),
        step(
            "role change through the user",
            move |sim| sim.update_user(alice, |u| u.roles = vec![ALPHA]),
            &[("user.role_removed", alice), ("user.role_added", alice)],
        ),
        Step {
            through_roles_api: true,
            ..step(
                "role change through the roles API",
                move |sim| sim.set_role_members(ALPHA, &[alice, bob]),
                &[("user.role_added", bob)],
            )
        },
        step(
            "login",
            |sim| assert!(sim.login("bob", "pw-bob")),
            &[("user.login", bob)],
        ),
        step(
            "failed login",
            |sim| assert!(!sim.login("bob", "wrong")),
            &[("user.login_failed", bob)],
        ),
        step(
            "delete",
            move |sim| assert!(sim.delete_user(carol)),
            &[("user.deleted", carol)],
        ),
        step(
            "id reuse",
            move |sim| {
                assert!(sim.delete_user(bob));
                assert_eq!(sim.add_user("zed", "pw-zed", &[GAMMA]), bob);
            },
            &[("user.deleted", bob), ("user.created", bob)],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_lifecycle_gives_the_same_events_on_every_release() {
    for release in [Release::V4_1, Release::V5_0, Release::V6_0, Release::V6_1] {
        let sim = Sim::start(SimOptions {
            release,
            ..SimOptions::default()
        })
        .await;
        let mut h = Harness::new(&sim.url, "");
        sim.add_user("alice", "pw-alice", &[GAMMA]);
        sim.add_user("bob", "pw-bob", &[GAMMA]);
        h.cycle().await;
        assert!(h.new_events().is_empty());
        for step in lifecycle() {
            (step.change)(&sim);
            let report = h.cycle().await;
            assert!(
                !report.full,
                "{release:?}, {}: an incremental poll",
                step.what
            );
            let mut events = kinds(&h.new_events());
            // Without role search the change is certain only by the next full read (a poll
            // may see it sooner, in the record of a user it re-reads for another reason).
            if step.through_roles_api && release.before_6() {
                h.full().await;
                events.extend(kinds(&h.new_events()));
            }
            assert_eq!(events, step.events, "{release:?}, {}", step.what);
        }
        // A full read afterwards agrees with every incremental poll.
        h.full().await;
        assert!(h.new_events().is_empty(), "{release:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_detected_release_capabilities_and_strategy() {
    for (release, full_read, role_membership) in [
        (Release::V5_0, "pages_by_id", "at_full_read"),
        (Release::V6_1, "keyset_by_id", "role_search"),
    ] {
        let sim = Sim::start(SimOptions {
            release,
            ..SimOptions::default()
        })
        .await;
        let mut h = Harness::new(&sim.url, "");
        h.cycle().await;
        h.stop();
        let out = h.rollcall(&["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let detected = &status["sources"][0]["details"]["release"];
        assert_eq!(detected["strategy"]["full_read"], full_read, "{status}");
        assert_eq!(
            detected["strategy"]["role_membership"], role_membership,
            "{status}"
        );
        let id_filterable = detected["filterable_user_columns"]
            .as_object()
            .unwrap()
            .contains_key("id");
        assert_eq!(id_filterable, !release.before_6(), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_shifting_under_a_concurrent_delete_on_5_0_lose_and_invent_nothing() {
    let sim = Sim::start(SimOptions {
        release: Release::V5_0,
        ..SimOptions::default()
    })
    .await;
    let mut h = Harness::new(&sim.url, "");
    // admin and 250 users: ids 1 to 251, three pages of 100 by id.
    sim.add_users(250, &[GAMMA]);
    h.cycle().await;
    assert!(h.new_events().is_empty());
    // User 50 (on page 0) is deleted just before page 1 is read: every later row shifts down
    // by one, and user 101 moves from page 1 to page 0, already read (docs/superset.md S21).
    // The requests under the users path are `_info`, then page 0, then page 1.
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 2,
        times: 1,
        kind: FaultKind::DeleteFirst(50),
    });
    sim.clear_requests();
    h.try_cycle(CycleOptions {
        full: true,
        confirm_deletes: false,
    })
    .await
    .unwrap();
    assert_eq!(kinds(&h.new_events()), [kind("user.deleted", 50)]);
    let first_pages = sim
        .requests()
        .iter()
        .filter(|r| r.path == USERS && r.q.as_deref().is_some_and(|q| q.contains("page:0,")))
        .count();
    assert_eq!(first_pages, 2, "the shifted pages were read a second time");
    let created = sim.add_user("late", "pw", &[GAMMA]);
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.created", created)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_changed_underneath_is_detected_again_and_polling_goes_on() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, "");
    let alice = sim.add_user("alice", "pw-alice", &[GAMMA]);
    h.cycle().await;
    // A downgrade to 5.0: the filters chosen for 6.1 are refused, and said so.
    sim.set_release(Release::V5_0);
    sim.update_user(alice, |u| u.active = false);
    let err = h.try_cycle(CycleOptions::default()).await.unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains("refused a query") && err.contains("not allowed to filter"),
        "{err}"
    );
    let report = h.cycle().await;
    assert!(
        !report.full,
        "detected again without waiting for a full read"
    );
    assert_eq!(kinds(&h.new_events()), [kind("user.deactivated", alice)]);
    // An upgrade back: the next full reconcile takes the keyset reads again.
    sim.set_release(Release::V6_1);
    sim.update_user(alice, |u| u.active = true);
    sim.clear_requests();
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.reactivated", alice)]);
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.path == USERS && r.q.as_deref().is_some_and(|q| q.contains("col:id,opr:gt"))));
}

/// A server (or a proxy) that ignores `page` answers page 0 to every page of a 5.0 incremental
/// poll's newest-first read: the poll fails saying so, instead of reading for ever. (One page
/// that brings nothing new can be a shift by concurrent changes; two in a row are not.)
#[tokio::test]
async fn a_newest_first_read_that_ignores_page_fails_instead_of_reading_forever() {
    let sim = Sim::start(SimOptions {
        release: Release::V5_0,
        ..SimOptions::default()
    })
    .await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        sim.add_user(name, "pw", &[GAMMA]);
    }
    let mut h = Harness::new(&sim.url, "action_log = false\npage_size = 2");
    h.cycle().await;
    sim.inject(Fault {
        path_contains: USERS.into(),
        skip: 0,
        times: 100,
        kind: FaultKind::IgnorePage,
    });
    let error = error_chain(&h.try_cycle(CycleOptions::default()).await.unwrap_err());
    assert!(
        error.contains(
            "page 2 of the users by changed_on, as the one before it, brought only users of earlier pages"
        ),
        "{error}"
    );
}
