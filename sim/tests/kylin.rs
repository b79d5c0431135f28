//! One test per fact of `docs/kylin.md` (`K<n>`) that the Kylin simulator relies on, driven
//! over HTTP with reqwest the way a client would. The simulator's clock stands still unless a
//! test advances it, so lock and session timings are tested without waiting.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::{Client, Method};
use rollcall_sim::kylin::{
    Fault, FaultKind, KylinOptions, KylinSim, LoginOutcome, ADMIN, ADMIN_PASSWORD, ALL_USERS,
    INTERNAL_ACCEPT, PUBLIC_ACCEPT, ROLE_ADMIN, ROLE_ANALYST, ROLE_MODELER, SEEDED_PASSWORD,
    SESSION_COOKIE,
};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000_000;
const PW: &str = "Passw0rd!";

async fn sim() -> KylinSim {
    KylinSim::start(KylinOptions {
        start_ms: Some(T0),
        ..KylinOptions::default()
    })
    .await
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn cookie_client() -> Client {
    Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// `data.value[*].username` of a list answer.
    fn names(&self) -> Vec<String> {
        self.json()["data"]["value"]
            .as_array()
            .expect("data.value")
            .iter()
            .map(|u| u["username"].as_str().expect("username").to_string())
            .collect()
    }
}

/// One request; `path` is after the `/kylin` base URL.
async fn call(
    c: &Client,
    sim: &KylinSim,
    method: Method,
    path: &str,
    auth: Option<(&str, &str)>,
    accept: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut rb = c.request(method, format!("{}{path}", sim.url));
    if let Some((u, p)) = auth {
        rb = rb.basic_auth(u, Some(p));
    }
    if let Some(a) = accept {
        rb = rb.header(ACCEPT, a);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Resp {
        status,
        headers,
        text,
    }
}

/// ADMIN with the public Accept and no cookies.
async fn admin(sim: &KylinSim, method: Method, path: &str, body: Option<Value>) -> Resp {
    as_user(sim, method, path, (ADMIN, ADMIN_PASSWORD), body).await
}

async fn as_user(
    sim: &KylinSim,
    method: Method,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> Resp {
    call(
        &client(),
        sim,
        method,
        path,
        Some(auth),
        Some(PUBLIC_ACCEPT),
        body,
    )
    .await
}

async fn list(sim: &KylinSim, query: &str) -> Resp {
    admin(sim, Method::GET, &format!("/api/user{query}"), None).await
}

async fn login_as(sim: &KylinSim, user: &str, password: &str) -> Resp {
    as_user(sim, Method::GET, "/api/user", (user, password), None).await
}

fn assert_error(r: &Resp, status: u16, msg: &str, error_code: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["code"], "999", "{}", r.text);
    assert_eq!(v["msg"], msg, "{}", r.text);
    assert!(v["exception"].is_string(), "{}", r.text);
    assert_eq!(v["error_code"], json!(error_code), "{}", r.text);
    assert!(v["data"].is_null(), "{}", r.text);
    assert!(v["stacktrace"].is_string(), "{}", r.text);
}

fn ok_body(r: &Resp) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"code": "000", "data": "", "msg": ""}));
}

fn create_body(name: &str, groups: &[&str]) -> Value {
    json!({"username": name, "password": PW, "disabled": false, "authorities": groups})
}

const LOGIN_FAILED: &str =
    "KE-010003208: Invalid username or password. Please check and try again.";

// ----- K1, K8, K13, K15: the list answer -----

