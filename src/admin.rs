//! The local admin channel: how `events`, `status`, `replay`, `dlq`, `sink enable`, `source`
//! (`retry-login`, and the refused-login checks of `doctor` and `demo`) and `store export` reach
//! a running `rollcall run`, which holds the store (sled allows one process per store).
//!
//! Owns the socket (a Unix socket beside the store, `<store path>.sock`, owner-only), the
//! one-request-per-connection protocol (a JSON line each way) and the client side. It never
//! executes a command itself: `cli` does, the same way whether it opened the store or `run`
//! lends it its own. Nothing here listens on the network: mutating commands are reachable only
//! by the store's owner on this machine.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A request: the command line as typed (without the program name), and the config file the
/// operator's command names (its sinks may be new to the running process, e.g. a replay to a
/// sink added for it).
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub config: PathBuf,
    pub args: Vec<String>,
}

/// What the command printed and its exit code, as the operator's terminal should show them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot open the admin socket {path}; check that the directory of `[store] path` is writable")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store is already in use by another process, and no `rollcall run` answers on its admin socket {path}: stop that process, or let this command wait for it")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the running `rollcall run` sent an answer that is not its protocol's; are both the same version of rollcall?")]
    Garbled(#[source] serde_json::Error),
}

/// Where `run` listens for the store at `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut path = store.as_os_str().to_owned();
    path.push(".sock");
    PathBuf::from(path)
}

/// Listen at `path`, readable and writable by this user only. Called while holding the store,
/// so a socket already there is a dead process's leftover.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| AdminError::Bind {
        path: path.to_owned(),
        source,
    };
    // Bound under a private name, restricted, then moved into place: nobody can connect in
    // between with the process's default permissions.
    let staging = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(fail)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    std::fs::rename(&staging, path).map_err(fail)?;
    Ok(listener)
}

/// Answer requests until `until` resolves; each connection gets its own task, so a long replay
/// does not hold up a `status`.
pub async fn serve<H, F>(
    listener: UnixListener,
    handle: H,
    until: impl std::future::Future<Output = ()>,
) where
    H: Fn(Request) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Reply> + Send,
{
    tokio::pin!(until);
    loop {
        let stream = tokio::select! {
            _ = &mut until => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: cannot accept a connection");
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handle).await {
                tracing::warn!(error = %e, "admin socket: a request failed");
            }
        });
    }
}

async fn answer<H, F>(stream: UnixStream, handle: H) -> std::io::Result<()>
where
    H: Fn(Request) -> F,
    F: std::future::Future<Output = Reply>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(request).await,
        Err(e) => Reply {
            stderr: format!("error: not a request rollcall understands: {e}\n"),
            code: 2,
            ..Reply::default()
        },
    };
    let mut bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Send one request to the process listening at `path` and wait for its reply.
pub async fn ask(path: &Path, request: &Request) -> Result<Reply, AdminError> {
    let unreachable = |source| AdminError::Unreachable {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request).map_err(AdminError::Garbled)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await.map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(unreachable)?;
    serde_json::from_str(&line).map_err(AdminError::Garbled)
}
