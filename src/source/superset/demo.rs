//! The Superset demo: changes users in a (test!) Superset through its REST API so that every
//! Superset event type appears. What this kind supplies to `rollcall demo` ([`start`]), and
//! used by the end-to-end test against a real Superset.
//!
//! Owns the Superset admin session and the demo steps. It shares nothing with the source's
//! reads and must never be called by the pipeline, which only reads.

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::event::EventType;
use crate::source::demo::{DemoError, Shown, Steps};

/// Log in to the Superset at `url` as `username`, once, and make the demo.
pub async fn start(
    url: &str,
    username: &str,
    password: &SecretString,
) -> Result<Box<dyn Steps>, DemoError> {
    let admin = Admin::login(url, username, password.expose_secret()).await?;
    Ok(Box::new(Demo::new(admin)))
}

/// An admin session used to make changes.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: std::sync::Mutex<String>,
    refresh: String,
}

impl Admin {
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Admin, DemoError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| DemoError::Http {
                what: "client set-up".into(),
                source,
            })?;
        let mut admin = Admin {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: Default::default(),
            refresh: String::new(),
        };
        let body =
            json!({"username": username, "password": password, "provider": "db", "refresh": true});
        let tokens = admin
            .call(
                reqwest::Method::POST,
                "/api/v1/security/login",
                Some(body),
                "login",
            )
            .await
            .map_err(|e| match e {
                DemoError::Status {
                    status: 401, body, ..
                } => DemoError::LoginRefused {
                    product: "Superset",
                    username: username.to_owned(),
                    answer: format!("HTTP 401: {body}"),
                },
                e => e,
            })?;
        admin.set_token(&tokens);
        admin.refresh = tokens["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(admin)
    }

    fn set_token(&self, tokens: &Value) {
        *self.token.lock().expect("never poisoned") = tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, DemoError> {
        let mut resp = self.send(method.clone(), path, body.as_ref(), what).await?;
        // An expired access token is renewed with the refresh token: a new password login
        // would bump the admin's login counters and show up as a `user.login` event.
        if resp.status() == StatusCode::UNAUTHORIZED && !self.refresh.is_empty() {
            let renewed = self
                .http
                .post(format!("{}/api/v1/security/refresh", self.base))
                .bearer_auth(&self.refresh)
                .send()
                .await
                .map_err(|source| DemoError::Http {
                    what: "refresh".into(),
                    source,
                })?;
            let tokens: Value = renewed.json().await.map_err(|source| DemoError::Http {
                what: "refresh".into(),
                source,
            })?;
            self.set_token(&tokens);
            resp = self.send(method, path, body.as_ref(), what).await?;
        }
        let status = resp.status();
        let text = resp.text().await.map_err(|source| DemoError::Http {
            what: what.into(),
            source,
        })?;
        if !status.is_success() {
            return Err(DemoError::Status {
                what: what.into(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<reqwest::Response, DemoError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Accept", "application/json");
        let token = self.token.lock().expect("never poisoned").clone();
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.map_err(|source| DemoError::Http {
            what: what.into(),
            source,
        })
    }

    /// A plain authorised GET (e.g. `/api/v1/dashboard/`): Superset logs most reads in its
    /// action log, so this shows `audit.action` events.
    pub async fn read(&self, path: &str) -> Result<Value, DemoError> {
        self.call(reqwest::Method::GET, path, None, "read").await
    }

    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        roles: &[u64],
    ) -> Result<u64, DemoError> {
        let body = json!({
            "first_name": username, "last_name": "Demo", "username": username,
            "email": format!("{username}@example.com"), "active": true, "password": password, "roles": roles,
        });
        let created = self
            .call(
                reqwest::Method::POST,
                "/api/v1/security/users/",
                Some(body),
                "create user",
            )
            .await?;
        Ok(created["id"].as_u64().unwrap_or_default())
    }

    pub async fn update_user(&self, id: u64, body: Value) -> Result<(), DemoError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/security/users/{id}"),
            Some(body),
            "update user",
        )
        .await
        .map(drop)
    }

    pub async fn delete_user(&self, id: u64) -> Result<(), DemoError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/security/users/{id}"),
            None,
            "delete user",
        )
        .await
        .map(drop)
    }

    /// Every role as (id, name, member ids): from `roles/search/` where the release has it,
    /// otherwise from the plain roles list without members (docs/superset.md, Releases 4.1 to
    /// 6.1: `roles/search/` is a 404 before 6.0).
    async fn roles(&self) -> Result<Vec<(u64, String, Option<Vec<u64>>)>, DemoError> {
        let (page, searched) = match self
            .call(
                reqwest::Method::GET,
                "/api/v1/security/roles/search/?q=(page_size:100)",
                None,
                "list roles",
            )
            .await
        {
            Ok(page) => (page, true),
            Err(DemoError::Status { status: 404, .. }) => (
                self.call(
                    reqwest::Method::GET,
                    "/api/v1/security/roles/?q=(page_size:100)",
                    None,
                    "list roles",
                )
                .await?,
                false,
            ),
            Err(e) => return Err(e),
        };
        Ok(page["result"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let ids = searched.then(|| {
                            r["user_ids"]
                                .as_array()
                                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                                .unwrap_or_default()
                        });
                        (
                            r["id"].as_u64().unwrap_or_default(),
                            r["name"].as_str().unwrap_or_default().to_owned(),
                            ids,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The ids of a role's members, through the users' `roles` filter, which every release has.
    async fn role_members(&self, role: u64) -> Result<Vec<u64>, DemoError> {
        let mut members = Vec::new();
        for page in 0.. {
            let answer = self
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "/api/v1/security/users/?q=(filters:!((col:roles,opr:rel_m_m,value:{role})),order_column:id,order_direction:asc,page:{page},page_size:100)"
                    ),
                    None,
                    "list role members",
                )
                .await?;
            let ids: Vec<u64> = answer["ids"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let done = ids.len() < 100;
            members.extend(ids);
            if done {
                break;
            }
        }
        Ok(members)
    }

    pub async fn role_id(&self, name: &str) -> Result<u64, DemoError> {
        self.roles()
            .await?
            .into_iter()
            .find(|r| r.1 == name)
            .map(|r| r.0)
            .ok_or_else(|| DemoError::Status {
                what: format!("find role {name}"),
                status: 404,
                body: "no such role".into(),
            })
    }

    /// Add a member through the roles API, which replaces the member list and does not touch
    /// the user's `changed_on`.
    pub async fn add_to_role(&self, role: u64, user: u64) -> Result<(), DemoError> {
        let searched = self
            .roles()
            .await?
            .into_iter()
            .find(|r| r.0 == role)
            .and_then(|r| r.2);
        let mut members = match searched {
            Some(members) => members,
            None => self.role_members(role).await?,
        };
        members.push(user);
        let body = json!({ "user_ids": members });
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/security/roles/{role}/users"),
            Some(body),
            "set role members",
        )
        .await
        .map(drop)
    }

    pub async fn create_group(&self, name: &str, users: &[u64]) -> Result<u64, DemoError> {
        let body =
            json!({ "name": name, "label": name, "description": "created by rollcall demo" });
        let created = self
            .call(
                reqwest::Method::POST,
                "/api/v1/security/groups/",
                Some(body),
                "create group",
            )
            .await?;
        let id = created["id"].as_u64().unwrap_or_default();
        self.set_group_members(id, users).await?;
        Ok(id)
    }

    /// A session of another user on the same Superset: what they do is theirs in the action
    /// log, not the service account's (whose reads rollcall drops as its own noise).
    pub async fn login_as(&self, username: &str, password: &str) -> Result<Admin, DemoError> {
        Admin::login(&self.base, username, password).await
    }

    /// Replace a group's members through the groups API (which leaves `changed_on` alone).
    pub async fn set_group_members(&self, group: u64, users: &[u64]) -> Result<(), DemoError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/security/groups/{group}"),
            Some(json!({ "users": users })),
            "set group members",
        )
        .await
        .map(drop)
    }

    /// A password login as another user; `false` when Superset refuses it.
    pub async fn try_login(&self, username: &str, password: &str) -> Result<bool, DemoError> {
        let body =
            json!({"username": username, "password": password, "provider": "db", "refresh": true});
        let resp = self
            .http
            .post(format!("{}/api/v1/security/login", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|source| DemoError::Http {
                what: "user login".into(),
                source,
            })?;
        Ok(resp.status() == StatusCode::OK)
    }
}

