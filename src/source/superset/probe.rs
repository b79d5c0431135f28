//! `rollcall doctor` for a Superset source: one login and one small read of each endpoint a
//! cycle uses, each reported on its own line. It reads only; a refused login ends it, so the
//! check costs Superset at most one failed login.

use super::api::{self, ListQuery, GROUPS, LOG, ROLES_SEARCH, USERS};
use super::client::Client;
use super::error::SupersetError;
use crate::source::Probe;

/// One read of each endpoint a cycle uses (of the action log too, when `action_log` is on),
/// pages of `page_size` rows as a cycle asks for them.
pub async fn reads(client: &Client, action_log: bool, page_size: u32) -> Vec<Probe> {
    let since = api::to_filter_value(
        chrono::Utc::now() - chrono::Duration::minutes(1),
        chrono_tz::UTC,
    );
    let mut reads = vec![
        (
            "log in and read users",
            USERS,
            ListQuery::page(0, page_size),
        ),
        (
            "read role membership",
            ROLES_SEARCH,
            ListQuery::page(0, page_size),
        ),
        ("read groups", GROUPS, ListQuery::page(0, page_size)),
    ];
    if action_log {
        // The log cannot be ordered by id (docs/superset.md S39): ask as a cycle does.
        reads.push((
            "read the action log",
            LOG,
            ListQuery::log_page(since, 0, page_size),
        ));
    }
    let mut out = Vec::new();
    for (what, path, query) in reads {
        let result = client
            .list::<serde_json::Value>(path, &query)
            .await
            .map(drop);
        let result = match result {
            // Groups and roles/search arrived with Superset 6 (docs/superset.md, releases):
            // without them, membership is read from the users' own records.
            Err(SupersetError::SecurityApiDisabled { .. }) if path != USERS && path != LOG => {
                out.push(Probe {
                    what: format!("{what} ({path}): not on this Superset; membership is read from each user's record"),
                    result: Ok(()),
                });
                continue;
            }
            other => other,
        };
        let refused = matches!(result, Err(SupersetError::LoginRejected { .. }));
        out.push(Probe {
            what: format!("{what} ({path})"),
            result: result.map_err(Into::into),
        });
        if refused {
            break;
        }
    }
    out
}
