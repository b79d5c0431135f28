//! Single users by id, `GET /api/v1/security/users/<id>`: how a deletion is confirmed, and how
//! a user a list only hinted at (its membership differs, a page shifted past it) is read.
//!
//! Owns the one rule every deletion passes: a user is gone only when Superset answers its own
//! 404 for that id (docs/superset.md S7, S33); any other answer leaves the stored record
//! standing. It never infers a deletion from a list, and never trusts a record of another id.

use serde_json::value::RawValue;
use tracing::info;

use super::api;
use super::error::SupersetError;
use super::reader::{Ids, Out, Reader};
use super::user::User;
use crate::source::Known;

/// What `GET /users/<id>` says of one user.
pub enum Lookup {
    Found(Box<User>),
    Gone,
    /// An answer rollcall cannot use (unreadable, or the record of another user); the reason
    /// is in the cycle's [`Reads`](super::reader::Reads).
    Unreadable,
}

/// The stored users a whole list did not show: neither listed, nor unreadable this cycle,
/// nor already confirmed `gone`. Each is for [`users`] to settle by id.
pub fn unlisted(
    r: &Reader<'_>,
    known: &Known<User>,
    listed: &Ids,
    gone: &[u64],
) -> Result<Vec<u64>, SupersetError> {
    let mut out = Vec::new();
    for id in known.keys() {
        let id = id?;
        if !listed.contains(id) && !r.reads.failed.contains_key(&id) && !gone.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Read each of `ids` by id and hand it over: a 404 confirms a deletion (returned), an
/// unreadable record leaves what was stored (docs/superset.md S33).
pub async fn users(
    r: &mut Reader<'_>,
    ids: impl IntoIterator<Item = u64>,
    out: &mut Out<'_>,
) -> Result<Vec<u64>, SupersetError> {
    let mut gone = Vec::new();
    for id in ids {
        match user(r, id).await? {
            Lookup::Found(user) => out.hand(vec![*user])?,
            Lookup::Gone => {
                info!(id, "user no longer exists (confirmed by 404)");
                gone.push(id);
            }
            Lookup::Unreadable => {}
        }
    }
    Ok(gone)
}

/// One user by id. An answer for another id is refused: trusting it would report this
/// user deleted and the other created (docs/superset.md S10 shows the record's own `id`).
pub async fn user(r: &mut Reader<'_>, id: u64) -> Result<Lookup, SupersetError> {
    r.requests += 1;
    let Some(raw) = r.client.user::<Box<RawValue>>(id).await? else {
        r.reads.settled.insert(id);
        return Ok(Lookup::Gone);
    };
    let read = match api::row_id(&raw) {
        Some(got) if got != id => Err(format!(
            "Superset answered the request for user {id} with the record of user {got}"
        )),
        _ => api::read_user(&raw, r.config.timezone),
    };
    Ok(match read {
        Ok(user) => {
            r.reads.settled.insert(id);
            r.reads.failed.remove(&id);
            Lookup::Found(Box::new(user))
        }
        Err(reason) => {
            r.reads.failed.insert(id, reason);
            Lookup::Unreadable
        }
    })
}
