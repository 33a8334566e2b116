//! A strict one-pass JSON checker for the texts on every request's path: in the host, the
//! client's message (its envelope's members) and the jobber's answer (valid JSON, and whether
//! it has a top-level `type`); in a jobber, the payloads of its hottest request types.
//!
//! `serde_json` reads these through derived structs that match each key against the fields,
//! decode each string and check each value: about 2,300 instructions per durable
//! `getProxy`/`releaseProxy` request, 15% of the host's. This checker only finds where values
//! begin and end, a word at a time inside strings, for about 1,000; the host's instructions
//! per request fell by 4% with it. In a WASM guest the gap is wider still.
//!
//! A jobber reads a payload of the plain shape clients send with [`members`], [`plain_str`]
//! and [`whole_u64`], and hands anything else to `serde_json`, which also words the errors:
//!
//! ```
//! use resman_sdk::json::scan;
//!
//! /// `{"lease": "<id>"}` read plainly; `None` leaves the payload to serde.
//! fn plain_lease(payload: &str) -> Option<&str> {
//!     let mut lease = None;
//!     scan::members(payload, |key, value| {
//!         // An unknown or repeated field: serde refuses it, with the words for why.
//!         (key == "lease" && lease.replace(value).is_none()).then_some(())
//!     })?;
//!     scan::plain_str(lease?)
//! }
//!
//! assert_eq!(plain_lease(r#"{"lease": "17"}"#), Some("17"));
//! assert_eq!(plain_lease(r#"{"lease": "1\u0037"}"#), None);
//! assert_eq!(plain_lease(r#"{"lease": 17}"#), None);
//! ```
//!
//! It answers `None` for anything it does not decide: invalid JSON, and also valid JSON
//! outside its plain subset (a key with escapes, a `\u` escape of a surrogate, nesting deeper
//! than [`MAX_DEPTH`]). The caller then reads the text with `serde_json`, which decides it
//! and words the error. So what this checker accepts, `serde_json` accepts too; the tests
//! hold it to that on arbitrary and mutated texts.
//!
//! Its small steps are `#[inline(always)]`: as calls they cost a seventh of its
//! instructions, each saving and restoring registers for a few bytes of work.

use super::find_escape;
use std::ops::Range;

/// Nesting deeper than this is left to `serde_json` (whose limit is 128).
const MAX_DEPTH: u32 = 64;

/// Whether `text` is one JSON value, with whitespace around it allowed; `None` when not
/// decided here.
pub fn value(text: &str) -> Option<()> {
    let mut scan = Scan::new(text);
    scan.value()?;
    scan.end()
}

