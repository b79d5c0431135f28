//! The OCSF record of one stored event: the attributes it can have, in the order they are
//! written (how each is filled is `build`'s). Every attribute here is defined by the version a
//! record declares, or by a profile it lists in `metadata.profiles`; one that only one version
//! has stays empty in the other. Nothing OCSF does not define: the rest stays in
//! `unmapped.data`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use super::attest::Attestation;
use super::input::{FullName, MemberId, Uid};

#[derive(Serialize)]
pub(super) struct Record<'r> {
    pub(super) class_uid: u32,
    pub(super) class_name: &'static str,
    pub(super) category_uid: u32,
    pub(super) category_name: &'static str,
    pub(super) activity_id: u8,
    pub(super) activity_name: &'r str,
    pub(super) type_uid: u32,
    pub(super) type_name: TypeName<'r>,
    pub(super) severity_id: u8,
    pub(super) severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<String>,
    pub(super) time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_time: Option<i64>,
    /// Every time rollcall sends is UTC.
    pub(super) timezone_offset: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration: Option<i64>,
    pub(super) message: String,
    pub(super) metadata: Metadata<'r>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<User<'r>>,
    /// 3001 (1.8.0): the account as a change left it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user_result: Option<User<'r>>,
    /// 3007 (1.9.0): the account as a change left it, in place of 3001's `user_result`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) updated_user: Option<User<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<Actor<'r>>,
    /// 1.9.0, `ai_operation` profile: the AI agent that made a tool call, when it said who it
    /// is; OCSF keeps it out of `actor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ai_agent: Option<AiAgent<'r>>,
    /// 3005 (1.8.0): the role granted or revoked, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) privileges: Option<[&'r str; 1]>,
    /// 3007 (1.9.0): the role assigned or removed, as a role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) iam_roles: Option<[Named<'r>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<Named<'r>>,
    /// 3006 (1.9.0): the users added or removed, in place of `user`, which 1.9.0 deprecates
    /// there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) users: Option<[User<'r>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service: Option<Service<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) api: Option<Api<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) http_request: Option<HttpRequest<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) resources: Vec<Resource>,
    pub(super) unmapped: Unmapped,
    /// 1.9.0, `record_integrity` profile: the event's place in the store's chain, and the
    /// record's fingerprint; last, as the fingerprint covers all before it and is written in
    /// at the record's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) attestation_list: Option<[Attestation<'r>; 1]>,
}

/// `type_name`, "<class>: <activity>", written straight into the body: no string per record.
pub(super) struct TypeName<'r>(pub(super) &'static str, pub(super) &'r str);

impl Serialize for TypeName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}: {}", self.0, self.1))
    }
}

#[derive(Serialize)]
pub(super) struct Metadata<'r> {
    pub(super) version: &'static str,
    pub(super) uid: &'r str,
    pub(super) product: Product,
    /// The profiles whose attributes the record uses, in 1.9.0: `ai_operation` for an agent's
    /// tool call, `record_integrity` for a chained event; none otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) profiles: Vec<&'static str>,
    /// `["replayed"]` on a record `rollcall replay` re-sent; none otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) labels: Option<[&'static str; 1]>,
    /// The rollcall source (`superset://prod`): which instance the event is about.
    pub(super) log_name: &'r str,
    pub(super) log_provider: &'static str,
    /// The CloudEvents `type`, for rules written against rollcall's own names.
    pub(super) event_code: &'r str,
    /// The log offset: the order rollcall stored events in.
    pub(super) sequence: u64,
    pub(super) original_time: &'r str,
    pub(super) logged_time: i64,
}

#[derive(Serialize)]
pub(super) struct Product {
    pub(super) name: &'static str,
    pub(super) version: &'static str,
}

#[derive(Serialize)]
pub(super) struct User<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) uid: Option<Uid<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) full_name: Option<FullName<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) email_addr: Option<&'r str>,
}

#[derive(Serialize)]
pub(super) struct Actor<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<User<'r>>,
    /// 1.8.0: the client application: for an agent's tool call, the MCP client, with the
    /// agent's id. 1.9.0 deprecates both for `application`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) app_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) app_uid: Option<&'r str>,
    /// 1.9.0: the client application, by name (the agent's id is the record's `ai_agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) application: Option<Application>,
}

impl<'r> Actor<'r> {
    pub(super) fn user(user: User<'r>) -> Actor<'r> {
        Actor {
            user: Some(user),
            app_name: None,
            app_uid: None,
            application: None,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Application {
    pub(super) name: &'static str,
}

/// OCSF needs its `name` or its `uid`; rollcall has only the id the agent gave.
#[derive(Serialize)]
pub(super) struct AiAgent<'r> {
    pub(super) uid: &'r str,
}

/// A group, or (1.9.0) a role: both are named, and numbered by Superset.
#[derive(Serialize)]
pub(super) struct Named<'r> {
    pub(super) name: &'r str,
    pub(super) uid: &'r MemberId,
}

#[derive(Serialize)]
pub(super) struct Service<'r> {
    pub(super) name: &'static str,
    pub(super) uid: &'r str,
}

#[derive(Serialize)]
pub(super) struct Api<'r> {
    pub(super) operation: &'r str,
    pub(super) service: Service<'r>,
}

/// The action log records no client address; see [`UNKNOWN_ENDPOINT`].
#[derive(Serialize)]
pub(super) struct Endpoint {
    pub(super) name: &'static str,
}

/// API Activity requires a `src_endpoint`, and Superset's action log never records where a
/// request came from. Rather than an invented address (or the Superset host, which is the
/// destination), the endpoint is named `unknown`: the value Splunk's CIM and most OCSF mappers
/// use for "the source did not say", which no IP or hostname rule can match.
pub(super) const UNKNOWN_ENDPOINT: &str = "unknown";

#[derive(Serialize)]
pub(super) struct HttpRequest<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) referrer: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) url: Option<Url<'r>>,
}

#[derive(Serialize)]
pub(super) struct Url<'r> {
    pub(super) path: Cow<'r, str>,
}

#[derive(Serialize)]
pub(super) struct Resource {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) uid: Uid<'static>,
}

#[derive(Serialize)]
pub(super) struct Unmapped {
    /// The CloudEvents `data`, verbatim: every value OCSF has no attribute for (roles, counters,
    /// Kylin's lock fields, the log row's `json`) is here, and nothing is lost. Held here as a
    /// raw `null` that the record's writer replaces with the stored text (`build::Verbatim`):
    /// the typed read of `data` has checked that text already, and serde_json keeps a text
    /// verbatim only as a raw value it would check again.
    pub(super) data: &'static RawValue,
}
