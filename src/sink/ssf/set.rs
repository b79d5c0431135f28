//! What a rollcall event becomes as a Security Event Token: its SSF event type, the event's
//! claims, the subject identifier, and the SET's claims around them (docs/ssf.md, Mapping).
//!
//! Owns the mapping table and the usable-account rule. Every claim comes from the stored event
//! alone (its id, its time, its `data`), never from the clock, so the same event on the same
//! stream always makes the same claims, and signed, the same SET. No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const ACCOUNT_PURGED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-purged";
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const SESSION_ESTABLISHED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-established";
pub const TOKEN_CLAIMS_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// Every event type rollcall sends (the metadata's and each stream's `events_supported`).
pub const SUPPORTED: [&str; 6] = [
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    ACCOUNT_PURGED,
    CREDENTIAL_CHANGE,
    SESSION_ESTABLISHED,
    TOKEN_CLAIMS_CHANGE,
];

/// Kylin's tenth wrong password in a row locks the account until an admin acts
/// (docs/kylin.md K29, K32).
const PERMANENT_LOCK_AT: u64 = 10;

/// The subject identifier format of a stream's SETs (`format`, receiver-supplied, as the SSF
/// drafts before 1.0 had it; `iss_sub` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectFormat {
    #[default]
    IssSub,
    Email,
    Opaque,
}

/// The SSF event type a rollcall event type may become; `None` for those never sent
/// (`user.created`, `user.login_failed`, `user.observed`, `audit.action`, `agent.tool_called`,
/// and rollcall's own `rollcall.checkpoint`, which describes no user).
pub fn event_type_of(rollcall_type: &str) -> Option<&'static str> {
    Some(match rollcall_type {
        "user.deactivated" | "user.locked" => ACCOUNT_DISABLED,
        "user.reactivated" | "user.unlocked" => ACCOUNT_ENABLED,
        "user.deleted" => ACCOUNT_PURGED,
        "user.password_changed" => CREDENTIAL_CHANGE,
        "user.login" => SESSION_ESTABLISHED,
        "user.updated" | "user.role_added" | "user.role_removed" | "user.group_added"
        | "user.group_removed" => TOKEN_CLAIMS_CHANGE,
        _ => return None,
    })
}

/// One SSF event, before the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub event_type: &'static str,
    pub claims: Value,
    /// RISC events carry no time of their own: the SET's `toe` holds it.
    pub toe: Option<i64>,
}

/// The user an event is about, as SSF identifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// The event's CloudEvents `source` without its shard (`superset://<name>`,
    /// `kylin://<name>`).
    pub source: String,
    /// The source's stable key of the user: the Superset id, the Kylin uuid.
    pub key: String,
    pub email: Option<String>,
}

impl Subject {
    fn source_name(&self) -> &str {
        self.source.split_once("://").map_or("", |(_, n)| n)
    }

    /// Its identifier in `format`; `None` when the user has none in it (no email).
    pub fn identifier(
        &self,
        format: SubjectFormat,
        issuers: &BTreeMap<String, String>,
    ) -> Option<Value> {
        Some(match format {
            SubjectFormat::IssSub => {
                let iss = issuers.get(self.source_name()).unwrap_or(&self.source);
                json!({"format": "iss_sub", "iss": iss, "sub": self.key})
            }
            SubjectFormat::Email => json!({"format": "email", "email": self.email.as_ref()?}),
            SubjectFormat::Opaque => {
                json!({"format": "opaque", "id": format!("{}/{}", self.source, self.key)})
            }
        })
    }

    /// Every identifier the user has, for matching subjects a receiver added or removed.
    pub fn identifiers(&self, issuers: &BTreeMap<String, String>) -> Vec<Value> {
        [
            SubjectFormat::IssSub,
            SubjectFormat::Email,
            SubjectFormat::Opaque,
        ]
        .into_iter()
        .filter_map(|f| self.identifier(f, issuers))
        .collect()
    }
}

/// The subject of a stored event (a CloudEvent as JSON). Its source is named without the shard
/// that polled it: a user keeps its identifiers when its source moves to another shard.
pub fn subject(event: &Value) -> Option<Subject> {
    let source = crate::event::unsharded(event["source"].as_str()?).to_owned();
    let user = &event["data"]["user"];
    let key = if source.starts_with("kylin://") {
        user["uuid"].as_str()?.to_owned()
    } else {
        event["subject"].as_str()?.to_owned()
    };
    let email = user["email"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    Some(Subject { source, key, email })
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch(time: &Value) -> Option<i64> {
    crate::encode::parse_time(time.as_str()?)
        .ok()
        .map(|t| t.timestamp())
}

/// Active, and not locked until an admin acts: what `account-disabled`/`account-enabled`
/// report (docs/ssf.md, The usable-account rule).
fn usable(user: &Value) -> bool {
    let active = user["active"]
        .as_bool()
        .unwrap_or_else(|| !user["disabled"].as_bool().unwrap_or(false));
    active && !locked_for_good(user)
}

fn locked_for_good(user: &Value) -> bool {
    user["locked"].as_bool() == Some(true)
        && user["wrong_time"].as_u64().unwrap_or(0) >= PERMANENT_LOCK_AT
}

fn names(members: &Value) -> Value {
    let names: Vec<&str> = members
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    json!(names)
}

/// The OIDC claim a changed profile field is reported under.
fn claim_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "username" => "preferred_username",
        "first_name" => "given_name",
        "last_name" => "family_name",
        "email" => "email",
        _ => return None,
    })
}

