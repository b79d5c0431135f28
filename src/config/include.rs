//! `include`: the files of more `[[sources]]` tables that the main config file names by glob,
//! relative to its own directory, so that a fleet of sources (one per business unit or
//! customer) is a file each (docs/scaling.md, Fleets).
//!
//! Owns which files a pattern names (one path component at a time: `*`, `?`, `[…]` and `{…}`
//! within a component, never `**`; names starting with `.` only for a pattern that does, so
//! an editor's lock and swap files are never read; in name order) and what an included file
//! may hold: `[[sources]]` tables and nothing else. It reads only the files and directories the
//! patterns name, and never follows a pattern out of the components it spells.

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobMatcher};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::sources::{self, Located, Seen};
use crate::settings::Problems;

/// A file an `include` pattern named, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct FileText {
    pub path: PathBuf,
    pub text: String,
}

/// The `include` patterns of `doc` (the main file, which `p` reports on), each with its span.
/// A value that is not an array of strings is left to the top level's own check.
pub(super) fn patterns<'d>(
    doc: &'d Spanned<DeTable<'_>>,
) -> Vec<(&'d str, std::ops::Range<usize>)> {
    let Some(DeValue::Array(items)) = doc.get_ref().get("include").map(|v| v.get_ref()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), item.span())),
            _ => None,
        })
        .collect()
}

/// Every file the patterns name, each once, in the patterns' order and, within one pattern, in
/// name order; the main file itself (`main`) is never one of them. A pattern that cannot be
/// followed is a problem at its line in `p`.
pub(super) fn files(
    main: &Path,
    patterns: &[(&str, std::ops::Range<usize>)],
    p: &mut Problems<'_>,
) -> Vec<FileText> {
    let dir = match main.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut seen = vec![canonical(main)];
    let mut found = Vec::new();
    for (pattern, span) in patterns {
        match expand(&dir, pattern) {
            Ok(paths) => {
                for path in paths {
                    let real = canonical(&path);
                    if seen.contains(&real) {
                        continue;
                    }
                    seen.push(real);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => found.push(FileText { path, text }),
                        Err(e) => p.at(
                            span.clone(),
                            format!("cannot read {}, which `include` names: {e}", path.display()),
                        ),
                    }
                }
            }
            Err(why) => p.at(span.clone(), format!("`include` \"{pattern}\": {why}")),
        }
    }
    found
}

/// The `[[sources]]` of one included file, and its problems (each naming the file and line);
/// `seen` holds the names and URLs met so far in any file. `main` is named in the problem of a
/// key that belongs there.
pub(super) fn read(
    file: &FileText,
    main: &Path,
    seen: &mut Seen,
) -> (Vec<Located>, usize, Vec<String>) {
    let mut p = Problems::new(&file.text, &file.path);
    let doc = match DeTable::parse(&file.text) {
        Ok(doc) => doc,
        Err(e) => {
            p.toml(&e, "syntax error");
            return (Vec::new(), 0, p.into_list());
        }
    };
    for (key, _) in doc
        .get_ref()
        .iter()
        .filter(|(k, _)| k.get_ref() != "sources")
    {
        p.at(
            key.span(),
            format!(
                "an included file holds only [[sources]] tables, not `{}`: move it to the main config file {}",
                key.get_ref(),
                main.display()
            ),
        );
    }
    let entries = sources::entries(&doc);
    let located = sources::read(&doc, &mut p, seen);
    (located, entries, p.into_list())
}

