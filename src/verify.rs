//! `rollcall verify`: checking a copy of the event log end to end (a JSONL file, a Kafka sink's
//! topic read back, the store's own log) and saying whether it is intact, broken (and where
//! first), or unverifiable (docs/integrity.md).
//!
//! Owns reading each kind of copy into the verifier (`chain::verify`), what a copy must agree
//! with (a file verified against the store: the store's event at each line's offset, and the end
//! the JSONL sink writing it confirmed; the store: the head and start it records), and the
//! verdict's words and exit code. A file holds CloudEvents or OCSF records (`ocsf`), told
//! line by line. It only reads: it never changes the store or a destination.

mod ocsf;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::chain::attested::{self, Form};
use crate::chain::record::{read, Place, Unreadable, Wire};
use crate::chain::verify::{Break, End, Held, Options, Reference, Report, Verifier};
use crate::chain::{self, hex};
use crate::config::Config;
use crate::exit;
use crate::sink::{ReadBack, SinkError};
use crate::store::{Store, StoreError};

/// Events read from the store at once.
const STORE_CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: check the path and that this user may read it")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Chain(#[from] chain::verify::VerifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{path} mixes formats: line {line} is {this}, but line {first_line} {first}. A file holds one sink's events in one format: verify each sink's file on its own")]
    Mixed {
        path: PathBuf,
        line: u64,
        this: &'static str,
        first_line: u64,
        first: &'static str,
    },
}

/// What a verification found.
#[derive(Debug)]
pub enum Verdict {
    Intact(Report),
    /// The first broken place, and what was intact before it.
    Broken(Break, Report),
    /// Nothing to check, and why.
    Unverifiable(Report, &'static str),
}

impl Verdict {
    fn of(verifier: Verifier<'_>, broken: Option<Break>, end: Place) -> Verdict {
        let report = verifier.report().clone();
        if let Some(b) = broken {
            return Verdict::Broken(b, report);
        }
        match verifier.finish(end) {
            Err(b) => Verdict::Broken(b, report),
            Ok(report) => match report.unverifiable() {
                Some(why) => Verdict::Unverifiable(report, why),
                None => Verdict::Intact(report),
            },
        }
    }

    /// The exit code: 0 intact, [`exit::BROKEN`], [`exit::UNVERIFIABLE`].
    pub fn code(&self) -> u8 {
        match self {
            Verdict::Intact(_) => 0,
            Verdict::Broken(..) => exit::BROKEN,
            Verdict::Unverifiable(..) => exit::UNVERIFIABLE,
        }
    }