/// The steps of the demo, in order; each shows one or two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Edit,
    Deactivate,
    Reactivate,
    ReRole,
    RoleViaRolesApi,
    Group,
    Ungroup,
    Login,
    Act,
    FailedLogin,
    Delete,
}

impl Step {
    pub const ALL: [Step; 12] = [
        Step::Create,
        Step::Edit,
        Step::Deactivate,
        Step::Reactivate,
        Step::ReRole,
        Step::RoleViaRolesApi,
        Step::Group,
        Step::Ungroup,
        Step::Login,
        Step::Act,
        Step::FailedLogin,
        Step::Delete,
    ];
}

/// Two demo users: alice goes through the whole lifecycle, bob gains a role, logs in and
/// reads dashboards as himself.
pub struct Demo {
    admin: Admin,
    prefix: String,
    alice: u64,
    bob: u64,
    group: u64,
    bob_session: Option<Admin>,
}

impl Demo {
    pub fn new(admin: Admin) -> Demo {
        let prefix = format!("demo{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        Demo {
            admin,
            prefix,
            alice: 0,
            bob: 0,
            group: 0,
            bob_session: None,
        }
    }

    fn name(&self, who: &str) -> String {
        format!("{}-{who}", self.prefix)
    }

    fn password(&self, who: &str) -> String {
        format!("Pw-{}-{who}!", self.prefix)
    }