#[tokio::test]
async fn list_envelope_is_code_000_data_value_total_size_offset_limit_and_empty_msg() {
    let sim = sim().await;
    let r = list(&sim, "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text
            .starts_with(r#"{"code":"000","data":{"value":[{"username":"ADMIN""#),
        "{}",
        r.text
    );
    assert!(
        r.text
            .ends_with(r#"],"total_size":1,"offset":0,"limit":10},"msg":""}"#),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_listed_user_has_the_public_fields_in_declaration_order_and_no_password() {
    let sim = sim().await;
    let r = list(&sim, "").await;
    let keys = [
        "username",
        "authorities",
        "disabled",
        "default_password",
        "locked",
        "uuid",
        "last_modified",
        "create_time",
        "locked_time",
        "wrong_time",
        "first_login_failed_time",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| r.text.find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", r.text);
    let u = &r.json()["data"]["value"][0];
    assert_eq!(u.as_object().expect("object").len(), keys.len());
    for absent in ["password", "version", "mvcc", "defaultPassword"] {
        assert!(u.get(absent).is_none(), "{absent} in {u}");
    }
}

#[tokio::test]
async fn the_seeded_admin_is_admin_kylin_with_role_admin_all_users_and_a_default_password() {
    let sim = sim().await;
    let u = &list(&sim, "").await.json()["data"]["value"][0];
    assert_eq!(u["username"], ADMIN);
    assert_eq!(
        u["authorities"],
        json!([{"authority": ROLE_ADMIN}, {"authority": ALL_USERS}])
    );
    assert_eq!(u["default_password"], true);
    assert_eq!(u["disabled"], false);
    assert_eq!(u["locked"], false);
    assert_eq!(u["uuid"].as_str().expect("uuid").len(), 36);
    for zero in ["locked_time", "wrong_time", "first_login_failed_time"] {
        assert_eq!(u[zero], 0, "{zero}");
    }
}

#[tokio::test]
async fn success_content_type_is_the_public_media_type_with_charset() {
    let sim = sim().await;
    let r = list(&sim, "").await;
    assert_eq!(
        r.content_type(),
        "application/vnd.apache.kylin-v4-public+json;charset=UTF-8"
    );
}

// ----- K11, K12, K14: paging, filter, order -----

#[tokio::test]
async fn page_offset_is_a_page_index_not_an_item_offset() {
    let sim = sim().await;
    sim.add_users(25); // ADMIN, user000001 … user000025
    let r = list(&sim, "?page_offset=1&page_size=10").await;
    let want: Vec<String> = (10..20).map(|i| format!("user{i:06}")).collect();
    assert_eq!(r.names(), want);
    let d = &r.json()["data"];
    assert_eq!(
        (d["offset"].clone(), d["limit"].clone()),
        (json!(1), json!(10))
    );
    assert_eq!(d["total_size"], 26);
}

#[tokio::test]
async fn page_size_defaults_to_10() {
    let sim = sim().await;
    sim.add_users(30);
    let r = list(&sim, "").await;
    assert_eq!(r.names().len(), 10);
    assert_eq!(r.json()["data"]["limit"], 10);
}

#[tokio::test]
async fn a_page_past_the_end_is_empty_and_total_size_still_counts_every_match() {
    let sim = sim().await;
    sim.add_users(5);
    let r = list(&sim, "?page_offset=7&page_size=10").await;
    assert_eq!(r.status, 200);
    assert!(r.names().is_empty());
    assert_eq!(r.json()["data"]["total_size"], 6);
}

#[tokio::test]
async fn page_size_zero_gives_an_empty_page() {
    let sim = sim().await;
    let r = list(&sim, "?page_size=0").await;
    assert!(r.names().is_empty());
    assert_eq!(r.json()["data"]["total_size"], 1);
}

#[tokio::test]
async fn a_negative_page_size_is_400_invalid_parameter_and_a_negative_page_offset_is_500() {
    let sim = sim().await;
    let r = list(&sim, "?page_size=-5").await;
    assert_error(
        &r,
        400,
        "KE-010000003(Invalid Parameter):fromIndex(0) > toIndex(-5)",
        Some("KE-010000003"),
    );
    let r = list(&sim, "?page_offset=-1").await;
    assert_error(
        &r,
        500,
        "KE-000000001(UNKNOWN ERRORCODE): fromIndex = -10",
        None,
    );
}

#[tokio::test]
async fn a_non_integer_page_offset_is_400_invalid_parameter() {
    let sim = sim().await;
    let r = list(&sim, "?page_offset=abc").await;
    assert_error(
        &r,
        400,
        "KE-010000003(Invalid Parameter):Failed to convert value of type 'java.lang.String' to required type 'java.lang.Integer'; nested exception is java.lang.NumberFormatException: For input string: \"abc\"",
        Some("KE-010000003"),
    );
    assert_eq!(
        r.json()["url"],
        format!("{}/api/user", sim.url),
        "controller errors carry the URL without the query"
    );
}

#[tokio::test]
async fn there_is_no_maximum_page_size() {
    let sim = sim().await;
    sim.add_users(2000);
    let r = list(&sim, "?page_size=2147483647").await;
    assert_eq!(r.names().len(), 2001);
}

#[tokio::test]
async fn users_are_sorted_by_username_ignoring_case() {
    let sim = sim().await;
    for name in ["carol", "bob", "Alice", "_x", "Bea"] {
        sim.add_user(name, PW, &[]);
    }
    let r = list(&sim, "?page_size=100").await;
    assert_eq!(r.names(), ["_x", "ADMIN", "Alice", "Bea", "bob", "carol"]);
}

#[tokio::test]
async fn disabled_and_locked_users_are_listed() {
    let sim = sim().await;
    sim.add_user("off", PW, &[]);
    sim.add_user("stuck", PW, &[]);
    sim.set_disabled("off", true);
    sim.lock("stuck", 3);
    assert_eq!(
        list(&sim, "?page_size=100").await.names(),
        ["ADMIN", "off", "stuck"]
    );
}

#[tokio::test]
async fn name_is_a_substring_match_ignoring_case_unless_is_case_sensitive() {
    let sim = sim().await;
    for name in ["Sales_Ann", "presales", "bob"] {
        sim.add_user(name, PW, &[]);
    }
    let r = list(&sim, "?name=SALES&page_size=100").await;
    assert_eq!(r.names(), ["presales", "Sales_Ann"]);
    assert_eq!(r.json()["data"]["total_size"], 2);
    let r = list(&sim, "?name=Sales&is_case_sensitive=true").await;
    assert_eq!(r.names(), ["Sales_Ann"]);
    let r = list(&sim, "?name=").await;
    assert_eq!(r.names().len(), 4, "an empty name means all users");
}

// ----- K2, K5: authentication failures -----

#[tokio::test]
async fn no_credentials_get_401_ke_010003207() {
    let sim = sim().await;
    let r = call(
        &client(),
        &sim,
        Method::GET,
        "/api/user",
        None,
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_error(
        &r,
        401,
        "KE-010003207: Can't authenticate. Please login again.",
        Some("KE-010003207"),
    );
    assert_eq!(
        r.json()["suggestion"],
        "",
        "new-style codes have an empty suggestion"
    );
}

#[tokio::test]
async fn a_wrong_password_gets_401_ke_010003208_and_counts_one_failed_login() {
    let sim = sim().await;
    let r = login_as(&sim, ADMIN, "nope").await;
    assert_error(&r, 401, LOGIN_FAILED, Some("KE-010003208"));
    assert_eq!(sim.failed_logins(ADMIN), 1);
    assert_eq!(
        sim.failed_logins("admin"),
        1,
        "counted by name ignoring case"
    );
    let u = sim.user(ADMIN).expect("admin");
    assert_eq!((u.wrong_time, u.first_login_failed_time), (1, T0));
}

#[tokio::test]
async fn an_unknown_user_gets_the_same_401_as_a_wrong_password() {
    let sim = sim().await;
    let r = login_as(&sim, "ghost", "whatever").await;
    assert_error(&r, 401, LOGIN_FAILED, Some("KE-010003208"));
}

#[tokio::test]
async fn an_undecodable_basic_header_is_a_failed_login_that_counts_for_nobody() {
    let sim = sim().await;
    let r = client()
        .get(format!("{}/api/user", sim.url))
        .header("Authorization", "Basic !!!")
        .header(ACCEPT, PUBLIC_ACCEPT)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(sim.user(ADMIN).expect("admin").wrong_time, 0);
}

#[tokio::test]
async fn auth_errors_are_pretty_printed_application_json_with_the_query_and_no_www_authenticate() {
    let sim = sim().await;
    let r = as_user(
        &sim,
        Method::GET,
        "/api/user?page_size=5",
        (ADMIN, "bad"),
        None,
    )
    .await;
    assert_eq!(r.content_type(), "application/json;charset=UTF-8");
    assert!(
        r.text
            .starts_with("{\n  \"code\" : \"999\",\n  \"data\" : null,\n"),
        "{}",
        r.text
    );
    assert!(r.headers.get(WWW_AUTHENTICATE).is_none());
    assert_eq!(r.json()["url"], format!("{}/api/user?page_size=5", sim.url));
}

// ----- K27-K32: lock rules -----

#[tokio::test]
async fn three_wrong_passwords_lock_the_account_for_30_seconds() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[ROLE_ADMIN]);
    for n in 1..=2 {
        assert_eq!(login_as(&sim, "svc", "bad").await.status, 401);
        let u = sim.user("svc").expect("svc");
        assert_eq!((u.wrong_time, u.locked), (n, false));
    }
    sim.advance(Duration::from_secs(5));
    // The third failure locks, and is itself still a 401.
    let r = login_as(&sim, "svc", "bad").await;
    assert_error(&r, 401, LOGIN_FAILED, Some("KE-010003208"));
    let u = sim.user("svc").expect("svc");
    assert_eq!((u.wrong_time, u.locked), (3, true));
    assert_eq!(u.locked_time, T0 + 5_000);
    assert_eq!(u.first_login_failed_time, T0, "the streak's first failure");

    // Even the right password is refused while locked; the message ends with Kylin's "..".
    let r = login_as(&sim, "svc", PW).await;
    assert_error(
        &r,
        400,
        "KE-010003005(User Locked):For security concern, account svc has been locked. Please try again in 30 seconds. Login failure again will be locked for 1 minutes..",
        Some("KE-010003005"),
    );
    assert_eq!(
        r.json()["suggestion"],
        Value::Null,
        "old-style codes have no suggestion"
    );

    sim.advance(Duration::from_millis(29_999));
    let r = login_as(&sim, "svc", PW).await;
    assert!(
        r.json()["msg"]
            .as_str()
            .expect("msg")
            .contains("Please try again in 1 seconds."),
        "{}",
        r.text
    );
    sim.advance(Duration::from_millis(1));
    assert_eq!(login_as(&sim, "svc", PW).await.status, 200);
}

#[tokio::test]
async fn a_locked_account_is_refused_before_the_password_is_checked() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    for _ in 0..3 {
        login_as(&sim, "svc", "bad").await;
    }
    let before = sim.user("svc").expect("svc");
    for _ in 0..5 {
        assert_eq!(login_as(&sim, "svc", "bad").await.status, 400);
    }
    assert_eq!(
        sim.user("svc").expect("svc"),
        before,
        "no counter moves while locked"
    );
    assert_eq!(
        sim.failed_logins("svc"),
        8,
        "but every wrong password was an attempt"
    );
}

#[tokio::test]
async fn each_failure_after_a_lock_expires_locks_longer() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    for _ in 0..3 {
        login_as(&sim, "svc", "bad").await;
    }
    // wrong_time → (lock length, the "next" length the locked message announces)
    let rules = [
        (3, 30, "30 seconds", "1 minutes"),
        (4, 60, "1 minutes", "5 minutes"),
        (5, 300, "5 minutes", "10 minutes"),
        (6, 600, "10 minutes", "30 minutes"),
        (7, 1_800, "30 minutes", "1 days"),
        (8, 86_400, "1 days", "3 days"),
    ];
    for (wrong_time, secs, now_text, next_text) in rules {
        let r = login_as(&sim, "svc", PW).await;
        let msg = r.json()["msg"].as_str().expect("msg").to_string();
        assert!(
            msg.contains(&format!("Please try again in {now_text}. Login failure again will be locked for {next_text}..")),
            "wrong_time {wrong_time}: {msg}"
        );
        sim.advance(Duration::from_secs(secs));
        assert_eq!(login_as(&sim, "svc", "bad").await.status, 401);
        let u = sim.user("svc").expect("svc");
        assert_eq!((u.wrong_time, u.locked), (wrong_time + 1, true));
    }
    let r = login_as(&sim, "svc", PW).await;
    assert!(
        r.text.contains(
            "Please try again in 3 days. Login failure again will be locked permanently.."
        ),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn the_tenth_consecutive_failure_locks_permanently_until_a_password_reset() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    sim.lock("svc", 9);
    sim.advance(Duration::from_secs(72 * 3600));
    assert_eq!(login_as(&sim, "svc", "bad").await.status, 401);
    assert_eq!(sim.user("svc").expect("svc").wrong_time, 10);
    sim.advance(Duration::from_secs(1000 * 86_400));
    let r = login_as(&sim, "svc", PW).await;
    assert_error(
        &r,
        400,
        "KE-010003005(User Locked):User svc is locked permanently. Please contact to your administrator to reset.",
        Some("KE-010003005"),
    );
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user/password",
        Some(json!({"username": "svc", "new_password": "Other0ne!"})),
    )
    .await;
    ok_body(&r);
    assert_eq!(sim.login("svc", "Other0ne!"), LoginOutcome::Ok);
}

#[tokio::test]
async fn lock_expiry_is_lazy_the_list_shows_locked_until_the_next_login_attempt() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    sim.lock("svc", 3);
    sim.advance(Duration::from_secs(3600));
    let svc = |r: &Resp| r.json()["data"]["value"][1].clone();
    let r = list(&sim, "").await;
    assert_eq!(svc(&r)["locked"], true, "time alone unlocks nothing");
    let before = sim.user("svc").expect("svc");
    assert_eq!(sim.fail_login("svc"), LoginOutcome::BadCredentials);
    let after = sim.user("svc").expect("svc");
    assert_eq!(
        (after.wrong_time, after.locked),
        (4, true),
        "relocked for longer"
    );
    assert!(after.locked_time > before.locked_time);
}

