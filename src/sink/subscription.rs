//! What a subscriber chose to receive and see: the keys every `[[sinks]]` table takes beside
//! its kind's own (`event_types`, `sources`, `subjects`; `redact_fields` and its key), and the
//! sink that applies them to any kind.
//!
//! Owns those keys, how the registry takes them out of a table before the kind reads the rest
//! ([`Subscription::split`], so each kind keeps denying keys it does not know), their checks,
//! and [`Subscribed`], the wrapper the registry puts around every kind's sink so that the
//! delivery engine asks one place which events a sink takes and what of them it may see. It
//! must never know a kind, never decide what becomes of an event it leaves out (the engine
//! counts it and moves the cursor past it), and never show the redaction key.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use globset::{Glob, GlobSet, GlobSetBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::de::DeValue;
use toml::Spanned;

use super::redact::{RedactError, Redactor};
use super::{Delivery, Fleet, Message, Refusal, Sink, SinkError};
use crate::encode::{Encoder, Envelope};
use crate::event::EventType;
use crate::settings::{Entry, Problems, SecretRef};

/// Which events a sink receives, for every kind but one whose receivers choose per stream
/// (`ssf`): by type, by source and by subject, all three when several are set. A sink's cursor
/// moves past what it leaves out, which `status` counts (`events_filtered`); a change applies
/// to the events the sink sends from then on, and `rollcall replay` re-sends with it
/// (docs/sinks.md, Routing).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The event types the sink receives (at least one). Unset: all.
    pub event_types: Option<Vec<EventType>>,
    /// The sources whose events the sink receives, by their `name` (at least one). Unset: all.
    /// rollcall's own checkpoints belong to no source: only `event_types` chooses them.
    pub sources: Option<Vec<String>>,
    /// Globs on the events' `subject` (a Superset user id, a Kylin username), e.g.
    /// `["1*", "admin"]` (at least one). Unset: all. Events about no user (checkpoints, sync
    /// markers) pass it: only `event_types` and `sources` choose them.
    #[schemars(with = "Option<Vec<String>>")]
    pub subjects: Option<Subjects>,
    /// Fields whose values the sink never sees in clear, e.g. `["email", "first_name",
    /// "last_name"]`: each value, wherever it occurs in an event (a user record, `before`,
    /// `changes`, an action-log row's user, and every other place the same value stands), is
    /// replaced by `hmac-sha256:<hex>` with the key of `redact_key_env`/`redact_key_file` (the
    /// same value, the same hash), or dropped without a key. Unset: nothing is redacted
    /// (docs/sinks.md, Redaction).
    pub redact_fields: Option<Vec<String>>,
    /// Name of the environment variable holding the key of `redact_fields`' hashes (at least
    /// 32 bytes: `openssl rand -base64 32`). Set at most one of `redact_key_env` and
    /// `redact_key_file`.
    pub redact_key_env: Option<String>,
    /// Or a file holding it (a Kubernetes or Docker secret).
    pub redact_key_file: Option<PathBuf>,
}

/// The `subjects` globs as written, and compiled: a glob that does not compile is refused
/// where it is written.
#[derive(Debug, Clone)]
pub struct Subjects {
    pub globs: Vec<String>,
    set: GlobSet,
}