    /// Run one step; returns what it did and the events rollcall should derive from it.
    pub async fn run(&mut self, step: Step) -> Result<(String, Vec<(EventType, u64)>), DemoError> {
        use EventType::*;
        let a = &self.admin;
        Ok(match step {
            Step::Create => {
                let gamma = a.role_id("Gamma").await?;
                self.alice = a
                    .create_user(&self.name("alice"), &self.password("alice"), &[gamma])
                    .await?;
                self.bob = a
                    .create_user(&self.name("bob"), &self.password("bob"), &[gamma])
                    .await?;
                (
                    format!(
                        "created {} (id {}) and {} (id {})",
                        self.name("alice"),
                        self.alice,
                        self.name("bob"),
                        self.bob
                    ),
                    vec![(UserCreated, self.alice), (UserCreated, self.bob)],
                )
            }
            Step::Edit => {
                a.update_user(self.alice, json!({"first_name": "Alicia", "email": format!("{}@example.org", self.name("alicia"))})).await?;
                (
                    "changed alice's first name and email".into(),
                    vec![(UserUpdated, self.alice)],
                )
            }
            Step::Deactivate => {
                a.update_user(self.alice, json!({"active": false})).await?;
                (
                    "deactivated alice".into(),
                    vec![(UserDeactivated, self.alice)],
                )
            }
            Step::Reactivate => {
                a.update_user(self.alice, json!({"active": true})).await?;
                (
                    "reactivated alice".into(),
                    vec![(UserReactivated, self.alice)],
                )
            }
            Step::ReRole => {
                let alpha = a.role_id("Alpha").await?;
                a.update_user(self.alice, json!({"roles": [alpha]})).await?;
                (
                    "moved alice from Gamma to Alpha".into(),
                    vec![(UserRoleRemoved, self.alice), (UserRoleAdded, self.alice)],
                )
            }
            Step::RoleViaRolesApi => {
                let sql_lab = a.role_id("sql_lab").await?;
                a.add_to_role(sql_lab, self.bob).await?;
                (
                    "added bob to sql_lab through the roles API (no changed_on bump)".into(),
                    vec![(UserRoleAdded, self.bob)],
                )
            }
            Step::Group => {
                self.group = a
                    .create_group(&self.name("analysts"), &[self.alice])
                    .await?;
                (
                    "created a group with alice in it".into(),
                    vec![(UserGroupAdded, self.alice)],
                )
            }
            Step::Ungroup => {
                a.set_group_members(self.group, &[]).await?;
                (
                    "took alice out of the group through the groups API".into(),
                    vec![(UserGroupRemoved, self.alice)],
                )
            }
            Step::Login => {
                self.bob_session =
                    Some(a.login_as(&self.name("bob"), &self.password("bob")).await?);
                ("logged in as bob".into(), vec![(UserLogin, self.bob)])
            }
            Step::Act => {
                // Superset's action log records dashboard reads (docs/superset.md S41), and
                // this one is bob's, not the service account's, so rollcall reports it.
                let bob = self.bob_session.as_ref().ok_or(DemoError::OutOfOrder {
                    step: "act as bob",
                    needs: "log in as bob",
                })?;
                bob.read("/api/v1/dashboard/").await?;
                (
                    "read the dashboard list as bob".into(),
                    vec![(AuditAction, self.bob)],
                )
            }
            Step::FailedLogin => {
                a.try_login(&self.name("bob"), "wrong password").await?;
                a.try_login(&self.name("bob"), "wrong again").await?;
                (
                    "failed two logins as bob".into(),
                    vec![(UserLoginFailed, self.bob)],
                )
            }
            Step::Delete => {
                a.delete_user(self.alice).await?;
                ("deleted alice".into(), vec![(UserDeleted, self.alice)])
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
