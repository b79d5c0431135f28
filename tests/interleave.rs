//! Changes that land while rollcall reads, and restarts. Random administrator changes are made
//! just before random requests of full and incremental reads (and between reads), against the
//! Superset simulator answering like 4.1 and 5.0 (pages by index) or 6.0 and 6.1 (keyset on
//! id), and against the Kylin simulator, with pages of two or three users. After a cycle the
//! process may stop, or die: just before one of the cycle's requests is answered (the cycle's
//! future dropped), or while the sink delivers (the JSONL file cut to some of the cycle's
//! lines, maybe with half of the next, and the cursor to some of those); the next cycle starts
//! a new runner on the same store. Against Kylin, a wrong password may be written to the
//! service account's file before a cycle. Settings vary (`emit_initial_snapshot`, and for
//! Superset the release, `membership_interval`, `incremental_overlap`). rollcall runs
//! in-process on a real sled store and a JSONL sink. The properties (docs/reliability.md,
//! Changes during a read, and Restarts):
//!
//! - **nothing invented**: every state an event states of a user (its `data.user`), or a
//!   silent first cycle stores, is one the source held at some moment of that cycle (or of the
//!   cycle a process died in, for what it left undelivered), and a `user.deleted` comes only
//!   in a cycle in which that user (that incarnation: Superset's `created_on`, Kylin's `uuid`)
//!   was absent at some moment;
//! - **nothing derived twice**: event ids are unique, but for an event sent again, the same to
//!   the byte, after a process died delivering it (at-least-once); and the events of each user
//!   form one chain: every group of events stating one new state is exactly what rollcall's
//!   diff derives from the state the events before it left (so no duplicate, no event from a
//!   stale record);
//! - **nothing lost**: after cycles without changes (one of them full), the state the events
//!   leave (in what they report: Superset's `changed_on` moves without one) and the store's
//!   snapshot both equal the source;
//! - **one failed login per credential, ever**: the source counts exactly the refused logins
//!   [`Logins`] allows, and a cycle fails with a refusal exactly when it says.
//!
//! `ROLLCALL_PROPTEST_CASES` sets the cases per property, `ROLLCALL_PROPTEST_SEED` the seed
//! (random by default); both are printed, so a failure can be run again.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rollcall::diff::{self, DiffOptions};
use rollcall::runner::CycleOptions;
use rollcall::source::kylin::KylinUser;
use rollcall::source::superset::User;
use rollcall::user::Account;
use rollcall_sim::kylin::{self, KylinOptions, KylinSim, ROLE_ANALYST, ROLE_MODELER};
use rollcall_sim::superset::{self, Release, Sim, SimOptions};
use serde_json::{json, Value};
use support::harness::Harness;
use support::login::Logins;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// When a change is made: between two cycles, or just before the cycle's request `n` (from 0,
/// counting every request the simulator gets, the login included).
#[derive(Debug, Clone, Copy)]
enum When {
    Between,
    Before(u32),
}

/// How the process fares in a cycle: it lives on, or stops or dies, and the next cycle starts
/// a new one (a new runner on the same store, as a restarted rollcall).
#[derive(Debug, Clone, Copy)]
enum End {
    Lives,
    /// Stopped after the cycle.
    Stops,
    /// Killed just before the cycle's request `n` (from 1: after the login) is answered: what
    /// the cycle read and did not commit is gone.
    DiesReading(u32),
    /// Killed while the sink delivered the cycle's events: it had written `written` of them
    /// (and half of the next line if `torn`) and the cursor had moved past `acked` (both
    /// modulo what is possible, see [`Harness::die_delivering`]); the rest is sent again.
    DiesDelivering {
        written: u8,
        acked: u8,
        torn: bool,
    },
}

/// One cycle and the changes made before and during it.
#[derive(Debug, Clone)]
struct Step<C> {
    full: bool,
    /// The service account's password written to its file before the cycle (an index into
    /// [`Kind::PASSWORDS`]).
    password: Option<usize>,
    changes: Vec<(When, C)>,
    end: End,
}

/// One run: the users seeded, the page size, settings, and the cycles. The first cycle is the
/// first ever: it stores what it reads.
#[derive(Debug, Clone)]
struct Case<C> {
    users: u8,
    page_size: u32,
    /// Whether the first cycle emits a `user.observed` per user (`emit_initial_snapshot`) or
    /// stores them silently.
    observe: bool,
    /// Settings each kind reads its own way (Superset: [`SupersetKnobs`]).
    knobs: u8,
    steps: Vec<Step<C>>,
}

/// Cases making changes between cycles or before any of the first `requests` requests of a
/// cycle (about as many as a cycle of these sizes makes: changes after those never come),
/// writing any of `passwords` passwords to the service account's file now and then.
fn case<C: Debug + Clone>(
    requests: u32,
    passwords: usize,
    change: impl Strategy<Value = C> + Clone,
) -> impl Strategy<Value = Case<C>> {
    let when = prop_oneof![
        1 => Just(When::Between),
        4 => (0..requests).prop_map(When::Before),
    ];
    let end = prop_oneof![
        12 => Just(End::Lives),
        2 => Just(End::Stops),
        1 => (1..requests).prop_map(End::DiesReading),
        2 => (any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(written, acked, torn)| End::DiesDelivering { written, acked, torn }),
    ];
    let password = prop_oneof![
        6 => Just(None),
        1 => (0..passwords).prop_map(Some),
    ];
    let step = (
        any::<bool>(),
        password,
        prop::collection::vec((when, change), 0..4),
        end,
    )
        .prop_map(|(full, password, changes, end)| Step {
            full,
            password,
            changes,
            end,
        });
    (
        3u8..=6,
        2u32..=3,
        prop::bool::weighted(0.8),
        any::<u8>(),
        prop::collection::vec(step, 1..5),
    )
        .prop_map(|(users, page_size, observe, knobs, steps)| Case {
            users,
            page_size,
            observe,
            knobs,
            steps,
        })
}

/// Which existing user a change picks: the n-th (modulo) of those it may change when it is
/// made, so that a change drawn in advance always finds someone.
type Pick = u8;

