//! The transmitter while `run` serves it: its streams, what a management request does to
//! them, and its listener's life.
//!
//! Owns every change to a stream: each is written to the store before it is answered, and
//! asks the runner to start or stop the stream's deliveries (its [`Roster`]). A new stream
//! starts at the log head (it gets the events from its creation on). Paused, a stream's
//! deliveries stop and its cursor stays, so its events wait for it; disabled, they stop and
//! its cursor moves to the head when it is enabled or paused again, so what came meanwhile is
//! never sent; deleted, it is forgotten with its cursor and dead letters. Requests that change
//! streams are taken one at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::member::{Shared, StreamSink};
use super::stream::{self, is_poll, Invalid, Status, Stream};
use super::{delivery_name, set, Transmitter};
use crate::sink::Roster;
use crate::store::{Store, StoreError};

/// Why a management request was refused.
#[derive(Debug)]
pub enum Refused {
    Invalid(String),
    NotFound,
    /// `max_streams` is reached.
    Full(usize),
    TooSoon(Duration),
    Store(StoreError),
}

impl From<Invalid> for Refused {
    fn from(Invalid(why): Invalid) -> Refused {
        Refused::Invalid(why)
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e)
    }
}

pub struct Live {
    pub t: Arc<Transmitter>,
    store: Store,
    roster: mpsc::Sender<Roster>,
    streams: tokio::sync::Mutex<BTreeMap<String, Arc<Shared>>>,
    /// Turns true at shutdown: long polls end then rather than hold the process up.
    pub stopping: watch::Receiver<bool>,
}

