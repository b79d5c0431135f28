//! The transmitter's listener: the metadata (`/.well-known/ssf-configuration`), the JWKS, the
//! stream management API and the poll endpoint, under the issuer's path.
//!
//! Owns the routes, the bearer token check (constant time, on a digest so that not even the
//! token's length shows; the token is never logged), the request size cap, and the shape of
//! every answer: JSON with `Cache-Control: no-store`, errors as `{"err", "description"}` with
//! the SET error codes (RFC 8935 §2.4), 401 with `WWW-Authenticate: Bearer` (RFC 6750). A
//! malformed request is answered, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::live::{Live, Refused};
use super::poll::Reported;
use super::set::SUPPORTED;
use super::stream::{is_poll, POLL, PUSH};

type App = State<Arc<Live>>;

/// Serve the listener until `shutdown` turns true. Without it, push streams go on, but
/// receivers cannot reach the transmitter: that is said loudly.
pub async fn serve(live: Arc<Live>, mut shutdown: watch::Receiver<bool>) {
    let t = live.t.clone();
    let sink = t.name();
    let until = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    match tokio::net::TcpListener::bind(t.config.listen).await {
        Ok(listener) => {
            let address = listener
                .local_addr()
                .map_or_else(|_| t.config.listen.to_string(), |a| a.to_string());
            tracing::info!(sink = %sink, ssf_address = %address, issuer = %t.issuer, "serving the SSF transmitter");
            if let Err(e) = axum::serve(listener, router(live))
                .with_graceful_shutdown(until)
                .await
            {
                tracing::error!(sink = %sink, error = %e, "the SSF listener stopped");
            }
        }
        Err(e) => {
            tracing::error!(sink = %sink, address = %t.config.listen, error = %e, "cannot serve the SSF transmitter; set the sink's `listen` to a free address");
            until.await;
        }
    }
}

/// Every route, under the issuer's path.
fn router(live: Arc<Live>) -> Router {
    let base = live.t.config.issuer.path().trim_end_matches('/').to_owned();
    let limit = live.t.config.max_request_bytes;
    Router::new()
        .route(
            &format!("/.well-known/ssf-configuration{base}"),
            get(metadata),
        )
        .route(&format!("{base}/ssf/jwks.json"), get(jwks))
        .route(
            &format!("{base}/ssf/stream"),
            get(stream_endpoint)
                .post(stream_endpoint)
                .patch(stream_endpoint)
                .put(stream_endpoint)
                .delete(stream_endpoint),
        )
        .route(
            &format!("{base}/ssf/status"),
            get(status_endpoint).post(status_endpoint),
        )
        .route(
            &format!("{base}/ssf/subjects:add"),
            post(|State(live): App, h: HeaderMap, b: Bytes| subject(live, h, b, true)),
        )
        .route(
            &format!("{base}/ssf/subjects:remove"),
            post(|State(live): App, h: HeaderMap, b: Bytes| subject(live, h, b, false)),
        )
        .route(&format!("{base}/ssf/verify"), post(verify))
        .route(&format!("{base}/ssf/poll/{{stream_id}}"), post(poll))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(live)
}

/// An answer the management API and the poll endpoint give: never cached.
fn answer(status: StatusCode, body: Option<Value>) -> Response {
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    match body {
        Some(body) => (status, no_store, axum::Json(body)).into_response(),
        None => (status, no_store).into_response(),
    }
}

fn error(status: StatusCode, err: &str, description: impl Into<String>) -> Response {
    let body = json!({"err": err, "description": description.into()});
    let mut response = answer(status, Some(body));
    response.headers_mut().insert(
        header::CONTENT_LANGUAGE,
        header::HeaderValue::from_static("en"),
    );
    response
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::Invalid(why) => error(StatusCode::BAD_REQUEST, "invalid_request", why),
        Refused::NotFound => error(StatusCode::NOT_FOUND, "invalid_request", "no such stream"),
        Refused::Full(max) => error(
            StatusCode::CONFLICT,
            "invalid_request",
            format!("this transmitter keeps at most {max} streams: delete one first"),
        ),
        Refused::TooSoon(wait) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                "verification requested sooner than min_verification_interval allows",
            );
            let after = wait.as_secs().max(1).to_string();
            if let Ok(v) = header::HeaderValue::from_str(&after) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Refused::Store(e) => {
            tracing::error!(error = %crate::text::error_chain(&e), "the SSF transmitter cannot write the store");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the transmitter cannot store the change now; try again later",
            )
        }
    }
}