#[tokio::test]
async fn a_correct_password_after_a_lock_expires_resets_every_counter() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    sim.lock("svc", 3);
    sim.advance(Duration::from_secs(30));
    let before = sim.user("svc").expect("svc");
    assert_eq!(sim.login("svc", PW), LoginOutcome::Ok);
    let u = sim.user("svc").expect("svc");
    assert_eq!(
        (
            u.locked,
            u.wrong_time,
            u.locked_time,
            u.first_login_failed_time
        ),
        (false, 0, 0, 0)
    );
    assert!(u.last_modified > before.last_modified);
}

#[tokio::test]
async fn a_successful_login_without_failures_writes_nothing_but_a_failure_does() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    let before = sim.user("svc").expect("svc");
    assert_eq!(sim.login("svc", PW), LoginOutcome::Ok);
    assert_eq!(sim.user("svc").expect("svc"), before);
    sim.fail_login("svc");
    assert!(sim.user("svc").expect("svc").last_modified > before.last_modified);
    // A success then clears the failure, which is a write too.
    let failed = sim.user("svc").expect("svc");
    assert_eq!(sim.login("svc", PW), LoginOutcome::Ok);
    let u = sim.user("svc").expect("svc");
    assert_eq!(u.wrong_time, 0);
    assert!(u.last_modified > failed.last_modified);
}

#[tokio::test]
async fn a_disabled_user_gets_401_ke_010003008_before_the_password_and_nothing_is_recorded() {
    let sim = sim().await;
    sim.add_user("off", PW, &[ROLE_ADMIN]);
    sim.set_disabled("off", true);
    let before = sim.user("off").expect("off");
    for pw in [PW, "bad"] {
        let r = login_as(&sim, "off", pw).await;
        assert_error(
            &r,
            401,
            "KE-010003008(Login Failed):This user is disabled. Please contact admin.",
            Some("KE-010003008"),
        );
    }
    assert_eq!(sim.user("off").expect("off"), before);
}

// ----- K7: sessions -----

#[tokio::test]
async fn a_session_cookie_is_not_reauthenticated() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[ROLE_ADMIN]);
    let c = cookie_client();
    let get = |pw: &'static str| {
        let c = c.clone();
        let sim = &sim;
        async move {
            call(
                &c,
                sim,
                Method::GET,
                "/api/user",
                Some(("svc", pw)),
                Some(PUBLIC_ACCEPT),
                None,
            )
            .await
        }
    };
    assert_eq!(get(PW).await.status, 200);
    // The password changes under the client: the session still carries it, even with the old
    // (now wrong) Basic header, and no failed login is recorded.
    sim.change_password("svc", "Changed1!");
    for _ in 0..5 {
        assert_eq!(get(PW).await.status, 200);
    }
    assert_eq!(sim.failed_logins("svc"), 0);
    assert_eq!(sim.user("svc").expect("svc").wrong_time, 0);
    // Without any Authorization header the session alone is enough.
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        None,
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = sim.requests();
    assert!(!reqs[0].session_cookie && reqs[1].session_cookie);
}

