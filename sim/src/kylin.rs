//! An in-process simulator of Apache Kylin 5's user-management REST API: `/kylin/api/user`
//! (list, create, update, delete, password) and the `/kylin/api/user_group` routes that change
//! users' groups, behind HTTP Basic authentication with sessions and Kylin's login lock.
//!
//! It is a real HTTP server (axum on 127.0.0.1, ephemeral port), so a client is exercised end to
//! end. Behaviour follows `docs/kylin.md` (Kylin 5 read from source, commit 8118afb); comments
//! cite its sections as `K12` (= `docs/kylin.md#k12`) and the Kylin file in its abbreviations
//! (`NUC` = NUserController, `LLAP` = LimitLoginAuthenticationProvider, …). Where the source
//! says more than the document, the source wins and the comment cites the file.
//!
//! The simulator owns: the user store (a `BTreeMap` keyed by the case-folded username, which is
//! both Kylin's uniqueness rule and its list order), the group names, the sessions, a clock the
//! test controls (`advance`), recorded requests and injectable faults. Tests reach into the state
//! directly through the sim's `Handle` (`add_user`, `set_disabled`, `lock`, …) to make changes
//! the way an administrator or a failing login would, now or just before a chosen request is
//! answered (`before_request`).
//!
//! Not modelled: LDAP/SAML profiles, project ACLs, the internal (`kylin-v4+json`) group
//! controller, `/api/user/authentication`, `/api/user/update_user`, `/api/user/refresh`,
//! password hashing (passwords are kept in clear), response compression.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------------------------

/// The only `Accept` value the public controller serves (K8, OUC:55, HC:35).
pub const PUBLIC_ACCEPT: &str = "application/vnd.apache.kylin-v4-public+json";
/// The internal controller's `Accept` value; it answers with another user shape (NUC:113).
pub const INTERNAL_ACCEPT: &str = "application/vnd.apache.kylin-v4+json";
/// The built-in super admin (K10, KUS:197-199). Its password is `ADMIN_PASSWORD` unless
/// `KylinOptions::admin_password` says otherwise.
pub const ADMIN: &str = "ADMIN";
/// Default password of `ADMIN` (CreateAdminUserUtils.java:92-98).
pub const ADMIN_PASSWORD: &str = "KYLIN";
/// The group every user belongs to; appended last when missing (NUC:617-623).
pub const ALL_USERS: &str = "ALL_USERS";
/// Holding this group is what `hasRole('ROLE_ADMIN')` checks (Constant.java:44).
pub const ROLE_ADMIN: &str = "ROLE_ADMIN";
pub const ROLE_MODELER: &str = "ROLE_MODELER";
pub const ROLE_ANALYST: &str = "ROLE_ANALYST";
/// Password of users made by `add_users`; it passes Kylin's password rule (NUC:148-149).
pub const SEEDED_PASSWORD: &str = "Password@123";
/// Name of the session cookie. Kylin 5 keeps sessions in Spring Session JDBC
/// (`spring.session.store-type=JDBC`, kylin-defaults0.properties:18) and names the cookie by the
/// SHA-256 of its metadata URL (BootstrapServer.java:101-111), not `JSESSIONID` as K7 assumes;
/// this is the name for the default `kylin_metadata@jdbc,…,url=jdbc:postgresql://localhost:5432/kylin`.
/// A client must keep whatever cookie it is given rather than look for a name.
pub const SESSION_COOKIE: &str = "7c6c6e3e5daa430f9b9005890733664cf6e995d4ff23aa6b8043935382df64b6";
/// Idle lifetime of a session (K7; `spring.session.timeout=600`, kylin-defaults0.properties:20).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// How the simulated server is configured.
#[derive(Clone, Debug)]
pub struct KylinOptions {
    /// Epoch milliseconds the clock starts at; `None` = the wall clock at start.
    pub start_ms: Option<i64>,
    /// `false` (the default, for tests): the clock stands still and moves only by `advance`, so
    /// lock timings are tested without sleeping. `true` (manual runs): it follows wall time,
    /// plus whatever `advance` added.
    pub wall_clock: bool,
    pub admin_password: String,
    pub session_cookie: String,
    pub session_timeout: Duration,
}

impl Default for KylinOptions {
    fn default() -> Self {
        KylinOptions {
            start_ms: None,
            wall_clock: false,
            admin_password: ADMIN_PASSWORD.to_string(),
            session_cookie: SESSION_COOKIE.to_string(),
            session_timeout: SESSION_TIMEOUT,
        }
    }
}

/// A user record (`ManagedUser`, MU:66-85) as stored under `/_global/user/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KylinUser {
    pub username: String,
    /// In clear; Kylin stores a bcrypt hash, which no API returns.
    pub password: String,
    /// Group names in stored order; `ALL_USERS` is always there (K19).
    pub authorities: Vec<String>,
    pub disabled: bool,
    pub default_password: bool,
    pub locked: bool,
    /// Random 128 bits, assigned at create and stable across updates (RandomUtil.java:33-39).
    pub uuid: String,
    /// Store timestamp of the last write, epoch ms (RS:234-239).
    pub last_modified: i64,
    pub create_time: i64,
    pub locked_time: i64,
    pub wrong_time: u32,
    pub first_login_failed_time: i64,
    /// Write counter shown only in the internal shape (RPE:74-80): 0 after create.
    pub mvcc: i64,
}

/// One request as the simulator received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as sent, e.g. `/kylin/api/user?page_size=100000`.
    pub path: String,
    /// An `Authorization: Basic …` header was present.
    pub basic_auth: bool,
    /// The username of that header, when it decoded.
    pub basic_user: Option<String>,
    /// The session cookie (`KylinOptions::session_cookie`) was sent, valid or not.
    pub session_cookie: bool,
    pub accept: Option<String>,
    /// Status answered; 0 for a request held by `FaultKind::Hang`.
    pub status: u16,
}

/// A queued fault: among requests whose path-and-query contains `path_contains` (`""` matches
/// all, to arm by request count), let `skip` through, then answer the next `times` with `kind`.
/// Faults are checked in the order injected; a request counts towards every matching armed fault
/// until one of them fires.
#[derive(Clone, Debug)]
pub struct Fault {
    pub path_contains: String,
    pub skip: u32,
    pub times: u32,
    pub kind: FaultKind,
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer this status with a Kylin error envelope (`code` "999", unknown error code)
    /// before authentication, without touching state.
    Status(u16),
    /// 200 `text/html` (a login page or proxy page) instead of JSON, before authentication.
    Html,
    /// 200 with the public JSON content type and an empty body, before authentication.
    Empty,
    /// Sleep this long (tokio time), then process the request normally.
    Delay(Duration),
    /// Never answer (until the simulator is dropped).
    Hang,
    /// Create this user (as an admin would, password `SEEDED_PASSWORD`, `ALL_USERS`) just before
    /// processing the request normally: shifts later pages under a paging reader.
    InsertUser(String),
    /// Delete the user `delete` and create the user `create` (as `InsertUser` does) just
    /// before processing the request normally: an admin's delete and create landing together
    /// between two page reads keep `total_size` and shift the rows between them (K14).
    Replace { delete: String, create: String },
    /// 302 to this `Location` (a proxy sending the request elsewhere), before authentication.
    Redirect(String),
    /// Process the request normally, then give `field` of the listed user `username` this
    /// value: a record no real Kylin would send (a hostile or broken one).
    RawField {
        username: String,
        field: String,
        value: serde_json::Value,
    },
    /// Process the request normally, then put bytes that are not UTF-8 (`\xC3\x28`) in the
    /// string `field` of the listed user `username`, as a broken proxy would.
    NotUtf8 { username: String, field: String },
    /// Process the request normally, then pad its body with spaces to `bytes` bytes (the same
    /// JSON). `declared`: sent with its `Content-Length`; otherwise streamed in chunks without
    /// one.
    Oversized { bytes: usize, declared: bool },
}

/// What a login attempt came to (K5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok,
    /// Unknown user or wrong password (401 KE-010003208), including the failure that locks.
    BadCredentials,
    /// Locked before the password was looked at (400 KE-010003005).
    Locked,
    /// Disabled, checked before the password (401 KE-010003008).
    Disabled,
}

