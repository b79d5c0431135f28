//! OCSF 1.8.0 on the wire: every rollcall event as one JSON record of the OCSF class a SIEM
//! files it under (Account Change, Authentication, User Access Management, Group Management,
//! User Inventory Info, API Activity).
//!
//! Owns the mapping: class, activity, severity and captions per event type, and which OCSF
//! attribute holds which part of the stored event. A record is built from the stored event
//! alone, so it is the same on every redelivery and replay, and `metadata.uid` is the event id
//! for SIEMs to de-duplicate on. It must never do I/O, never invent a value the stored event
//! does not hold (no client address, no actor Superset did not record), and never emit an
//! attribute OCSF 1.8.0 does not define: what has no attribute stays in `unmapped.data`, the
//! CloudEvents `data` verbatim. The rules it follows are in docs/ocsf-rules.md; the mapping
//! table and the severity choices are in docs/ocsf.md.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Encoded, Envelope, Unreadable};
use crate::event::EventType;

/// The OCSF schema version every record declares in `metadata.version`.
pub const VERSION: &str = "1.8.0";
/// Plain JSON: what SIEM HTTP collectors and Kafka connectors expect of an OCSF record.
pub const CONTENT_TYPE: &str = "application/json";

/// Superset's built-in administrator role and Kylin's administrator authority: granting either
/// is the privilege escalation a SIEM alerts on, so it is High rather than Low.
const ADMIN_ROLES: [&str; 2] = ["Admin", "ROLE_ADMIN"];
/// New failed logins within one poll from which a burst is Medium rather than Low.
const FAILURE_BURST: u64 = 5;

/// Why a stored event has no OCSF record. Reported as the source of [`Unreadable`].
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("its `data` is not the payload of a `{event_type}` event ({source}); deliver it with `format = \"cloudevents\"`, which sends it unchanged")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
    #[error("a `{event_type}` event without `data.{field}`, which its OCSF record needs; deliver it with `format = \"cloudevents\"`, which sends it unchanged")]
    Missing {
        event_type: &'static str,
        field: &'static str,
    },
    #[error("`{field}` is `{text}`, not an RFC 3339 time ({source})")]
    Time {
        field: &'static str,
        text: String,
        source: chrono::ParseError,
    },
    #[error("event type `{0}` has no OCSF mapping in this rollcall version: upgrade rollcall, or deliver it with `format = \"cloudevents\"`")]
    UnknownType(String),
    #[error("source `{0}` is of a kind this rollcall version cannot name in OCSF: upgrade rollcall, or deliver it with `format = \"cloudevents\"`")]
    UnknownSource(String),
}

/// The record of one stored event, as the body of an [`Encoded`] event keyed like CloudEvents
/// (per user), with no attribute headers.
pub fn encode<'a>(e: &'a Envelope<'a>) -> Result<Encoded<'a>, Unreadable> {
    let body = record(e).map_err(|source| Unreadable {
        offset: e.offset,
        source: source.into(),
    })?;
    Ok(Encoded {
        key: e.key(),
        headers: Vec::new(),
        content_type: CONTENT_TYPE,
        body: Cow::Owned(body),
    })
}

/// The OCSF classes rollcall emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    AccountChange,
    Authentication,
    UserAccessManagement,
    GroupManagement,
    UserInventoryInfo,
    ApiActivity,
}

impl Class {
    fn uid(self) -> u32 {
        match self {
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::UserAccessManagement => 3005,
            Class::GroupManagement => 3006,
            Class::UserInventoryInfo => 5003,
            Class::ApiActivity => 6003,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::UserAccessManagement => "User Access Management",
            Class::GroupManagement => "Group Management",
            Class::UserInventoryInfo => "User Inventory Info",
            Class::ApiActivity => "API Activity",
        }
    }

    fn category_name(self) -> &'static str {
        match self {
            Class::AccountChange
            | Class::Authentication
            | Class::UserAccessManagement
            | Class::GroupManagement => "Identity & Access Management",
            Class::UserInventoryInfo => "Discovery",
            Class::ApiActivity => "Application Activity",
        }
    }
}