/// Why the request may not use the management API or the poll endpoint; `None` if it may.
fn unauthorised(live: &Live, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &live.t.token else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "the stream management API of this transmitter is off",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    use sha2::Digest;
    let fine = given.is_some_and(|token| {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        bool::from(digest.ct_eq(expected))
    });
    if fine {
        return None;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "authentication_failed",
        "a valid bearer token is required",
    );
    let challenge = if given.is_some() {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    Some(r)
}

/// What a management or poll request comes to: a status and a body, or why it is refused.
type Outcome = Result<(StatusCode, Option<Value>), Refused>;

/// The answer to an authorised request: `outcome` runs only once the token is checked.
async fn guarded(
    live: &Live,
    headers: &HeaderMap,
    outcome: impl std::future::Future<Output = Outcome>,
) -> Response {
    if let Some(r) = unauthorised(live, headers) {
        return r;
    }
    match outcome.await {
        Ok((status, body)) => answer(status, body),
        Err(r) => refused(r),
    }
}

/// The request body as JSON.
fn json_body(body: &Bytes) -> Result<Value, Refused> {
    serde_json::from_slice(body).map_err(|e| Refused::Invalid(format!("the body is not JSON: {e}")))
}

/// The `stream_id` query parameter, which these requests require.
fn stream_id(query: &HashMap<String, String>) -> Result<&str, Refused> {
    query
        .get("stream_id")
        .map(String::as_str)
        .ok_or_else(|| Refused::Invalid("`stream_id` is required".into()))
}

type Params = Query<HashMap<String, String>>;

async fn metadata(State(live): App) -> Response {
    let t = &live.t;
    let issuer = &t.issuer;
    let mut doc = json!({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/ssf/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "default_subjects": match t.config.default_subjects {
            super::DefaultSubjects::All => "ALL",
            super::DefaultSubjects::None => "NONE",
        },
        "events_supported": SUPPORTED,
    });
    if t.token.is_some() {
        for (member, path) in [
            ("configuration_endpoint", "stream"),
            ("status_endpoint", "status"),
            ("add_subject_endpoint", "subjects:add"),
            ("remove_subject_endpoint", "subjects:remove"),
            ("verification_endpoint", "verify"),
        ] {
            doc[member] = json!(format!("{issuer}/ssf/{path}"));
        }
        doc["authorization_schemes"] = json!([{"spec_urn": "urn:ietf:rfc:6750"}]);
    }
    axum::Json(doc).into_response()
}

async fn jwks(State(live): App) -> Response {
    axum::Json(live.t.signer.jwks()).into_response()
}

/// The configuration endpoint (SSF §8.1.1): every method of it.
async fn stream_endpoint(
    State(live): App,
    method: Method,
    headers: HeaderMap,
    Query(query): Params,
    body: Bytes,
) -> Response {
    guarded(&live, &headers, async {
        let id = query.get("stream_id").map(String::as_str);
        let (status, body) = match method {
            Method::GET => (StatusCode::OK, live.read(id).await?),
            Method::POST => (StatusCode::CREATED, live.create(&json_body(&body)?).await?),
            Method::PATCH => (
                StatusCode::OK,
                live.update(&json_body(&body)?, false).await?,
            ),
            Method::PUT => (StatusCode::OK, live.update(&json_body(&body)?, true).await?),
            _ => {
                live.delete(stream_id(&query)?).await?;
                return Ok((StatusCode::NO_CONTENT, None));
            }
        };
        Ok((status, Some(body)))
    })
    .await
}

/// The status endpoint (SSF §8.1.2): read with `GET`, set with `POST`.
async fn status_endpoint(
    State(live): App,
    method: Method,
    headers: HeaderMap,
    Query(query): Params,
    body: Bytes,
) -> Response {
    guarded(&live, &headers, async {
        let status = match method {
            Method::GET => live.status(stream_id(&query)?).await?,
            _ => live.set_status(&json_body(&body)?).await?,
        };
        Ok((StatusCode::OK, Some(status)))
    })
    .await
}

/// Add (`add`) or remove a subject (SSF §8.1.3.2–3): 200 and 204 when done.
async fn subject(live: Arc<Live>, headers: HeaderMap, body: Bytes, add: bool) -> Response {
    guarded(&live, &headers, async {
        live.subject(&json_body(&body)?, add).await?;
        let done = if add {
            StatusCode::OK
        } else {
            StatusCode::NO_CONTENT
        };
        Ok((done, None))
    })
    .await
}

async fn verify(State(live): App, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&live, &headers, async {
        live.verify(&json_body(&body)?).await?;
        Ok((StatusCode::NO_CONTENT, None))
    })
    .await
}