/// `body` (a users list) with `field` of the row of `username` set to `value`.
fn with_field(body: &[u8], username: &str, field: &str, value: serde_json::Value) -> Vec<u8> {
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    let rows = body
        .pointer_mut("/data/value")
        .and_then(|v| v.as_array_mut());
    for row in rows.into_iter().flatten() {
        if row.get("username").and_then(|u| u.as_str()) == Some(username) {
            row[field] = value.clone();
        }
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A running simulator. Dropping it stops accepting connections and releases hung requests.
/// Tests change and read its state through its [`Handle`], which it derefs to.
pub struct KylinSim {
    /// Base URL including the `/kylin` context path, e.g. `http://127.0.0.1:PORT/kylin`.
    pub url: String,
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KylinSim {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.handle.shared.closed.send(true);
    }
}

impl std::ops::Deref for KylinSim {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// The simulator's state as a test reaches into it: the changes an administrator or a failing
/// login would make, the clock, faults, changes made while a reader is mid-way
/// ([`Handle::before_request`]), and the requests received. A change given to
/// `before_request` is made through one.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A change [`Handle::before_request`] makes before answering a request.
pub type Change = crate::Change<Handle>;

impl KylinSim {
    /// Start on 127.0.0.1 with an ephemeral port, seeded like a fresh Kylin 5 in the `testing`
    /// profile: user `ADMIN` (`ROLE_ADMIN`, `ALL_USERS`, `default_password` true) and the groups
    /// `ALL_USERS`, `ROLE_ADMIN`, `ROLE_MODELER`, `ROLE_ANALYST` (InitUserGroupUtils.java:36-37).
    pub async fn start(opts: KylinOptions) -> KylinSim {
        KylinSim::start_on(0, opts).await
    }

    /// Like `start`, on a fixed port of 127.0.0.1 (0 = ephemeral). Used by the example runner.
    pub async fn start_on(port: u16, opts: KylinOptions) -> KylinSim {
        let (closed, _) = watch::channel(false);
        let state = Handle {
            shared: Arc::new(Shared {
                state: Mutex::new(Inner::new(opts)),
                closed,
            }),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KylinSim {
            url: format!("http://{addr}/kylin"),
            handle: state,
            task,
        }
    }
}

impl Handle {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Like `POST /api/user` by ADMIN without the request checks: a new uuid,
    /// `default_password` true, `ALL_USERS` appended (NUC:186-198). Returns the uuid.
    /// Panics if the name exists in any case (a test bug; over HTTP it is KE-010003004).
    pub fn add_user(&self, username: &str, password: &str, authorities: &[&str]) -> String {
        let mut s = self.inner();
        assert!(
            s.find(username).is_none(),
            "user {username} already exists (names are unique ignoring case)"
        );
        let groups = authorities.iter().map(|g| g.to_string()).collect();
        s.insert_user(username, password, groups, false)
    }

    /// Seed `n` users `user000001`, `user000002`, … (numbering continues after the users already
    /// there) with password `SEEDED_PASSWORD` and group `ALL_USERS`. 100k take well under a second
    /// in a release build.
    pub fn add_users(&self, n: usize) {
        let mut s = self.inner();
        let start = s.users.len();
        for i in 0..n {
            let name = format!("user{:06}", start + i);
            s.insert_user(&name, SEEDED_PASSWORD, Vec::new(), false);
        }
    }

    /// A persisted change like an admin `PUT`: applies `f`, then bumps `last_modified` and
    /// `mvcc` even if `f` changed nothing (K24, UMGR:110-118). False if unknown.
    pub fn update_user(&self, username: &str, f: impl FnOnce(&mut KylinUser)) -> bool {
        self.inner().write_user(username, f)
    }

    /// Like `DELETE /api/user/{username}`: the record is gone, no tombstone (K38, K46).
    pub fn delete_user(&self, username: &str) -> bool {
        let mut s = self.inner();
        match s.find(username) {
            Some(key) => s.users.remove(&key).is_some(),
            None => false,
        }
    }

    /// Like a `PUT` with `disabled` (UR:65-67).
    pub fn set_disabled(&self, username: &str, disabled: bool) -> bool {
        self.update_user(username, |u| u.disabled = disabled)
    }

    /// Like a `PUT` with `authorities`: replaces the list, `ALL_USERS` appended if missing
    /// (UR:83-85). Group existence is not checked here.
    pub fn set_authorities(&self, username: &str, authorities: &[&str]) -> bool {
        let groups = with_all_users(authorities.iter().map(|g| g.to_string()).collect());
        self.update_user(username, |u| u.authorities = groups)
    }

    /// Like an admin `PUT /api/user/password`: `default_password` false and every lock counter
    /// cleared (NUC:482-490).
    pub fn change_password(&self, username: &str, new_password: &str) -> bool {
        self.update_user(username, |u| {
            u.password = new_password.to_string();
            u.default_password = false;
            clear_failures(u);
        })
    }

    /// A login attempt as Kylin's authentication provider makes it, with its effects on the
    /// lock counters (K29-K32). Not counted in `failed_logins`, which counts HTTP only.
    pub fn login(&self, username: &str, password: &str) -> LoginOutcome {
        outcome(self.inner().authenticate(username, Some(password)))
    }

    /// A login attempt with a wrong password (see `login`).
    pub fn fail_login(&self, username: &str) -> LoginOutcome {
        outcome(self.inner().authenticate(username, None))
    }

    /// Put the user in the state `wrong_time` consecutive failures leave: locked now (if
    /// `wrong_time` ≥ 3 the lock lasts as the rules say; 10 is permanent), first failure now
    /// unless already set. A persisted write.
    pub fn lock(&self, username: &str, wrong_time: u32) -> bool {
        let mut s = self.inner();
        let now = s.now();
        s.write_user(username, |u| {
            u.locked = true;
            u.locked_time = now;
            u.wrong_time = wrong_time.min(MAX_WRONG_TIME);
            if u.first_login_failed_time == 0 {
                u.first_login_failed_time = now;
            }
        })
    }

    /// How many HTTP Basic authentications naming this user (any case) carried a password that
    /// did not match — whether or not the account was locked or disabled, and counting unknown
    /// users too. Use it to prove a client costs exactly one failed login.
    pub fn failed_logins(&self, username: &str) -> u32 {
        self.inner()
            .failed_logins
            .get(&fold(username))
            .copied()
            .unwrap_or(0)
    }

    pub fn user(&self, username: &str) -> Option<KylinUser> {
        let s = self.inner();
        s.find(username).and_then(|k| s.users.get(&k).cloned())
    }

    /// Every user in list order (username ignoring case).
    pub fn users(&self) -> Vec<KylinUser> {
        self.inner().users.values().cloned().collect()
    }

    pub fn user_count(&self) -> usize {
        self.inner().users.len()
    }

    /// Like `POST /api/user_group/{name}`. False if a group of that name (any case) exists.
    pub fn add_group(&self, name: &str) -> bool {
        self.inner().add_group(name).is_ok()
    }

    /// Like `DELETE /api/user_group/{name}`: removed from every member, each a persisted write
    /// (UGS:124-165). False if unknown.
    pub fn delete_group(&self, name: &str) -> bool {
        let mut s = self.inner();
        if !s.groups.contains(name) {
            return false;
        }
        s.remove_group(name);
        true
    }

    /// Drop every session, as a server restart would: clients must authenticate again.
    pub fn expire_sessions(&self) {
        self.inner().sessions.clear();
    }

    /// Move the simulator's clock forward (lock expiry, session idle timeout).
    pub fn advance(&self, d: Duration) {
        self.inner().clock.offset_ms += d.as_millis() as i64;
    }

    /// The simulator's clock, epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.inner().now()
    }

    pub fn inject(&self, fault: Fault) {
        self.inner().faults.push(ArmedFault { fault, seen: 0 });
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.inner().requests.clear();
    }

    /// Among requests whose path and query contain `path_contains` (`""` matches all), let
    /// `skip` through, then make `change` just before the next one is answered, before any
    /// fault for it: an administrator's write (or a failing login) landing between two page
    /// reads, at the request a test names. Counting starts with this call; changes due at the
    /// same request are made in the order given. `change` is called without the simulator's
    /// lock held, so it may use every method of the handle it gets, to change the state and to
    /// read it back. [`FaultKind::InsertUser`] is the special case of one create.
    pub fn before_request(
        &self,
        path_contains: &str,
        skip: u32,
        change: impl FnOnce(&Handle) + Send + 'static,
    ) {
        self.inner()
            .changes
            .arm(path_contains, skip, Box::new(change));
    }

    /// Drop the changes of [`Handle::before_request`] not made yet, because the requests they
    /// wait for did not come; returns how many.
    pub fn cancel_changes(&self) -> usize {
        self.inner().changes.cancel()
    }
}

fn outcome(r: Result<String, AuthFail>) -> LoginOutcome {
    match r {
        Ok(_) => LoginOutcome::Ok,
        Err(AuthFail::Bad) => LoginOutcome::BadCredentials,
        Err(AuthFail::Locked(_)) => LoginOutcome::Locked,
        Err(AuthFail::Disabled) => LoginOutcome::Disabled,
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<Inner>,
    /// Set to true on drop; `FaultKind::Hang` waits for it.
    closed: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Clock {
    base_ms: i64,
    started: Instant,
    wall: bool,
    offset_ms: i64,
}

struct Session {
    /// The authenticated name, in stored case (LLAP rewrites the principal to it, LLAP:81-86).
    username: String,
    last_access_ms: i64,
}

struct ArmedFault {
    fault: Fault,
    seen: u32,
}

/// The last value of `wrong_time`: the 10th consecutive failure locks for good (ULR:33-46).
const MAX_WRONG_TIME: u32 = 10;

struct Inner {
    opts: KylinOptions,
    clock: Clock,
    /// Store timestamps are made strictly increasing so that every write, even a no-op PUT in
    /// the same millisecond, shows a new `last_modified` (K24).
    last_write_ms: i64,
    /// Keyed by `fold(username)`: `compareToIgnoreCase` order (K14, UMGR:98-108) and case-insensitive
    /// uniqueness (K18, KUS:72-78) in one.
    users: BTreeMap<String, KylinUser>,
    /// Group names, compared exactly except on create, which rejects any-case duplicates.
    groups: BTreeSet<String>,
    /// By cookie value.
    sessions: HashMap<String, Session>,
    /// By `fold(username)`; see `KylinSim::failed_logins`.
    failed_logins: HashMap<String, u32>,
    faults: Vec<ArmedFault>,
    changes: crate::Changes<Handle>,
    requests: Vec<RecordedRequest>,
}

impl Inner {
    fn new(opts: KylinOptions) -> Inner {
        let base_ms = opts
            .start_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let mut s = Inner {
            clock: Clock {
                base_ms,
                started: Instant::now(),
                wall: opts.wall_clock,
                offset_ms: 0,
            },
            opts,
            last_write_ms: i64::MIN,
            users: BTreeMap::new(),
            groups: [ALL_USERS, ROLE_ADMIN, ROLE_MODELER, ROLE_ANALYST]
                .iter()
                .map(|g| g.to_string())
                .collect(),
            sessions: HashMap::new(),
            failed_logins: HashMap::new(),
            faults: Vec::new(),
            changes: crate::Changes::default(),
            requests: Vec::new(),
        };
        let pw = s.opts.admin_password.clone();
        s.insert_user(ADMIN, &pw, vec![ROLE_ADMIN.to_string()], false);
        s
    }

    fn now(&self) -> i64 {
        let c = &self.clock;
        let elapsed = if c.wall {
            c.started.elapsed().as_millis() as i64
        } else {
            0
        };
        c.base_ms + c.offset_ms + elapsed
    }

    fn write_stamp(&mut self) -> i64 {
        let t = self.now().max(self.last_write_ms.saturating_add(1));
        self.last_write_ms = t;
        t
    }

    /// The stored key for a name: exact or ignoring case, as `NKylinUserManager.get` falls back
    /// (UMGR:85-96).
    fn find(&self, name: &str) -> Option<String> {
        let key = fold(name);
        self.users.contains_key(&key).then_some(key)
    }

    /// The stored spelling of a name if it exists, else the name: what `InsensitiveNameAspect`
    /// does to request usernames (InsensitiveNameAspect.java:88-109).
    fn canonical(&self, name: &str) -> String {
        self.users
            .get(&fold(name))
            .map_or_else(|| name.to_string(), |u| u.username.clone())
    }

    fn insert_user(
        &mut self,
        username: &str,
        password: &str,
        authorities: Vec<String>,
        disabled: bool,
    ) -> String {
        let create_time = self.now();
        let last_modified = self.write_stamp();
        let uuid = uuid::Uuid::from_u128(rand::random()).to_string();
        self.users.insert(
            fold(username),
            KylinUser {
                username: username.to_string(),
                password: password.to_string(),
                authorities: with_all_users(authorities),
                disabled,
                // Always true on create (NUC:197).
                default_password: true,
                locked: false,
                uuid: uuid.clone(),
                last_modified,
                create_time,
                locked_time: 0,
                wrong_time: 0,
                first_login_failed_time: 0,
                mvcc: 0,
            },
        );
        uuid
    }

    /// A persisted write of one user: `last_modified` and `mvcc` move on every write (CCA:200-223).
    fn write_user(&mut self, name: &str, f: impl FnOnce(&mut KylinUser)) -> bool {
        let Some(key) = self.find(name) else {
            return false;
        };
        let t = self.write_stamp();
        let u = self.users.get_mut(&key).expect("found above");
        f(u);
        u.last_modified = t;
        u.mvcc += 1;
        true
    }

    fn add_group(&mut self, name: &str) -> Result<(), KError> {
        // Any-case duplicates are refused (NUserGroupManager.add).
        if let Some(real) = self.groups.iter().find(|g| fold(g) == fold(name)) {
            return Err(KError::old(
                500,
                "KE-010004004",
                "Duplicate Group Name",
                format!("The user group \"{real}\" already exists. Please check and try again."),
            ));
        }
        self.groups.insert(name.to_string());
        Ok(())
    }

    fn remove_group(&mut self, name: &str) {
        let members: Vec<String> = self
            .users
            .values()
            .filter(|u| u.authorities.iter().any(|a| a == name))
            .map(|u| u.username.clone())
            .collect();
        for m in members {
            self.write_user(&m, |u| u.authorities.retain(|a| a != name));
        }
        self.groups.remove(name);
    }

    fn take_fault(&mut self, path_and_query: &str) -> Option<FaultKind> {
        let mut fired = None;
        for f in self.faults.iter_mut() {
            if !path_and_query.contains(&f.fault.path_contains) {
                continue;
            }
            f.seen += 1;
            if f.seen > f.fault.skip && f.seen <= f.fault.skip.saturating_add(f.fault.times) {
                fired = Some(f.fault.kind.clone());
                break;
            }
        }
        self.faults
            .retain(|f| f.seen < f.fault.skip.saturating_add(f.fault.times));
        fired
    }

    // ----- authentication (K5, K29-K32) -----

    /// `LimitLoginAuthenticationProvider.authenticate` (LLAP:73-123) over Spring's
    /// `DaoAuthenticationProvider`. `password` None = certainly wrong. Ok = the stored name.
    fn authenticate(&mut self, name: &str, password: Option<&str>) -> Result<String, AuthFail> {
        let Some(key) = self.find(name) else {
            return Err(AuthFail::Bad);
        };
        let now = self.now();
        let u = &self.users[&key];
        let username = u.username.clone();
        // The lock is checked before anything else (LLAP:165-185).
        if u.locked {
            if u.wrong_time >= MAX_WRONG_TIME {
                // K32.
                return Err(AuthFail::Locked(format!(
                    "User {username} is locked permanently. Please contact to your administrator to reset."
                )));
            }
            let diff = now - u.locked_time;
            let duration = lock_duration_ms(u.wrong_time);
            if diff >= duration {
                // K31: lazy unlock, a write, but locked_time stays (LLAP:172-177).
                self.write_user(&key, |u| u.locked = false);
            } else {
                let left = ((duration - diff) / 1000).max(1);
                let next = lock_duration_ms(u.wrong_time + 1);
                let next = if next == i64::MAX {
                    "Login failure again will be locked permanently.".to_string()
                } else {
                    format!(
                        "Login failure again will be locked for {}.",
                        format_seconds(next / 1000)
                    )
                };
                // Message.getUserInLockedStatus appends "." after a text that already ends with
                // one (Message.java:328-337): the double period is Kylin's.
                return Err(AuthFail::Locked(format!(
                    "For security concern, account {username} has been locked. Please try again in {}. {next}.",
                    format_seconds(left)
                )));
            }
        }
        let u = &self.users[&key];
        // Spring's pre-authentication checks come before the password (K5).
        if u.disabled {
            return Err(AuthFail::Disabled);
        }
        if password != Some(u.password.as_str()) {
            // K30: ManagedUser.authenticateFail (MU:184-200), the 3rd consecutive failure locks.
            self.write_user(&key, |u| {
                if u.first_login_failed_time == 0 {
                    u.first_login_failed_time = now;
                }
                if u.wrong_time >= 2 {
                    u.locked = true;
                    u.locked_time = now;
                }
                u.wrong_time += 1;
            });
            return Err(AuthFail::Bad);
        }
        // Success writes only when there were failures to clear (LLAP:99-102).
        if u.wrong_time > 0 {
            self.write_user(&key, clear_failures);
        }
        Ok(username)
    }

    /// A live session's user, refreshing its idle timer; an expired one is dropped.
    fn touch_session(&mut self, cookie: &str, now: i64) -> Option<String> {
        let timeout = self.opts.session_timeout.as_millis() as i64;
        let s = self.sessions.get_mut(cookie)?;
        if now - s.last_access_ms >= timeout {
            self.sessions.remove(cookie);
            return None;
        }
        s.last_access_ms = now;
        Some(s.username.clone())
    }

    fn new_session(&mut self, username: &str, now: i64) -> String {
        // Spring Session's cookie value is the Base64 of the session id.
        let value = STANDARD.encode(uuid::Uuid::from_u128(rand::random()).to_string());
        self.sessions.insert(
            value.clone(),
            Session {
                username: username.to_string(),
                last_access_ms: now,
            },
        );
        value
    }
}

enum AuthFail {
    Bad,
    /// The text after `KE-010003005(User Locked):`.
    Locked(String),
    Disabled,
}

fn clear_failures(u: &mut KylinUser) {
    // ManagedUser.clearAuthenticateFailedRecord (MU:202-207).
    u.first_login_failed_time = 0;
    u.wrong_time = 0;
    u.locked = false;
    u.locked_time = 0;
}

fn with_all_users(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == ALL_USERS) {
        groups.push(ALL_USERS.to_string());
    }
    groups
}

/// Lock duration by `wrong_time`, hard-coded (K29, ULR:33-46); `i64::MAX` = permanent.
fn lock_duration_ms(wrong_time: u32) -> i64 {
    match wrong_time {
        0..=2 => 0,
        3 => 30_000,
        4 => 60_000,
        5 => 5 * 60_000,
        6 => 10 * 60_000,
        7 => 30 * 60_000,
        8 => 24 * 3_600_000,
        9 => 72 * 3_600_000,
        _ => i64::MAX,
    }
}

/// `Message.formatSeconds`: "1 days 2 hours 3 minutes 4 seconds", zero parts left out, plural
/// always (Message.java:339-361).
fn format_seconds(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let mut parts = Vec::new();
    for (n, unit) in [(d, "days"), (h, "hours"), (m, "minutes"), (s, "seconds")] {
        if n > 0 {
            parts.push(format!("{n} {unit}"));
        }
    }
    parts.join(" ")
}

/// Java's `compareToIgnoreCase` / `equalsIgnoreCase` per char: lower(upper(c)) with simple
/// (one-char) case mappings.
fn fold(s: &str) -> String {
    fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
        let c = it.next()?;
        it.next().is_none().then_some(c)
    }
    s.chars()
        .map(|c| {
            let up = single(c.to_uppercase()).unwrap_or(c);
            single(up.to_lowercase()).unwrap_or(up)
        })
        .collect()
}

/// Java `String.length()`: UTF-16 code units.
fn java_len(s: &str) -> usize {
    s.encode_utf16().count()
}

// ---------------------------------------------------------------------------------------------
// Errors (K40-K44)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Code {
    /// `KE-…(<title>):<text>` (K41, ErrorCode.java:82-87), `suggestion` null.
    Old(&'static str, &'static str),
    /// `KE-…: <text>` (ErrorCodeProducer.java:25), `suggestion` "".
    New(&'static str),
    /// A non-Kylin exception of this Java class: `KE-000000001(UNKNOWN ERRORCODE): <text>`,
    /// `error_code` null (ERR:70-78).
    Unknown(&'static str),
}

/// A Kylin `ErrorResponse` waiting for its URL.
#[derive(Debug)]
struct KError {
    status: u16,
    code: Code,
    text: String,
}

impl KError {
    fn old(status: u16, code: &'static str, title: &'static str, text: impl Into<String>) -> Self {
        KError {
            status,
            code: Code::Old(code, title),
            text: text.into(),
        }
    }
    fn new_style(status: u16, code: &'static str, text: impl Into<String>) -> Self {
        KError {
            status,
            code: Code::New(code),
            text: text.into(),
        }
    }
    fn unknown(class: &'static str, text: impl Into<String>) -> Self {
        KError {
            status: 500,
            code: Code::Unknown(class),
            text: text.into(),
        }
    }

    // The catalogue (K44). Any KylinException from a controller is HTTP 500 (K42, NBC:248-255).

    /// `@PreAuthorize` failure, 400 (NBC:229-236).
    fn no_access() -> Self {
        KError::old(
            400,
            "KE-010024001",
            "No access",
            "The user doesn't have access.",
        )
    }
    fn empty_param(name: &str) -> Self {
        KError::new_style(
            500,
            "KE-010043201",
            format!("Request parameter \"{name}\" is empty or value is empty. Please check the request parameters."),
        )
    }
    fn failed_update_user(text: &str) -> Self {
        KError::old(500, "KE-010003006", "Failed Update User", text)
    }
    fn permission_denied(text: &str) -> Self {
        KError::old(500, "KE-010024002", "Permission Denied", text)
    }
    /// AccessService.checkDefaultAdmin (AS:1046-1055).
    fn default_admin() -> Self {
        KError::permission_denied(
            "Can’t modify the permission of user “ADMIN”, as this user is a built-in admin by default.",
        )
    }
    fn user_not_exist(text: String) -> Self {
        KError::old(500, "KE-010003001", "User Not Exist", text)
    }
    /// `loadUserByUsername` throws before the controller's null check (KUS:135-137).
    fn username_not_found(name: &str) -> Self {
        KError::unknown(
            "org.springframework.security.core.userdetails.UsernameNotFoundException",
            format!("User '{name}' not found."),
        )
    }
    /// 400 for `IllegalArgumentException` and parameter conversion errors (NBC:238-246).
    fn invalid_parameter(text: String) -> Self {
        KError::old(400, "KE-010000003", "Invalid Parameter", text)
    }
    fn unreadable_body(text: String) -> Self {
        KError::unknown(
            "org.springframework.http.converter.HttpMessageNotReadableException",
            text,
        )
    }

    fn msg(&self) -> String {
        match self.code {
            Code::Old(code, title) => format!("{code}({title}):{}", self.text),
            Code::New(code) => format!("{code}: {}", self.text),
            Code::Unknown(_) => format!("KE-000000001(UNKNOWN ERRORCODE): {}", self.text),
        }
    }

    /// `ErrorResponse` fields in Jackson's order (K40, ERR:38-80).
    fn fields(&self, url: &str) -> Vec<(&'static str, Value)> {
        let msg = self.msg();
        let frame = "\n\tat org.apache.kylin.rest.controller.NBasicController(simulated)\n";
        // Throwables.getStackTraceAsString starts with the exception's toString().
        let (stacktrace, exception, suggestion, error_code) = match self.code {
            Code::Old(code, title) => (
                format!(
                    "{code}({title}) \norg.apache.kylin.common.exception.KylinException: {}{frame}",
                    self.text
                ),
                Value::from(msg.clone()),
                Value::Null,
                Value::from(code),
            ),
            Code::New(code) => (
                format!("{msg}{frame}"),
                Value::from(msg.clone()),
                Value::from(""),
                Value::from(code),
            ),
            Code::Unknown(class) => (
                format!("{class}: {}{frame}", self.text),
                Value::from(self.text.clone()),
                Value::Null,
                Value::Null,
            ),
        };
        vec![
            ("code", Value::from("999")),
            ("data", Value::Null),
            ("msg", Value::from(msg)),
            ("stacktrace", Value::from(stacktrace)),
            ("exception", exception),
            ("url", Value::from(url)),
            ("suggestion", suggestion),
            ("error_code", error_code),
        ]
    }
}

/// A JSON object with keys in the given order, compact or as Jackson's default pretty printer
/// writes it (`"key" : value`, two-space indent).
fn ordered_object(fields: &[(&str, Value)], pretty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if pretty {
            out.extend_from_slice(b"\n  ");
        }
        write_json_str(&mut out, k);
        out.extend_from_slice(if pretty { b" : " } else { b":" });
        serde_json::to_writer(&mut out, v).expect("in-memory write");
    }
    if pretty {
        out.push(b'\n');
    }
    out.push(b'}');
    out
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("in-memory write");
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

const PUBLIC_CT: &str = "application/vnd.apache.kylin-v4-public+json;charset=UTF-8";
const INTERNAL_CT: &str = "application/vnd.apache.kylin-v4+json;charset=UTF-8";
/// `server.servlet.encoding.force: true` appends the charset everywhere (K55, YAML:34).
const JSON_CT: &str = "application/json;charset=UTF-8";
const HTML_CT: &str = "text/html;charset=UTF-8";

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    set_cookie: Option<String>,
    location: Option<String>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            set_cookie: None,
            location: None,
        }
    }

    /// Authentication failures bypass the controllers: `HttpUtil.setErrorResponse` writes a
    /// pretty-printed `ErrorResponse` as `application/json`, and the URL has the query (HU:55-69).
    fn auth_error(status: u16, e: &KError, url_with_query: &str) -> Reply {
        Reply::new(
            status,
            JSON_CT,
            ordered_object(&e.fields(url_with_query), true),
        )
    }

    /// Spring Boot's `/error` body, used where no Kylin controller is reached (K8, K54,
    /// *inferred*). A client that accepts no JSON gets no body.
    fn spring_error(status: u16, path: &str, now_ms: i64, accept: Option<&str>) -> Reply {
        let error = match status {
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            _ => "Internal Server Error",
        };
        let json_ok =
            accept.is_none_or(|a| a.is_empty() || a.contains("json") || a.contains("*/*"));
        if !json_ok {
            return Reply::new(status, JSON_CT, Vec::new());
        }
        let ts = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
            .to_string();
        let body = ordered_object(
            &[
                ("timestamp", Value::from(ts)),
                ("status", Value::from(status)),
                ("error", Value::from(error)),
                ("path", Value::from(path)),
            ],
            false,
        );
        Reply::new(status, JSON_CT, body)
    }

    fn into_response(self) -> Response {
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, self.content_type);
        if let Some(c) = self.set_cookie {
            b = b.header(header::SET_COOKIE, c);
        }
        if let Some(l) = self.location {
            b = b.header(header::LOCATION, l);
        }
        b.body(Body::from(self.body)).expect("response")
    }
}