/// The class and activity (id, caption) of every event type; `audit.action`'s activity depends
/// on the action, so its `Unknown` here is always replaced (see [`api_activity`]).
fn class_of(t: EventType) -> (Class, u8, &'static str) {
    use Class::*;
    match t {
        EventType::UserObserved => (UserInventoryInfo, 2, "Collect"),
        EventType::UserCreated => (AccountChange, 1, "Create"),
        EventType::UserReactivated => (AccountChange, 2, "Enable"),
        EventType::UserPasswordChanged => (AccountChange, 3, "Password Change"),
        EventType::UserDeactivated => (AccountChange, 5, "Disable"),
        EventType::UserDeleted => (AccountChange, 6, "Delete"),
        EventType::UserLocked => (AccountChange, 9, "Lock"),
        EventType::UserUnlocked => (AccountChange, 12, "Unlock"),
        EventType::UserUpdated => (AccountChange, 99, "Other"),
        EventType::UserLogin | EventType::UserLoginFailed => (Authentication, 1, "Logon"),
        EventType::UserRoleAdded => (UserAccessManagement, 1, "Assign Privileges"),
        EventType::UserRoleRemoved => (UserAccessManagement, 2, "Revoke Privileges"),
        EventType::UserGroupAdded => (GroupManagement, 3, "Add User"),
        EventType::UserGroupRemoved => (GroupManagement, 4, "Remove User"),
        EventType::AuditAction => (ApiActivity, 0, "Unknown"),
    }
}

/// API Activity's activity from the method part of a Superset action name
/// (`ChartRestApi.get_list` → Read); `None` when the name says nothing about it (`explore_json`,
/// `mcp.generate_chart.db_write`), which becomes 99 Other with the action as `activity_name`.
fn api_activity(action: &str) -> Option<(u8, &'static str)> {
    let method = action.rsplit_once('.')?.1;
    match method {
        "post" => Some((1, "Create")),
        "get" | "get_list" | "info" | "export" | "related" => Some((2, "Read")),
        "put" => Some((3, "Update")),
        "delete" | "bulk_delete" => Some((4, "Delete")),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
    High = 4,
}

impl Severity {
    fn caption(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

/// The severity of each event type, as docs/ocsf.md (Severity) documents it: changes that grant
/// or restore access, or that cannot be undone, rank above those that only describe an account.
fn severity(t: EventType, d: &Data<'_>) -> Severity {
    let admin = |m: &Option<Member<'_>>| {
        m.as_ref()
            .is_some_and(|m| ADMIN_ROLES.contains(&m.name.as_ref()))
    };
    match t {
        EventType::UserObserved
        | EventType::UserUpdated
        | EventType::UserRoleRemoved
        | EventType::UserGroupRemoved
        | EventType::UserLogin
        | EventType::AuditAction => Severity::Informational,
        EventType::UserRoleAdded if admin(&d.role) => Severity::High,
        EventType::UserGroupAdded if admin(&d.group) => Severity::High,
        EventType::UserLoginFailed if d.new_failures.unwrap_or(0) >= FAILURE_BURST => {
            Severity::Medium
        }
        EventType::UserCreated
        | EventType::UserDeactivated
        | EventType::UserRoleAdded
        | EventType::UserGroupAdded
        | EventType::UserLoginFailed
        | EventType::UserUnlocked
        | EventType::UserPasswordChanged => Severity::Low,
        EventType::UserReactivated | EventType::UserDeleted => Severity::Medium,
        EventType::UserLocked => Severity::High,
    }
}

// --- what is read from the stored `data` (schemas/), borrowed where JSON allows ---------------

/// The union of every type's `data`: each type has a subset, checked where it is needed.
#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    user: Option<Account<'a>>,
    #[serde(borrow, default)]
    before: Option<Account<'a>>,
    #[serde(borrow, default)]
    changes: Option<Vec<Change<'a>>>,
    #[serde(borrow, default)]
    note: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    role: Option<Member<'a>>,
    #[serde(borrow, default)]
    group: Option<Member<'a>>,
    #[serde(default)]
    fail_login_count: Option<u64>,
    #[serde(default)]
    new_failures: Option<u64>,
    #[serde(default)]
    wrong_time: Option<u64>,
    #[serde(borrow, default)]
    locked_at: Option<Cow<'a, str>>,
    #[serde(default)]
    permanent: Option<bool>,
    #[serde(borrow, default)]
    locked_until: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    dttm: Option<Cow<'a, str>>,
    #[serde(default)]
    dashboard_id: Option<i64>,
    #[serde(default)]
    slice_id: Option<i64>,
    #[serde(default)]
    duration_ms: Option<i64>,
    #[serde(borrow, default)]
    referrer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    details: Option<&'a RawValue>,
}

/// A user record of either shape (Superset's has `id`, Kylin's `uuid`), or the action log's
/// short one; only what OCSF has attributes for.
#[derive(Deserialize)]
struct Account<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    first_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    email: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last_login: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    changed_on: Option<Cow<'a, str>>,
    #[serde(default)]
    created_by: Option<u64>,
    #[serde(default)]
    changed_by: Option<u64>,
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(borrow)]
    field: Cow<'a, str>,
}

