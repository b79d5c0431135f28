//! The machinery every config table is read with: spanned TOML, problems with their lines, the
//! one secret loader, and the name rule; and how a table describes itself to `rollcall config
//! reference` ([`table_schema`], [`DurationText`]).
//!
//! Owns how a problem is reported (file, line, the line itself, in line order, all at once) and
//! how a secret is read. It knows no component: each source and sink kind parses and checks its
//! own table with these tools (`src/source/<kind>/config.rs`, `src/sink/<kind>/config.rs`), and
//! `config` assembles the file. It must never log or return a secret's value.
//!
//! serde's internally tagged enums buffer a table and lose the position of the offending key,
//! and serde stops at a struct's first error; so tables are read from the spanned document
//! (`toml::de::DeTable`), and a table with an error is read again without the offending key until
//! it reads, so that every problem of the file is reported in one go.

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// Every problem found in a config file, each with its line.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct Invalid {
    pub problems: Vec<String>,
}

/// Collects problems with their positions; [`Problems::into_list`] sorts them by line.
pub struct Problems<'a> {
    raw: &'a str,
    path: &'a Path,
    list: Vec<(usize, String)>,
}

impl<'a> Problems<'a> {
    pub fn new(raw: &'a str, path: &'a Path) -> Problems<'a> {
        Problems {
            raw,
            path,
            list: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A problem at `span`, with the line quoted; `0..0` is a problem of the whole file
    /// (listed first).
    pub fn at(&mut self, span: Range<usize>, message: String) {
        self.push(span, message, true);
    }

    /// A problem at `span` whose line holds a secret: its number is given, never its text.
    pub fn at_secret_line(&mut self, span: Range<usize>, message: String) {
        self.push(span, message, false);
    }

    /// The file these problems are in.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// The line (from 1) at which `span` starts.
    pub fn line(&self, span: &Range<usize>) -> usize {
        let start = span.start.min(self.raw.len());
        self.raw[..start].matches('\n').count() + 1
    }

    /// `file:line` of `span`, as problems name places.
    pub fn place(&self, span: &Range<usize>) -> String {
        format!("{}:{}", self.path.display(), self.line(span))
    }

    fn push(&mut self, span: Range<usize>, message: String, quote: bool) {
        if span == (0..0) {
            self.list
                .push((0, format!("{}: {message}", self.path.display())));
            return;
        }
        let start = span.start.min(self.raw.len());
        let line_no = self.line(&span);
        let mut text = format!("{}: {message}", self.place(&span));
        if quote {
            let line = self.raw.lines().nth(line_no - 1).unwrap_or("").trim();
            text.push_str(&format!("\n    | {line}"));
        }
        self.list.push((start + 1, text));
    }

    pub fn toml(&mut self, e: &toml::de::Error, fallback: &str) {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_owned();
        self.at(
            span,
            if msg.is_empty() {
                fallback.to_owned()
            } else {
                msg
            },
        );
    }

    /// Deserialize `T` from a table, recording every error instead of stopping at the first:
    /// after each error the offending key is dropped and the table read again. `None` when
    /// anything was wrong.
    pub fn de<T: DeserializeOwned>(&mut self, v: &Spanned<DeValue<'_>>) -> Option<T> {
        let whole = v.span();
        let mut v = v.clone();
        let mut removed: Vec<String> = Vec::new();
        let mut clean = true;
        // Each retry drops a key, so the loop ends; the bound guards against a deserializer
        // that reports an error no key explains.
        for _ in 0..256 {
            match T::deserialize(ValueDeserializer::from(v.clone())) {
                Ok(t) => return clean.then_some(t),
                Err(e) => {
                    let msg = e.message().trim().to_owned();
                    // A required key we dropped for being wrong was reported already.
                    if removed
                        .iter()
                        .any(|k| msg == format!("missing field `{k}`"))
                    {
                        return None;
                    }
                    clean = false;
                    let span = e.span().unwrap_or(whole.clone());
                    self.at(span.clone(), msg);
                    match remove_key_at(&mut v, span.start) {
                        Some(key) => removed.push(key),
                        None => return None,
                    }
                }
            }
        }
        None
    }

    pub fn into_list(mut self) -> Vec<String> {
        self.list.sort_by_key(|(at, _)| *at);
        self.list.into_iter().map(|(_, m)| m).collect()
    }

    pub fn into_error(self) -> Invalid {
        Invalid {
            problems: self.into_list(),
        }
    }
}

/// Drop the innermost key whose name or value holds `at`; returns its name.
fn remove_key_at(v: &mut Spanned<DeValue<'_>>, at: usize) -> Option<String> {
    let DeValue::Table(table) = v.get_mut() else {
        return None;
    };
    let key = table
        .iter()
        .find(|(k, val)| k.span().contains(&at) || val.span().contains(&at))
        .map(|(k, _)| k.get_ref().to_string())?;
    if let Some(inner) = table.get_mut(key.as_str()) {
        if let Some(deeper) = remove_key_at(inner, at) {
            return Some(deeper);
        }
    }
    table.remove(key.as_str());
    Some(key)
}

/// One `[[sources]]` or `[[sinks]]` entry: where its keys are, for problems found after parsing.
#[derive(Clone, Copy)]
pub struct Entry<'d, 'i> {
    pub doc: &'d Spanned<DeTable<'i>>,
    pub array: &'d str,
    pub index: usize,
}

impl Entry<'_, '_> {
    /// The span of the whole entry.
    pub fn span(&self) -> Range<usize> {
        match self.doc.get_ref().get(self.array).map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items.get(self.index).map(|i| i.span()).unwrap_or(0..0),
            _ => 0..0,
        }
    }

