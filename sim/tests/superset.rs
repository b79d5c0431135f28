//! Tests of the Superset 6.1.0 simulator itself (`sim/src/superset.rs`): each checks one fact
//! of docs/superset.md, and `fixtures_replay_with_same_status_and_shape` replays the captured real
//! responses in the repository's `tests/fixtures/superset/` against a seeded simulator. They
//! drive the simulator over HTTP as a client would and never touch rollcall (whose tests against
//! the simulator are in the repository's `tests/`), so they build with this crate alone.

use std::time::{Duration, Instant};

use rollcall_sim::superset::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct Resp {
    status: u16,
    content_type: String,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn send(
    sim: &Sim,
    method: &str,
    path: impl AsRef<str>,
    q: Option<&str>,
    auth: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut url = url::Url::parse(&format!("{}{}", sim.url, path.as_ref())).unwrap();
    if let Some(q) = q {
        url.query_pairs_mut().append_pair("q", q);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client
        .request(method.parse().unwrap(), url)
        .header("Accept", "application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap_or_default();
    Resp {
        status,
        content_type,
        text,
    }
}

async fn login_tokens(sim: &Sim, user: &str, pw: &str) -> Value {
    let r = send(
        sim,
        "POST",
        "/api/v1/security/login",
        None,
        None,
        Some(json!({"username": user, "password": pw, "provider": "db", "refresh": true})),
    )
    .await;
    assert_eq!(r.status, 200, "login {user}: {}", r.text);
    r.json()
}

async fn bearer(sim: &Sim, user: &str, pw: &str) -> String {
    let t = login_tokens(sim, user, pw).await;
    format!("Bearer {}", t["access_token"].as_str().unwrap())
}

async fn admin(sim: &Sim) -> String {
    bearer(sim, "admin", "admin").await
}

async fn users(sim: &Sim, auth: &str, q: &str) -> Resp {
    send(
        sim,
        "GET",
        "/api/v1/security/users/",
        Some(q),
        Some(auth),
        None,
    )
    .await
}

async fn list_ids(sim: &Sim, auth: &str, q: &str) -> Vec<u64> {
    let r = users(sim, auth, q).await;
    assert_eq!(r.status, 200, "{q}: {}", r.text);
    let v = r.json();
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

async fn get_user(sim: &Sim, auth: &str, id: u64) -> Value {
    let r = send(
        sim,
        "GET",
        &format!("/api/v1/security/users/{id}"),
        None,
        Some(auth),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["result"].clone()
}

fn jwt_payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn seeded() -> (Sim, String) {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_user("alice", "pw-alice", &[4]);
    sim.add_user("bob", "pw-bob", &[3]);
    sim.add_user("carol", "pw-carol", &[4]);
    let auth = admin(&sim).await;
    (sim, auth)
}

// ---------------------------------------------------------------------------------------------
// Health, login, tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_answers_ok_as_html() {
    let sim = Sim::start(SimOptions::default()).await;
    let r = send(&sim, "GET", "/health", None, None, None).await;
    assert_eq!((r.status, r.text.as_str()), (200, "OK"));
    assert!(r.content_type.starts_with("text/html"));
}

#[tokio::test]
async fn login_returns_tokens_and_moves_the_callers_own_counters() {
    let sim = Sim::start(SimOptions::default()).await;
    let before = sim.user(1).unwrap();
    assert_eq!((before.login_count, before.last_login), (None, None));
    let t = login_tokens(&sim, "admin", "admin").await;
    assert!(t["access_token"].is_string() && t["refresh_token"].is_string());
    let after = sim.user(1).unwrap();
    assert_eq!(after.login_count, Some(1));
    assert_eq!(after.fail_login_count, Some(0));
    assert!(after.last_login.is_some());
    assert_eq!(
        after.changed_on, before.changed_on,
        "logins never touch changed_on"
    );
}

#[tokio::test]
async fn login_without_refresh_flag_returns_only_access_token() {
    let sim = Sim::start(SimOptions::default()).await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/login",
        None,
        None,
        Some(json!({"username": "admin", "password": "admin", "provider": "db"})),
    )
    .await;
    assert_eq!(r.status, 200);
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["access_token"]);
}

#[tokio::test]
async fn login_without_provider_is_a_500() {
    let sim = Sim::start(SimOptions::default()).await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/login",
        None,
        None,
        Some(json!({"username": "admin", "password": "admin"})),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json(), json!({"message": "Fatal error"}));
}

#[tokio::test]
async fn failed_logins_are_401_and_count_only_for_active_users() {
    let sim = Sim::start(SimOptions::default()).await;
    let bob = sim.add_user("bob", "pw", &[4]);
    let alice = sim.add_user("alice", "pw", &[4]);
    sim.update_user(alice, |u| u.active = false);
    for (u, p) in [("bob", "wrong"), ("nosuch", "x"), ("alice", "pw")] {
        let r = send(
            &sim,
            "POST",
            "/api/v1/security/login",
            None,
            None,
            Some(json!({"username": u, "password": p, "provider": "db", "refresh": true})),
        )
        .await;
        assert_eq!(r.status, 401, "{u}");
        assert_eq!(r.json(), json!({"message": "Not authorized"}));
    }
    let b = sim.user(bob).unwrap();
    assert_eq!(
        (b.login_count, b.fail_login_count, b.last_login),
        (Some(0), Some(1), None)
    );
    let a = sim.user(alice).unwrap();
    assert_eq!((a.login_count, a.fail_login_count), (None, None));
    // A success resets the fail counter.
    assert!(sim.login("bob", "pw"));
    let b = sim.user(bob).unwrap();
    assert_eq!((b.login_count, b.fail_login_count), (Some(1), Some(0)));
    assert!(!sim.login("alice", "pw"));
}

#[tokio::test]
async fn jwt_claims_look_like_flask_jwt_extended() {
    let sim = Sim::start(SimOptions::default()).await;
    let t = login_tokens(&sim, "admin", "admin").await;
    let a = jwt_payload(t["access_token"].as_str().unwrap());
    assert_eq!(a["sub"], json!("1"));
    assert_eq!(a["type"], json!("access"));
    assert_eq!(a["fresh"], json!(true));
    assert_eq!(a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(), 900);
    for k in ["jti", "csrf", "nbf"] {
        assert!(!a[k].is_null(), "{k}");
    }
    let r = jwt_payload(t["refresh_token"].as_str().unwrap());
    assert_eq!(r["type"], json!("refresh"));
    assert_eq!(
        r["exp"].as_i64().unwrap() - r["iat"].as_i64().unwrap(),
        2_592_000
    );
}

#[tokio::test]
async fn jwt_errors_use_msg_key_and_json_without_charset() {
    let sim = Sim::start(SimOptions::default()).await;
    let t = login_tokens(&sim, "admin", "admin").await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let mut tampered = access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        (None, 401, "Missing Authorization Header".to_string()),
        (
            Some(format!("Token {access}")),
            401,
            "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'"
                .to_string(),
        ),
        (Some("Bearer garbage".into()), 422, "Not enough segments".into()),
        (
            Some(format!("Bearer {tampered}")),
            422,
            "Signature verification failed".into(),
        ),
        (
            Some(format!("Bearer {refresh}")),
            422,
            "Only non-refresh tokens are allowed".into(),
        ),
    ];
    for (auth, status, msg) in cases {
        let r = send(
            &sim,
            "GET",
            "/api/v1/security/users/",
            Some("(page_size:1)"),
            auth.as_deref(),
            None,
        )
        .await;
        assert_eq!(r.status, status, "{msg}");
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.json(), json!({ "msg": msg }));
    }
}