/// The changed fields, comma-separated, for the record's `message`.
struct Fields<'c, 'a>(&'c [Change<'a>]);

impl fmt::Display for Fields<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&change.field)?;
        }
        Ok(())
    }
}

/// A role or group: Superset numbers them, Kylin names them.
#[derive(Deserialize)]
struct Member<'a> {
    id: MemberId,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MemberId {
    Number(u64),
    Name(String),
}

/// A role's or group's id as OCSF's string `uid`.
impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MemberId::Number(n) => Uid::Number(*n).serialize(s),
            MemberId::Name(name) => s.serialize_str(name),
        }
    }
}

/// A string `uid` that may be a number in the stored event: written as a string straight into
/// the body, with no string allocated per record.
#[derive(Clone, Copy)]
enum Uid<'r> {
    Number(u64),
    Signed(i64),
    Text(&'r str),
}

impl fmt::Display for Uid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Number(n) => n.fmt(f),
            Uid::Signed(n) => n.fmt(f),
            Uid::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for Uid<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Uid::Number(n) => s.collect_str(n),
            Uid::Signed(n) => s.collect_str(n),
            Uid::Text(text) => s.serialize_str(text),
        }
    }
}

/// `full_name`: the first and last names, trimmed, those not empty, joined by a space.
struct FullName<'r>([Option<&'r str>; 2]);

impl<'r> FullName<'r> {
    fn of(first: Option<&'r str>, last: Option<&'r str>) -> Option<FullName<'r>> {
        let part = |p: Option<&'r str>| p.map(str::trim).filter(|p| !p.is_empty());
        let parts = [part(first), part(last)];
        parts.iter().any(Option::is_some).then_some(FullName(parts))
    }
}

impl fmt::Display for FullName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [Some(first), Some(last)] => write!(f, "{first} {last}"),
            [Some(one), None] | [None, Some(one)] => f.write_str(one),
            [None, None] => Ok(()),
        }
    }
}

impl Serialize for FullName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The part of the action log's `json` column OCSF has an attribute for.
#[derive(Deserialize)]
struct Details<'a> {
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
}

// --- what is written ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Record<'r> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u8,
    activity_name: &'r str,
    type_uid: u32,
    type_name: TypeName<'r>,
    severity_id: u8,
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<String>,
    time: i64,
    /// Every time rollcall sends is UTC.
    timezone_offset: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    message: String,
    metadata: Metadata<'r>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_result: Option<User<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Actor<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privileges: Option<[&'r str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Group<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<Service<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<Api<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<HttpRequest<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource>,
    unmapped: Unmapped<'r>,
}

/// `type_name`, "<class>: <activity>", written straight into the body: no string per record.
struct TypeName<'r>(&'static str, &'r str);

impl Serialize for TypeName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}: {}", self.0, self.1))
    }
}

#[derive(Serialize)]
struct Metadata<'r> {
    version: &'static str,
    uid: &'r str,
    product: Product,
    /// The rollcall source (`superset://prod`): which instance the event is about.
    log_name: &'r str,
    log_provider: &'static str,
    /// The CloudEvents `type`, for rules written against rollcall's own names.
    event_code: &'r str,
    /// The log offset: the order rollcall stored events in.
    sequence: u64,
    original_time: &'r str,
    logged_time: i64,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct User<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<Uid<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full_name: Option<FullName<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_addr: Option<&'r str>,
}

#[derive(Serialize)]
struct Actor<'r> {
    user: User<'r>,
}

#[derive(Serialize)]
struct Group<'r> {
    name: &'r str,
    uid: &'r MemberId,
}

#[derive(Serialize)]
struct Service<'r> {
    name: &'static str,
    uid: &'r str,
}

#[derive(Serialize)]
struct Api<'r> {
    operation: &'r str,
    service: Service<'r>,
}

/// The action log records no client address; see [`UNKNOWN_ENDPOINT`].
#[derive(Serialize)]
struct Endpoint {
    name: &'static str,
}

