//! The RFC 8785 form of a value rollcall serializes itself, put together from an outline kept
//! while serde_json writes it, rather than by reading the written text again.
//!
//! An OCSF record is written with its attributes in the order a reader expects, which is not
//! RFC 8785's; its fingerprint is over RFC 8785's. Scanning the record's text to put it in order
//! costs several times the hash itself (docs/performance.md, Kafka sink). While serde_json
//! writes, every object's members are noted (where each key and value starts and ends), and
//! whether they came in RFC 8785 order; everything else serde_json writes is already in RFC 8785
//! form when it is in the fast subset `canonical` describes (integers of at most 2^53, strings
//! escaped as RFC 8785 escapes them, keys of printable ASCII). So the form in order is the
//! written text with each object out of order rewritten from its members, sorted. Only a raw
//! fragment (the stored event's `data`, written verbatim) is read, to check it is in that form.
//!
//! Owns only the outline. Anything outside the fast subset (a float, a large integer, a key with
//! an escape, a raw fragment not in RFC 8785 form) gives no hash, and the caller takes the slow
//! way; a property test holds both ways to the same bytes.

use std::io;
use std::ops::Range;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use sha2::{Digest, Sha256};

use super::canonical::{in_form, key_order, EXACT};
use super::Hash;

/// Writes `value` to `out` exactly as `serde_json::to_writer` does, and returns SHA-256 of its
/// RFC 8785 form; `None` for the hash when something written is outside the fast subset.
/// `raw`, when given, is written for every raw value in `value` instead of the value's own text:
/// a value may hold a placeholder for a text already checked as JSON, which serde_json would
/// check again to hold it as a raw value.
pub(super) fn write_hashed<T: Serialize + ?Sized>(
    value: &T,
    raw: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<Option<Hash>, serde_json::Error> {
    let start = out.len();
    let mut outline = Outline {
        out,
        raw,
        open: Vec::with_capacity(8),
        members: Vec::with_capacity(32),
        disordered: Vec::new(),
        in_key: false,
        outside: false,
    };
    value.serialize(&mut serde_json::Serializer::with_formatter(
        io::sink(),
        &mut outline,
    ))?;
    let Outline {
        out,
        mut disordered,
        outside,
        ..
    } = outline;
    if outside {
        return Ok(None);
    }
    if disordered.is_empty() {
        return Ok(Some(Sha256::digest(&out[start..]).into()));
    }
    // Noted as each object ended, so inner ones first; put together from the outermost.
    disordered.sort_unstable_by_key(|d| d.start);
    let mut sorted = Vec::with_capacity(out.len() - start);
    put(out, start..out.len(), &disordered, &mut sorted);
    Ok(Some(Sha256::digest(&sorted).into()))
}

/// The text `text[range]` in RFC 8785 order: as written but for the objects out of order in
/// it, each rewritten from its members, sorted.
fn put(text: &[u8], range: Range<usize>, disordered: &[Disordered], out: &mut Vec<u8>) {
    let mut at = range.start;
    let mut next = disordered.partition_point(|d| d.start < range.start);
    while let Some(d) = disordered.get(next).filter(|d| d.start < range.end) {
        out.extend_from_slice(&text[at..d.start]);
        out.push(b'{');
        for (i, m) in d.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&text[m.key.start - 1..m.key.end + 1]);
            out.push(b':');
            put(text, m.value.clone(), disordered, out);
        }
        out.push(b'}');
        at = d.end;
        // The objects inside this one were written with its members.
        next = disordered.partition_point(|o| o.start < d.end);
    }
    out.extend_from_slice(&text[at..range.end]);
}

/// A serde_json formatter that writes as `CompactFormatter` does, to `out` (the writer it is
/// given is a sink), and notes where every object's members are.
struct Outline<'o> {
    out: &'o mut Vec<u8>,
    /// What to write for a raw value, if not its own text.
    raw: Option<&'o str>,
    /// The objects being written, innermost last.
    open: Vec<Open>,
    /// The members of the open objects so far, innermost object's last.
    members: Vec<Member>,
    /// The objects written whose members are out of RFC 8785 order, their members sorted.
    disordered: Vec<Disordered>,
    in_key: bool,
    /// Something outside the fast subset was written.
    outside: bool,
}

struct Open {
    /// Where its `{` is.
    start: usize,
    /// Its first member's index in `members`.
    first: usize,
    in_order: bool,
    /// The member being written: where its key's text starts, its key (without quotes), and
    /// where its value starts.
    key_start: usize,
    key: Range<usize>,
    value_start: usize,
}

#[derive(Clone)]
struct Member {
    /// The key's text without its quotes.
    key: Range<usize>,
    value: Range<usize>,
}

struct Disordered {
    /// From its `{` to after its `}`.
    start: usize,
    end: usize,
    members: Vec<Member>,
}

impl Outline<'_> {
    fn integer(&mut self, magnitude: u128) {
        if magnitude > u128::from(EXACT) {
            self.outside = true;
        }
    }

    fn open(&mut self) -> &mut Open {
        self.open
            .last_mut()
            .expect("serde_json writes a member only inside an object")
    }
}

