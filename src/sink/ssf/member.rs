//! One stream's deliveries: the sink the delivery engine serves for a stream, under the name
//! `<sink>/<stream id>`.
//!
//! Owns turning one stored event into the stream's SET (its type within the stream's
//! `events_delivered`, its subject within the stream's subjects, in the stream's subject
//! format), and one delivery of it: an RFC 8935 push and what the answer means, or an offer to
//! the stream's poll queue that resolves when the receiver acknowledges it. Retries, order and
//! dead letters are the engine's. It never logs the `authorization_header`.

use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use futures::future::BoxFuture;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use tokio::time::Instant;

use super::stream::{is_poll, Stream};
use super::{poll, set, SsfError, Transmitter, BODY_CAP};
use crate::encode::{Binding, Encoder, Format, Mode};
use crate::sink::{Delivery, Message, Order, Refusal, Sink, SinkError};

/// Streams read the stored CloudEvent as it is and make their SETs from it (so the OCSF
/// version, which CloudEvents ignores, is any).
pub const ENCODER: Encoder = Encoder {
    format: Format::Cloudevents,
    mode: Mode::Structured,
    binding: Binding::Http,
    ocsf: crate::encode::ocsf::Version::V1_9_0,
};

pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";

pub struct StreamSink {
    t: Arc<Transmitter>,
    shared: Arc<Shared>,
    name: String,
    encoder: Encoder,
}

impl StreamSink {
    pub fn boxed(t: Arc<Transmitter>, shared: Arc<Shared>) -> Box<dyn Sink> {
        let name = super::delivery_name(t.name(), &shared.id);
        Box::new(StreamSink {
            t,
            shared,
            name,
            encoder: ENCODER,
        })
    }

    /// The SET of one stored event on this stream, `(jti, SET)`; `None` when the stream does
    /// not carry it (its type or subject is not the stream's, or no SSF event describes it).
    fn set_of(&self, message: &Message) -> Result<Option<(String, String)>, SsfError> {
        let unreadable = |detail: String| SsfError::Unreadable {
            stream: self.shared.id.clone(),
            detail,
        };
        let event: Value =
            serde_json::from_slice(&message.body).map_err(|e| unreadable(e.to_string()))?;
        let stream = self.shared.snapshot();
        let Some(mapped) = set::map(&event) else {
            return Ok(None);
        };
        if !stream.events_delivered().contains(&mapped.event_type) {
            return Ok(None);
        }
        let subject = set::subject(&event).ok_or_else(|| unreadable("no subject".into()))?;
        let issuers = &self.t.config.subject_issuers;
        if !stream.carries(
            &subject.identifiers(issuers),
            self.t.config.default_subjects,
        ) {
            return Ok(None);
        }
        let Some(sub_id) = subject.identifier(stream.format, issuers) else {
            return Ok(None);
        };
        let iat = crate::encode::parse_time(event["time"].as_str().unwrap_or_default())
            .map_err(|e| unreadable(e.to_string()))?
            .timestamp();
        let envelope = set::Envelope {
            issuer: &self.t.issuer,
            aud: &stream.aud,
            id: &message.id,
            iat,
            sub_id,
        };
        let claims = set::claims(&envelope, mapped.event_type, mapped.claims, mapped.toe);
        let token = self.t.sign(&claims)?;
        Ok(Some((message.id.clone(), token)))
    }

    async fn deliver(&self, message: &Message) -> Result<(), Refusal> {
        let Some((jti, token)) = self.set_of(message).map_err(Refusal::new)? else {
            return Ok(());
        };
        let stream = self.shared.snapshot();
        if !is_poll(&stream.delivery) {
            return push(&self.t, &stream, token).await;
        }
        let answer = self.shared.queue.offer(&jti, token);
        // Dropped with the future when the engine stops: the SET leaves the queue, and the
        // cursor before it brings it back, the same, when the stream is served again.
        let _withdraw = Withdraw(&self.shared, &jti);
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reported)) => Err(Refusal {
                rejected: true,
                ..Refusal::new(SsfError::Rejected {
                    err: reported.err,
                    description: reported.description,
                })
            }),
            // The queue is gone with the stream.
            Err(_) => Err(Refusal::new(SsfError::Transport {
                detail: "the stream's poll queue was closed".into(),
            })),
        }
    }
}

