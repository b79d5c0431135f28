//! Claims: which store polls a source, so that rollcall processes that share nothing but a
//! Kafka cluster never poll one source into it twice (docs/scaling.md, Claims).
//!
//! Owns what a claim says ([`Claim`]), the URL it is about ([`normalize`]), the rule that picks
//! the one store entitled to poll a source among all the claims on its URL ([`verdict`]), and
//! what a store keeps of its own standing ([`ClaimState`]). It does no I/O and reads no clock:
//! where claims are published and read is a sink kind's (`sink::Board`), acting on a verdict is
//! the runner's. It imports nothing of rollcall.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a store that holds a claim publishes it again, with a new `renewed`: how stale a
/// claim whose process still polls its source can look to an operator deciding whether that
/// process is gone.
pub const RENEW_EVERY: chrono::Duration = chrono::Duration::minutes(10);

/// One store's claim on one source URL, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The source's URL, normalized ([`normalize`]).
    pub url: String,
    /// The id of the claiming store (made with it: a store re-created from nothing is another).
    pub store: String,
    /// The claiming process's `shard`.
    #[serde(default)]
    pub shard: Option<String>,
    /// The source's name in the claiming process's config.
    pub source: String,
    /// The host the claiming process runs on.
    #[serde(default)]
    pub host: String,
    /// When the store first claimed the URL: the earliest claim wins.
    pub since: DateTime<Utc>,
    /// When the store last published the claim (every [`RENEW_EVERY`] while it polls).
    pub renewed: DateTime<Utc>,
}

impl Claim {
    /// Who made the claim, for an operator: `store 0190… (shard eu-1, host rollcall-0)`.
    pub fn who(&self) -> String {
        format!(
            "store {} (shard {}, host {})",
            self.store,
            self.shard.as_deref().unwrap_or("none"),
            if self.host.is_empty() {
                "unknown"
            } else {
                &self.host
            }
        )
    }

    /// What the claim is ordered by: its age, then its store id, so that every process that
    /// reads the same claims picks the same owner.
    fn rank(&self) -> (DateTime<Utc>, &str) {
        (self.since, &self.store)
    }
}

/// A source URL as claims name it: scheme, host and port as the URL parser leaves them
/// (lowercase host, no default port), the path without a trailing `/`; no user, query or
/// fragment. Two sources of one config whose URLs normalize alike are the same upstream.
pub fn normalize(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    // Only an URL that cannot have them refuses these, and then it has none to remove.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let path = u.path().trim_end_matches('/').to_owned();
    u.set_path(&path);
    u.as_str().trim_end_matches('/').to_owned()
}

/// What the claims on one URL say to the store `me`.
#[derive(Debug, PartialEq)]
pub enum Verdict<'a> {
    /// Nobody claims it: `me` may claim it.
    Free,
    /// `me` holds it: its claim is the earliest. `rivals` are the other stores that claim it too,
    /// later: they refuse it.
    Mine {
        claim: &'a Claim,
        rivals: Vec<&'a Claim>,
    },
    /// Another store holds it; `mine` is the claim `me` made too late, if it made one.
    Theirs {
        owner: &'a Claim,
        mine: Option<&'a Claim>,
    },
}

/// Who may poll the source of `claims` (every claim on its URL, one per store): the store of
/// the earliest claim, by `since` and then by store id. A store whose claim is not among them
/// holds nothing, whatever it held before: its claim was withdrawn (a take-over).
pub fn verdict<'a>(claims: &'a [Claim], me: &str) -> Verdict<'a> {
    let Some(owner) = claims.iter().min_by(|a, b| a.rank().cmp(&b.rank())) else {
        return Verdict::Free;
    };
    if owner.store == me {
        let rivals = claims.iter().filter(|c| c.store != me).collect();
        Verdict::Mine {
            claim: owner,
            rivals,
        }
    } else {
        Verdict::Theirs {
            owner,
            mine: claims.iter().find(|c| c.store == me),
        }
    }
}

/// What a store keeps of its standing on one of its sources (with the source's state, so that
/// `status` shows it and `rollcall source forget` knows which claim to withdraw).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "standing", rename_all = "snake_case")]
pub enum ClaimState {
    /// This store holds the claim on `url`, since `since`.
    Held { url: String, since: DateTime<Utc> },
    /// Another store holds the claim: this one does not poll the source.
    ClaimedBy {
        owner: Claim,
        /// When this store first found it so.
        seen: DateTime<Utc>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(store: &str, since: i64) -> Claim {
        let at = DateTime::from_timestamp(since, 0).unwrap();
        Claim {
            url: "https://bi.example".into(),
            store: store.into(),
            shard: None,
            source: "finance".into(),
            host: String::new(),
            since: at,
            renewed: at,
        }
    }

    #[test]
    fn urls_of_one_upstream_normalize_alike_and_others_do_not() {
        let n = |u: &str| normalize(&url::Url::parse(u).unwrap());
        assert_eq!(n("https://BI.example:443/"), "https://bi.example");
        assert_eq!(n("https://bi.example"), "https://bi.example");
        assert_eq!(n("https://bi.example/?x=1#top"), "https://bi.example");
        assert_eq!(n("http://kylin:7070/kylin/"), "http://kylin:7070/kylin");
        assert_eq!(n("http://u:p@kylin:7070/kylin"), "http://kylin:7070/kylin");
        assert_ne!(n("http://bi.example"), n("https://bi.example"));
        assert_ne!(n("https://bi.example:8443"), n("https://bi.example"));
        assert_ne!(n("http://kylin:7070/kylin"), n("http://kylin:7070"));
    }

    #[test]
    fn the_earliest_claim_wins_and_ties_go_to_the_lower_store_id() {
        assert_eq!(verdict(&[], "a"), Verdict::Free);
        let (a, b) = (claim("a", 10), claim("b", 5));
        let claims = [a.clone(), b.clone()];
        assert_eq!(
            verdict(&claims, "a"),
            Verdict::Theirs {
                owner: &b,
                mine: Some(&a)
            }
        );
        assert_eq!(
            verdict(&claims, "b"),
            Verdict::Mine {
                claim: &b,
                rivals: vec![&a]
            }
        );
        let tie = [claim("z", 5), claim("y", 5)];
        assert!(matches!(verdict(&tie, "y"), Verdict::Mine { .. }));
        assert!(matches!(
            verdict(&tie, "z"),
            Verdict::Theirs { owner, .. } if owner.store == "y"
        ));
        assert_eq!(
            verdict(std::slice::from_ref(&b), "a"),
            Verdict::Theirs {
                owner: &b,
                mine: None
            },
            "a store whose claim was withdrawn holds nothing"
        );
    }

    #[test]
    fn a_claim_says_who_made_it_even_without_a_shard_or_host() {
        let mut c = claim("0190", 0);
        assert_eq!(c.who(), "store 0190 (shard none, host unknown)");
        c.shard = Some("eu-1".into());
        c.host = "rollcall-0".into();
        assert_eq!(c.who(), "store 0190 (shard eu-1, host rollcall-0)");
    }
}
