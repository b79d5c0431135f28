//! One stream: what is kept of it, what a receiver may ask of it, and how it looks on the wire.
//!
//! Owns the stream record (kept in the store as JSON), the checks of every management request
//! body (SSF 1.0 §8: what is receiver-supplied, the delivery methods, the subject formats of
//! RFC 9493), `events_delivered`, which subjects a stream carries, and the configuration a
//! receiver reads back. Requests are plain JSON values checked member by member, so a bad one
//! gets an error saying which member is wrong, never a panic. No I/O but [`stored`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::config::{endpoint_problem, DefaultSubjects};
use super::set::{SubjectFormat, SUPPORTED};
use crate::store::{Store, StoreError};

pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";

/// Strings a receiver sends are capped: a stream record must stay small.
const MAX_TEXT: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_EVENTS_REQUESTED: usize = 64;
/// Subjects one stream keeps added or removed, at most.
pub const MAX_SUBJECTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Enabled,
    Paused,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub method: String,
    pub endpoint_url: Option<String>,
    /// Sent with every push; a secret of the receiver's, never shown back.
    pub authorization_header: Option<String>,
}

/// A stream as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub stream_id: String,
    pub aud: String,
    pub delivery: Delivery,
    /// `None`: the receiver asked for nothing in particular, so it gets every supported type.
    pub events_requested: Option<Vec<String>>,
    pub description: Option<String>,
    #[serde(default)]
    pub format: SubjectFormat,
    pub status: Status,
    pub reason: Option<String>,
    /// Subjects a receiver added (kept whatever the default) and removed.
    #[serde(default)]
    pub added: Vec<Value>,
    #[serde(default)]
    pub removed: Vec<Value>,
}

/// A request the transmitter refuses, with the SET error code and words for the receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid(pub String);

type Checked<T> = Result<T, Invalid>;

fn invalid<T>(message: impl Into<String>) -> Checked<T> {
    Err(Invalid(message.into()))
}

/// What the transmitter sets, which a receiver may only repeat.
const TRANSMITTER_MEMBERS: [&str; 7] = [
    "iss",
    "aud",
    "events_supported",
    "events_delivered",
    "min_verification_interval",
    "inactivity_timeout",
    "stream_id",
];

pub fn is_poll(delivery: &Delivery) -> bool {
    delivery.method == POLL
}

impl Stream {
    /// What the stream sends: supported ∩ requested, in the supported order.
    pub fn events_delivered(&self) -> Vec<&'static str> {
        SUPPORTED
            .into_iter()
            .filter(|t| {
                self.events_requested
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|x| x == t))
            })
            .collect()
    }

    /// Its events are kept for it (enabled or paused), so it holds retention back.
    pub fn holds_events(&self) -> bool {
        self.status != Status::Disabled
    }

    /// Whether a user with these identifiers is in the stream.
    pub fn carries(&self, identifiers: &[Value], default: DefaultSubjects) -> bool {
        let any = |list: &[Value]| list.iter().any(|s| matches_user(s, identifiers));
        if any(&self.added) {
            return true;
        }
        default == DefaultSubjects::All && !any(&self.removed)
    }

    /// The configuration as a receiver reads it (SSF §8.1.1).
    pub fn render(&self, issuer: &str, min_verification_interval: u64) -> Value {
        let mut delivery = Map::new();
        delivery.insert("method".into(), json!(self.delivery.method));
        if let Some(url) = &self.delivery.endpoint_url {
            delivery.insert("endpoint_url".into(), json!(url));
        }
        let mut out = json!({
            "stream_id": self.stream_id,
            "iss": issuer,
            "aud": self.aud,
            "delivery": delivery,
            "events_supported": SUPPORTED,
            "events_delivered": self.events_delivered(),
            "min_verification_interval": min_verification_interval,
            "format": self.format,
        });
        if let Some(requested) = &self.events_requested {
            out["events_requested"] = json!(requested);
        }
        if let Some(d) = &self.description {
            out["description"] = json!(d);
        }
        out
    }
}