/// The paths `pattern` names under `dir`, component by component.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(pattern);
    let parts: Vec<Component<'_>> = path.components().collect();
    if parts.is_empty() {
        return Err("names no file: write a path such as \"sources.d/*.toml\"".into());
    }
    let mut at = vec![dir.to_owned()];
    let last = parts.len() - 1;
    let mut wild = false;
    for (i, part) in parts.iter().enumerate() {
        let text = part.as_os_str().to_string_lossy();
        let part_is_wild = matches!(part, Component::Normal(_)) && is_wild(&text);
        if text.contains("**") {
            return Err(
                "`**` is not supported: name each level, e.g. \"units/*/sources.toml\"".into(),
            );
        }
        if !part_is_wild {
            at = at.into_iter().map(|p| p.join(part)).collect();
            continue;
        }
        wild = true;
        let matcher = Glob::new(&text)
            .map_err(|e| format!("not a glob: {}", e.kind()))?
            .compile_matcher();
        let mut next = Vec::new();
        for parent in &at {
            next.extend(matching(
                parent,
                &matcher,
                text.starts_with('.'),
                i == last,
            )?);
        }
        at = next;
    }
    if wild {
        // A literal component after the last wildcard may name nothing in some directories.
        Ok(at.into_iter().filter(|p| p.is_file()).collect())
    } else if at.iter().all(|p| p.is_file()) {
        Ok(at)
    } else {
        Err(format!(
            "{} is not a file; a pattern without a wildcard must name one",
            at[0].display()
        ))
    }
}

/// The entries of `parent` that `matcher` matches, in name order: files for the last
/// component, directories for the others.
fn matching(
    parent: &Path,
    matcher: &GlobMatcher,
    dotted: bool,
    last: bool,
) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        // A directory a wildcard matched holds no such level: it is not one of these.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
                "cannot read the directory {}: {e}",
                parent.display()
            ))
        }
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|name| {
            let name = name.to_string_lossy();
            (dotted || !name.starts_with('.')) && matcher.is_match(name.as_ref())
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| parent.join(name))
        .filter(|p| if last { p.is_file() } else { p.is_dir() })
        .collect())
}

fn is_wild(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// The file as the system resolves it, to tell the same file named twice; itself when it
/// cannot be resolved.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, path: &str) {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "").unwrap();
    }

    fn names(dir: &Path, pattern: &str) -> Result<Vec<String>, String> {
        expand(dir, pattern).map(|paths| {
            paths
                .iter()
                .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                .collect()
        })
    }

    #[test]
    fn a_pattern_names_files_in_name_order_within_one_component_and_never_hidden_ones() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "sources.d/b.toml",
            "sources.d/a.toml",
            "sources.d/.#a.toml",
            "sources.d/a.toml~",
            "sources.d/deeper/c.toml",
            "units/x/sources.toml",
            "units/y/sources.toml",
            "units/z/other.toml",
        ] {
            touch(d.path(), f);
        }
        std::fs::create_dir(d.path().join("sources.d/dir.toml")).unwrap();
        assert_eq!(
            names(d.path(), "sources.d/*.toml").unwrap(),
            ["sources.d/a.toml", "sources.d/b.toml"]
        );
        assert_eq!(
            names(d.path(), "units/*/sources.toml").unwrap(),
            ["units/x/sources.toml", "units/y/sources.toml"]
        );
        assert_eq!(
            names(d.path(), "sources.d/{b,a}.toml").unwrap(),
            ["sources.d/a.toml", "sources.d/b.toml"]
        );
        assert_eq!(
            names(d.path(), "sources.d/.*.toml").unwrap(),
            ["sources.d/.#a.toml"]
        );
        assert!(names(d.path(), "nothing.d/*.toml")
            .unwrap_err()
            .contains("cannot read the directory"));
        assert_eq!(
            names(d.path(), "sources.d/*.json").unwrap(),
            Vec::<String>::new()
        );
        assert!(names(d.path(), "**/*.toml").unwrap_err().contains("`**`"));
        assert!(names(d.path(), "sources.d/c.toml")
            .unwrap_err()
            .contains("must name one"));
        assert_eq!(
            names(d.path(), "sources.d/b.toml").unwrap(),
            ["sources.d/b.toml"]
        );
        assert!(names(d.path(), "sources.d/[.toml")
            .unwrap_err()
            .contains("not a glob"));
    }
}
