//! The Kylin demo: changes users in a (test!) Apache Kylin 5 through its public REST API so that
//! every event type a Kylin source can show appears (docs/kylin.md K45–K52). Kylin shows no
//! successful logins and no actions, so there is no `user.login` and no `audit.action` here.
//!
//! What this kind supplies to `rollcall demo` ([`start`]). Owns the Kylin admin session and the
//! demo steps; it shares nothing with the source's reads, which never call it. It must never
//! lock the service account: that account authenticates once (HTTP Basic, then the session
//! cookie) and a refused login ends the demo; the wrong passwords that show failed logins and
//! a lock are sent only for a demo user, each from a client without a session.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::EventType;
use crate::source::demo::{DemoError, Shown, Steps};

/// Log in to the Kylin at `url` as `username`, once, and make the demo.
pub async fn start(
    url: &str,
    username: &str,
    password: &SecretString,
) -> Result<Box<dyn Steps>, DemoError> {
    let admin = Admin::login(url, username, password.expose_secret()).await?;
    Ok(Box::new(Demo::new(admin)))
}

/// The only `Accept` Kylin's public user controller serves (docs/kylin.md K8).
const ACCEPT: &str = "application/vnd.apache.kylin-v4-public+json";
/// A locked account, answered before the password is checked (docs/kylin.md K5).
const LOCKED: &str = "KE-010003005";
/// Groups every Kylin has (docs/kylin.md K19); the demo creates none.
const ANALYST: &str = "ROLE_ANALYST";
const MODELER: &str = "ROLE_MODELER";

/// Kylin's answer envelope; its stack trace is never read (docs/kylin.md K40).
#[derive(Deserialize)]
struct Envelope {
    code: Option<String>,
    msg: Option<String>,
    error_code: Option<String>,
}

/// An admin session of the service account.
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    /// Authenticate once with HTTP Basic; every later request sends only the session cookie.
    /// A refused login is not retried.
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Admin, DemoError> {
        let admin = Admin {
            http: client(true)?,
            base: base.trim_end_matches('/').to_owned(),
        };
        let resp = admin
            .request(Method::GET, "/api/user")
            .query(&[("name", username), ("page_size", "1")])
            .basic_auth(username, Some(password))
            .send()
            .await
            .map_err(|source| DemoError::Http {
                what: "login".into(),
                source,
            })?;
        let status = resp.status();
        let envelope = envelope(resp, "login").await?;
        let refused = status == StatusCode::UNAUTHORIZED
            || (status == StatusCode::BAD_REQUEST && envelope.is_code(LOCKED));
        if refused {
            return Err(DemoError::LoginRefused {
                product: "Kylin",
                username: username.to_owned(),
                answer: envelope.describe(status),
            });
        }
        envelope.success("login", status)?;
        Ok(admin)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, ACCEPT)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Value,
        what: &str,
    ) -> Result<(), DemoError> {
        let resp = self
            .request(method, path)
            .json(&body)
            .send()
            .await
            .map_err(|source| DemoError::Http {
                what: what.into(),
                source,
            })?;
        let status = resp.status();
        envelope(resp, what).await?.success(what, status)
    }

    /// `POST /api/user` (docs/kylin.md K34): enabled, in `authorities`.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        authorities: &[&str],
    ) -> Result<(), DemoError> {
        let body = json!({"username": username, "password": password, "disabled": false, "authorities": authorities});
        self.call(Method::POST, "/api/user", body, "create user")
            .await
    }

    /// `PUT /api/user` (docs/kylin.md K36): only the fields in `changes` are overwritten.
    pub async fn update_user(&self, username: &str, changes: Value) -> Result<(), DemoError> {
        let mut body = json!({ "username": username });
        if let (Some(body), Value::Object(changes)) = (body.as_object_mut(), changes) {
            body.extend(changes);
        }
        self.call(Method::PUT, "/api/user", body, "update user")
            .await
    }

    /// An admin's `PUT /api/user/password` for another user: no old password, and every lock
    /// counter cleared (docs/kylin.md K37).
    pub async fn reset_password(
        &self,
        username: &str,
        new_password: &str,
    ) -> Result<(), DemoError> {
        let body = json!({"username": username, "new_password": new_password});
        self.call(Method::PUT, "/api/user/password", body, "reset password")
            .await
    }

    /// `DELETE /api/user` with the name in the body (docs/kylin.md K38).
    pub async fn delete_user(&self, username: &str) -> Result<(), DemoError> {
        self.call(
            Method::DELETE,
            "/api/user",
            json!({ "username": username }),
            "delete user",
        )
        .await
    }

    /// One login of `username` with a password that is wrong: a new client, so no session
    /// spares the authentication. Kylin counts it against that user only (docs/kylin.md K27).
    async fn fail_login(&self, username: &str) -> Result<(), DemoError> {
        let resp = client(false)?
            .get(format!("{}/api/user", self.base))
            .query(&[("page_size", "1")])
            .header(reqwest::header::ACCEPT, ACCEPT)
            .basic_auth(username, Some("not-the-password-1!"))
            .send()
            .await
            .map_err(|source| DemoError::Http {
                what: "failed login".into(),
                source,
            })?;
        let status = resp.status();
        let envelope = envelope(resp, "failed login").await?;
        // 401 for a wrong password, 400 `KE-010003005` once the user is locked (K5).
        if status == StatusCode::UNAUTHORIZED || envelope.is_code(LOCKED) {
            Ok(())
        } else {
            Err(DemoError::Status {
                what: format!("a login of {username} with a wrong password"),
                status: status.as_u16(),
                body: format!("expected Kylin to refuse it; {}", envelope.describe(status)),
            })
        }
    }
}

