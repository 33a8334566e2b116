//! JSON text written by hand on the hot paths, byte for byte what `serde_json` writes: the
//! serializer escapes each string a byte at a time through a lookup table and writes each
//! struct field name the same way, which costs several times more than copying text that
//! needs no escaping, as request types, pool names, resource ids and field names do not.

/// Appends `text` as a JSON string.
pub(crate) fn push_str(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
    {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("a string serializes into a Vec");
    }
}

/// Appends `number` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, number: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    }
}
