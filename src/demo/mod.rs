//! `rollcall demo`: changes users in a TEST instance of the first source so that every event
//! type that source can show appears, one kind per submodule ([`superset`], [`kylin`]).
//!
//! Owns the demo workloads and their errors. It writes to the source, so the pipeline, which
//! only reads, must never call it; and it must never put the service account at risk: a
//! refused login of that account is tried once and ends the demo.

pub mod kylin;
pub mod superset;

use secrecy::ExposeSecret;

use crate::event::EventType;
use crate::settings::SecretError;
use crate::source::SourceConfig;

/// What one step did and the events, as `type subject`, rollcall should derive from it.
pub struct Shown {
    pub what: String,
    pub expect: Vec<String>,
}

/// The demo of one source, whatever its kind, walked one step at a time.
pub struct Tour {
    demo: Demo,
    done: usize,
}

enum Demo {
    Superset(superset::Demo),
    Kylin(kylin::Demo),
}

impl Tour {
    /// Log in to `source` with its own account.
    pub async fn start(source: &SourceConfig) -> Result<Tour, DemoError> {
        let secret = |e| DemoError::Secret(source.name().to_owned(), e);
        let demo = match source {
            SourceConfig::Superset(c) => {
                let password = c.password().map_err(secret)?;
                let admin =
                    superset::Admin::login(c.url.as_str(), &c.username, password.expose_secret())
                        .await?;
                Demo::Superset(superset::Demo::new(admin))
            }
            SourceConfig::Kylin(c) => {
                let password = c.password().map_err(secret)?;
                let admin =
                    kylin::Admin::login(c.url.as_str(), &c.username, password.expose_secret())
                        .await?;
                Demo::Kylin(kylin::Demo::new(admin))
            }
        };
        Ok(Tour { demo, done: 0 })
    }

    /// Run the next step; `None` when every step has run.
    pub async fn next(&mut self) -> Option<Result<Shown, DemoError>> {
        let shown = match &mut self.demo {
            Demo::Superset(d) => {
                let step = *superset::Step::ALL.get(self.done)?;
                d.run(step).await.map(|(what, expect)| shown(what, expect))
            }
            Demo::Kylin(d) => {
                let step = *kylin::Step::ALL.get(self.done)?;
                d.run(step).await.map(|(what, expect)| shown(what, expect))
            }
        };
        self.done += 1;
        Some(shown)
    }
}

fn shown<S: std::fmt::Display>(what: String, expect: Vec<(EventType, S)>) -> Shown {
    Shown {
        what,
        expect: expect
            .iter()
            .map(|(t, subject)| format!("{t} {subject}"))
            .collect(),
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
