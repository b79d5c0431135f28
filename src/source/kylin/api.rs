//! Kylin 5's wire shapes: the response envelope, the page of users and the public user record
//! (docs/kylin.md K13, K15, K40), and how a record becomes a [`KylinUser`].
//!
//! Owns only deserialisation: unknown keys are ignored (the error envelope's `stacktrace` is
//! never even read), and no request is made here.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::user::KylinUser;
use crate::user::{Member, MemberId};

/// Every answer of the public controller: `code` `"000"` on success, `"999"` on error
/// (docs/kylin.md K15, K40). Spring's own error bodies (404, 405, 406) have `error` instead.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub code: Option<String>,
    pub data: Option<T>,
    pub msg: Option<String>,
    pub error_code: Option<String>,
    /// Spring Boot's error body (`{timestamp, status, error, path}`), not Kylin's envelope.
    pub error: Option<String>,
}

/// `data` of `GET /api/user` (docs/kylin.md K13).
#[derive(Debug, Deserialize)]
pub struct DataResult<T> {
    pub value: Vec<T>,
    /// Users matching the query, not the page length.
    pub total_size: u64,
}

#[derive(Debug, Deserialize)]
pub struct Authority {
    pub authority: String,
}

/// One `UserInfoResponse` (docs/kylin.md K15); times are epoch milliseconds, `0` for never.
#[derive(Debug, Deserialize)]
pub struct ApiUser {
    pub username: String,
    pub authorities: Vec<Authority>,
    pub disabled: bool,
    pub default_password: bool,
    pub locked: bool,
    pub uuid: String,
    pub last_modified: i64,
    pub create_time: i64,
    pub locked_time: i64,
    pub wrong_time: u32,
    pub first_login_failed_time: i64,
}

impl ApiUser {
    pub fn into_user(self) -> KylinUser {
        KylinUser {
            username: self.username,
            uuid: self.uuid,
            disabled: self.disabled,
            groups: self
                .authorities
                .into_iter()
                .map(|a| Member {
                    id: MemberId::Name(a.authority.clone()),
                    name: a.authority,
                })
                .collect(),
            default_password: self.default_password,
            locked: self.locked,
            locked_time: millis(self.locked_time),
            wrong_time: self.wrong_time,
            first_login_failed_time: millis(self.first_login_failed_time),
            create_time: millis(self.create_time),
            last_modified: millis(self.last_modified),
        }
        .normalise()
    }
}

/// Kylin writes `0` for a time that never happened (docs/kylin.md K26, K28).
fn millis(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}
