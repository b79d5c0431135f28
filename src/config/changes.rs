//! What a config read again changes: which sources were added, removed or changed (any key of
//! a source's table), and which other keys of the main file differ. `rollcall run` reads the
//! config again on SIGHUP and applies the first, and only warns of the others.
//!
//! Owns the comparison, on tables as written (comments and layout aside), so a changed source
//! is told without knowing its kind. It reads nothing and decides nothing about what to do.

use std::collections::{BTreeSet, HashMap};

use super::sources::Origin;

/// How the set of sources differs between two configs, by name; each list in its config's
/// order (removed in the old one's, the others in the new one's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// In both, with a table that differs in at least one key.
    pub changed: Vec<String>,
}

impl SourceChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The changes from `old` to `new` (each a source's name and origin, in config order). Only
/// the tables count: a source moved to another file or line, unchanged, is the same source.
pub(super) fn between(old: &[(String, Origin)], new: &[(String, Origin)]) -> SourceChanges {
    let before: HashMap<&str, &Origin> = old.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let after: HashMap<&str, &Origin> = new.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let mut changes = SourceChanges::default();
    for (name, origin) in new {
        match before.get(name.as_str()) {
            None => changes.added.push(name.clone()),
            Some(was) if was.table != origin.table => changes.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old
        .iter()
        .filter(|(name, _)| !after.contains_key(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    changes
}

/// The top-level keys whose values differ between `old` and `new` (present in one only, or
/// different in both), by name.
pub(super) fn keys_changed(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(k.as_str()) != new.get(k.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, file: &str, line: usize, table: &str) -> (String, Origin) {
        let table: toml::Table = toml::from_str(table).unwrap();
        (
            name.to_owned(),
            Origin {
                file: file.into(),
                line,
                table: toml::Value::Table(table),
            },
        )
    }

    #[test]
    fn sources_added_removed_and_changed_are_told_apart_by_name_and_table() {
        let old = [
            source(
                "a",
                "rollcall.toml",
                5,
                "url = \"http://a\"\npoll_interval = \"30s\"",
            ),
            source("b", "sources.d/b.toml", 1, "url = \"http://b\""),
            source("c", "sources.d/c.toml", 1, "url = \"http://c\""),
            source("gone", "sources.d/gone.toml", 1, "url = \"http://g\""),
        ];
        let new = [
            source("new", "sources.d/new.toml", 1, "url = \"http://n\""),
            // The same keys, written elsewhere, in another order: unchanged.
            source(
                "a",
                "sources.d/a.toml",
                9,
                "poll_interval = \"30s\"\nurl = \"http://a\"",
            ),
            // One key more.
            source(
                "b",
                "sources.d/b.toml",
                1,
                "url = \"http://b\"\nmax_retries = 2",
            ),
            // One value other.
            source("c", "sources.d/c.toml", 1, "url = \"http://c2\""),
        ];
        let changes = between(&old, &new);
        assert_eq!(
            changes,
            SourceChanges {
                added: vec!["new".into()],
                removed: vec!["gone".into()],
                changed: vec!["b".into(), "c".into()],
            }
        );
        assert!(between(&old, &old).is_empty());
        let removed_only = between(&old, &old[..1]);
        assert_eq!(removed_only.removed, ["b", "c", "gone"]);
        assert!(removed_only.added.is_empty() && removed_only.changed.is_empty());
    }

    #[test]
    fn the_top_level_keys_that_differ_are_named_once_each() {
        let old: toml::Table = toml::from_str(
            "listen = \"127.0.0.1:1\"\n[store]\npath = \"a\"\n[[sinks]]\nname = \"s\"",
        )
        .unwrap();
        let new: toml::Table = toml::from_str(
            "max_concurrent_polls = 2\nlisten = \"127.0.0.1:1\"\n[store]\npath = \"b\"\n[[sinks]]\nname = \"s\"",
        )
        .unwrap();
        assert_eq!(keys_changed(&old, &new), ["max_concurrent_polls", "store"]);
        assert!(keys_changed(&old, &old).is_empty());
    }
}
