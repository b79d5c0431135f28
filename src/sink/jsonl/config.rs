//! The `[[sinks]]` table of `kind = "jsonl"`, and its checks.
//!
//! Owns the keys of a JSONL sink and their defaults. It must never open the file: that is the
//! sink's job at start.

use serde::Deserialize;

use crate::encode::Format;
use crate::settings::{Entry, Problems};

/// Appends one JSON event per line: the format SIEM file shippers read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub name: String,
    /// File to append to; `-` is stdout.
    pub path: String,
    /// Events written (and fsynced) per batch.
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// `cloudevents` (the default: the stored event, unchanged) or `ocsf` (one OCSF 1.8.0
    /// record per event, see `encode::ocsf`).
    #[serde(default)]
    pub format: Format,
}

fn batch_size() -> usize {
    500
}

impl JsonlConfig {
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        if self.batch_size == 0 {
            p.at(
                entry.key("batch_size"),
                "`batch_size` must be at least 1".into(),
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