/// The configuration of a new stream, from a create request (SSF §8.1.1.1). `endpoint` checks
/// a push endpoint against the config (`allowed_push_endpoints`).
pub fn create(
    body: &Value,
    stream_id: String,
    aud: &str,
    endpoint: &dyn Fn(&url::Url) -> Option<String>,
) -> Checked<Stream> {
    let body = object(body)?;
    for key in body.keys() {
        if TRANSMITTER_MEMBERS.contains(&key.as_str()) {
            return invalid(format!(
                "`{key}` is set by the transmitter, not in a request"
            ));
        }
    }
    let mut stream = Stream {
        stream_id,
        aud: aud.to_owned(),
        delivery: Delivery {
            method: POLL.into(),
            endpoint_url: None,
            authorization_header: None,
        },
        events_requested: None,
        description: None,
        format: SubjectFormat::default(),
        status: Status::Enabled,
        reason: None,
        added: Vec::new(),
        removed: Vec::new(),
    };
    apply(&mut stream, body, true, endpoint)?;
    Ok(stream)
}

/// A stream after an update (`PATCH`: members not given stay) or a replacement (`PUT`: members
/// not given are dropped), SSF §8.1.1.3–4. Transmitter-supplied members may be repeated, but
/// must match.
pub fn update(
    stream: &Stream,
    body: &Value,
    replace: bool,
    issuer: &str,
    endpoint: &dyn Fn(&url::Url) -> Option<String>,
) -> Checked<Stream> {
    let body = object(body)?;
    let shown = stream.render(issuer, 0);
    for key in TRANSMITTER_MEMBERS {
        match (key, body.get(key)) {
            (_, None) | ("min_verification_interval", _) | ("inactivity_timeout", _) => {}
            (_, Some(v)) if *v == shown[key] => {}
            (_, Some(_)) => {
                return invalid(format!(
                    "`{key}` is set by the transmitter and cannot change"
                ))
            }
        }
    }
    if body
        .get("delivery")
        .and_then(|d| d.get("method"))
        .is_some_and(|m| *m != json!(stream.delivery.method))
    {
        return invalid("the delivery method of a stream cannot change: create a new stream");
    }
    let mut next = stream.clone();
    if replace {
        next.events_requested = None;
        next.description = None;
        next.format = SubjectFormat::default();
    }
    apply(&mut next, body, replace, endpoint)?;
    Ok(next)
}

/// Apply the receiver-supplied members of `body` to `stream`; `whole`: `delivery` is taken as
/// given (create, replace), otherwise its members not given stay.
fn apply(
    stream: &mut Stream,
    body: &Map<String, Value>,
    whole: bool,
    endpoint: &dyn Fn(&url::Url) -> Option<String>,
) -> Checked<()> {
    for (key, value) in body {
        match key.as_str() {
            "events_requested" => {
                let list = strings(value, "events_requested", MAX_EVENTS_REQUESTED)?;
                stream.events_requested = Some(list);
            }
            "description" => stream.description = Some(text(value, "description", MAX_TEXT)?),
            "format" => {
                stream.format = serde_json::from_value(value.clone())
                    .or_else(|_| invalid("`format` must be `iss_sub`, `email` or `opaque`"))?
            }
            "delivery" => {
                let d =
                    object(value).map_err(|_| Invalid("`delivery` must be an object".into()))?;
                if whole {
                    stream.delivery.endpoint_url = None;
                    stream.delivery.authorization_header = None;
                }
                delivery(&mut stream.delivery, d, endpoint)?;
            }
            k if TRANSMITTER_MEMBERS.contains(&k) => {}
            other => return invalid(format!("unknown stream member `{other}`")),
        }
    }
    if stream.delivery.method == PUSH && stream.delivery.endpoint_url.is_none() {
        return invalid("a push stream needs `delivery.endpoint_url`");
    }
    Ok(())
}