fn pick<T: Clone>(from: &[T], n: Pick) -> Option<T> {
    (!from.is_empty()).then(|| from[n as usize % from.len()].clone())
}

// ---------------------------------------------------------------------------------------------
// What the oracle compares
// ---------------------------------------------------------------------------------------------

/// A user as the oracle compares it: the fields the source's changes move, in one JSON value.
type Fact = Value;
/// The source's users at one moment, by event subject.
type World = BTreeMap<String, Fact>;

/// Every state the source went through, in order: shared with the changes made mid-read,
/// which add the state they leave.
#[derive(Clone, Default)]
struct History(Arc<Mutex<Vec<World>>>);

impl History {
    fn push(&self, world: World) {
        self.0.lock().unwrap().push(world);
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// The states from index `from` to the last.
    fn since(&self, from: usize) -> Vec<World> {
        self.0.lock().unwrap()[from..].to_vec()
    }
}

/// A kind of source, as the properties need it: its simulator, its changes, its user record.
trait Kind: 'static {
    type User: Account;
    type Handle: Send + Sync + 'static;
    type Change: Debug + Clone + Send + 'static;
    /// The account rollcall logs in with.
    const SERVICE_ACCOUNT: &'static str;
    /// The passwords a case may write to that account's password file: the right one first.
    const PASSWORDS: &'static [&'static str];
    /// The file the harness's source reads that account's password from.
    fn password_file(h: &Harness) -> std::path::PathBuf;
    /// The logins the source refused that account so far.
    fn refused_logins(sim: &Self::Handle) -> u32;
    /// Make `change`; `n` is a number no other change of the run gets (for new names).
    fn apply(sim: &Self::Handle, change: &Self::Change, n: u32);
    fn world(sim: &Self::Handle) -> World;
    fn fact(user: &Self::User) -> Fact;
    /// What tells one account under a key from another that reused the key.
    fn incarnation(fact: &Fact) -> &Value;
    /// What the events of a user are meant to keep up to date of `fact`: all of it but the
    /// fields the source's rules let move without an event.
    fn reported(fact: Fact) -> Fact;
    fn before_request(
        sim: &Self::Handle,
        skip: u32,
        change: impl FnOnce(&Self::Handle) + Send + 'static,
    );
    fn cancel_changes(sim: &Self::Handle) -> usize;
    /// Requests the simulator answered so far.
    fn requests(sim: &Self::Handle) -> usize;
}

// ---------------------------------------------------------------------------------------------
// Superset
// ---------------------------------------------------------------------------------------------

/// A change an administrator makes to a Superset (docs/superset.md S28, S32, S33).
#[derive(Debug, Clone)]
enum SupersetChange {
    Create {
        alpha: bool,
    },
    Delete(Pick),
    /// One user deleted and another created at once (two administrators): `count` stays.
    DeleteAndCreate(Pick),
    /// Delete the user with the highest id and create one, which gets the highest id left
    /// plus one: the same id unless the ids below it were deleted too (S33).
    DeleteAndReuseId,
    Rename(Pick),
    Email(Pick),
    ToggleActive(Pick),
    /// A role added or removed in the user's own record (bumps `changed_on`).
    RoleThroughUser(Pick, u64),
    /// A role's members replaced through the roles API (moves no `changed_on`, S32).
    RoleThroughRoles(Pick, u64),
    /// A group's members replaced through the groups API (moves no `changed_on`, S32).
    Group(Pick, u64),
}

fn superset_change() -> impl Strategy<Value = SupersetChange> + Clone {
    use SupersetChange::*;
    let role = prop::sample::select(vec![
        superset::ALPHA_ROLE,
        superset::GAMMA_ROLE,
        superset::SQL_LAB_ROLE,
    ]);
    prop_oneof![
        any::<bool>().prop_map(|alpha| Create { alpha }),
        any::<Pick>().prop_map(Delete),
        any::<Pick>().prop_map(DeleteAndCreate),
        Just(DeleteAndReuseId),
        any::<Pick>().prop_map(Rename),
        any::<Pick>().prop_map(Email),
        any::<Pick>().prop_map(ToggleActive),
        (any::<Pick>(), role.clone()).prop_map(|(p, r)| RoleThroughUser(p, r)),
        (any::<Pick>(), role).prop_map(|(p, r)| RoleThroughRoles(p, r)),
        (any::<Pick>(), 1u64..=GROUPS).prop_map(|(p, g)| Group(p, g)),
    ]
}

/// Groups seeded in a Superset, so that the group list has pages too.
const GROUPS: u64 = 3;

fn toggle<T: PartialEq + Clone>(list: &mut Vec<T>, item: &T) {
    if list.contains(item) {
        list.retain(|x| x != item);
    } else {
        list.push(item.clone());
    }
}

struct Superset;

impl Superset {
    /// The users a change may pick: all but the service account.
    fn others(sim: &superset::Handle) -> Vec<superset::SimUser> {
        sim.users().into_iter().filter(|u| u.id != 1).collect()
    }
}

