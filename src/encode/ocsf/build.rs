//! How a record is filled from the stored event: the header every record has (class,
//! activity and severity from `mapping`, times, `metadata`), then the attributes of the event's
//! type, one arm per type in [`record`]. Where the versions differ in how they carry the same
//! fact (a role, a group's member, the account after an update), the arm says so beside it.

use std::fmt;
use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::value::RawValue;

use super::datatypes::{is_email, millis};
use super::input::{Account, Data, Details, Fields, FullName, Uid};
use super::mapping::{api_activity, class_of, severity, Class};
use super::record::{
    Actor, AiAgent, Api, Application, Endpoint, HttpRequest, Metadata, Named, Product, Record,
    Resource, Service, TypeName, Unmapped, Url, User, UNKNOWN_ENDPOINT,
};
use super::{attest, MappingError, Version};
use crate::encode::Envelope;
use crate::event::EventType;
use crate::source::KindProduct;

/// The client application of an agent's tool call: the log says an MCP client called, not
/// which one.
const MCP_CLIENT: &str = "MCP client";

/// The OCSF profile of what an AI agent does (1.9.0).
const AI_OPERATION: &str = "ai_operation";

/// The record of one stored event of store `store`'s log in `version`, serialized.
pub(super) fn record<'r>(
    e: &'r Envelope<'_>,
    version: Version,
    store: &'r str,
) -> Result<Vec<u8>, MappingError> {
    let t = EventType::ALL
        .into_iter()
        .find(|t| t.from_source() && t.as_str() == e.event_type)
        .ok_or_else(|| MappingError::UnknownType(e.event_type.to_string()))?;
    let kind = KindProduct::of(&e.source)
        .ok_or_else(|| MappingError::UnknownSource(e.source.to_string()))?;
    let service = kind.product;
    let unparsable = |source| MappingError::Data {
        event_type: t.as_str().to_owned(),
        source,
    };
    // `data` goes into the record verbatim (`unmapped.data`), so it must be JSON: the reader of
    // the stored event does not check it (`Envelope::data`); this read checks all of it.
    let d: Data<'_> = serde_json::from_str(e.data).map_err(unparsable)?;
    let missing = |field| MappingError::Missing {
        event_type: t.as_str(),
        field,
    };
    let activity = class_of(t, version);
    let class = activity.class;
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
        activity_id: activity.id,
        activity_name: activity.name,
        type_uid: 0,
        type_name: TypeName(class.name(), activity.name),
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
            version: version.as_str(),
            uid: &e.id,
            product: Product {
                name: "rollcall",
                version: env!("CARGO_PKG_VERSION"),
            },
            profiles: Vec::new(),
            labels: e.replayed.then_some(["replayed"]),
            log_name: &e.source,
            log_provider: service,
            event_code: t.as_str(),
            sequence: e.offset,
            original_time,
            logged_time,
        },
        user: None,
        user_result: None,
        updated_user: None,
        actor: None,
        ai_agent: None,
        privileges: None,
        iam_roles: None,
        group: None,
        users: None,
        service: None,
        api: None,
        src_endpoint: None,
        http_request: None,
        resources: Vec::new(),
        unmapped: Unmapped {
            data: RawValue::NULL,
        },
        attestation_list: None,
    };

    r.message = match t {
        EventType::Checkpoint | EventType::SyncCompleted => {
            unreachable!("found only among the types sources emit")
        }
        EventType::AuditAction => audit(&mut r, version, &d, service, &e.source)?,
        EventType::AgentToolCalled => agent(&mut r, version, &d, service, &e.source)?,
        EventType::UserObserved
        | EventType::UserCreated
        | EventType::UserDeactivated
        | EventType::UserReactivated
        | EventType::UserDeleted
        | EventType::UserPasswordChanged
        | EventType::UserUnlocked
        | EventType::UserLogin => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
            let what = match t {
                EventType::UserObserved => "exists",
                EventType::UserCreated => "created",
                EventType::UserDeactivated => "deactivated",
                EventType::UserReactivated => "reactivated",
                EventType::UserDeleted => "deleted",
                EventType::UserPasswordChanged => "set their own password",
                EventType::UserUnlocked => "unlocked",
                // The arm's last type, `user.login`.
                _ => "logged in",
            };
            format!("{service} user {name} {what}")
        }
        EventType::UserUpdated => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
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
        EventType::UserLocked => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
            let failures = d.wrong_time.ok_or(missing("wrong_time"))?;
            let until = match (d.permanent, d.locked_until.as_deref()) {
                (Some(true), _) => "until an administrator resets the password".to_owned(),
                (_, Some(until)) => format!("until {until}"),
                _ => "for Kylin's lock duration".to_owned(),
            };
            let reason = format!("locked after {failures} failed logins, {until}");
            if version == Version::V1_9_0 {
                // 1.9.0's Lock carries its reason in `status_detail`.
                r.status_detail = Some(reason.clone());
            }
            format!("{service} user {name} {reason}")
        }
        EventType::UserRoleAdded | EventType::UserRoleRemoved => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
            let role = d.role.as_ref().ok_or(missing("role"))?;
            match version {
                // 3005 names the role as a privilege.
                Version::V1_8_0 => r.privileges = Some([&role.name]),
                // 3007 has the role itself, by name and id.
                Version::V1_9_0 => {
                    r.iam_roles = Some([Named {
                        name: &role.name,
                        uid: &role.id,
                    }])
                }
            }
            let verb = if t == EventType::UserRoleAdded {
                "granted to"
            } else {
                "revoked from"
            };
            format!("{service} role {} {verb} {name}", role.name)
        }
        EventType::UserGroupAdded | EventType::UserGroupRemoved => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
            let group = d.group.as_ref().ok_or(missing("group"))?;
            r.group = Some(Named {
                name: &group.name,
                uid: &group.id,
            });
            if version == Version::V1_9_0 {
                // 1.9.0 deprecates 3006's `user` for the array `users`.
                r.users = r.user.take().map(|user| [user]);
            }
            let verb = if t == EventType::UserGroupAdded {
                "added to"
            } else {
                "removed from"
            };
            format!("{service} user {name} {verb} group {}", group.name)
        }
        EventType::UserLoginFailed => {
            let name = account(&mut r, t, version, &d, service, &e.source)?;
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
    let unwritable = |source| MappingError::Data {
        event_type: t.as_str().to_owned(),
        source,
    };
    // The record holds `data` verbatim plus about a kilobyte of attributes: one allocation.
    let mut body = Vec::with_capacity(e.data.len() + 1024);
    // 1.8.0 has no profile for it; an event stored before the chain began has no link.
    let link = e.link().filter(|_| version == Version::V1_9_0);
    if link.is_some() {
        r.metadata.profiles.push(crate::chain::attested::PROFILE);
    }
    r.attestation_list = link.map(|link| [attest::attestation(&link, store)]);
    if r.attestation_list.is_none() {
        r.serialize(&mut serde_json::Serializer::with_formatter(
            &mut body,
            Verbatim(e.data),
        ))
        .map_err(unwritable)?;
    } else {
        // The fingerprint covers the whole record but itself: the record is written without
        // it, and hashed in RFC 8785 order as it is written. It is the attestation's last
        // attribute, and the attestation list the record's last, so the record with it is
        // that text with the fingerprint written in before its end (`}]}`): no second
        // serialization of the record.
        let fingerprint = attest::write_fingerprinted(&r, e.data, &mut body).map_err(unwritable)?;
        debug_assert!(
            body.ends_with(b"}]}"),
            "the attestation list ends the record"
        );
        body.truncate(body.len() - 3);
        body.extend_from_slice(b",\"fingerprint\":");
        serde_json::to_writer(&mut body, &fingerprint).map_err(unwritable)?;
        body.extend_from_slice(b"}]}");
    }
    Ok(body)
}