#[tokio::test]
async fn expired_access_token_is_401_and_refresh_token_still_works() {
    let sim = Sim::start(SimOptions {
        access_ttl: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    let t = login_tokens(&sim, "admin", "admin").await;
    let access = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let refresh = format!("Bearer {}", t["refresh_token"].as_str().unwrap());
    assert_eq!(users(&sim, &access, "(page_size:1)").await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = users(&sim, &access, "(page_size:1)").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"msg": "Token has expired"}));
    // The refresh token is reusable.
    for _ in 0..2 {
        let r = send(
            &sim,
            "POST",
            "/api/v1/security/refresh",
            None,
            Some(&refresh),
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v.as_object().unwrap().len(), 1);
        let fresh = format!("Bearer {}", v["access_token"].as_str().unwrap());
        assert_eq!(users(&sim, &fresh, "(page_size:1)").await.status, 200);
    }
    // Refreshing does not count as a login.
    assert_eq!(sim.user(1).unwrap().login_count, Some(1));
}

#[tokio::test]
async fn refresh_with_access_token_is_422() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/refresh",
        None,
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json(), json!({"msg": "Only refresh tokens are allowed"}));
}

#[tokio::test]
async fn only_admins_may_use_security_and_log_endpoints() {
    let (sim, _) = seeded().await;
    for (user, pw) in [("alice", "pw-alice"), ("bob", "pw-bob")] {
        let auth = bearer(&sim, user, pw).await;
        for path in [
            "/api/v1/security/users/",
            "/api/v1/security/roles/",
            "/api/v1/security/groups/",
            "/api/v1/log/",
        ] {
            let r = send(&sim, "GET", path, None, Some(&auth), None).await;
            assert_eq!(r.status, 403, "{user} {path}");
            assert_eq!(r.json(), json!({"message": "Forbidden"}));
        }
        // /me/ is open to every authenticated user.
        let r = send(&sim, "GET", "/api/v1/me/", None, Some(&auth), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["result"]["username"], json!(user));
    }
}

// ---------------------------------------------------------------------------------------------
// Users list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_list_has_flask_appbuilder_keys_and_utf8_json() {
    let (sim, auth) = seeded().await;
    let r = users(
        &sim,
        &auth,
        "(order_column:id,order_direction:asc,page:0,page_size:100)",
    )
    .await;
    assert_eq!(r.content_type, "application/json; charset=utf-8");
    let v = r.json();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "count",
            "description_columns",
            "ids",
            "label_columns",
            "list_columns",
            "list_title",
            "order_columns",
            "result"
        ]
    );
    assert_eq!(v["count"], json!(4));
    let admin = &v["result"][0];
    assert_eq!(admin["created_by"], Value::Null);
    assert_eq!(admin["roles"], json!([{"id": 1, "name": "Admin"}]));
    let alice = &v["result"][1];
    assert_eq!(alice["created_by"], json!({"id": 1}));
    assert_eq!(alice["login_count"], Value::Null);
    assert_eq!(alice["fail_login_count"], Value::Null);
    assert_eq!(alice["last_login"], Value::Null);
    assert_eq!(alice["email"], json!("alice@example.com"));
    assert!(alice.get("password").is_none());
}

#[tokio::test]
async fn keys_none_trims_to_count_ids_result_and_other_keys_are_400() {
    let (sim, auth) = seeded().await;
    let v = users(&sim, &auth, "(keys:!(none),page_size:2)")
        .await
        .json();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["count", "ids", "result"]);
    assert_eq!(v["count"], json!(4));
    let r = users(&sim, &auth, "(keys:!(result,count))").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn columns_select_fields() {
    let (sim, auth) = seeded().await;
    let v = users(
        &sim,
        &auth,
        "(columns:!(id,username,changed_on,active),order_column:id)",
    )
    .await
    .json();
    let keys: Vec<&String> = v["result"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["active", "changed_on", "id", "username"]);
    assert_eq!(
        v["list_columns"],
        json!(["id", "username", "changed_on", "active"])
    );
    assert_eq!(
        v["order_columns"],
        json!(["id", "username", "active", "changed_on"])
    );
}

