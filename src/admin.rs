//! The local admin channel: how `events`, `status`, `replay`, `dlq`, `sink enable`, `source`
//! (`retry-login`, `forget`, `take-over`, and the refused-login checks of `doctor` and `demo`), `reload` and
//! `store export` reach a running `rollcall run`, which holds the store (sled allows one process
//! per store).
//!
//! Owns the socket (a Unix socket in a directory of its own beside the store,
//! `<store path>.admin/rollcall.sock`, the directory made with mode 0700 and refused when
//! anyone but its owner could write or enter it), who may ask (the peer's uid, as the kernel
//! reports it: the process's own user or root), the one-request-per-connection protocol (a JSON
//! line each way; a request of at most [`MAX_REQUEST`] bytes, read within
//! [`REQUEST_TIMEOUT`]) and the client side. It never executes a command itself: `cli` does,
//! the same way whether it opened the store or `run` lends it its own. Nothing here listens on
//! the network: mutating commands are reachable only by the store's owner on this machine, and
//! no client can hold a connection open or make the process buffer more than a request's worth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request, its newline included: a command line is a few hundred bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client has to send its whole request, and to take each part of the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request: the command line as typed (without the program name), and the config file the
/// operator's command names. The running process never loads that file on a client's word: it
/// acts on the config it was started with (its sources as it last reloaded them from its own
/// path), and refuses a request naming another file.
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

/// How much a client may send and how long it may take; [`Limits::default`] is what `run`
/// uses.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request: MAX_REQUEST,
            timeout: REQUEST_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot open the admin socket {path}; check that the directory of `[store] path` is writable")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin socket's directory {path} {why}, so another user could stand in for this rollcall or reach its socket: rollcall does not listen there. Remove the directory (rollcall creates it, owner-only) or make it a directory of this user with `chmod 700`")]
    UnsafeDirectory { path: PathBuf, why: String },
    #[error("the store is already in use by another process, and no `rollcall run` answers on its admin socket {path}: stop that process, or let this command wait for it")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the running `rollcall run` sent an answer that is not its protocol's; are both the same version of rollcall?")]
    Garbled(#[source] serde_json::Error),
}

/// Where `run` listens for the store at `store`: inside `<store>.admin/`, a directory only its
/// owner may enter.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut dir = store.as_os_str().to_owned();
    dir.push(".admin");
    PathBuf::from(dir).join("rollcall.sock")
}

/// Listen at `path` (from [`socket_path`]), inside a directory made owner-only before the
/// socket exists, so nobody else can connect at any moment, whatever the umask. Called while
/// holding the store, so a socket already there is a dead process's leftover.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| AdminError::Bind {
        path: path.to_owned(),
        source,
    };
    private_dir(path.parent().unwrap_or(Path::new(".")))?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

