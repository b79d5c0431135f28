//! A webhook receiver that verifies rollcall's signatures with the official Standard Webhooks
//! library, to try the webhook sink locally or to start a real receiver from:
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
//!   cargo run --example webhook_receiver -- 127.0.0.1:9000
//! ```
//!
//! and point a `[[sinks]]` of `kind = "webhook"` at `http://127.0.0.1:9000/hook` with the same
//! secret. It answers 204 to a verified event, 401 to anything else, and skips an event whose
//! `webhook-id` it has already seen: retries and replays reuse the id.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use standardwebhooks::Webhook;

struct Receiver {
    webhook: Webhook,
    /// A real receiver keeps these in its database, in the same transaction as the effect.
    seen: Mutex<HashSet<String>>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .expect("set WEBHOOK_SECRET to the sink's secret (`whsec_<base64>`)");
    let webhook = Webhook::new(&secret).expect("WEBHOOK_SECRET is `whsec_` followed by base64");
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let state = Arc::new(Receiver {
        webhook,
        seen: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}/hook");
    axum::serve(listener, app).await
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // Verify the raw bytes, before any parsing: re-serialised JSON would not match. `verify`
    // also rejects timestamps more than five minutes off, which stops replays.
    if let Err(e) = receiver.webhook.verify(&body, &headers) {
        eprintln!("rejected: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers["webhook-id"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    if !receiver.seen.lock().unwrap().insert(id.clone()) {
        println!("{id}: already handled");
        return StatusCode::NO_CONTENT;
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    println!(
        "{id}: {} of user {} at {}",
        event["type"], event["subject"], event["time"]
    );
    StatusCode::NO_CONTENT
}