#[tokio::test]
async fn page_size_is_clamped_to_100_and_defaults_to_20() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(250, &[4]);
    let auth = admin(&sim).await;
    for (q, n) in [
        ("(page_size:500)", 100),
        ("(page_size:-1)", 100),
        ("(page_size:0)", 20),
        ("(order_column:id)", 20),
        ("(page_size:7)", 7),
    ] {
        let v = users(&sim, &auth, q).await.json();
        assert_eq!(v["result"].as_array().unwrap().len(), n, "{q}");
        assert_eq!(v["count"], json!(251), "{q}");
    }
    let r = send(
        &sim,
        "GET",
        "/api/v1/security/users/",
        None,
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.json()["ids"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn page_past_the_end_is_empty_with_total_count() {
    let (sim, auth) = seeded().await;
    let v = users(
        &sim,
        &auth,
        "(order_column:id,order_direction:asc,page:5,page_size:100)",
    )
    .await
    .json();
    assert_eq!(v["count"], json!(4));
    assert_eq!(v["result"], json!([]));
    assert_eq!(v["ids"], json!([]));
}

#[tokio::test]
async fn bad_order_column_filter_column_and_rison_are_400() {
    let (sim, auth) = seeded().await;
    for (q, msg) in [
        (
            "(order_column:nosuch,order_direction:asc)",
            "Invalid order by column: nosuch",
        ),
        (
            "(filters:!((col:nosuch,opr:eq,value:1)))",
            "Filter column: nosuch not allowed to filter",
        ),
        (
            "(filters:!((col:created_by,opr:eq,value:1)))",
            "Filter column: created_by not allowed to filter",
        ),
        ("not-rison((", "Not a valid rison/json argument"),
    ] {
        let r = users(&sim, &auth, q).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json(), json!({ "message": msg }));
    }
}

#[tokio::test]
async fn unknown_filter_operator_is_ignored() {
    let (sim, auth) = seeded().await;
    assert_eq!(
        list_ids(&sim, &auth, "(filters:!((col:id,opr:nosuch,value:1)))").await,
        [1, 2, 3, 4]
    );
    // A real operator of another column type is unknown for this one.
    assert_eq!(
        list_ids(&sim, &auth, "(filters:!((col:active,opr:gt,value:1)))").await,
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn filters_combine_with_and_for_every_column_type() {
    let (sim, auth) = seeded().await;
    sim.update_user(2, |u| u.active = false);
    assert!(!sim.login("bob", "wrong"));
    let g = sim.add_group("analysts", &[4]);
    for (q, ids) in [
        ("(filters:!((col:username,opr:eq,value:bob)))", vec![3]),
        ("(filters:!((col:username,opr:sw,value:AL)))", vec![2]),
        ("(filters:!((col:email,opr:ct,value:OL)))", vec![4]),
        (
            "(filters:!((col:username,opr:in,value:!(bob,carol))))",
            vec![3, 4],
        ),
        ("(filters:!((col:active,opr:eq,value:!f)))", vec![2]),
        ("(filters:!((col:active,opr:eq,value:!t)))", vec![1, 3, 4]),
        ("(filters:!((col:id,opr:in,value:!(2,3))))", vec![2, 3]),
        ("(filters:!((col:id,opr:not_in,value:!(2,3))))", vec![1, 4]),
        (
            "(filters:!((col:id,opr:gt,value:2)),order_column:id,order_direction:asc)",
            vec![3, 4],
        ),
        ("(filters:!((col:roles,opr:rel_m_m,value:4)))", vec![2, 4]),
        (
            &format!("(filters:!((col:groups,opr:rel_m_m,value:{g})))"),
            vec![4],
        ),
        (
            "(filters:!((col:fail_login_count,opr:gt,value:0)))",
            vec![3],
        ),
        // NULL never matches, not even neq.
        ("(filters:!((col:login_count,opr:neq,value:5)))", vec![1, 3]),
        (
            "(filters:!((col:id,opr:gt,value:1),(col:roles,opr:rel_m_m,value:4)))",
            vec![2, 4],
        ),
    ] {
        assert_eq!(list_ids(&sim, &auth, q).await, ids, "{q}");
    }
}

#[tokio::test]
async fn datetime_filters_accept_z_and_offset_and_drop_unparsable_dates() {
    let (sim, auth) = seeded().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cut = get_user(&sim, &auth, 4).await["changed_on"]
        .as_str()
        .unwrap()
        .to_string();
    sim.update_user(2, |u| u.first_name = "Alicia".into());
    let base = &cut[..19]; // whole seconds
    let exact = list_ids(
        &sim,
        &auth,
        &format!("(filters:!((col:changed_on,opr:gt,value:'{cut}')))"),
    )
    .await;
    assert_eq!(exact, [2]);
    let plain = list_ids(
        &sim,
        &auth,
        &format!("(filters:!((col:changed_on,opr:gt,value:'{base}')))"),
    )
    .await;
    for v in [
        format!("{base}Z"),
        format!("{base}+00:00"),
        format!("{base}.000000"),
    ] {
        let ids = list_ids(
            &sim,
            &auth,
            &format!("(filters:!((col:changed_on,opr:gt,value:'{v}')))"),
        )
        .await;
        assert_eq!(ids, plain, "{v}");
    }
    let all = list_ids(
        &sim,
        &auth,
        "(filters:!((col:changed_on,opr:gt,value:'not-a-date')))",
    )
    .await;
    assert_eq!(all, [1, 2, 3, 4]);
    assert!(
        list_ids(
            &sim,
            &auth,
            "(filters:!((col:last_login,opr:gt,value:'2000-01-01T00:00:00')))"
        )
        .await
            == [1]
    );
}

#[tokio::test]
async fn ordering_by_changed_on_desc() {
    let (sim, auth) = seeded().await;
    sim.update_user(3, |u| u.last_name = "X".into());
    sim.update_user(2, |u| u.last_name = "Y".into());
    let ids = list_ids(
        &sim,
        &auth,
        "(order_column:changed_on,order_direction:desc)",
    )
    .await;
    assert_eq!(ids, [2, 3, 4, 1]);
    let ids = list_ids(&sim, &auth, "(order_column:username,order_direction:asc)").await;
    assert_eq!(ids, [1, 2, 3, 4]);
}

#[tokio::test]
async fn user_timestamps_are_server_local_naive_with_microseconds() {
    let sim = Sim::start(SimOptions {
        utc_offset_minutes: 330,
        ..SimOptions::default()
    })
    .await;
    let auth = admin(&sim).await;
    let id = sim.add_user("tz", "pw", &[4]);
    let u = get_user(&sim, &auth, id).await;
    let s = u["created_on"].as_str().unwrap();
    assert_eq!(s.len(), 26, "{s}");
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6f").unwrap();
    let skew = t - chrono::Utc::now().naive_utc();
    assert!(
        (skew - chrono::TimeDelta::minutes(330)).num_seconds().abs() < 5,
        "{skew}"
    );
}

#[tokio::test]
async fn a_keyset_page_of_100k_users_counts_and_starts_past_the_key() {
    // How fast is the benchmarks' business (benches/scale.rs); this checks the answer only.
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(100_000, &[4]);
    assert_eq!(sim.user(100_001).unwrap().username, "user100000");
    let auth = admin(&sim).await;
    let v = users(
        &sim,
        &auth,
        "(filters:!((col:id,opr:gt,value:50000)),order_column:id,order_direction:asc,page_size:100)",
    )
    .await
    .json();
    assert_eq!(v["count"], json!(50_001));
    assert_eq!(v["ids"][0], json!(50_001));
    assert_eq!(v["ids"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn an_id_range_list_answers_as_the_scan_of_every_user_does() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(300, &[4]);
    for id in [5, 120, 121, 260] {
        assert!(sim.delete_user(id));
    }
    let auth = admin(&sim).await;
    for range in [
        "(col:id,opr:gt,value:10),(col:id,opr:lt,value:250)",
        "(col:id,opr:gt,value:100)",
        "(col:id,opr:lt,value:200),(col:id,opr:gt,value:50),(col:id,opr:gt,value:20)",
        "(col:id,opr:gt,value:250),(col:id,opr:lt,value:100)",
    ] {
        for page in 0..3 {
            // `active` matches every user, and takes the list off the id-range path.
            let q = |extra: &str| {
                format!("(filters:!({range}{extra}),order_column:id,order_direction:asc,page:{page},page_size:100)")
            };
            let ranged = users(&sim, &auth, &q("")).await.json();
            let scanned = users(&sim, &auth, &q(",(col:active,opr:eq,value:!t)"))
                .await
                .json();
            assert_eq!(ranged["count"], scanned["count"], "{range} page {page}");
            assert_eq!(ranged["ids"], scanned["ids"], "{range} page {page}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users writes
// ---------------------------------------------------------------------------------------------

fn new_user(name: &str) -> Value {
    json!({"first_name": "N", "last_name": "U", "username": name, "email": format!("{name}@example.com"),
           "active": true, "password": "pw", "roles": [4]})
}

#[tokio::test]
async fn user_create_returns_201_with_only_the_id() {
    let (sim, auth) = seeded().await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/users/",
        None,
        Some(&auth),
        Some(new_user("dave")),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), json!({"id": 5}));
    let u = sim.user(5).unwrap();
    assert_eq!(
        (u.created_by, u.changed_by, u.login_count),
        (Some(1), Some(1), None)
    );
}

#[tokio::test]
async fn user_create_validation_errors_match_superset() {
    let (sim, auth) = seeded().await;
    let mut objects = new_user("x1");
    objects["roles"] = json!([{"id": 4}]);
    let mut unknown_role = new_user("x2");
    unknown_role["roles"] = json!([9999]);
    let mut empty = new_user("x3");
    empty["roles"] = json!([]);
    let mut nopw = new_user("x4");
    nopw.as_object_mut().unwrap().remove("password");
    let mut extra = new_user("x5");
    extra["nosuch"] = json!(1);
    let mut dup_email = new_user("x6");
    dup_email["email"] = json!("alice@example.com");
    let cases = [
        (
            objects,
            400,
            json!({"message": {"roles": {"0": ["Not a valid integer."]}}}),
        ),
        (
            unknown_role,
            400,
            json!({"message": {"roles": ["Role(s) with ID(s) [9999] not found."]}}),
        ),
        (
            empty,
            400,
            json!({"message": {"_schema": ["At least one of 'roles' or 'groups' must be provided and non-empty."]}}),
        ),
        (
            nopw,
            400,
            json!({"message": {"password": ["Missing data for required field."]}}),
        ),
        (
            extra,
            400,
            json!({"message": {"nosuch": ["Unknown field."]}}),
        ),
        (
            new_user("alice"),
            422,
            json!({"message": "UNIQUE constraint failed: ab_user.username"}),
        ),
        (
            dup_email,
            422,
            json!({"message": "UNIQUE constraint failed: ab_user.email"}),
        ),
    ];
    for (body, status, want) in cases {
        let r = send(
            &sim,
            "POST",
            "/api/v1/security/users/",
            None,
            Some(&auth),
            Some(body),
        )
        .await;
        assert_eq!((r.status, r.json()), (status, want));
    }
    assert!(sim.user(5).is_none());
}

#[tokio::test]
async fn user_put_is_partial_echoes_the_request_and_always_bumps_changed_on() {
    let (sim, auth) = seeded().await;
    let before = sim.user(2).unwrap();
    let put = |body: Value| {
        send(
            &sim,
            "PUT",
            "/api/v1/security/users/2",
            None,
            Some(&auth),
            Some(body),
        )
    };
    let r = put(json!({"first_name": "Alicia"})).await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"result": {"first_name": "Alicia"}}))
    );
    let mid = sim.user(2).unwrap();
    assert_eq!(
        (mid.email.as_str(), mid.roles.as_slice(), mid.active),
        ("alice@example.com", &[4u64][..], true)
    );
    assert!(mid.changed_on > before.changed_on);
    // A no-op still bumps.
    put(json!({"first_name": "Alicia"})).await;
    let after = sim.user(2).unwrap();
    assert!(after.changed_on > mid.changed_on);
    assert_eq!(after.created_on, before.created_on);
    // The new password is echoed in plain text and works.
    let r = put(json!({"password": "NewPassw0rd!"})).await;
    assert_eq!(r.json(), json!({"result": {"password": "NewPassw0rd!"}}));
    assert!(sim.login("alice", "NewPassw0rd!"));
}

#[tokio::test]
async fn user_put_errors_match_superset() {
    let (sim, auth) = seeded().await;
    let put = |id: u64, body: Value| {
        send(
            &sim,
            "PUT",
            format!("/api/v1/security/users/{id}"),
            None,
            Some(&auth),
            Some(body),
        )
    };
    let r = put(999_999, json!({"first_name": "x"})).await;
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "Fatal error"}))
    );
    let r = put(4, json!({"username": "bob"})).await;
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "Fatal error"}))
    );
    let r = put(4, json!({"roles": []})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Cannot clear all roles"));
    let r = put(4, json!({"roles": [{"id": 4}]})).await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": {"roles": {"0": ["Not a valid integer."]}}})
        )
    );
    let r = put(4, json!({"nosuch": 1})).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": {"nosuch": ["Unknown field."]}}))
    );
    assert_eq!(sim.user(4).unwrap().changed_by, Some(1));
}