#[tokio::test]
async fn without_the_cookie_every_request_is_authenticated_and_every_wrong_password_counts() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[ROLE_ADMIN]);
    for _ in 0..2 {
        assert_eq!(login_as(&sim, "svc", "bad").await.status, 401);
    }
    assert_eq!(sim.failed_logins("svc"), 2);
    assert_eq!(sim.user("svc").expect("svc").wrong_time, 2);
}

#[tokio::test]
async fn the_session_cookie_is_http_only_under_kylin_and_named_by_the_metadata_url_hash() {
    let sim = sim().await;
    let r = list(&sim, "").await;
    let cookie = r
        .headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("Set-Cookie")
        .to_string();
    assert!(
        cookie.starts_with(&format!("{SESSION_COOKIE}=")),
        "{cookie}"
    );
    assert!(!cookie.contains("JSESSIONID"));
    assert!(
        cookie.contains("; Path=/kylin/") && cookie.contains("; HttpOnly"),
        "{cookie}"
    );
    // Failures set no cookie.
    let r = login_as(&sim, ADMIN, "bad").await;
    assert!(r.headers.get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_session_expires_after_10_idle_minutes() {
    let sim = sim().await;
    let c = cookie_client();
    let get = |auth: Option<(&'static str, &'static str)>| {
        call(
            &c,
            &sim,
            Method::GET,
            "/api/user",
            auth,
            Some(PUBLIC_ACCEPT),
            None,
        )
    };
    assert_eq!(get(Some((ADMIN, ADMIN_PASSWORD))).await.status, 200);
    sim.advance(Duration::from_secs(599));
    assert_eq!(get(None).await.status, 200, "use refreshes the idle timer");
    sim.advance(Duration::from_secs(599));
    assert_eq!(get(None).await.status, 200);
    sim.advance(Duration::from_secs(600));
    assert_eq!(get(None).await.status, 401);
}

#[tokio::test]
async fn a_basic_header_naming_another_user_is_authenticated_despite_the_session() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[ROLE_ADMIN]);
    let c = cookie_client();
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        Some((ADMIN, ADMIN_PASSWORD)),
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // The name is compared exactly: `admin` is not the session's `ADMIN`.
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        Some(("admin", "bad")),
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(sim.failed_logins(ADMIN), 1);
}

#[tokio::test]
async fn expired_sessions_need_basic_again() {
    let sim = sim().await;
    let c = cookie_client();
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        Some((ADMIN, ADMIN_PASSWORD)),
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    sim.expire_sessions();
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        None,
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

// ----- K8, K16, K54: the Accept header -----

#[tokio::test]
async fn a_wrong_accept_header_gets_406() {
    let sim = sim().await;
    let r = call(
        &client(),
        &sim,
        Method::GET,
        "/api/user",
        Some((ADMIN, ADMIN_PASSWORD)),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(r.status, 406);
    let v = r.json();
    assert_eq!(
        (v["status"].clone(), v["error"].clone()),
        (json!(406), json!("Not Acceptable"))
    );
    assert!(v.get("code").is_none(), "not Kylin's envelope");
}

#[tokio::test]
async fn no_accept_header_or_a_wildcard_gets_a_500_spring_error_body() {
    let sim = sim().await;
    for accept in [None, Some("*/*")] {
        let r = call(
            &client(),
            &sim,
            Method::GET,
            "/api/user",
            Some((ADMIN, ADMIN_PASSWORD)),
            accept,
            None,
        )
        .await;
        assert_eq!(r.status, 500, "{accept:?}");
        let v = r.json();
        assert_eq!(v["error"], "Internal Server Error");
        assert_eq!(v["path"], "/kylin/api/user");
        assert!(v["timestamp"].is_string() && v.get("code").is_none());
    }
}

#[tokio::test]
async fn authentication_comes_before_the_accept_check() {
    let sim = sim().await;
    let r = call(
        &client(),
        &sim,
        Method::GET,
        "/api/user",
        Some((ADMIN, "bad")),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(sim.failed_logins(ADMIN), 1);
}

#[tokio::test]
async fn the_internal_accept_header_gets_the_internal_user_shape() {
    let sim = sim().await;
    let r = call(
        &client(),
        &sim,
        Method::GET,
        "/api/user",
        Some((ADMIN, ADMIN_PASSWORD)),
        Some(INTERNAL_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type(),
        "application/vnd.apache.kylin-v4+json;charset=UTF-8"
    );
    let u = &r.json()["data"]["value"][0];
    assert_eq!(u["defaultPassword"], true);
    assert!(u.get("default_password").is_none() && u.get("password").is_none());
    assert_eq!(u["version"], "5.0.0.0-SNAPSHOT");
    assert_eq!(u["mvcc"], 0);
    assert_eq!(
        (
            u["has_query_permission"].clone(),
            u["is_super_admin"].clone()
        ),
        (json!(true), json!(true))
    );
}

#[tokio::test]
async fn accept_language_changes_nothing() {
    let sim = sim().await;
    let r = client()
        .get(format!("{}/api/user", sim.url))
        .basic_auth(ADMIN, Some("bad"))
        .header(ACCEPT, PUBLIC_ACCEPT)
        .header("Accept-Language", "zh-CN")
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["msg"], LOGIN_FAILED);
}

// ----- K4, K6: admin only -----

#[tokio::test]
async fn a_non_admin_gets_400_ke_010024001() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[ROLE_ANALYST]);
    let r = login_as(&sim, "ann", PW).await;
    assert_error(
        &r,
        400,
        "KE-010024001(No access):The user doesn't have access.",
        Some("KE-010024001"),
    );
}

#[tokio::test]
async fn authorities_are_reloaded_on_every_request_of_a_session() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[ROLE_ADMIN]);
    let c = cookie_client();
    let get = || {
        call(
            &c,
            &sim,
            Method::GET,
            "/api/user",
            None,
            Some(PUBLIC_ACCEPT),
            None,
        )
    };
    let r = call(
        &c,
        &sim,
        Method::GET,
        "/api/user",
        Some(("svc", PW)),
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    sim.set_authorities("svc", &[ROLE_MODELER]);
    assert_eq!(get().await.status, 400, "demoted within the session");
    sim.set_authorities("svc", &[ROLE_ADMIN]);
    assert_eq!(get().await.status, 200);
    sim.delete_user("svc");
    assert_eq!(
        get().await.status,
        400,
        "a deleted user's session is anonymous"
    );
}

// ----- K34, K35: create -----

