//! Claims in practice: before each poll of a source, this store's standing among the claims on
//! the source's URL, on every board the config's sinks keep (a Kafka sink's claims topic,
//! docs/scaling.md, Claims). A source nobody claims is claimed, then polled; one this store
//! holds is polled (its claim renewed now and then); one another store holds is refused, loudly,
//! with what to do. Also what `rollcall source forget` and `take-over` do to the claims.
//!
//! Owns when claims are read, published and withdrawn, and what the store keeps of them
//! ([`ClaimState`]). Who holds a URL is [`crate::claim::verdict`]'s rule, applied here to what
//! the boards read; it never decides it otherwise. Safe before available: a source this store
//! has never held is not polled while the claims cannot be read, while one it holds goes on.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::Utc;
use tracing::{debug, error, warn};

use crate::claim::{normalize, verdict, Claim, ClaimState, Verdict, RENEW_EVERY};
use crate::config::Config;
use crate::sink::{Board, SinkError};
use crate::source::SourceConfig;
use crate::store::{Store, StoreError};

/// Why this store may not poll a source now, or a claim could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("source `{name}` ({url}) is claimed on {place} by {who}, since {since}, last renewed {renewed}: this process does not poll it, so that no source is polled twice into one cluster. Poll it in one process only: remove it from this config (then `rollcall source forget {name}` here), or from the other process's (then `rollcall source forget {other}` there); if that store is gone for good, run `rollcall source take-over {name}` here", who = .owner.who(), since = .owner.since.to_rfc3339(), renewed = .owner.renewed.to_rfc3339(), other = .owner.source)]
    Elsewhere {
        name: String,
        url: String,
        place: String,
        owner: Box<Claim>,
    },
    #[error("source `{name}` is not polled until this store can claim it on {place}: another rollcall may be polling it")]
    Unavailable {
        name: String,
        place: String,
        #[source]
        error: SinkError,
    },
    #[error("source `{name}` is not polled until this store can claim it: the claim it published on {place} was not read back from there. Check that nothing else removes claims from it")]
    NotReadBack { name: String, place: String },
    #[error("source `{name}`: {action} on {place} failed; the claims there may still name this store, so another process would refuse the source until `rollcall source take-over {name}` is run where it is polled next")]
    Unchanged {
        name: String,
        action: &'static str,
        place: String,
        #[source]
        error: SinkError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClaimError {
    /// Another store holds the source.
    pub fn elsewhere(&self) -> bool {
        matches!(self, ClaimError::Elsewhere { .. })
    }
}

/// What one board is asked about: a source of this store, by name and URL.
#[derive(Clone, Copy)]
struct Asked<'a> {
    store: &'a Store,
    board: &'a dyn Board,
    name: &'a str,
    url: &'a str,
}

/// Who this process is, as its claims say.
struct Me {
    store: String,
    shard: Option<String>,
    host: String,
}

/// The boards of the config's sinks, and this process's claims on them.
pub struct Claims {
    boards: Vec<Box<dyn Board>>,
    me: Me,
    /// What was logged once and is not repeated at every poll: a rival, a name clash, a board
    /// that cannot be read.
    said: Mutex<HashSet<String>>,
    /// When each claim was last renewed or tried to be, by place and URL: a renewal that fails
    /// (the brokers down) is tried again only after [`RENEW_EVERY`], not before every poll.
    renewing: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
}