/// API Activity requires a `src_endpoint`, and Superset's action log never records where a
/// request came from. Rather than an invented address (or the Superset host, which is the
/// destination), the endpoint is named `unknown`: the value Splunk's CIM and most OCSF mappers
/// use for "the source did not say", which no IP or hostname rule can match.
const UNKNOWN_ENDPOINT: &str = "unknown";

#[derive(Serialize)]
struct HttpRequest<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<Url<'r>>,
}

#[derive(Serialize)]
struct Url<'r> {
    path: Cow<'r, str>,
}

#[derive(Serialize)]
struct Resource {
    #[serde(rename = "type")]
    kind: &'static str,
    uid: Uid<'static>,
}

#[derive(Serialize)]
struct Unmapped<'r> {
    /// The CloudEvents `data`, verbatim: every value OCSF has no attribute for (roles, counters,
    /// Kylin's lock fields, the log row's `json`) is here, and nothing is lost.
    data: &'r RawValue,
}

// --- the mapping -------------------------------------------------------------------------------

fn record(e: &Envelope<'_>) -> Result<Vec<u8>, MappingError> {
    let t = EventType::ALL
        .into_iter()
        .find(|t| t.as_str() == e.event_type)
        .ok_or_else(|| MappingError::UnknownType(e.event_type.to_string()))?;
    let service = match e.source.split_once("://") {
        Some(("superset", _)) => "Superset",
        Some(("kylin", _)) => "Kylin",
        _ => return Err(MappingError::UnknownSource(e.source.to_string())),
    };
    let d: Data<'_> = serde_json::from_str(e.data.get()).map_err(|source| MappingError::Data {
        event_type: t.as_str().to_owned(),
        source,
    })?;
    let missing = |field| MappingError::Missing {
        event_type: t.as_str(),
        field,
    };
    let (class, activity_id, activity_name) = class_of(t);
    let severity = severity(t, &d);

    // When it happened, if the source says so; else when rollcall observed it.
    let occurred: Option<(&'static str, &str)> = match t {
        EventType::UserLogin => d
            .user
            .as_ref()
            .and_then(|u| u.last_login.as_deref())
            .map(|s| ("data.user.last_login", s)),
        EventType::UserLocked => d.locked_at.as_deref().map(|s| ("data.locked_at", s)),
        EventType::AuditAction => Some(("data.dttm", d.dttm.as_deref().ok_or(missing("dttm"))?)),
        _ => None,
    };
    let logged_time = millis("time", &e.time)?;
    let (time, original_time) = match occurred {
        Some((field, text)) => (millis(field, text)?, text),
        None => (logged_time, e.time.as_ref()),
    };

    let mut r = Record {
        class_uid: class.uid(),
        class_name: class.name(),
        category_uid: class.uid() / 1000,
        category_name: class.category_name(),
        activity_id,
        activity_name,
        type_uid: 0,
        type_name: TypeName(class.name(), activity_name),
        severity_id: severity as u8,
        severity: severity.caption(),
        status_id: None,
        status: None,
        status_detail: None,
        time,
        timezone_offset: 0,
        count: None,
        duration: None,
        message: String::new(),
        metadata: Metadata {
            version: VERSION,
            uid: &e.id,
            product: Product {
                name: "rollcall",
                version: env!("CARGO_PKG_VERSION"),
            },
            log_name: &e.source,
            log_provider: service,
            event_code: t.as_str(),
            sequence: e.offset,
            original_time,
            logged_time,
        },
        user: None,
        user_result: None,
        actor: None,
        privileges: None,
        group: None,
        service: None,
        api: None,
        src_endpoint: None,
        http_request: None,
        resources: Vec::new(),
        unmapped: Unmapped { data: e.data },
    };

    r.message = match t {
        EventType::AuditAction => audit(&mut r, &d, service, &e.source)?,
        EventType::UserObserved => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} exists")
        }
        EventType::UserCreated => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} created")
        }
        EventType::UserUpdated => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            match (&d.changes, &d.note) {
                (Some(c), _) if !c.is_empty() => {
                    format!("{service} user {name} updated: {}", Fields(c))
                }
                (_, Some(note)) => {
                    format!("{service} user {name} saved without a visible change: {note}")
                }
                _ => format!("{service} user {name} updated"),
            }
        }
        EventType::UserDeactivated => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} deactivated")
        }
        EventType::UserReactivated => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} reactivated")
        }
        EventType::UserDeleted => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} deleted")
        }
        EventType::UserPasswordChanged => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} set their own password")
        }
        EventType::UserUnlocked => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} unlocked")
        }
        EventType::UserLocked => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            let failures = d.wrong_time.ok_or(missing("wrong_time"))?;
            let until = match (d.permanent, d.locked_until.as_deref()) {
                (Some(true), _) => "until an administrator resets the password".to_owned(),
                (_, Some(until)) => format!("until {until}"),
                _ => "for Kylin's lock duration".to_owned(),
            };
            format!("{service} user {name} locked after {failures} failed logins, {until}")
        }
        EventType::UserRoleAdded | EventType::UserRoleRemoved => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            let role = d.role.as_ref().ok_or(missing("role"))?;
            r.privileges = Some([&role.name]);
            let verb = if t == EventType::UserRoleAdded {
                "granted to"
            } else {
                "revoked from"
            };
            format!("{service} role {} {verb} {name}", role.name)
        }
        EventType::UserGroupAdded | EventType::UserGroupRemoved => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            let group = d.group.as_ref().ok_or(missing("group"))?;
            r.group = Some(Group {
                name: &group.name,
                uid: &group.id,
            });
            let verb = if t == EventType::UserGroupAdded {
                "added to"
            } else {
                "removed from"
            };
            format!("{service} user {name} {verb} group {}", group.name)
        }
        EventType::UserLogin => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            format!("{service} user {name} logged in")
        }
        EventType::UserLoginFailed => {
            let name = account(&mut r, t, &d, service, &e.source)?;
            let failures = d.new_failures.ok_or(missing("new_failures"))?;
            let counter = d.fail_login_count.ok_or(missing("fail_login_count"))?;
            r.status_id = Some(2);
            r.status = Some("Failure");
            r.count = Some(failures);
            r.status_detail = Some(format!(
                "{failures} failed login(s) since the previous poll; {service} counts {counter} in a row"
            ));
            format!("{failures} failed login(s) of {service} user {name}")
        }
    };
    r.type_uid = class.uid() * 100 + u32::from(r.activity_id);
    r.type_name = TypeName(class.name(), r.activity_name);
    // The record holds `data` verbatim plus about a kilobyte of attributes: one allocation.
    let mut body = Vec::with_capacity(e.data.get().len() + 1024);
    serde_json::to_writer(&mut body, &r)
        .map(|()| body)
        .map_err(|source| MappingError::Data {
            event_type: t.as_str().to_owned(),
            source,
        })
}

