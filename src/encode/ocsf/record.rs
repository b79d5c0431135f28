//! The OCSF record of one stored event: its attributes (what is written), and how each is
//! filled from the stored event (the class, activity and severity come from `mapping`). Never
//! an attribute OCSF 1.8.0 does not define: the rest stays in `unmapped.data`.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

use super::datatypes::{is_email, millis};
use super::input::{Account, Data, Details, Fields, FullName, MemberId, Uid};
use super::mapping::{api_activity, class_of, severity, Class};
use super::{MappingError, VERSION};
use crate::encode::Envelope;
use crate::event::EventType;
use crate::source::KindProduct;

#[derive(Serialize)]
pub(super) struct Record<'r> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
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
pub(super) struct TypeName<'r>(&'static str, &'r str);

impl Serialize for TypeName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}: {}", self.0, self.1))
    }
}

#[derive(Serialize)]
pub(super) struct Metadata<'r> {
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
pub(super) struct Product {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
pub(super) struct User<'r> {
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
pub(super) struct Actor<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'r>>,
    /// The client application: for an agent's tool call, the MCP client, with the agent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_uid: Option<&'r str>,
}

impl<'r> Actor<'r> {
    fn user(user: User<'r>) -> Actor<'r> {
        Actor {
            user: Some(user),
            app_name: None,
            app_uid: None,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Group<'r> {
    name: &'r str,
    uid: &'r MemberId,
}

#[derive(Serialize)]
pub(super) struct Service<'r> {
    name: &'static str,
    uid: &'r str,
}

#[derive(Serialize)]
pub(super) struct Api<'r> {
    operation: &'r str,
    service: Service<'r>,
}

/// The action log records no client address; see [`UNKNOWN_ENDPOINT`].
#[derive(Serialize)]
pub(super) struct Endpoint {
    name: &'static str,
}

/// API Activity requires a `src_endpoint`, and Superset's action log never records where a
/// request came from. Rather than an invented address (or the Superset host, which is the
/// destination), the endpoint is named `unknown`: the value Splunk's CIM and most OCSF mappers
/// use for "the source did not say", which no IP or hostname rule can match.
pub(super) const UNKNOWN_ENDPOINT: &str = "unknown";

#[derive(Serialize)]
pub(super) struct HttpRequest<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<Url<'r>>,
}

#[derive(Serialize)]
pub(super) struct Url<'r> {
    path: Cow<'r, str>,
}

#[derive(Serialize)]
pub(super) struct Resource {
    #[serde(rename = "type")]
    kind: &'static str,
    uid: Uid<'static>,
}

#[derive(Serialize)]
pub(super) struct Unmapped<'r> {
    /// The CloudEvents `data`, verbatim: every value OCSF has no attribute for (roles, counters,
    /// Kylin's lock fields, the log row's `json`) is here, and nothing is lost.
    data: &'r RawValue,
}

pub(super) fn record(e: &Envelope<'_>) -> Result<Vec<u8>, MappingError> {
    let t = EventType::ALL
        .into_iter()
        .find(|t| t.as_str() == e.event_type)
        .ok_or_else(|| MappingError::UnknownType(e.event_type.to_string()))?;
    let kind = KindProduct::of(&e.source)
        .ok_or_else(|| MappingError::UnknownSource(e.source.to_string()))?;
    let service = kind.product;
    let d: Data<'_> = serde_json::from_str(e.data.get()).map_err(|source| MappingError::Data {
        event_type: t.as_str().to_owned(),
        source,
    })?;
    let missing = |field| MappingError::Missing {
        event_type: t.as_str(),
        field,
    };
    let (class, activity_id, activity_name) = class_of(t);
    let severity = severity(t, &d, kind);

    // When it happened, if the source says so; else when rollcall observed it.
    let occurred: Option<(&'static str, &str)> = match t {
        EventType::UserLogin => d
            .user
            .as_ref()
            .and_then(|u| u.last_login.as_deref())
            .map(|s| ("data.user.last_login", s)),
        EventType::UserLocked => d.locked_at.as_deref().map(|s| ("data.locked_at", s)),
        EventType::AuditAction => Some(("data.dttm", d.dttm.as_deref().ok_or(missing("dttm"))?)),
        EventType::AgentToolCalled => Some((
            "data.finished_at",
            d.finished_at.as_deref().ok_or(missing("finished_at"))?,
        )),
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
        start_time: None,
        end_time: None,
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
        EventType::AgentToolCalled => agent(&mut r, &d, service, &e.source)?,
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
pub(super) fn audit<'r>(
    r: &mut Record<'r>,
    d: &'r Data<'_>,
    service: &'static str,
    source: &'r str,
) -> Result<String, MappingError> {
    let action = required(d.action.as_deref(), EventType::AuditAction, "action")?;
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
    api_call(
        r,
        Actor::user(actor),
        action,
        (service, source),
        d.duration_ms,
    );
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
    Ok(message)
}