#[tokio::test]
async fn create_sets_a_new_uuid_a_default_password_and_appends_all_users() {
    let sim = sim().await;
    let mut body = create_body("ann", &[ROLE_ANALYST]);
    body["defaultPassword"] = json!(false);
    ok_body(&admin(&sim, Method::POST, "/api/user", Some(body)).await);
    let u = sim.user("ann").expect("ann");
    assert_eq!(u.authorities, [ROLE_ANALYST, ALL_USERS]);
    assert!(u.default_password, "always true on create");
    assert_eq!(u.uuid.len(), 36);
    assert_ne!(u.uuid, sim.user(ADMIN).expect("admin").uuid);
    assert_eq!(u.create_time, T0);
    assert_eq!(
        login_as(&sim, "ann", PW).await.status,
        400,
        "logs in, no admin"
    );
}

#[tokio::test]
async fn create_rejects_a_duplicate_username_in_any_case_with_ke_010003004() {
    let sim = sim().await;
    ok_body(
        &admin(
            &sim,
            Method::POST,
            "/api/user",
            Some(create_body("test", &[ALL_USERS])),
        )
        .await,
    );
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body("TEST", &[ALL_USERS])),
    )
    .await;
    assert_error(
        &r,
        500,
        "KE-010003004(Duplicate User Name):Username:[test] already exists",
        Some("KE-010003004"),
    );
    assert_eq!(r.json()["url"], format!("{}/api/user", sim.url));
}

#[tokio::test]
async fn create_requires_disabled_and_reads_string_booleans() {
    let sim = sim().await;
    let mut body = create_body("ann", &[ALL_USERS]);
    body.as_object_mut().expect("object").remove("disabled");
    let r = admin(&sim, Method::POST, "/api/user", Some(body.clone())).await;
    assert_error(
        &r,
        500,
        "KE-010043201: Request parameter \"disabled\" is empty or value is empty. Please check the request parameters.",
        Some("KE-010043201"),
    );
    body["disabled"] = json!("TRUE");
    ok_body(&admin(&sim, Method::POST, "/api/user", Some(body.clone())).await);
    assert!(sim.user("ann").expect("ann").disabled);
    body["username"] = json!("bob");
    body["disabled"] = json!("yes");
    let r = admin(&sim, Method::POST, "/api/user", Some(body)).await;
    assert_eq!(r.json()["error_code"], "KE-010043209");
}

#[tokio::test]
async fn create_enforces_the_password_rule() {
    let sim = sim().await;
    let post = |pw: &str| {
        let mut b = create_body("ann", &[ALL_USERS]);
        b["password"] = json!(pw);
        admin(&sim, Method::POST, "/api/user", Some(b))
    };
    assert_error(
        &post("Sh0rt!").await,
        500,
        "KE-010005002(Short Password):The password should contain more than 8 characters!",
        Some("KE-010005002"),
    );
    let r = post("NoDigitsHere!").await;
    assert_eq!(r.json()["error_code"], "KE-010005001");
    let r = post("").await;
    assert_eq!(r.json()["error_code"], "KE-010043201");
    // A Base64 password is decoded first: this is "Passw0rd!".
    ok_body(&post("UGFzc3cwcmQh").await);
    assert_eq!(login_as(&sim, "ann", PW).await.status, 400);
}

#[tokio::test]
async fn create_requires_existing_non_repeated_groups() {
    let sim = sim().await;
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body("ann", &[])),
    )
    .await;
    assert_eq!(r.json()["error_code"], "KE-010043201");
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body("ann", &["NOPE"])),
    )
    .await;
    assert_error(
        &r,
        500,
        "KE-010043220: Can't find user group \"NOPE\". Please check and try again.",
        Some("KE-010043220"),
    );
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body("ann", &[ROLE_ANALYST, ROLE_ANALYST])),
    )
    .await;
    assert_eq!(r.json()["error_code"], "KE-010043221");
    assert!(sim.user("ann").is_none());
}

#[tokio::test]
async fn create_checks_the_username() {
    let sim = sim().await;
    for (name, code) in [
        ("", "KE-010003002"),
        (".dot", "KE-010003003"),
        (" pad", "KE-010003003"),
        ("a/b", "KE-010003003"),
        ("名字", "KE-010003003"),
    ] {
        let r = admin(
            &sim,
            Method::POST,
            "/api/user",
            Some(create_body(name, &[ALL_USERS])),
        )
        .await;
        assert_eq!(r.json()["error_code"], code, "{name:?}");
    }
    let long = "x".repeat(181);
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body(&long, &[ALL_USERS])),
    )
    .await;
    assert_eq!(r.json()["error_code"], "KE-010003003");
}

#[tokio::test]
async fn batch_create_is_one_create_after_another_not_atomic() {
    let sim = sim().await;
    let body = json!([
        create_body("a1", &[ALL_USERS]),
        create_body("ADMIN", &[ALL_USERS]),
        create_body("a3", &[ALL_USERS])
    ]);
    let r = admin(&sim, Method::POST, "/api/user/batch", Some(body)).await;
    assert_eq!(r.json()["error_code"], "KE-010003004");
    assert!(sim.user("a1").is_some() && sim.user("a3").is_none());
}

// ----- K36: update -----

#[tokio::test]
async fn a_put_replaces_authorities_keeps_uuid_and_create_time_and_bumps_last_modified() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[ROLE_ANALYST]);
    let before = sim.user("ann").expect("ann");
    sim.advance(Duration::from_secs(1));
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user",
        Some(json!({"username": "ann", "authorities": [ROLE_MODELER]})),
    )
    .await;
    ok_body(&r);
    let u = sim.user("ann").expect("ann");
    assert_eq!(u.authorities, [ROLE_MODELER, ALL_USERS]);
    assert_eq!(
        (u.uuid.as_str(), u.create_time),
        (before.uuid.as_str(), before.create_time)
    );
    assert_eq!(u.last_modified, T0 + 1000);
    assert_eq!(u.mvcc, 1);
}

#[tokio::test]
async fn a_put_that_changes_nothing_still_bumps_last_modified() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[]);
    let before = sim.user("ann").expect("ann");
    ok_body(
        &admin(
            &sim,
            Method::PUT,
            "/api/user",
            Some(json!({"username": "ANN"})),
        )
        .await,
    );
    let after = sim.user("ann").expect("ann");
    assert!(after.last_modified > before.last_modified);
    assert_eq!(
        KylinUserView::of(&after),
        KylinUserView::of(&before),
        "nothing else moved"
    );
}

/// The fields a PUT may not touch by itself.
#[derive(Debug, PartialEq)]
struct KylinUserView(String, Vec<String>, bool, bool, String, i64);

impl KylinUserView {
    fn of(u: &rollcall_sim::kylin::KylinUser) -> Self {
        KylinUserView(
            u.username.clone(),
            u.authorities.clone(),
            u.disabled,
            u.default_password,
            u.uuid.clone(),
            u.create_time,
        )
    }
}

