//! `rollcall check-config`: every problem of the config file and of the files its `include`
//! names, each with its file and line.

use std::io::Write;
use std::process::ExitCode;

use super::error::CliError;
use crate::config::Config;
use crate::text::error_chain;

pub(super) fn check_config(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let config = Config::load(path)?;
    // Secrets are resolved before anything is printed, so the verdict comes first and is one.
    let mut lines = vec![
        format!("  store: {}", config.store.path.display()),
        format!(
            "  polls: at most {} at once (max_concurrent_polls)",
            config.max_concurrent_polls
        ),
    ];
    for file in &config.files()[1..] {
        lines.push(format!("  included: {}", file.path.display()));
    }
    let mut problems = Vec::new();
    for s in &config.sources {
        let at = config
            .origin(s.name())
            .map_or_else(|| path.display().to_string(), |o| o.place());
        lines.push(format!(
            "  source {} ({at}): {}",
            s.name(),
            s.kind().describe()
        ));
        if let Err(e) = s.kind().check_secrets() {
            problems.push(format!("  {at}: source {}: {}", s.name(), error_chain(&e)));
        }
    }
    for s in &config.sinks {
        lines.push(format!("  sink {}: {}", s.name(), s.describe()));
        if let Err(e) = s.check() {
            problems.push(format!("  sink {}: {}", s.name(), error_chain(&e)));
        }
    }
    let mut out = std::io::stdout().lock();
    if problems.is_empty() {
        writeln!(out, "{}: valid", path.display())?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{}: not usable as it is: {} problem(s)",
            path.display(),
            problems.len()
        )?;
        for line in problems {
            writeln!(out, "{line}")?;
        }
        Ok(ExitCode::FAILURE)
    }
}
