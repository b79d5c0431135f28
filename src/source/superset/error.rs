//! Everything that can go wrong reading Superset, as one error type: each message says what
//! the operator should do.
//!
//! Owns the wording of every failure of the Superset source, and which of them is a refused
//! login. It never decides what to do about a failure: the reads and the cycle do.

use crate::settings::SecretError;
use crate::source::bounds::describe_excess;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SupersetError {
    #[error("Superset at {url} refused the login of '{username}' (401 Not authorized): the password is wrong, the user does not exist, or the account is inactive. rollcall sends these credentials no more, in this process or any later one, since an identity provider behind Superset may lock the account. Check `username`, the password in `password_env`/`password_file` (changed credentials are tried at the next poll), and that the account is active in Superset; then, if only the account was fixed, run `rollcall source retry-login` for this source")]
    LoginRejected { url: String, username: String },
    #[error("Superset answered 403 Forbidden to '{username}' for {path}: the service account needs the Admin role, or a role holding `can_get` on User, `can_get` on Group and `can_list_roles` on RoleRestAPI (see docs/superset-setup.md, The Superset account)")]
    Forbidden { username: String, path: String },
    #[error("Superset at {url} answered 404 for {path}: its security REST API is off. Add `FAB_ADD_SECURITY_API = True` to superset_config.py and restart Superset")]
    SecurityApiDisabled { url: String, path: String },
    #[error("{url} answered 404 but not with Superset's own answer for a missing user (`{{\"message\": \"Not found\"}}`, docs/superset.md S7): `{answer}`. A route that is missing there (the security API off on one Superset behind a load balancer, or a proxy answering) says nothing about the user, so its deletion is held back until Superset itself confirms it. Check that every Superset behind `url` has `FAB_ADD_SECURITY_API = True` and that `url` reaches Superset directly")]
    NotFoundUnconfirmed { url: String, answer: String },
    #[error("Superset rejected rollcall's access token even after renewing it (HTTP {status}: {msg}). Superset's SECRET_KEY or JWT settings may have changed, or a proxy alters the Authorization header")]
    TokenRejected { status: u16, msg: String },
    #[error("expected JSON from {url} but got `{content_type}` (HTTP {status}): {snippet}. Check that `url` is Superset's base URL and not a proxy or single-sign-on page")]
    NotJson {
        url: String,
        status: u16,
        content_type: String,
        snippet: String,
    },
    #[error("the JSON from {url} is truncated or malformed ({bytes} bytes: {detail}). Nothing was stored; the next cycle tries again. If it persists, look for a proxy or size limit between rollcall and Superset")]
    BadJson {
        url: String,
        bytes: usize,
        detail: String,
    },
    #[error("could not reach Superset at {url} after {attempts} attempts: {detail}. Check `url`, that Superset is running, and the network between them")]
    Unreachable {
        url: String,
        attempts: usize,
        detail: String,
    },
    #[error("Superset answered HTTP {status} for {url} after {attempts} attempts: {detail}. See Superset's server log")]
    ServerError {
        url: String,
        status: u16,
        attempts: usize,
        detail: String,
    },
    #[error("Superset answered {url} with a redirect (HTTP {status}) to `{location}`, which rollcall does not follow: a password or token must never go anywhere but `url`. Set `url` to the address Superset answers on itself (https:// if it redirects http://, the path a proxy serves it on)")]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    #[error("Superset asked rollcall to slow down (HTTP 429) at {url} on each of {attempts} attempts, waiting as its Retry-After said (at most a minute each); nothing was stored, the next poll tries again. If it persists, raise `poll_interval` or Superset's rate limits")]
    Throttled { url: String, attempts: usize },
    #[error("unexpected HTTP {status} from {url}: {detail}")]
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("Superset ignored part of a query ({detail}); rollcall refuses to trust that page. Superset drops filters it does not understand silently, so this version may not support it")]
    FilterIgnored { detail: String },
    #[error("Superset refused a query rollcall built from what it announced it allows ({detail}): its release may have changed underneath. Nothing was stored; the next cycle asks Superset again what it allows and reads accordingly")]
    QueryRefused { detail: String },
    #[error("a row of {path} has no readable `id` ({detail}), so rollcall cannot tell whose it is; nothing was stored. See what Superset (or a proxy before it) answers there")]
    NoId { path: String, detail: String },
    #[error("Superset's answer to {url} is too large: {}. rollcall stopped reading it; the next cycle asks again. If Superset's answers are this large, raise `max_response_bytes` for this source; otherwise look for a proxy answering in Superset's place", describe_excess(*max, *declared))]
    TooLarge {
        url: String,
        max: u64,
        declared: Option<u64>,
    },
    #[error("Superset's pages of {path} did not end: {pages} pages read, more than its first page's count of {total} rows needs even with room for rows added meanwhile. rollcall stopped this read so that it cannot go on for ever; the next cycle reads again. Look for a proxy that rewrites paging arguments, or for rows being created faster than rollcall reads them")]
    EndlessPages {
        path: String,
        pages: u64,
        total: u64,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the password")]
    Secret(#[source] SecretError),
    #[error("cannot compare with what is stored")]
    Stored(#[from] StoreError),
}

impl SupersetError {
    /// Superset refused the credentials. Superset itself locks no account by default, but an
    /// identity provider behind it (LDAP, OAuth) may, so they are not sent again either.
    pub fn refused_login(&self) -> bool {
        matches!(self, SupersetError::LoginRejected { .. })
    }
}