#[tokio::test]
async fn a_put_does_not_reset_lock_counters_and_can_set_default_password_and_disabled() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    sim.lock("svc", 3);
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user",
        Some(json!({"username": "svc", "disabled": true, "defaultPassword": false})),
    )
    .await;
    ok_body(&r);
    let u = sim.user("svc").expect("svc");
    assert_eq!((u.locked, u.wrong_time), (true, 3));
    assert_eq!((u.disabled, u.default_password), (true, false));
}

#[tokio::test]
async fn a_put_password_is_an_admin_reset_that_keeps_default_password() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    ok_body(
        &admin(
            &sim,
            Method::PUT,
            "/api/user",
            Some(json!({"username": "svc", "password": "weak!"})),
        )
        .await,
    );
    let u = sim.user("svc").expect("svc");
    assert_eq!(
        (u.password.as_str(), u.default_password),
        ("weak!", true),
        "the rule applies only to non-default passwords"
    );
}

#[tokio::test]
async fn a_put_for_an_unknown_user_is_500_unknown_errorcode() {
    let sim = sim().await;
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user",
        Some(json!({"username": "ghost"})),
    )
    .await;
    assert_error(
        &r,
        500,
        "KE-000000001(UNKNOWN ERRORCODE): User 'ghost' not found.",
        None,
    );
    assert_eq!(r.json()["suggestion"], Value::Null);
}

#[tokio::test]
async fn an_admin_cannot_disable_themself_or_change_their_own_groups() {
    let sim = sim().await;
    sim.add_user("boss", PW, &[ROLE_ADMIN]);
    let put = |body| as_user(&sim, Method::PUT, "/api/user", ("boss", PW), Some(body));
    assert_error(
        &put(json!({"username": "boss", "disabled": true})).await,
        500,
        "KE-010003006(Failed Update User):Cannot disable yourself!",
        Some("KE-010003006"),
    );
    assert_error(
        &put(json!({"username": "boss", "authorities": [ROLE_ADMIN, ROLE_MODELER]})).await,
        500,
        "KE-010003006(Failed Update User):The object is invalid. Please check and try again.",
        Some("KE-010003006"),
    );
    ok_body(&put(json!({"username": "boss", "authorities": [ROLE_ADMIN]})).await);
}

#[tokio::test]
async fn only_admin_may_edit_admin_and_never_remove_its_role_admin() {
    let sim = sim().await;
    sim.add_user("boss", PW, &[ROLE_ADMIN]);
    let denied = "KE-010024002(Permission Denied):Can’t modify the permission of user “ADMIN”, as this user is a built-in admin by default.";
    let r = as_user(
        &sim,
        Method::PUT,
        "/api/user",
        ("boss", PW),
        Some(json!({"username": "ADMIN", "defaultPassword": false})),
    )
    .await;
    assert_error(&r, 500, denied, Some("KE-010024002"));
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user",
        Some(json!({"username": "ADMIN", "authorities": [ROLE_MODELER]})),
    )
    .await;
    // ADMIN changing its own groups trips the self-edit check first.
    assert_eq!(r.json()["error_code"], "KE-010003006");
    ok_body(
        &admin(
            &sim,
            Method::PUT,
            "/api/user",
            Some(json!({"username": "ADMIN", "defaultPassword": false})),
        )
        .await,
    );
    assert!(!sim.user(ADMIN).expect("admin").default_password);
}

#[tokio::test]
async fn the_legacy_disabled_authority_disables() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[ROLE_ANALYST]);
    ok_body(
        &admin(
            &sim,
            Method::PUT,
            "/api/user",
            Some(json!({"username": "ann", "authorities": ["--disabled--", ROLE_ANALYST]})),
        )
        .await,
    );
    let u = sim.user("ann").expect("ann");
    assert!(u.disabled);
    assert_eq!(u.authorities, [ROLE_ANALYST, ALL_USERS]);
}

// ----- K37: password -----

#[tokio::test]
async fn a_password_change_sets_default_password_false_and_clears_the_lock_counters() {
    let sim = sim().await;
    sim.add_user("svc", PW, &[]);
    sim.lock("svc", 5);
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user/password",
        Some(json!({"username": "svc", "new_password": "Fresh1!x"})),
    )
    .await;
    ok_body(&r);
    let u = sim.user("svc").expect("svc");
    assert_eq!(
        (
            u.default_password,
            u.locked,
            u.wrong_time,
            u.locked_time,
            u.first_login_failed_time
        ),
        (false, false, 0, 0, 0)
    );
    assert_eq!(sim.login("svc", "Fresh1!x"), LoginOutcome::Ok);
}

#[tokio::test]
async fn a_non_admin_may_change_only_their_own_password_and_must_give_the_old_one() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[ROLE_ANALYST]);
    sim.add_user("bob", PW, &[]);
    let put = |body| {
        as_user(
            &sim,
            Method::PUT,
            "/api/user/password",
            ("ann", PW),
            Some(body),
        )
    };
    assert_error(
        &put(json!({"username": "bob", "new_password": "Fresh1!x"})).await,
        500,
        "KE-010024002(Permission Denied):Permission denied!",
        Some("KE-010024002"),
    );
    let r = put(json!({"username": "ann", "new_password": "Fresh1!x"})).await;
    assert_eq!(
        r.json()["error_code"],
        "KE-010043201",
        "the old password is required"
    );
    assert_error(
        &put(json!({"username": "ann", "password": "wrong", "new_password": "Fresh1!x"})).await,
        500,
        "KE-010005003(Failed Update Password):Old password is not correct!",
        Some("KE-010005003"),
    );
    let r = put(json!({"username": "ann", "password": PW, "new_password": PW})).await;
    assert_eq!(
        r.json()["msg"],
        "KE-010005003(Failed Update Password):New password should not be same as old one!"
    );
    ok_body(&put(json!({"username": "ann", "password": PW, "new_password": "Fresh1!x"})).await);
    assert!(!sim.user("ann").expect("ann").default_password);
}

#[tokio::test]
async fn a_password_change_for_an_unknown_user_is_500_unknown_errorcode() {
    let sim = sim().await;
    let r = admin(
        &sim,
        Method::PUT,
        "/api/user/password",
        Some(json!({"username": "ghost", "new_password": "Fresh1!x"})),
    )
    .await;
    assert_error(
        &r,
        500,
        "KE-000000001(UNKNOWN ERRORCODE): User 'ghost' not found.",
        None,
    );
}

// ----- K38, K45, K46: delete -----

#[tokio::test]
async fn delete_works_by_path_by_body_and_in_batch() {
    let sim = sim().await;
    for n in ["a", "b", "c", "d"] {
        sim.add_user(n, PW, &[]);
    }
    ok_body(&admin(&sim, Method::DELETE, "/api/user/A", None).await);
    ok_body(
        &admin(
            &sim,
            Method::DELETE,
            "/api/user",
            Some(json!({"username": "b"})),
        )
        .await,
    );
    ok_body(
        &admin(
            &sim,
            Method::DELETE,
            "/api/user/batch",
            Some(json!(["c", "d"])),
        )
        .await,
    );
    assert_eq!(sim.user_count(), 1);
}