/// The API Activity attributes of an action-log row; returns the record's `message`.
fn audit<'r>(
    r: &mut Record<'r>,
    d: &'r Data<'_>,
    service: &'static str,
    source: &'r str,
) -> Result<String, MappingError> {
    let action = d.action.as_deref().ok_or(MappingError::Missing {
        event_type: EventType::AuditAction.as_str(),
        field: "action",
    })?;
    (r.activity_id, r.activity_name) = api_activity(action).unwrap_or((99, action));
    let actor = d
        .user
        .as_ref()
        .and_then(user)
        // A row without a user: an anonymous request, or a user deleted since.
        .unwrap_or(User {
            uid: None,
            name: Some("anonymous"),
            full_name: None,
            email_addr: None,
        });
    let who: &dyn fmt::Display = match (&actor.name, &actor.uid) {
        (Some(name), _) => name,
        (None, Some(uid)) => uid,
        (None, None) => &"a user",
    };
    let message = format!("{who} called {action} on {service}");
    r.actor = Some(Actor { user: actor });
    r.api = Some(Api {
        operation: action,
        service: Service {
            name: service,
            uid: source,
        },
    });
    r.src_endpoint = Some(Endpoint {
        name: UNKNOWN_ENDPOINT,
    });
    let path = d
        .details
        .and_then(|raw| serde_json::from_str::<Details<'_>>(raw.get()).ok())
        .and_then(|details| details.path);
    if d.referrer.is_some() || path.is_some() {
        r.http_request = Some(HttpRequest {
            referrer: d.referrer.as_deref(),
            url: path.map(|path| Url { path }),
        });
    }
    r.resources = [("Dashboard", d.dashboard_id), ("Chart", d.slice_id)]
        .into_iter()
        .filter_map(|(kind, id)| {
            id.map(|id| Resource {
                kind,
                uid: Uid::Signed(id),
            })
        })
        .collect();
    r.duration = d.duration_ms;
    Ok(message)
}

/// The attributes every account event has (the user, the status, the actor, the service of an
/// authentication); returns the user's name for the record's `message`.
fn account<'r>(
    r: &mut Record<'r>,
    t: EventType,
    d: &'r Data<'_>,
    service: &'static str,
    source: &'r str,
) -> Result<&'r str, MappingError> {
    let missing = |field| MappingError::Missing {
        event_type: t.as_str(),
        field,
    };
    let now = d.user.as_ref().ok_or(missing("user"))?;
    let target = user(now).ok_or(missing("user.username"))?;
    let name = now.username.as_deref().ok_or(missing("user.username"))?;
    if r.class_uid != Class::UserInventoryInfo.uid() {
        r.status_id = Some(1);
        r.status = Some("Success");
    }
    if r.class_uid == Class::Authentication.uid() {
        r.service = Some(Service {
            name: service,
            uid: source,
        });
    }
    r.actor = actor(t, now, d.before.as_ref()).map(|user| Actor { user });
    if t == EventType::UserUpdated {
        // OCSF: `user` is the account as it was, `user_result` as the change left it.
        let before = d.before.as_ref().ok_or(missing("before"))?;
        r.user = Some(user(before).ok_or(missing("before.username"))?);
        r.user_result = Some(target);
    } else {
        r.user = Some(target);
    }
    Ok(name)
}