/// Which of the two controllers mapped on the same paths serves a request (K8, K16).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Public,
    Internal,
}

enum Negotiated {
    Serve(Variant),
    /// Both controllers match equally: "Ambiguous handler methods" → 500 (*inferred*).
    Ambiguous,
    /// Neither produces an accepted type → 406 (*inferred*).
    NotAcceptable,
}

fn negotiate(accept: Option<&str>) -> Negotiated {
    let mut wildcard = accept.is_none_or(|a| a.trim().is_empty());
    for part in accept.unwrap_or("").split(',') {
        let mt = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mt.as_str() {
            // The first specific match wins over a later wildcard.
            PUBLIC_ACCEPT => return Negotiated::Serve(Variant::Public),
            INTERNAL_ACCEPT => return Negotiated::Serve(Variant::Internal),
            "*/*" | "application/*" | "application/*+json" => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        Negotiated::Ambiguous
    } else {
        Negotiated::NotAcceptable
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP entry point
// ---------------------------------------------------------------------------------------------

/// What a request carried, parsed once.
struct Req {
    method: Method,
    path: String,
    query: String,
    accept: Option<String>,
    host: String,
    basic: Basic,
    cookie: Option<String>,
    body: Vec<u8>,
}

impl Req {
    fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
    /// `request.getRequestURL()`, as controller errors report it.
    fn url(&self) -> String {
        format!("http://{}{}", self.host, self.path)
    }
    fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Spring's `BasicAuthenticationConverter`.
enum Basic {
    Absent,
    /// Present but undecodable or without a colon: `BadCredentialsException`.
    Invalid,
    Creds(String, String),
}

fn parse_basic(headers: &HeaderMap) -> Basic {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        return Basic::Absent;
    };
    let h = String::from_utf8_lossy(h.as_bytes()).trim().to_string();
    if h.len() < 5 || !h[..5].eq_ignore_ascii_case("basic") {
        // Another scheme is ignored, as if no credentials were sent.
        return Basic::Absent;
    }
    let Some(token) = h.get(6..) else {
        return Basic::Invalid;
    };
    let Ok(decoded) = STANDARD.decode(token) else {
        return Basic::Invalid;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    match decoded.split_once(':') {
        Some((u, p)) => Basic::Creds(u.to_string(), p.to_string()),
        None => Basic::Invalid,
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

async fn handle(State(handle): State<Handle>, req: Request) -> Response {
    let shared = &handle.shared;
    let headers = req.headers().clone();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), 256 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let session_cookie = shared.lock().opts.session_cookie.clone();
    let r = Req {
        method,
        path,
        query,
        accept: headers
            .get(header::ACCEPT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        host: headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost")
            .to_string(),
        basic: parse_basic(&headers),
        cookie: cookie_value(&headers, &session_cookie),
        body,
    };
    let record = RecordedRequest {
        method: r.method.to_string(),
        path: r.path_and_query(),
        basic_auth: !matches!(r.basic, Basic::Absent),
        basic_user: match &r.basic {
            Basic::Creds(u, _) => Some(u.clone()),
            _ => None,
        },
        session_cookie: r.cookie.is_some(),
        accept: r.accept.clone(),
        status: 0,
    };

    let due = shared.lock().changes.due(&record.path);
    for change in due {
        change(&handle);
    }
    let fault = shared.lock().take_fault(&record.path);
    let streamed = matches!(
        fault,
        Some(FaultKind::Oversized {
            declared: false,
            ..
        })
    );
    let mut reply = match fault {
        Some(FaultKind::Status(code)) => Reply::new(
            code,
            JSON_CT,
            ordered_object(
                &KError::unknown("java.lang.RuntimeException", "simulated fault").fields(&r.url()),
                false,
            ),
        ),
        Some(FaultKind::Html) => Reply::new(
            200,
            HTML_CT,
            b"<!doctype html><html><head><title>Kylin</title></head><body>Please log in</body></html>"
                .to_vec(),
        ),
        Some(FaultKind::Empty) => Reply::new(200, PUBLIC_CT, Vec::new()),
        Some(FaultKind::Redirect(to)) => Reply {
            location: Some(to),
            ..Reply::new(302, HTML_CT, Vec::new())
        },
        Some(FaultKind::Hang) => {
            shared.lock().requests.push(record);
            let mut closed = shared.closed.subscribe();
            let _ = closed.wait_for(|c| *c).await;
            return Reply::new(503, JSON_CT, Vec::new()).into_response();
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            shared.lock().process(&r)
        }
        Some(FaultKind::InsertUser(name)) => {
            let mut s = shared.lock();
            if s.find(&name).is_none() {
                s.insert_user(&name, SEEDED_PASSWORD, Vec::new(), false);
            }
            s.process(&r)
        }
        Some(FaultKind::Replace { delete, create }) => {
            let mut s = shared.lock();
            if let Some(key) = s.find(&delete) {
                s.users.remove(&key);
            }
            if s.find(&create).is_none() {
                s.insert_user(&create, SEEDED_PASSWORD, Vec::new(), false);
            }
            s.process(&r)
        }
        Some(FaultKind::RawField {
            username,
            field,
            value,
        }) => {
            let mut reply = shared.lock().process(&r);
            reply.body = with_field(&reply.body, &username, &field, value);
            reply
        }
        Some(FaultKind::NotUtf8 { username, field }) => {
            const MARK: &str = "rollcall-sim-not-utf8";
            let mut reply = shared.lock().process(&r);
            reply.body = with_field(&reply.body, &username, &field, MARK.into());
            reply.body = crate::splice(&String::from_utf8_lossy(&reply.body), MARK, b"name\xC3\x28");
            reply
        }
        Some(FaultKind::Oversized { bytes, .. }) => {
            let mut reply = shared.lock().process(&r);
            reply.body = crate::padded(reply.body, bytes);
            reply
        }
        None => shared.lock().process(&r),
    };
    shared.lock().requests.push(RecordedRequest {
        status: reply.status,
        ..record
    });
    if streamed {
        let body = std::mem::take(&mut reply.body);
        let mut response = reply.into_response();
        *response.body_mut() = crate::chunked(body);
        return response;
    }
    reply.into_response()
}

/// The routes modelled, after `/kylin/api/`.
enum Route {
    ListUsers,
    CreateUser,
    UpdateUser,
    /// `DELETE /api/user` with `{"username"}` (OUC:116-122).
    DeleteUserBody,
    /// `DELETE /api/user/{x}`: by username in the public controller, by uuid in the internal one.
    DeleteUserPath(String),
    BatchCreate,
    BatchDelete,
    Password,
    GroupMembers(String),
    /// `POST /api/user_group/{name}`, or with `{"group_name"}` when None.
    AddGroup(Option<String>),
    DeleteGroup(String),
    GroupUsers,
}

enum Miss {
    NotFound,
    MethodNotAllowed,
}

fn route(method: &Method, segs: &[String]) -> Result<Route, Miss> {
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    match seg.as_slice() {
        ["user"] => match m {
            Method::GET => Ok(Route::ListUsers),
            Method::POST => Ok(Route::CreateUser),
            Method::PUT => Ok(Route::UpdateUser),
            Method::DELETE => Ok(Route::DeleteUserBody),
            // A path some mapping has, but not for this method.
            _ => Err(Miss::MethodNotAllowed),
        },
        // Literal paths win over `{username}` (K38).
        ["user", "batch"] if m == Method::POST => Ok(Route::BatchCreate),
        ["user", "batch"] if m == Method::DELETE => Ok(Route::BatchDelete),
        ["user", "password"] if m == Method::PUT => Ok(Route::Password),
        ["user", name] => match m {
            Method::DELETE => Ok(Route::DeleteUserPath(name.to_string())),
            // A path some mapping has, but not for this method.
            _ => Err(Miss::MethodNotAllowed),
        },
        ["user_group"] => match m {
            Method::POST => Ok(Route::AddGroup(None)),
            // A path some mapping has, but not for this method.
            _ => Err(Miss::MethodNotAllowed),
        },
        ["user_group", "users"] if m == Method::PUT => Ok(Route::GroupUsers),
        ["user_group", "group_members", g] => match m {
            Method::GET => Ok(Route::GroupMembers(g.to_string())),
            // A path some mapping has, but not for this method.
            _ => Err(Miss::MethodNotAllowed),
        },
        // Group batch routes are not modelled.
        ["user_group", "batch"] => Err(Miss::NotFound),
        ["user_group", g] => match m {
            Method::POST => Ok(Route::AddGroup(Some(g.to_string()))),
            Method::DELETE => Ok(Route::DeleteGroup(g.to_string())),
            // A path some mapping has, but not for this method.
            _ => Err(Miss::MethodNotAllowed),
        },
        _ => Err(Miss::NotFound),
    }
}

/// Who is calling, after Kylin's `ReloadAuthoritiesInterceptor` reloaded the user.
struct Ctx {
    /// None when the session's user has since been deleted (anonymous).
    principal: Option<String>,
    admin: bool,
    variant: Variant,
}

impl Ctx {
    /// `@PreAuthorize(hasRole('ROLE_ADMIN'))` (K4, K6), checked after the arguments are bound.
    fn require_admin(&self) -> Result<(), KError> {
        if self.admin {
            Ok(())
        } else {
            Err(KError::no_access())
        }
    }
    fn is(&self, name: &str) -> bool {
        self.principal.as_deref() == Some(name)
    }
}

impl Inner {
    fn process(&mut self, r: &Req) -> Reply {
        let now = self.now();
        let Some(rest) = r.path.strip_prefix("/kylin/api/") else {
            return Reply::spring_error(404, &r.path, now, r.accept.as_deref());
        };
        let url_with_query = format!("http://{}{}", r.host, r.path_and_query());

        // Spring Security runs first: every `/api/**` route here needs an authenticated user (K2, K4).
        let session_user = r.cookie.as_deref().and_then(|c| self.touch_session(c, now));
        let mut set_cookie = None;
        let principal = match &r.basic {
            Basic::Invalid => {
                return Reply::auth_error(401, &login_failed(), &url_with_query);
            }
            // K7: a session naming the same user skips Basic entirely (BasicAuthenticationFilter.
            // authenticationIsRequired compares names exactly).
            Basic::Creds(u, _) if session_user.as_deref() == Some(u.as_str()) => u.clone(),
            Basic::Creds(u, p) => {
                if self.find(u).is_none_or(|k| self.users[&k].password != *p) {
                    *self.failed_logins.entry(fold(u)).or_insert(0) += 1;
                }
                match self.authenticate(u, Some(p)) {
                    Ok(name) => {
                        if let Some(old) = &r.cookie {
                            self.sessions.remove(old);
                        }
                        let value = self.new_session(&name, now);
                        set_cookie = Some(format!(
                            "{}={value}; Path=/kylin/; HttpOnly; SameSite=Lax",
                            self.opts.session_cookie
                        ));
                        name
                    }
                    Err(AuthFail::Bad) => {
                        return Reply::auth_error(401, &login_failed(), &url_with_query)
                    }
                    Err(AuthFail::Disabled) => {
                        let e = KError::old(
                            401,
                            "KE-010003008",
                            "Login Failed",
                            "This user is disabled. Please contact admin.",
                        );
                        return Reply::auth_error(401, &e, &url_with_query);
                    }
                    Err(AuthFail::Locked(text)) => {
                        let e = KError::old(400, "KE-010003005", "User Locked", text);
                        return Reply::auth_error(400, &e, &url_with_query);
                    }
                }
            }
            Basic::Absent => match session_user {
                Some(u) => u,
                None => {
                    let e = KError::new_style(
                        401,
                        "KE-010003207",
                        "Can't authenticate. Please login again.",
                    );
                    return Reply::auth_error(401, &e, &url_with_query);
                }
            },
        };

        let mut reply = self.dispatch(r, rest, principal, now);
        reply.set_cookie = set_cookie;
        reply
    }

    fn dispatch(&mut self, r: &Req, rest: &str, principal: String, now: i64) -> Reply {
        let segs: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let route = match route(&r.method, &segs) {
            Ok(route) => route,
            Err(Miss::NotFound) => {
                return Reply::spring_error(404, &r.path, now, r.accept.as_deref())
            }
            Err(Miss::MethodNotAllowed) => {
                return Reply::spring_error(405, &r.path, now, r.accept.as_deref())
            }
        };
        let variant = match negotiate(r.accept.as_deref()) {
            Negotiated::Serve(v) => v,
            Negotiated::Ambiguous => return Reply::spring_error(500, &r.path, now, None),
            Negotiated::NotAcceptable => {
                return Reply::spring_error(406, &r.path, now, r.accept.as_deref())
            }
        };
        let is_group_route = matches!(
            route,
            Route::GroupMembers(_) | Route::AddGroup(_) | Route::DeleteGroup(_) | Route::GroupUsers
        );
        if is_group_route && variant == Variant::Internal {
            // The internal group controller is not modelled.
            return Reply::spring_error(406, &r.path, now, r.accept.as_deref());
        }
        // ReloadAuthoritiesInterceptor: authorities come from the store on every request; a
        // deleted user's session becomes anonymous (and is dropped).
        let user = self.find(&principal).map(|k| &self.users[&k]);
        let ctx = Ctx {
            admin: user.is_some_and(|u| u.authorities.iter().any(|a| a == ROLE_ADMIN)),
            principal: user.map(|u| u.username.clone()),
            variant,
        };
        if ctx.principal.is_none() {
            if let Some(c) = &r.cookie {
                self.sessions.remove(c);
            }
        }
        let content_type = match variant {
            Variant::Public => PUBLIC_CT,
            Variant::Internal => INTERNAL_CT,
        };
        let result = match route {
            Route::ListUsers => self.list_users(r, &ctx),
            Route::CreateUser => parse_body(&r.body)
                .and_then(|v| user_request(&v))
                .and_then(|u| {
                    ctx.require_admin()?;
                    self.create_user(u)
                })
                .map(|()| ok_body("")),
            Route::BatchCreate => parse_body(&r.body)
                .and_then(|v| match v {
                    Value::Array(items) => items.iter().map(user_request).collect(),
                    _ => Err(not_a_list()),
                })
                .and_then(|users: Vec<UserReq>| {
                    ctx.require_admin()?;
                    // One create after another, not atomic (K35, NUC:329-334).
                    users.into_iter().try_for_each(|u| self.create_user(u))
                })
                .map(|()| ok_body("")),
            Route::UpdateUser => parse_body(&r.body)
                .and_then(|v| user_request(&v))
                .and_then(|u| {
                    ctx.require_admin()?;
                    self.update_user(u, &ctx)
                })
                .map(|()| ok_body("")),
            Route::DeleteUserBody => parse_body(&r.body)
                .and_then(|v| opt_str(object(&v)?, "username"))
                .and_then(|name| {
                    ctx.require_admin()?;
                    self.delete_user(&name.unwrap_or_default(), &ctx)
                })
                .map(|()| ok_body("")),
            Route::DeleteUserPath(x) => ctx
                .require_admin()
                .and_then(|()| match ctx.variant {
                    Variant::Public => self.delete_user(&x, &ctx),
                    Variant::Internal => self.delete_user_by_uuid(&x, &ctx),
                })
                .map(|()| ok_body("")),
            Route::BatchDelete => parse_body(&r.body)
                .and_then(|v| string_list(&v))
                .and_then(|names| {
                    ctx.require_admin()?;
                    self.batch_delete(&names, &ctx)
                })
                .map(|()| ok_body("")),
            Route::Password => parse_body(&r.body)
                .and_then(|v| {
                    let o = object(&v)?;
                    Ok((
                        opt_str(o, "username")?,
                        opt_str(o, "password")?,
                        opt_str(o, "new_password")?,
                    ))
                })
                .and_then(|(u, p, n)| self.change_password(u, p, n, &ctx))
                .map(|()| ok_body("")),
            Route::GroupMembers(g) => self.group_members(r, &g, &ctx),
            Route::AddGroup(name) => {
                let name = match name {
                    Some(n) => Ok(Some(n)),
                    None => parse_body(&r.body).and_then(|v| opt_str(object(&v)?, "group_name")),
                };
                name.and_then(|n| {
                    ctx.require_admin()?;
                    let n = n.unwrap_or_default();
                    check_group_name(&n)?;
                    self.add_group(&n)
                })
                .map(|()| ok_body("add user group"))
            }
            Route::DeleteGroup(g) => ctx
                .require_admin()
                .and_then(|()| self.delete_group_http(&g))
                .map(|()| ok_body("del user group")),
            Route::GroupUsers => parse_body(&r.body)
                .and_then(|v| {
                    let o = object(&v)?;
                    let users = match o.get("users") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(v) => string_list(v)?,
                    };
                    Ok((opt_str(o, "group_name")?, users))
                })
                .and_then(|(g, users)| {
                    ctx.require_admin()?;
                    self.modify_group_users(&g.unwrap_or_default(), &users, &ctx)
                })
                .map(|()| ok_body("modify users in user group")),
        };
        match result {
            Ok(body) => Reply::new(200, content_type, body),
            Err(e) => Reply::new(
                e.status,
                content_type,
                ordered_object(&e.fields(&r.url()), false),
            ),
        }
    }
}

fn login_failed() -> KError {
    KError::new_style(
        401,
        "KE-010003208",
        "Invalid username or password. Please check and try again.",
    )
}

/// `{"code":"000","data":"","msg":…}` (K34); group routes say what they did.
fn ok_body(msg: &str) -> Vec<u8> {
    ordered_object(
        &[
            ("code", Value::from("000")),
            ("data", Value::from("")),
            ("msg", Value::from(msg)),
        ],
        false,
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Request parsing with Jackson's and Spring's rules
// ---------------------------------------------------------------------------------------------

/// A `UserRequest` body (UR:45-55).
struct UserReq {
    username: Option<String>,
    password: Option<String>,
    authorities: Vec<String>,
    disabled: Option<bool>,
    default_password: Option<bool>,
}

fn parse_body(body: &[u8]) -> Result<Value, KError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(KError::unreadable_body(
            "Required request body is missing".to_string(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| KError::unreadable_body(format!("JSON parse error: {e}")))
}

fn object(v: &Value) -> Result<&serde_json::Map<String, Value>, KError> {
    v.as_object().ok_or_else(|| {
        KError::unreadable_body(
            "JSON parse error: Cannot deserialize value from a non-object value".to_string(),
        )
    })
}

fn not_a_list() -> KError {
    KError::unreadable_body(
        "JSON parse error: Cannot deserialize value of type `java.util.ArrayList` from Object value"
            .to_string(),
    )
}

/// Jackson's String binding: scalars are coerced, null is absent.
fn scalar_string(v: &Value) -> Result<Option<String>, KError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(KError::unreadable_body(
            "JSON parse error: Cannot deserialize value of type `java.lang.String` from a structured value"
                .to_string(),
        )),
    }
}

fn opt_str(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, KError> {
    o.get(key).map_or(Ok(None), scalar_string)
}

fn string_list(v: &Value) -> Result<Vec<String>, KError> {
    let Value::Array(items) = v else {
        return Err(not_a_list());
    };
    items
        .iter()
        .map(|i| scalar_string(i).map(Option::unwrap_or_default))
        .collect()
}

fn user_request(v: &Value) -> Result<UserReq, KError> {
    let o = object(v)?;
    // `disabled` uses ArgsTypeJsonDeserializer: booleans, "true"/"false"/"TRUE"/"FALSE"/"null"
    // or "" (false); JSON null is false; anything else is KE-010043209 (K34).
    let disabled = match o.get("disabled") {
        None => None,
        Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.is_empty() => Some(false),
        Some(Value::String(s))
            if ["true", "false", "TRUE", "FALSE", "null"].contains(&s.as_str()) =>
        {
            Some(s.eq_ignore_ascii_case("true"))
        }
        Some(other) => {
            let text = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string);
            return Err(KError::new_style(
                500,
                "KE-010043209",
                format!("The entered parameter value \"{text}\" is invalid. Only support \"Boolean\" at the moment. Please check and try again."),
            ));
        }
    };
    let default_password = match o.get("defaultPassword") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
        Some(_) => {
            return Err(KError::unreadable_body(
                "JSON parse error: Cannot deserialize value of type `java.lang.Boolean`"
                    .to_string(),
            ))
        }
    };
    Ok(UserReq {
        username: opt_str(o, "username")?,
        password: opt_str(o, "password")?,
        authorities: match o.get("authorities") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => string_list(v)?,
        },
        disabled,
        default_password,
    })
}

/// Spring's `Integer` request-parameter binding: absent or empty → default; whitespace removed;
/// hex (`0x`, `#`) accepted; anything else is a 400 KE-010000003 (NBC:238-246).
fn int_param(r: &Req, name: &str, default: i32) -> Result<i32, KError> {
    let Some(raw) = r.param(name).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    let t: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.as_str()),
    };
    let hex = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .or_else(|| digits.strip_prefix('#'));
    let parsed = match hex {
        Some(h) => i64::from_str_radix(h, 16)
            .ok()
            .map(|v| if neg { -v } else { v })
            .and_then(|v| i32::try_from(v).ok()),
        None => t.parse::<i32>().ok(),
    };
    parsed.ok_or_else(|| {
        KError::invalid_parameter(format!(
            "Failed to convert value of type 'java.lang.String' to required type 'java.lang.Integer'; nested exception is java.lang.NumberFormatException: For input string: \"{t}\""
        ))
    })
}

/// Spring's `boolean` binding: true/on/yes/1, false/off/no/0, any case; absent or empty → false.
fn bool_param(r: &Req, name: &str) -> Result<bool, KError> {
    let Some(raw) = r.param(name) else {
        return Ok(false);
    };
    match raw.trim().to_lowercase().as_str() {
        "" | "false" | "off" | "no" | "0" => Ok(false),
        "true" | "on" | "yes" | "1" => Ok(true),
        _ => Err(KError::invalid_parameter(format!(
            "Failed to convert value of type 'java.lang.String' to required type 'boolean'; nested exception is java.lang.IllegalArgumentException: Invalid boolean value '{raw}'"
        ))),
    }
}

/// K12: `PagingUtil.cutPage` with Java `int` arithmetic and `ArrayList.subList`'s checks (PU:32-51):
/// past the end → empty; negative `page_offset` → 500; negative `page_size` → 400.
fn cut_page(len: usize, page_offset: i32, page_size: i32) -> Result<Range<usize>, KError> {
    let len = len as i64;
    let begin = page_offset.wrapping_mul(page_size);
    let end = begin.wrapping_add(page_size);
    if begin as i64 >= len {
        return Ok(0..0);
    }
    let end = (end as i64).min(len);
    if begin < 0 {
        return Err(KError::unknown(
            "java.lang.IndexOutOfBoundsException",
            format!("fromIndex = {begin}"),
        ));
    }
    if begin as i64 > end {
        return Err(KError::invalid_parameter(format!(
            "fromIndex({begin}) > toIndex({end})"
        )));
    }
    Ok(begin as usize..end as usize)
}

/// NUC.checkUsername (NUC:565-588).
fn check_username(name: &str) -> Result<(), KError> {
    let invalid = |text: &str| KError::old(500, "KE-010003003", "Invalid User Name", text);
    if name.is_empty() {
        return Err(KError::old(
            500,
            "KE-010003002",
            "Empty User Name",
            "Username should not be empty.",
        ));
    }
    if name.starts_with('.') {
        return Err(invalid(
            "The user / group names cannot start with a period (.).",
        ));
    }
    // Java's trim() strips every char up to U+0020.
    if name.trim_matches(|c: char| c <= ' ') != name {
        return Err(invalid(
            "User / group names cannot start or end with a space.",
        ));
    }
    if java_len(name) > 180 {
        return Err(invalid(
            "The username should contain less than 180 characters. Please check and try again.",
        ));
    }
    if name.chars().any(|c| c as u32 > 0xff) {
        return Err(invalid(
            "Only alphanumeric characters can be used in user / group names",
        ));
    }
    if name.chars().any(|c| "\\/:*?\"<>|".contains(c)) {
        return Err(invalid(ILLEGAL_NAME_CHARS));
    }
    Ok(())
}

const ILLEGAL_NAME_CHARS: &str = "The user / group names cannot contain the following symbols: backslash (\\),  slash mark (/), colon (:), asterisk (*), question mark (?), quotation mark (\"), less than sign (<), greater than sign (>), vertical bar (|).";

/// NUserGroupController.checkGroupName.
fn check_group_name(name: &str) -> Result<(), KError> {
    let invalid = |text: &str| KError::old(500, "KE-010004003", "Invalid Usergroup Name", text);
    if name.is_empty() {
        return Err(KError::empty_param("group_name"));
    }
    if name.starts_with('.') {
        return Err(invalid(
            "The user / group names cannot start with a period (.).",
        ));
    }
    if name.trim_matches(|c: char| c <= ' ') != name {
        return Err(invalid(
            "User / group names cannot start or end with a space.",
        ));
    }
    if name.chars().any(|c| c as u32 > 0xff) {
        return Err(invalid(
            "Only alphanumeric characters can be used in user / group names",
        ));
    }
    if name.chars().any(|c| "\\/:*?\"<>|".contains(c)) {
        return Err(invalid(ILLEGAL_NAME_CHARS));
    }
    Ok(())
}

/// A password that matches the Base64 pattern is decoded first (NUC:151-152, 636-642).
fn pwd_base64_decode(p: &str) -> String {
    let b = p.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    let is_b64 = !b.is_empty() && b.len().is_multiple_of(4) && {
        let (body, tail) = b.split_at(b.len() - 4);
        body.iter().all(alphabet)
            && (tail.iter().all(alphabet)
                || (tail[..3].iter().all(alphabet) && tail[3] == b'=')
                || (tail[..2].iter().all(alphabet) && &tail[2..] == b"=="))
    };
    match is_b64.then(|| STANDARD.decode(b).ok()).flatten() {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => p.to_string(),
    }
}

/// Length, then pattern: ≥ 8 chars with a digit, a letter and one of
/// ``~!@#$%^&*(){}|:"<>?[];',./` `` (NUC:148-149, 545-563).
fn check_password(p: &str) -> Result<(), KError> {
    if java_len(p) < 8 {
        return Err(KError::old(
            500,
            "KE-010005002",
            "Short Password",
            "The password should contain more than 8 characters!",
        ));
    }
    let line_break = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let ok = !p.chars().any(line_break)
        && p.chars().any(|c| c.is_ascii_digit())
        && p.chars().any(|c| c.is_ascii_alphabetic())
        && p.chars()
            .any(|c| "~!@#$%^&*(){}|:\"<>?[];',./`".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KError::old(
            500,
            "KE-010005001",
            "Invalid Password",
            "The password should contain at least one number, letter and special character (~!@#$%^&*(){}|:\"<>?[];\\'\\,./`).",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Controllers
// ---------------------------------------------------------------------------------------------

impl Inner {
    /// `GET /api/user` (K11-K16; OUC:63-83, NUC:367-383).
    fn list_users(&self, r: &Req, ctx: &Ctx) -> Result<Vec<u8>, KError> {
        // Bound in declaration order; a bad value fails before the admin check.
        let name = r.param("name");
        let case_sensitive = bool_param(r, "is_case_sensitive")?;
        let page_offset = int_param(r, "page_offset", 0)?;
        let page_size = int_param(r, "page_size", 10)?;
        ctx.require_admin()?;
        // `contains`, case-insensitively unless asked; empty means all (US:83-94).
        let needle = name.filter(|n| !n.is_empty());
        let folded = needle.as_deref().map(fold);
        let matches: Vec<&KylinUser> = self
            .users
            .iter()
            .filter(|(key, u)| match (&needle, &folded) {
                (Some(n), _) if case_sensitive => u.username.contains(n.as_str()),
                (_, Some(f)) => key.contains(f.as_str()),
                _ => true,
            })
            .map(|(_, u)| u)
            .collect();
        let page = cut_page(matches.len(), page_offset, page_size)?;
        Ok(data_result(
            &matches[page],
            matches.len(),
            page_offset,
            page_size,
            |out, u| match ctx.variant {
                Variant::Public => write_public_user(out, u),
                Variant::Internal => write_internal_user(out, u),
            },
        ))
    }

    /// K17: `GET /api/user_group/group_members/{group}`, members by exact group name, `username` a
    /// case-insensitive substring filter, paged like the user list (OpenUserGroupController:89-112).
    fn group_members(&self, r: &Req, group: &str, ctx: &Ctx) -> Result<Vec<u8>, KError> {
        let username = r.param("username").filter(|u| !u.trim().is_empty());
        let page_offset = int_param(r, "page_offset", 0)?;
        let page_size = int_param(r, "page_size", 10)?;
        ctx.require_admin()?;
        let folded = username.as_deref().map(fold);
        let members: Vec<&KylinUser> = self
            .users
            .iter()
            .filter(|(_, u)| u.authorities.iter().any(|a| a == group))
            .filter(|(key, _)| folded.as_ref().is_none_or(|f| key.contains(f.as_str())))
            .map(|(_, u)| u)
            .collect();
        let page = cut_page(members.len(), page_offset, page_size)?;
        Ok(data_result(
            &members[page],
            members.len(),
            page_offset,
            page_size,
            write_public_user,
        ))
    }

    /// K34: `POST /api/user` (NUC:174-200), checks in Kylin's order.
    fn create_user(&mut self, u: UserReq) -> Result<(), KError> {
        let disabled = u.disabled.ok_or_else(|| KError::empty_param("disabled"))?;
        let username = u.username.unwrap_or_default();
        check_username(&username)?;
        let password = u
            .password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| KError::empty_param("password"))?;
        let password = pwd_base64_decode(&password);
        check_password(&password)?;
        self.check_groups(&u.authorities, true)?;
        if let Some(key) = self.find(&username) {
            // The aspect has already rewritten the name to the stored spelling (KUS:73-75).
            return Err(KError::old(
                500,
                "KE-010003004",
                "Duplicate User Name",
                format!("Username:[{}] already exists", self.users[&key].username),
            ));
        }
        self.insert_user(&username, &password, u.authorities, disabled);
        Ok(())
    }

    /// Non-empty (create only), existing, not repeated (NUC:644-666).
    fn check_groups(&self, groups: &[String], require_some: bool) -> Result<(), KError> {
        if require_some && (groups.is_empty() || groups.iter().any(|g| g.trim().is_empty())) {
            return Err(KError::empty_param("authorities"));
        }
        if let Some(g) = groups.iter().find(|g| !self.groups.contains(*g)) {
            return Err(KError::new_style(
                500,
                "KE-010043220",
                format!("Can't find user group \"{g}\". Please check and try again."),
            ));
        }
        let distinct: BTreeSet<&String> = groups.iter().collect();
        if distinct.len() != groups.len() {
            return Err(KError::new_style(
                500,
                "KE-010043221",
                "The parameter “authorities” already exists. Please check and try again.",
            ));
        }
        Ok(())
    }

    /// K36: `PUT /api/user` (NUC:208-253), a merge onto the stored user, persisted even if nothing
    /// changed; lock counters untouched.
    fn update_user(&mut self, req: UserReq, ctx: &Ctx) -> Result<(), KError> {
        let username = self.canonical(&req.username.clone().unwrap_or_default());
        check_username(&username)?;
        let Some(key) = self.find(&username) else {
            return Err(KError::username_not_found(&username));
        };
        let existing = self.users[&key].clone();
        let mut merged = existing.clone();
        // UserRequest.updateManager (UR:64-89).
        if let Some(d) = req.disabled {
            merged.disabled = d;
        }
        if let Some(d) = req.default_password {
            merged.default_password = d;
        }
        let new_password = req.password.filter(|p| !p.is_empty());
        if !req.authorities.is_empty() {
            let mut groups = req.authorities;
            // The legacy `--disabled--` authority disables (UR:78-81).
            if groups.iter().any(|g| g == "--disabled--") {
                merged.disabled = true;
                groups.retain(|g| g != "--disabled--");
            }
            merged.authorities = with_all_users(groups);
        }
        if ctx.is(&merged.username) && merged.disabled {
            return Err(KError::failed_update_user("Cannot disable yourself!"));
        }
        if ctx.is(&username) {
            let wanted: BTreeSet<&String> = merged.authorities.iter().collect();
            let current: BTreeSet<&String> = existing
                .authorities
                .iter()
                .filter(|g| self.groups.contains(*g))
                .collect();
            if wanted != current {
                return Err(KError::failed_update_user(
                    "The object is invalid. Please check and try again.",
                ));
            }
        }
        if let Some(p) = new_password {
            let p = pwd_base64_decode(&p);
            // Only checked when the result is not a default password; an unchanged password is
            // a bcrypt hash, which always passes.
            if !merged.default_password {
                check_password(&p)?;
            }
            merged.password = p;
        }
        self.check_groups(&merged.authorities, false)?;
        let keeps_admin = merged.authorities.iter().any(|g| g == ROLE_ADMIN);
        self.check_default_admin(&merged.username, keeps_admin, ctx)?;
        self.write_user(&key, |u| {
            u.disabled = merged.disabled;
            u.default_password = merged.default_password;
            u.password = merged.password;
            u.authorities = merged.authorities;
        });
        Ok(())
    }

    /// AccessService.checkDefaultAdmin: only ADMIN may touch ADMIN, and only when allowed.
    fn check_default_admin(&self, target: &str, allowed: bool, ctx: &Ctx) -> Result<(), KError> {
        let target_is_admin = fold(target) == fold(ADMIN);
        let caller_is_admin = ctx
            .principal
            .as_deref()
            .is_some_and(|p| fold(p) == fold(ADMIN));
        if target_is_admin && (!allowed || !caller_is_admin) {
            return Err(KError::default_admin());
        }
        Ok(())
    }

    /// K38: `DELETE /api/user/{username}` and with a body (NUC:336-364).
    fn delete_user(&mut self, name: &str, ctx: &Ctx) -> Result<(), KError> {
        let name = self.canonical(name);
        check_username(&name)?;
        let Some(key) = self.find(&name) else {
            return Err(KError::user_not_exist(format!("User '{name}' not found.")));
        };
        if ctx.is(&name) {
            return Err(KError::failed_update_user("Cannot delete yourself!"));
        }
        self.check_default_admin(&name, false, ctx)?;
        self.users.remove(&key);
        Ok(())
    }

    /// The internal controller's `DELETE /api/user/{uuid}` (NUC:255-290).
    fn delete_user_by_uuid(&mut self, uuid: &str, ctx: &Ctx) -> Result<(), KError> {
        let Some(name) = self
            .users
            .values()
            .find(|u| u.uuid.eq_ignore_ascii_case(uuid))
            .map(|u| u.username.clone())
        else {
            return Err(KError::user_not_exist(format!(
                "User '{uuid}' does not exist. Please make sure the user exists."
            )));
        };
        if ctx.is(&name) {
            return Err(KError::failed_update_user("Cannot delete yourself!"));
        }
        self.check_default_admin(&name, false, ctx)?;
        self.users.remove(&fold(&name));
        Ok(())
    }

    /// `DELETE /api/user/batch`: all names validated, then deleted one by one, so a refused
    /// `ADMIN` in the middle leaves the earlier ones deleted (NUC:292-322).
    fn batch_delete(&mut self, names: &[String], ctx: &Ctx) -> Result<(), KError> {
        for n in names {
            check_username(n)?;
        }
        if names.iter().any(|n| ctx.is(n)) {
            return Err(KError::failed_update_user("Cannot delete yourself!"));
        }
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| self.find(n).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(KError::user_not_exist(format!(
                "User '{}' not found.",
                missing.join(",")
            )));
        }
        for n in names {
            self.check_default_admin(n, false, ctx)?;
            self.users.remove(&fold(n));
        }
        Ok(())
    }

    /// K37: `PUT /api/user/password` (NUC:446-500), no admin role needed for your own password.
    fn change_password(
        &mut self,
        username: Option<String>,
        password: Option<String>,
        new_password: Option<String>,
        ctx: &Ctx,
    ) -> Result<(), KError> {
        let username = self.canonical(&username.unwrap_or_default());
        if !ctx.admin && !ctx.is(&username) {
            return Err(KError::permission_denied("Permission denied!"));
        }
        self.check_default_admin(&username, true, ctx)?;
        check_username(&username)?;
        let Some(key) = self.find(&username) else {
            return Err(KError::username_not_found(&username));
        };
        let old = pwd_base64_decode(password.as_deref().unwrap_or(""));
        // The old password is checked only when changing your own (NUC:465-470).
        if ctx.is(&username) {
            if password.as_deref().is_none_or(str::is_empty) {
                return Err(KError::empty_param("password"));
            }
            if old != self.users[&key].password {
                return Err(KError::old(
                    500,
                    "KE-010005003",
                    "Failed Update Password",
                    "Old password is not correct!",
                ));
            }
        }
        let new = new_password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| KError::empty_param("new_password"))?;
        let new = pwd_base64_decode(&new);
        check_password(&new)?;
        if new == old {
            return Err(KError::old(
                500,
                "KE-010005003",
                "Failed Update Password",
                "New password should not be same as old one!",
            ));
        }
        self.write_user(&key, |u| {
            u.password = new;
            u.default_password = false;
            clear_failures(u);
            u.authorities = with_all_users(std::mem::take(&mut u.authorities));
        });
        Ok(())
    }

    /// K39: `DELETE /api/user_group/{group}`, found ignoring case; ALL_USERS and ROLE_ADMIN stay.
    fn delete_group_http(&mut self, name: &str) -> Result<(), KError> {
        let Some(real) = self.groups.iter().find(|g| fold(g) == fold(name)).cloned() else {
            return Err(KError::old(
                500,
                "KE-010004001",
                "Usergroup Not Exist",
                format!(
                    "Invalid values in parameter “group_name“. The value {name} doesn’t exist."
                ),
            ));
        };
        if real == ALL_USERS || real == ROLE_ADMIN {
            return Err(KError::old(
                500,
                "KE-010004003",
                "Invalid Usergroup Name",
                "Failed to delete user group, user groups of ALL_USERS and ROLE_ADMIN cannot be deleted.",
            ));
        }
        self.remove_group(&real);
        Ok(())
    }

    /// K39: `PUT /api/user_group/users`, the group's members become exactly `users`; each user moved
    /// in or out is a persisted write (UGS:124-165). Atomic here (Kylin runs it in one
    /// transaction).
    fn modify_group_users(
        &mut self,
        group: &str,
        users: &[String],
        ctx: &Ctx,
    ) -> Result<(), KError> {
        check_group_name(group)?;
        if !self.groups.contains(group) {
            return Err(KError::invalid_parameter(format!(
                "Invalid values in parameter “group_name“. The value {group} doesn’t exist."
            )));
        }
        let members: Vec<String> = self
            .users
            .values()
            .filter(|u| u.authorities.iter().any(|a| a == group))
            .map(|u| u.username.clone())
            .collect();
        // List.removeAll: exact names.
        let move_in: Vec<&String> = users.iter().filter(|u| !members.contains(u)).collect();
        let move_out: Vec<&String> = members.iter().filter(|m| !users.contains(m)).collect();
        for u in move_in.iter().chain(move_out.iter()) {
            if fold(u) == fold(ADMIN) {
                return Err(KError::permission_denied(
                    "You cannot add,modify or remove the system administrator’s rights",
                ));
            }
            if ctx.principal.as_deref().is_some_and(|p| fold(p) == fold(u)) {
                return Err(KError::failed_update_user(
                    "The object is invalid. Please check and try again.",
                ));
            }
        }
        if let Some(u) = move_in.iter().find(|u| self.find(u).is_none()) {
            return Err(KError::username_not_found(u));
        }
        for u in move_in {
            self.write_user(u, |u| u.authorities.push(group.to_string()));
        }
        for u in move_out {
            self.write_user(u, |u| u.authorities.retain(|a| a != group));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering: written by hand, in Java field order, so 100k users serialize quickly
// ---------------------------------------------------------------------------------------------

/// `{"code":"000","data":{"value":[…],"total_size":N,"offset":O,"limit":L},"msg":""}` (K13, DR:34-43).
fn data_result(
    page: &[&KylinUser],
    total: usize,
    offset: i32,
    limit: i32,
    write: impl Fn(&mut Vec<u8>, &KylinUser),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + page.len() * 360);
    out.extend_from_slice(br#"{"code":"000","data":{"value":["#);
    for (i, u) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(&mut out, u);
    }
    let _ = write!(
        out,
        r#"],"total_size":{total},"offset":{offset},"limit":{limit}}},"msg":""}}"#
    );
    out
}

fn write_authorities(out: &mut Vec<u8>, groups: &[String]) {
    out.push(b'[');
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"authority":"#);
        write_json_str(out, g);
        out.push(b'}');
    }
    out.push(b']');
}

/// `UserInfoResponse` (K15, UIR:34-57); no password, version or mvcc.
fn write_public_user(out: &mut Vec<u8>, u: &KylinUser) {
    out.extend_from_slice(br#"{"username":"#);
    write_json_str(out, &u.username);
    out.extend_from_slice(br#","authorities":"#);
    write_authorities(out, &u.authorities);
    let _ = write!(
        out,
        r#","disabled":{},"default_password":{},"locked":{},"uuid":"#,
        u.disabled, u.default_password, u.locked,
    );
    // A test may have set any uuid through `update_user`, so it is escaped like the names.
    write_json_str(out, &u.uuid);
    let _ = write!(
        out,
        r#","last_modified":{},"create_time":{},"locked_time":{},"wrong_time":{},"first_login_failed_time":{}}}"#,
        u.last_modified, u.create_time, u.locked_time, u.wrong_time, u.first_login_failed_time
    );
}

/// K16: `ManagedUserResponse`, the `ManagedUser` fields unwrapped (RootPersistentEntity's first,
/// `defaultPassword` in camelCase, password filtered out by `passwordFilter`), then
/// `has_query_permission` and `is_super_admin` (ManagedUserResponse.java:30-37). Query permission
/// is modelled as "global admin", super admin as "is ADMIN and has it" (NUC:367-383).
fn write_internal_user(out: &mut Vec<u8>, u: &KylinUser) {
    let query = u.authorities.iter().any(|a| a == ROLE_ADMIN);
    out.extend_from_slice(br#"{"uuid":"#);
    write_json_str(out, &u.uuid);
    let _ = write!(
        out,
        r#","last_modified":{},"create_time":{},"version":"5.0.0.0-SNAPSHOT","mvcc":{},"username":"#,
        u.last_modified, u.create_time, u.mvcc
    );
    write_json_str(out, &u.username);
    out.extend_from_slice(br#","authorities":"#);
    write_authorities(out, &u.authorities);
    let _ = write!(
        out,
        r#","disabled":{},"defaultPassword":{},"locked":{},"locked_time":{},"wrong_time":{},"first_login_failed_time":{},"has_query_permission":{},"is_super_admin":{}}}"#,
        u.disabled,
        u.default_password,
        u.locked,
        u.locked_time,
        u.wrong_time,
        u.first_login_failed_time,
        query,
        query && fold(&u.username) == fold(ADMIN)
    );
}