/// Checks that `text` is one JSON object and calls `member` with each of its top-level
/// members' key (its text between the quotes) and value (its JSON text), in order; `None`
/// when `text` is not decided here or `member` answers `None`.
pub fn members<'a>(
    text: &'a str,
    mut member: impl FnMut(&'a str, &'a str) -> Option<()>,
) -> Option<()> {
    let mut scan = Scan::new(text);
    scan.expect(b'{')?;
    if !scan.eat_if(b'}') {
        loop {
            let key = scan.plain_key()?;
            scan.expect(b':')?;
            scan.skip_space();
            let start = scan.pos;
            scan.value()?;
            // Cut at ASCII bytes (quotes, brackets, the ends of values), so on char boundaries.
            member(text.get(key)?, text.get(start..scan.pos)?)?;
            match scan.next() {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.end()
}

/// The text of a JSON string value (as [`members`] hands it over, quotes included) that
/// has no escapes; `None` for any other value. The text between the quotes is then the
/// string itself.
#[must_use]
pub fn plain_str(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A JSON number value (as [`members`] hands it over) that is a whole number a u64 holds,
/// written with digits alone, as `serde_json` reads it into a u64; `None` for any other
/// value (a negative or fractional number, an exponent, a string, ...).
#[must_use]
pub fn whole_u64(value: &str) -> Option<u64> {
    // `parse` alone would take a leading `+` or `0`, which JSON does not allow.
    let digits = value.bytes().all(|byte| byte.is_ascii_digit());
    let leading_zero = value.len() > 1 && value.starts_with('0');
    (digits && !leading_zero).then(|| value.parse().ok())?
}

/// A position in a text being checked.
struct Scan<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        // UTF-8 already, as a `&str`: only the JSON grammar is left to check.
        Scan {
            text: text.as_bytes(),
            pos: 0,
        }
    }

    /// The rest of the text is whitespace.
    fn end(&mut self) -> Option<()> {
        self.skip_space();
        (self.pos == self.text.len()).then_some(())
    }

    /// Skips whitespace; the byte after it, not taken, or 0 at the end of the text (a byte
    /// that cannot stand outside a string, so it is refused wherever a value or punctuation
    /// is due).
    #[inline(always)]
    fn skip_space(&mut self) -> u8 {
        loop {
            let byte = self.text.get(self.pos).copied().unwrap_or(0);
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return byte;
            }
            self.pos += 1;
        }
    }

    /// Takes the next byte after whitespace (0 at the end).
    #[inline(always)]
    fn next(&mut self) -> u8 {
        let byte = self.skip_space();
        self.pos += 1;
        byte
    }

    /// Takes `byte`, after whitespace.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next() == byte).then_some(())
    }

    /// Takes `byte` if it comes next after whitespace.
    #[inline(always)]
    fn eat_if(&mut self, byte: u8) -> bool {
        let found = self.skip_space() == byte;
        self.pos += usize::from(found);
        found
    }

    /// A key with no escapes, after whitespace: where its text between the quotes is.
    #[inline(always)]
    fn plain_key(&mut self) -> Option<Range<usize>> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = start + find_escape(&self.text[start..])?;
        self.pos = end + 1;
        (self.text[end] == b'"').then_some(start..end)
    }

    /// One value, whitespace before it skipped, nothing after it read. Nested values are
    /// followed with a stack of bits (set: an object) rather than recursion.
    fn value(&mut self) -> Option<()> {
        let mut objects: u64 = 0;
        let mut depth = 0;
        loop {
            match self.next() {
                b'"' => self.string()?,
                open @ (b'{' | b'[') => {
                    // `}` and `]` are two after their openers in ASCII.
                    if !self.eat_if(open + 2) {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        objects = objects << 1 | u64::from(open == b'{');
                        depth += 1;
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                _ => return None,
            }
            // A value ended: close what it ends, or go on to the next member or element.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let in_object = objects & 1 == 1;
                match self.next() {
                    b',' => {
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                objects >>= 1;
                depth -= 1;
            }
        }
    }

    /// A member's key and its colon, after whitespace.
    #[inline(always)]
    fn key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.string()?;
        self.expect(b':')
    }

    /// The rest of a string, its opening quote taken.
    #[inline(always)]
    fn string(&mut self) -> Option<()> {
        loop {
            let at = self.pos + find_escape(&self.text[self.pos..])?;
            self.pos = at + 1;
            match self.text[at] {
                b'"' => return Some(()),
                b'\\' => self.escape()?,
                _ => return None, // a raw control character
            }
        }
    }

    /// An escape, its backslash taken.
    fn escape(&mut self) -> Option<()> {
        let kind = *self.text.get(self.pos)?;
        self.pos += 1;
        match kind {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.text.get(self.pos..self.pos + 4)?;
                self.pos += 4;
                // A surrogate must pair with the next escape; `serde_json` judges that.
                let surrogate = matches!(hex[0], b'd' | b'D') && hex[1] > b'7';
                (hex.iter().all(u8::is_ascii_hexdigit) && !surrogate).then_some(())
            }
            _ => None,
        }
    }

    /// A number, its first byte (a minus sign or a digit) taken.
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        let text = self.text;
        let digits_from = |mut pos: usize| {
            while text.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            pos
        };
        let mut pos = self.pos - 1;
        pos += usize::from(text[pos] == b'-');
        pos = match text.get(pos) {
            Some(b'0') => pos + 1,
            Some(b'1'..=b'9') => digits_from(pos + 1),
            _ => return None,
        };
        if text.get(pos) == Some(&b'.') {
            let end = digits_from(pos + 1);
            (end > pos + 1).then_some(())?;
            pos = end;
        }
        if let Some(b'e' | b'E') = text.get(pos) {
            pos += 1;
            pos += usize::from(matches!(text.get(pos), Some(b'+' | b'-')));
            let end = digits_from(pos);
            (end > pos).then_some(())?;
            pos = end;
        }
        self.pos = pos;
        Some(())
    }

    /// The rest of `true`, `false` or `null`, its first letter taken.
    #[inline(always)]
    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let found = self.text.get(self.pos..self.pos + rest.len())? == rest;
        self.pos += rest.len();
        found.then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;
    use std::fmt;

    /// The top-level members as `serde_json` reads them: keys decoded, values as text.
    fn serde_members(text: &str) -> Option<Vec<(String, String)>> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &RawValue>()? {
                    members.push((key, value.get().to_owned()));
                }
                Ok(members)
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let members = serde::Deserializer::deserialize_map(&mut de, Members).ok()?;
        de.end().ok()?;
        Some(members)
    }

    fn our_members(text: &str) -> Option<Vec<(String, String)>> {
        let mut found = Vec::new();
        members(text, |key, value| {
            found.push((key.to_owned(), value.to_owned()));
            Some(())
        })?;
        Some(found)
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    /// JSON values as `serde_json` writes them, pretty or not.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(Into::into),
            any::<f64>().prop_map(Into::into),
            "\\PC*|[\"\\\\\\x00-\\x1f/é🦀]*".prop_map(serde_json::Value::String),
        ];
        let value = leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::vec(("\\PC{0,6}|[\"\\\\a]{0,3}", inner), 0..6)
                    .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
            ]
        });
        (value, any::<bool>()).prop_map(|(value, pretty)| match pretty {
            true => serde_json::to_string_pretty(&value).unwrap(),
            false => serde_json::to_string(&value).unwrap(),
        })
    }

    /// A JSON text with a few bytes changed, removed or added, from an alphabet of JSON's
    /// own characters so that the changes land on its grammar's edges.
    fn mutated() -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(
                "{}[]\":,\\ \n\t\u{1}0123456789-+.eEtrufalsn/bxu\u{e9}"
                    .chars()
                    .collect::<Vec<_>>(),
            ),
        );
        (json_text(), prop::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, kind, ch) in edits {
                let at = at.index(chars.len() + 1);
                match kind {
                    0 if at < chars.len() => chars[at] = ch,
                    1 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, ch),
                }
            }
            chars.into_iter().collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn what_serde_json_writes_is_accepted(text in json_text()) {
            if !text.contains("\\ud") {
                prop_assert_eq!(value(&text), Some(()));
            }
            if text.starts_with('{') && !text.contains("\\ud") {
                let ours = our_members(&text);
                // A key with an escape is left to serde_json.
                if ours.is_some() || !text.contains('\\') {
                    prop_assert_eq!(ours, serde_members(&text));
                }
            }
        }

        #[test]
        fn what_is_accepted_serde_json_accepts(text in mutated()) {
            if value(&text).is_some() {
                prop_assert!(serde_accepts(&text), "accepted: {text:?}");
            }
            if let Some(ours) = our_members(&text) {
                prop_assert_eq!(Some(ours), serde_members(&text), "{:?}", text);
            }
        }
    }

    #[test]
    fn edges_of_the_grammar() {
        for good in [
            "0",
            "-0",
            "1.5e+3",
            "-12E-0",
            "0.0",
            "true",
            " null ",
            "\"\"",
            "[]",
            "{}",
            "[1,[2,{\"a\":[]}]]",
            "{\"a\":{\"b\":{}}, \"c\" : [ ] }",
            "\"\\u00e9\\n\\/\"",
            "\"é🦀\"",
        ] {
            assert_eq!(value(good), Some(()), "{good}");
            assert!(serde_accepts(good), "{good}");
        }
        for bad in [
            "",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}\"",
            "\"open",
            "[",
            "{",
            "1 2",
            "[}",
            "{]",
            "\"\\u+123\"",
        ] {
            assert_eq!(value(bad), None, "{bad:?}");
            assert!(!serde_accepts(bad), "{bad:?}");
        }
        // Valid, and left to serde_json.
        assert_eq!(value("\"\\ud83e\\udd80\""), None);
        let deep = format!("{}{}", "[".repeat(80), "]".repeat(80));
        assert_eq!(value(&deep), None);
        assert!(serde_accepts(&deep));
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(value(&fine), Some(()));
    }

    #[test]
    fn plain_values_read_as_serde_json_reads_them() {
        for number in ["0", "7", "18446744073709551615"] {
            let serde: u64 = serde_json::from_str(number).unwrap();
            assert_eq!(whole_u64(number), Some(serde), "{number}");
        }
        for not in [
            "18446744073709551616",
            "-1",
            "1.0",
            "1e3",
            "+1",
            "01",
            "\"1\"",
            "",
        ] {
            assert_eq!(whole_u64(not), None, "{not:?}");
        }
        for text in [r#""abc""#, r#""""#, r#""é🦀 /""#] {
            let serde: String = serde_json::from_str(text).unwrap();
            assert_eq!(plain_str(text), Some(serde.as_str()), "{text}");
        }
        for not in [r#""a\"b""#, r#""\u0061""#, "1", "null", "\""] {
            assert_eq!(plain_str(not), None, "{not:?}");
        }
    }

    #[test]
    fn members_come_in_order_with_their_value_text() {
        let found = our_members(r#" {"type":"a", "queryIndex" :7,"payload":{"x":[1, "}"]}} "#);
        let pairs = [
            ("type", "\"a\""),
            ("queryIndex", "7"),
            ("payload", r#"{"x":[1, "}"]}"#),
        ];
        let expected = pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec();
        assert_eq!(found, Some(expected));
        assert_eq!(our_members("{}"), Some(vec![]));
        assert_eq!(our_members(r#"{"ty\u0070e":1}"#), None, "an escaped key");
        assert_eq!(our_members("[]"), None);
        assert_eq!(
            members(r#"{"a":1,"b":2}"#, |key, _| (key != "b").then_some(())),
            None
        );
    }
}