fn client(cookies: bool) -> Result<reqwest::Client, DemoError> {
    reqwest::Client::builder()
        .cookie_store(cookies)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| DemoError::Http {
            what: "client set-up".into(),
            source,
        })
}

/// The answer's envelope; a body that is not one reads as an empty envelope, which is no
/// success.
async fn envelope(resp: reqwest::Response, what: &str) -> Result<Envelope, DemoError> {
    let body = resp.bytes().await.map_err(|source| DemoError::Http {
        what: what.into(),
        source,
    })?;
    Ok(serde_json::from_slice(&body).unwrap_or(Envelope {
        code: None,
        msg: None,
        error_code: None,
    }))
}

impl Envelope {
    fn is_code(&self, code: &str) -> bool {
        self.error_code.as_deref() == Some(code)
            || self.msg.as_deref().is_some_and(|m| m.starts_with(code))
    }

    fn success(self, what: &str, status: StatusCode) -> Result<(), DemoError> {
        if status.is_success() && self.code.as_deref() == Some("000") {
            return Ok(());
        }
        Err(DemoError::Status {
            what: what.into(),
            status: status.as_u16(),
            body: self.describe(status),
        })
    }

    fn describe(&self, status: StatusCode) -> String {
        format!(
            "HTTP {}, {}: {}",
            status.as_u16(),
            self.error_code.as_deref().unwrap_or("no error code"),
            self.msg.as_deref().unwrap_or("no Kylin message")
        )
    }
}

/// A password Kylin's rule accepts (docs/kylin.md K34: a letter, a digit, a symbol), and not
/// Base64, which Kylin would decode first.
fn password(who: &str, round: u8) -> String {
    format!("Pw{round}-{who}!")
}

/// The steps of the demo, in order; each shows one or two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Save,
    Deactivate,
    Reactivate,
    Group,
    Ungroup,
    FailedLogin,
    Lock,
    ResetPassword,
    Delete,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Create,
        Step::Save,
        Step::Deactivate,
        Step::Reactivate,
        Step::Group,
        Step::Ungroup,
        Step::FailedLogin,
        Step::Lock,
        Step::ResetPassword,
        Step::Delete,
    ];
}