impl Kind for Superset {
    type User = User;
    type Handle = superset::Handle;
    type Change = SupersetChange;
    const SERVICE_ACCOUNT: &'static str = "admin";
    /// The simulator counts no refused logins, so a case writes only the right password.
    const PASSWORDS: &'static [&'static str] = &["admin"];

    fn password_file(h: &Harness) -> std::path::PathBuf {
        h.dir.path().join("password")
    }

    fn refused_logins(_: &superset::Handle) -> u32 {
        0
    }

    fn apply(sim: &superset::Handle, change: &SupersetChange, n: u32) {
        use SupersetChange::*;
        let others = Superset::others(sim);
        match *change {
            Create { alpha } => {
                let role = if alpha {
                    superset::ALPHA_ROLE
                } else {
                    superset::GAMMA_ROLE
                };
                sim.add_user(&format!("new{n}"), "pw", &[role]);
            }
            Delete(p) => {
                if let Some(u) = pick(&others, p) {
                    sim.delete_user(u.id);
                }
            }
            DeleteAndCreate(p) => {
                if let Some(u) = pick(&others, p) {
                    sim.delete_user(u.id);
                    sim.add_user(&format!("new{n}"), "pw", &[superset::GAMMA_ROLE]);
                }
            }
            DeleteAndReuseId => {
                if let Some(u) = others.last() {
                    sim.delete_user(u.id);
                    sim.add_user(&format!("reuse{n}"), "pw", &[superset::GAMMA_ROLE]);
                }
            }
            Rename(p) => {
                if let Some(u) = pick(&others, p) {
                    sim.update_user(u.id, |u| {
                        u.username = format!("renamed{n}");
                        u.first_name = format!("First{n}");
                    });
                }
            }
            Email(p) => {
                if let Some(u) = pick(&others, p) {
                    sim.update_user(u.id, |u| u.email = format!("mail{n}@example.com"));
                }
            }
            ToggleActive(p) => {
                if let Some(u) = pick(&others, p) {
                    sim.update_user(u.id, |u| u.active = !u.active);
                }
            }
            RoleThroughUser(p, role) => {
                if let Some(u) = pick(&others, p) {
                    sim.update_user(u.id, |u| toggle(&mut u.roles, &role));
                }
            }
            RoleThroughRoles(p, role) => {
                if let Some(u) = pick(&others, p) {
                    let mut members: Vec<u64> = sim
                        .users()
                        .into_iter()
                        .filter(|m| m.roles.contains(&role))
                        .map(|m| m.id)
                        .collect();
                    toggle(&mut members, &u.id);
                    sim.set_role_members(role, &members);
                }
            }
            Group(p, group) => {
                if let Some(u) = pick(&others, p) {
                    let mut members: Vec<u64> = sim
                        .users()
                        .into_iter()
                        .filter(|m| m.groups.contains(&group))
                        .map(|m| m.id)
                        .collect();
                    toggle(&mut members, &u.id);
                    sim.set_group_members(group, &members);
                }
            }
        }
    }

    fn world(sim: &superset::Handle) -> World {
        sim.users()
            .into_iter()
            .map(|u| {
                let mut roles = u.roles.clone();
                roles.sort_unstable();
                let mut groups = u.groups.clone();
                groups.sort_unstable();
                let fact = json!({
                    "id": u.id,
                    "username": u.username,
                    "first_name": u.first_name,
                    "last_name": u.last_name,
                    "email": u.email,
                    "active": u.active,
                    "roles": roles,
                    "groups": groups,
                    // The simulator runs at UTC (SimOptions::utc_offset_minutes 0).
                    "created_on": u.created_on.and_utc().timestamp_micros(),
                    "changed_on": u.changed_on.and_utc().timestamp_micros(),
                });
                (u.id.to_string(), fact)
            })
            .collect()
    }

    /// Login counters and `created_by`/`changed_by` are left out: no change here moves them
    /// but the service account's own logins.
    fn fact(u: &User) -> Fact {
        let ids = |list: &[rollcall::user::Member]| -> Vec<Value> {
            list.iter().map(|m| json!(m.id)).collect()
        };
        json!({
            "id": u.id,
            "username": u.username,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "email": u.email,
            "active": u.active,
            "roles": ids(&u.roles),
            "groups": ids(&u.groups),
            "created_on": u.created_on.timestamp_micros(),
            "changed_on": u.changed_on.timestamp_micros(),
        })
    }

    fn incarnation(fact: &Fact) -> &Value {
        &fact["created_on"]
    }

    /// `changed_on` moves with no change rollcall reports (a role set back as it was, a no-op
    /// save, docs/superset.md S28), so only the store keeps up with it.
    fn reported(mut fact: Fact) -> Fact {
        if let Some(fact) = fact.as_object_mut() {
            fact.remove("changed_on");
        }
        fact
    }

    fn before_request(
        sim: &superset::Handle,
        skip: u32,
        change: impl FnOnce(&superset::Handle) + Send + 'static,
    ) {
        sim.before_request("", skip, change);
    }

    fn cancel_changes(sim: &superset::Handle) -> usize {
        sim.cancel_changes()
    }

    fn requests(sim: &superset::Handle) -> usize {
        sim.requests().len()
    }
}