/// Writes as serde_json's compact form does, but for the record's one raw value, the
/// placeholder of `unmapped.data`, which it writes as the stored `data` verbatim.
struct Verbatim<'d>(&'d str);

impl Formatter for Verbatim<'_> {
    fn write_raw_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, _: &str) -> io::Result<()> {
        w.write_all(self.0.as_bytes())
    }
}

/// The API Activity attributes of an action-log row; returns the record's `message`.
pub(super) fn audit<'r>(
    r: &mut Record<'r>,
    version: Version,
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
        version,
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
/// client address (the log records none), and in 1.8.0 how long it took. 1.9.0 reserves
/// `duration` (and `start_time`, `end_time`) for records that aggregate several events, which
/// one call is not: there the time stays in `unmapped.data` only.
fn api_call<'r>(
    r: &mut Record<'r>,
    version: Version,
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
    r.duration = duration.filter(|_| version == Version::V1_8_0);
}

/// The API Activity attributes of an AI agent's MCP tool call; returns the record's `message`.
/// Only a read-only tool names its activity (one that may write may have written nothing), and
/// only `success: false` is a status: refused arguments log `true` (docs/superset.md S51).
///
/// 1.8.0 names the MCP client, and the agent's id, as the actor's application. 1.9.0 has the
/// `ai_operation` profile for this: the agent is `ai_agent`, apart from the actor, and only
/// when it gave an id (OCSF needs a name or an id, and the log has no name); the actor is the
/// user the service acted as, beside the client application. No `delegation`: its `uid` is
/// an authority's id for the grant, issued by a gateway, and Superset logs none.
pub(super) fn agent<'r>(
    r: &mut Record<'r>,
    version: Version,
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
    let user = d.user.as_ref().and_then(user);
    let on_behalf = match user.as_ref().and_then(|u| u.name) {
        Some(name) => format!(" as {name}"),
        None => String::new(),
    };
    let actor = match version {
        Version::V1_8_0 => {
            let started = d.started_at.as_deref();
            r.start_time = started.map(|t| millis("data.started_at", t)).transpose()?;
            r.end_time = Some(r.time);
            Actor {
                user,
                app_name: Some(MCP_CLIENT),
                app_uid: d.agent_id.as_deref(),
                application: None,
            }
        }
        Version::V1_9_0 => {
            r.metadata.profiles.push(AI_OPERATION);
            r.ai_agent = d.agent_id.as_deref().map(|uid| AiAgent { uid });
            Actor {
                user,
                app_name: None,
                app_uid: None,
                application: Some(Application { name: MCP_CLIENT }),
            }
        }
    };
    api_call(r, version, actor, tool, (service, source), d.duration_ms);
    Ok(format!(
        "an AI agent called MCP tool {tool} on {service}{on_behalf}"
    ))
}

/// The attributes every account event has (the user, the status, the actor, the service of an
/// authentication); returns the user's name for the record's `message`.
pub(super) fn account<'r>(
    r: &mut Record<'r>,
    t: EventType,
    version: Version,
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
        // OCSF: `user` is the account as it was; as the change left it is 3001's `user_result`
        // in 1.8.0, and 3007's `updated_user` in 1.9.0, which deprecates `user_result`.
        let before = d.before.as_ref().ok_or(missing("before"))?;
        r.user = Some(user(before).ok_or(missing("before.username"))?);
        match version {
            Version::V1_8_0 => r.user_result = Some(target),
            Version::V1_9_0 => r.updated_user = Some(target),
        }
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
