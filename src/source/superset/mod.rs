//! The Superset source: reads `/api/v1/security/users/` (plus role and group membership) and
//! hands the users it read over a page at a time (every user at a full reconcile, those that
//! changed at an incremental poll), with the deletions it confirmed.
//!
//! Owns what Superset's quirks mean for polling (see docs/superset.md): what the release allows,
//! detected at start and at each full reconcile (section Releases 4.1 to 6.1), and a way of
//! reading for it: keyset paging verified page by page or pages by index re-read while they
//! shift, incremental polls by high-water mark through filters or newest-first pages,
//! membership read separately because the roles and groups APIs change it without bumping
//! `changed_on`, and deletions confirmed one by one with `GET /users/<id>`. It never writes to
//! the store, never derives events, and never reports a user deleted that a list merely missed.
//!
//! This file holds [`SupersetSource`] and its [`Source`] impl: one cycle asks what the release
//! allows, then reads fully or incrementally. The rest, each file saying what it owns:
//!
//! - the two ways of reading users: `full.rs` and `incremental.rs`; they read through
//!   `keyset.rs` (keyset paging on id), `pages.rs` (pages by index), `membership.rs` (the member
//!   lists of roles and groups) and `confirm.rs` (single users by id, the only confirmation of
//!   a deletion);
//! - what the release allows: `detect.rs` asks, `capabilities.rs` chooses the strategy;
//! - the action log: `action_log.rs` reads it, `audit.rs` turns its rows into events, and
//!   `mcp.rs` joins the rows of one MCP tool call into one;
//! - what the reads share: `reader.rs` within a cycle, `cursor.rs` from one cycle to the next;
//! - underneath: `client.rs` (HTTP, login and retries), `api.rs` (endpoints, wire shapes and
//!   queries), `error.rs`, `user.rs` (the user record and its change rules), `config.rs`;
//! - `probe.rs`: `rollcall doctor`'s reads.
//! - `demo.rs`: `rollcall demo`'s changes to a test Superset (it writes; no read calls it).
//!
//! No file here imports this one: what they share lives in `reader.rs`, `cursor.rs` and
//! `error.rs`, and each read takes the [`Reader`] it needs.

mod action_log;
mod api;
pub mod audit;
pub mod capabilities;
mod client;
mod config;
mod confirm;
mod cursor;
pub mod demo;
mod detect;
mod error;
mod full;
mod incremental;
mod keyset;
pub mod mcp;
mod membership;
mod pages;
mod probe;
mod reader;
pub mod user;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::event::Derived;
use crate::source::{Fresh, Known, Mode, Observation, Schedule, Source, SourceError};
use crate::store::Credentials;
use audit::ActionFilter;
use capabilities::RoleMembership;
pub use client::Client;
pub use config::SupersetConfig;
pub use cursor::{Cursor, LogError};
pub use error::SupersetError;
use reader::{Out, Reader, Reads, UnreadableLists};
pub use user::{Snapshot, User};
/// The registry's name for this kind's error.
pub use SupersetError as Error;

/// The product, as OCSF records name it.
pub const PRODUCT: &str = "Superset";
/// The built-in role that makes a user an administrator (docs/superset.md S6).
pub const ADMIN_ROLES: &[&str] = &["Admin"];

pub struct SupersetSource {
    config: SupersetConfig,
    client: Client,
    credentials: Credentials,
    filter: ActionFilter,
    /// Whether this process has asked the release what it allows yet.
    detected: bool,
    /// What the last membership read could not read (see [`UnreadableLists`]).
    unreadable_lists: UnreadableLists,
}

