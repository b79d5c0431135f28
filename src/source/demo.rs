//! `rollcall demo`, whatever the kind: changes users in a TEST instance of a source so that
//! every event type that kind can show appears. Each kind supplies its own steps
//! (`<kind>/demo.rs`) through `SourceKind::demo`; this file walks them ([`Tour`]) and holds
//! what every kind's demo shares ([`Steps`], [`Shown`], [`DemoError`]). It never names a kind,
//! and imports nothing of `source` (the registry starts a demo: `SourceConfig::demo`).
//!
//! A demo writes to the source, so the pipeline, which only reads, must never call it; and it
//! must never put the service account at risk: a refused login of that account is tried once
//! and ends the demo.

use futures::future::BoxFuture;

use crate::event::EventType;
use crate::settings::SecretError;

/// What one step did and the events, as `type subject`, rollcall should derive from it.
pub struct Shown {
    pub what: String,
    pub expect: Vec<String>,
}

impl<S: std::fmt::Display> From<(String, Vec<(EventType, S)>)> for Shown {
    fn from((what, expect): (String, Vec<(EventType, S)>)) -> Shown {
        Shown {
            what,
            expect: expect
                .iter()
                .map(|(t, subject)| format!("{t} {subject}"))
                .collect(),
        }
    }
}

/// One kind's demo: its steps, in order, each showing one or two event types.
pub trait Steps: Send {
    /// Run step `n` (from 0); `None` once every step has run.
    fn step(&mut self, n: usize) -> Option<BoxFuture<'_, Result<Shown, DemoError>>>;
}

/// The demo of one source, whatever its kind, walked one step at a time.
pub struct Tour {
    steps: Box<dyn Steps>,
    done: usize,
}

impl Tour {
    /// A kind's demo, from its first step.
    pub fn new(steps: Box<dyn Steps>) -> Tour {
        Tour { steps, done: 0 }
    }

    /// Run the next step; `None` when every step has run.
    pub async fn next(&mut self) -> Option<Result<Shown, DemoError>> {
        let shown = self.steps.step(self.done)?.await;
        self.done += 1;
        Some(shown)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {what} failed: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("demo: the step '{step}' runs only after '{needs}'")]
    OutOfOrder {
        step: &'static str,
        needs: &'static str,
    },
    #[error("demo: {what} failed: {source}")]
    Http {
        what: String,
        source: reqwest::Error,
    },
    #[error("demo: {product} refused the login of '{username}' ({answer}). The demo tried once and stopped, and no rollcall sends these credentials again, because failed logins lock the account (Kylin after three, docs/kylin.md K30): check the source's `username` and password, and that the account is an admin")]
    LoginRefused {
        product: &'static str,
        username: String,
        answer: String,
    },
    #[error("demo: cannot read the password of source '{0}'")]
    Secret(String, #[source] SecretError),
}
