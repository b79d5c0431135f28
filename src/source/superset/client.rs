//! The Superset HTTP client: JWT login and refresh, retries, and turning every way Superset
//! can fail into an error that says what to do.
//!
//! Owns the session tokens. It must never log a password or a token, never send either to
//! any origin but the configured `url` (so it follows no redirect), never quote what Superset
//! sent without [`one_line`], and never re-login while refreshing still works: each password login bumps the service account's own `login_count`
//! (docs/superset.md S30), so the refresh token (valid 30 days and reusable, docs/superset.md S3–S4) is preferred.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{debug, warn};
use url::Url;

use super::api::{ListQuery, LoginResponse, One, Page, RefreshResponse};
use super::error::SupersetError;
use crate::source::bounds::{read_body, BodyError};
use crate::text::{error_chain, one_line, parse_answer, snippet};

/// Renew the access token this long before its `exp`, so a request never races expiry.
const EXPIRY_MARGIN_SECS: i64 = 30;
/// The longest `Retry-After` honoured before the next attempt: a longer one is cut to this, and
/// once the attempts are spent the poll fails and the next one, a poll interval later, asks again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
struct Session {
    access: SecretString,
    /// `exp` of the access token, read from its (unverified) claims.
    access_exp: Option<i64>,
    refresh: Option<SecretString>,
}

/// One HTTP answer, read in full.
struct Answer {
    status: StatusCode,
    content_type: String,
    /// Where a redirect points, as sent (never followed).
    location: Option<String>,
    /// How long Superset (or a proxy) asked to wait, on 429 and 503.
    retry_after: Option<Duration>,
    body: Bytes,
}

impl Answer {
    fn snippet(&self) -> String {
        snippet(&self.body)
    }

    fn is_json(&self) -> bool {
        self.content_type.contains("json")
    }

    /// Superset's own answer for a missing object of a known endpoint: JSON
    /// `{"message": "Not found"}` and nothing else (docs/superset.md S7). An unknown route
    /// answers differently (an `errors` list, or an HTML page), and so does anything before
    /// Superset.
    fn is_missing_object(&self) -> bool {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Missing {
            message: String,
        }
        self.is_json()
            && serde_json::from_slice::<Missing>(&self.body).is_ok_and(|m| m.message == "Not found")
    }

    /// Flask-JWT-Extended answers a bad token with 401 or 422 and a `msg` key (docs/superset.md S5).
    fn token_problem(&self) -> Option<String> {
        if !matches!(self.status.as_u16(), 401 | 422) {
            return None;
        }
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.get("msg").and_then(Value::as_str).map(one_line)
    }

    fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("msg"))
                    .map(|m| one_line(&m.to_string()))
            })
            .unwrap_or_else(|| self.snippet())
    }
}

/// A failed attempt, before retries are exhausted.
enum Attempt {
    Transport(reqwest::Error),
    Server(Answer),
    /// Larger than `max_response_bytes` (as declared, if it was): never retried.
    TooLarge(Option<u64>),
}

impl Attempt {
    fn transient(&self) -> bool {
        match self {
            Attempt::Transport(_) => true,
            Attempt::Server(a) => retried(a.status),
            Attempt::TooLarge(_) => false,
        }
    }

    /// What the server asked to wait, bounded by [`MAX_RETRY_AFTER`].
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Server(a) => a.retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
            Attempt::Transport(_) | Attempt::TooLarge(_) => None,
        }
    }
}

/// Answers worth another attempt: the server failed, or asked to slow down (429, with a
/// `Retry-After` that is honoured).
fn retried(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: SecretString,
    max_retries: usize,
    max_response_bytes: u64,
    /// Shared by the reads of one cycle that run at once (a full reconcile's id ranges): one
    /// of them logs in or renews while the others wait for its token.
    session: tokio::sync::Mutex<Option<Session>>,
}