impl<'de> Deserialize<'de> for Subjects {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Subjects, D::Error> {
        let globs = Vec::<String>::deserialize(d)?;
        let mut set = GlobSetBuilder::new();
        for glob in &globs {
            set.add(Glob::new(glob).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{glob}` in `subjects` is not a glob: {}; e.g. \"12*\"",
                    e.kind()
                ))
            })?);
        }
        let set = set.build().map_err(serde::de::Error::custom)?;
        Ok(Subjects { globs, set })
    }
}

impl Subscription {
    /// Every key of the subscription, as written in a `[[sinks]]` table.
    pub const KEYS: [&'static str; 6] = [
        "event_types",
        "sources",
        "subjects",
        "redact_fields",
        "redact_key_env",
        "redact_key_file",
    ];

    /// The subscription's keys of a `[[sinks]]` table, and the rest for its kind; each keeps
    /// its place in the file, for problems.
    pub fn split<'i>(table: &Spanned<DeValue<'i>>) -> [Spanned<DeValue<'i>>; 2] {
        let mut ours = toml::de::DeTable::new();
        let mut theirs = toml::de::DeTable::new();
        if let DeValue::Table(t) = table.get_ref() {
            for (k, v) in t.iter() {
                let side = if Subscription::KEYS.contains(&k.get_ref().as_ref()) {
                    &mut ours
                } else {
                    &mut theirs
                };
                side.insert(k.clone(), v.clone());
            }
        }
        [ours, theirs].map(|t| Spanned::new(table.span(), DeValue::Table(t)))
    }

    /// The keys written, for a kind that takes none of them.
    pub fn written(&self) -> Vec<&'static str> {
        let set = [
            self.event_types.is_some(),
            self.sources.is_some(),
            self.subjects.is_some(),
            self.redact_fields.is_some(),
            self.redact_key_env.is_some(),
            self.redact_key_file.is_some(),
        ];
        Subscription::KEYS
            .into_iter()
            .zip(set)
            .filter_map(|(k, set)| set.then_some(k))
            .collect()
    }

    /// The checks serde cannot make, each at its key: no list may be empty (it would send
    /// nothing), and `sources` names sources of the config (`known`).
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>, known: &[&str]) {
        let empty = [
            self.event_types.as_ref().is_some_and(Vec::is_empty),
            self.sources.as_ref().is_some_and(Vec::is_empty),
            self.subjects.as_ref().is_some_and(|s| s.globs.is_empty()),
        ];
        self.validate_redaction(entry, p);
        for (key, empty) in Subscription::KEYS.into_iter().zip(empty) {
            if empty {
                p.at(
                    entry.key(key),
                    format!("`{key}` is empty, so nothing would be sent: list some, or drop the key for all"),
                );
            }
        }
        for source in self.sources.iter().flatten() {
            if !known.contains(&source.as_str()) {
                p.at(
                    entry.key("sources"),
                    format!(
                        "`sources` names `{source}`, which is no source of the config; its sources are: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn validate_redaction(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        let keyed = self.redact_key_env.is_some() || self.redact_key_file.is_some();
        if self.redact_key_env.is_some() && self.redact_key_file.is_some() {
            p.at(
                entry.key("redact_key_file"),
                "set at most one of `redact_key_env` or `redact_key_file`".into(),
            );
        }
        match &self.redact_fields {
            None if keyed => p.at(
                entry.key(if self.redact_key_env.is_some() {
                    "redact_key_env"
                } else {
                    "redact_key_file"
                }),
                "a redaction key without `redact_fields` redacts nothing: name the fields, e.g. `redact_fields = [\"email\"]`, or drop the key".into(),
            ),
            Some(fields) if fields.is_empty() => p.at(
                entry.key("redact_fields"),
                "`redact_fields` is empty, so nothing would be redacted: name some, e.g. [\"email\", \"first_name\", \"last_name\"], or drop the key".into(),
            ),
            Some(fields) => {
                // An OCSF record names its user: without a key, `username` would be dropped
                // from what the record is built of.
                let ocsf = entry.string("format").as_deref() == Some("ocsf");
                if ocsf && !keyed && fields.iter().any(|f| f == "username") {
                    p.at(
                        entry.key("redact_fields"),
                        "an OCSF record must name its user, so this sink cannot drop `username`: hash it (set `redact_key_env` or `redact_key_file`), or leave `username` out of `redact_fields`".into(),
                    );
                }
                if let Some(bad) = fields.iter().find(|f| f.trim().is_empty() || f.contains('.')) {
                    p.at(
                        entry.key("redact_fields"),
                        format!("`{bad}` in `redact_fields` is no field name: name a field as events hold it, e.g. \"email\" (it is redacted wherever it occurs)"),
                    );
                }
            }
            None => {}
        }
    }

    /// Whether the sink takes the users of the source named `source` with this `subject` (its
    /// `sources` and `subjects`): which current users `rollcall table rebuild` publishes.
    pub fn takes_user(&self, source: &str, subject: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|s| s == source))
            && self
                .subjects
                .as_ref()
                .is_none_or(|s| s.set.is_match(subject))
    }

    /// What the sink redacts, with its key read; `None` when it redacts nothing. Errors name
    /// where the key was looked for, never its value.
    pub fn redactor(&self, sink: &str) -> Result<Option<Redactor>, RedactError> {
        let Some(fields) = &self.redact_fields else {
            return Ok(None);
        };
        let key = match (&self.redact_key_env, &self.redact_key_file) {
            (None, None) => None,
            (env, file) => Some(
                SecretRef {
                    env_key: "redact_key_env",
                    file_key: "redact_key_file",
                    env: env.as_deref(),
                    file: file.as_deref(),
                }
                .read()
                .map_err(|source| RedactError::Key {
                    sink: sink.to_owned(),
                    source,
                })?,
            ),
        };
        Redactor::new(sink, fields, key).map(Some)
    }
}

/// Whether a kind's table takes the keys of a [`Subscription`]: every kind does unless it says
/// otherwise (one whose receivers choose their events themselves), and the registry refuses
/// them where it does not.
pub trait TakesSubscription {
    const TAKES: bool = true;
}

/// The schema of a kind's table for `rollcall config reference`, with the keys of a
/// [`Subscription`] when the kind takes them.
pub(super) fn table<C: JsonSchema + TakesSubscription>() -> schemars::Schema {
    let mut schema = crate::settings::table_schema::<C>();
    if C::TAKES {
        let common = crate::settings::table_schema::<Subscription>();
        let keys = common.get("properties").and_then(|p| p.as_object());
        if let (Some(keys), Some(serde_json::Value::Object(properties))) =
            (keys, schema.get_mut("properties"))
        {
            properties.extend(keys.clone());
        }
    }
    schema
}