#[tokio::test]
async fn roles_are_not_returned_in_id_order() {
    let (sim, auth) = seeded().await;
    send(
        &sim,
        "PUT",
        "/api/v1/security/users/4",
        None,
        Some(&auth),
        Some(json!({"roles": [3, 4]})),
    )
    .await;
    let u = get_user(&sim, &auth, 4).await;
    assert_eq!(
        u["roles"],
        json!([{"id": 4, "name": "Gamma"}, {"id": 3, "name": "Alpha"}])
    );
}

#[tokio::test]
async fn user_get_has_show_metadata_and_404s_as_json() {
    let (sim, auth) = seeded().await;
    let r = send(
        &sim,
        "GET",
        "/api/v1/security/users/2",
        None,
        Some(&auth),
        None,
    )
    .await;
    let v = r.json();
    assert_eq!(v["id"], json!(2));
    assert_eq!(v["show_title"], json!("Show User"));
    assert!(v["show_columns"].is_array() && v["label_columns"].is_object());
    let r = send(
        &sim,
        "GET",
        "/api/v1/security/users/999999",
        None,
        Some(&auth),
        None,
    )
    .await;
    assert_eq!((r.status, r.json()), (404, json!({"message": "Not found"})));
}

#[tokio::test]
async fn delete_is_final_and_nulls_created_by_of_users_it_created() {
    let (sim, auth) = seeded().await;
    let creator = sim.add_user("creator", "pw", &[1]);
    let c_auth = bearer(&sim, "creator", "pw").await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/users/",
        None,
        Some(&c_auth),
        Some(new_user("child")),
    )
    .await;
    let child = r.json()["id"].as_u64().unwrap();
    assert_eq!(sim.user(child).unwrap().created_by, Some(creator));
    let changed_on = sim.user(child).unwrap().changed_on;
    let del = |id: u64| {
        send(
            &sim,
            "DELETE",
            format!("/api/v1/security/users/{id}"),
            None,
            Some(&auth),
            None,
        )
    };
    let r = del(creator).await;
    assert_eq!((r.status, r.json()), (200, json!({"message": "OK"})));
    let c = sim.user(child).unwrap();
    assert_eq!(
        (c.created_by, c.changed_by, c.changed_on),
        (None, None, changed_on)
    );
    let r = del(creator).await;
    assert_eq!((r.status, r.json()), (404, json!({"message": "Not found"})));
    assert!(!sim.delete_user(creator));
}