/// One RFC 8936 poll: acknowledgements and error reports first, then the SETs to fetch.
async fn poll(
    State(live): App,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guarded(&live, &headers, async {
        let request = PollRequest::read(&json_body(&body)?).map_err(Refused::Invalid)?;
        let shared = live.get(&id).await.ok_or(Refused::NotFound)?;
        if !is_poll(&shared.snapshot().delivery) {
            return Err(Refused::Invalid("this stream is a push stream".into()));
        }
        for jti in request.ack {
            shared.queue.settle(&jti, Ok(()));
        }
        for (jti, reported) in request.errors {
            shared.queue.settle(&jti, Err(reported));
        }
        let config = &live.t.config;
        let wait = match (request.max_events, request.return_immediately) {
            (Some(0), _) | (_, true) => std::time::Duration::ZERO,
            _ => config.poll_wait,
        };
        let batch = if request.max_events == Some(0) {
            Default::default()
        } else {
            let mut stopping = live.stopping.clone();
            tokio::select! {
                batch = shared.queue.take(request.max_events, wait, config.poll_wait) => batch,
                _ = stopping.wait_for(|stop| *stop) => Default::default(),
            }
        };
        let sets: serde_json::Map<String, Value> = batch
            .sets
            .into_iter()
            .map(|(jti, set)| (jti, Value::String(set)))
            .collect();
        let body = json!({"sets": sets, "moreAvailable": batch.more_available});
        Ok((StatusCode::OK, Some(body)))
    })
    .await
}

/// A poll request's members (RFC 8936 §2.2), each checked.
struct PollRequest {
    max_events: Option<usize>,
    return_immediately: bool,
    ack: Vec<String>,
    errors: Vec<(String, Reported)>,
}

impl PollRequest {
    fn read(body: &Value) -> Result<PollRequest, String> {
        let o = body
            .as_object()
            .ok_or("the request body must be a JSON object")?;
        let mut r = PollRequest {
            max_events: None,
            return_immediately: false,
            ack: Vec::new(),
            errors: Vec::new(),
        };
        for (key, value) in o {
            match key.as_str() {
                "maxEvents" => {
                    let n = value
                        .as_u64()
                        .ok_or("`maxEvents` must be a non-negative integer")?;
                    r.max_events = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
                "returnImmediately" => {
                    r.return_immediately = value
                        .as_bool()
                        .ok_or("`returnImmediately` must be a boolean")?
                }
                "ack" => {
                    for jti in value
                        .as_array()
                        .ok_or("`ack` must be an array of jti strings")?
                    {
                        r.ack.push(
                            jti.as_str()
                                .ok_or("`ack` must be an array of jti strings")?
                                .to_owned(),
                        );
                    }
                }
                "setErrs" => {
                    let errs = value
                        .as_object()
                        .ok_or("`setErrs` must be an object keyed by jti")?;
                    for (jti, e) in errs {
                        let err = e["err"]
                            .as_str()
                            .ok_or("each `setErrs` entry needs `err`")?;
                        let description = e["description"].as_str().unwrap_or_default();
                        r.errors.push((
                            jti.clone(),
                            Reported {
                                err: crate::text::one_line(err),
                                description: crate::text::one_line(description),
                            },
                        ));
                    }
                }
                other => return Err(format!("unknown poll request member `{other}`")),
            }
        }
        Ok(r)
    }
}
