//! Sources: where user data comes from. One folder per kind (`superset/`, `kylin/`), each
//! owning its client, wire shapes, config and cursor; this module is the one interface they
//! implement and the one registry that lists them.
//!
//! A source reads "what is there now" and hands it over a page at a time ([`Fresh`]), reading
//! what it stored last time only through [`Known`], record by record, so that no cycle holds
//! every user (docs/performance.md, Memory); plus any events it reads natively (Superset's
//! action log). It never writes to the store and never derives user events itself: the cycle
//! compares and commits. Adding a kind is one folder and one line in [`registry!`] below; what
//! every kind must supply (its product facts, its `rollcall demo`, …) the compiler then asks
//! for. [`demo`] walks any kind's demo and never names one.

mod bounds;
pub mod demo;
pub mod kylin;
pub mod superset;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::de::DeValue;
use toml::Spanned;

use crate::event::Derived;
use crate::settings::{table_schema, Entry, Problems, SecretError, SecretRef};
pub use crate::store::Known;
use crate::store::{Credentials, LoginRefusal, StoreError};
use crate::user::Account;
use demo::{DemoError, Steps, Tour};

/// How much of its upstream a cycle reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every user: the only way to see deletions.
    Full,
    /// What changed since the cursor, where the source can tell.
    Incremental,
}

/// Where a source hands over the users it reads, as it reads them.
pub trait Fresh<U: Account>: Send {
    /// Users as they are now. Each is compared with its stored record by key, and what changed
    /// is committed with its events (in chunks, before the cycle ends). A user handed over
    /// twice in one cycle counts as read last; a user not handed over stays as stored.
    fn users(&mut self, users: Vec<U>) -> Result<(), StoreError>;
}

/// What one cycle saw besides the users it handed over.
pub struct Observation<U: Account> {
    /// Users confirmed deleted (never merely missing from a list). The mass-delete guard
    /// sees them all before any deletion is emitted.
    pub gone: Vec<U::Key>,
    /// Requests made, for logs and metrics.
    pub requests: usize,
}

/// One check of `rollcall doctor`: what was tried, and how it went.
pub struct Probe {
    pub what: String,
    pub result: Result<(), SourceError>,
}

/// How often a source is polled.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub poll_interval: Duration,
    /// A full read is due this long after the last one.
    pub full_reconcile_interval: Duration,
    /// A full read ends with a `sync.completed` at most this often (zero: every one).
    pub sync_every: Duration,
}

/// One source of users.
pub trait Source: Send + 'static {
    type User: Account;
    /// What the source remembers between cycles (high-water marks, how far a log was read);
    /// the store keeps it with the source's state and never reads it.
    type Cursor: Serialize + DeserializeOwned + Default + Send + Sync;

    fn name(&self) -> &str;

    /// The event `source` attribute, e.g. `superset://prod`.
    fn uri(&self) -> String;

    fn schedule(&self) -> Schedule;

    /// On the first cycle, emit one `user.observed` per user instead of storing silently.
    fn emit_initial_snapshot(&self) -> bool;

    /// The account rollcall logs in with, whose own logins are not events.
    fn service_account(&self) -> Option<&str>;

    /// The credentials this source logs in with ([`Login::credentials`]): the cycle sends no
    /// request with credentials the upstream refused before.
    fn credentials(&self) -> &Credentials;

    /// Read the users `mode` asks for and hand them to `fresh`; `known` is what is stored.
    /// On an error, what was handed over may be committed already: each user as read, so
    /// the next cycle finds it unchanged.
    fn observe(
        &mut self,
        known: &Known<Self::User>,
        cursor: &mut Self::Cursor,
        mode: Mode,
        fresh: &mut dyn Fresh<Self::User>,
    ) -> impl Future<Output = Result<Observation<Self::User>, SourceError>> + Send;

    /// Events the source reads as such (not derived by the diff), after the user events of
    /// the cycle are committed; they and the cursor are committed next. A failure here is
    /// recorded in the cursor and must never fail the cycle, and the read must end within a
    /// budget: the next poll of the users waits for it.
    fn native_events(
        &mut self,
        cursor: &mut Self::Cursor,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Vec<Derived>> + Send;

    /// For `rollcall doctor`: log in once and make one small read of each thing a cycle needs,
    /// stopping at a refused login (one failed login at most). Changes nothing upstream and
    /// nothing in the store.
    fn probe(&mut self) -> impl Future<Output = Vec<Probe>> + Send;
}

