//! Damage of every kind to a file a sink wrote, generated: a changed byte, a dropped line, two
//! lines swapped, a cut, and a redelivery (which is no damage); with the line where a verifier
//! must name the first break.

use ed25519_dalek::VerifyingKey;
use proptest::prelude::*;
use rollcall::chain::record::Place;
use rollcall::store::Store;
use rollcall::verify::Verdict;

use super::chain::Written;

/// One kind of damage to a written file.
#[derive(Debug, Clone)]
pub enum Damage {
    /// The byte at `at` (modulo the length) changed to another.
    Byte { at: usize, xor: u8 },
    /// A line removed.
    Drop(usize),
    /// A line and the next one swapped.
    Swap(usize),
    /// Only the first `at` bytes kept.
    Truncate(usize),
    /// A redelivery: a copy of `line` inserted after the line `after` lines later.
    Again { line: usize, after: usize },
}

pub fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Damage::Byte { at, xor }),
        any::<usize>().prop_map(Damage::Drop),
        any::<usize>().prop_map(Damage::Swap),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(line, after)| Damage::Again { line, after }),
    ]
}

/// The damaged file, and the line the first break must be named at (`None`: not a break);
/// `whole_lines_cut` when only a reference can tell (the tail was cut at a line's end).
pub fn apply(lines: &[Vec<u8>], d: &Damage) -> (Vec<u8>, Option<u64>, bool) {
    let n = lines.len();
    let whole = lines.concat();
    let line_of = |at: usize| whole[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
    match *d {
        Damage::Byte { at, xor } => {
            let at = at % whole.len();
            let mut out = whole.clone();
            out[at] ^= xor;
            (out, Some(line_of(at)), false)
        }
        // Without its first line, a copy is one that starts later (as a rotated file does):
        // no break, and the report says where it starts (checked below).
        Damage::Drop(i) => {
            let i = i % n;
            let mut out = lines.to_vec();
            out.remove(i);
            (out.concat(), (i > 0).then_some(i as u64 + 1), i == n - 1)
        }
        // The first two swapped: the copy starts at the second event, and the first comes
        // after it, out of order.
        Damage::Swap(i) => {
            let i = i % (n - 1);
            let mut out = lines.to_vec();
            out.swap(i, i + 1);
            (out.concat(), Some(i.max(1) as u64 + 1), false)
        }
        Damage::Truncate(at) => {
            let at = at % whole.len();
            let at_line_end = at == 0 || whole[at - 1] == b'\n';
            (whole[..at].to_vec(), Some(line_of(at)), at_line_end)
        }
        Damage::Again { line, after } => {
            let line = line % n;
            let after = line + after % (n - line);
            let mut out = lines.to_vec();
            out.insert(after + 1, lines[line].clone());
            (out.concat(), None, false)
        }
    }
}

/// Whether a copy holds a checkpoint (one that the key it is verified with signs, in these
/// tests).
fn holds_checkpoint(copy: &[u8]) -> bool {
    copy.windows(CHECKPOINT.len()).any(|w| w == CHECKPOINT)
}

const CHECKPOINT: &[u8] = br#""type":"rollcall.checkpoint""#;

pub fn broken_line(verdict: &Verdict) -> Option<u64> {
    match verdict {
        Verdict::Broken(b, _) => match b.place {
            Place::Line(n) => Some(n),
            other => panic!("a file's break named {other}"),
        },
        Verdict::Intact(_) => None,
        Verdict::Unverifiable(_, why) => panic!("unverifiable: {why}"),
    }
}

/// Generated damage to the file `w`'s sink wrote is named at its line by `rollcall verify`
/// against the store (with `pinned`), and redeliveries are no break; with `alone`, also
/// without the store (with the key it holds), where a cut at a line's end cannot show. The
/// property `test` (its path) runs 256 cases unless the environment says otherwise; the file is
/// put back afterwards.
pub fn is_named_at_its_line(
    test: &str,
    w: &Written,
    pinned: VerifyingKey,
    alone: Option<Option<VerifyingKey>>,
) {
    let lines = w.lines();
    let config = w.config();
    let store = Store::open(&config.store.path).unwrap();
    let (mut runner, seed) = super::generated::runner(test, 256);
    let result = runner.run(&damage(), |d| {
        let (bytes, expected, whole_lines_cut) = apply(&lines, &d);
        std::fs::write(&w.jsonl, &bytes).unwrap();
        let against =
            rollcall::verify::file(&w.jsonl, Some(pinned), Some((&store, &config))).unwrap();
        prop_assert_eq!(
            broken_line(&against),
            expected,
            "against the store: {:?}",
            against
        );
        if let (Damage::Drop(i), Verdict::Intact(r)) = (&d, &against) {
            if i % lines.len() == 0 {
                prop_assert_eq!((r.first, r.from_genesis), (Some(1), false));
            }
        }
        if let Some(key) = alone {
            let alone = rollcall::verify::file(&w.jsonl, key, None).unwrap();
            let expected_alone = if whole_lines_cut { None } else { expected };
            let named_alone = match alone {
                // Cut at a line's end before the first checkpoint: nothing is broken, and
                // nothing left signs what is.
                Verdict::Unverifiable(..) if whole_lines_cut && !holds_checkpoint(&bytes) => None,
                _ => broken_line(&alone),
            };
            prop_assert_eq!(named_alone, expected_alone, "alone: {:?}", alone);
        }
        Ok(())
    });
    std::fs::write(&w.jsonl, lines.concat()).unwrap();
    if let Err(e) = result {
        panic!("{e} (seed {seed})");
    }
}

/// A change to a file's lines.
pub type Edit<'a> = Box<dyn Fn(&mut Vec<String>) + 'a>;

/// The three tamperings an auditor must see named at line `i + 1` (1-based), each with its
/// name: a value changed in it (by `change`), it dropped, it swapped with the line after it.
pub fn tamperings<'a>(
    i: usize,
    change: impl Fn(&str) -> String + 'a,
) -> [(&'static str, Edit<'a>); 3] {
    [
        ("a changed value", Box::new(move |l| l[i] = change(&l[i]))),
        ("a dropped line", Box::new(move |l| drop(l.remove(i)))),
        ("two lines swapped", Box::new(move |l| l.swap(i, i + 1))),
    ]
}
