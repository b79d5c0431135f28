//! The canonical bytes of an event (RFC 8785, JCS) and their hash, written straight into
//! SHA-256.
//!
//! The RFC 8785 form is `serde_json_canonicalizer`'s, a maintained implementation. It builds
//! each object in buffers of its own and reads every key twice, which at a commit of 2,000 events
//! costs more than the 5 % of commit throughput the chain may take, and makes a million events
//! take most of a minute to verify (docs/performance.md, Hash chain). Almost every event rollcall
//! writes is already in RFC 8785 form but for the order of its top-level attributes: serde_json
//! writes nested objects with sorted keys, integers as RFC 8785 does, and escapes strings as it
//! does. So a strict scanner checks that the text is in a subset of JSON whose RFC 8785 form is
//! the text itself (ASCII keys, sorted, without escapes; strings with only the escapes RFC 8785
//! writes; integers of at most 2^53 in magnitude; no whitespace); if so, the top-level members
//! are hashed in RFC 8785 order as they are. Anything else (a float, a large integer, a key
//! outside ASCII, an edited line) goes through the crate. Both give the same bytes; a property
//! test holds them to it.

use std::borrow::Cow;
use std::io::Write;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Hash;

/// The largest integer magnitude an IEEE double holds exactly: RFC 8785 writes integers up to it
/// as their digits.
pub(super) const EXACT: u64 = 1 << 53;
/// Deeper nesting goes the slow way (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// A JSON object's members, each value as JSON text in RFC 8785 form.
pub(super) struct Members<'a>(pub(super) Vec<(Cow<'a, str>, Cow<'a, [u8]>)>);

impl<'a> Members<'a> {
    /// The members of the object `text`, if it is in the fast subset (its top-level members
    /// may come in any order); `None` for anything else.
    pub(super) fn scan(text: &'a [u8]) -> Option<Members<'a>> {
        let mut s = Scanner { text, at: 0 };
        let members = s.object_members()?;
        (s.at == text.len()).then_some(Members(members))
    }

    /// The members of an object parsed the slow way, each value in RFC 8785 form.
    pub(super) fn of(map: &Map<String, Value>) -> Members<'static> {
        Members(
            map.iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(canonical(v))))
                .collect(),
        )
    }

    /// Take the member `name` out.
    pub(super) fn take(&mut self, name: &str) -> Option<Cow<'a, [u8]>> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }

    pub(super) fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// SHA-256 of `prev` followed by the RFC 8785 form of the object these members make.
    pub(super) fn hash(mut self, prev: &Hash) -> Hash {
        // RFC 8785 orders keys by their UTF-16 code units.
        self.0
            .sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
        // Written out first and hashed in one call: SHA-256 fed piece by piece (a key, a colon)
        // costs more per call than copying the piece.
        let size: usize = self.0.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut text = Vec::with_capacity(size + 2);
        text.push(b'{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            serde_json::to_writer(&mut text, key.as_ref()).expect("writing to memory never fails");
            text.push(b':');
            text.extend_from_slice(value);
        }
        text.push(b'}');
        super::next(prev, &text)
    }
}

/// Whether serde_json writes `value` in its RFC 8785 form: keys in order by their UTF-16 code
/// units (so ASCII keys, sorted), and integers of at most 2^53 in magnitude (serde_json escapes
/// strings as RFC 8785 does).
pub(super) fn is_canonical(value: &Value) -> bool {
    fn walk(v: &Value, depth: usize) -> bool {
        match v {
            Value::Null | Value::Bool(_) | Value::String(_) => true,
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_i64().map(i64::unsigned_abs))
                .is_some_and(|n| n <= EXACT),
            Value::Array(items) => depth < MAX_DEPTH && items.iter().all(|i| walk(i, depth + 1)),
            Value::Object(map) => {
                let mut last: Option<&String> = None;
                depth < MAX_DEPTH
                    && map.iter().all(|(k, v)| {
                        let in_order = k.is_ascii() && last.is_none_or(|l| l < k);
                        last = Some(k);
                        in_order && walk(v, depth + 1)
                    })
            }
        }
    }
    walk(value, 0)
}

