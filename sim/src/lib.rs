//! Simulators of the APIs rollcall polls, as real HTTP servers on 127.0.0.1.
//!
//! One library target, so the simulators compile once and every test binary, benchmark and
//! example links the same code. They import nothing of rollcall: they model the upstream
//! servers as documented in `docs/superset.md` (and `docs/kylin.md`), never rollcall's view
//! of them, so a test against them checks rollcall against the documented behaviour.

pub mod kylin;
pub mod superset;

/// `text` with every `mark` in it replaced by `raw`, which may be bytes no `String` can hold
/// (how the hostile-value faults put them into an answer built as JSON).
fn splice(text: &str, mark: &str, raw: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = text.split(mark).map(str::as_bytes).collect();
    parts.join(raw)
}