/// A Superset answering like `release` with `case.users` users besides admin, each in Gamma
/// or Alpha and some in one of [`GROUPS`] groups, and a harness reading it.
async fn superset(release: Release, case: &Case<SupersetChange>) -> (Sim, Harness) {
    let sim = Sim::start(SimOptions {
        release,
        ..SimOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=case.users {
        let role = if i % 2 == 0 {
            superset::ALPHA_ROLE
        } else {
            superset::GAMMA_ROLE
        };
        ids.push(sim.add_user(&format!("u{i}"), "pw", &[role]));
    }
    for g in 1..=GROUPS {
        let members: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| id % GROUPS == g - 1)
            .collect();
        sim.add_group(&format!("g{g}"), &members);
    }
    let knobs = SupersetKnobs(case.knobs);
    let mut config = format!(
        "emit_initial_snapshot = {}\naction_log = false\npage_size = {}\n",
        case.observe, case.page_size
    );
    if knobs.hourly_membership() {
        config.push_str("membership_interval = \"1h\"\n");
    }
    if knobs.no_overlap() {
        config.push_str("incremental_overlap = \"0s\"\n");
    }
    let h = Harness::new(&sim.url, &config);
    (sim, h)
}

/// How a Superset case varies its settings, from [`Case::knobs`].
#[derive(Debug, Clone, Copy)]
struct SupersetKnobs(u8);

impl SupersetKnobs {
    /// Which of the property's releases.
    fn release(self, of: &[Release]) -> Release {
        of[usize::from(self.0 & 1) % of.len()]
    }
    /// Membership compared by incremental polls once an hour, not at each: in these runs,
    /// only by full reads.
    fn hourly_membership(self) -> bool {
        self.0 & 2 != 0
    }
    /// Incremental polls re-read nothing before the high-water marks.
    fn no_overlap(self) -> bool {
        self.0 & 4 != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Kylin
// ---------------------------------------------------------------------------------------------

/// Where a new Kylin user sorts in the list, which is by name ignoring case (docs/kylin.md K14).
#[derive(Debug, Clone, Copy)]
enum Place {
    First,
    Middle,
    Last,
}

/// A change an administrator or a failing login makes to a Kylin (docs/kylin.md K24–K32, K52).
#[derive(Debug, Clone)]
enum KylinChange {
    Create(Place),
    Delete(Pick),
    /// One user deleted and another created at once (two administrators): `total_size`
    /// stays.
    Replace(Pick, Place),
    /// Deleted and created again under the same name: a new uuid (K23, K45).
    Recreate(Pick),
    ToggleDisabled(Pick),
    Group(Pick, bool),
    /// A login with a wrong password; the third in a row locks (K30).
    FailLogin(Pick),
    Lock(Pick),
    /// An admin's password reset: clears the lock and its counters (K52).
    PasswordReset(Pick),
}

fn kylin_change() -> impl Strategy<Value = KylinChange> + Clone {
    use KylinChange::*;
    let place = prop_oneof![Just(Place::First), Just(Place::Middle), Just(Place::Last)];
    prop_oneof![
        place.clone().prop_map(Create),
        any::<Pick>().prop_map(Delete),
        (any::<Pick>(), place).prop_map(|(p, at)| Replace(p, at)),
        any::<Pick>().prop_map(Recreate),
        any::<Pick>().prop_map(ToggleDisabled),
        (any::<Pick>(), any::<bool>()).prop_map(|(p, g)| Group(p, g)),
        any::<Pick>().prop_map(FailLogin),
        any::<Pick>().prop_map(Lock),
        any::<Pick>().prop_map(PasswordReset),
    ]
}

struct Kylin;

impl Kind for Kylin {
    type User = KylinUser;
    type Handle = kylin::Handle;
    type Change = KylinChange;
    const SERVICE_ACCOUNT: &'static str = kylin::ADMIN;
    /// The right one and two wrong ones: without `retry-login`, two wrong ones make at most
    /// two refusals in a row, so Kylin never locks the account (K30).
    const PASSWORDS: &'static [&'static str] = &[kylin::ADMIN_PASSWORD, "wrong-1", "wrong-2"];

    fn password_file(h: &Harness) -> std::path::PathBuf {
        h.dir.path().join("test.password")
    }

    fn refused_logins(sim: &kylin::Handle) -> u32 {
        sim.failed_logins(kylin::ADMIN)
    }

    fn apply(sim: &kylin::Handle, change: &KylinChange, n: u32) {
        use KylinChange::*;
        let others: Vec<String> = sim
            .users()
            .into_iter()
            .map(|u| u.username)
            .filter(|u| u != kylin::ADMIN)
            .collect();
        // Each change a second after the last: times tell the changes apart, as they would.
        sim.advance(std::time::Duration::from_secs(1));
        let create = |place| {
            let prefix = match place {
                Place::First => "aa",
                Place::Middle => "kb",
                Place::Last => "zz_new",
            };
            sim.add_user(&format!("{prefix}{n}"), kylin::SEEDED_PASSWORD, &[]);
        };
        match *change {
            Create(place) => create(place),
            Delete(p) => {
                if let Some(name) = pick(&others, p) {
                    sim.delete_user(&name);
                }
            }
            Replace(p, place) => {
                if let Some(name) = pick(&others, p) {
                    sim.delete_user(&name);
                    create(place);
                }
            }
            Recreate(p) => {
                if let Some(name) = pick(&others, p) {
                    sim.delete_user(&name);
                    sim.add_user(&name, kylin::SEEDED_PASSWORD, &[ROLE_ANALYST]);
                }
            }
            ToggleDisabled(p) => {
                if let Some(name) = pick(&others, p) {
                    let disabled = sim.user(&name).is_some_and(|u| u.disabled);
                    sim.set_disabled(&name, !disabled);
                }
            }
            Group(p, modeler) => {
                if let Some(name) = pick(&others, p) {
                    let group = if modeler { ROLE_MODELER } else { ROLE_ANALYST };
                    let mut groups = sim.user(&name).map(|u| u.authorities).unwrap_or_default();
                    toggle(&mut groups, &group.to_string());
                    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                    sim.set_authorities(&name, &groups);
                }
            }
            FailLogin(p) => {
                if let Some(name) = pick(&others, p) {
                    sim.fail_login(&name);
                }
            }
            Lock(p) => {
                if let Some(name) = pick(&others, p) {
                    sim.lock(&name, 3);
                }
            }
            PasswordReset(p) => {
                if let Some(name) = pick(&others, p) {
                    sim.change_password(&name, &format!("Passw0rd!{n}"));
                }
            }
        }
    }

    /// The user as rollcall's Kylin source reads it (`0` times as none, `ALL_USERS` left out,
    /// groups by name): every field, so that each write tells its state apart (K24).
    fn world(sim: &kylin::Handle) -> World {
        let time = |ms: i64| (ms > 0).then_some(ms);
        sim.users()
            .into_iter()
            .map(|u| {
                let mut groups: Vec<String> = u
                    .authorities
                    .iter()
                    .filter(|a| *a != kylin::ALL_USERS)
                    .cloned()
                    .collect();
                groups.sort_unstable();
                let fact = json!({
                    "username": u.username,
                    "uuid": u.uuid,
                    "disabled": u.disabled,
                    "groups": groups,
                    "default_password": u.default_password,
                    "locked": u.locked,
                    "locked_time": time(u.locked_time),
                    "wrong_time": u.wrong_time,
                    "first_login_failed_time": time(u.first_login_failed_time),
                    "create_time": time(u.create_time),
                    "last_modified": time(u.last_modified),
                });
                (u.username, fact)
            })
            .collect()
    }

    fn fact(u: &KylinUser) -> Fact {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
        let groups: Vec<&str> = u.groups.iter().map(|g| g.name.as_str()).collect();
        json!({
            "username": u.username,
            "uuid": u.uuid,
            "disabled": u.disabled,
            "groups": groups,
            "default_password": u.default_password,
            "locked": u.locked,
            "locked_time": time(u.locked_time),
            "wrong_time": u.wrong_time,
            "first_login_failed_time": time(u.first_login_failed_time),
            "create_time": time(u.create_time),
            "last_modified": time(u.last_modified),
        })
    }

    fn incarnation(fact: &Fact) -> &Value {
        &fact["uuid"]
    }

    /// Every write of a Kylin user is told (K24, K52), even one that shows nothing.
    fn reported(fact: Fact) -> Fact {
        fact
    }

    fn before_request(
        sim: &kylin::Handle,
        skip: u32,
        change: impl FnOnce(&kylin::Handle) + Send + 'static,
    ) {
        sim.before_request("", skip, change);
    }

    fn cancel_changes(sim: &kylin::Handle) -> usize {
        sim.cancel_changes()
    }

    fn requests(sim: &kylin::Handle) -> usize {
        sim.requests().len()
    }
}

/// A Kylin with ADMIN, `case.users` users `ka1`… and `svc`, and a harness reading it.
async fn kylin_sim(case: &Case<KylinChange>) -> (KylinSim, Harness) {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for i in 1..=case.users {
        sim.add_user(&format!("ka{i}"), kylin::SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    sim.add_user("svc", kylin::SEEDED_PASSWORD, &[ROLE_MODELER]);
    let h = Harness::kylin(
        &sim.url,
        &format!(
            "emit_initial_snapshot = {}\npage_size = {}",
            case.observe, case.page_size
        ),
    );
    (sim, h)
}

// ---------------------------------------------------------------------------------------------
// The run and its checks
// ---------------------------------------------------------------------------------------------

/// What the events told so far, and what every cycle is checked against.
struct Oracle<K: Kind> {
    history: History,
    /// Each user's state as the events so far leave it.
    told: BTreeMap<String, K::User>,
    /// Each event delivered so far, by id.
    delivered: HashMap<String, Value>,
    opts: DiffOptions,
    /// A number for each change, for the names it makes.
    serial: Arc<AtomicU32>,
}

impl<K: Kind> Oracle<K> {
    fn new(sim: &K::Handle) -> Oracle<K> {
        let history = History::default();
        history.push(K::world(sim));
        Oracle {
            history,
            told: BTreeMap::new(),
            delivered: HashMap::new(),
            opts: DiffOptions {
                service_account: Some(K::SERVICE_ACCOUNT.to_owned()),
            },
            serial: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Make `change` now, and note the state it leaves.
    fn change_now(&self, sim: &K::Handle, change: &K::Change) {
        K::apply(sim, change, self.serial.fetch_add(1, Ordering::SeqCst));
        self.history.push(K::world(sim));
    }

    /// Note the source's state if something other than a change (rollcall's own refused
    /// login) moved it.
    fn note(&self, sim: &K::Handle) {
        let now = K::world(sim);
        let moved = self.history.0.lock().unwrap().last() != Some(&now);
        if moved {
            self.history.push(now);
        }
    }

    /// Make `change` just before request `skip` of what follows, noting the state it leaves.
    fn change_before(&self, sim: &K::Handle, skip: u32, change: K::Change) {
        let history = self.history.clone();
        let serial = self.serial.clone();
        K::before_request(sim, skip, move |s| {
            K::apply(s, &change, serial.fetch_add(1, Ordering::SeqCst));
            history.push(K::world(s));
        });
    }

    /// Check the events of one cycle, which began when the history held `from + 1` states;
    /// returns each broken property, one line each. After a crash during delivery
    /// (`redelivery`), an event may come again, the same to the byte: at-least-once.
    fn check_cycle(&mut self, from: usize, events: &[Value], redelivery: bool) -> Vec<String> {
        let window = self.history.since(from);
        let mut broken = Vec::new();
        let mut fresh = Vec::new();
        for e in events {
            let id = e["id"].as_str().unwrap_or_default().to_owned();
            match self.delivered.get(&id) {
                None => {
                    self.delivered.insert(id, e.clone());
                    fresh.push(e.clone());
                }
                Some(first) if first != e => broken.push(format!(
                    "event id {id} delivered twice with different contents: {} and {}",
                    brief(first),
                    brief(e)
                )),
                Some(_) if !redelivery => {
                    broken.push(format!("event id {id} delivered twice: {}", brief(e)));
                }
                Some(_) => {}
            }
        }
        let events = &fresh[..];
        // Events stating the same state of the same user belong to one change of it; a
        // deletion (which states the last state known) is a change of its own.
        let deleted = |e: &Value| e["type"] == "user.deleted";
        let mut groups: Vec<&[Value]> = Vec::new();
        let mut rest = events;
        while let Some(first) = rest.first() {
            let n = if deleted(first) {
                1
            } else {
                rest.iter()
                    .take_while(|e| {
                        !deleted(e)
                            && e["subject"] == first["subject"]
                            && e["data"]["user"] == first["data"]["user"]
                    })
                    .count()
            };
            groups.push(&rest[..n]);
            rest = &rest[n..];
        }
        for group in groups {
            broken.extend(self.check_group(group, &window));
        }
        broken
    }

    fn check_group(&mut self, group: &[Value], window: &[World]) -> Vec<String> {
        let mut broken = Vec::new();
        let first = &group[0];
        let subject = first["subject"].as_str().unwrap_or_default().to_owned();
        let types: Vec<&str> = group
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default())
            .collect();
        let user: K::User = match serde_json::from_value(first["data"]["user"].clone()) {
            Ok(u) => u,
            Err(e) => return vec![format!("{}: data.user unreadable: {e}", brief(first))],
        };
        let fact = K::fact(&user);
        let before = self.told.get(&subject).cloned();
        if types == ["user.deleted"] {
            // Absent, or another account under its key, at some moment of the cycle.
            let absent = window.iter().any(|w| {
                w.get(&subject)
                    .is_none_or(|now| K::incarnation(now) != K::incarnation(&fact))
            });
            if !absent {
                broken.push(format!(
                    "INVENTED: {} but {subject} (this account) existed in each of the cycle's {} states",
                    brief(first),
                    window.len()
                ));
            }
            let said = |u: &K::User| K::reported(K::fact(u));
            if before.as_ref().map(said) != Some(said(&user)) {
                broken.push(format!(
                    "CHAIN: {} of a record the events never left it in (they left {})",
                    brief(first),
                    before.map_or("nothing".to_owned(), |b| K::fact(&b).to_string())
                ));
            }
            self.told.remove(&subject);
            return broken;
        }
        if !window.iter().any(|w| w.get(&subject) == Some(&fact)) {
            broken.push(format!(
                "INVENTED: {types:?} of {subject} state {fact}, which it held in none of the cycle's {} states",
                window.len()
            ));
        }
        let mut expected = Vec::new();
        if types == ["user.observed"] {
            if before.is_some() {
                broken.push(format!("CHAIN: {} of a user already told", brief(first)));
            }
        } else {
            diff::change(before.as_ref(), Some(&user), &self.opts, &mut expected);
            let derived: Vec<(&str, Value)> = expected
                .iter()
                .map(|d| (d.event_type.as_str(), reported::<K>(&d.data)))
                .collect();
            let got: Vec<(&str, Value)> = group
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or_default(),
                        reported::<K>(&e["data"]),
                    )
                })
                .collect();
            if derived != got {
                broken.push(format!(
                    "CHAIN: {subject} got {types:?} but from the state the events left ({}) to {fact} the diff gives {:?}",
                    before.map_or("nothing".to_owned(), |b| K::fact(&b).to_string()),
                    derived.iter().map(|d| d.0).collect::<Vec<_>>()
                ));
            }
        }
        self.told.insert(subject, user);
        broken
    }

    /// After a first cycle that stored the users silently (it emitted nothing, `events`): each
    /// record it stored held at some moment of it (the history from `from`), and is where
    /// the events of the next cycles start from.
    fn adopt(
        &mut self,
        from: usize,
        events: &[Value],
        stored: BTreeMap<String, K::User>,
    ) -> Vec<String> {
        let window = self.history.since(from);
        let mut broken: Vec<String> = events
            .iter()
            .map(|e| format!("EVENT FROM A SILENT FIRST CYCLE: {}", brief(e)))
            .collect();
        for (key, user) in &stored {
            let fact = K::fact(user);
            if !window.iter().any(|w| w.get(key) == Some(&fact)) {
                broken.push(format!(
                    "INVENTED: the first cycle stored {key} as {fact}, which it held in none of the cycle's {} states",
                    window.len()
                ));
            }
        }
        self.told = stored;
        broken
    }

    /// After the cycles without changes: the events and the store tell what the source holds.
    fn check_settled(&self, world: &World, stored: &BTreeMap<String, K::User>) -> Vec<String> {
        let mut broken = Vec::new();
        let reported: World = world
            .iter()
            .map(|(k, f)| (k.clone(), K::reported(f.clone())))
            .collect();
        let told: World = self
            .told
            .iter()
            .map(|(k, u)| (k.clone(), K::reported(K::fact(u))))
            .collect();
        let stored: World = stored
            .iter()
            .map(|(k, u)| (k.clone(), K::fact(u)))
            .collect();
        for (what, facts, world) in [
            ("the events", &told, &reported),
            ("the store", &stored, world),
        ] {
            for key in world
                .keys()
                .chain(facts.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let (source, said) = (world.get(key), facts.get(key));
                if source != said {
                    broken.push(format!(
                        "LOST: after settling, {what} say {key} is {} but the source holds {}",
                        said.map_or("absent".to_owned(), Value::to_string),
                        source.map_or("nothing".to_owned(), Value::to_string),
                    ));
                }
            }
        }
        broken
    }
}

/// An event's `data` with its `user` and `before` cut down to what the events are meant to
/// keep up to date ([`Kind::reported`]).
fn reported<K: Kind>(data: &Value) -> Value {
    let mut data = data.clone();
    for key in ["user", "before"] {
        if let Some(user) = data
            .get(key)
            .and_then(|u| serde_json::from_value::<K::User>(u.clone()).ok())
        {
            data[key] = K::reported(K::fact(&user));
        }
    }
    data
}

/// The users the store holds, by subject.
fn stored<K: Kind>(h: &mut Harness) -> Result<BTreeMap<String, K::User>, String> {
    Ok(h.look_into_store(|store| store.snapshot::<K::User>("test"))
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(k, u)| (k.to_string(), u))
        .collect())
}

/// `type subject` of an event, for messages.
fn brief(e: &Value) -> String {
    format!(
        "{} {}",
        e["type"].as_str().unwrap_or("?"),
        e["subject"].as_str().unwrap_or("?")
    )
}

/// The full error of a failed cycle, causes included.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

/// What a run came to when a property broke: the cycles, then what broke.
fn failure(log: &[String], broken: &[String]) -> String {
    log.iter()
        .chain(broken)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failure a cycle may end in while changes keep landing: Kylin's list moved under each of
/// its reads (docs/kylin.md K14). Nothing is stored then, and the next cycle reads again.
fn allowed_failure(text: &str) -> bool {
    text.contains("changed during each of")
}

/// Run `case`'s cycles against `sim` through `h`, checking after each; then cycles without
/// changes, one of them full, and the settled state.
async fn run<K: Kind>(
    sim: &K::Handle,
    h: &mut Harness,
    case: &Case<K::Change>,
) -> Result<(), String> {
    let mut oracle = Oracle::<K>::new(sim);
    let mut logins = Logins::default();
    let mut log = Vec::new();
    // Until a first cycle stores the users silently: what it stored is what the events
    // leave (the next cycles tell changes from there).
    let mut silent = !case.observe;
    // Where the states begin that events not delivered yet may state: those of a cycle the
    // process died in come with a later cycle's delivery.
    let mut undelivered: Option<usize> = None;
    // Whether events may come again: the process died while delivering them, and no cycle has
    // delivered since.
    let mut redelivery = false;
    let mut carried = Vec::new();
    let cycle_of = |full| CycleOptions {
        full,
        confirm_deletes: false,
    };
    for (n, step) in case.steps.iter().enumerate() {
        if let Some(p) = step.password {
            std::fs::write(K::password_file(h), format!("{}\n", K::PASSWORDS[p])).unwrap();
            logins.set_password(p);
        }
        for (when, change) in &step.changes {
            match *when {
                When::Between => oracle.change_now(sim, change),
                When::Before(k) => oracle.change_before(sim, k, change.clone()),
            }
        }
        let from = *undelivered.get_or_insert(oracle.history.len() - 1);
        let asked = K::requests(sim);
        let result = match step.end {
            End::DiesReading(k) => {
                let (killed, dead) = tokio::sync::oneshot::channel();
                K::before_request(sim, k, move |_| {
                    let _ = killed.send(());
                });
                tokio::select! {
                    biased;
                    _ = dead => None,
                    result = h.try_cycle(cycle_of(step.full)) => Some(result),
                }
            }
            _ => Some(h.try_cycle(cycle_of(step.full)).await),
        };
        let unmade = K::cancel_changes(sim);
        let accepted = logins.cycle();
        // A refused login moves the service account's own record (K30): a state of the
        // source like any other.
        oracle.note(sim);
        // What the cycle ended in: its words for the log, and whether the process died
        // (leaving events to come with a later cycle) or stopped.
        let (end, died, stopped) = match step.end {
            End::DiesDelivering {
                written,
                acked,
                torn,
            } if result.as_ref().is_some_and(Result::is_ok) => {
                h.die_delivering(written.into(), acked.into(), torn);
                (", then died delivering", true, true)
            }
            End::Stops => {
                h.stop();
                (", then stopped", false, true)
            }
            End::DiesReading(_) if result.is_none() => {
                h.stop();
                (", died reading", true, true)
            }
            _ => ("", false, false),
        };
        if stopped {
            logins.restart();
        }
        if !died {
            undelivered = None;
        }
        // What a process that died delivering wrote is checked with what the next delivery
        // adds: one change's events may be split across the two.
        let mut events = std::mem::take(&mut carried);
        events.extend(h.new_events());
        let what = match (n, step.full) {
            (0, _) => "the first",
            (_, true) => "full",
            (_, false) => "incremental",
        };
        let written = step.password.map_or(String::new(), |p| {
            format!(", password {:?}", K::PASSWORDS[p])
        });
        log.push(format!(
            "cycle {n} ({what}{written}{end}): {} requests, {} events, {} states, {unmade} changes never due",
            K::requests(sim) - asked,
            events.len(),
            oracle.history.len() - from,
        ));
        let refused = logins.failed();
        if K::refused_logins(sim) != refused {
            return Err(format!(
                "{}\nthe source refused {} logins where {refused} were due (one per wrong password, ever)",
                log.join("\n"),
                K::refused_logins(sim),
            ));
        }
        if let Some(Err(e)) = &result {
            let text = chain(e);
            let expected = if accepted {
                allowed_failure(&text)
            } else {
                text.contains("refused")
            };
            if !expected {
                return Err(format!("{}\ncycle {n} failed: {text}", log.join("\n")));
            }
        }
        if !accepted && result.as_ref().is_some_and(Result::is_ok) {
            return Err(format!(
                "{}\ncycle {n} succeeded with a password the source refuses",
                log.join("\n")
            ));
        }
        // What a died delivery wrote comes again at the next delivery, and a cycle that died
        // reading delivered nothing.
        let dies_delivering = matches!(step.end, End::DiesDelivering { .. }) && died;
        let mut broken = Vec::new();
        if dies_delivering || redelivery && died {
            redelivery = true;
            carried = events.clone();
        } else {
            broken = oracle.check_cycle(from, &events, redelivery);
            redelivery = false;
        }
        if silent && result.as_ref().is_some_and(Result::is_ok) {
            silent = false;
            broken.extend(oracle.adopt(from, &events, stored::<K>(h)?));
        }
        if !broken.is_empty() {
            return Err(failure(&log, &broken));
        }
    }
    // Settle, with the right password: an incremental cycle, then full ones until none holds
    // deletions back.
    std::fs::write(K::password_file(h), format!("{}\n", K::PASSWORDS[0])).unwrap();
    for (n, full) in [false, true, true].into_iter().enumerate() {
        let from = *undelivered.get_or_insert(oracle.history.len() - 1);
        let report = h
            .try_cycle(cycle_of(full))
            .await
            .map_err(|e| {
                format!(
                    "{}\nsettling cycle {n} failed: {}",
                    log.join("\n"),
                    chain(&e)
                )
            })?
            .remove(0);
        undelivered = None;
        oracle.note(sim);
        let mut events = std::mem::take(&mut carried);
        events.extend(h.new_events());
        log.push(format!("settling cycle {n}: {} events", events.len()));
        let mut broken = oracle.check_cycle(from, &events, redelivery);
        redelivery = false;
        if silent {
            silent = false;
            broken.extend(oracle.adopt(from, &events, stored::<K>(h)?));
        }
        if !broken.is_empty() {
            return Err(failure(&log, &broken));
        }
        if full && report.held_deletions == 0 {
            break;
        }
    }
    if K::refused_logins(sim) != logins.failed() {
        return Err(format!(
            "{}\nafter settling, the source refused {} logins where {} were due",
            log.join("\n"),
            K::refused_logins(sim),
            logins.failed()
        ));
    }
    let broken = oracle.check_settled(&K::world(sim), &stored::<K>(h)?);
    if !broken.is_empty() {
        return Err(failure(&log, &broken));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

/// Cases per property unless `ROLLCALL_PROPTEST_CASES` says otherwise: the file runs in about
/// two minutes on two cores.
const DEFAULT_CASES: u32 = 700;

/// Run `property` over `strategy`, with the cases and seed the environment asks for (printed).
fn check<C: Debug + Clone>(
    name: &str,
    strategy: impl Strategy<Value = Case<C>>,
    property: impl Fn(&Case<C>) -> Result<(), String>,
) {
    let (mut runner, seed) =
        support::generated::runner(&format!("interleave::{name}"), DEFAULT_CASES);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |case| {
        property(&case).map_err(TestCaseError::fail)
    });
    eprintln!("{name}: {:.1?}", started.elapsed());
    if let Err(e) = result {
        panic!("{name} (seed {seed}) failed; the smallest case proptest found:\n{e}");
    }
}

/// One case on a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn superset_property(
    releases: &'static [Release],
) -> impl Fn(&Case<SupersetChange>) -> Result<(), String> {
    move |case| {
        block_on(async {
            let knobs = SupersetKnobs(case.knobs);
            let release = knobs.release(releases);
            let (sim, mut h) = superset(release, case).await;
            run::<Superset>(&sim, &mut h, case).await.map_err(|e| {
                format!(
                    "release {release:?}, membership compared {}, overlap {}:\n{e}",
                    if knobs.hourly_membership() {
                        "hourly"
                    } else {
                        "at each poll"
                    },
                    if knobs.no_overlap() { "0s" } else { "60s" },
                )
            })
        })
    }
}

#[test]
fn superset_pages_by_index_never_invent_lose_or_repeat_an_event() {
    check(
        "superset_pages_by_index",
        case(12, Superset::PASSWORDS.len(), superset_change()),
        superset_property(&[Release::V4_1, Release::V5_0]),
    );
}

#[test]
fn superset_keyset_reads_never_invent_lose_or_repeat_an_event() {
    check(
        "superset_keyset",
        case(12, Superset::PASSWORDS.len(), superset_change()),
        superset_property(&[Release::V6_0, Release::V6_1]),
    );
}

#[test]
fn kylin_reads_never_invent_lose_or_repeat_an_event() {
    check(
        "kylin",
        case(4, Kylin::PASSWORDS.len(), kylin_change()),
        |case| {
            block_on(async {
                let (sim, mut h) = kylin_sim(case).await;
                run::<Kylin>(&sim, &mut h, case).await
            })
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The smallest cases the properties found, each a test of its own
// ---------------------------------------------------------------------------------------------

/// `(type, subject)` of each event.
fn kinds(events: &[Value]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["subject"].as_str().unwrap()))
        .collect()
}

/// Superset 5.0, pages of two, `emit_initial_snapshot`: user 2 is deleted just before the
/// first cycle reads page 1, which shifts user 3 onto page 0; the read is repeated and user 2
/// confirmed gone by id. The cycle had already derived its `user.observed`, so it must tell
/// the deletion too, or consumers hold a user the source and the store no longer have.
#[tokio::test]
async fn a_user_the_first_cycle_observed_and_then_confirmed_deleted_is_told_deleted() {
    let sim = Sim::start(SimOptions {
        release: Release::V5_0,
        ..SimOptions::default()
    })
    .await;
    for name in ["u1", "u2", "u3"] {
        sim.add_user(name, "pw", &[superset::GAMMA_ROLE]);
    }
    let mut h = Harness::new(
        &sim.url,
        "emit_initial_snapshot = true\naction_log = false\npage_size = 2",
    );
    // The users requests of a first cycle: `_info`, then page 0, then page 1.
    sim.before_request("/api/v1/security/users/", 2, |s| {
        assert!(s.delete_user(2));
    });
    h.cycle().await;
    assert_eq!(
        kinds(&h.new_events()),
        [
            ("user.observed", "1"),
            ("user.observed", "2"),
            ("user.deleted", "2"),
            ("user.observed", "3"),
            ("user.observed", "4"),
        ]
    );
    h.full().await;
    assert_eq!(kinds(&h.new_events()), []);
}

/// Kylin, pages of two, `emit_initial_snapshot`: before the first cycle reads page 2, ka1
/// fails a login and `aa_new` is created, which sorts first and shifts every page. The read is
/// repeated and finds ka1 with its failed login. The cycle had told ka1's state with its
/// `user.observed`, so it must tell the failed login too, or consumers hold a state the
/// source and the store no longer have.
#[tokio::test]
async fn a_user_the_first_cycle_reads_twice_has_its_change_between_the_reads_told() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    for name in ["ka1", "ka2", "ka3", "ka4", "ka5", "svc"] {
        sim.add_user(name, kylin::SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    let mut h = Harness::kylin(&sim.url, "emit_initial_snapshot = true\npage_size = 2");
    sim.before_request("page_offset=2", 0, |s| {
        s.fail_login("ka1");
        s.add_user("aa_new", kylin::SEEDED_PASSWORD, &[]);
    });
    h.cycle().await;
    let events = h.new_events();
    let ka1: Vec<&str> = kinds(&events)
        .into_iter()
        .filter(|(_, subject)| *subject == "ka1")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(ka1, ["user.observed", "user.login_failed"]);
    assert_eq!(events.len(), 9, "ADMIN, aa_new, ka1 twice, ka2 … ka5, svc");
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), []);
}

/// Kylin: svc, whose password was already changed once, fails a login (told as
/// `user.login_failed`), then an admin resets its password, which clears the failed-login
/// streak; nothing was locked, so no unlock tells of it. The store takes the new record, so
/// the events must tell it too, or they leave svc with a failure the source no longer holds
/// (docs/kylin.md K50, K52).
#[tokio::test]
async fn a_failed_login_streak_cleared_without_a_lock_is_told_as_an_update() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_user("svc", kylin::SEEDED_PASSWORD, &[ROLE_MODELER]);
    sim.change_password("svc", "Passw0rd!1");
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    sim.fail_login("svc");
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [("user.login_failed", "svc")]);
    sim.change_password("svc", "Passw0rd!2");
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [("user.updated", "svc")]);
    assert_eq!(events[0]["data"]["user"]["wrong_time"], 0);
    assert_eq!(events[0]["data"]["changes"], json!([]));
}

/// Superset 5.0, pages of two: between page 0 and page 1 of an incremental poll's newest-first
/// read, user 2 is deactivated and user 7 created. Both move to the front, so page 1 answers
/// the two users page 0 had: a shift, not a server ignoring `page`. The poll goes on (the two
/// moved users are newer than anything it read, so the next poll reads them).
#[tokio::test]
async fn a_newest_first_page_shifted_by_two_changes_is_not_taken_for_an_ignored_page() {
    let sim = Sim::start(SimOptions {
        release: Release::V5_0,
        ..SimOptions::default()
    })
    .await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        sim.add_user(name, "pw", &[superset::GAMMA_ROLE]);
    }
    let mut h = Harness::new(&sim.url, "action_log = false\npage_size = 2");
    h.cycle().await;
    // The incremental poll's first request is page 0 of the users by `changed_on`.
    sim.before_request("", 1, |s| {
        s.update_user(2, |u| u.active = false);
        s.add_user("u6", "pw", &[superset::GAMMA_ROLE]);
    });
    h.cycle().await;
    h.cycle().await;
    let events = h.new_events();
    let mut told = kinds(&events);
    told.sort_unstable();
    assert_eq!(told, [("user.created", "7"), ("user.deactivated", "2")]);
}
