//! JSON text written by hand on hot paths, byte for byte what `serde_json` writes.
//!
//! `serde_json` escapes each string a byte at a time through a lookup table and writes each
//! struct field name the same way. That costs several times more than copying text that
//! needs no escaping, as request types, pool names, resource ids, lease ids and field names
//! do not; in a WASM guest, where every copy of a fragment is a call out of the guest, it was
//! the largest single cost of answering a `getProxy`. The host writes its journal records
//! and response envelopes with [`push_str`] and [`push_u64`]; a jobber writes a hot answer
//! with an [`Object`] (see [`Jobber::answer_text`](crate::Jobber::answer_text)).
//!
//! Reading goes the other way: [`scan`] checks JSON text and finds an object's members
//! without decoding them, for the host's envelopes and a jobber's hottest payloads.

pub mod scan;

/// Appends `text` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("a string serializes into a Vec");
    }
}

/// Whether `text` holds a byte a JSON string must escape: a control character, `"` or `\\`.
///
/// A word at a time, with the tricks of "Bit Twiddling Hacks", and the tail as one more word
/// that overlaps the last: a WASM guest's code checks a byte at a time at several times the
/// native cost (an epoch check and spilled registers each iteration), and the strings of an
/// answer are short, so a loop over their last bytes cost as much as the rest.
#[inline]
fn needs_escape(text: &[u8]) -> bool {
    if let Some(last) = text.last_chunk::<8>() {
        let (words, _) = text.as_chunks::<8>();
        return words
            .iter()
            .chain([last])
            .any(|word| escapes_in(u64::from_le_bytes(*word)));
    }
    if let (Some(first), Some(last)) = (text.first_chunk::<4>(), text.last_chunk::<4>()) {
        let word =
            u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32;
        return escapes_in(word);
    }
    text.iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// Where the first byte a JSON string must escape (a control character, `"` or `\\`) is in
/// `text`: how a reader finds the end of a string, or its next escape, a word at a time.
/// The first word is checked inline, since most strings a reader meets end within it.
#[inline]
pub fn find_escape(text: &[u8]) -> Option<usize> {
    match text.first_chunk::<8>() {
        Some(word) => match escape_marks(u64::from_le_bytes(*word)) {
            0 => find_escape_after_word(text),
            marks => Some(first_marked(marks)),
        },
        None => (text.iter()).position(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\'),
    }
}

/// [`find_escape`] in a text of at least one word whose first word has none.
fn find_escape_after_word(text: &[u8]) -> Option<usize> {
    let mut at = 8;
    while let Some(word) = text[at..].first_chunk::<8>() {
        let marks = escape_marks(u64::from_le_bytes(*word));
        if marks != 0 {
            return Some(at + first_marked(marks));
        }
        at += 8;
    }
    if at == text.len() {
        return None;
    }
    // The tail as a word that overlaps the last one checked, whose bytes had none.
    let last = text.last_chunk::<8>()?;
    let marks = escape_marks(u64::from_le_bytes(*last));
    (marks != 0).then(|| text.len() - 8 + first_marked(marks))
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`.
#[inline]
fn escapes_in(word: u64) -> bool {
    escape_marks(word) != 0
}

/// The high bit of each byte of `word` that is a control character, `"` or `\\`. A byte
/// after a marked one may be marked falsely (a borrow carries into it); the first mark is
/// always right.
fn escape_marks(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // Not zero when a byte is below `n` (n <= 0x80).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let equal = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    below(word, 0x20) | equal(word, b'"') | equal(word, b'\\')
}

/// The byte of a little-endian word that holds the lowest of `marks`.
fn first_marked(marks: u64) -> usize {
    (marks.trailing_zeros() / 8) as usize
}

/// Appends `number` in decimal.
pub fn push_u64(out: &mut Vec<u8>, number: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// A JSON object written field by field, as `serde_json` would write a struct with those
/// fields in that order.
///
/// ```
/// let mut got = resman_sdk::json::Object::new();
/// got.str("proxy", "10.0.0.1:3128").u64("token", 7);
/// assert_eq!(got.finish(), r#"{"proxy":"10.0.0.1:3128","token":7}"#);
/// ```
#[derive(Debug)]
pub struct Object {
    /// The text so far: `{` and the fields written, each but the first after a comma.
    text: Vec<u8>,
}

impl Object {
    /// An object with no fields yet.
    #[must_use]
    pub fn new() -> Self {
        let mut text = Vec::with_capacity(96);
        text.push(b'{');
        Object { text }
    }

    /// Adds the field `key` with a string value.
    #[inline]
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_str(&mut self.text, value);
        self
    }

    /// Adds the field `key` with a number value.
    #[inline]
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(&mut self.text, value);
        self
    }

    /// Adds the field `key` with a number written as a JSON string, as an id that is a
    /// number but travels as text (a lease's, say) is written.
    #[inline]
    pub fn u64_text(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.text.push(b'"');
        push_u64(&mut self.text, value);
        self.text.push(b'"');
        self
    }

    /// Adds the field `key` with a string value, or `null`.
    #[inline]
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key);
                self.text.extend_from_slice(b"null");
                self
            }
        }
    }

    /// The object's JSON text.
    #[must_use]
    pub fn finish(mut self) -> String {
        self.text.push(b'}');
        // SAFETY: the text is ASCII punctuation, ASCII digits and whole `&str`s, written by
        // `push_str` as they are or as serde_json escapes them, so it is UTF-8. (Checking it
        // again cost a guest as much as writing the keys.)
        unsafe { String::from_utf8_unchecked(self.text) }
    }

    /// Writes `,"key":` (no comma first).
    ///
    /// Inlined, with the methods that call it, into the plugin's code: its keys are
    /// constants there, so the escape check folds away and the key is copied with stores of
    /// a known size. Through a call, the key's copy was a `memory.copy`, which a WASM guest
    /// makes as a call out to the host, for each key of each answer.
    #[inline(always)]
    fn key(&mut self, key: &str) {
        self.text.reserve(key.len() + 4);
        if self.text.len() > 1 {
            self.text.push(b',');
        }
        if needs_escape(key.as_bytes()) {
            push_str(&mut self.text, key);
        } else {
            self.text.push(b'"');
            self.text.extend_from_slice(key.as_bytes());
            self.text.push(b'"');
        }
        self.text.push(b':');
    }
}

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    proptest! {
        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in "\\PC*|[\"\\\\\\x00-\\x1f\\x7f]*") {
            let mut out = Vec::new();
            push_str(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn numbers_are_written_as_serde_json_writes_them(number: u64) {
            let mut out = Vec::new();
            push_u64(&mut out, number);
            prop_assert_eq!(out, serde_json::to_vec(&number).unwrap());
        }

        #[test]
        fn objects_are_written_as_serde_json_writes_structs(
            name in "\\PC*|[\"\\\\\\x00-\\x1f]*",
            count: u64,
            note in proptest::option::of("\\PC*"),
        ) {
            #[derive(Serialize)]
            struct Fields<'a> {
                name: &'a str,
                count: u64,
                note: Option<&'a str>,
                id: &'a str,
            }
            let mut object = Object::new();
            object
                .str("name", &name)
                .u64("count", count)
                .opt_str("note", note.as_deref())
                .u64_text("id", count);
            let id = count.to_string();
            let expected = serde_json::to_string(&Fields { name: &name, count, note: note.as_deref(), id: &id });
            prop_assert_eq!(object.finish(), expected.unwrap());
        }
    }

    proptest! {
        #[test]
        fn escapes_are_found_in_any_bytes(text: Vec<u8>) {
            let bytewise = text.iter().any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\');
            prop_assert_eq!(needs_escape(&text), bytewise);
        }
    }

    proptest! {
        #[test]
        fn the_first_escape_is_found_in_any_bytes(text: Vec<u8>) {
            let bytewise = text.iter().position(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\');
            prop_assert_eq!(find_escape(&text), bytewise);
        }
    }

    #[test]
    fn the_first_of_two_escapes_is_found_at_each_place() {
        for len in 0..20 {
            for first in 0..len {
                for second in first..len {
                    let mut text = vec![b'a'; len];
                    text[second] = b'\\';
                    text[first] = 0x1f;
                    assert_eq!(find_escape(&text), Some(first), "{len} {first} {second}");
                }
            }
            assert_eq!(find_escape(&vec![0xff; len]), None);
        }
    }

    #[test]
    fn each_byte_to_escape_is_found_at_each_place_of_a_word() {
        for byte in (0..0x20).chain([b'"', b'\\']) {
            for at in 0..17 {
                let mut text = vec![b'a'; 17];
                text[at] = byte;
                assert!(needs_escape(&text), "{byte:#x} at {at}");
            }
        }
        assert!(!needs_escape("10.0.0.7:3128 ~\u{7f}é".as_bytes()));
    }

    #[test]
    fn a_key_with_bytes_to_escape_is_escaped() {
        let mut object = Object::new();
        object.u64("a\"b\n", 1).str("c", "d");
        assert_eq!(object.finish(), r#"{"a\"b\n":1,"c":"d"}"#);
    }

    #[test]
    fn an_object_without_fields_is_empty() {
        assert_eq!(Object::new().finish(), "{}");
    }
}