#[tokio::test]
async fn deleting_the_max_id_lets_the_next_create_reuse_it() {
    let (sim, auth) = seeded().await;
    let old = sim.user(4).unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(sim.delete_user(4));
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/users/",
        None,
        Some(&auth),
        Some(new_user("reuse")),
    )
    .await;
    assert_eq!(r.json(), json!({"id": 4}));
    let new = sim.user(4).unwrap();
    assert_eq!(new.username, "reuse");
    assert!(new.created_on > old.created_on);
    assert_eq!(sim.add_user("next", "pw", &[4]), 5);
}

// ---------------------------------------------------------------------------------------------
// Roles and groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn role_members_put_replaces_members_without_bumping_changed_on() {
    let (sim, auth) = seeded().await;
    let (bob0, carol0) = (sim.user(3).unwrap(), sim.user(4).unwrap());
    // bob (3) has Alpha; make carol (4) the only Alpha.
    let r = send(
        &sim,
        "PUT",
        "/api/v1/security/roles/3/users",
        None,
        Some(&auth),
        Some(json!({"user_ids": [4]})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"result": {"user_ids": [4]}}))
    );
    let (bob, carol) = (sim.user(3).unwrap(), sim.user(4).unwrap());
    assert!(!bob.roles.contains(&3));
    assert_eq!(carol.roles, [4, 3]);
    assert_eq!(
        (bob.changed_on, carol.changed_on),
        (bob0.changed_on, carol0.changed_on)
    );
    sim.set_role_members(3, &[3]);
    assert_eq!(sim.user(3).unwrap().roles, [3]);
    assert_eq!(sim.user(4).unwrap().roles, [4]);
}

#[tokio::test]
async fn role_rename_and_delete_show_up_in_members_only() {
    let (sim, auth) = seeded().await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/roles/",
        None,
        Some(&auth),
        Some(json!({"name": "auditors"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (201, json!({"id": 6, "result": {"name": "auditors"}}))
    );
    sim.set_role_members(6, &[2]);
    let changed = sim.user(2).unwrap().changed_on;
    let r = send(
        &sim,
        "PUT",
        "/api/v1/security/roles/6",
        None,
        Some(&auth),
        Some(json!({"name": "auditors2"})),
    )
    .await;
    assert_eq!(r.json(), json!({"result": {"name": "auditors2"}}));
    let u = get_user(&sim, &auth, 2).await;
    assert_eq!(
        u["roles"],
        json!([{"id": 4, "name": "Gamma"}, {"id": 6, "name": "auditors2"}])
    );
    sim.rename_role(6, "auditors3");
    assert_eq!(
        get_user(&sim, &auth, 2).await["roles"][1]["name"],
        json!("auditors3")
    );
    let r = send(
        &sim,
        "DELETE",
        "/api/v1/security/roles/6",
        None,
        Some(&auth),
        None,
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"message": "OK"})));
    assert_eq!(
        get_user(&sim, &auth, 2).await["roles"],
        json!([{"id": 4, "name": "Gamma"}])
    );
    assert_eq!(sim.user(2).unwrap().changed_on, changed);
}

#[tokio::test]
async fn roles_list_and_search_shapes() {
    let (sim, auth) = seeded().await;
    let v = send(
        &sim,
        "GET",
        "/api/v1/security/roles/",
        Some("(page_size:100,order_column:id,order_direction:asc)"),
        Some(&auth),
        None,
    )
    .await
    .json();
    assert_eq!(v["ids"], json!([1, 2, 3, 4, 5]));
    assert_eq!(v["result"][4], json!({"id": 5, "name": "sql_lab"}));
    let v = send(
        &sim,
        "GET",
        "/api/v1/security/roles/search/",
        Some("(filters:!((col:name,opr:eq,value:Alpha)))"),
        Some(&auth),
        None,
    )
    .await
    .json();
    assert_eq!(v.as_object().unwrap().len(), 3);
    assert_eq!(v["ids"], json!([3]));
    assert_eq!(v["result"][0]["user_ids"], json!([3]));
    assert!(v["result"][0]["permission_ids"].is_array() && v["result"][0]["group_ids"].is_array());
}

