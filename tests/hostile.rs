//! A Superset (or Kylin) that misbehaves on purpose (redirects, answers for the wrong user,
//! records no Superset could hold, rate limits) and configs no one means: each is refused or contained,
//! nothing panics, no secret leaves, and the other users' events go on. docs/reliability.md
//! lists each fault with the test here that shows it.

use crate::support;

use std::time::{Duration, Instant};

use rollcall::runner::CycleOptions;
use rollcall::source::superset::User;
use rollcall::store::{Commit, Record};
use rollcall::text::error_chain;
use rollcall::user::Key;
use rollcall_sim::kylin::{
    Fault as KylinFault, FaultKind as KylinFaultKind, KylinOptions, KylinSim,
};
use support::harness::{kind, kinds, Harness};
use support::sim::{Fault, FaultKind, Sim, SimOptions};

const USERS: &str = "/api/v1/security/users/";
const LOGIN: &str = "/api/v1/security/login";

fn fault(path: &str, times: u32, kind: FaultKind) -> Fault {
    Fault {
        path_contains: path.into(),
        skip: 0,
        times,
        kind,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A simulator with alice and bob stored by a first cycle.
async fn baseline() -> (Sim, Harness, u64, u64) {
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw", &[4]);
    let bob = sim.add_user("bob", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.cycle().await;
    h.new_events();
    (sim, h, alice, bob)
}

#[tokio::test]
async fn a_login_redirected_to_another_origin_sends_no_password_there() {
    let sim = Sim::start(SimOptions::default()).await;
    let elsewhere = Sim::start(SimOptions::default()).await;
    sim.inject(fault(
        LOGIN,
        1,
        FaultKind::Redirect {
            status: 307,
            location: format!("{}{LOGIN}", elsewhere.url),
        },
    ));
    let mut h = Harness::new(&sim.url, "");
    let err = error_chain(&h.try_cycle(CycleOptions::default()).await.unwrap_err());
    assert!(
        err.contains("redirect (HTTP 307)")
            && err.contains("does not follow")
            && err.contains("Set `url`"),
        "{err}"
    );
    assert!(
        elsewhere.arrived().is_empty(),
        "nothing reached the other origin"
    );
    assert_eq!(h.store().head().unwrap(), 0);
}

#[tokio::test]
async fn a_users_read_redirected_to_another_origin_sends_no_token_there() {
    let (sim, mut h, _, _) = baseline().await;
    let elsewhere = Sim::start(SimOptions::default()).await;
    sim.inject(fault(
        USERS,
        1,
        FaultKind::Redirect {
            status: 302,
            location: format!("{}{USERS}", elsewhere.url),
        },
    ));
    let err = error_chain(&h.try_cycle(CycleOptions::default()).await.unwrap_err());
    assert!(err.contains("redirect (HTTP 302)"), "{err}");
    assert!(
        elsewhere.arrived().is_empty(),
        "nothing reached the other origin"
    );
}

#[tokio::test]
async fn a_kylin_login_redirected_to_another_origin_sends_no_credentials_there() {
    let kylin = KylinSim::start(KylinOptions::default()).await;
    let elsewhere = KylinSim::start(KylinOptions::default()).await;
    kylin.inject(KylinFault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind: KylinFaultKind::Redirect(format!("{}/api/user", elsewhere.url)),
    });
    let mut h = Harness::kylin(&kylin.url, "");
    let err = error_chain(&h.try_cycle(CycleOptions::default()).await.unwrap_err());
    assert!(
        err.contains("with a redirect (HTTP 302)") && err.contains("does not follow"),
        "{err}"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other origin"
    );
    assert_eq!(h.cycle().await.users, 1, "the next cycle logs in as usual");
}

#[tokio::test]
async fn a_by_id_answer_for_another_user_is_refused_and_the_others_go_on() {
    let (sim, mut h, alice, bob) = baseline().await;
    // Bob leaves the list, so rollcall asks for him by id, and is answered with alice.
    let carol = sim.add_user("carol", "pw", &[4]);
    sim.delete_user(bob);
    sim.inject(fault(
        &format!("{USERS}{bob}"),
        1,
        FaultKind::WrongId(alice),
    ));
    h.full().await;
    assert_eq!(
        kinds(&h.new_events()),
        [kind("user.created", carol)],
        "no deletion of bob inferred, alice untouched"
    );
    let state = h.store().source_state("test").unwrap();
    let unreadable = &state.cursor["unreadable_users"];
    assert!(
        unreadable[bob.to_string()]
            .as_str()
            .is_some_and(|r| r.contains(&format!("record of user {alice}"))),
        "{unreadable}"
    );
    // Once Superset answers for bob himself, his deletion comes through and the report clears.
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deleted", bob)]);
    let state = h.store().source_state("test").unwrap();
    assert_eq!(state.cursor["unreadable_users"], serde_json::json!({}));
}

#[tokio::test]
async fn a_full_reconcile_heals_a_record_stored_under_another_users_key() {
    let (_sim, mut h, alice, _) = baseline().await;
    // The wrong state an earlier version left: alice's key holding a record of user 999,
    // after events told consumers that alice was deleted and 999 created.
    let store = h.store();
    let mut wrong: User = store.snapshot::<User>("test").unwrap()[&alice].clone();
    wrong.id = 999;
    wrong.username = "mallory".into();
    let state = store.source_state("test").unwrap();
    store
        .commit(Commit {
            source: "test",
            upserts: vec![Record {
                key: alice.to_bytes(),
                value: serde_json::to_vec(&wrong).unwrap(),
            }],
            removals: vec![],
            events: vec![],
            state: Some(&state),
        })
        .unwrap();
    h.full().await;
    assert_eq!(
        kinds(&h.new_events()),
        [kind("user.created", alice), kind("user.deleted", 999)]
    );
    let healed = h.store().snapshot::<User>("test").unwrap();
    assert_eq!(healed[&alice].username, "alice");
    assert!(healed.iter().all(|(k, u)| *k == u.id), "{healed:?}");
    h.full().await;
    assert!(h.new_events().is_empty(), "healed for good");
}

#[tokio::test]
async fn a_lone_surrogate_in_one_name_blocks_no_other_user_and_deletes_no_one() {
    let (sim, mut h, alice, bob) = baseline().await;
    sim.update_user(alice, |u| u.first_name = "Alicia".into());
    sim.update_user(bob, |u| u.active = false);
    let carol = sim.add_user("carol", "pw", &[4]);
    // Both pages of one full read (the rows, then the empty page that ends it).
    sim.inject(fault(
        USERS,
        2,
        FaultKind::RawField {
            user_id: bob,
            field: "first_name".into(),
            raw: r#""bob\ud800""#.into(),
        },
    ));
    h.full().await;
    assert_eq!(
        kinds(&h.new_events()),
        [kind("user.updated", alice), kind("user.created", carol)],
        "alice and carol go on; bob is neither deleted nor changed"
    );
    h.stop();
    let out = h.rollcall(&["status"]).await;
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        status.contains("USERS THAT COULD NOT BE READ: 1")
            && status.contains(&format!("user {bob}: "))
            && status.contains("not a Superset user")
            && status.contains("hex escape"),
        "{status}"
    );
    // Superset fixed: bob's change arrives, and the report clears.
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.deactivated", bob)]);
    h.stop();
    let status = text(&h.rollcall(&["status"]).await.stdout);
    assert!(!status.contains("COULD NOT BE READ"), "{status}");
}

#[tokio::test]
async fn one_unreadable_role_hides_no_other_membership_change_and_removes_no_member() {
    const ROLES: &str = "/api/v1/security/roles/search/";
    const GAMMA: u64 = 4;
    const ALPHA: u64 = 3;
    let (sim, mut h, alice, bob) = baseline().await;
    sim.set_role_members(ALPHA, &[alice]);
    sim.update_user(bob, |u| u.first_name = "Robert".into());
    // Gamma, the role of both, cannot be read: had it been read as an empty role, both would
    // have left it.
    sim.inject(fault(
        ROLES,
        1,
        FaultKind::RawField {
            user_id: GAMMA,
            field: "name".into(),
            raw: r#""Gamma\ud800""#.into(),
        },
    ));
    h.cycle().await;
    assert_eq!(
        kinds(&h.new_events()),
        [kind("user.role_added", alice), kind("user.updated", bob)]
    );
    // A row whose own id cannot be read is known by the answer's `ids`.
    sim.inject(fault(
        ROLES,
        1,
        FaultKind::RawField {
            user_id: GAMMA,
            field: "id".into(),
            raw: r#""four""#.into(),
        },
    ));
    sim.update_user(alice, |u| u.last_name = "Liddell".into());
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.updated", alice)]);
    // Readable again: nothing had changed in it.
    h.cycle().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
async fn bytes_that_are_not_utf8_in_one_name_block_no_other_user_and_delete_no_one() {
    let (sim, mut h, alice, bob) = baseline().await;
    sim.update_user(alice, |u| u.first_name = "Alicia".into());
    // Both pages of one full read (the rows, then the empty page that ends it).
    sim.inject(fault(
        USERS,
        2,
        FaultKind::NotUtf8 {
            user_id: bob,
            field: "first_name".into(),
        },
    ));
    h.full().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.updated", alice)]);
    let state = h.store().source_state("test").unwrap();
    assert!(
        state.cursor["unreadable_users"][bob.to_string()]
            .as_str()
            .is_some_and(|r| r.contains("not a Superset user")),
        "{:?}",
        state.cursor
    );
    h.full().await;
    assert!(h.new_events().is_empty(), "bob was never changed");
}

#[tokio::test]
async fn an_extreme_last_login_panics_no_poll_of_the_real_binary() {
    let (sim, mut h, _, bob) = baseline().await;
    h.stop();
    sim.inject(fault(
        USERS,
        u32::MAX,
        FaultKind::RawField {
            user_id: bob,
            field: "last_login".into(),
            raw: r#""-262143-01-01T00:00:00""#.into(),
        },
    ));
    let carol = sim.add_user("carol", "pw", &[4]);
    for _ in 0..2 {
        let out = h.rollcall(&["once"]).await;
        let stderr = text(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    assert_eq!(kinds(&h.new_events()), [kind("user.created", carol)]);
    let state = h.store().source_state("test").unwrap();
    assert!(
        state.cursor["unreadable_users"][bob.to_string()]
            .as_str()
            .is_some_and(|r| r.contains("`last_login` -262143-01-01")),
        "{:?}",
        state.cursor
    );
}

#[tokio::test]
async fn retry_after_from_superset_on_429_is_waited_for_then_the_read_succeeds() {
    let (sim, mut h, _, _) = baseline().await;
    let carol = sim.add_user("carol", "pw", &[4]);
    sim.inject(fault(
        USERS,
        1,
        FaultKind::RetryAfter {
            status: 429,
            value: "2".into(),
        },
    ));
    let started = Instant::now();
    h.cycle().await;
    // Backoff alone would have retried within half a second.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(kinds(&h.new_events()), [kind("user.created", carol)]);
}

#[tokio::test]
async fn a_429_that_persists_is_a_clear_error_and_stores_nothing() {
    let (sim, mut h, _, _) = baseline().await;
    let head = h.store().head().unwrap();
    sim.inject(fault(
        USERS,
        3,
        FaultKind::RetryAfter {
            status: 429,
            value: "0".into(),
        },
    ));
    let err = error_chain(&h.try_cycle(CycleOptions::default()).await.unwrap_err());
    assert!(
        err.contains("slow down (HTTP 429)") && err.contains("3 attempts"),
        "{err}"
    );
    assert_eq!(h.store().head().unwrap(), head);
}

#[tokio::test]
async fn check_config_refuses_absurd_durations_and_a_password_in_the_url() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(
        &sim.url,
        "poll_interval = \"1ns\"\nlog_backfill = \"300000years\"",
    );
    h.edit_config(|c| c.replace("url = \"http://", "url = \"http://admin:s3cr3t@"));
    let out = h.rollcall(&["check-config"]).await;
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`poll_interval` must be between 1s and 1day, not 1ns")
            && err.contains("`log_backfill` must be at most")
            && err.contains("must not hold a user or password"),
        "{err}"
    );
    assert!(
        !err.contains("s3cr3t"),
        "the password is never repeated: {err}"
    );
}

/// Fails the test instead of hanging it when a read goes on for ever.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(300), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end"))
}

#[tokio::test]
async fn a_superset_answer_larger_than_max_response_bytes_is_refused_naming_the_url_the_bound_and_the_key(
) {
    let (sim, mut h, _, _) = baseline().await;
    h.stop();
    h.edit_config(|c| {
        c.replace(
            "max_retries = 2",
            "max_retries = 2\nmax_response_bytes = 65536",
        )
    });
    for declared in [true, false] {
        sim.inject(fault(
            USERS,
            1,
            FaultKind::Oversized {
                bytes: 1 << 20,
                declared,
            },
        ));
        let err = bounded("the oversized read", h.try_cycle(CycleOptions::default()))
            .await
            .unwrap_err();
        let err = error_chain(&err);
        names_the_url_the_bound_and_the_key(&err, &format!("{}{USERS}", sim.url));
        let how = if declared {
            "its Content-Length of 1048576 bytes is more than"
        } else {
            "it went on past"
        };
        assert!(err.contains(how), "{err}");
    }
    // Within the bound, the same padded answer is read as usual.
    sim.inject(fault(
        USERS,
        1,
        FaultKind::Oversized {
            bytes: 60_000,
            declared: false,
        },
    ));
    h.cycle().await;
}

#[tokio::test]
async fn a_superset_whose_user_pages_never_end_fails_the_read_after_a_bounded_number_of_pages() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(50, &[4]);
    let mut h = Harness::new(&sim.url, "");
    // Every request under the users path first creates 150 users: each keyset page is full,
    // and the next one always has more.
    sim.inject(fault(USERS, u32::MAX, FaultKind::Grow(150)));
    let err = bounded("the endless read", h.try_cycle(CycleOptions::default()))
        .await
        .unwrap_err();
    let err = error_chain(&err);
    assert!(
        err.contains(&format!("pages of {USERS} did not end")),
        "{err}"
    );
    // Limited by what the first page's count (a few hundred users) needs, not by the server.
    let pages = sim.requests().iter().filter(|r| r.path == USERS).count();
    assert!(pages < 200, "{pages} pages read");
}