/// What a source kind's config offers the registry.
pub trait SourceKind {
    fn name(&self) -> &str;
    /// Where and as whom the source logs in.
    fn login(&self) -> Login<'_>;
    fn poll_interval(&self) -> Duration;
    /// How long one cycle may run before the runner cancels it (see [`poll_deadline`]).
    fn poll_deadline(&self) -> Duration;
    /// Checks beyond the shape of the table, each problem at its key.
    fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>);
    /// One line for `check-config`: never a secret.
    fn describe(&self) -> String;
    /// Read the secrets the source needs, so `check-config` can say they are missing.
    fn check_secrets(&self) -> Result<(), SourceError>;
    /// What `status` shows of the stored cursor: what an operator can act on, no internals.
    fn status(&self, cursor: &StoredCursor) -> serde_json::Value;
    /// The event `source` attribute of this source's events, e.g. `superset://prod`.
    fn uri(&self) -> String;
    /// Each user the store holds of this source, in key order, as its events name and publish
    /// it: its `subject` and its record (`data.user`), handed to `each` one at a time
    /// (`rollcall table rebuild`; see [`stored_users`]).
    fn stored_users(
        &self,
        store: &crate::store::Store,
        each: &mut StoredUser<'_>,
    ) -> Result<(), StoreError>;
    /// `rollcall demo`: log in once, as this source's own account with `password`, to the
    /// (test!) instance it points at, and hand over the kind's demo steps.
    fn demo<'a>(
        &'a self,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Box<dyn Steps>, DemoError>>;
}

/// A cycle's deadline when `poll_deadline` is not set: an hour, or five request timeouts when
/// that is longer. Far beyond any cycle that makes progress (a full reconcile of 100,000 users
/// against a real Superset took about a minute, docs/superset-setup.md "Large Supersets"), so that it only
/// ends a cycle that is stuck, and never one that a large source needs.
pub const DEFAULT_POLL_DEADLINE: Duration = Duration::from_secs(3600);

/// The deadline of one cycle of a source: `set` (its `poll_deadline`), or the default that
/// follows from its `request_timeout`.
pub fn poll_deadline(set: Option<Duration>, request_timeout: Duration) -> Duration {
    set.unwrap_or_else(|| DEFAULT_POLL_DEADLINE.max(request_timeout.saturating_mul(5)))
}

/// How every source kind's table says where to log in: checked and read alike for each kind.
pub struct Login<'a> {
    pub name: &'a str,
    pub url: &'a url::Url,
    pub username: &'a str,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a std::path::Path>,
}

