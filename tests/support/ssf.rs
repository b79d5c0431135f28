//! A strict SSF receiver, written from the specifications (SSF 1.0, RFC 8417, RFC 8935, RFC
//! 8936, RFC 9493; docs/ssf.md) and not from rollcall's code: it discovers a transmitter,
//! checks its metadata, fetches its JWKS, and takes SETs pushed to it (or polls for them),
//! refusing whatever a strict receiver refuses, with the SET error codes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

/// What the receiver knows of its transmitter and stream, to check SETs against.
#[derive(Clone)]
pub struct Trust {
    pub issuer: String,
    pub jwks: JwkSet,
    pub aud: String,
    pub events_delivered: Vec<String>,
}

/// One SET the receiver accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub jti: String,
    /// The compact JWS as it arrived.
    pub raw: String,
    pub claims: Value,
}

impl Accepted {
    /// The one event type of the SET.
    pub fn event_type(&self) -> &str {
        self.claims["events"]
            .as_object()
            .and_then(|e| e.keys().next())
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn event(&self) -> &Value {
        &self.claims["events"][self.event_type()]
    }
}

/// The transmitter's metadata, checked as SSF §7.2.4 says: fetched from the well-known URL of
/// `issuer`, whose `issuer` member must be identical.
pub async fn discover(issuer: &str) -> Value {
    let url = url::Url::parse(issuer).unwrap();
    let well_known = format!(
        "{}/.well-known/ssf-configuration{}",
        url.origin().ascii_serialization(),
        url.path().trim_end_matches('/')
    );
    let resp = reqwest::get(&well_known).await.unwrap();
    assert_eq!(resp.status(), 200, "{well_known}");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(
        doc["issuer"], issuer,
        "metadata issuer = the URL it was fetched for"
    );
    for required in ["issuer", "jwks_uri"] {
        assert!(doc[required].is_string(), "{required} in {doc}");
    }
    for (_, v) in doc.as_object().unwrap() {
        if let Some(a) = v.as_array() {
            assert!(!a.is_empty(), "empty arrays are left out: {doc}");
        }
    }
    doc
}

pub async fn jwks(metadata: &Value) -> JwkSet {
    reqwest::get(metadata["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Why a SET is refused: the SET error code and a description (RFC 8935 §2.3).
pub type Refusal = (&'static str, String);

const SUBJECT_MEMBERS: [(&str, &[&str]); 3] = [
    ("iss_sub", &["iss", "sub"]),
    ("email", &["email"]),
    ("opaque", &["id"]),
];

/// Check one SET as a strict receiver does (docs/ssf.md, Strict receivers).
pub fn check(trust: &Trust, raw: &str) -> Result<Value, Refusal> {
    let header = jsonwebtoken::decode_header(raw)
        .map_err(|e| ("invalid_request", format!("not a JWS: {e}")))?;
    if header.typ.as_deref() != Some("secevent+jwt") {
        return Err(("invalid_request", format!("typ {:?}", header.typ)));
    }
    if header.alg != Algorithm::RS256 {
        return Err(("invalid_key", format!("alg {:?}", header.alg)));
    }
    let kid = header.kid.ok_or(("invalid_key", "no kid".to_owned()))?;
    let jwk = trust
        .jwks
        .find(&kid)
        .ok_or(("invalid_key", format!("unknown kid {kid}")))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| ("invalid_key", e.to_string()))?;
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(raw, &key, &v)
        .map_err(|e| ("invalid_key", format!("signature: {e}")))?
        .claims;
    if claims["iss"] != trust.issuer.as_str() {
        return Err(("invalid_issuer", format!("iss {}", claims["iss"])));
    }
    if claims["aud"] != trust.aud.as_str() {
        return Err(("invalid_audience", format!("aud {}", claims["aud"])));
    }
    for forbidden in ["sub", "exp"] {
        if claims.get(forbidden).is_some() {
            return Err(("invalid_request", format!("{forbidden} in an SSF SET")));
        }
    }
    for required in ["jti", "iat", "txn"] {
        if claims.get(required).is_none() {
            return Err(("invalid_request", format!("no {required}")));
        }
    }
    let events = claims["events"]
        .as_object()
        .filter(|e| e.len() == 1)
        .ok_or(("invalid_request", "not exactly one event".to_owned()))?;
    let (event_type, _) = events.iter().next().unwrap();
    let verification = event_type.ends_with("/ssf/event-type/verification");
    if !verification && !trust.events_delivered.contains(event_type) {
        return Err((
            "invalid_request",
            format!("{event_type} not delivered on this stream"),
        ));
    }
    let sub_id = claims["sub_id"]
        .as_object()
        .ok_or(("invalid_request", "no sub_id".to_owned()))?;
    let format = sub_id["format"].as_str().unwrap_or_default();
    let (_, members) = SUBJECT_MEMBERS
        .iter()
        .find(|(f, _)| *f == format)
        .ok_or(("invalid_request", format!("subject format {format}")))?;
    if sub_id.len() != members.len() + 1
        || members.iter().any(|m| {
            sub_id
                .get(*m)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
    {
        return Err(("invalid_request", format!("sub_id members {sub_id:?}")));
    }
    if event_type.contains("/risc/") && claims.get("toe").is_none() {
        return Err(("invalid_request", "a RISC event without toe".to_owned()));
    }
    Ok(claims)
}

/// What the push endpoint answers next.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mood {
    /// Check and accept (202) or refuse (400) as the SET deserves.
    Strict,
    /// 503 to everything: the receiver is down.
    Down,
    /// 400 `invalid_audience` to everything, as if the stream's `aud` were wrong.
    Refuse,
}

#[derive(Default)]
struct Inbox {
    trust: Option<Trust>,
    authorization: Option<String>,
    mood: Option<Mood>,
    accepted: Vec<Accepted>,
    /// Every body that arrived, accepted or not.
    arrived: Vec<String>,
    refused: Vec<Refusal>,
}

/// An RFC 8935 push endpoint on a loopback port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inbox: Arc<Mutex<Inbox>>,
}

impl Receiver {
    pub async fn start(authorization: &str) -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox {
            authorization: Some(authorization.to_owned()),
            mood: Some(Mood::Strict),
            ..Inbox::default()
        }));
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, inbox }
    }