/// The SSF event a stored event becomes; `None` when it is not sent (no SSF type fits, or the
/// change is one the type does not describe: a temporary lock, an update of nothing).
pub fn map(event: &Value) -> Option<Mapped> {
    let data = &event["data"];
    let user = &data["user"];
    let at = epoch(&event["time"])?;
    let risc = |event_type: &'static str| Mapped {
        event_type,
        claims: json!({}),
        toe: Some(at),
    };
    let caep = |event_type: &'static str, mut claims: Map<String, Value>, when: i64| {
        claims.insert("event_timestamp".into(), json!(when));
        Mapped {
            event_type,
            claims: Value::Object(claims),
            toe: None,
        }
    };
    let token_claims = |name: &str, value: Value| {
        let mut claims = Map::new();
        claims.insert("claims".into(), json!({ name: value }));
        caep(TOKEN_CLAIMS_CHANGE, claims, at)
    };
    Some(match event["type"].as_str()? {
        "user.deactivated" if usable(&data["before"]) && !usable(user) => risc(ACCOUNT_DISABLED),
        "user.reactivated" if !usable(&data["before"]) && usable(user) => risc(ACCOUNT_ENABLED),
        // A temporary lock ends without rollcall seeing it, so only a lock for good disables.
        "user.locked" if data["permanent"] == true && !user["disabled"].as_bool()? => {
            risc(ACCOUNT_DISABLED)
        }
        "user.unlocked" if locked_for_good(&data["before"]) && usable(user) => {
            risc(ACCOUNT_ENABLED)
        }
        "user.deleted" => risc(ACCOUNT_PURGED),
        "user.password_changed" => {
            let product = if event["source"].as_str()?.starts_with("kylin://") {
                "Apache Kylin"
            } else {
                "Apache Superset"
            };
            let mut claims = Map::new();
            claims.insert("credential_type".into(), json!("password"));
            claims.insert("change_type".into(), json!("update"));
            claims.insert(
                "reason_admin".into(),
                json!({"en": format!("{product}: the user's default password was changed")}),
            );
            caep(CREDENTIAL_CHANGE, claims, at)
        }
        "user.login" => {
            let when = epoch(&user["last_login"]).unwrap_or(at);
            caep(SESSION_ESTABLISHED, Map::new(), when)
        }
        "user.role_added" | "user.role_removed" => token_claims("roles", names(&user["roles"])),
        "user.group_added" | "user.group_removed" => token_claims("groups", names(&user["groups"])),
        "user.updated" => {
            let mut changed = Map::new();
            for change in data["changes"].as_array()? {
                if let Some(claim) = change["field"].as_str().and_then(claim_of) {
                    changed.insert(claim.into(), change["after"].clone());
                }
            }
            if changed.is_empty() {
                return None;
            }
            let mut claims = Map::new();
            claims.insert("claims".into(), Value::Object(changed));
            caep(TOKEN_CLAIMS_CHANGE, claims, at)
        }
        _ => return None,
    })
}

/// What the envelope of one SET holds besides the event.
pub struct Envelope<'a> {
    pub issuer: &'a str,
    pub aud: &'a str,
    /// `jti` and `txn`: the rollcall event id (or a verification's own id).
    pub id: &'a str,
    pub iat: i64,
    pub sub_id: Value,
}