    /// `field`'s value when it is a string.
    pub fn string(&self, field: &str) -> Option<String> {
        let items = match self.doc.get_ref().get(self.array).map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items,
            _ => return None,
        };
        match items.get(self.index).map(|i| i.get_ref()) {
            Some(DeValue::Table(t)) => match t.get(field).map(|v| v.get_ref()) {
                Some(DeValue::String(s)) => Some(s.to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The span of `field`'s value, or of the entry when the key is absent.
    pub fn key(&self, field: &str) -> Range<usize> {
        if let Some(DeValue::Array(items)) = self.doc.get_ref().get(self.array).map(|v| v.get_ref())
        {
            if let Some(DeValue::Table(t)) = items.get(self.index).map(|i| i.get_ref()) {
                if let Some(v) = t.get(field) {
                    return v.span();
                }
            }
        }
        self.span()
    }
}

/// Deserialize each table of `[[key]]` with the parser its `kind` selects.
pub fn parse_kinds<T>(
    doc: &Spanned<DeTable<'_>>,
    key: &str,
    p: &mut Problems<'_>,
    mut parse: impl FnMut(&str, Range<usize>, &Spanned<DeValue<'_>>, &mut Problems<'_>) -> Option<T>,
) -> Vec<T> {
    let Some(array) = doc.get_ref().get(key) else {
        return Vec::new();
    };
    let DeValue::Array(items) = array.get_ref() else {
        p.at(
            array.span(),
            format!("`{key}` must be an array of tables: write [[{key}]]"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let DeValue::Table(table) = item.get_ref() else {
            p.at(
                item.span(),
                format!("each entry of `{key}` must be a table"),
            );
            continue;
        };
        let Some(kind) = table.get("kind") else {
            p.at(item.span(), format!("[[{key}]] entry has no `kind`"));
            continue;
        };
        let DeValue::String(kind_str) = kind.get_ref() else {
            p.at(kind.span(), "`kind` must be a string".into());
            continue;
        };
        let kind_str = kind_str.to_string();
        // `kind` has done its job; the kind's own struct denies unknown keys, so drop it.
        let mut rest = table.clone();
        rest.remove("kind");
        let value = Spanned::new(item.span(), DeValue::Table(rest));
        if let Some(t) = parse(&kind_str, kind.span(), &value, p) {
            out.push(t);
        }
    }
    out
}

/// A list of durations as written (`["0s", "5m"]`), for `#[serde(with = ...)]` together with
/// `#[schemars(with = "Vec<DurationText>")]`.
pub mod durations {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }

    /// As written, for the default `rollcall config reference` shows.
    pub fn serialize<S: serde::Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }
}

/// The retry schedule Stripe and Svix made common, 99,305 s (about 27.6 hours) in all: the
/// default of every sink that retries each event on its own (webhooks, SSF pushes).
pub fn common_retry_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000]
        .map(Duration::from_secs)
        .to_vec()
}

/// `retry_schedule` and `max_in_flight` of a sink that retries each event on its own: at
/// least one entry, none over 30 days, and at least one event in flight.
pub fn check_retries(
    entry: Entry<'_, '_>,
    p: &mut Problems<'_>,
    schedule: &[Duration],
    max_in_flight: usize,
) {
    if let Some(message) = schedule.iter().find_map(|d| {
        out_of_range(
            "each `retry_schedule` entry",
            *d,
            &(Duration::ZERO..=30 * DAY),
        )
    }) {
        p.at(entry.key("retry_schedule"), message);
    }
    if schedule.is_empty() {
        p.at(
            entry.key("retry_schedule"),
            "`retry_schedule` needs at least one entry, e.g. [\"0s\"] for a single attempt".into(),
        );
    }
    if max_in_flight == 0 {
        p.at(
            entry.key("max_in_flight"),
            "`max_in_flight` must be at least 1".into(),
        );
    }
}

/// How a duration key is written (`"30s"`, `"15m"`, `"1h 30m"`, `"1day"`), as `rollcall config
/// reference` shows it: only the schema sees this type (`#[schemars(with = "DurationText")]`),
/// the key itself is a `Duration` read with `humantime_serde`.
pub struct DurationText;

impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "duration" })
    }
}