fn delivery(
    out: &mut Delivery,
    d: &Map<String, Value>,
    endpoint: &dyn Fn(&url::Url) -> Option<String>,
) -> Checked<()> {
    for (key, value) in d {
        match key.as_str() {
            "method" => out.method = text(value, "delivery.method", MAX_URL)?,
            "endpoint_url" => {
                out.endpoint_url = Some(text(value, "delivery.endpoint_url", MAX_URL)?)
            }
            "authorization_header" => {
                out.authorization_header =
                    Some(text(value, "delivery.authorization_header", 4 * MAX_TEXT)?)
            }
            other => return invalid(format!("unknown delivery member `{other}`")),
        }
    }
    match out.method.as_str() {
        PUSH => {
            let raw = out.endpoint_url.as_deref().unwrap_or_default();
            let url = url::Url::parse(raw)
                .or_else(|e| invalid(format!("`delivery.endpoint_url` is not a URL: {e}")))?;
            if let Some(why) =
                endpoint_problem("`delivery.endpoint_url`", &url).or_else(|| endpoint(&url))
            {
                return invalid(why);
            }
            if out
                .authorization_header
                .as_deref()
                .is_some_and(|h| h.chars().any(|c| c.is_control()))
            {
                return invalid("`delivery.authorization_header` must be one line");
            }
        }
        // The transmitter chooses a poll stream's endpoint.
        POLL => {
            if out.endpoint_url.is_some() || out.authorization_header.is_some() {
                return invalid(
                    "a poll stream's `endpoint_url` is the transmitter's: leave it out",
                );
            }
        }
        other => {
            return invalid(format!(
            "unsupported delivery method `{other}`; this transmitter supports {PUSH} and {POLL}"
        ))
        }
    }
    Ok(())
}

fn object(v: &Value) -> Checked<&Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Invalid("the request body must be a JSON object".into()))
}

fn text(v: &Value, what: &str, max: usize) -> Checked<String> {
    match v.as_str() {
        Some(s) if s.len() <= max => Ok(s.to_owned()),
        Some(_) => invalid(format!("`{what}` is longer than {max} bytes")),
        None => invalid(format!("`{what}` must be a string")),
    }
}

fn strings(v: &Value, what: &str, max: usize) -> Checked<Vec<String>> {
    let list = v
        .as_array()
        .ok_or_else(|| Invalid(format!("`{what}` must be an array of strings")))?;
    if list.len() > max {
        return invalid(format!("`{what}` has more than {max} entries"));
    }
    list.iter().map(|s| text(s, what, MAX_URL)).collect()
}

/// A member of the request named `what`, as a string.
pub fn member(body: &Value, what: &str) -> Checked<String> {
    match body.get(what) {
        Some(v) => text(v, what, MAX_TEXT),
        None => invalid(format!("`{what}` is required")),
    }
}

/// An optional string member of the request.
pub fn optional(body: &Value, what: &str) -> Checked<Option<String>> {
    match body.get(what) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text(v, what, MAX_TEXT).map(Some),
    }
}

/// A status from a status update request.
pub fn status(body: &Value) -> Checked<Status> {
    serde_json::from_value(body.get("status").cloned().unwrap_or(Value::Null))
        .or_else(|_| invalid("`status` must be `enabled`, `paused` or `disabled`"))
}

/// The members each simple subject format requires (RFC 9493 §3.2, SSF §3.5).
fn format_members(format: &str) -> Option<&'static [&'static str]> {
    Some(match format {
        "account" => &["uri"],
        "email" => &["email"],
        "iss_sub" => &["iss", "sub"],
        "opaque" => &["id"],
        "phone_number" => &["phone_number"],
        "did" => &["url"],
        "uri" => &["uri"],
        "jwt_id" => &["iss", "jti"],
        "saml_assertion_id" => &["issuer", "assertion_id"],
        _ => return None,
    })
}

/// A subject of an add or remove request, checked: a known format with exactly its members,
/// each a non-empty string (RFC 9493 §3), or a complex subject of such (SSF §3.3).
pub fn subject(v: &Value) -> Checked<Value> {
    let o = v
        .as_object()
        .ok_or_else(|| Invalid("`subject` must be an object".into()))?;
    match o.get("format").and_then(Value::as_str) {
        Some("complex") => {
            if o.len() < 2 {
                return invalid("a complex subject needs at least one member");
            }
            for (name, member) in o.iter().filter(|(k, _)| *k != "format") {
                simple(member)
                    .map_err(|Invalid(why)| Invalid(format!("`subject.{name}`: {why}")))?;
            }
            Ok(v.clone())
        }
        _ => simple(v).map(|()| v.clone()),
    }
}