impl SupersetSource {
    pub fn new(config: SupersetConfig) -> Result<SupersetSource, SupersetError> {
        let password = config.password().map_err(SupersetError::Secret)?;
        let credentials = config.login().credentials(&password);
        let client = Client::new(
            config.url.clone(),
            config.username.clone(),
            password,
            config.request_timeout,
            config.max_retries,
            config.max_response_bytes,
        )?;
        let filter = ActionFilter::new(&config.log_include, &config.log_exclude)
            .map_err(|e| SupersetError::Setup(format!("`log_include`/`log_exclude`: {e}")))?;
        Ok(SupersetSource {
            config,
            client,
            credentials,
            filter,
            detected: false,
            unreadable_lists: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &SupersetConfig {
        &self.config
    }

    /// One cycle's reads: what the release allows, then a full or an incremental read by the
    /// strategy chosen for it, the users handed to `fresh` as they come.
    async fn observe_users(
        &mut self,
        known: &Known<User>,
        cursor: &mut Cursor,
        mode: Mode,
        fresh: &mut dyn Fresh<User>,
    ) -> Result<Observation<User>, SupersetError> {
        let mut r = Reader {
            client: &self.client,
            config: &self.config,
            requests: 0,
            reads: Reads::default(),
            unreadable_lists: &mut self.unreadable_lists,
        };
        // An upgrade can happen underneath: ask again at each full reconcile.
        let strategy = match (&cursor.capabilities, mode, self.detected) {
            (Some(caps), Mode::Incremental, true) => caps.strategy(),
            _ => {
                let strategy = detect::release(&mut r, cursor, self.detected).await?;
                self.detected = true;
                strategy
            }
        };
        let now = Utc::now();
        let mut out = Out {
            fresh,
            service_account: &self.config.username,
            service_account_id: cursor.service_account_id,
            // A full read sets the marks afresh; an incremental one only raises them.
            hwm_changed_on: (mode == Mode::Incremental)
                .then_some(cursor.hwm_changed_on)
                .flatten(),
            hwm_last_login: (mode == Mode::Incremental)
                .then_some(cursor.hwm_last_login)
                .flatten(),
            now,
        };
        // Roles edited through the roles API show only in the role lists (`membership_interval`).
        let compare_roles = mode == Mode::Incremental
            && strategy.role_membership == RoleMembership::RoleSearch
            && membership::due(&self.config, cursor, now);
        let read = match mode {
            Mode::Full => full::read(&mut r, known, strategy, &mut out).await,
            Mode::Incremental => {
                incremental::read(&mut r, known, cursor, strategy, compare_roles, &mut out).await
            }
        };
        let gone = match read {
            Ok(gone) => gone,
            // A 400 for a filter or order it announced: ask again next cycle (docs/superset.md,
            // Releases 4.1 to 6.1: what each release refuses is a 400 with this message).
            Err(SupersetError::Unexpected {
                status: 400,
                detail,
                ..
            }) if detail.contains("not allowed") || detail.contains("Invalid order by column") => {
                self.detected = false;
                return Err(SupersetError::QueryRefused { detail });
            }
            Err(e) => return Err(e),
        };
        cursor.hwm_changed_on = out.hwm_changed_on;
        cursor.hwm_last_login = out.hwm_last_login;
        cursor.service_account_id = out.service_account_id;
        if compare_roles {
            cursor.membership_read_at = Some(now);
        }
        // A record that could not be read leaves the stored one standing: it was never handed
        // over, and its absence from an answer is no deletion.
        r.reads.report(&self.config.name, cursor, mode);
        Ok(Observation {
            gone,
            requests: r.requests,
        })
    }
}

impl Source for SupersetSource {
    type User = User;
    type Cursor = Cursor;

    fn name(&self) -> &str {
        &self.config.name
    }

    fn uri(&self) -> String {
        crate::source::SourceKind::uri(&self.config)
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            poll_interval: self.config.poll_interval,
            full_reconcile_interval: self.config.full_reconcile_interval,
            // Full reads come every `full_reconcile_interval`: each ends with its marker.
            sync_every: std::time::Duration::ZERO,
        }
    }

    fn emit_initial_snapshot(&self) -> bool {
        self.config.emit_initial_snapshot
    }

    fn service_account(&self) -> Option<&str> {
        Some(&self.config.username)
    }

    fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    async fn observe(
        &mut self,
        known: &Known<User>,
        cursor: &mut Cursor,
        mode: Mode,
        fresh: &mut dyn Fresh<User>,
    ) -> Result<Observation<User>, SourceError> {
        Ok(self.observe_users(known, cursor, mode, fresh).await?)
    }

    async fn probe(&mut self) -> Vec<crate::source::Probe> {
        probe::reads(&self.client, self.config.action_log, self.config.page_size).await
    }

    async fn native_events(&mut self, cursor: &mut Cursor, now: DateTime<Utc>) -> Vec<Derived> {
        if !self.config.action_log {
            return Vec::new();
        }
        action_log::read(&self.client, &self.config, &self.filter, cursor, now).await
    }
}
