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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{change, DiffOptions};
    use crate::fuzz::{any_json, record};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn plausible_user() -> impl Strategy<Value = Value> {
        static FIELDS: std::sync::OnceLock<Vec<(&'static str, Value)>> = std::sync::OnceLock::new();
        let fields = FIELDS.get_or_init(|| {
            vec![
                ("username", json!("ADMIN")),
                ("authorities", json!([{"authority": "ROLE_ADMIN"}])),
                ("disabled", json!(false)),
                ("default_password", json!(false)),
                ("locked", json!(true)),
                ("uuid", json!("b2c1")),
                ("last_modified", json!(1_764_000_000_000i64)),
                ("create_time", json!(1_764_000_000_000i64)),
                ("locked_time", json!(1_764_000_000_000i64)),
                ("wrong_time", json!(4)),
                ("first_login_failed_time", json!(1_764_000_000_000i64)),
            ]
        });
        record(fields)
    }

    /// What the source does with one answer: read the page, then diff each user against the
    /// first (lock times are computed there).
    fn read_answer(body: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope<DataResult<ApiUser>>>(body) else {
            return;
        };
        let users: Vec<KylinUser> = envelope
            .data
            .into_iter()
            .flat_map(|d| d.value)
            .map(ApiUser::into_user)
            .collect();
        let mut out = Vec::new();
        for (before, after) in users.iter().zip(users.iter().skip(1)) {
            let after = KylinUser {
                uuid: before.uuid.clone(),
                ..after.clone()
            };
            change(
                Some(before),
                Some(&after),
                &DiffOptions::default(),
                &mut out,
            );
        }
    }

    proptest! {
        #[test]
        fn fuzz_kylin_answers_of_any_json_never_panic(v in any_json()) {
            read_answer(v.to_string().as_bytes());
        }

        #[test]
        fn fuzz_kylin_pages_of_hostile_users_never_panic(
            rows in prop::collection::vec(plausible_user(), 0..4),
        ) {
            let body = json!({"code": "000", "data": {"value": rows, "total_size": rows.len()}, "msg": ""});
            read_answer(body.to_string().as_bytes());
        }
    }

    #[test]
    fn a_lock_at_the_edge_of_time_has_no_end_instead_of_a_panic() {
        let user = |locked: bool, wrong_time: u32| {
            ApiUser {
                username: "u".into(),
                authorities: vec![],
                disabled: false,
                default_password: false,
                locked,
                uuid: "x".into(),
                last_modified: 1,
                create_time: 1,
                // The last millisecond chrono can hold.
                locked_time: 8_210_298_412_799_999,
                wrong_time,
                first_login_failed_time: 1,
            }
            .into_user()
        };
        let mut out = Vec::new();
        change(
            Some(&user(false, 2)),
            Some(&user(true, 9)),
            &DiffOptions::default(),
            &mut out,
        );
        let locked = out
            .iter()
            .find(|e| e.event_type.as_str() == "user.locked")
            .expect("a lock event");
        assert_eq!(locked.data["locked_until"], Value::Null);
    }
}