/// The RFC 8785 form of one value, the slow way.
pub(super) fn canonical(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).expect("every JSON value has an RFC 8785 form")
}

/// The RFC 8785 form of one value's JSON text: the text itself when it is in the fast subset.
pub(super) fn value(text: &[u8]) -> Result<Cow<'_, [u8]>, serde_json::Error> {
    if in_form(text) {
        return Ok(Cow::Borrowed(text));
    }
    Ok(Cow::Owned(canonical(&serde_json::from_slice(text)?)))
}

/// Whether JSON `text` is one value in the fast subset: its own RFC 8785 form.
pub(super) fn in_form(text: &[u8]) -> bool {
    let mut s = Scanner { text, at: 0 };
    s.value(0).is_some() && s.at == text.len()
}

/// SHA-256 of the RFC 8785 form of JSON `text` in the fast subset but for the order of its
/// objects' keys, at any depth (none twice): what the OCSF encoder writes, each object's
/// attributes in the order a reader expects. Members in order are hashed as they are, the rest
/// put in order first; `None` outside that subset.
pub(super) fn sorted_digest(text: &[u8]) -> Option<Hash> {
    let mut s = Scanner { text, at: 0 };
    // The form in order is written out, then hashed in one call (see `Members::hash`).
    let mut sorted = Vec::with_capacity(text.len());
    s.put_sorted(0, &mut sorted)?;
    (s.at == text.len()).then(|| Sha256::digest(&sorted).into())
}

/// The order of two keys of printable ASCII: their bytes' order, which is their UTF-16 order.
/// Keys mostly differ in their first byte, which is compared without a call to `memcmp`.
pub(super) fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Checks that JSON text is in the subset whose RFC 8785 form is the text itself.
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