/// `data.<field>` of a `t` event, which its record needs.
fn required<'d>(
    value: Option<&'d str>,
    t: EventType,
    field: &'static str,
) -> Result<&'d str, MappingError> {
    value.ok_or(MappingError::Missing {
        event_type: t.as_str(),
        field,
    })
}

/// What every API Activity record has: who called, the operation on the source's service, no
/// client address (the log records none), and how long it took.
fn api_call<'r>(
    r: &mut Record<'r>,
    actor: Actor<'r>,
    operation: &'r str,
    (service, source): (&'static str, &'r str),
    duration: Option<i64>,
) {
    r.actor = Some(actor);
    r.api = Some(Api {
        operation,
        service: Service {
            name: service,
            uid: source,
        },
    });
    r.src_endpoint = Some(Endpoint {
        name: UNKNOWN_ENDPOINT,
    });
    r.duration = duration;
}

/// The API Activity attributes of an AI agent's MCP tool call; returns the record's `message`.
/// Only a read-only tool names its activity (one that may write may have written nothing), and
/// only `success: false` is a status: refused arguments log `true` (docs/superset.md S51).
pub(super) fn agent<'r>(
    r: &mut Record<'r>,
    d: &'r Data<'_>,
    service: &'static str,
    source: &'r str,
) -> Result<String, MappingError> {
    let tool = required(d.tool.as_deref(), EventType::AgentToolCalled, "tool")?;
    (r.activity_id, r.activity_name) = match d.can_write {
        Some(false) => (2, "Read"),
        _ => (99, tool),
    };
    let (status_id, status, detail) = match d.logged_success {
        Some(false) => (2, "Failure", "the tool answered an error"),
        Some(true) => (0, "Unknown", "the tool returned without an error object, as it also does when it refuses its arguments"),
        None => (0, "Unknown", "Superset logged no outcome"),
    };
    (r.status_id, r.status) = (Some(status_id), Some(status));
    r.status_detail = Some(detail.to_owned());
    let started = d.started_at.as_deref();
    r.start_time = started.map(|t| millis("data.started_at", t)).transpose()?;
    r.end_time = Some(r.time);
    let user = d.user.as_ref().and_then(user);
    let on_behalf = match user.as_ref().and_then(|u| u.name) {
        Some(name) => format!(" as {name}"),
        None => String::new(),
    };
    let actor = Actor {
        user,
        app_name: Some("MCP client"),
        app_uid: d.agent_id.as_deref(),
    };
    api_call(r, actor, tool, (service, source), d.duration_ms);
    Ok(format!(
        "an AI agent called MCP tool {tool} on {service}{on_behalf}"
    ))
}

/// The attributes every account event has (the user, the status, the actor, the service of an
/// authentication); returns the user's name for the record's `message`.
pub(super) fn account<'r>(
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
    r.actor = actor(t, now, d.before.as_ref()).map(Actor::user);
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
pub(super) fn user<'r>(a: &'r Account<'_>) -> Option<User<'r>> {
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
pub(super) fn actor<'r>(
    t: EventType,
    now: &Account<'_>,
    before: Option<&Account<'_>>,
) -> Option<User<'r>> {
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