/// Two demo users: alice is edited, deactivated, regrouped and deleted; bob fails logins until
/// Kylin locks him, then an admin resets his password.
pub struct Demo {
    admin: Admin,
    alice: String,
    bob: String,
}

impl Demo {
    pub fn new(admin: Admin) -> Demo {
        let prefix = format!("demo{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        Demo {
            admin,
            alice: format!("{prefix}-alice"),
            bob: format!("{prefix}-bob"),
        }
    }

    /// Run one step; returns what it did and the events rollcall should derive from it.
    pub async fn run(&self, step: Step) -> Result<(String, Vec<(EventType, String)>), DemoError> {
        use EventType::*;
        let a = &self.admin;
        let (alice, bob) = (self.alice.clone(), self.bob.clone());
        Ok(match step {
            Step::Create => {
                a.create_user(&alice, &password(&alice, 1), &[ANALYST])
                    .await?;
                a.create_user(&bob, &password(&bob, 1), &[ANALYST]).await?;
                (
                    format!("created {alice} and {bob} in {ANALYST}"),
                    vec![(UserCreated, alice), (UserCreated, bob)],
                )
            }
            Step::Save => {
                // Kylin writes the record even when nothing changed (K24); the poll sees only
                // `last_modified` move, as after a later password reset (K52).
                a.update_user(&alice, json!({})).await?;
                (
                    "saved alice without changes (Kylin still writes the record)".into(),
                    vec![(UserUpdated, alice)],
                )
            }
            Step::Deactivate => {
                a.update_user(&alice, json!({"disabled": true})).await?;
                ("disabled alice".into(), vec![(UserDeactivated, alice)])
            }
            Step::Reactivate => {
                a.update_user(&alice, json!({"disabled": false})).await?;
                ("enabled alice".into(), vec![(UserReactivated, alice)])
            }
            Step::Group => {
                a.update_user(&alice, json!({"authorities": [ANALYST, MODELER]}))
                    .await?;
                (
                    format!("added alice to {MODELER}"),
                    vec![(UserGroupAdded, alice)],
                )
            }
            Step::Ungroup => {
                a.update_user(&alice, json!({"authorities": [ANALYST]}))
                    .await?;
                (
                    format!("took alice out of {MODELER}"),
                    vec![(UserGroupRemoved, alice)],
                )
            }
            Step::FailedLogin => {
                a.fail_login(&bob).await?;
                (
                    "failed one login as bob".into(),
                    vec![(UserLoginFailed, bob)],
                )
            }
            Step::Lock => {
                // The third failure in a row locks the user for 30 s (K30); the record keeps
                // `locked` until the next login attempt or a reset (K31).
                a.fail_login(&bob).await?;
                a.fail_login(&bob).await?;
                (
                    "failed two more logins as bob: Kylin locked him".into(),
                    vec![(UserLoginFailed, bob.clone()), (UserLocked, bob)],
                )
            }
            Step::ResetPassword => {
                a.reset_password(&bob, &password(&bob, 2)).await?;
                (
                    "reset bob's password as admin (clears the lock)".into(),
                    vec![(UserUnlocked, bob.clone()), (UserPasswordChanged, bob)],
                )
            }
            Step::Delete => {
                a.delete_user(&alice).await?;
                a.delete_user(&bob).await?;
                (
                    "deleted alice and bob".into(),
                    vec![(UserDeleted, alice), (UserDeleted, bob)],
                )
            }
        })
    }
}

impl Steps for Demo {
    fn step(&mut self, n: usize) -> Option<BoxFuture<'_, Result<Shown, DemoError>>> {
        let step = *Step::ALL.get(n)?;
        Some(Box::pin(
            async move { self.run(step).await.map(Shown::from) },
        ))
    }
}
