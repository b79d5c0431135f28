//! The JSONL sink: one event per line, appended to a file (or stdout) for SIEM shippers.
//!
//! Owns the file and how a batch lands in it. Writes each event's encoded body (in
//! CloudEvents, the stored bytes unchanged), so a line is byte-identical on every redelivery,
//! and on a replay but for its marker. A batch counts as acknowledged only once it is written and fsynced; `deliver`
//! moves the cursor after that. The file's name is durable before any batch lands in it:
//! whenever the sink opens a file (new, reopened, or after renaming the old one to rotate) it
//! fsyncs the directory too. Writes are blocking: a batch is small, and the file is local.
//!
//! The file must never hold a partial line where a reader could see it for long: a batch that
//! fails half-way (a full disk) is cut back to where it began before the failure is reported,
//! and a partial last line left by a crash is cut when the sink opens the file.
//!
//! Rotation happens between batches, so a line is never split across files: on SIGHUP the
//! file is reopened by its path (logrotate's `create` mode: the old one was renamed), and with
//! `rotate_bytes`/`rotate_age` the sink renames it to `<path>.1` itself, shifting older ones.

mod config;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use config::JsonlConfig;

use super::{Delivery, Message, Order, Refusal, Sink};
use crate::encode::{Binding, Encoder, Mode};

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("sink '{sink}': cannot write {path}. Check that the directory exists, is writable and the disk is not full")]
    Io {
        sink: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink '{sink}': a write to {path} failed ({write}), and cutting the file back to its last whole line ({len} bytes) failed too: it ends in a partial line until rollcall starts again, which cuts it. Check the disk")]
    CutBack {
        sink: String,
        path: String,
        len: u64,
        write: std::io::Error,
        #[source]
        source: std::io::Error,
    },
}

impl JsonlError {
    /// A full disk or a missing directory can be fixed while rollcall waits.
    pub fn is_permanent(&self) -> bool {
        false
    }
}

/// Bumped on SIGHUP (see [`on_hangup`]); each file remembers the value it was opened at.
/// A process-wide counter, not a message to each sink: the signal belongs to the process, and
/// a sink's task may be in the middle of a batch when it comes.
static REOPENS: AtomicU64 = AtomicU64::new(0);

/// Make every JSONL sink reopen its file by path before its next batch (`rollcall run` calls
/// this on SIGHUP, after logrotate renamed the files).
pub fn on_hangup() {
    REOPENS.fetch_add(1, Relaxed);
}

/// The JSONL sink exports only the metrics every sink does.
pub const METRICS: &[(&str, &str)] = &[];

enum Target {
    Stdout,
    File(Open),
}

/// The file being appended to.
struct Open {
    file: File,
    since: Instant,
    reopens: u64,
}

/// When the sink starts a new file by itself.
struct Rotation {
    bytes: Option<u64>,
    age: Option<Duration>,
    keep: u32,
}

pub struct JsonlSink {
    name: String,
    path: String,
    batch_size: usize,
    encoder: Encoder,
    rotation: Rotation,
    target: Mutex<Target>,
}

impl JsonlConfig {
    pub fn build(&self) -> Result<Box<dyn Sink>, JsonlError> {
        let target = if self.path == "-" {
            Target::Stdout
        } else {
            Target::File(
                open(&self.name, &self.path).map_err(|source| JsonlError::Io {
                    sink: self.name.clone(),
                    path: self.path.clone(),
                    source,
                })?,
            )
        };
        Ok(Box::new(JsonlSink {
            name: self.name.clone(),
            path: self.path.clone(),
            batch_size: self.batch_size,
            // One JSON document per line: the structured form.
            encoder: Encoder {
                format: self.format,
                ocsf: self.ocsf_version,
                mode: Mode::Structured,
                binding: Binding::Http,
            },
            rotation: Rotation {
                bytes: self.rotate_bytes,
                age: self.rotate_age,
                keep: self.keep,
            },
            target: Mutex::new(target),
        }))
    }
}

/// Open `path` for appending (creating it), cutting a partial last line a crash left, then
/// fsync its directory: a file just created, or the renames of a rotation before it, are in
/// the directory only once that is synced, and a power loss before would lose the name of a
/// file whose lines were fsynced (and acknowledged).
fn open(sink: &str, path: &str) -> io::Result<Open> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let cut = cut_partial_line(&file)?;
    if cut > 0 {
        tracing::warn!(sink, path, bytes = cut, "cut a partial last line (left by a crash or a full disk) from the JSONL file; its events are written again");
    }
    sync_dir(Path::new(path))?;
    Ok(Open {
        file,
        since: Instant::now(),
        reopens: REOPENS.load(Relaxed),
    })
}