    pub fn trust(&self, trust: Trust) {
        self.inbox.lock().unwrap().trust = Some(trust);
    }

    pub fn mood(&self, mood: Mood) {
        self.inbox.lock().unwrap().mood = Some(mood);
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.inbox.lock().unwrap().accepted.clone()
    }

    pub fn arrived(&self) -> Vec<String> {
        self.inbox.lock().unwrap().arrived.clone()
    }

    pub fn refused(&self) -> Vec<Refusal> {
        self.inbox.lock().unwrap().refused.clone()
    }
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inbox = inbox.lock().unwrap();
    let raw = String::from_utf8_lossy(&body).into_owned();
    inbox.arrived.push(raw.clone());
    let refuse = |inbox: &mut Inbox, (err, description): Refusal| {
        inbox.refused.push((err, description.clone()));
        (
            StatusCode::BAD_REQUEST,
            [("content-language", "en")],
            axum::Json(json!({"err": err, "description": description})),
        )
            .into_response()
    };
    match inbox.mood.unwrap() {
        Mood::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mood::Refuse => return refuse(&mut inbox, ("invalid_audience", "not ours".into())),
        Mood::Strict => {}
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let accept = headers.get("accept").and_then(|v| v.to_str().ok());
    if content_type != Some("application/secevent+jwt") || accept != Some("application/json") {
        return refuse(
            &mut inbox,
            ("invalid_request", format!("{content_type:?} {accept:?}")),
        );
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != inbox.authorization.as_deref() {
        return refuse(
            &mut inbox,
            ("authentication_failed", "authorization".into()),
        );
    }
    let trust = inbox
        .trust
        .clone()
        .expect("the test told the receiver whom to trust");
    match check(&trust, &raw) {
        Err(r) => refuse(&mut inbox, r),
        Ok(claims) => {
            let jti = claims["jti"].as_str().unwrap().to_owned();
            // RFC 8935: a re-sent SET is answered as new; only a jti reused for other content
            // is refused (docs/ssf.md, A11).
            if let Some(seen) = inbox.accepted.iter().find(|a| a.jti == jti) {
                if seen.raw != raw {
                    return refuse(&mut inbox, ("invalid_request", format!("jti {jti} reused")));
                }
                return StatusCode::ACCEPTED.into_response();
            }
            inbox.accepted.push(Accepted { jti, raw, claims });
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// An RFC 8936 poll of `endpoint` with `request`; the SETs it returned, checked, by jti.
pub async fn poll(
    endpoint: &str,
    token: &str,
    trust: &Trust,
    request: Value,
) -> (BTreeMap<String, Result<Value, Refusal>>, bool) {
    let resp = reqwest::Client::new()
        .post(endpoint)
        .bearer_auth(token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let sets = body["sets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(jti, set)| {
            let checked = check(trust, set.as_str().unwrap());
            if let Ok(claims) = &checked {
                assert_eq!(claims["jti"], jti.as_str());
            }
            (jti.clone(), checked)
        })
        .collect();
    (sets, body["moreAvailable"].as_bool().unwrap_or(false))
}