struct Withdraw<'a>(&'a Shared, &'a str);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.queue.withdraw(self.1);
    }
}

impl Transmitter {
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, SsfError> {
        self.signer.sign(claims).map_err(|e| SsfError::Sign {
            sink: self.name().to_owned(),
            detail: e.to_string(),
        })
    }
}

/// One stream while the transmitter runs: its record and its poll queue, shared by its
/// deliveries and the listener.
pub struct Shared {
    pub id: String,
    stream: RwLock<Stream>,
    pub queue: poll::Queue,
    pub(super) last_verification: Mutex<Option<Instant>>,
}

impl Shared {
    pub fn new(stream: Stream) -> Shared {
        Shared {
            id: stream.stream_id.clone(),
            stream: RwLock::new(stream),
            queue: poll::Queue::default(),
            last_verification: Mutex::new(None),
        }
    }

    /// The stream as it is now (a receiver may change it between two deliveries).
    pub fn snapshot(&self) -> Stream {
        self.stream
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn replace(&self, stream: Stream) {
        *self.stream.write().unwrap_or_else(|e| e.into_inner()) = stream;
    }
}

/// One RFC 8935 push of `token` to the stream's endpoint: `202` delivers it; `400` with an
/// error body refuses it for good; anything else is tried again.
pub(crate) async fn push(t: &Transmitter, stream: &Stream, token: String) -> Result<(), Refusal> {
    let endpoint = stream.delivery.endpoint_url.as_deref().unwrap_or_default();
    let mut request = t
        .client
        .post(endpoint)
        .header(CONTENT_TYPE, HeaderValue::from_static(SET_MEDIA_TYPE))
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .body(token);
    if let Some(auth) = &stream.delivery.authorization_header {
        request = request.header(AUTHORIZATION, auth);
    }
    let response = request.send().await.map_err(|e| {
        let detail = if e.is_timeout() {
            format!(
                "no response within {}",
                humantime::format_duration(t.config.timeout)
            )
        } else {
            crate::text::error_chain(&e.without_url())
        };
        Refusal::new(SsfError::Transport { detail })
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::retry_after::parse(v, Utc::now()));
    if status == 202 {
        return Ok(());
    }
    let body = crate::sink::read_capped(response, BODY_CAP).await;
    let said: Option<Value> = serde_json::from_slice(&body).ok();
    let code = said.as_ref().and_then(|v| v["err"].as_str());
    if let (400, Some(err)) = (status, code) {
        let description = said.as_ref().and_then(|v| v["description"].as_str());
        return Err(Refusal {
            rejected: true,
            ..Refusal::new(SsfError::Rejected {
                err: crate::text::one_line(err),
                description: crate::text::one_line(description.unwrap_or_default()),
            })
        });
    }
    let body = String::from_utf8_lossy(&body);
    let body = match &stream.delivery.authorization_header {
        Some(secret) => crate::text::redact(&body, std::slice::from_ref(secret)),
        None => body.into_owned(),
    };
    Err(Refusal {
        retry_after,
        ..Refusal::new(SsfError::Status {
            code: status,
            body: crate::text::one_line(&body),
        })
    })
}

impl Sink for StreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// One SET per user in flight, retried on its own, then dead-lettered (or at once, when
    /// the receiver refuses it for good).
    fn delivery(&self) -> Delivery {
        Delivery {
            order: Order::PerUser {
                schedule: self.t.config.retry_schedule.clone(),
            },
            batch: 1,
            max_in_flight: self.t.config.max_in_flight,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn takes(&self, e: &crate::encode::Envelope<'_>) -> bool {
        set::event_type_of(&e.event_type)
            .is_some_and(|t| self.shared.snapshot().events_delivered().contains(&t))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SinkError>> {
        let said = format!("stream {} of {}", self.shared.id, self.t.name());
        Box::pin(async move { Ok(said) })
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            for (i, message) in batch.iter().enumerate() {
                self.deliver(message)
                    .await
                    .map_err(|r| Refusal { acked: i, ..r })?;
            }
            Ok(())
        })
    }
}