#[tokio::test]
async fn group_members_put_replaces_members_without_bumping_changed_on() {
    let (sim, auth) = seeded().await;
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/groups/",
        None,
        Some(&auth),
        Some(json!({"name": "analysts", "label": "Analysts", "description": "d"})),
    )
    .await;
    assert_eq!((r.status, r.json()), (201, json!({"id": 1})));
    sim.set_group_members(1, &[3]);
    let (bob0, carol0) = (sim.user(3).unwrap(), sim.user(4).unwrap());
    let r = send(
        &sim,
        "PUT",
        "/api/v1/security/groups/1",
        None,
        Some(&auth),
        Some(json!({"users": [4]})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"result": {"users": [4]}}))
    );
    let v = send(
        &sim,
        "GET",
        "/api/v1/security/groups/",
        None,
        Some(&auth),
        None,
    )
    .await
    .json();
    assert_eq!(
        v["result"],
        json!([{"id": 1, "name": "analysts", "label": "Analysts", "description": "d", "roles": [], "users": [{"id": 4, "username": "carol"}]}])
    );
    assert_eq!(
        get_user(&sim, &auth, 4).await["groups"],
        json!([{"id": 1, "name": "analysts", "label": "Analysts", "description": "d"}])
    );
    assert_eq!(sim.user(3).unwrap().changed_on, bob0.changed_on);
    assert_eq!(sim.user(4).unwrap().changed_on, carol0.changed_on);
    let g = sim.add_group("ops", &[2]);
    assert_eq!(g, 2);
    assert_eq!(sim.user(2).unwrap().groups, [2]);
}

// ---------------------------------------------------------------------------------------------
// Misc HTTP behaviour, faults, recording
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_api_url_is_json_with_accept_and_html_without() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    let r = send(
        &sim,
        "GET",
        "/api/v1/security/nosuch/",
        None,
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("404 Not Found"));
    let r = reqwest::get(format!("{}/api/v1/nosuch/", sim.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn a_change_before_a_request_lands_between_two_page_reads_and_reuses_the_max_id() {
    let (sim, auth) = seeded().await; // admin 1, alice 2, bob 3, carol 4
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    // Counted among the users requests only: the second (page 1) sees the change.
    sim.before_request("/security/users/", 1, move |s| {
        assert!(s.delete_user(2));
        assert!(s.delete_user(4));
        let reused = s.add_user("dave", "pw-dave", &[GAMMA_ROLE]);
        s.set_role_members(ALPHA_ROLE, &[reused]);
        *record.lock().unwrap() = s.users().into_iter().map(|u| (u.id, u.username)).collect();
    });
    let page = |n: u32| format!("(order_column:id,order_direction:asc,page:{n},page_size:2)");
    let p0 = list_ids(&sim, &auth, &page(0)).await;
    assert!(seen.lock().unwrap().is_empty(), "not made before page 0");
    let p1 = list_ids(&sim, &auth, &page(1)).await;
    assert_eq!(p0, [1, 2]);
    // Alice's delete shifted bob onto page 0, already read; carol's id went to dave (S33).
    assert_eq!(p1, [4]);
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, "admin".into()), (3, "bob".into()), (4, "dave".into())]
    );
    assert_eq!(sim.user(4).unwrap().roles, [GAMMA_ROLE, ALPHA_ROLE]);
    assert_eq!(sim.cancel_changes(), 0, "made once, then gone");
}

#[tokio::test]
async fn injected_faults_hit_after_skip_for_times_then_clear() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    sim.inject(Fault {
        path_contains: "/security/users/".into(),
        skip: 1,
        times: 2,
        kind: FaultKind::Status(500),
    });
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(users(&sim, &auth, "(page_size:1)").await.status);
    }
    assert_eq!(got, [200, 500, 500, 200]);
    sim.inject(Fault {
        path_contains: "/security/users/".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Html,
    });
    let r = users(&sim, &auth, "(page_size:1)").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/html"));
    sim.inject(Fault {
        path_contains: "/security/users/".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Truncated,
    });
    let r = users(&sim, &auth, "(page_size:1)").await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    sim.inject(Fault {
        path_contains: "/security/users/".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::ExpiredToken,
    });
    let r = users(&sim, &auth, "(page_size:1)").await;
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"msg": "Token has expired"}))
    );
    sim.inject(Fault {
        path_contains: "/login".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Delay(Duration::from_millis(300)),
    });
    let t = Instant::now();
    login_tokens(&sim, "admin", "admin").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.inject(Fault {
        path_contains: "/login".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Status(502),
    });
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/login",
        None,
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(users(&sim, &auth, "(page_size:1)").await.status, 200);
}

#[tokio::test]
async fn down_server_answers_503_html_everywhere() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.set_down(true);
    let r = send(&sim, "GET", "/health", None, None, None).await;
    assert_eq!(r.status, 503);
    assert!(r.content_type.starts_with("text/html"));
    assert!(sim.user(1).unwrap().login_count.is_none());
    let r = send(
        &sim,
        "POST",
        "/api/v1/security/login",
        None,
        None,
        Some(json!({"username": "admin", "password": "admin", "provider": "db"})),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(sim.user(1).unwrap().login_count, None);
    sim.set_down(false);
    assert_eq!(
        send(&sim, "GET", "/health", None, None, None).await.status,
        200
    );
}

#[tokio::test]
async fn requests_are_recorded_in_order_with_decoded_q_and_status() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    users(&sim, &auth, "(page_size:1,order_column:nosuch)").await;
    let got = sim.requests();
    assert_eq!(
        got,
        [
            RecordedRequest {
                method: "POST".into(),
                path: "/api/v1/security/login".into(),
                q: None,
                status: 200
            },
            RecordedRequest {
                method: "GET".into(),
                path: "/api/v1/security/users/".into(),
                q: Some("(page_size:1,order_column:nosuch)".into()),
                status: 400
            },
        ]
    );
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