impl Live {
    /// The transmitter with its stored streams, each enabled one handed to the runner.
    pub async fn start(
        t: Arc<Transmitter>,
        store: Store,
        roster: mpsc::Sender<Roster>,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Live> {
        let live = Arc::new(Live {
            t,
            stopping,
            store,
            roster,
            streams: tokio::sync::Mutex::default(),
        });
        let sink = live.t.name();
        match stream::stored(&live.store, sink) {
            Ok(stored) => {
                let mut streams = live.streams.lock().await;
                for s in stored {
                    let shared = Arc::new(Shared::new(s));
                    if shared.snapshot().status == Status::Enabled {
                        live.serve(&shared).await;
                    }
                    streams.insert(shared.id.clone(), shared);
                }
            }
            Err(e) => {
                error!(sink = %sink, error = %crate::text::error_chain(&e), "cannot read the SSF streams from the store; none is delivered until rollcall restarts with a readable store")
            }
        }
        live
    }

    async fn serve(&self, shared: &Arc<Shared>) {
        let member = StreamSink::boxed(self.t.clone(), shared.clone());
        // The runner is gone only at shutdown: nothing is delivered then anyway.
        let _ = self.roster.send(Roster::Serve(member)).await;
    }

    async fn stop(&self, id: &str) {
        let (stopped, done) = oneshot::channel();
        let name = delivery_name(self.t.name(), id);
        if self
            .roster
            .send(Roster::Stop { name, stopped })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    fn save(&self, stream: &Stream) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(stream).expect("a stream always serialises");
        self.store
            .put_stream(self.t.name(), &stream.stream_id, &bytes)
    }

    /// Move a stream's cursor to the log head: what is in the log now is not for it.
    fn skip_to_head(&self, id: &str) -> Result<(), StoreError> {
        let head = self.store.head()?;
        self.store
            .set_cursor(&delivery_name(self.t.name(), id), head)
    }

    fn render(&self, stream: &Stream) -> Value {
        stream.render(
            &self.t.issuer,
            self.t.config.min_verification_interval.as_secs(),
        )
    }

    /// Whether `url` is among the `allowed_push_endpoints`; why not when it is not.
    fn push_allowed(&self, url: &url::Url) -> Option<String> {
        let allowed = self.t.config.allowed_push_endpoints.as_ref()?;
        (!allowed.iter().any(|p| url.as_str().starts_with(p.as_str()))).then(|| {
            "`delivery.endpoint_url` is not among this transmitter's allowed push endpoints"
                .to_owned()
        })
    }

    /// A new stream (SSF §8.1.1.1).
    pub async fn create(&self, body: &Value) -> Result<Value, Refused> {
        let mut streams = self.streams.lock().await;
        if streams.len() >= self.t.config.max_streams {
            return Err(Refused::Full(self.t.config.max_streams));
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let mut s = stream::create(body, id.clone(), &self.t.config.audience, &|u| {
            self.push_allowed(u)
        })?;
        if is_poll(&s.delivery) {
            s.delivery.endpoint_url = Some(format!("{}/ssf/poll/{id}", self.t.issuer));
        }
        self.skip_to_head(&id)?;
        self.save(&s)?;
        info!(sink = %self.t.name(), stream = %id, method = %s.delivery.method, "stream created");
        let shared = Arc::new(Shared::new(s.clone()));
        self.serve(&shared).await;
        streams.insert(id, shared);
        Ok(self.render(&s))
    }

    pub async fn get(&self, id: &str) -> Option<Arc<Shared>> {
        self.streams.lock().await.get(id).cloned()
    }

    /// One stream's configuration, or all of them.
    pub async fn read(&self, id: Option<&str>) -> Result<Value, Refused> {
        let streams = self.streams.lock().await;
        match id {
            Some(id) => {
                let s = streams.get(id).ok_or(Refused::NotFound)?;
                Ok(self.render(&s.snapshot()))
            }
            None => Ok(Value::Array(
                streams
                    .values()
                    .map(|s| self.render(&s.snapshot()))
                    .collect(),
            )),
        }
    }

    /// `PATCH` (`replace` false) or `PUT` (true) of a stream (SSF §8.1.1.3–4).
    pub async fn update(&self, body: &Value, replace: bool) -> Result<Value, Refused> {
        let id = stream::member(body, "stream_id")?;
        let streams = self.streams.lock().await;
        let shared = streams.get(&id).ok_or(Refused::NotFound)?;
        let next = stream::update(&shared.snapshot(), body, replace, &self.t.issuer, &|u| {
            self.push_allowed(u)
        })?;
        self.save(&next)?;
        shared.replace(next.clone());
        Ok(self.render(&next))
    }

    /// Forget a stream whole (SSF §8.1.1.5).
    pub async fn delete(&self, id: &str) -> Result<(), Refused> {
        let mut streams = self.streams.lock().await;
        if !streams.contains_key(id) {
            return Err(Refused::NotFound);
        }
        self.stop(id).await;
        self.store
            .delete_stream(self.t.name(), id, &delivery_name(self.t.name(), id))?;
        streams.remove(id);
        info!(sink = %self.t.name(), stream = %id, "stream deleted");
        Ok(())
    }

    /// A stream's status (SSF §8.1.2.1).
    pub async fn status(&self, id: &str) -> Result<Value, Refused> {
        let shared = self.get(id).await.ok_or(Refused::NotFound)?;
        Ok(status_of(&shared.snapshot()))
    }

    /// Enable, pause or disable a stream (SSF §8.1.2.2).
    pub async fn set_status(&self, body: &Value) -> Result<Value, Refused> {
        let id = stream::member(body, "stream_id")?;
        let status = stream::status(body)?;
        let reason = stream::optional(body, "reason")?;
        let streams = self.streams.lock().await;
        let shared = streams.get(&id).ok_or(Refused::NotFound)?;
        let mut next = shared.snapshot();
        let was = next.status;
        if was == Status::Enabled && status != Status::Enabled {
            self.stop(&id).await;
        }
        if was == Status::Disabled && status != Status::Disabled {
            self.skip_to_head(&id)?;
        }
        next.status = status;
        next.reason = reason;
        self.save(&next)?;
        shared.replace(next.clone());
        if was != Status::Enabled && status == Status::Enabled {
            self.serve(shared).await;
        }
        if was != status {
            info!(sink = %self.t.name(), stream = %id, status = ?status, "stream status changed");
        }
        Ok(status_of(&next))
    }

    /// Add (`add`) or remove a subject (SSF §8.1.3.2–3).
    pub async fn subject(&self, body: &Value, add: bool) -> Result<(), Refused> {
        let id = stream::member(body, "stream_id")?;
        let subject = stream::subject(body.get("subject").unwrap_or(&Value::Null))?;
        if let Some(verified) = body.get("verified") {
            if !verified.is_boolean() {
                return Err(Refused::Invalid("`verified` must be a boolean".into()));
            }
        }
        let streams = self.streams.lock().await;
        let shared = streams.get(&id).ok_or(Refused::NotFound)?;
        let mut next = shared.snapshot();
        let (to, from) = if add {
            (&mut next.added, &mut next.removed)
        } else {
            (&mut next.removed, &mut next.added)
        };
        from.retain(|s| *s != subject);
        if !to.contains(&subject) {
            if to.len() >= stream::MAX_SUBJECTS {
                return Err(Refused::Invalid(format!(
                    "a stream keeps at most {} subjects",
                    stream::MAX_SUBJECTS
                )));
            }
            to.push(subject);
        }
        self.save(&next)?;
        shared.replace(next);
        Ok(())
    }

    /// Send a verification event (SSF §8.1.4.2): on a push stream at once, in the background;
    /// on a poll stream, to the queue.
    pub async fn verify(self: &Arc<Self>, body: &Value) -> Result<(), Refused> {
        let id = stream::member(body, "stream_id")?;
        let state = stream::optional(body, "state")?;
        let shared = self.get(&id).await.ok_or(Refused::NotFound)?;
        {
            let mut last = shared
                .last_verification
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let interval = self.t.config.min_verification_interval;
            if let Some(wait) = last.and_then(|at| interval.checked_sub(at.elapsed())) {
                if !wait.is_zero() {
                    return Err(Refused::TooSoon(wait));
                }
            }
            *last = Some(Instant::now());
        }
        let s = shared.snapshot();
        let jti = uuid::Uuid::now_v7().to_string();
        let envelope = set::Envelope {
            issuer: &self.t.issuer,
            aud: &s.aud,
            id: &jti,
            iat: chrono::Utc::now().timestamp(),
            sub_id: json!({"format": "opaque", "id": s.stream_id}),
        };
        let event = match &state {
            Some(state) => json!({ "state": state }),
            None => json!({}),
        };
        let token = self
            .t
            .sign(&set::claims(&envelope, set::VERIFICATION, event, None))
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        if is_poll(&s.delivery) {
            shared.queue.post(&jti, token);
            return Ok(());
        }
        let t = self.t.clone();
        tokio::spawn(async move {
            if let Err(r) = super::member::push(&t, &s, token).await {
                warn!(sink = %t.name(), stream = %s.stream_id, error = %crate::text::error_chain(&r.error), "verification event not delivered; the receiver may ask again");
            }
        });
        Ok(())
    }
}

fn status_of(s: &Stream) -> Value {
    let mut out = json!({"stream_id": s.stream_id, "status": s.status});
    if let Some(reason) = &s.reason {
        out["reason"] = json!(reason);
    }
    out
}