    /// Say what was found; returns the exit code.
    pub fn print(&self, out: &mut dyn Write) -> io::Result<u8> {
        match self {
            Verdict::Intact(r) => {
                let range = match (r.first, r.last) {
                    (Some(first), Some(last)) => format!("log offsets {first} to {last}"),
                    _ => "no offset".into(),
                };
                let from = if r.from_genesis {
                    "from the chain's start".to_owned()
                } else {
                    format!(
                        "continuing a chain from before log offset {} (outside this copy)",
                        r.first.unwrap_or(0)
                    )
                };
                writeln!(out, "intact: {} chained events, {range}, {from}", r.chained)?;
                counts(r, out)?;
                signatures(r, out)?;
            }
            Verdict::Broken(b, r) => {
                writeln!(out, "BROKEN at {b}")?;
                writeln!(
                    out,
                    "  before it: {} chained events checked and intact",
                    r.chained
                )?;
            }
            Verdict::Unverifiable(r, why) => {
                writeln!(out, "UNVERIFIABLE: {why}")?;
                writeln!(out, "  {} events read, {} chained", r.events, r.chained)?;
                counts(r, out)?;
            }
        }
        Ok(self.code())
    }
}

fn counts(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if r.duplicates > 0 {
        writeln!(
            out,
            "  {} duplicates (redeliveries or replays of events already seen) recognised",
            r.duplicates
        )?;
    }
    if r.unchained > 0 {
        writeln!(
            out,
            "  {} events from before the store began its chain: nothing proves them",
            r.unchained
        )?;
    }
    if r.unchainable > 0 {
        writeln!(
            out,
            "  {} OCSF 1.8.0 records, which carry no chain: nothing in this copy proves them (verify it with --against-store)",
            r.unchainable
        )?;
    }
    Ok(())
}

fn signatures(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if r.signed_through.is_none() && r.left_out > 0 {
        return writeln!(out, "  {} checkpoints sign this chain but are not in this copy (OCSF has no record for them), each recognised by its id in the event after it: `rollcall verify FILE --against-store` checks their signatures", r.left_out);
    }
    let Some(through) = r.signed_through else {
        return writeln!(out, "  no signed checkpoint: any change shows, but not one made by whoever recomputes every hash after it (sign with `[store] signing_key_file`)");
    };
    let keys: Vec<&str> = r.keys.iter().map(String::as_str).collect();
    let whose = if r.pinned {
        "the pinned key".to_owned()
    } else {
        format!(
            "{}: not pinned, so compare it with the key you trust (`rollcall pubkey`), or pass --key",
            keys.join(", ")
        )
    };
    writeln!(
        out,
        "  signed: {} checkpoints, the last signing log offsets up to {through}, by {whose}",
        r.checkpoints
    )?;
    if let Some(last) = r.last.filter(|l| *l > through + 1) {
        writeln!(
            out,
            "  log offsets {} to {last} are chained but no checkpoint signs them yet",
            through + 2
        )?;
    }
    Ok(())
}

/// A JSONL file of CloudEvents or of OCSF records, line by line; with `against`, each line is
/// compared with the store's event at its offset (lines may then skip events, as a filtered copy
/// does), and the file must reach what the sink writing it confirmed.
pub fn file(
    path: &Path,
    key: Option<VerifyingKey>,
    against: Option<(&Store, &Config)>,
) -> Result<Verdict, VerifyError> {
    let unreadable = |source| VerifyError::Read {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let mut reference = against.map(|(store, _)| StoreReference(store));
    let writer = match against {
        Some((store, config)) => writer(store, config, path)?,
        None => None,
    };
    // A file a JSONL sink writes holds every event from its first line on; any other copy
    // compared with the store may skip some (a webhook's receiver with `event_types`).
    let gaps = against.is_some() && writer.is_none();
    let end = writer.flatten();
    let must_reach = end.as_ref().map(|e| e.offset);
    let mut verifier = Verifier::new(Options {
        pinned: key,
        reference: reference.as_mut().map(|r| r as &mut dyn Reference),
        gaps,
        start: None,
        end,
    });
    let mut ocsf = ocsf::Copy::new(against.map(|(store, _)| store));
    let mut input = io::BufReader::with_capacity(1 << 20, f);
    let mut line = Vec::new();
    let mut n = 0;
    let mut first: Option<(u64, &'static str)> = None;
    let broken = loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(unreadable)? == 0 {
            break None;
        }
        n += 1;
        let place = Place::Line(n);
        let Some(whole) = line.strip_suffix(b"\n") else {
            let cut =
                Unreadable("the last line does not end in a newline: the file was cut".into());
            break verifier.feed(place, Err(cut))?.err();
        };
        let form = match attested::form(whole) {
            Ok(form) => form,
            Err(e) => break verifier.feed(place, Err(e))?.err(),
        };
        let this = match form {
            Form::CloudEvent => "a CloudEvent",
            Form::Ocsf { .. } => "an OCSF record",
        };
        match first {
            None => first = Some((n, this)),
            Some((first_line, first)) if first != this => {
                return Err(VerifyError::Mixed {
                    path: path.to_owned(),
                    line: n,
                    this,
                    first_line,
                    first,
                })
            }
            Some(_) => {}
        }
        let fed = match form {
            Form::CloudEvent => verifier.feed(place, read(Wire::Structured(whole)))?,
            Form::Ocsf { version, record } => ocsf.feed(&mut verifier, place, &version, record)?,
        };
        if let Err(b) = fed {
            break Some(b);
        }
    };
    let broken = match (broken, must_reach) {
        (None, Some(offset)) => ocsf
            .left_out(&mut verifier, Place::Line(n + 1), offset + 1)?
            .err(),
        (broken, _) => broken,
    };
    Ok(Verdict::of(verifier, broken, Place::Line(n + 1)))
}

/// The sink of `config` that writes `path` (a JSONL sink), and the end it says the file must
/// reach: the last event it confirmed written (`None` before its first).
fn writer(store: &Store, config: &Config, path: &Path) -> Result<Option<Option<End>>, VerifyError> {
    let Ok(wanted) = std::fs::canonicalize(path) else {
        return Ok(None);
    };
    let Some(sink) = config.sinks.iter().find(|s| {
        s.kind()
            .file()
            .and_then(|f| std::fs::canonicalize(f).ok())
            .is_some_and(|f| f == wanted)
    }) else {
        return Ok(None);
    };
    let cursor = store.cursor(sink.name())?;
    Ok(Some(cursor.checked_sub(1).map(|offset| End {
        offset,
        hash: None,
        who: format!("sink '{}' (it confirmed writing up to there)", sink.name()),
    })))
}

/// The store's own log, from its start to its head.
pub fn store(store: &Store, key: Option<VerifyingKey>) -> Result<Verdict, VerifyError> {
    let end = store.chain_head()?.map(|h| End {
        offset: h.offset,
        hash: Some(h.hash),
        who: format!("the store's chain head ({})", hex(&h.hash)),
    });
    let mut verifier = Verifier::new(Options {
        pinned: key,
        start: store.chain_start()?,
        end,
        ..Options::default()
    });
    let mut from = store.log_start()?;
    loop {
        let chunk = store.events_from(from, STORE_CHUNK)?;
        let Some(last) = chunk.last().map(|e| e.offset) else {
            break;
        };
        for e in &chunk {
            if let Err(b) =
                verifier.feed(Place::Offset(e.offset), read(Wire::Structured(&e.bytes)))?
            {
                return Ok(Verdict::of(verifier, Some(b), Place::Offset(e.offset)));
            }
        }
        from = last + 1;
    }
    Ok(Verdict::of(verifier, None, Place::Offset(from)))
}

/// What a destination holds, read back (`--topic`).
pub fn read_back(events: ReadBack, key: Option<VerifyingKey>) -> Result<Verdict, VerifyError> {
    let mut verifier = Verifier::new(Options {
        pinned: key,
        ..Options::default()
    });
    let mut last = None;
    for event in events {
        let (place, record) = event?;
        last = Some(place);
        if let Err(b) = verifier.feed(place, record)? {
            return Ok(Verdict::of(verifier, Some(b), place));
        }
    }
    Ok(Verdict::of(
        verifier,
        None,
        last.unwrap_or(Place::Offset(0)),
    ))
}

/// The store as what a copy must agree with.
struct StoreReference<'a>(&'a Store);

impl Reference for StoreReference<'_> {
    fn held(&mut self, offset: u64) -> Result<Held, String> {
        self.0
            .held(offset)
            .map_err(|e| crate::text::error_chain(&e))
    }
}
