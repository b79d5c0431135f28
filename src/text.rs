//! Outside text and error chains, put on one line for a message or a log field.
//!
//! Owns the two shapes every client's errors share: the start of a response body, and an error
//! with all its causes. It imports nothing of rollcall and does no I/O.

/// How much of a response body a message quotes.
pub const SNIPPET: usize = 200;

/// The start of a response body, whitespace folded to single spaces, cut at [`SNIPPET`]
/// characters (an HTML error page would otherwise fill the log).
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > SNIPPET {
        format!("{}…", flat.chars().take(SNIPPET).collect::<String>())
    } else {
        flat
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_flattened_and_cut() {
        let long = "<html>\n  <body>".to_owned() + &"x".repeat(500);
        let s = snippet(long.as_bytes());
        assert!(s.starts_with("<html> <body>"));
        assert_eq!(s.chars().count(), SNIPPET + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "cannot read x: gone");
    }
}