/// The claims of one SET carrying one event: no `sub` and no `exp` (SSF forbids both).
pub fn claims(envelope: &Envelope<'_>, event_type: &str, event: Value, toe: Option<i64>) -> Value {
    let mut set = json!({
        "iss": envelope.issuer,
        "jti": envelope.id,
        "iat": envelope.iat,
        "aud": envelope.aud,
        "txn": envelope.id,
        "sub_id": envelope.sub_id,
        "events": { event_type: event },
    });
    if let Some(toe) = toe {
        set["toe"] = json!(toe);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored event as rollcall writes it.
    fn event(event_type: &str, subject: &str, data: Value) -> Value {
        json!({
            "specversion": "1.0", "id": "01a2085b-6105-700b-800b-00000000000b",
            "source": "superset://prod", "type": event_type, "subject": subject,
            "time": "2026-11-23T08:42:16Z", "datacontenttype": "application/json",
            "sequence": "00000000000000000011", "data": data,
        })
    }

    fn superset_user(active: bool, roles: &[&str]) -> Value {
        let roles: Vec<Value> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"id": i, "name": r}))
            .collect();
        json!({"id": 4, "username": "bob", "first_name": "Bob", "last_name": "B",
               "email": "bob@example.org", "active": active, "roles": roles, "groups": [],
               "last_login": "2026-11-23T08:40:00Z"})
    }

    fn kylin_user(disabled: bool, locked: bool, wrong_time: u64) -> Value {
        json!({"username": "carol", "uuid": "7c2e4b1a-93d5-4f60-8a1e-5b7d9c3f0e21",
               "disabled": disabled, "locked": locked, "wrong_time": wrong_time,
               "groups": [{"id": 0, "name": "ROLE_ANALYST"}], "default_password": false})
    }

    fn kylin(event_type: &str, data: Value) -> Value {
        let mut e = event(event_type, "carol", data);
        e["source"] = json!("kylin://bi");
        e
    }

    /// The decoded example SET for `file` (tests/fixtures/ssf/sets).
    fn example(file: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/ssf/sets/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The `events` member a mapped event makes, with the time claims removed (the examples
    /// were made at other times).
    fn events_of(m: &Mapped) -> Value {
        let mut claims = m.claims.clone();
        if let Some(o) = claims.as_object_mut() {
            o.remove("event_timestamp");
        }
        json!({ m.event_type: claims })
    }

    fn example_events(file: &str) -> Value {
        let mut events = example(file)["payload"]["events"].clone();
        for (_, e) in events.as_object_mut().unwrap() {
            e.as_object_mut().unwrap().remove("event_timestamp");
        }
        events
    }

    #[test]
    fn account_state_changes_map_to_risc_events_with_the_time_in_toe() {
        let off = event(
            "user.deactivated",
            "4",
            json!({"user": superset_user(false, &[]), "before": superset_user(true, &[])}),
        );
        let m = map(&off).unwrap();
        assert_eq!(events_of(&m), example_events("02-user.deactivated.json"));
        assert_eq!(m.toe, Some(1_795_423_336));
        let on = event(
            "user.reactivated",
            "4",
            json!({"user": superset_user(true, &[]), "before": superset_user(false, &[])}),
        );
        assert_eq!(
            events_of(&map(&on).unwrap()),
            example_events("03-user.reactivated.json")
        );
        let gone = event(
            "user.deleted",
            "4",
            json!({"user": superset_user(true, &[])}),
        );
        assert_eq!(
            events_of(&map(&gone).unwrap()),
            example_events("04-user.deleted.json")
        );
    }

    #[test]
    fn caep_events_carry_their_claims_and_an_event_timestamp() {
        let pw = kylin(
            "user.password_changed",
            json!({"user": kylin_user(false, false, 0), "before": kylin_user(false, false, 0)}),
        );
        let m = map(&pw).unwrap();
        assert_eq!(
            events_of(&m),
            example_events("05-user.password_changed.json")
        );
        assert_eq!(m.claims["event_timestamp"], 1_795_423_336);
        assert_eq!(m.toe, None);
        let login = event(
            "user.login",
            "4",
            json!({"user": superset_user(true, &[]), "before": superset_user(true, &[])}),
        );
        let m = map(&login).unwrap();
        assert_eq!(m.event_type, SESSION_ESTABLISHED);
        assert_eq!(
            m.claims["event_timestamp"], 1_795_423_200,
            "the new last_login"
        );
        let role = event(
            "user.role_added",
            "3",
            json!({"user": superset_user(true, &["Alpha", "Gamma"]), "role": {"id": 0, "name": "Alpha"}}),
        );
        assert_eq!(
            events_of(&map(&role).unwrap()),
            example_events("07-user.role_added.json")
        );
        let none_left = event(
            "user.role_removed",
            "3",
            json!({"user": superset_user(true, &[]), "role": {"id": 0, "name": "Alpha"}}),
        );
        assert_eq!(
            map(&none_left).unwrap().claims["claims"],
            json!({"roles": []})
        );
        let group = kylin(
            "user.group_removed",
            json!({"user": kylin_user(false, false, 0), "group": {"id": 1, "name": "ROLE_MODELER"}}),
        );
        assert_eq!(
            events_of(&map(&group).unwrap()),
            example_events("10-user.group_removed.json")
        );
        let updated = event(
            "user.updated",
            "3",
            json!({"user": superset_user(true, &[]), "changes": [
                {"field": "first_name", "before": "Alice", "after": "Alicia"},
                {"field": "email", "before": "alice@example.org", "after": "alicia@example.org"}]}),
        );
        assert_eq!(
            events_of(&map(&updated).unwrap()),
            example_events("11-user.updated.json")
        );
    }

    #[test]
    fn what_no_ssf_type_describes_is_not_sent() {
        for t in [
            "user.created",
            "user.login_failed",
            "user.observed",
            "audit.action",
            "agent.tool_called",
            "rollcall.checkpoint",
        ] {
            let e = event(t, "4", json!({"user": superset_user(true, &[])}));
            assert_eq!(map(&e), None, "{t}");
            assert_eq!(event_type_of(t), None, "{t}");
        }
        let nothing = kylin(
            "user.updated",
            json!({"user": kylin_user(false, false, 0), "changes": [], "note": "a no-op save"}),
        );
        assert_eq!(map(&nothing), None);
        let temporary = kylin(
            "user.locked",
            json!({"user": kylin_user(false, true, 3), "permanent": false}),
        );
        assert_eq!(map(&temporary), None, "a temporary lock expires unseen");
    }

    #[test]
    fn the_usable_account_rule_reports_one_state_across_locks_and_deactivation() {
        let locked = kylin(
            "user.locked",
            json!({"user": kylin_user(false, true, 10), "permanent": true}),
        );
        assert_eq!(
            events_of(&map(&locked).unwrap()),
            example_events("12-user.locked.json")
        );
        let unlocked = kylin(
            "user.unlocked",
            json!({"user": kylin_user(false, false, 0), "before": kylin_user(false, true, 10)}),
        );
        assert_eq!(
            events_of(&map(&unlocked).unwrap()),
            example_events("13-user.unlocked.json")
        );
        // Deactivated while locked for good: it was not usable, so nothing changes...
        let off_while_locked = kylin(
            "user.deactivated",
            json!({"user": kylin_user(true, true, 10), "before": kylin_user(false, true, 10)}),
        );
        assert_eq!(map(&off_while_locked), None);
        // ...and the lock ending on a deactivated user does not enable it.
        let unlocked_but_off = kylin(
            "user.unlocked",
            json!({"user": kylin_user(true, false, 0), "before": kylin_user(true, true, 10)}),
        );
        assert_eq!(map(&unlocked_but_off), None);
        let locked_when_off = kylin(
            "user.locked",
            json!({"user": kylin_user(true, true, 10), "permanent": true}),
        );
        assert_eq!(map(&locked_when_off), None);
    }

    #[test]
    fn subjects_are_iss_sub_by_default_with_the_configured_issuer_and_email_only_when_known() {
        let issuers = BTreeMap::from([(
            "prod".to_owned(),
            "https://superset.example.com/".to_owned(),
        )]);
        let s = subject(&event(
            "user.deleted",
            "4",
            json!({"user": superset_user(true, &[])}),
        ))
        .unwrap();
        assert_eq!(
            s.identifier(SubjectFormat::IssSub, &issuers).unwrap(),
            example("02-user.deactivated.json")["payload"]["sub_id"]
        );
        assert_eq!(
            s.identifier(SubjectFormat::Email, &issuers).unwrap(),
            json!({"format": "email", "email": "bob@example.org"})
        );
        let k = subject(&kylin(
            "user.deleted",
            json!({"user": kylin_user(false, false, 0)}),
        ))
        .unwrap();
        assert_eq!(
            k.identifier(SubjectFormat::IssSub, &BTreeMap::new())
                .unwrap(),
            json!({"format": "iss_sub", "iss": "kylin://bi", "sub": "7c2e4b1a-93d5-4f60-8a1e-5b7d9c3f0e21"})
        );
        assert_eq!(k.identifier(SubjectFormat::Email, &issuers), None);
        assert_eq!(k.identifiers(&issuers).len(), 2);
    }

    #[test]
    fn a_subject_is_the_same_whichever_shard_polled_its_source() {
        let issuers = BTreeMap::from([(
            "prod".to_owned(),
            "https://superset.example.com/".to_owned(),
        )]);
        let mut sharded = event(
            "user.deleted",
            "4",
            json!({"user": superset_user(true, &[])}),
        );
        sharded["source"] = json!("superset://prod?shard=eu-1");
        let plain = event(
            "user.deleted",
            "4",
            json!({"user": superset_user(true, &[])}),
        );
        let (sharded, plain) = (subject(&sharded).unwrap(), subject(&plain).unwrap());
        assert_eq!(sharded.identifiers(&issuers), plain.identifiers(&issuers));
        assert_eq!(
            sharded.identifier(SubjectFormat::IssSub, &BTreeMap::new()),
            Some(json!({"format": "iss_sub", "iss": "superset://prod", "sub": "4"}))
        );
    }
}