/// The captured action-log rows of a real 6.1.0 MCP service (`tests/fixtures/superset/mcp/`).
fn captured_mcp_rows() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/superset/mcp/action_log_rows.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    file["list_databases_ok"]["rows"]
        .as_array()
        .unwrap()
        .clone()
}

/// The log rows written after `since`, oldest first, as rollcall asks for them.
async fn log_after(sim: &Sim, auth: &str, since: chrono::NaiveDateTime) -> Value {
    let q = format!(
        "(filters:!((col:dttm,opr:gt,value:'{}')),order_column:dttm,order_direction:asc,page_size:100)",
        since.format("%Y-%m-%dT%H:%M:%S%.6f")
    );
    send(sim, "GET", "/api/v1/log/", Some(&q), Some(auth), None)
        .await
        .json()
}

#[tokio::test]
async fn mcp_sessions_and_calls_write_the_rows_a_real_mcp_service_writes() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    let since = sim.log_now();
    let first = sim.mcp_session(1);
    first.call("list_databases", McpOutcome::Answered);
    let second = sim.mcp_session(1);
    second.call("get_chart_info", McpOutcome::ErrorAnswer);
    second.call("get_dataset_info", McpOutcome::ErrorAnswer);
    second.call("list_charts", McpOutcome::InvalidArguments);
    let got = log_after(&sim, &auth, since).await;
    let want = captured_mcp_rows();
    let got = got["result"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        // Times and durations are the simulator's own; their types are the captured ones.
        for (key, value) in want.as_object().unwrap() {
            match key.as_str() {
                "dttm" => assert!(got[key].is_string()),
                "duration_ms" => assert_eq!(got[key].is_null(), value.is_null(), "{got}"),
                _ => assert_eq!(&got[key], value, "{key} of {got}"),
            }
        }
        assert_eq!(
            got.as_object().unwrap().len(),
            want.as_object().unwrap().len()
        );
    }
}

#[tokio::test]
async fn a_captured_row_is_served_as_captured() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    let since = sim.log_now();
    let rows = captured_mcp_rows();
    let ids: Vec<u64> = rows
        .iter()
        .map(|row| sim.log_captured(row, sim.log_now()))
        .collect();
    let got = log_after(&sim, &auth, since).await;
    assert_eq!(got["ids"], json!(ids));
    for (got, mut want) in got["result"].as_array().unwrap().iter().zip(rows) {
        want["dttm"] = got["dttm"].clone();
        assert_eq!(got, &want);
    }
}

#[tokio::test]
async fn log_reads_write_their_row_after_answering() {
    let sim = Sim::start(SimOptions::default()).await;
    let auth = admin(&sim).await;
    let log = |q: &'static str| send(&sim, "GET", "/api/v1/log/", Some(q), Some(&auth), None);
    let v = log("(order_column:dttm,order_direction:asc,page_size:100)")
        .await
        .json();
    assert_eq!(v["count"], json!(0));
    let v = log("(order_column:dttm,order_direction:asc,page_size:100)")
        .await
        .json();
    assert_eq!(v["count"], json!(1));
    assert_eq!(v["ids"], json!([1]));
    let row = &v["result"][0];
    assert!(row.get("id").is_none());
    assert_eq!(row["action"], json!("LogRestApi.get_list"));
    assert_eq!(row["user"]["username"], json!("admin"));
    let r = log("(order_column:id)").await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": "Invalid order by column: id"}))
    );
    let r = log("(filters:!((col:id,opr:gt,value:1)))").await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": "Filter column: id not allowed to filter"})
        )
    );
    send(
        &sim,
        "GET",
        "/api/v1/security/roles/search/",
        None,
        Some(&auth),
        None,
    )
    .await;
    let v = log("(filters:!((col:action,opr:eq,value:get_list)))")
        .await
        .json();
    assert_eq!(v["count"], json!(1));
    assert!(v["result"][0]["json"]
        .as_str()
        .unwrap()
        .contains("RoleRestAPI.get_list"));
    // 400s are logged too: 2 good reads + 2 bad ones + this filter read so far.
    let v = log("(filters:!((col:action,opr:eq,value:'LogRestApi.get_list')))")
        .await
        .json();
    assert_eq!(v["count"], json!(5));
}

// ---------------------------------------------------------------------------------------------
// Fixture replay
// ---------------------------------------------------------------------------------------------

/// Fixtures of endpoints the simulator does not implement (or summaries, not responses).
const NOT_REPLAYED: &[&str] = &[
    "timing",
    "chart_list_as_alpha_user",
    "dashboard_list_as_alpha_user",
];

/// A simulator seeded like the capture run: users 1–7 (alice, bob, carol, dave, eve, gina),
/// more users up to id 311, role 6, group 1 and ten log rows.
async fn fixture_sim(name: &str, release: Release) -> (Sim, String) {
    let expired = name.starts_with("error_expired_token");
    let sim = Sim::start(SimOptions {
        release,
        access_ttl: if expired {
            Duration::ZERO
        } else {
            Duration::from_secs(900)
        },
        ..SimOptions::default()
    })
    .await;
    for (u, roles) in [
        ("alice", 4),
        ("bob", 3),
        ("carol", 4),
        ("dave", 4),
        ("eve", 4),
        ("gina", 4),
    ] {
        sim.add_user(u, &format!("Passw0rd!{u}"), &[roles]);
    }
    sim.update_user(7, |u| u.password = "NewPassw0rd!".into());
    sim.add_users(304, &[4]);
    sim.add_group("team", &[5]);
    // With `expired`, access tokens die at once: that token is what the fixture needs, and
    // the rest of the seeding (which needs a live token) is skipped.
    let auth = bearer(&sim, "admin", "admin").await;
    if !expired {
        let r = send(
            &sim,
            "POST",
            "/api/v1/security/roles/",
            None,
            Some(&auth),
            Some(json!({"name": "seeded"})),
        )
        .await;
        assert_eq!(r.status, 201);
        for _ in 0..10 {
            send(&sim, "GET", "/api/v1/log/", None, Some(&auth), None).await;
        }
    }
    match name {
        "user_create_ok" => {
            sim.delete_user(2);
        }
        "user_delete_again_404" | "user_get_deleted_404" => {
            sim.delete_user(6);
        }
        "login_inactive_user" => sim.update_user(2, |u| u.active = false),
        _ => {}
    }
    (sim, auth)
}

