//! The `[[sources]]` tables of one file, the main config file or one that `include` names: each
//! read by its kind and checked, with where it stands and what it says ([`Origin`]).
//!
//! Owns how a source table is read wherever it is written, so that a source is the same source
//! in any file. It never reads a file itself and never resolves a secret.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::settings::{check_name, one_of, parse_kinds, Entry, Problems};
use crate::source::SourceConfig;

/// Where a source's table is written and what it says: how check-config and the logs name its
/// place, and how a reload tells a changed source from an unchanged one.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub file: PathBuf,
    /// The line of the table's `[[sources]]` header.
    pub line: usize,
    /// Every key of the table with its value as written, comments and layout aside.
    pub table: toml::Value,
}

impl Origin {
    /// `file:line`, as problems name places.
    pub fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A source read from its table, and where that is.
pub(super) struct Located {
    pub(super) config: SourceConfig,
    pub(super) origin: Origin,
}

/// What must be unique across every file, with where each was first met.
#[derive(Default)]
pub(super) struct Seen {
    /// Names of sources and sinks.
    pub(super) names: HashMap<String, String>,
    /// Sources' URLs, normalized ([`crate::claim::normalize`]).
    urls: HashMap<String, String>,
}

/// Every `[[sources]]` table of `doc` (the file `p` reports on), each read by its kind and
/// checked; `seen` holds the names and URLs met so far in any file, the ones here are added.
/// Problems go to `p`; an entry with one is left out.
pub(super) fn read(
    doc: &Spanned<DeTable<'_>>,
    p: &mut Problems<'_>,
    seen: &mut Seen,
) -> Vec<Located> {
    let file = p.path().to_owned();
    let sources = parse_kinds(doc, "sources", p, |kind, at, v, p| {
        if !SourceConfig::KINDS.contains(&kind) {
            p.at(
                at,
                format!(
                    "unknown source kind `{kind}`; expected {}",
                    one_of(SourceConfig::KINDS)
                ),
            );
        }
        let config = SourceConfig::parse(kind, v, p)?;
        Some(Located {
            config,
            origin: Origin {
                file: file.clone(),
                line: p.line(&v.span()),
                table: table_as_written(kind, v),
            },
        })
    });
    for (index, s) in sources.iter().enumerate() {
        let entry = Entry {
            doc,
            array: "sources",
            index,
        };
        check_name(p, &mut seen.names, s.config.name(), entry.key("name"));
        check_url(p, &mut seen.urls, &s.config, entry.key("url"));
        s.config.kind().validate(entry, p);
    }
    sources
}

/// Two sources of one upstream would report each change twice, with ids of their own that no
/// consumer could tell for duplicates: the second is refused, naming the first.
fn check_url(
    p: &mut Problems<'_>,
    seen: &mut HashMap<String, String>,
    source: &SourceConfig,
    span: std::ops::Range<usize>,
) {
    let url = crate::claim::normalize(source.kind().login().url);
    match seen.get(&url) {
        Some(first) => p.at(
            span,
            format!(
                "source `{}` polls {url}, as {first} does already: one upstream polled by two sources would report each change twice. Keep one of them",
                source.name()
            ),
        ),
        None => {
            let first = format!("source `{}` ({})", source.name(), p.place(&span));
            seen.insert(url, first);
        }
    }
}

/// How many `[[sources]]` entries `doc` holds, read or not.
pub(super) fn entries(doc: &Spanned<DeTable<'_>>) -> usize {
    match doc.get_ref().get("sources").map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => items.len(),
        Some(_) => 1,
        None => 0,
    }
}

/// The table (`v`, without its `kind`) with its kind, as plain TOML values.
fn table_as_written(kind: &str, v: &Spanned<DeValue<'_>>) -> toml::Value {
    let mut table = toml::Value::deserialize(ValueDeserializer::from(v.clone()))
        .unwrap_or_else(|_| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = &mut table {
        t.insert("kind".into(), toml::Value::String(kind.to_owned()));
    }
    table
}
