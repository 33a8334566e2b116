//! [`Template`]: the bytes of a request, built once per run from `--type`, `--payload` and
//! `--framing`, so that sending a request is two copies and a number; no JSON is serialised
//! on the request path.

use anyhow::anyhow;
use resman_sdk::frame::push_escaping_crabs;
use resman_sdk::protocol::Framing;
use serde_json::value::RawValue;

/// The bytes of a request, but for its `queryIndex`.
pub(super) struct Template {
    /// `{"type":"ping","queryIndex":`
    pub(super) head: Vec<u8>,
    /// `,"payload":...}🦀` or `}🦀`
    pub(super) tail: Vec<u8>,
}

impl Template {
    pub(super) fn new(
        kind: &str,
        payload: Option<&str>,
        framing: Framing,
    ) -> anyhow::Result<Template> {
        let mut head = br#"{"type":"#.to_vec();
        push_escaping_crabs(&mut head, serde_json::to_string(kind)?.as_bytes());
        head.extend_from_slice(br#","queryIndex":"#);
        let mut tail = Vec::new();
        if let Some(payload) = payload {
            serde_json::from_str::<&RawValue>(payload)
                .map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?;
            tail.extend_from_slice(br#","payload":"#);
            // Compact, so that newline framing holds; crabs escaped, so that a server that
            // splits blindly on the crab (the original) reads the request whole.
            push_escaping_crabs(&mut tail, minify_json(payload).as_bytes());
        }
        tail.push(b'}');
        tail.extend_from_slice(framing.terminator());
        Ok(Template { head, tail })
    }

    /// Appends the request with `query_index` to `out`.
    pub(super) fn push(&self, out: &mut Vec<u8>, query_index: u64) {
        out.extend_from_slice(&self.head);
        push_u64(out, query_index);
        out.extend_from_slice(&self.tail);
    }
}

/// Removes the whitespace outside strings from valid JSON text.
fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::super::test_server::{args, server, Mode};
    use super::super::BenchArgs;
    use super::*;
    use resman_sdk::protocol::Request;

    #[test]
    fn requests_are_built_from_the_template() {
        let t = Template::new("getProxy", Some(" {\"r\": \"eu\"} "), Framing::Crab).unwrap();
        let mut out = Vec::new();
        t.push(&mut out, 0);
        t.push(&mut out, 18_446_744_073_709_551_614);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"getProxy\",\"queryIndex\":0,\"payload\":{\"r\":\"eu\"}}🦀\
             {\"type\":\"getProxy\",\"queryIndex\":18446744073709551614,\"payload\":{\"r\":\"eu\"}}🦀"
        );
        let t = Template::new("a\"🦀", None, Framing::Newline).unwrap();
        let mut out = Vec::new();
        t.push(&mut out, 42);
        assert_eq!(
            out,
            br#"{"type":"a\"\ud83e\udd80","queryIndex":42}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn minify_keeps_strings_intact() {
        assert_eq!(
            minify_json(" { \"a b\" : [ 1 ,\t2 ] ,\r\n \"c\\\" d\" : \"\\\\\" } "),
            "{\"a b\":[1,2],\"c\\\" d\":\"\\\\\"}"
        );
    }

    #[test]
    fn the_payload_is_sent_compact_with_crabs_escaped() {
        let server = server(Mode::Ping);
        let payload = "{ \"a\" : [1, 2],\n  \"s\": \"🦀 \\\" x\" }";
        run(BenchArgs {
            payload: Some(payload.into()),
            framing: Framing::Newline,
            ..args(&server, 1, 1, 1)
        })
        .unwrap();
        let first = server.stats.first_request.lock().unwrap().clone().unwrap();
        assert_eq!(
            first,
            r#"{"type":"ping","queryIndex":0,"payload":{"a":[1,2],"s":"\ud83e\udd80 \" x"}}"#
        );
        let sent: Request = serde_json::from_str(&first).unwrap();
        assert_eq!(
            sent.payload,
            serde_json::from_str::<serde_json::Value>(payload).unwrap()
        );
    }
}