impl Claims {
    /// The boards of `config`'s sinks (none when no sink keeps claims), for the store `store_id`.
    /// Connects to nothing yet.
    pub fn new(config: &Config, store_id: &str) -> Result<Claims, SinkError> {
        let boards = config
            .sinks
            .iter()
            .filter_map(|s| s.kind().board())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Claims {
            boards,
            me: Me {
                store: store_id.to_owned(),
                shard: config.shard.clone(),
                host: host(),
            },
            said: Mutex::default(),
            renewing: Mutex::default(),
        })
    }

    /// No sink keeps claims: every source is polled, as before claims existed.
    pub fn is_empty(&self) -> bool {
        self.boards.is_empty()
    }

    fn claim(&self, name: &str, url: &str, since: chrono::DateTime<Utc>) -> Claim {
        Claim {
            url: url.to_owned(),
            store: self.me.store.clone(),
            shard: self.me.shard.clone(),
            source: name.to_owned(),
            host: self.me.host.clone(),
            since,
            renewed: Utc::now(),
        }
    }

    /// Whether `what` is said for the first time (and remember it is).
    fn first_time(&self, what: String) -> bool {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(what)
    }

    fn forget_said(&self, what: &str) {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(what);
    }

    /// May this store poll `source` now? Claims it where nobody does, renews its claim when
    /// due, and records its standing in the store; refuses a source another store holds.
    pub async fn check(&self, store: &Store, source: &SourceConfig) -> Result<(), ClaimError> {
        if self.boards.is_empty() {
            return Ok(());
        }
        let name = source.name();
        let url = normalize(source.kind().login().url);
        let held = match store.source_state(name)?.claim {
            Some(ClaimState::Held { url: held, since }) if held == url => Some(since),
            Some(ClaimState::Held { url: old, .. }) => {
                // The source now polls another URL: the old one is free for others.
                for board in &self.boards {
                    if let Err(e) = board.withdraw(&old, &self.me.store).await {
                        warn!(source = %name, url = %old, place = %board.place(), error = %crate::text::error_chain(&e), "cannot withdraw the claim on the URL this source polled before");
                    }
                }
                None
            }
            _ => None,
        };
        let mut since = held;
        for board in &self.boards {
            let asked = Asked {
                store,
                board: board.as_ref(),
                name,
                url: &url,
            };
            since = Some(self.on(&asked, since, held.is_some()).await?);
        }
        let since = since.expect("at least one board was asked");
        store.record_claim(name, Some(ClaimState::Held { url, since }))?;
        Ok(())
    }

    /// This store's standing on one board: the time its claim dates from when it holds the
    /// source. `since` is when it first claimed it anywhere; `trusted`, that it held the claim
    /// at its last poll, so a board it cannot read does not stop it.
    async fn on(
        &self,
        asked: &Asked<'_>,
        since: Option<chrono::DateTime<Utc>>,
        trusted: bool,
    ) -> Result<chrono::DateTime<Utc>, ClaimError> {
        let Asked {
            board, name, url, ..
        } = *asked;
        let unreadable = format!("unreadable {}", board.place());
        if !board.caught_up() {
            if let Err(error) = board.catch_up().await {
                let since = since
                    .filter(|_| trusted)
                    .ok_or_else(|| ClaimError::Unavailable {
                        name: name.to_owned(),
                        place: board.place().to_owned(),
                        error,
                    });
                if since.is_ok() && self.first_time(unreadable) {
                    warn!(place = %board.place(), "cannot read the claims yet; the sources this store held at their last poll go on being polled, the others wait until the claims can be read");
                }
                return since;
            }
            self.forget_said(&unreadable);
        }
        let claims = board.claims();
        self.clashes(&claims, board.place(), name, url);
        let on_url: Vec<Claim> = claims.into_iter().filter(|c| c.url == url).collect();
        match verdict(&on_url, &self.me.store) {
            Verdict::Free => self.take(asked, since).await,
            Verdict::Mine { claim, rivals } => {
                for rival in rivals {
                    if self.first_time(format!("rival {url} {}", rival.store)) {
                        error!(source = %name, url = %url, place = %board.place(), rival = %rival.who(), "ANOTHER STORE CLAIMS THIS SOURCE TOO: {} claimed {url} (as its source `{}`) after this store did, so it must refuse it; if it polls it nonetheless, it is not a rollcall that keeps claims. Poll each source in one process only", rival.who(), rival.source);
                    }
                }
                if self.renewal_due(board.place(), url, claim.renewed) {
                    let renewed = self.claim(name, url, claim.since);
                    if let Err(e) = board.publish(&renewed).await {
                        warn!(source = %name, place = %board.place(), error = %crate::text::error_chain(&e), "cannot renew the claim; the source is still polled, the claim stands as it was, and renewing it is tried again in 10 minutes");
                    }
                }
                Ok(claim.since)
            }
            Verdict::Theirs { owner, mine } => {
                if mine.is_some() {
                    // Made too late: it must not stand beside the owner's.
                    if let Err(e) = board.withdraw(url, &self.me.store).await {
                        warn!(source = %name, place = %board.place(), error = %crate::text::error_chain(&e), "cannot withdraw this store's later claim");
                    }
                }
                Err(self.refuse(asked, owner)?)
            }
        }
    }

    /// Whether a claim last `renewed` then is to be published again now; if so, the attempt is
    /// noted, whatever becomes of it.
    fn renewal_due(&self, place: &str, url: &str, renewed: chrono::DateTime<Utc>) -> bool {
        let now = Utc::now();
        let mut tried = self.renewing.lock().unwrap_or_else(|e| e.into_inner());
        let last = tried.entry(format!("{place} {url}")).or_insert(renewed);
        let due = now - (*last).max(renewed) >= RENEW_EVERY;
        if due {
            *last = now;
        }
        due
    }

    /// Claim the URL, nobody holding it, and make sure nobody claimed it first meanwhile.
    async fn take(
        &self,
        asked: &Asked<'_>,
        since: Option<chrono::DateTime<Utc>>,
    ) -> Result<chrono::DateTime<Utc>, ClaimError> {
        let Asked {
            board, name, url, ..
        } = *asked;
        let unavailable = |error| ClaimError::Unavailable {
            name: name.to_owned(),
            place: board.place().to_owned(),
            error,
        };
        let claim = self.claim(name, url, since.unwrap_or_else(Utc::now));
        board.publish(&claim).await.map_err(unavailable)?;
        board.catch_up().await.map_err(unavailable)?;
        let on_url: Vec<Claim> = board
            .claims()
            .into_iter()
            .filter(|c| c.url == url)
            .collect();
        match verdict(&on_url, &self.me.store) {
            Verdict::Mine { claim, .. } => {
                debug!(source = %name, url = %url, place = %board.place(), "claimed");
                Ok(claim.since)
            }
            Verdict::Theirs { owner, .. } => {
                let _ = board.withdraw(url, &self.me.store).await;
                Err(self.refuse(asked, owner)?)
            }
            Verdict::Free => Err(ClaimError::NotReadBack {
                name: name.to_owned(),
                place: board.place().to_owned(),
            }),
        }
    }

    /// Record that `owner` holds the source and say so (loudly the first time); the error to
    /// return.
    fn refuse(&self, asked: &Asked<'_>, owner: &Claim) -> Result<ClaimError, StoreError> {
        let Asked {
            store,
            board,
            name,
            url,
        } = *asked;
        let before = store.source_state(name)?.claim;
        let error = ClaimError::Elsewhere {
            name: name.to_owned(),
            url: url.to_owned(),
            place: board.place().to_owned(),
            owner: Box::new(owner.clone()),
        };
        match before {
            Some(ClaimState::ClaimedBy { owner: known, seen }) if known.store == owner.store => {
                debug!(source = %name, owner = %owner.who(), "still claimed by another store");
                store.record_claim(
                    name,
                    Some(ClaimState::ClaimedBy {
                        owner: owner.clone(),
                        seen,
                    }),
                )?;
            }
            _ => {
                error!(source = %name, url = %url, owner = %owner.who(), error = %error, "SOURCE CLAIMED BY ANOTHER STORE: not polled");
                store.record_claim(
                    name,
                    Some(ClaimState::ClaimedBy {
                        owner: owner.clone(),
                        seen: Utc::now(),
                    }),
                )?;
            }
        }
        Ok(error)
    }

    /// Another store's source of the same name polls another URL: every event of both names
    /// the same source, and their users share Kafka keys. Said once per store and URL.
    fn clashes(&self, claims: &[Claim], place: &str, name: &str, url: &str) {
        for c in claims
            .iter()
            .filter(|c| c.source == name && c.url != url && c.store != self.me.store)
        {
            if self.first_time(format!("clash {name} {} {}", c.url, c.store)) {
                error!(source = %name, url = %url, place = %place, other = %c.who(), other_url = %c.url, "TWO SOURCES OF ONE NAME: {} polls {} as source `{name}` too, so the events of both name the same `source` and their users share Kafka keys. Rename one of them", c.who(), c.url);
            }
        }
    }

    /// `rollcall source take-over`: withdraw every other store's claim on `source`'s URL and
    /// claim it for this store. Returns the claims withdrawn.
    pub async fn take_over(
        &self,
        store: &Store,
        source: &SourceConfig,
    ) -> Result<Vec<Claim>, ClaimError> {
        let name = source.name();
        let url = normalize(source.kind().login().url);
        let mut withdrawn = Vec::new();
        let mut since = None;
        for board in &self.boards {
            let failed = |action, error| ClaimError::Unchanged {
                name: name.to_owned(),
                action,
                place: board.place().to_owned(),
                error,
            };
            board
                .catch_up()
                .await
                .map_err(|e| failed("reading the claims", e))?;
            let (mine, others): (Vec<Claim>, Vec<Claim>) = board
                .claims()
                .into_iter()
                .filter(|c| c.url == url)
                .partition(|c| c.store == self.me.store);
            for other in &others {
                board
                    .withdraw(&url, &other.store)
                    .await
                    .map_err(|e| failed("withdrawing another store's claim", e))?;
            }
            let dated = since.or(mine.first().map(|c| c.since));
            let claim = self.claim(name, &url, dated.unwrap_or_else(Utc::now));
            board
                .publish(&claim)
                .await
                .map_err(|e| failed("publishing this store's claim", e))?;
            since = Some(claim.since);
            withdrawn.extend(others);
        }
        if let Some(since) = since {
            store.record_claim(name, Some(ClaimState::Held { url, since }))?;
        }
        Ok(withdrawn)
    }

    /// `rollcall source forget`: withdraw this store's claim on `url`, which a source it polled
    /// no longer needs.
    pub async fn release(&self, name: &str, url: &str) -> Result<(), ClaimError> {
        for board in &self.boards {
            board
                .withdraw(url, &self.me.store)
                .await
                .map_err(|error| ClaimError::Unchanged {
                    name: name.to_owned(),
                    action: "withdrawing this store's claim",
                    place: board.place().to_owned(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Every board's place, for what the commands print.
    pub fn places(&self) -> Vec<&str> {
        self.boards.iter().map(|b| b.place()).collect()
    }
}

/// The host this process runs on (a pod's name under Kubernetes), for claims; empty when the
/// system does not say.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for the length passed; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_renewed_once_it_is_old_and_a_failed_renewal_waits_as_long_again() {
        let config = crate::config::tests::parse(crate::config::tests::EXAMPLE).unwrap();
        let claims = Claims::new(&config, "0190").unwrap();
        let now = Utc::now();
        assert!(!claims.renewal_due("topic", "https://a", now), "fresh");
        let old = now - RENEW_EVERY - chrono::Duration::seconds(1);
        assert!(claims.renewal_due("topic", "https://b", old));
        assert!(
            !claims.renewal_due("topic", "https://b", old),
            "tried just now, though the claim read is still the old one"
        );
        assert!(
            claims.renewal_due("other topic", "https://b", old),
            "per place"
        );
    }
}