impl JsonlSink {
    fn write(&self, batch: &[Arc<Message>]) -> Result<(), JsonlError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|m| m.body.len() + 1).sum());
        for m in batch {
            buf.extend_from_slice(&m.body);
            buf.push(b'\n');
        }
        // A panic elsewhere while holding the lock leaves the file as it was: keep using it.
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            }
            Target::File(open) => {
                self.roll(open, buf.len() as u64)?;
                return self.append(&mut open.file, &buf);
            }
        };
        written.map_err(|source| self.io(source))
    }

    /// Append whole lines, or leave the file as it was: a failed write is cut back to where
    /// the batch began before the failure is reported, so a retry never lands after a partial
    /// line.
    fn append(&self, f: &mut File, buf: &[u8]) -> Result<(), JsonlError> {
        let len = f.metadata().map_err(|e| self.io(e))?.len();
        let Err(write) = f.write_all(buf).and_then(|()| f.sync_data()) else {
            return Ok(());
        };
        match f.set_len(len).and_then(|()| f.sync_data()) {
            Ok(()) => Err(self.io(write)),
            Err(source) => Err(JsonlError::CutBack {
                sink: self.name.clone(),
                path: self.path.clone(),
                len,
                write,
                source,
            }),
        }
    }

    /// Before a batch of `next` bytes: reopen after a SIGHUP, or rotate when the file is too
    /// big or too old. Only between batches, so no line is split and the cursor stays exact.
    fn roll(&self, open: &mut Open, next: u64) -> Result<(), JsonlError> {
        let len = open.file.metadata().map_err(|e| self.io(e))?.len();
        let r = &self.rotation;
        let full = r.bytes.is_some_and(|max| len > 0 && len + next > max);
        let old = r
            .age
            .is_some_and(|max| len > 0 && open.since.elapsed() >= max);
        if full || old {
            self.shift().map_err(|e| self.io(e))?;
            tracing::info!(sink = %self.name, path = %self.path, bytes = len, "rotated the JSONL file");
        } else if open.reopens == REOPENS.load(Relaxed) {
            return Ok(());
        } else {
            tracing::info!(sink = %self.name, path = %self.path, "reopening the JSONL file (SIGHUP)");
        }
        *open = self::open(&self.name, &self.path).map_err(|e| self.io(e))?;
        Ok(())
    }

    /// `<path>.N` → `<path>.N+1` (the oldest beyond `keep` deleted), then `<path>` → `<path>.1`.
    fn shift(&self) -> io::Result<()> {
        let numbered = |n: u32| format!("{}.{n}", self.path);
        match std::fs::remove_file(numbered(self.rotation.keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.rotation.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Gone already (an operator or logrotate moved it): the new file starts all the same.
        match std::fs::rename(&self.path, numbered(1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn io(&self, source: io::Error) -> JsonlError {
        JsonlError::Io {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }
}

/// fsync the directory that holds `path`.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    tests::synced(dir);
    Ok(())
}

/// Cut the file after its last newline; returns how many bytes went. Reads backwards from
/// the end in blocks, so a long file costs one block unless its last line is huge.
fn cut_partial_line(file: &File) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut block[..(end - start) as usize];
        let mut reader = file;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(len - end)
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// One batch at a time: written and fsynced, then acknowledged as a whole.
    fn delivery(&self) -> Delivery {
        Delivery {
            order: Order::Pipelined,
            batch: self.batch_size,
            max_in_flight: self.batch_size,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Building the sink opened the file for appending already.
    fn probe(&self) -> BoxFuture<'_, Result<String, super::SinkError>> {
        let said = match self.path.as_str() {
            "-" => "writes to stdout".to_owned(),
            path => format!("appends to {path}"),
        };
        Box::pin(async move { Ok(said) })
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        // Written before returning: batches land in the order they were handed over.
        let result = self.write(&batch).map_err(Refusal::new);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    thread_local! {
        /// Each directory synced on this thread, with the names in it at that moment.
        static SYNCED: RefCell<Vec<(PathBuf, Vec<String>)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn synced(dir: &Path) {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        SYNCED.with(|s| s.borrow_mut().push((dir.to_owned(), names)));
    }

    fn take_synced() -> Vec<(PathBuf, Vec<String>)> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn a_new_file_and_each_rotation_are_synced_into_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let config: JsonlConfig = toml::from_str(&format!(
            "name = \"siem\"\npath = {:?}\nrotate_bytes = 4\n",
            path.display().to_string()
        ))
        .unwrap();
        take_synced();
        let sink = config.build().unwrap();
        // Created: the directory is synced with the new name in it.
        assert_eq!(
            take_synced(),
            [(dir.path().to_owned(), vec!["events.jsonl".to_owned()])]
        );
        std::fs::write(&path, "{}\n{}\n").unwrap();
        // Past `rotate_bytes`: the next batch renames the file and starts a new one, and the
        // directory is synced after both.
        futures::executor::block_on(sink.send(Vec::new())).unwrap();
        assert_eq!(
            take_synced(),
            [(
                dir.path().to_owned(),
                vec!["events.jsonl".to_owned(), "events.jsonl.1".to_owned()]
            )]
        );
        assert_eq!(
            std::fs::read(path.with_extension("jsonl.1")).unwrap(),
            b"{}\n{}\n"
        );
    }

    #[test]
    fn a_file_named_without_a_directory_syncs_the_working_directory() {
        take_synced();
        sync_dir(Path::new("events.jsonl")).unwrap();
        assert_eq!(take_synced()[0].0, Path::new("."));
    }

    fn cut(content: &[u8]) -> (u64, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, content).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let gone = cut_partial_line(&file).unwrap();
        (gone, std::fs::read(&path).unwrap())
    }

    #[test]
    fn a_partial_last_line_is_cut_and_whole_lines_are_kept() {
        assert_eq!(cut(b"{\"a\":1}\n{\"b\":"), (5, b"{\"a\":1}\n".to_vec()));
        assert_eq!(cut(b"{\"a\":1}\n"), (0, b"{\"a\":1}\n".to_vec()));
        assert_eq!(cut(b""), (0, Vec::new()));
        assert_eq!(cut(b"{\"no newline"), (12, Vec::new()));
        let long = [b"{}\n".as_slice(), &vec![b'x'; 200_000]].concat();
        assert_eq!(cut(&long), (200_000, b"{}\n".to_vec()));
    }
}