async fn fixture_auth(sim: &Sim, name: &str, admin_auth: &str) -> Option<String> {
    let tokens = || login_tokens(sim, "admin", "admin");
    Some(match name {
        n if n.starts_with("error_no_auth") => return None,
        "error_wrong_auth_scheme" => "Token abc".into(),
        "error_garbage_token" => "Bearer garbage".into(),
        "error_bad_signature_token" => format!("{}x", admin_auth),
        "error_refresh_token_used_as_access" => {
            format!(
                "Bearer {}",
                tokens().await["refresh_token"].as_str().unwrap()
            )
        }
        n if n.starts_with("refresh_") && n != "refresh_with_access_token_422" => {
            format!(
                "Bearer {}",
                tokens().await["refresh_token"].as_str().unwrap()
            )
        }
        n if n.contains("as_gamma") => bearer(sim, "carol", "Passw0rd!carol").await,
        n if n.contains("as_alpha") || n.contains("as_bob") => {
            bearer(sim, "bob", "Passw0rd!bob").await
        }
        _ => admin_auth.to_string(),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys and value types (null matches anything); one level into `result`.
fn shape_diff(path: &str, want: &Value, got: &Value, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    if want.is_null() || got.is_null() {
        return out;
    }
    if type_name(want) != type_name(got) {
        return vec![format!("{path}: {} vs {}", type_name(want), type_name(got))];
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let wk: Vec<&String> = w.keys().collect();
            let gk: Vec<&String> = g.keys().collect();
            if wk != gk {
                out.push(format!("{path}: keys {wk:?} vs {gk:?}"));
                return out;
            }
            for (k, wv) in w {
                let deeper = depth == 0 && k == "result";
                if deeper || depth > 1 {
                    out.extend(shape_diff(&format!("{path}.{k}"), wv, &g[k], depth + 1));
                } else if !wv.is_null() && !g[k].is_null() && type_name(wv) != type_name(&g[k]) {
                    out.push(format!(
                        "{path}.{k}: {} vs {}",
                        type_name(wv),
                        type_name(&g[k])
                    ));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if depth > 0 => {
            if let (Some(w0), Some(g0)) = (w.first(), g.first()) {
                out.extend(shape_diff(&format!("{path}[0]"), w0, g0, depth + 1));
            }
        }
        _ => {}
    }
    out
}

#[tokio::test]
async fn fixtures_replay_with_same_status_and_shape() {
    replay("tests/fixtures/superset", Release::V6_1, 140).await;
}

#[tokio::test]
async fn fixtures_of_4_1_replay_with_same_status_and_shape_as_4_1() {
    replay("tests/fixtures/superset-releases/v4.1.4", Release::V4_1, 40).await;
}

#[tokio::test]
async fn fixtures_of_5_0_replay_with_same_status_and_shape_as_5_0() {
    replay("tests/fixtures/superset-releases/v5.0.0", Release::V5_0, 40).await;
}

#[tokio::test]
async fn fixtures_of_6_0_replay_with_same_status_and_shape_as_6_0() {
    replay("tests/fixtures/superset-releases/v6.0.0", Release::V6_0, 40).await;
}

/// The release captures name their own users (`fx_<run>_<n>`, password `Passw0rd!x`) and
/// delete their own ids: give the simulator what each request expects to find.
fn seed_as_captured(sim: &Sim, name: &str, req: &Value) {
    match name {
        "login_as_created_user" | "user_create_duplicate_username" => {
            let username = req["body"]["username"].as_str().unwrap();
            sim.add_user(username, "Passw0rd!x", &[4]);
        }
        "user_get_deleted_404" => {
            let path = req["path"].as_str().unwrap();
            let id = path.rsplit('/').next().unwrap().parse().unwrap();
            sim.delete_user(id);
        }
        _ => {}
    }
}

/// Replay every captured answer in `folder` against a simulator of `release`: same status,
/// content type and shape.
async fn replay(folder: &str, release: Release, at_least: usize) {
    // The captures live with rollcall's tests, one folder above this crate: both read them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(folder);
    // Sub-folders hold captures of other kinds (the MCP service's log rows): not answers.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .filter(|n| !NOT_REPLAYED.contains(&n.as_str()))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for name in &names {
        let fx: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let Some(req) = fx.get("request") else {
            continue;
        };
        let (sim, admin_auth) = fixture_sim(name, release).await;
        if release != Release::V6_1 {
            seed_as_captured(&sim, name, req);
        }
        // A few captures lack request headers; they were made with the usual Accept + Bearer.
        let headers = req.get("headers").cloned().unwrap_or_else(|| {
            if name.contains("no_accept") {
                json!({"Authorization": "Bearer <jwt>"})
            } else {
                json!({"Accept": "application/json", "Authorization": "Bearer <jwt>"})
            }
        });
        let has_auth = headers.get("Authorization").is_some();
        let auth = if has_auth || name.starts_with("error_") {
            fixture_auth(&sim, name, &admin_auth).await
        } else {
            None
        };
        let method = req["method"].as_str().unwrap();
        let path = req["path"].as_str().unwrap();
        let mut url = url::Url::parse(&format!("{}{}", sim.url, path)).unwrap();
        if let Some(q) = req["query"].as_str() {
            url.query_pairs_mut().append_pair("q", q);
        }
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), url);
        if let Some(accept) = headers.get("Accept").and_then(Value::as_str) {
            r = r.header("Accept", accept);
        }
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        if !req["body"].is_null() {
            r = r.json(&req["body"]);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let got: Value = if ct.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        } else {
            Value::String(text.clone())
        };
        replayed += 1;
        let want_status = fx["status"].as_u64().unwrap() as u16;
        if status != want_status {
            failures.push(format!(
                "{name}: status {want_status} vs {status}: {}",
                &text[..text.len().min(200)]
            ));
            continue;
        }
        let want_ct = fx["headers"]["Content-Type"].as_str().unwrap_or_default();
        if want_ct != ct {
            failures.push(format!("{name}: content-type {want_ct:?} vs {ct:?}"));
        }
        for d in shape_diff("body", &fx["body"], &got, 0) {
            failures.push(format!("{name}: {d}"));
        }
    }
    assert!(
        replayed >= at_least,
        "only {replayed} fixtures of {folder} replayed"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
