//! Bounds on what one read may take from a source's server: the bytes of one answer, and the
//! pages of one list.
//!
//! Owns the defaults, the accepted range of `max_response_bytes`, and the counting. Each
//! source kind turns a bound reached into its own error, which names the URL, the bound and
//! the key that raises it. Nothing here may let a server that answers without end (a body that
//! never ends, pages that never run out) hold a cycle for ever or fill rollcall's memory.

use std::ops::RangeInclusive;

use bytes::{Bytes, BytesMut};

use crate::settings::{Entry, Problems};

/// The largest answer read by default: a page of users is tens of kilobytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// What `max_response_bytes` may be set to.
const MAX_RESPONSE_BYTES: RangeInclusive<u64> = (64 << 10)..=(4 << 30);
/// Pages one read of a list may take, whatever the server announces.
pub const MAX_PAGES: u64 = 1_000_000;
/// Pages a read may take beyond twice what its announced total needs.
const SLACK_PAGES: u64 = 100;

/// Why an answer was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the bound: as its `Content-Length` said (then nothing was read), or as
    /// counted while reading.
    TooLarge {
        declared: Option<u64>,
    },
    Transport(reqwest::Error),
}

/// The body of `resp`, up to `max` bytes: refused unread when its `Content-Length` says more,
/// and as soon as the bytes read pass `max` otherwise (a body without a length, or with a
/// false one).
pub async fn read_body(mut resp: reqwest::Response, max: u64) -> Result<Bytes, BodyError> {
    let declared = resp.content_length();
    if let Some(len) = declared.filter(|len| *len > max) {
        return Err(BodyError::TooLarge {
            declared: Some(len),
        });
    }
    // The declared length (within the bound) is only a hint: a server may send less or more.
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(BodyError::TooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// How `max_response_bytes` is said in an error: the bound, and what the server declared.
pub fn describe_excess(max: u64, declared: Option<u64>) -> String {
    match declared {
        Some(len) => {
            format!("its Content-Length of {len} bytes is more than `max_response_bytes` ({max})")
        }
        None => format!("it went on past `max_response_bytes` ({max} bytes)"),
    }
}

/// Check a source's `max_response_bytes`.
pub fn check_max_response_bytes(entry: Entry<'_, '_>, p: &mut Problems<'_>, value: u64) {
    if !MAX_RESPONSE_BYTES.contains(&value) {
        p.at(
            entry.key("max_response_bytes"),
            format!(
                "`max_response_bytes` must be between {} (64 KiB) and {} (4 GiB), not {value}: it is the largest answer rollcall reads from this source",
                MAX_RESPONSE_BYTES.start(),
                MAX_RESPONSE_BYTES.end()
            ),
        );
    }
}

/// How many pages one read of a list may take, given the total its first page announced:
/// twice what that total needs (rows added during the read shift it), plus [`SLACK_PAGES`],
/// and never more than [`MAX_PAGES`]. A server answering full pages for ever is stopped there.
pub fn page_limit(total: u64, page_size: u64) -> u64 {
    total
        .div_ceil(page_size.max(1))
        .saturating_mul(2)
        .saturating_add(SLACK_PAGES)
        .min(MAX_PAGES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_may_take_twice_its_announced_pages_and_some_but_never_a_million() {
        assert_eq!(page_limit(0, 100), 100);
        assert_eq!(page_limit(150, 100), 104);
        assert_eq!(page_limit(100_000, 100), 2_100);
        assert_eq!(page_limit(u64::MAX, 100), MAX_PAGES);
        assert_eq!(page_limit(10, 0), 120, "a page size of 0 counts as 1");
    }
}