impl Login<'_> {
    /// Exactly one place for the password, and an http(s) URL without credentials in it.
    pub fn check(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        // A password in the URL would be printed wherever the URL is (check-config, every
        // error, `status`, the store); the line is not quoted, so this message does not either.
        if !self.url.username().is_empty() || self.url.password().is_some() {
            p.at_secret_line(
                entry.key("url"),
                format!(
                    "source `{}`: `url` must not hold a user or password (`user:password@`): remove it, set `username`, and put the password in the file `password_file` names or the variable `password_env` names",
                    self.name
                ),
            );
        }
        if self.password_env.is_some() == self.password_file.is_some() {
            p.at(
                entry.span(),
                format!(
                    "source `{}`: set exactly one of `password_env` or `password_file`",
                    self.name
                ),
            );
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            p.at(
                entry.key("url"),
                format!("`url` must be http or https, not `{}`", self.url.scheme()),
            );
        }
    }

    /// Read the password from the environment or the file the config names.
    pub fn password(&self) -> Result<secrecy::SecretString, SecretError> {
        SecretRef {
            env_key: "password_env",
            file_key: "password_file",
            env: self.password_env,
            file: self.password_file,
        }
        .read()
    }

    /// What a refused login is remembered under: changing any of the URL, the username or the
    /// password makes other credentials, which are tried. Each part is length-prefixed, so no
    /// two different triples hash alike; a fixed label keeps the hash from matching any other
    /// use of these inputs.
    pub fn credentials(&self, password: &secrecy::SecretString) -> Credentials {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"rollcall login credentials v1");
        for part in [self.url.as_str(), self.username, password.expose_secret()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        Credentials(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The credentials as the config says now (reading the password).
    pub fn current_credentials(&self) -> Result<Credentials, SecretError> {
        Ok(self.credentials(&self.password()?))
    }
}

pub use crate::store::StoredCursor;

/// What [`SourceKind::stored_users`] hands each user to: its `subject` and record.
pub type StoredUser<'a> = dyn FnMut(String, Vec<u8>) -> Result<(), StoreError> + 'a;

/// [`SourceKind::stored_users`] for a source whose users are `U`: the subject is the key's, the
/// record serialized as events serialize `data.user` (keys in order, compact), so a row
/// rebuilt from the store is byte for byte the row the user's last event gave.
pub fn stored_users<U: Account>(
    store: &crate::store::Store,
    source: &str,
    each: &mut StoredUser<'_>,
) -> Result<(), StoreError> {
    for kv in store.known::<U>(source)?.records::<serde_json::Value>() {
        let (key, record) = kv?;
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
            what: format!("record of user {key} of source {source}"),
            detail: e.to_string(),
        })?;
        each(key.to_string(), bytes)?;
    }
    Ok(())
}

/// Count and log a user record that could not be read: a warning the first time a reason is
/// seen for that user, a debug line while it stays (`before` is what the last cycle kept).
pub fn note_unreadable<K: Ord + std::fmt::Display>(
    source: &str,
    before: &std::collections::BTreeMap<K, String>,
    user: &K,
    reason: &str,
) {
    metrics::counter!("rollcall_unreadable_records_total", "source" => source.to_owned())
        .increment(1);
    if before.get(user).map(String::as_str) == Some(reason) {
        tracing::debug!(%user, %reason, "user record still unreadable");
    } else {
        tracing::warn!(%user, %reason, "user record unreadable: its stored record is kept and other users go on; see `rollcall status`");
    }
}

/// Read a stored cursor as the source's own type; nothing stored yet reads as its default.
pub fn read_cursor<C: DeserializeOwned>(stored: &StoredCursor) -> Result<C, serde_json::Error> {
    serde_json::from_value(serde_json::Value::Object(stored.clone()))
}

/// A source's cursor as the store keeps it. A cursor type is a struct, so it is an object; any
/// other shape would not fit beside the source state and is stored as nothing.
pub fn stored_cursor<C: Serialize>(cursor: &C) -> StoredCursor {
    match serde_json::to_value(cursor) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => StoredCursor::new(),
    }
}

/// Makes something of a source whatever its kind (the runner: a pollable, type-erased task).
pub trait Visit {
    type Output;
    fn visit<S: Source>(self, source: S) -> Self::Output;
}

/// What the wire formats know of a source kind, found by the scheme of its events' `source`
/// (`superset://prod`). The registry lists one per kind from the kind's own module
/// (`PRODUCT`, `ADMIN_ROLES`), so a kind cannot be added without them.
#[derive(Debug)]
pub struct KindProduct {
    /// The scheme of the kind's `source` URIs: its `kind = "…"`.
    pub scheme: &'static str,
    /// The upstream product's name (OCSF `metadata.product.name`, `service.name`).
    pub product: &'static str,
    /// The roles (or groups) whose grant makes a user an administrator.
    pub admin_roles: &'static [&'static str],
}

