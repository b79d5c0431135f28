//! `rollcall doctor`: reach everything the config names, changing nothing upstream, one line
//! per check. Never sends credentials an upstream refused before, and remembers a refusal it
//! meets.

use std::io::Write;
use std::process::ExitCode;

use chrono::Utc;

use super::error::CliError;
use super::forward::login_state;
use crate::config::Config;
use crate::text::error_chain;

/// Builds a source and probes it.
pub(super) struct Probing;

impl crate::source::Visit for Probing {
    type Output = futures::future::BoxFuture<'static, Vec<crate::source::Probe>>;

    fn visit<S: crate::source::Source>(self, mut source: S) -> Self::Output {
        Box::pin(async move { source.probe().await })
    }
}

/// `rollcall doctor`: one line per check, `ok` or `FAIL` and what to fix.
pub(super) async fn doctor(
    config_path: &std::path::Path,
    config: &Config,
    send_test_event: bool,
) -> Result<ExitCode, CliError> {
    let mut refused = Vec::new();
    for source in &config.sources {
        refused.push(login_state(config_path, config, source, None).await?);
    }
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    let mut line = |ok: bool, what: String| -> std::io::Result<()> {
        failed += usize::from(!ok);
        writeln!(out, "{}  {what}", if ok { "ok  " } else { "FAIL" })
    };
    let mut newly_refused = Vec::new();
    for (source, refused) in config.sources.iter().zip(refused) {
        let name = source.name();
        if let Some(refusal) = refused {
            let error = crate::source::SourceError::RefusedBefore {
                name: name.to_owned(),
                refusal,
            };
            line(false, format!("source {name}: log in: {error}"))?;
            continue;
        }
        match source.build(Probing) {
            Err(e) => line(false, format!("source {name}: {}", error_chain(&e)))?,
            Ok(probe) => {
                for p in probe.await {
                    match p.result {
                        Ok(()) => line(true, format!("source {name}: {}", p.what))?,
                        Err(e) => {
                            if e.refused_login() {
                                newly_refused.push((source, e.to_string()));
                            }
                            line(
                                false,
                                format!("source {name}: {}: {}", p.what, error_chain(&e)),
                            )?
                        }
                    }
                }
            }
        }
    }
    for (source, message) in newly_refused {
        login_state(config_path, config, source, Some(message)).await?;
    }
    for sink in &config.sinks {
        let name = sink.name();
        let built = match sink.build() {
            Ok(built) => built,
            Err(e) => {
                line(false, format!("sink {name}: {}", error_chain(&e)))?;
                continue;
            }
        };
        match built.probe().await {
            Ok(said) => line(true, format!("sink {name}: {said}"))?,
            Err(e) => line(false, format!("sink {name}: {}", error_chain(&e)))?,
        }
        if send_test_event && built.takes_test_events() {
            let message = test_event();
            let id = message.id.clone();
            match built.send(vec![std::sync::Arc::new(message)]).await {
                Ok(()) => line(
                    true,
                    format!("sink {name}: accepted a signed test event (id {id})"),
                )?,
                Err(r) => line(
                    false,
                    format!(
                        "sink {name}: refused the signed test event (id {id}): {}",
                        error_chain(&r.error)
                    ),
                )?,
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The event `doctor --send-test-event` sends: a CloudEvent no source ever emits, so a receiver
/// can tell it from the log's events and drop it.
pub(super) fn test_event() -> crate::sink::Message {
    let id = uuid::Uuid::now_v7().to_string();
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "rollcall://doctor",
        "type": "rollcall.test",
        "subject": "doctor",
        "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": {"message": "a test event from `rollcall doctor --send-test-event`; drop it"},
    });
    crate::sink::Message {
        offset: 0,
        id,
        key: "rollcall://doctor".into(),
        headers: crate::sink::Headers::default(),
        content_type: "application/cloudevents+json".into(),
        body: body.to_string().into(),
        observed: None,
        replayed: false,
        tombstone: false,
    }
}
