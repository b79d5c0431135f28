//! `rollcall healthcheck`: one GET of the running process's /healthz or /readyz, for a
//! container's health check.

use std::process::ExitCode;

use super::error::CliError;
use crate::config::Config;
use crate::text::error_chain;

/// `rollcall healthcheck`: one GET of /healthz or /readyz on `listen` (on the loopback address
/// when `listen` is every interface), one line, exit 0 only on 200.
pub(super) async fn healthcheck(config: &Config, ready: bool) -> Result<ExitCode, CliError> {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let path = if ready { "readyz" } else { "healthz" };
    let url = format!("http://{address}/{path}");
    let answer = async {
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
    };
    let (code, said) = match answer.await {
        Ok((status, body)) if status.is_success() => {
            (ExitCode::SUCCESS, format!("{url}: {}", body.trim()))
        }
        Ok((status, body)) => (
            ExitCode::FAILURE,
            format!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                crate::text::one_line(body.trim())
            ),
        ),
        Err(e) => (
            ExitCode::FAILURE,
            format!(
                "{url}: no answer ({}); is `rollcall run` up with this config?",
                error_chain(&e.without_url())
            ),
        ),
    };
    println!("{said}");
    Ok(code)
}