impl KindProduct {
    /// The facts of the kind that emitted events with this `source` URI.
    pub fn of(source_uri: &str) -> Option<&'static KindProduct> {
        let (scheme, _) = source_uri.split_once("://")?;
        KIND_PRODUCTS.iter().find(|k| k.scheme == scheme)
    }
}

macro_rules! registry {
    ($($kind:literal => $variant:ident($module:ident :: $config:ident, $source:path)),* $(,)?) => {
        /// One `[[sources]]` table, by kind.
        #[derive(Debug, Clone)]
        pub enum SourceConfig {
            $($variant($module::$config)),*
        }

        /// Every kind's [`KindProduct`].
        pub const KIND_PRODUCTS: &[KindProduct] = &[$(KindProduct {
            scheme: $kind,
            product: $module::PRODUCT,
            admin_roles: $module::ADMIN_ROLES,
        }),*];

        impl SourceConfig {
            /// Every kind, as written in `kind = "…"`.
            pub const KINDS: &[&str] = &[$($kind),*];

            /// Every kind with the schema of its table, for `rollcall config reference`.
            pub const TABLES: &[(&str, fn() -> schemars::Schema)] =
                &[$(($kind, table_schema::<$module::$config>)),*];

            pub fn parse(
                kind: &str,
                v: &Spanned<DeValue<'_>>,
                p: &mut Problems<'_>,
            ) -> Option<SourceConfig> {
                match kind {
                    $($kind => p.de(v).map(SourceConfig::$variant),)*
                    _ => None,
                }
            }

            pub fn kind(&self) -> &dyn SourceKind {
                match self {
                    $(SourceConfig::$variant(c) => c),*
                }
            }

            /// Build the source and hand it to `v`.
            pub fn build<V: Visit>(&self, v: V) -> Result<V::Output, SourceError> {
                match self {
                    $(SourceConfig::$variant(c) => Ok(v.visit(<$source>::new(c.clone())?))),*
                }
            }
        }

        /// Why a source could not be read; each kind's own error, printed as it is.
        #[derive(Debug, thiserror::Error)]
        pub enum SourceError {
            $(
                #[error(transparent)]
                $variant(#[from] $module::Error),
            )*
            #[error("the login with these credentials was refused at {} ({}), so rollcall sends it no more: each refused login counts towards locking the account. Fix `username` or the password (other credentials are tried at once), or, once the account is fixed upstream, run `rollcall source retry-login {name}` to try these again", .refusal.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), .refusal.message)]
            RefusedBefore { name: String, refusal: LoginRefusal },
        }

        impl SourceError {
            /// The upstream refused the credentials: no request is sent with them again
            /// ([`LoginRefusal`]).
            pub fn refused_login(&self) -> bool {
                match self {
                    $(SourceError::$variant(e) => e.refused_login(),)*
                    SourceError::RefusedBefore { .. } => false,
                }
            }

            /// The source has stopped: it polls no more until its credentials change or an
            /// operator runs `rollcall source retry-login`.
            pub fn stops_source(&self) -> bool {
                self.refused_login() || matches!(self, SourceError::RefusedBefore { .. })
            }
        }
    };
}

registry! {
    "superset" => Superset(superset::SupersetConfig, superset::SupersetSource),
    "kylin" => Kylin(kylin::KylinConfig, kylin::KylinSource),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        self.kind().name()
    }
}

impl SourceConfig {
    /// `rollcall demo` of this source, whatever its kind: logged in once, with the source's own
    /// account, to the (test!) instance it points at.
    pub async fn demo(&self) -> Result<Tour, DemoError> {
        let kind = self.kind();
        let login = kind.login();
        let password = login
            .password()
            .map_err(|e| DemoError::Secret(login.name.to_owned(), e))?;
        Ok(Tour::new(kind.demo(&password).await?))
    }

    /// The Superset table, if this source is one.
    pub fn as_superset(&self) -> Option<&superset::SupersetConfig> {
        match self {
            SourceConfig::Superset(c) => Some(c),
            _ => None,
        }
    }
}
