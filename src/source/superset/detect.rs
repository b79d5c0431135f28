//! Asking the release what it allows (docs/superset.md, Releases 4.1 to 6.1): `users/_info`
//! for the columns users can be filtered by, and a probe of `roles/search/`.
//!
//! Owns those two requests and saying what they found, at start and whenever it changes. The
//! choice of a way of reading from the answers is [`Capabilities::strategy`]'s. It never
//! guesses a release from its version number: an account that may not read `_info` gets the
//! ways of reading every release allows.

use chrono::Utc;
use tracing::{info, warn};

use super::api::{self, ListQuery, UsersInfo, ROLES_SEARCH, USERS_INFO};
use super::capabilities::{Capabilities, Strategy};
use super::cursor::Cursor;
use super::error::SupersetError;
use super::reader::Reader;

/// Ask the release what it allows, keep it in the cursor for `status`, and say it when it
/// changed or when this process has not said it yet (`said`).
pub async fn release(
    r: &mut Reader<'_>,
    cursor: &mut Cursor,
    said: bool,
) -> Result<Strategy, SupersetError> {
    r.requests += 2;
    let info = match r
        .client
        .object::<UsersInfo>(USERS_INFO, api::INFO_FILTERS_QUERY)
        .await
    {
        Ok(info) => Some(info),
        Err(e @ SupersetError::Forbidden { .. }) => {
            if !said {
                warn!(error = %e, "cannot read which users filters this Superset allows; reading with pages by index, which every release allows. Grant `can_info` on User to the account for the faster reads of Superset 6");
            }
            None
        }
        Err(e) => return Err(e),
    };
    let probe = ListQuery::past_the_end();
    let role_search = r.client.exists(ROLES_SEARCH, &probe.to_rison()).await?;
    let caps = Capabilities::new(info, role_search, Utc::now());
    let strategy = caps.strategy();
    let changed = cursor
        .capabilities
        .as_ref()
        .is_none_or(|old| !old.same_as(&caps));
    if changed || !said {
        info!(
            source = %r.config.name,
            filterable = %caps.user_filters.as_ref().map_or_else(
                || "unknown".to_owned(),
                |f| f.keys().cloned().collect::<Vec<_>>().join(","),
            ),
            role_search,
            strategy = %serde_json::to_string(&strategy).unwrap_or_default(),
            "Superset capabilities detected"
        );
    }
    cursor.capabilities = Some(caps);
    Ok(strategy)
}