impl Client {
    pub fn new(
        base: Url,
        username: String,
        password: SecretString,
        timeout: Duration,
        max_retries: usize,
        max_response_bytes: u64,
    ) -> Result<Client, SupersetError> {
        let mut headers = reqwest::header::HeaderMap::new();
        // Without it, Superset answers unknown URLs with an HTML page (docs/superset.md S7).
        headers.insert(
            reqwest::header::ACCEPT,
            "application/json".parse().expect("static header"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            // Followed, a 307/308 answer to the login would re-send the password wherever it
            // points, and a GET's token would follow it to another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| SupersetError::Setup(e.to_string()))?;
        Ok(Client {
            http,
            base,
            username,
            password,
            max_retries,
            max_response_bytes,
            session: tokio::sync::Mutex::new(None),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url
    }

    /// One request with retries on connection errors, timeouts and 5xx (exponential backoff
    /// with jitter, by `backon`).
    async fn send(
        &self,
        method: Method,
        path: &str,
        q: Option<&str>,
        bearer: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<Answer, SupersetError> {
        let url = self.url(path);
        let once = || async {
            let started = std::time::Instant::now();
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(q) = q {
                req = req.query(&[("q", q)]);
            }
            if let Some(token) = bearer {
                req = req.bearer_auth(token.expose_secret());
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(Attempt::Transport)?;
            let status = resp.status();
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
            let location = header(reqwest::header::LOCATION);
            let retry_after = match status.as_u16() {
                429 | 503 => header(reqwest::header::RETRY_AFTER)
                    .and_then(|v| crate::retry_after::parse(&v, chrono::Utc::now())),
                _ => None,
            };
            let body = read_body(resp, self.max_response_bytes)
                .await
                .map_err(|e| match e {
                    BodyError::TooLarge { declared } => Attempt::TooLarge(declared),
                    BodyError::Transport(e) => Attempt::Transport(e),
                })?;
            // How long Superset took, apart from rollcall's own work (scripts/scale-superset.sh
            // sums these for an idle cycle).
            debug!(
                path,
                status = status.as_u16(),
                bytes = body.len(),
                ms = started.elapsed().as_millis() as u64,
                "Superset answered"
            );
            let answer = Answer {
                status,
                content_type,
                location,
                retry_after,
                body,
            };
            if retried(status) {
                return Err(Attempt::Server(answer));
            }
            Ok(answer)
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.max_retries)
            .with_jitter();
        let answer = once
            .retry(policy)
            .when(Attempt::transient)
            // `None` means the attempts are spent; otherwise the server's wish wins over the
            // backoff, bounded.
            .adjust(|e, backoff| backoff.map(|d| e.retry_after().unwrap_or(d)))
            .notify(|e, wait| {
                let why = match e {
                    Attempt::Transport(e) => e.to_string(),
                    Attempt::Server(a) => format!("HTTP {}", a.status),
                    Attempt::TooLarge(_) => "answer too large".to_owned(),
                };
                warn!(path, error = %why, retry_in = ?wait, "Superset request failed; retrying");
            })
            .await
            .map_err(|e| {
                let attempts = self.max_retries + 1;
                match e {
                    Attempt::Transport(e) => SupersetError::Unreachable {
                        url: self.base.to_string(),
                        attempts,
                        detail: error_chain(&e),
                    },
                    Attempt::Server(a) if a.status == StatusCode::TOO_MANY_REQUESTS => {
                        SupersetError::Throttled {
                            url: url.to_string(),
                            attempts,
                        }
                    }
                    Attempt::Server(a) => SupersetError::ServerError {
                        url: url.to_string(),
                        status: a.status.as_u16(),
                        attempts,
                        detail: a.message(),
                    },
                    Attempt::TooLarge(declared) => SupersetError::TooLarge {
                        url: url.to_string(),
                        max: self.max_response_bytes,
                        declared,
                    },
                }
            })?;
        if answer.status.is_redirection() {
            return Err(SupersetError::Redirected {
                url: url.to_string(),
                status: answer.status.as_u16(),
                location: one_line(answer.location.as_deref().unwrap_or("")),
            });
        }
        Ok(answer)
    }

    /// Password login: only when there is no session or the refresh token stopped working.
    async fn login(&self) -> Result<Session, SupersetError> {
        debug!(username = %self.username, "logging in to Superset");
        let body = json!({
            "username": self.username,
            "password": self.password.expose_secret(),
            "provider": "db",
            "refresh": true,
        });
        let answer = self
            .send(
                Method::POST,
                "/api/v1/security/login",
                None,
                None,
                Some(&body),
            )
            .await?;
        match answer.status.as_u16() {
            200 => {}
            401 => {
                return Err(SupersetError::LoginRejected {
                    url: self.base.to_string(),
                    username: self.username.clone(),
                })
            }
            _ => return Err(self.unexpected("/api/v1/security/login", &answer)),
        }
        let tokens: LoginResponse = self.json("/api/v1/security/login", &answer)?;
        Ok(Session {
            access_exp: jwt_exp(&tokens.access_token),
            access: tokens.access_token.into(),
            refresh: tokens.refresh_token.map(Into::into),
        })
    }

    /// A new access token for `session`, by refresh token when possible, by password otherwise.
    async fn renew(&self, session: Option<&Session>) -> Result<Session, SupersetError> {
        let Some(refresh) = session.and_then(|s| s.refresh.clone()) else {
            return self.login().await;
        };
        let path = "/api/v1/security/refresh";
        let answer = self
            .send(Method::POST, path, None, Some(&refresh), None)
            .await?;
        if answer.status == StatusCode::OK {
            let r: RefreshResponse = self.json(path, &answer)?;
            return Ok(Session {
                access_exp: jwt_exp(&r.access_token),
                access: r.access_token.into(),
                refresh: Some(refresh),
            });
        }
        debug!(status = %answer.status, "refresh token refused; logging in again");
        self.login().await
    }

    /// A valid access token: the session's, or a new one when there is none, it is about to
    /// expire, or it is `rejected` (the token the server just refused; a reader that finds it
    /// already replaced by another uses the replacement).
    async fn token(&self, rejected: Option<&SecretString>) -> Result<SecretString, SupersetError> {
        let mut session = self.session.lock().await;
        let current = match session.take() {
            Some(s)
                if s.access_exp
                    .is_none_or(|exp| exp - EXPIRY_MARGIN_SECS > now())
                    && rejected.is_none_or(|r| r.expose_secret() != s.access.expose_secret()) =>
            {
                s
            }
            Some(s) => self.renew(Some(&s)).await?,
            None => self.login().await?,
        };
        let token = current.access.clone();
        *session = Some(current);
        Ok(token)
    }

    /// An authorised GET. A token the server rejects anyway (expired early, key rotated) is
    /// renewed once; a second rejection is an error.
    async fn get(&self, path: &str, q: Option<&str>) -> Result<Answer, SupersetError> {
        let token = self.token(None).await?;
        let answer = self.send(Method::GET, path, q, Some(&token), None).await?;
        let Some(first) = answer.token_problem() else {
            return Ok(answer);
        };
        debug!(path, problem = %first, "access token rejected; renewing");
        let token = self.token(Some(&token)).await?;
        let answer = self.send(Method::GET, path, q, Some(&token), None).await?;
        match answer.token_problem() {
            Some(msg) => Err(SupersetError::TokenRejected {
                status: answer.status.as_u16(),
                msg,
            }),
            None => Ok(answer),
        }
    }

    /// One page of a list endpoint.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &ListQuery,
    ) -> Result<Page<T>, SupersetError> {
        let q = query.to_rison();
        let answer = self.get(path, Some(&q)).await?;
        match answer.status.as_u16() {
            200 => self.json(path, &answer),
            // The security endpoints exist only with FAB_ADD_SECURITY_API; others are plain 404s.
            404 if path.starts_with("/api/v1/security/") => {
                Err(SupersetError::SecurityApiDisabled {
                    url: self.base.to_string(),
                    path: path.to_owned(),
                })
            }
            _ => Err(self.checked(path, &answer)),
        }
    }

    /// An object answer of a security endpoint that is not a list, e.g. `users/_info`.
    pub async fn object<T: DeserializeOwned>(
        &self,
        path: &str,
        q: &str,
    ) -> Result<T, SupersetError> {
        let answer = self.get(path, Some(q)).await?;
        match answer.status.as_u16() {
            200 => self.json(path, &answer),
            404 => Err(SupersetError::SecurityApiDisabled {
                url: self.base.to_string(),
                path: path.to_owned(),
            }),
            _ => Err(self.checked(path, &answer)),
        }
    }

    /// Whether the release serves `path`: 200 yes, a JSON 404 no (docs/superset.md, Releases
    /// 4.1 to 6.1: `roles/search/` is a JSON 404 before 6.0). An HTML 404 is no answer of
    /// Superset's API.
    pub async fn exists(&self, path: &str, q: &str) -> Result<bool, SupersetError> {
        let answer = self.get(path, Some(q)).await?;
        match answer.status.as_u16() {
            200 => Ok(true),
            404 if answer.is_json() => Ok(false),
            _ => Err(self.checked(path, &answer)),
        }
    }

    /// `GET /api/v1/security/users/<id>`; `None` only when Superset itself says the user does
    /// not exist. Any other 404 (an unknown route, answered by a proxy, a pod without the
    /// security API, or Superset's own "requested URL was not found") proves nothing about the
    /// user, so it is an error and no deletion follows from it (docs/superset.md S7).
    pub async fn user<T: DeserializeOwned>(&self, id: u64) -> Result<Option<T>, SupersetError> {
        let path = format!("/api/v1/security/users/{id}");
        let answer = self.get(&path, None).await?;
        match answer.status.as_u16() {
            200 => Ok(Some(self.json::<One<T>>(&path, &answer)?.result)),
            404 if answer.is_missing_object() => Ok(None),
            404 => Err(SupersetError::NotFoundUnconfirmed {
                url: self.url(&path).to_string(),
                answer: answer.snippet(),
            }),
            _ => Err(self.checked(&path, &answer)),
        }
    }

    fn json<T: DeserializeOwned>(&self, path: &str, answer: &Answer) -> Result<T, SupersetError> {
        if !answer.is_json() {
            return Err(SupersetError::NotJson {
                url: self.url(path).to_string(),
                status: answer.status.as_u16(),
                content_type: answer.content_type.clone(),
                snippet: answer.snippet(),
            });
        }
        parse_answer(&answer.body, || self.url(path).to_string()).map_err(|e| {
            SupersetError::BadJson {
                url: self.url(path).to_string(),
                bytes: answer.body.len(),
                detail: e.to_string(),
            }
        })
    }

    /// Map a non-success status that is not a token problem.
    fn checked(&self, path: &str, answer: &Answer) -> SupersetError {
        match answer.status.as_u16() {
            403 => SupersetError::Forbidden {
                username: self.username.clone(),
                path: path.to_owned(),
            },
            _ => self.unexpected(path, answer),
        }
    }

    fn unexpected(&self, path: &str, answer: &Answer) -> SupersetError {
        if !answer.is_json() {
            return SupersetError::NotJson {
                url: self.url(path).to_string(),
                status: answer.status.as_u16(),
                content_type: answer.content_type.clone(),
                snippet: answer.snippet(),
            };
        }
        SupersetError::Unexpected {
            url: self.url(path).to_string(),
            status: answer.status.as_u16(),
            detail: answer.message(),
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `exp` from a JWT's claims. The signature is not checked: rollcall only needs to know when
/// to renew, and the server checks the token anyway. A JWT library would add a dependency for a
/// base64 decode.
fn jwt_exp(token: &str) -> Option<i64> {
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_read_from_the_claims() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":1764000000,"sub":"1"}"#);
        assert_eq!(jwt_exp(&format!("h.{claims}.s")), Some(1_764_000_000));
        assert_eq!(jwt_exp("garbage"), None);
    }
}