fn simple(v: &Value) -> Checked<()> {
    let o = v
        .as_object()
        .ok_or_else(|| Invalid("a subject identifier must be an object".into()))?;
    let Some(format) = o.get("format").and_then(Value::as_str) else {
        return invalid("a subject identifier needs a `format`");
    };
    if format == "aliases" {
        let ids = o.get("identifiers").and_then(Value::as_array);
        return match ids {
            Some(ids) if !ids.is_empty() && o.len() == 2 => ids.iter().try_for_each(|id| {
                if id["format"] == "aliases" {
                    return invalid("`aliases` may not hold `aliases`");
                }
                simple(id)
            }),
            _ => invalid(
                "an `aliases` identifier needs a non-empty `identifiers` array, and nothing else",
            ),
        };
    }
    let Some(required) = format_members(format) else {
        return invalid(format!("unknown subject format `{format}`"));
    };
    for name in required {
        match o.get(*name).and_then(Value::as_str) {
            Some(s) if !s.is_empty() && s.len() <= MAX_TEXT => {}
            _ => {
                return invalid(format!(
                    "format `{format}` needs `{name}`, a non-empty string"
                ))
            }
        }
    }
    if let Some(extra) = o
        .keys()
        .find(|k| *k != "format" && !required.contains(&k.as_str()))
    {
        return invalid(format!("format `{format}` has no member `{extra}`"));
    }
    Ok(())
}

/// Whether a stored subject names the user with these identifiers: a simple subject when it
/// is one of them (an email address in any case), a complex one when its `user` member does
/// or it has none (SSF §8.1.3.1: a member absent on one side matches).
fn matches_user(subject: &Value, identifiers: &[Value]) -> bool {
    let same = |a: &Value, b: &Value| match (a["format"].as_str(), b["format"].as_str()) {
        (Some("email"), Some("email")) => a["email"]
            .as_str()
            .zip(b["email"].as_str())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y)),
        _ => a == b,
    };
    let one = |s: &Value| match s["format"].as_str() {
        Some("aliases") => s["identifiers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| identifiers.iter().any(|i| same(a, i))),
        _ => identifiers.iter().any(|i| same(s, i)),
    };
    match subject["format"].as_str() {
        Some("complex") => subject.get("user").is_none_or(one),
        _ => one(subject),
    }
}

