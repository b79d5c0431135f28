//! The `[[sinks]]` table of `kind = "jsonl"`, and its checks.
//!
//! Owns the keys of a JSONL sink and their defaults. It must never open the file: that is the
//! sink's job at start.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::encode::{ocsf, Format};
use crate::settings::{DurationText, Entry, Problems};
use crate::sink::SinkKind;

/// Appends one JSON event per line to a file, or to stdout: the format SIEM file shippers
/// read (docs/sinks.md, JSONL sink).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// The sink's name, unique among sources and sinks: its cursor, `status`, metrics and
    /// commands (`replay --sink`) know it by this.
    pub name: String,
    /// File to append to; "-" is stdout.
    pub path: String,
    /// Events written, flushed and fsynced per batch, at least 1; the cursor moves once per
    /// batch.
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// What each line holds: `"cloudevents"` (the stored event, unchanged) or `"ocsf"` (one
    /// OCSF record per event in `ocsf_version`, docs/ocsf.md).
    #[serde(default)]
    pub format: Format,
    /// The OCSF version of `format = "ocsf"`: "1.8.0" keeps the records rollcall sent before
    /// it wrote 1.9.0 (docs/ocsf.md, which version).
    #[serde(default)]
    pub ocsf_version: ocsf::Version,
    /// Built-in rotation: start a new file before a batch would take the file past this many
    /// bytes; the old one becomes `<path>.1` (older ones shift up). Unset: no rotation by
    /// size (rotate with logrotate and SIGHUP instead, docs/sinks.md).
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Built-in rotation: start a new file once the current one is this old (e.g. "1d"), at
    /// least 1s. Unset: no rotation by age.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<DurationText>")]
    pub rotate_age: Option<std::time::Duration>,
    /// Rotated files kept, 1 to 1000 (`<path>.1` is the newest); older ones are deleted.
    #[serde(default = "keep")]
    pub keep: u32,
    /// The keys every sink takes (docs/sinks.md, Routing), read by the registry.
    #[serde(skip)]
    pub subscription: crate::sink::Subscription,
}

fn batch_size() -> usize {
    500
}

fn keep() -> u32 {
    5
}

impl JsonlConfig {
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        if self.batch_size == 0 {
            p.at(
                entry.key("batch_size"),
                "`batch_size` must be at least 1".into(),
            );
        }
        let rotates = self.rotate_bytes.is_some() || self.rotate_age.is_some();
        if rotates && self.path == "-" {
            p.at(
                entry.key(if self.rotate_bytes.is_some() { "rotate_bytes" } else { "rotate_age" }),
                "stdout (`path = \"-\"`) cannot be rotated: remove the rotation keys or write to a file".into(),
            );
        }
        if self.rotate_bytes == Some(0) {
            p.at(
                entry.key("rotate_bytes"),
                "`rotate_bytes` must be at least 1 (or left out: no rotation by size)".into(),
            );
        }
        if self
            .rotate_age
            .is_some_and(|a| a < std::time::Duration::from_secs(1))
        {
            p.at(
                entry.key("rotate_age"),
                "`rotate_age` must be at least a second, e.g. \"1h\" or \"1d\"".into(),
            );
        }
        if rotates && !(1..=1000).contains(&self.keep) {
            p.at(
                entry.key("keep"),
                "`keep` is how many rotated files to keep: 1 to 1000".into(),
            );
        }
    }

    /// Nothing to check before start: opening the file would create it.
    pub fn check(&self) -> Result<(), super::JsonlError> {
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "jsonl to {}",
            if self.path == "-" {
                "stdout"
            } else {
                &self.path
            }
        )
    }
}

impl crate::sink::TakesSubscription for JsonlConfig {}

impl SinkKind for JsonlConfig {
    /// A file (or stdout) takes one writer: a second one would interleave its lines with the
    /// running sink's and miss its rotations.
    fn single_writer(&self) -> bool {
        true
    }

    fn file(&self) -> Option<&std::path::Path> {
        (self.path != "-").then(|| std::path::Path::new(&self.path))
    }
}
