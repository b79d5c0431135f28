//! The baseline of the benchmarks that read a Superset (the simulator): a bare reqwest client
//! that logs in as admin and reads the users by keyset pages, parsing each page into
//! `serde_json::Value` and nothing else.

/// Log in as admin/admin; returns the access token.
pub async fn login(http: &reqwest::Client, url: &str) -> String {
    let token: serde_json::Value = http
        .post(format!("{url}/api/v1/security/login"))
        .json(&serde_json::json!({"username": "admin", "password": "admin", "provider": "db", "refresh": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_owned()
}

/// Every user by keyset pages of 100, one after another. Returns the rows read.
pub async fn bare_keyset_read(http: &reqwest::Client, url: &str, token: &str) -> usize {
    let mut last = 0u64;
    let mut rows = 0;
    loop {
        let q = format!(
            "(filters:!((col:id,opr:gt,value:{last})),order_column:id,order_direction:asc,page_size:100)"
        );
        let page: serde_json::Value = http
            .get(format!("{url}/api/v1/security/users/"))
            .query(&[("q", q)])
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let result = page["result"].as_array().unwrap();
        let Some(end) = result.last() else {
            return rows;
        };
        rows += result.len();
        last = end["id"].as_u64().unwrap();
    }
}
