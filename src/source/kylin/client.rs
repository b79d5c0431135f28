//! The Kylin HTTP client: HTTP Basic once, then the session cookie; the exact `Accept`; and
//! turning every way Kylin can answer into a value or an error that says what to do.
//!
//! Owns the session. It must never log a password, follow a redirect (credentials go to `url`
//! only), quote what Kylin sent without [`one_line`], and never authenticate twice with the same
//! credentials after Kylin refused them: each refused Basic login is a failed login, and the
//! third in a row locks the account (docs/kylin.md K7, K30). The cookie's name is Kylin's own
//! (a hash, not `JSESSIONID`), so reqwest's cookie store keeps whatever Kylin sets.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tracing::debug;
use url::Url;

use super::api::Envelope;
use super::KylinError;
use crate::source::bounds::{read_body, BodyError};
use crate::text::{error_chain, one_line, parse_answer, snippet};

/// The only `Accept` Kylin's public user controller serves (docs/kylin.md K8).
const ACCEPT: &str = "application/vnd.apache.kylin-v4-public+json";
/// Locked account, checked before the password (docs/kylin.md K5).
const LOCKED: &str = "KE-010003005";
/// Authenticated but without `ROLE_ADMIN` (docs/kylin.md K6).
const NO_ACCESS: &str = "KE-010024001";
/// One HTTP answer, read in full.
struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: bytes::Bytes,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: SecretString,
    max_response_bytes: u64,
    /// Kylin has accepted the credentials and set a session cookie: send it alone.
    session: bool,
}

impl Client {
    pub fn new(
        base: Url,
        username: String,
        password: SecretString,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> Result<Client, KylinError> {
        let mut headers = reqwest::header::HeaderMap::new();
        // reqwest sends `*/*` otherwise, which both controllers match (docs/kylin.md K8).
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static(ACCEPT),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            .cookie_store(true)
            // A redirect leads to a login page or a proxy, never to users.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| KylinError::Setup(e.to_string()))?;
        Ok(Client {
            http,
            base,
            username,
            password,
            max_response_bytes,
            session: false,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url.query_pairs_mut().extend_pairs(query);
        url
    }

    /// A GET whose `data` is `T`. Basic credentials go only with the first request of a
    /// session; an expired session (401 without credentials sent) is renewed once.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, KylinError> {
        let url = self.url(path, query);
        let mut basic = !self.session;
        let mut answer = self.send(&url, basic).await?;
        if answer.status == StatusCode::UNAUTHORIZED && !basic {
            debug!("Kylin session expired; authenticating again");
            self.session = false;
            basic = true;
            answer = self.send(&url, basic).await?;
        }
        if basic {
            self.check_login(&url, &answer)?;
        }
        let data = self.data(&url, &answer);
        // Only Kylin's own success answer proves the credentials were taken and a cookie set
        // (a proxy's HTML page is a 200 too).
        if basic && data.is_ok() {
            self.session = true;
        }
        data
    }

    async fn send(&self, url: &Url, basic: bool) -> Result<Answer, KylinError> {
        let mut req = self.http.get(url.clone());
        if basic {
            req = req.basic_auth(&self.username, Some(self.password.expose_secret()));
        }
        let unreachable = |e: reqwest::Error| KylinError::Unreachable {
            url: self.base.to_string(),
            detail: error_chain(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let location = header(reqwest::header::LOCATION);
        let status = resp.status();
        let body = read_body(resp, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { declared } => KylinError::TooLarge {
                    url: url.to_string(),
                    max: self.max_response_bytes,
                    declared,
                },
                BodyError::Transport(e) => unreachable(e),
            })?;
        Ok(Answer {
            status,
            content_type,
            location,
            body,
        })
    }

    /// The answers to a Basic login that must stop the source: wrong password, unknown or
    /// disabled user (401), locked user (400 `KE-010003005`) (docs/kylin.md K5).
    fn check_login(&self, url: &Url, answer: &Answer) -> Result<(), KylinError> {
        let refused = match answer.status.as_u16() {
            401 => true,
            400 => error_envelope(answer).is_some_and(|e| {
                e.error_code.as_deref() == Some(LOCKED)
                    || e.msg.as_deref().is_some_and(|m| m.starts_with(LOCKED))
            }),
            _ => false,
        };
        if !refused {
            return Ok(());
        }
        let status = answer.status.as_u16();
        let answer = match error_envelope(answer) {
            Some(e) => format!(
                "HTTP {status}, {}: {}",
                one_line(e.error_code.as_deref().unwrap_or("no error code")),
                one_line(e.msg.as_deref().unwrap_or("no message"))
            ),
            None => format!("HTTP {status}: {}", snippet(&answer.body)),
        };
        Err(KylinError::LoginRefused {
            url: url.to_string(),
            username: self.username.clone(),
            answer,
        })
    }

    /// `data` of a success envelope, or the error the answer is.
    fn data<T: DeserializeOwned>(&self, url: &Url, answer: &Answer) -> Result<T, KylinError> {
        let status = answer.status.as_u16();
        if answer.status.is_redirection() {
            return Err(KylinError::Redirected {
                url: url.to_string(),
                status,
                location: one_line(answer.location.as_deref().unwrap_or("")),
            });
        }
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Err(KylinError::Empty {
                url: url.to_string(),
                status,
            });
        }
        if !is_json(&answer.content_type) {
            return Err(KylinError::NotJson {
                url: url.to_string(),
                status,
                content_type: answer.content_type.clone(),
                snippet: snippet(&answer.body),
            });
        }
        let envelope: Envelope<T> =
            parse_answer(&answer.body, || url.to_string()).map_err(|e| KylinError::BadJson {
                url: url.to_string(),
                bytes: answer.body.len(),
                detail: e.to_string(),
            })?;
        match envelope {
            Envelope {
                code: Some(code),
                data: Some(data),
                ..
            } if code == "000" && answer.status.is_success() => Ok(data),
            Envelope { error_code, .. } if error_code.as_deref() == Some(NO_ACCESS) => {
                Err(KylinError::NotAdmin {
                    url: url.to_string(),
                    username: self.username.clone(),
                })
            }
            // Kylin's errors carry `msg` and `error_code`; Spring's own carry `error`. The
            // stack trace Kylin adds (docs/kylin.md K40) is never read.
            e => Err(KylinError::Api {
                url: url.to_string(),
                status,
                msg: one_line(e.msg.or(e.error).as_deref().unwrap_or("no message")),
                error_code: e.error_code.as_deref().map(one_line),
            }),
        }
    }
}

/// The error envelope of an answer, if it is one.
fn error_envelope(answer: &Answer) -> Option<Envelope<serde::de::IgnoredAny>> {
    serde_json::from_slice(&answer.body).ok()
}

/// Kylin's JSON types end in `json` and may carry a charset (docs/kylin.md K55).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().to_ascii_lowercase().ends_with("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types_are_recognised_with_or_without_charset() {
        assert!(is_json(
            "application/vnd.apache.kylin-v4-public+json;charset=UTF-8"
        ));
        assert!(is_json("application/json"));
        assert!(!is_json("text/html; charset=utf-8"));
        assert!(!is_json(""));
    }
}
