//! What the Superset release behind `url` lets rollcall ask, and the way of reading chosen for
//! it (docs/superset.md, section Releases 4.1 to 6.1).
//!
//! Owns the reading of `users/_info` and of the `roles/search/` probe into [`Capabilities`],
//! and the choice of a [`Strategy`] from them. It never reads users and never guesses a
//! release from its version number: only what the server announces counts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::api::UsersInfo;

/// What the release answered when asked, at start and at each full reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Filterable users columns and their operators, from `users/_info`; `None` when the
    /// account may not read `_info` (then the narrowest strategies, which work everywhere).
    pub user_filters: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Whether `GET /api/v1/security/roles/search/` exists (6.0 on).
    pub role_search: bool,
    pub detected_at: DateTime<Utc>,
}

impl Capabilities {
    pub fn new(info: Option<UsersInfo>, role_search: bool, now: DateTime<Utc>) -> Capabilities {
        Capabilities {
            user_filters: info.map(|info| {
                info.filters
                    .into_iter()
                    .map(|(col, oprs)| (col, oprs.into_iter().map(|o| o.operator).collect()))
                    .collect()
            }),
            role_search,
            detected_at: now,
        }
    }

    /// Whether users can be filtered by `col` with `opr`.
    fn can_filter(&self, col: &str, opr: &str) -> bool {
        self.user_filters
            .as_ref()
            .and_then(|f| f.get(col))
            .is_some_and(|oprs| oprs.contains(opr))
    }

    /// The way of reading these capabilities allow.
    pub fn strategy(&self) -> Strategy {
        let incremental = ["changed_on", "last_login", "fail_login_count"]
            .iter()
            .all(|col| self.can_filter(col, "gt"));
        Strategy {
            full_read: if self.can_filter("id", "gt") {
                FullRead::KeysetById
            } else {
                FullRead::PagesById
            },
            incremental: if incremental {
                Incremental::Filters
            } else {
                Incremental::NewestFirstPages
            },
            role_membership: if self.role_search {
                RoleMembership::RoleSearch
            } else {
                RoleMembership::AtFullRead
            },
        }
    }

    /// Whether two detections found the same capabilities (the time aside).
    pub fn same_as(&self, other: &Capabilities) -> bool {
        self.user_filters == other.user_filters && self.role_search == other.role_search
    }
}

/// How each part of a cycle reads, given the release's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    pub full_read: FullRead,
    pub incremental: Incremental,
    pub role_membership: RoleMembership,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullRead {
    /// Pages of ids after the last one seen (docs/superset.md S21).
    KeysetById,
    /// Pages by index ordered by id, re-read while they shift; users missing are confirmed by
    /// id (docs/superset.md S21, Releases 4.1 to 6.1).
    PagesById,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incremental {
    /// `changed_on`, `last_login` and `fail_login_count` filters (docs/superset.md S22).
    Filters,
    /// Pages ordered newest first by those columns, stopping at the high-water mark; `count`
    /// compared to find deletions.
    NewestFirstPages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleMembership {
    /// Every poll compares `roles/search/` with the users' roles (docs/superset.md S32).
    RoleSearch,
    /// Membership changed through the roles API is seen at the next full read.
    AtFullRead,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fixture: &str) -> UsersInfo {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(fixture))
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(v["body"].clone()).unwrap()
    }

    #[test]
    fn the_captured_info_of_each_release_chooses_its_strategy() {
        let old = Strategy {
            full_read: FullRead::PagesById,
            incremental: Incremental::NewestFirstPages,
            role_membership: RoleMembership::AtFullRead,
        };
        let new = Strategy {
            full_read: FullRead::KeysetById,
            incremental: Incremental::Filters,
            role_membership: RoleMembership::RoleSearch,
        };
        for (fixture, role_search, want) in [
            (
                "tests/fixtures/superset-releases/v4.1.4/users_info.json",
                false,
                old,
            ),
            (
                "tests/fixtures/superset-releases/v5.0.0/users_info.json",
                false,
                old,
            ),
            (
                "tests/fixtures/superset-releases/v6.0.0/users_info.json",
                true,
                new,
            ),
            ("tests/fixtures/superset/users_info.json", true, new),
        ] {
            let caps = Capabilities::new(Some(info(fixture)), role_search, Utc::now());
            assert_eq!(caps.strategy(), want, "{fixture}");
        }
    }

    #[test]
    fn an_unreadable_info_chooses_the_strategies_that_work_everywhere() {
        let caps = Capabilities::new(None, true, Utc::now());
        assert_eq!(caps.strategy().full_read, FullRead::PagesById);
        assert_eq!(caps.strategy().incremental, Incremental::NewestFirstPages);
    }
}