/// Where `key` is written in the subscription's part of a table (see [`Subscription::split`]).
pub(super) fn key_span(ours: &Spanned<DeValue<'_>>, key: &str) -> std::ops::Range<usize> {
    match ours.get_ref() {
        DeValue::Table(t) => t.get(key).map_or(ours.span(), |v| v.span()),
        _ => ours.span(),
    }
}

/// A [`Subscription`] as the engine asks it, event by event.
#[derive(Debug)]
struct Route {
    types: Option<HashSet<&'static str>>,
    sources: Option<HashSet<String>>,
    subjects: Option<GlobSet>,
}

impl Route {
    fn new(s: &Subscription) -> Route {
        Route {
            types: s
                .event_types
                .as_ref()
                .map(|t| t.iter().map(|t| t.as_str()).collect()),
            sources: s.sources.as_ref().map(|s| s.iter().cloned().collect()),
            subjects: s.subjects.as_ref().map(|s| s.set.clone()),
        }
    }

    fn takes(&self, e: &Envelope<'_>) -> bool {
        if self
            .types
            .as_ref()
            .is_some_and(|t| !t.contains(e.event_type.as_ref()))
        {
            return false;
        }
        // A checkpoint's source is the store (`rollcall://<store id>`), no source of the config.
        if let (Some(sources), Some((scheme, name))) = (&self.sources, e.source.split_once("://")) {
            if scheme != "rollcall" && !sources.contains(name) {
                return false;
            }
        }
        let about_a_user = EventType::ALL
            .iter()
            .find(|t| t.as_str() == e.event_type)
            .is_none_or(|t| t.from_source());
        !about_a_user
            || self
                .subjects
                .as_ref()
                .is_none_or(|s| s.is_match(e.subject.as_ref()))
    }
}

/// Any kind's sink with the subscription its table chose: the kind sends what it is given, the
/// engine asks [`Sink::takes`] what to give it and [`Sink::redactor`] what it may see.
pub(super) struct Subscribed {
    inner: Box<dyn Sink>,
    route: Arc<Route>,
    redactor: Option<Redactor>,
}

impl Subscribed {
    /// `sink` taking what `subscription` chooses; the sink itself when it chooses nothing.
    pub(super) fn wrap(
        sink: Box<dyn Sink>,
        subscription: &Subscription,
    ) -> Result<Box<dyn Sink>, RedactError> {
        if subscription.written().is_empty() {
            return Ok(sink);
        }
        let redactor = subscription.redactor(sink.name())?;
        Ok(Box::new(Subscribed {
            inner: sink,
            route: Arc::new(Route::new(subscription)),
            redactor,
        }))
    }
}

impl Sink for Subscribed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn delivery(&self) -> Delivery {
        self.inner.delivery()
    }

    fn encoder(&self) -> &Encoder {
        self.inner.encoder()
    }

    fn takes(&self, e: &Envelope<'_>) -> bool {
        self.route.takes(e)
    }

    fn redactor(&self) -> Option<&Redactor> {
        self.redactor.as_ref()
    }

    fn prepare(&self, offset: u64) -> BoxFuture<'_, Result<(), SinkError>> {
        self.inner.prepare(offset)
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        self.inner.send(batch)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SinkError>> {
        self.inner.probe()
    }

    fn takes_test_events(&self) -> bool {
        self.inner.takes_test_events()
    }

    fn recover(&self) {
        self.inner.recover()
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        self.inner.fleet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEvent;

    fn takes(route: &Route, source: &str, event_type: &str, subject: &str) -> bool {
        let stored = StoredEvent {
            offset: 0,
            bytes: serde_json::to_vec(&serde_json::json!({
                "specversion": "1.0", "id": "01900000-0000-7000-8000-000000000000",
                "source": source, "type": event_type, "subject": subject,
                "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
                "sequence": "00000000000000000000", "data": {},
            }))
            .unwrap()
            .into(),
        };
        route.takes(&Envelope::parse(&stored).unwrap())
    }

    fn route(toml: &str) -> Route {
        Route::new(&toml::from_str::<Subscription>(toml).unwrap())
    }

    #[test]
    fn events_about_no_user_pass_subjects_and_a_checkpoint_passes_sources() {
        let r = route("sources = [\"prod\"]\nsubjects = [\"4*\"]");
        assert!(takes(&r, "superset://prod", "user.created", "42"));
        assert!(!takes(&r, "superset://prod", "user.created", "7"));
        assert!(!takes(&r, "superset://test", "user.created", "42"));
        assert!(takes(&r, "superset://prod", "sync.completed", "sync"));
        assert!(!takes(&r, "kylin://bi", "sync.completed", "sync"));
        assert!(takes(&r, "rollcall://0193", "rollcall.checkpoint", "chain"));
        let r = route("event_types = [\"user.deleted\"]");
        assert!(!takes(&r, "superset://prod", "sync.completed", "sync"));
        assert!(!takes(
            &r,
            "rollcall://0193",
            "rollcall.checkpoint",
            "chain"
        ));
    }
}