#[tokio::test]
async fn a_kylin_answer_larger_than_max_response_bytes_is_refused_naming_the_url_the_bound_and_the_key(
) {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let mut h = Harness::kylin(&sim.url, "max_response_bytes = 65536");
    for declared in [true, false] {
        sim.inject(KylinFault {
            path_contains: "/api/user".into(),
            skip: 0,
            times: 1,
            kind: KylinFaultKind::Oversized {
                bytes: 1 << 20,
                declared,
            },
        });
        let err = bounded("the oversized read", h.try_cycle(CycleOptions::default()))
            .await
            .unwrap_err();
        let err = error_chain(&err);
        names_the_url_the_bound_and_the_key(&err, &format!("{}/api/user", sim.url));
    }
    sim.inject(KylinFault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind: KylinFaultKind::Oversized {
            bytes: 60_000,
            declared: true,
        },
    });
    h.cycle().await;
    assert_eq!(sim.failed_logins(rollcall_sim::kylin::ADMIN), 0);
}

/// What the error of an answer over `max_response_bytes` (set to 64 KiB) must say.
fn names_the_url_the_bound_and_the_key(err: &str, url: &str) {
    assert!(
        err.contains(url)
            && err.contains("`max_response_bytes` (65536")
            && err.contains("raise `max_response_bytes` for this source"),
        "{err}"
    );
}