/// Every method writes what `CompactFormatter` writes, to `out`.
impl Formatter for &mut Outline<'_> {
    fn write_null<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.write_null(self.out)
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, _: &mut W, value: bool) -> io::Result<()> {
        CompactFormatter.write_bool(self.out, value)
    }

    fn write_i8<W: ?Sized + io::Write>(&mut self, _: &mut W, value: i8) -> io::Result<()> {
        CompactFormatter.write_i8(self.out, value)
    }

    fn write_i16<W: ?Sized + io::Write>(&mut self, _: &mut W, value: i16) -> io::Result<()> {
        CompactFormatter.write_i16(self.out, value)
    }

    fn write_i32<W: ?Sized + io::Write>(&mut self, _: &mut W, value: i32) -> io::Result<()> {
        CompactFormatter.write_i32(self.out, value)
    }

    fn write_i64<W: ?Sized + io::Write>(&mut self, _: &mut W, value: i64) -> io::Result<()> {
        self.integer(u128::from(value.unsigned_abs()));
        CompactFormatter.write_i64(self.out, value)
    }

    fn write_i128<W: ?Sized + io::Write>(&mut self, _: &mut W, value: i128) -> io::Result<()> {
        self.integer(value.unsigned_abs());
        CompactFormatter.write_i128(self.out, value)
    }

    fn write_u8<W: ?Sized + io::Write>(&mut self, _: &mut W, value: u8) -> io::Result<()> {
        CompactFormatter.write_u8(self.out, value)
    }

    fn write_u16<W: ?Sized + io::Write>(&mut self, _: &mut W, value: u16) -> io::Result<()> {
        CompactFormatter.write_u16(self.out, value)
    }

    fn write_u32<W: ?Sized + io::Write>(&mut self, _: &mut W, value: u32) -> io::Result<()> {
        CompactFormatter.write_u32(self.out, value)
    }

    fn write_u64<W: ?Sized + io::Write>(&mut self, _: &mut W, value: u64) -> io::Result<()> {
        self.integer(u128::from(value));
        CompactFormatter.write_u64(self.out, value)
    }

    fn write_u128<W: ?Sized + io::Write>(&mut self, _: &mut W, value: u128) -> io::Result<()> {
        self.integer(value);
        CompactFormatter.write_u128(self.out, value)
    }

    /// RFC 8785 writes numbers as ECMAScript does, which serde_json's float text is not always.
    fn write_f32<W: ?Sized + io::Write>(&mut self, _: &mut W, value: f32) -> io::Result<()> {
        self.outside = true;
        CompactFormatter.write_f32(self.out, value)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, _: &mut W, value: f64) -> io::Result<()> {
        self.outside = true;
        CompactFormatter.write_f64(self.out, value)
    }

    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        value: &str,
    ) -> io::Result<()> {
        self.outside = true;
        CompactFormatter.write_number_str(self.out, value)
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.begin_string(self.out)
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.end_string(self.out)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        CompactFormatter.write_string_fragment(self.out, fragment)
    }

    /// serde_json escapes what RFC 8785 escapes, as it does; only a key must have none (its
    /// order is read from its bytes).
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        if self.in_key {
            self.outside = true;
        }
        CompactFormatter.write_char_escape(self.out, char_escape)
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.begin_array(self.out)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.end_array(self.out)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        first: bool,
    ) -> io::Result<()> {
        CompactFormatter.begin_array_value(self.out, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.end_array_value(self.out)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let (start, first) = (self.out.len(), self.members.len());
        self.open.push(Open {
            start,
            first,
            in_order: true,
            key_start: start,
            key: start..start,
            value_start: start,
        });
        CompactFormatter.begin_object(self.out)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.end_object(self.out)?;
        let object = self.open.pop().expect("serde_json ends only what it began");
        if !object.in_order {
            let mut members = self.members[object.first..].to_vec();
            let text = &self.out[..];
            members.sort_unstable_by(|a, b| key_order(&text[a.key.clone()], &text[b.key.clone()]));
            if members
                .windows(2)
                .any(|w| text[w[0].key.clone()] == text[w[1].key.clone()])
            {
                self.outside = true;
            }
            self.disordered.push(Disordered {
                start: object.start,
                end: self.out.len(),
                members,
            });
        }
        self.members.truncate(object.first);
        Ok(())
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        first: bool,
    ) -> io::Result<()> {
        CompactFormatter.begin_object_key(self.out, first)?;
        self.in_key = true;
        let at = self.out.len();
        self.open().key_start = at;
        Ok(())
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.in_key = false;
        let end = self.out.len();
        let object = self.open.last().expect("a key is inside an object");
        // Without its quotes: printable ASCII, so its byte order is its UTF-16 order.
        let key = object.key_start + 1..end - 1;
        let text = &self.out[key.clone()];
        let plain = text.iter().all(|b| (b' '..=b'~').contains(b));
        let after_last = match self.members.get(object.first..).and_then(<[_]>::last) {
            Some(last) => key_order(&self.out[last.key.clone()], text).is_lt(),
            None => true,
        };
        self.outside |= !plain;
        let object = self.open();
        object.in_order &= after_last;
        object.key = key;
        Ok(())
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        CompactFormatter.begin_object_value(self.out)?;
        let at = self.out.len();
        self.open().value_start = at;
        Ok(())
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let end = self.out.len();
        let object = self.open();
        let member = Member {
            key: object.key.clone(),
            value: object.value_start..end,
        };
        self.members.push(member);
        Ok(())
    }

    /// A value written verbatim (the stored event's `data`): in the fast subset only if it is
    /// its own RFC 8785 form, its objects in order.
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        _: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let fragment = self.raw.unwrap_or(fragment);
        if !in_form(fragment.as_bytes()) {
            self.outside = true;
        }
        CompactFormatter.write_raw_fragment(self.out, fragment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::canonical::tests::plain_keys;
    use crate::chain::canonical::{canonical, is_canonical};
    use proptest::prelude::*;
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde_json::value::RawValue;
    use serde_json::Value;

    /// A value serialized with every object's keys in reverse order, objects under `raw` written
    /// as raw fragments: what the OCSF encoder's records look like to the outline.
    struct Reversed<'v>(&'v Value);

    impl Serialize for Reversed<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Object(map) => {
                    let mut m = s.serialize_map(Some(map.len()))?;
                    for (k, v) in map.iter().rev() {
                        if k == "raw" {
                            let text = serde_json::to_string(v).unwrap();
                            m.serialize_entry(k, &RawValue::from_string(text).unwrap())?;
                        } else {
                            m.serialize_entry(k, &Reversed(v))?;
                        }
                    }
                    m.end()
                }
                Value::Array(items) => {
                    let mut a = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        a.serialize_element(&Reversed(item))?;
                    }
                    a.end()
                }
                other => other.serialize(s),
            }
        }
    }

    fn hashed(value: &impl Serialize) -> (Vec<u8>, Option<Hash>) {
        let mut out = b"before".to_vec();
        let hash = write_hashed(value, None, &mut out).unwrap();
        (out[6..].to_vec(), hash)
    }

    #[test]
    fn objects_out_of_order_at_any_depth_are_hashed_in_order_as_written() {
        let v = serde_json::json!({"a": [3, {"b": 1, "a": "\n"}], "z": {"y": null, "x": true}});
        let (text, hash) = hashed(&Reversed(&v));
        assert_eq!(
            text,
            br#"{"z":{"y":null,"x":true},"a":[3,{"b":1,"a":"\n"}]}"#
        );
        let digest: Hash =
            Sha256::digest(br#"{"a":[3,{"a":"\n","b":1}],"z":{"x":true,"y":null}}"#).into();
        assert_eq!(hash, Some(digest));
    }

    #[test]
    fn a_raw_placeholder_is_written_and_hashed_as_the_text_given_for_it() {
        #[derive(Serialize)]
        struct Holder<'r> {
            z: u8,
            raw: &'r RawValue,
        }
        for text in [r#"{"a":[true],"b":1}"#, r#"{"b":1,"a":[true]}"#] {
            let real = RawValue::from_string(text.to_owned()).unwrap();
            let (mut with_text, mut with_placeholder) = (Vec::new(), Vec::new());
            let held = Holder { z: 1, raw: &real };
            let hash = write_hashed(&held, None, &mut with_text).unwrap();
            let placeholder = Holder {
                z: 1,
                raw: RawValue::NULL,
            };
            let instead = write_hashed(&placeholder, Some(text), &mut with_placeholder).unwrap();
            assert_eq!((with_text, hash), (with_placeholder, instead), "{text}");
        }
    }

    #[test]
    fn what_is_outside_the_fast_subset_gives_no_hash() {
        for v in [
            serde_json::json!({"a": 1.5}),
            serde_json::json!({"a": 9_007_199_254_740_993_u64}),
            serde_json::json!({"a\n": 1}),
            serde_json::json!({"é": 1}),
            serde_json::json!({"raw": {"b": 1.5}}),
        ] {
            assert_eq!(hashed(&Reversed(&v)).1, None, "{v}");
        }
        let raw = RawValue::from_string(r#"{"b":1,"a":2}"#.to_owned()).unwrap();
        assert_eq!(hashed(&raw).1, None);
    }

    proptest! {
        #[test]
        fn the_outline_hashes_what_the_crate_puts_in_rfc_8785_form(v in crate::fuzz::any_json()) {
            let wrapped = serde_json::json!({"raw": v.clone(), "value": v.clone()});
            let (text, hash) = hashed(&Reversed(&wrapped));
            prop_assert_eq!(&text, &serde_json::to_vec(&Reversed(&wrapped)).unwrap());
            match hash {
                Some(hash) => prop_assert_eq!(hash, <Hash>::from(Sha256::digest(canonical(&wrapped)))),
                None => prop_assert!(!is_canonical(&v) || !plain_keys(&v), "{}", v),
            }
        }
    }
}
