//! Outside text and error chains, put on one line for a message or a log field.
//!
//! Owns the shapes every client's errors share: the start of a response body, any other text
//! an upstream chose (a `msg`, a `Location`), and an error with all its causes. Whatever comes
//! from outside passes through [`snippet`] or [`one_line`] before it reaches a message, so a
//! terminal reading the log or `status` never receives a control character or an escape
//! sequence from a server. It imports nothing of rollcall and does no I/O.

/// How much of a response body a message quotes.
pub const SNIPPET: usize = 200;

/// What stands in for a secret found in a quoted body.
pub const REDACTED: &str = "[redacted]";

/// The start of a response body, as [`one_line`] makes it.
pub fn snippet(body: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(body))
}

/// Outside text made safe to print: whitespace folded to single spaces, every other control or
/// bidirectional-override character escaped as `\u{…}`, cut at [`SNIPPET`] characters (an HTML
/// error page would otherwise fill the log).
pub fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    for word in text.split_whitespace() {
        if kept > 0 {
            out.push(' ');
            kept += 1;
        }
        for c in word.chars() {
            if kept >= SNIPPET {
                out.push('…');
                return out;
            }
            out.push_str(&printable(c.encode_utf8(&mut [0; 4])));
            kept += 1;
        }
    }
    out
}

/// `text` whole, with every control or bidirectional-override character escaped: for a stored
/// message on its way to a terminal (`status`), which must not be cut.
pub fn printable(text: &str) -> String {
    text.chars()
        .fold(String::with_capacity(text.len()), |mut out, c| {
            if needs_escape(c) {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
            out
        })
}

/// Characters a terminal may act on instead of showing: C0 and C1 controls (ESC starts the
/// sequences that move the cursor, retitle the window or write the clipboard; U+009B is a
/// one-byte CSI) and the bidirectional controls that reorder what is shown.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each of `secrets` replaced by [`REDACTED`], longest first (so that a secret
/// holding another is removed whole). JSON's escaped slash (`\/`) is read as `/` first: a
/// receiver echoing a URL through PHP's `json_encode` writes it so.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.replace("\\/", "/");
    let mut by_length: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in by_length {
        out = out.replace(secret.as_str(), REDACTED);
    }
    out
}

/// An error and its causes, each once, joined by `: `: for messages that are stored or shown
/// as one string (the source of a wrapped error is otherwise lost when it is turned into text).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Parse a JSON answer. One that fails for bytes that are not UTF-8 is parsed again with
/// them marked (see [`mark_invalid_utf8`]), after a warning naming the answer (`url` is asked
/// for only then): the rows holding them are then unreadable on their own, the others read.
/// An answer that parses is read once, as it came.
pub fn parse_answer<T: serde::de::DeserializeOwned>(
    body: &[u8],
    url: impl FnOnce() -> String,
) -> serde_json::Result<T> {
    serde_json::from_slice(body).or_else(|e| match mark_invalid_utf8(body) {
        Some(marked) => {
            tracing::warn!(url = %url(), "the answer holds bytes that are not UTF-8: the rows holding them are reported unreadable and the others read");
            serde_json::from_slice(&marked)
        }
        None => Err(e),
    })
}

/// `body` with each run of bytes that are not UTF-8 replaced by the escape of a lone UTF-16
/// surrogate, or `None` when it is all UTF-8. JSON must be UTF-8, and a parser rejects the
/// whole answer for one bad byte; the escape instead keeps the answer's shape and makes just
/// the string that held the bytes unreadable, so that one row with a broken name is reported
/// while the other rows are read (docs/reliability.md, Sources and config).
/// Not `from_utf8_lossy`: its U+FFFD would read as a real, changed name. A run right after an
/// escaping backslash is left alone: the answer is broken JSON either way.
fn mark_invalid_utf8(body: &[u8]) -> Option<Vec<u8>> {
    if std::str::from_utf8(body).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    for chunk in body.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            let backslashes = out.iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 1 {
                out.extend_from_slice(chunk.invalid());
            } else {
                out.extend_from_slice(br"\ud800");
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn snippet_is_flattened_and_cut() {
        let long = "<html>\n  <body>".to_owned() + &"x".repeat(500);
        let s = snippet(long.as_bytes());
        assert!(s.starts_with("<html> <body>"));
        assert_eq!(s.chars().count(), SNIPPET + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn snippet_escapes_terminal_control_sequences() {
        let hostile =
            "red \x1b[31mALERT\x1b[0m \x1b]0;pwned\x07 csi \u{9b}2J rtl \u{202e}gnp.exe del \x7f";
        let s = snippet(hostile.as_bytes());
        assert_eq!(
            s,
            "red \\u{1b}[31mALERT\\u{1b}[0m \\u{1b}]0;pwned\\u{7} csi \\u{9b}2J rtl \\u{202e}gnp.exe del \\u{7f}"
        );
    }

    #[test]
    fn redaction_removes_the_longest_secret_whole_and_json_escaped_slashes() {
        let secrets = vec![
            "https://hooks.example/t/abc".to_owned(),
            "/t/abc".to_owned(),
        ];
        assert_eq!(
            redact(
                r#"{"error":"bad target https:\/\/hooks.example\/t\/abc, path /t/abc"}"#,
                &secrets
            ),
            r#"{"error":"bad target [redacted], path [redacted]"}"#
        );
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "cannot read x: gone");
    }

    proptest! {
        #[test]
        fn no_control_character_survives_one_line(text in any::<String>()) {
            let line = one_line(&text);
            prop_assert!(!line.chars().any(|c| c.is_control() || needs_escape(c)), "{line:?}");
            prop_assert!(line.chars().count() <= SNIPPET * 11 + 1);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_spoil_only_the_string_holding_them() {
        assert_eq!(mark_invalid_utf8(br#"{"a":"ok"}"#), None);
        let body = b"[{\"id\":1,\"name\":\"b\xC3\x28d\"},{\"id\":2,\"name\":\"ok\"}]";
        let marked = mark_invalid_utf8(body).expect("marked");
        let page: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&marked).expect("the page keeps its shape");
        assert!(serde_json::from_str::<serde_json::Value>(page[0].get()).is_err());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(page[1].get()).unwrap()["name"],
            "ok"
        );
    }

    #[test]
    fn a_bad_byte_after_an_escaping_backslash_is_not_turned_into_valid_json() {
        let marked = mark_invalid_utf8(b"{\"a\":\"x\\\xFF\"}").expect("marked");
        assert!(serde_json::from_slice::<serde_json::Value>(&marked).is_err());
        let marked = mark_invalid_utf8(b"{\"a\":\"x\\\\\xFF\"}").expect("marked");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&marked).is_err(),
            "the surrogate stays lone"
        );
    }
}