#[tokio::test]
async fn deleting_an_unknown_user_is_ke_010003001() {
    let sim = sim().await;
    let r = admin(&sim, Method::DELETE, "/api/user/ghost", None).await;
    assert_error(
        &r,
        500,
        "KE-010003001(User Not Exist):User 'ghost' not found.",
        Some("KE-010003001"),
    );
    sim.add_user("a", PW, &[]);
    let r = admin(
        &sim,
        Method::DELETE,
        "/api/user/batch",
        Some(json!(["a", "x", "y"])),
    )
    .await;
    assert_eq!(
        r.json()["msg"],
        "KE-010003001(User Not Exist):User 'x,y' not found."
    );
    assert!(
        sim.user("a").is_some(),
        "batch names are all validated first"
    );
}

#[tokio::test]
async fn nobody_may_delete_admin_or_themself() {
    let sim = sim().await;
    sim.add_user("boss", PW, &[ROLE_ADMIN]);
    sim.add_user("a", PW, &[]);
    let r = admin(&sim, Method::DELETE, "/api/user/ADMIN", None).await;
    assert_eq!(
        r.json()["msg"],
        "KE-010003006(Failed Update User):Cannot delete yourself!"
    );
    let r = as_user(&sim, Method::DELETE, "/api/user/ADMIN", ("boss", PW), None).await;
    assert_eq!(r.json()["error_code"], "KE-010024002");
    // Batch: names before ADMIN are already gone when ADMIN is refused.
    let r = as_user(
        &sim,
        Method::DELETE,
        "/api/user/batch",
        ("boss", PW),
        Some(json!(["a", "ADMIN"])),
    )
    .await;
    assert_eq!(r.json()["error_code"], "KE-010024002");
    assert!(sim.user("a").is_none() && sim.user(ADMIN).is_some());
}

#[tokio::test]
async fn a_deleted_and_recreated_user_has_a_new_uuid_and_create_time() {
    let sim = sim().await;
    let first = sim.add_user("ann", PW, &[]);
    ok_body(&admin(&sim, Method::DELETE, "/api/user/ann", None).await);
    assert!(
        list(&sim, "?name=ann").await.names().is_empty(),
        "no tombstone"
    );
    sim.advance(Duration::from_secs(1));
    ok_body(
        &admin(
            &sim,
            Method::POST,
            "/api/user",
            Some(create_body("ann", &[ALL_USERS])),
        )
        .await,
    );
    let u = sim.user("ann").expect("ann");
    assert_ne!(u.uuid, first);
    assert_eq!(u.create_time, T0 + 1000);
}

#[tokio::test]
async fn the_internal_delete_path_takes_a_uuid() {
    let sim = sim().await;
    let uuid = sim.add_user("ann", PW, &[]);
    let r = call(
        &client(),
        &sim,
        Method::DELETE,
        &format!("/api/user/{uuid}"),
        Some((ADMIN, ADMIN_PASSWORD)),
        Some(INTERNAL_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(sim.user("ann").is_none());
}

// ----- K17, K39: groups -----

#[tokio::test]
async fn moving_users_in_and_out_of_a_group_changes_their_authorities() {
    let sim = sim().await;
    for n in ["a", "b", "c"] {
        sim.add_user(n, PW, &[]);
    }
    ok_body_msg(
        &admin(&sim, Method::POST, "/api/user_group/SALES", None).await,
        "add user group",
    );
    let put = |users: Value| {
        admin(
            &sim,
            Method::PUT,
            "/api/user_group/users",
            Some(json!({"group_name": "SALES", "users": users})),
        )
    };
    ok_body_msg(&put(json!(["a", "b"])).await, "modify users in user group");
    assert_eq!(sim.user("a").expect("a").authorities, [ALL_USERS, "SALES"]);
    let b_before = sim.user("b").expect("b");
    let c_before = sim.user("c").expect("c");
    ok_body_msg(&put(json!(["a", "c"])).await, "modify users in user group");
    assert_eq!(sim.user("b").expect("b").authorities, [ALL_USERS]);
    assert!(sim.user("b").expect("b").last_modified > b_before.last_modified);
    assert!(sim.user("c").expect("c").last_modified > c_before.last_modified);
    let r = put(json!(["ADMIN"])).await;
    assert_eq!(r.json()["msg"], "KE-010024002(Permission Denied):You cannot add,modify or remove the system administrator’s rights");
}

fn ok_body_msg(r: &Resp, msg: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"code": "000", "data": "", "msg": msg}));
}

#[tokio::test]
async fn deleting_a_group_removes_it_from_its_members() {
    let sim = sim().await;
    sim.add_user("a", PW, &[ROLE_MODELER]);
    ok_body_msg(
        &admin(&sim, Method::DELETE, "/api/user_group/role_modeler", None).await,
        "del user group",
    );
    assert_eq!(sim.user("a").expect("a").authorities, [ALL_USERS]);
    let r = admin(&sim, Method::DELETE, "/api/user_group/ALL_USERS", None).await;
    assert_eq!(r.json()["error_code"], "KE-010004003");
    let r = admin(
        &sim,
        Method::POST,
        "/api/user",
        Some(create_body("b", &[ROLE_MODELER])),
    )
    .await;
    assert_eq!(r.json()["error_code"], "KE-010043220", "the group is gone");
}

#[tokio::test]
async fn group_members_are_listed_in_the_public_user_shape() {
    let sim = sim().await;
    sim.add_user("ann", PW, &[ROLE_ANALYST]);
    sim.add_user("bob", PW, &[]);
    let r = admin(
        &sim,
        Method::GET,
        "/api/user_group/group_members/ROLE_ANALYST",
        None,
    )
    .await;
    assert_eq!(r.names(), ["ann"]);
    assert_eq!(r.json()["data"]["value"][0]["default_password"], true);
    assert_eq!(r.json()["data"]["total_size"], 1);
}

// ----- faults -----

#[tokio::test]
async fn fault_html_answers_a_page_instead_of_json() {
    let sim = sim().await;
    sim.inject(Fault {
        path_contains: "/api/user".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Html,
    });
    let r = list(&sim, "").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/html"));
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    assert_eq!(list(&sim, "").await.names(), [ADMIN], "once only");
}

#[tokio::test]
async fn fault_empty_answers_200_with_no_body() {
    let sim = sim().await;
    sim.inject(Fault {
        path_contains: String::new(),
        skip: 0,
        times: 1,
        kind: FaultKind::Empty,
    });
    let r = list(&sim, "").await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
}