/// A stored account as an OCSF user; `None` when it has neither a name nor an id to go by.
fn user<'r>(a: &'r Account<'_>) -> Option<User<'r>> {
    let uid = match (a.id, a.uuid.as_deref()) {
        (Some(id), _) => Some(Uid::Number(id)),
        (None, Some(uuid)) => Some(Uid::Text(uuid)),
        (None, None) => None,
    };
    let name = a.username.as_deref();
    if uid.is_none() && name.is_none() {
        return None;
    }
    Some(User {
        uid,
        name,
        full_name: FullName::of(a.first_name.as_deref(), a.last_name.as_deref()),
        // Superset accepts any text as an email; OCSF's `email_addr` does not. A value OCSF
        // would reject stays only in `unmapped.data`.
        email_addr: a.email.as_deref().filter(|s| is_email(s)),
    })
}

/// Who made the change, only where Superset's own record says so: `created_by` for a creation,
/// `changed_by` for an edit of the record that moved its `changed_on` (role and group changes
/// made through the roles and groups APIs leave both untouched, so they get no actor).
fn actor<'r>(t: EventType, now: &Account<'_>, before: Option<&Account<'_>>) -> Option<User<'r>> {
    let id = match t {
        EventType::UserCreated => now.created_by,
        EventType::UserUpdated | EventType::UserDeactivated | EventType::UserReactivated => {
            let edited = before.is_some_and(|b| b.changed_on != now.changed_on);
            now.changed_by.filter(|_| edited)
        }
        _ => None,
    }?;
    Some(User {
        uid: Some(Uid::Number(id)),
        name: None,
        full_name: None,
        email_addr: None,
    })
}

fn millis(field: &'static str, text: &str) -> Result<i64, MappingError> {
    super::parse_time(text)
        .map(|t| t.timestamp_millis())
        .map_err(|source| MappingError::Time {
            field,
            text: text.to_owned(),
            source,
        })
}

/// OCSF's `email_t`: `^[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$`. In
/// the local part `+-/` is a range, so `,` is allowed too.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let Some((first, rest)) = domain.split_once('.') else {
        return false;
    };
    let local_ok = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+,-./=?^_`{|}~".contains(c);
    let label_ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
    !local.is_empty()
        && local.chars().all(local_ok)
        && !first.is_empty()
        && first.chars().all(label_ok)
        && !rest.is_empty()
        && rest.chars().all(|c| label_ok(c) || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_check_follows_ocsf_email_t() {
        for ok in ["alice@example.com", "a.b+c@ex-ample.co.uk", "x,y@a.b"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "alice-at-example",
            "alice@example",
            "@example.com",
            "alice@.com",
            "alice@example.",
            "a@b@c.d",
            "alice smith@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn api_activity_comes_from_the_method_part_of_the_action() {
        assert_eq!(api_activity("ChartRestApi.get_list"), Some((2, "Read")));
        assert_eq!(api_activity("DashboardRestApi.post"), Some((1, "Create")));
        assert_eq!(api_activity("DashboardRestApi.put"), Some((3, "Update")));
        assert_eq!(
            api_activity("ChartRestApi.bulk_delete"),
            Some((4, "Delete"))
        );
        assert_eq!(api_activity("mcp.generate_chart.db_write"), None);
        assert_eq!(api_activity("explore_json"), None);
    }
}