/// The streams of sink `sink` kept in the store.
pub fn stored(store: &Store, sink: &str) -> Result<Vec<Stream>, StoreError> {
    store
        .streams(sink)?
        .into_iter()
        .map(|(id, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("stream {id} of sink {sink}"),
                detail: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_endpoint(_: &url::Url) -> Option<String> {
        None
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/ssf/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The example exchange named `what` (tests/fixtures/ssf/stream-management.json).
    fn exchange(what: &str) -> Value {
        fixture("stream-management.json")["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["what"].as_str().unwrap().starts_with(what))
            .unwrap()
            .clone()
    }

    #[test]
    fn the_example_push_stream_is_created_as_the_spec_example_shows_but_without_its_secret() {
        let x = exchange("create a push stream");
        let s = create(
            &x["request"]["body"],
            "5f1c1f3e6b0a4d7e9c2b8a7d6e5f4a3b".into(),
            "https://receiver.example.net/ssf",
            &any_endpoint,
        )
        .unwrap();
        let shown = s.render("https://rollcall.example.com", 30);
        let mut expected = x["response"]["body"].clone();
        expected["delivery"]
            .as_object_mut()
            .unwrap()
            .remove("authorization_header");
        expected["format"] = json!("iss_sub");
        assert_eq!(shown, expected);
        assert_eq!(
            s.delivery.authorization_header.as_deref(),
            Some("Bearer 7pQm2vX9-receiver-chosen-secret")
        );
    }

    #[test]
    fn a_poll_stream_by_default_and_events_delivered_is_supported_and_requested() {
        let s = create(&json!({}), "a".into(), "aud", &any_endpoint).unwrap();
        assert!(is_poll(&s.delivery));
        assert_eq!(s.events_delivered(), SUPPORTED);
        let x = exchange("create a poll stream");
        let s = create(&x["request"]["body"], "b".into(), "aud", &any_endpoint).unwrap();
        assert_eq!(
            json!(s.events_delivered()),
            x["response"]["body"]["events_delivered"]
        );
    }

    #[test]
    fn malformed_create_and_update_requests_say_which_member_is_wrong() {
        let bad = |body: Value| {
            create(&body, "a".into(), "aud", &any_endpoint)
                .unwrap_err()
                .0
        };
        assert!(bad(json!([])).contains("JSON object"));
        assert!(bad(json!({"events_requested": "x"})).contains("array of strings"));
        assert!(bad(json!({"aud": "x"})).contains("set by the transmitter"));
        assert!(bad(json!({"colour": 1})).contains("unknown stream member `colour`"));
        assert!(
            bad(json!({"delivery": {"method": "urn:x"}})).contains("unsupported delivery method")
        );
        assert!(bad(json!({"delivery": {"method": PUSH}})).contains("not a URL"));
        let plain = json!({"delivery": {"method": PUSH, "endpoint_url": "http://r.example/x"}});
        assert!(bad(plain).contains("must be https"));
        let local = json!({"delivery": {"method": PUSH, "endpoint_url": "http://127.0.0.1:9/x"}});
        assert!(create(&local, "a".into(), "aud", &any_endpoint).is_ok());
        let only = |u: &url::Url| {
            (!u.as_str().starts_with("https://ok.example/")).then(|| "not allowed".to_owned())
        };
        let other = json!({"delivery": {"method": PUSH, "endpoint_url": "https://evil.example/"}});
        assert_eq!(
            create(&other, "a".into(), "aud", &only).unwrap_err().0,
            "not allowed"
        );

        let s = create(&local, "a".into(), "aud", &any_endpoint).unwrap();
        let up = |body: Value| update(&s, &body, false, "https://i", &any_endpoint);
        assert!(up(json!({"aud": "other"}))
            .unwrap_err()
            .0
            .contains("cannot change"));
        assert!(up(json!({"aud": "aud", "description": "d"})).is_ok());
        let switched = up(json!({"delivery": {"method": POLL}}));
        assert!(switched.unwrap_err().0.contains("cannot change"));
        let patched = up(json!({"description": "d"})).unwrap();
        assert_eq!(
            patched.delivery, s.delivery,
            "PATCH keeps what it does not name"
        );
        let replaced = update(
            &patched,
            &json!({"delivery": {"method": PUSH, "endpoint_url": "http://127.0.0.1:9/y"}}),
            true,
            "https://i",
            &any_endpoint,
        )
        .unwrap();
        assert_eq!(
            replaced.description, None,
            "PUT drops what it does not name"
        );
    }

    #[test]
    fn subjects_are_checked_against_their_format_and_matched_as_ssf_says() {
        assert!(subject(&json!({"format": "email", "email": "a@b"})).is_ok());
        for bad in [
            json!({"format": "email"}),
            json!({"format": "email", "email": ""}),
            json!({"format": "email", "email": "a@b", "iss": "x"}),
            json!({"format": "phone", "phone_number": "+1"}),
            json!({"format": "complex"}),
            json!({"format": "complex", "user": {"format": "opaque"}}),
            json!("a@b"),
        ] {
            assert!(subject(&bad).is_err(), "{bad}");
        }
        let user = [
            json!({"format": "iss_sub", "iss": "https://s/", "sub": "3"}),
            json!({"format": "email", "email": "alice@example.org"}),
        ];
        let mut s = create(&json!({}), "a".into(), "aud", &any_endpoint).unwrap();
        assert!(s.carries(&user, DefaultSubjects::All));
        assert!(!s.carries(&user, DefaultSubjects::None));
        s.removed
            .push(json!({"format": "email", "email": "Alice@Example.org"}));
        assert!(!s.carries(&user, DefaultSubjects::All));
        s.added.push(json!({"format": "complex", "user": user[0], "tenant": {"format": "opaque", "id": "t"}}));
        assert!(s.carries(&user, DefaultSubjects::All), "added again");
    }
}
