//! Simulators of the APIs rollcall polls, as real HTTP servers on 127.0.0.1.
//!
//! One library target, so the simulators compile once and every test binary, benchmark and
//! example links the same code. They import nothing of rollcall: they model the upstream
//! servers as documented in `docs/superset.md` (and `docs/kylin.md`), never rollcall's view
//! of them, so a test against them checks rollcall against the documented behaviour.

pub mod kylin;
pub mod superset;

/// A change a test makes to a simulator's state through its handle `H`.
pub type Change<H> = Box<dyn FnOnce(&H) + Send>;

/// The changes a test armed to be made just before a request is answered (each simulator's
/// `before_request`): counted per request whose path and query contain the change's text,
/// due once `skip` of them have gone through.
struct Changes<H> {
    armed: Vec<Armed<H>>,
}

struct Armed<H> {
    path_contains: String,
    skip: u32,
    seen: u32,
    change: Change<H>,
}

impl<H> Default for Changes<H> {
    fn default() -> Self {
        Changes { armed: Vec::new() }
    }
}

impl<H> Changes<H> {
    fn arm(&mut self, path_contains: &str, skip: u32, change: Change<H>) {
        self.armed.push(Armed {
            path_contains: path_contains.to_string(),
            skip,
            seen: 0,
            change,
        });
    }

    /// The changes due before answering a request to `path`, in the order given; the others
    /// count it if it is theirs.
    fn due(&mut self, path: &str) -> Vec<Change<H>> {
        let mut due = Vec::new();
        for mut armed in std::mem::take(&mut self.armed) {
            if path.contains(&armed.path_contains) {
                armed.seen += 1;
                if armed.seen > armed.skip {
                    due.push(armed.change);
                    continue;
                }
            }
            self.armed.push(armed);
        }
        due
    }

    /// Drop the changes not made yet; returns how many.
    fn cancel(&mut self) -> usize {
        std::mem::take(&mut self.armed).len()
    }
}

/// `text` with every `mark` in it replaced by `raw`, which may be bytes no `String` can hold
/// (how the hostile-value faults put them into an answer built as JSON).
fn splice(text: &str, mark: &str, raw: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = text.split(mark).map(str::as_bytes).collect();
    parts.join(raw)
}

/// `body` padded with spaces to `bytes` bytes (whitespace after JSON leaves the same JSON).
fn padded(mut body: Vec<u8>, bytes: usize) -> Vec<u8> {
    if body.len() < bytes {
        body.resize(bytes, b' ');
    }
    body
}

/// `body` as a response body of unknown length, sent in chunks without a `Content-Length`,
/// as a server generating its answer (or a proxy re-encoding it) sends one.
fn chunked(body: Vec<u8>) -> axum::body::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    axum::body::Body::from_stream(futures::stream::iter(chunks))
}

/// Requests being answered right now and the most at once, shared by simulators a benchmark
/// starts together: what a fleet of sources sees of a poller's concurrency.
#[derive(Debug, Default)]
pub struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl InFlight {
    /// The most requests answered at once so far.
    pub fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Count a request from now until the guard is dropped.
    pub fn enter(self: &std::sync::Arc<Self>) -> InFlightGuard {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        InFlightGuard(self.clone())
    }
}

/// One request being answered (see [`InFlight::enter`]).
pub struct InFlightGuard(std::sync::Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