/// The schema of one config table as `rollcall config reference` reads it: the keys as written,
/// with their doc comments and the defaults serde fills in, every nested type inline.
pub fn table_schema<T: schemars::JsonSchema>() -> schemars::Schema {
    schemars::generate::SchemaSettings::default()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Units duration bounds are written in.
pub const SECOND: Duration = Duration::from_secs(1);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// Each of `durations` (config key, value, accepted range) must lie in its range. A zero or
/// tiny interval would hammer the upstream (`poll_interval = "1ns"` is dozens of requests a
/// second); a huge one is never meant and overflows the date arithmetic that uses it
/// (`"500000000000years"` is a valid humantime duration).
pub fn check_durations(
    entry: Entry<'_, '_>,
    p: &mut Problems<'_>,
    durations: &[(&str, Duration, RangeInclusive<Duration>)],
) {
    for (key, d, range) in durations {
        if let Some(message) = out_of_range(&format!("`{key}`"), *d, range) {
            p.at(entry.key(key), message);
        }
    }
}

/// Why `d` is outside `range`, in words naming `what` (e.g. "`timeout`"); `None` when it is
/// inside.
pub fn out_of_range(what: &str, d: Duration, range: &RangeInclusive<Duration>) -> Option<String> {
    if range.contains(&d) {
        return None;
    }
    let show = |d: &Duration| humantime::format_duration(*d).to_string();
    Some(if range.start().is_zero() {
        format!(
            "{what} must be at most {}, not {}",
            show(range.end()),
            show(&d)
        )
    } else {
        format!(
            "{what} must be between {} and {}, not {}",
            show(range.start()),
            show(range.end()),
            show(&d)
        )
    })
}

/// "`a`, `b` or `c`", for messages that list the known kinds.
pub fn one_of(kinds: &[&str]) -> String {
    let quoted: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Names identify sources and sinks in events, metrics and the store: unique across every file
/// of the config, and plain. `seen` maps each name met so far to its place (`file:line`), so a
/// duplicate names both places, in whichever files they are.
pub fn check_name(
    p: &mut Problems<'_>,
    seen: &mut HashMap<String, String>,
    name: &str,
    span: Range<usize>,
) {
    match seen.get(name) {
        Some(first) => p.at(
            span.clone(),
            format!("duplicate name `{name}`: {first} has it already; every source and sink needs its own"),
        ),
        None => {
            seen.insert(name.to_owned(), p.place(&span));
        }
    }
    if !valid_name(name) {
        p.at(
            span,
            format!("name `{name}` may only hold letters, digits, `-`, `_` and `.`"),
        );
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A secret the config points at: an environment variable or a file, never the value itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {var} (named by `{key}`) is not set")]
    Unset { var: String, key: String },
    #[error("cannot read `{key}` {path}")]
    File {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("set exactly one of `{env_key}` or `{file_key}`")]
    Neither { env_key: String, file_key: String },
}

/// Where one secret comes from, as the config names it.
pub struct SecretRef<'a> {
    /// The config keys, for messages: e.g. `password_env` and `password_file`.
    pub env_key: &'a str,
    pub file_key: &'a str,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl SecretRef<'_> {
    /// Read the secret. A file's surrounding whitespace and newlines are dropped (secret files
    /// written by `echo` or by Kubernetes end with one).
    pub fn read(&self) -> Result<SecretString, SecretError> {
        match (self.env, self.file) {
            (Some(var), None) => {
                std::env::var(var)
                    .map(SecretString::from)
                    .map_err(|_| SecretError::Unset {
                        var: var.to_owned(),
                        key: self.env_key.to_owned(),
                    })
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| SecretString::from(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| SecretError::File {
                    key: self.file_key.to_owned(),
                    path: path.to_owned(),
                    source,
                }),
            _ => Err(SecretError::Neither {
                env_key: self.env_key.to_owned(),
                file_key: self.file_key.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct T {
        a: u32,
        b: u32,
        c: Option<u32>,
    }

    fn problems(raw: &str) -> Vec<String> {
        let doc = DeTable::parse(raw).unwrap();
        let whole = Spanned::new(doc.span(), DeValue::Table(doc.get_ref().clone()));
        let mut p = Problems::new(raw, Path::new("f.toml"));
        assert!(p.de::<T>(&whole).is_none());
        p.into_list()
    }

    #[test]
    fn every_bad_key_of_one_table_is_reported_in_line_order() {
        let list = problems("a = \"x\"\nb = \"y\"\nc = \"z\"\n");
        assert_eq!(list.len(), 3, "{list:?}");
        assert!(list[0].starts_with("f.toml:1:"), "{list:?}");
        assert!(list[1].starts_with("f.toml:2:"), "{list:?}");
        assert!(list[2].starts_with("f.toml:3:"), "{list:?}");
    }

    #[test]
    fn a_dropped_required_key_is_not_reported_again_as_missing() {
        let list = problems("a = \"x\"\nb = 2\n");
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].contains("f.toml:1:"), "{list:?}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_together() {
        let list = problems("a = 1\nbb = 2\nb = \"y\"\n");
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list[0].contains("unknown field `bb`"), "{list:?}");
    }

    #[test]
    fn one_of_lists_kinds_in_words() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline_and_an_unset_variable_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "hunter2\n").unwrap();
        let from_file = SecretRef {
            env_key: "password_env",
            file_key: "password_file",
            env: None,
            file: Some(&file),
        };
        use secrecy::ExposeSecret;
        assert_eq!(from_file.read().unwrap().expose_secret(), "hunter2");
        let unset = SecretRef {
            env_key: "password_env",
            file_key: "password_file",
            env: Some("ROLLCALL_TEST_SURELY_UNSET"),
            file: None,
        };
        assert_eq!(
            unset.read().unwrap_err().to_string(),
            "environment variable ROLLCALL_TEST_SURELY_UNSET (named by `password_env`) is not set"
        );
    }
}