/// Make `dir` with mode 0700 (a umask only takes bits away), or check the one there: a real
/// directory (not a link), this user's, that no one else may write or enter.
fn private_dir(dir: &Path) -> Result<(), AdminError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(AdminError::Bind {
                path: dir.to_owned(),
                source: e,
            })
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| AdminError::Bind {
        path: dir.to_owned(),
        source,
    })?;
    let unsafe_dir = |why: String| AdminError::UnsafeDirectory {
        path: dir.to_owned(),
        why,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let own = own_uid();
    if meta.uid() != own {
        return Err(unsafe_dir(format!(
            "belongs to uid {}, not to this process's uid {own}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {:o}: others than its owner may use it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The effective uid of this process: who the admin socket answers, besides root.
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a peer of uid `peer` may ask a process running as `own`: its own user, or root
/// (who may open the store anyway).
fn may_ask(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

/// Answer requests until `until` resolves; each connection gets its own task, so a long replay
/// does not hold up a `status`, and a client that sends nothing holds up no one.
pub async fn serve<H, F>(
    listener: UnixListener,
    limits: Limits,
    handle: H,
    until: impl std::future::Future<Output = ()>,
) where
    H: Fn(Request) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Reply> + Send,
{
    tokio::pin!(until);
    let own = own_uid();
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
            if let Err(e) = answer(stream, limits, own, handle).await {
                tracing::warn!(error = %e, "admin socket: a request failed");
            }
        });
    }
}

/// What came in on a connection.
enum Received {
    Line(Vec<u8>),
    TooLarge,
    TimedOut,
}

/// Read one request line: at most `limits.max_request` bytes, within `limits.timeout`.
async fn receive(
    read: impl tokio::io::AsyncRead + Unpin,
    limits: Limits,
) -> std::io::Result<Received> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(limits.max_request as u64));
    match tokio::time::timeout(limits.timeout, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Ok(Received::TimedOut),
        Ok(read) => {
            read?;
            // Without its newline at the limit, the request goes on beyond it; without it
            // before, the client closed its side after a whole request.
            if line.len() >= limits.max_request && line.last() != Some(&b'\n') {
                Ok(Received::TooLarge)
            } else {
                Ok(Received::Line(line))
            }
        }
    }
}

async fn answer<H, F>(
    stream: UnixStream,
    limits: Limits,
    own: u32,
    handle: H,
) -> std::io::Result<()>
where
    H: Fn(Request) -> F,
    F: std::future::Future<Output = Reply>,
{
    let peer = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    let refused = |stderr: String| Reply {
        stderr,
        code: 2,
        ..Reply::default()
    };
    // The request is read (within its bounds) even from a peer that is then refused, so that
    // the refusal reaches it rather than a reset connection.
    let reply = match receive(read, limits).await? {
        Received::TimedOut => {
            tracing::warn!(
                timeout = ?limits.timeout,
                "admin socket: a client sent no whole request in time; closed its connection"
            );
            return Ok(());
        }
        _ if !may_ask(peer, own) => {
            tracing::warn!(
                peer_uid = peer,
                uid = own,
                "admin socket: refused a request from another user"
            );
            Reply {
                stderr: format!(
                    "error: the running `rollcall run` holding this store runs as uid {own} and answers only that user and root; this command ran as uid {peer}. Run it as the user that runs rollcall\n"
                ),
                code: crate::exit::STORE,
                ..Reply::default()
            }
        }
        Received::TooLarge => {
            tracing::warn!(
                limit = limits.max_request,
                "admin socket: refused a request larger than the limit"
            );
            refused(format!(
                "error: a request to the admin socket may be at most {} bytes; this one is larger\n",
                limits.max_request
            ))
        }
        Received::Line(line) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(request).await,
            Err(e) => refused(format!("error: not a request rollcall understands: {e}\n")),
        },
    };
    let mut bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    // A client that stops taking its reply is dropped, like one that stops sending.
    let stalled = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading its reply",
        )
    };
    for part in bytes.chunks(MAX_REQUEST) {
        tokio::time::timeout(limits.timeout, write.write_all(part))
            .await
            .map_err(|_| stalled())??;
    }
    tokio::time::timeout(limits.timeout, write.shutdown())
        .await
        .map_err(|_| stalled())?
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const STATUS: &[u8] = br#"{"config":"/etc/rollcall.toml","args":["status"]}"#;

    /// A server at `path` whose handler counts the requests it is given.
    fn server(path: &Path, limits: Limits) -> (Arc<AtomicUsize>, tokio::sync::oneshot::Sender<()>) {
        let listener = UnixListener::bind(path).unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let count = handled.clone();
        tokio::spawn(serve(
            listener,
            limits,
            move |request: Request| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Reply {
                        stdout: format!("ran {}", request.args.join(" ")),
                        ..Reply::default()
                    }
                }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        (handled, stop)
    }

    /// Send `bytes` (written whole before the server reads a byte: the kernel holds them) and
    /// read what comes back until the server closes the connection.
    async fn exchange(path: &Path, bytes: Vec<u8>) -> Vec<u8> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            // A bound only so that a server that never answers fails the test, not hangs it.
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            stream.write_all(&bytes).unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        })
        .await
        .unwrap()
    }

    fn reply(bytes: &[u8]) -> Reply {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn only_the_processs_own_user_and_root_may_ask() {
        assert!(may_ask(1000, 1000));
        assert!(may_ask(0, 1000), "root may open the store anyway");
        assert!(may_ask(0, 0));
        assert!(!may_ask(1001, 1000));
        assert!(!may_ask(1000, 0), "a process of root answers no other user");
    }

    #[test]
    fn the_socket_lives_in_an_owner_only_directory_and_a_loose_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir.path().join("data"));
        assert_eq!(path, dir.path().join("data.admin").join("rollcall.sock"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _enter = runtime.enter();
        drop(bind(&path).unwrap());
        let parent = path.parent().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(parent), 0o700);
        assert_eq!(mode(&path), 0o600);
        // A leftover socket of a dead process is replaced.
        drop(bind(&path).unwrap());

        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(
            err.contains("has mode 755") && err.contains("chmod 700"),
            "{err}"
        );

        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        let linked = dir.path().join("linked.admin");
        std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
        let err = bind(&linked.join("rollcall.sock")).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_of_64_kib_is_answered_and_a_longer_one_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (handled, _stop) = server(&path, Limits::default());

        // JSON may be padded with spaces: this request is exactly the limit, newline included.
        let mut at_limit = STATUS.to_vec();
        at_limit.resize(MAX_REQUEST - 1, b' ');
        at_limit.push(b'\n');
        let answered = reply(&exchange(&path, at_limit).await);
        assert_eq!((answered.code, answered.stdout.as_str()), (0, "ran status"));

        // One byte more: no newline within the limit. The server reads no further than the
        // limit, so this client's bytes are all taken and its reply is not lost to a reset.
        let mut over = STATUS.to_vec();
        over.resize(MAX_REQUEST, b' ');
        let refused = reply(&exchange(&path, over).await);
        assert_eq!(refused.code, 2);
        assert!(
            refused.stderr.contains("at most 65536 bytes"),
            "{}",
            refused.stderr
        );
        assert_eq!(handled.load(Ordering::SeqCst), 1, "the long one never ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_sends_half_a_request_and_goes_silent_is_closed_and_others_are_answered()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let limits = Limits {
            timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let (handled, _stop) = server(&path, limits);

        let mut silent = UnixStream::connect(&path).await.unwrap();
        silent.write_all(&STATUS[..10]).await.unwrap();
        // Another client meanwhile is answered as usual.
        let mut whole = STATUS.to_vec();
        whole.push(b'\n');
        assert_eq!(reply(&exchange(&path, whole).await).stdout, "ran status");
        // The silent one is closed without a reply (a bound only so that a server that keeps
        // it open fails the test instead of hanging it).
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(60), silent.read_to_end(&mut got))
            .await
            .expect("the server closes a client that sends no whole request")
            .unwrap();
        assert_eq!(closed, 0);
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }

    /// Runs only as root (as CI does): a child process that becomes `nobody` connects.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_of_another_uid_is_refused_and_its_request_never_runs() {
        use std::os::fd::FromRawFd;
        const NOBODY: u32 = 65534;
        if own_uid() != 0 {
            eprintln!("skipped: only root can become another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // This test is about the uid check alone: the directory and socket let anyone in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("s.sock");
        let (handled, _stop) = server(&path, Limits::default());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();

        // Everything the child uses is made before the fork: after it, the child of a
        // threaded process may only make system calls.
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let raw = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        assert!(raw.len() < addr.sun_path.len());
        for (to, from) in addr.sun_path.iter_mut().zip(raw) {
            *to = *from as libc::c_char;
        }
        let mut request = STATUS.to_vec();
        request.push(b'\n');
        let mut buffer = vec![0u8; 4096];
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (from_child, to_parent) = (fds[0], fds[1]);
        // SAFETY: the child calls only async-signal-safe functions on memory made above,
        // and leaves by _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::close(from_child);
                if libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                    libc::_exit(3);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                    libc::_exit(4);
                }
                let mut sent = 0;
                while sent < request.len() {
                    let n = libc::write(fd, request[sent..].as_ptr().cast(), request.len() - sent);
                    if n <= 0 {
                        libc::_exit(5);
                    }
                    sent += n as usize;
                }
                loop {
                    let n = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
                    if n <= 0 {
                        break;
                    }
                    libc::write(to_parent, buffer.as_ptr().cast(), n as usize);
                }
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "fork failed");
        // SAFETY: the write end is this process's and closed once; the read end is owned by
        // the File from here on.
        unsafe { libc::close(to_parent) };
        let mut pipe = unsafe { std::fs::File::from_raw_fd(from_child) };
        let (got, status) = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            pipe.read_to_end(&mut got).unwrap();
            let mut status = 0;
            // SAFETY: `pid` is this process's child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            (got, status)
        })
        .await
        .unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child connected as nobody (wait status {status})"
        );
        let refused = reply(&got);
        assert_eq!(refused.code, crate::exit::STORE);
        assert!(
            refused.stderr.contains("runs as uid 0") && refused.stderr.contains("uid 65534"),
            "{}",
            refused.stderr
        );
        assert_eq!(handled.load(Ordering::SeqCst), 0, "its request never ran");
    }
}