#[tokio::test]
async fn fault_status_answers_that_status_then_recovers_and_skip_counts_requests() {
    let sim = sim().await;
    sim.inject(Fault {
        path_contains: String::new(),
        skip: 1,
        times: 2,
        kind: FaultKind::Status(503),
    });
    let statuses = [
        list(&sim, "").await.status,
        list(&sim, "").await.status,
        list(&sim, "").await.status,
        list(&sim, "").await.status,
    ];
    assert_eq!(statuses, [200, 503, 503, 200]);
    assert_eq!(sim.user(ADMIN).expect("admin").wrong_time, 0);
}

#[tokio::test]
async fn fault_hang_never_answers() {
    let sim = sim().await;
    sim.inject(Fault {
        path_contains: String::new(),
        skip: 0,
        times: 1,
        kind: FaultKind::Hang,
    });
    let c = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = c
        .get(format!("{}/api/user", sim.url))
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .header(ACCEPT, PUBLIC_ACCEPT)
        .send()
        .await
        .expect_err("hangs");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(sim.requests()[0].status, 0);
    assert_eq!(list(&sim, "").await.status, 200);
}

#[tokio::test]
async fn fault_insert_user_shifts_the_next_page_under_a_paging_reader() {
    let sim = sim().await;
    sim.add_users(4); // ADMIN, user000001 … user000004
    sim.inject(Fault {
        path_contains: "page_offset=1".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::InsertUser("aaa".into()),
    });
    let p0 = list(&sim, "?page_offset=0&page_size=3").await.names();
    let p1 = list(&sim, "?page_offset=1&page_size=3").await.names();
    assert_eq!(p0, ["ADMIN", "user000001", "user000002"]);
    // "aaa" sorts first: user000002 is served twice and the reader never sees "aaa".
    assert_eq!(p1, ["user000002", "user000003", "user000004"]);
    assert!(sim.user("aaa").is_some());
}

#[tokio::test]
async fn a_change_before_a_request_is_made_just_before_that_request_is_answered() {
    let sim = sim().await;
    sim.add_users(4); // ADMIN, user000001 … user000004
                      // Counted among the list requests only: the second one (page 1) sees the change, the first
                      // does not, and the handle the change gets reads the state back.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    sim.before_request("page_offset", 1, move |s| {
        assert!(s.delete_user("user000001"));
        s.add_user("zz_new", PW, &[]);
        s.lock("user000003", 3);
        *record.lock().unwrap() = s.users().into_iter().map(|u| u.username).collect();
    });
    assert_eq!(
        list(&sim, "").await.status,
        200,
        "not counted: no page_offset"
    );
    let p0 = list(&sim, "?page_offset=0&page_size=3").await.names();
    assert!(seen.lock().unwrap().is_empty(), "not made before page 0");
    let p1 = list(&sim, "?page_offset=1&page_size=3").await.names();
    assert_eq!(p0, ["ADMIN", "user000001", "user000002"]);
    // user000001 went and zz_new came last: user000003 slid onto page 0, already read.
    assert_eq!(p1, ["user000004", "zz_new"]);
    assert_eq!(
        *seen.lock().unwrap(),
        ["ADMIN", "user000002", "user000003", "user000004", "zz_new"]
    );
    assert!(sim.user("user000003").unwrap().locked);
    assert_eq!(sim.cancel_changes(), 0, "made once, then gone");
}

#[tokio::test]
async fn changes_due_at_one_request_are_made_in_order_and_those_never_due_can_be_cancelled() {
    let sim = sim().await;
    sim.before_request("", 0, |s| {
        s.add_user("first", PW, &[]);
    });
    sim.before_request("", 0, |s| {
        assert!(s.user("first").is_some(), "made after the first");
        s.set_disabled("first", true);
    });
    sim.before_request("", 5, |s| {
        s.delete_user("first");
    });
    assert_eq!(list(&sim, "").await.names(), ["ADMIN", "first"]);
    assert!(sim.user("first").unwrap().disabled);
    assert_eq!(sim.cancel_changes(), 1);
    for _ in 0..6 {
        list(&sim, "").await;
    }
    assert!(
        sim.user("first").is_some(),
        "the cancelled change was never made"
    );
}

#[tokio::test]
async fn fault_delay_answers_normally_after_the_delay() {
    let sim = sim().await;
    sim.inject(Fault {
        path_contains: String::new(),
        skip: 0,
        times: 1,
        kind: FaultKind::Delay(Duration::from_millis(50)),
    });
    let start = Instant::now();
    assert_eq!(list(&sim, "").await.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(50));
}

// ----- test-side API -----

#[tokio::test]
async fn requests_are_recorded_with_basic_auth_session_cookie_and_accept() {
    let sim = sim().await;
    let c = cookie_client();
    call(
        &c,
        &sim,
        Method::GET,
        "/api/user?page_size=5",
        Some((ADMIN, ADMIN_PASSWORD)),
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    call(&c, &sim, Method::GET, "/api/user", None, None, None).await;
    let r = sim.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("GET", "/kylin/api/user?page_size=5")
    );
    assert!(r[0].basic_auth && !r[0].session_cookie);
    assert_eq!(r[0].basic_user.as_deref(), Some(ADMIN));
    assert_eq!(r[0].accept.as_deref(), Some(PUBLIC_ACCEPT));
    assert_eq!(r[0].status, 200);
    assert!(!r[1].basic_auth && r[1].session_cookie);
    // reqwest sends `Accept: */*` unless told otherwise, which Kylin cannot serve (K54).
    assert_eq!(r[1].accept.as_deref(), Some("*/*"));
    assert_eq!(r[1].status, 500);
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn the_clock_moves_only_when_advanced() {
    let sim = sim().await;
    assert_eq!(sim.now_ms(), T0);
    sim.advance(Duration::from_millis(1500));
    assert_eq!(sim.now_ms(), T0 + 1500);
}

#[tokio::test]
async fn seeding_100k_users_and_listing_them_in_one_page_answers_every_one() {
    // How fast is the benchmarks' business (benches/kylin.rs); this checks the answer only.
    let sim = sim().await;
    sim.add_users(100_000);
    assert_eq!(sim.user_count(), 100_001);
    let r = list(&sim, "?page_size=100000").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["data"]["value"].as_array().expect("value").len(), 100_000);
    assert_eq!(v["data"]["total_size"], 100_001);
}

#[tokio::test]
async fn an_unknown_api_path_is_404_after_authentication() {
    let sim = sim().await;
    let r = call(
        &client(),
        &sim,
        Method::GET,
        "/api/nothing",
        None,
        Some(PUBLIC_ACCEPT),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = admin(&sim, Method::GET, "/api/nothing", None).await;
    assert_eq!(r.status, 404);
    let r = admin(&sim, Method::PATCH, "/api/user", None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn seeded_users_can_log_in_with_the_seeded_password() {
    let sim = sim().await;
    sim.add_users(1);
    assert_eq!(sim.login("user000001", SEEDED_PASSWORD), LoginOutcome::Ok);
    assert_eq!(
        sim.user("USER000001").expect("any case").username,
        "user000001"
    );
}
