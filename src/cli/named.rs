//! A source or sink of the config by its name, or an error listing the names there are: how
//! every command that takes a name finds what it names.

use super::error::CliError;
use crate::config::Config;

/// The source named `name` in `config`, or an error listing the ones there are.
pub(super) fn source_config<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::source::SourceConfig, CliError> {
    config
        .sources
        .iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
            CliError::UnknownSource {
                name: name.to_owned(),
                known: known.join(", "),
            }
        })
}

/// The sink named `name` in `config`, or an error listing the ones there are.
pub(super) fn sink_config<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::sink::SinkConfig, CliError> {
    config
        .sinks
        .iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
            CliError::UnknownSink {
                name: name.to_owned(),
                known: known.join(", "),
            }
        })
}