type Member<'a> = (Cow<'a, str>, Cow<'a, [u8]>);
/// A member's key (none for an array's item) and its value in RFC 8785 form.
type Part<'a> = (Option<&'a [u8]>, Cow<'a, [u8]>);

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// The top-level object: its members in any order, none twice.
    fn object_members(&mut self) -> Option<Vec<Member<'a>>> {
        self.eat(b'{')?;
        let mut members: Vec<Member<'a>> = Vec::with_capacity(16);
        if self.eat(b'}').is_some() {
            return Some(members);
        }
        loop {
            let key = self.key()?;
            if members.iter().any(|(k, _)| k == key) {
                return None;
            }
            self.eat(b':')?;
            let start = self.at;
            self.value(1)?;
            members.push((
                Cow::Borrowed(key),
                Cow::Borrowed(&self.text[start..self.at]),
            ));
            if self.eat(b'}').is_some() {
                return Some(members);
            }
            self.eat(b',')?;
        }
    }

    /// A value whose objects may have their keys in any order, in RFC 8785 form: the text
    /// itself where it is in order, the members rearranged where not.
    fn any_order(&mut self, depth: usize) -> Option<Cow<'a, [u8]>> {
        if let Some(text) = self.in_order(depth) {
            return Some(Cow::Borrowed(text));
        }
        let mut out = Vec::with_capacity(256);
        self.put_rearranged(depth, &mut out)?;
        Some(Cow::Owned(out))
    }

    /// [`Scanner::any_order`], written to `out` rather than returned.
    fn put_sorted(&mut self, depth: usize, out: &mut impl Write) -> Option<()> {
        match self.in_order(depth) {
            Some(text) => out.write_all(text).ok(),
            None => self.put_rearranged(depth, out),
        }
    }

    /// The next value's text if it is in RFC 8785 form as it is; else nothing is read. Most
    /// values are, `data` above all: they are checked without a copy.
    fn in_order(&mut self, depth: usize) -> Option<&'a [u8]> {
        let start = self.at;
        if self.value(depth).is_some() {
            return Some(&self.text[start..self.at]);
        }
        self.at = start;
        None
    }

    /// An object or array that is not in RFC 8785 form as it is, written to `out` in that form.
    fn put_rearranged(&mut self, depth: usize, out: &mut impl Write) -> Option<()> {
        let (open, close) = match self.peek()? {
            b'{' if depth < MAX_DEPTH => (b'{', b'}'),
            b'[' if depth < MAX_DEPTH => (b'[', b']'),
            _ => return None,
        };
        self.at += 1;
        let mut parts: Vec<Part<'a>> = Vec::with_capacity(16);
        if self.eat(close).is_none() {
            loop {
                let key = if open == b'{' {
                    let key = self.key_bytes()?;
                    self.eat(b':')?;
                    Some(key)
                } else {
                    None
                };
                parts.push((key, self.any_order(depth + 1)?));
                if self.eat(close).is_some() {
                    break;
                }
                self.eat(b',')?;
            }
        }
        // Keys are printable ASCII without escapes: their byte order is their UTF-16 order,
        // and they are written back as they were read. Array items have no key and keep theirs.
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        if open == b'{' && parts.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let mut put = |bytes: &[u8]| out.write_all(bytes).ok();
        put(&[open])?;
        for (i, (key, value)) in parts.iter().enumerate() {
            if i > 0 {
                put(b",")?;
            }
            if let Some(key) = key {
                put(b"\"")?;
                put(key)?;
                put(b"\":")?;
            }
            put(value)?;
        }
        put(&[close])
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.integer(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    /// A nested object: keys strictly increasing.
    fn object(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut last: Option<&[u8]> = None;
        loop {
            let key = self.key_bytes()?;
            if last.is_some_and(|l| key_order(l, key).is_ge()) {
                return None;
            }
            last = Some(key);
            self.eat(b':')?;
            self.value(depth + 1)?;
            if self.eat(b'}').is_some() {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            if self.eat(b']').is_some() {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    /// A key of printable ASCII without escapes, whose byte order is its UTF-16 order.
    fn key(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.key_bytes()?).ok()
    }

    /// [`Scanner::key`], as the bytes it is.
    fn key_bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => break,
                b' '..=b'~' if self.peek()? != b'\\' => self.at += 1,
                _ => return None,
            }
        }
        self.at += 1;
        Some(&self.text[start..self.at - 1])
    }

    /// A string with only the escapes RFC 8785 writes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
    /// `\t`, and `\u00xx` (lowercase) for the other control characters.
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.text.get(self.at + 1..self.at + 5)?;
                            let control = hex.starts_with(b"00")
                                && matches!(hex[2], b'0' | b'1')
                                && matches!(hex[3], b'0'..=b'9' | b'a'..=b'f')
                                && !matches!(&hex[2..], b"08" | b"09" | b"0a" | b"0c" | b"0d");
                            if !control {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {
                    // Plain bytes up to the next quote or backslash (memchr finds them many
                    // bytes at a time); a control character among them is not RFC 8785's.
                    let rest = &self.text[self.at..];
                    let plain = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    if rest[..plain].iter().any(|&b| b < 0x20) {
                        return None;
                    }
                    self.at += plain;
                }
            }
        }
    }

    /// An integer RFC 8785 writes as its own digits: no fraction, exponent or `-0`, and at most
    /// 2^53 in magnitude.
    fn integer(&mut self) -> Option<()> {
        let negative = self.eat(b'-').is_some();
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        if digits.is_empty() || leading_zero || digits.len() > 16 {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        (n <= EXACT && !(negative && n == 0)).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.text[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slow way from start to end: the crate's RFC 8785 form of the whole object.
    fn slow(prev: &Hash, text: &[u8]) -> Hash {
        let v: Value = serde_json::from_slice(text).unwrap();
        super::super::next(prev, &canonical(&v))
    }

    #[test]
    fn what_serde_json_writes_of_rollcalls_events_is_in_the_fast_subset() {
        let text = br#"{"type":"user.updated","id":"x","data":{"after":"A\"\n\u001f","before":[1,-2,true,null],"user":{"a":9007199254740992}}}"#;
        let members = Members::scan(text).unwrap();
        assert_eq!(members.0.len(), 3);
        assert_eq!(members.hash(&[1; 32]), slow(&[1; 32], text));
    }

    #[test]
    fn what_rfc_8785_writes_otherwise_is_left_to_the_crate() {
        for text in [
            &br#"{"a":1.5}"#[..],
            br#"{"a":9007199254740993}"#,
            br#"{"a":-0}"#,
            br#"{"a":1e3}"#,
            br#"{"a":{"b":1,"a":2}}"#,
            br#"{"a":"\u0041"}"#,
            br#"{"a":"\/"}"#,
            br#"{"a":"\u001F"}"#,
            br#"{"a":"\u000a"}"#,
            br#"{"\u00e9":1}"#,
            "{\"é\":1}".as_bytes(),
            br#"{"a": 1}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":1} "#,
        ] {
            assert!(
                Members::scan(text).is_none(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// `value` as serde_json writes it, but every object's keys in reverse order.
    fn reversed(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let members: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), reversed(v)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(reversed).collect();
                format!("[{}]", items.join(","))
            }
            other => other.to_string(),
        }
    }

    /// Whether every key is printable ASCII that needs no escape: the keys the fast way (and
    /// the outline) reads.
    pub(in crate::chain) fn plain_keys(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().all(|(k, v)| {
                k.bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
                    && plain_keys(v)
            }),
            Value::Array(items) => items.iter().all(plain_keys),
            _ => true,
        }
    }

    #[test]
    fn keys_out_of_order_at_any_depth_are_put_in_order_and_the_rest_left_to_the_crate() {
        let text = br#"{"z":{"b":[{"y":1,"x":"\n"}],"a":null},"a":[3,2]}"#;
        let digest = |text: &[u8]| -> Hash { Sha256::digest(text).into() };
        assert_eq!(
            sorted_digest(text),
            Some(digest(
                br#"{"a":[3,2],"z":{"a":null,"b":[{"x":"\n","y":1}]}}"#
            ))
        );
        let in_order = br#"{"a":{"b":[1,{"c":2}]}}"#;
        assert_eq!(sorted_digest(in_order), Some(digest(in_order)));
        for text in [
            &br#"{"b":1,"a":1.5}"#[..],
            br#"{"b":{"a":1,"a":2}}"#,
            br#"{"b":1,"a":"\u0041"}"#,
            "{\"b\":1,\"é\":1}".as_bytes(),
            br#"{"b":1, "a":1}"#,
        ] {
            assert!(
                sorted_digest(text).is_none(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    proptest! {
        #[test]
        fn keys_put_in_order_in_one_pass_are_the_crates_rfc_8785_form(v in crate::fuzz::any_json()) {
            let text = reversed(&v);
            match sorted_digest(text.as_bytes()) {
                Some(hash) => prop_assert_eq!(hash, <Hash>::from(Sha256::digest(canonical(&v)))),
                None => prop_assert!(!is_canonical(&v) || !plain_keys(&v), "{}", text),
            }
        }

        #[test]
        fn the_fast_way_and_the_crate_hash_any_json_object_alike(
            v in crate::fuzz::any_json(),
            key in "[a-z]{1,3}",
        ) {
            let object = serde_json::json!({"zz": v.clone(), key: [v.clone()], "data": {"n": v}});
            let text = serde_json::to_vec(&object).unwrap();
            let slow_hash = slow(&[7; 32], &text);
            if let Some(members) = Members::scan(&text) {
                prop_assert_eq!(members.hash(&[7; 32]), slow_hash);
            }
            let map = object.as_object().unwrap();
            prop_assert_eq!(Members::of(map).hash(&[7; 32]), slow_hash);
            let whole = value(&text).unwrap();
            prop_assert_eq!(super::super::next(&[7; 32], &whole), slow_hash);
        }
    }
}
