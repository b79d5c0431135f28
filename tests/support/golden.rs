//! Pinned bytes: a test renders what rollcall makes of a fixed input and compares it, line by
//! line, with a file under `tests/fixtures/golden/`. After a deliberate change of a wire
//! format, `ROLLCALL_BLESS=1` writes the file anew; review its diff before committing it.

use std::path::Path;

/// Fails on the first line of `rendered` that differs from the file at `path` (or on a
/// different number of lines); with `ROLLCALL_BLESS` set, first writes `rendered` there.
pub fn assert_pinned(path: &str, rendered: &str) {
    if std::env::var_os("ROLLCALL_BLESS").is_some() {
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, rendered).unwrap();
    }
    let pinned = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} cannot be read ({e}); ROLLCALL_BLESS=1 writes it"));
    for (i, (got, want)) in rendered.lines().zip(pinned.lines()).enumerate() {
        assert_eq!(got, want, "line {} of {path}", i + 1);
    }
    assert_eq!(
        rendered.lines().count(),
        pinned.lines().count(),
        "lines in {path}"
    );
}
