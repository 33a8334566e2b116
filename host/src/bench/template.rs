//! [`Template`]: the bytes of a request, built once per run from a type, a payload and
//! `--framing`, so that sending a request is a few copies and a number; no JSON is serialised
//! on the request path.
//!
//! A `--step` payload may hold placeholders, `{{NAME}}`, each standing where a JSON value
//! may stand (`{"lease":{{lease}}}`, never inside a string), and replaced by the JSON text of
//! field NAME of the previous step's answer: a string keeps its quotes, a number stays a
//! number. The template cuts its bytes at each placeholder, so a value is copied in, not
//! parsed or escaped, at send time. Requiring a whole value rather than splicing text into
//! strings keeps one rule for every JSON type and makes a wrong template fail at start-up
//! (the payload with `null` in each placeholder must be valid JSON) rather than on the wire.

use anyhow::{anyhow, bail};
use resman_sdk::frame::push_escaping_crabs;
use resman_sdk::protocol::Framing;
use serde_json::value::RawValue;

/// The bytes of a request, but for its `queryIndex` and the values of its placeholders.
pub(super) struct Template {
    /// `{"type":"ping","queryIndex":`
    head: Vec<u8>,
    /// What follows the query index up to the first placeholder, or to the end: `}🦀`,
    /// `,"payload":{...}}🦀`, or `,"payload":{"lease":`.
    tail: Vec<u8>,
    /// Each placeholder, as its index in `fields`, and the bytes that follow it.
    holes: Vec<(usize, Vec<u8>)>,
    /// The distinct field names the placeholders ask for, in order of first use.
    fields: Vec<String>,
}

/// A payload cut at its placeholders: compact text, not yet crab-escaped.
#[derive(Debug, Default, PartialEq)]
struct Cut {
    /// The text before the first placeholder (all of it when there is none).
    first: String,
    /// Each placeholder's name and the text after it.
    rest: Vec<(String, String)>,
}

impl Cut {
    /// The text after the last placeholder so far.
    fn end(&mut self) -> &mut String {
        match self.rest.last_mut() {
            Some((_, text)) => text,
            None => &mut self.first,
        }
    }

    /// The payload with `null` in each placeholder.
    fn with_nulls(&self) -> String {
        let mut text = self.first.clone();
        for (_, after) in &self.rest {
            text.push_str("null");
            text.push_str(after);
        }
        text
    }
}

impl Template {
    /// The template for requests of type `kind` with `payload` (JSON text, perhaps with
    /// placeholders). An error says what is wrong with the payload, the subject left out
    /// for the caller to name: "is not valid JSON: ...".
    pub(super) fn new(
        kind: &str,
        payload: Option<&str>,
        framing: Framing,
    ) -> anyhow::Result<Template> {
        let mut head = br#"{"type":"#.to_vec();
        push_escaping_crabs(&mut head, serde_json::to_string(kind)?.as_bytes());
        head.extend_from_slice(br#","queryIndex":"#);
        let mut template = Template {
            head,
            tail: Vec::new(),
            holes: Vec::new(),
            fields: Vec::new(),
        };
        if let Some(payload) = payload {
            template.add_payload(cut_placeholders(payload)?);
        }
        let end = match template.holes.last_mut() {
            Some((_, bytes)) => bytes,
            None => &mut template.tail,
        };
        end.push(b'}');
        end.extend_from_slice(framing.terminator());
        Ok(template)
    }

    fn add_payload(&mut self, cut: Cut) {
        self.tail.extend_from_slice(br#","payload":"#);
        // Compact, so that newline framing holds; crabs escaped, so that a server that
        // splits blindly on the crab (the original) reads the request whole.
        push_escaping_crabs(&mut self.tail, cut.first.as_bytes());
        for (name, after) in cut.rest {
            let field = match self.fields.iter().position(|f| *f == name) {
                Some(field) => field,
                None => {
                    self.fields.push(name);
                    self.fields.len() - 1
                }
            };
            let mut bytes = Vec::new();
            push_escaping_crabs(&mut bytes, after.as_bytes());
            self.holes.push((field, bytes));
        }
    }

    /// The field names the placeholders ask for; `values` in [`Template::push`] follow this
    /// order.
    pub(super) fn fields(&self) -> &[String] {
        &self.fields
    }

    /// About how many bytes a request takes, for sizing buffers.
    pub(super) fn len_hint(&self) -> usize {
        let holes: usize = self.holes.iter().map(|(_, b)| b.len() + 16).sum();
        self.head.len() + self.tail.len() + holes + 20
    }

    /// Appends the request with `query_index` to `out`, the placeholders filled from
    /// `values` (JSON text as [`push_value`] wrote it, one per [`Template::fields`]).
    pub(super) fn push(&self, out: &mut Vec<u8>, query_index: u64, values: &[Vec<u8>]) {
        out.extend_from_slice(&self.head);
        push_u64(out, query_index);
        out.extend_from_slice(&self.tail);
        for (field, bytes) in &self.holes {
            out.extend_from_slice(&values[*field]);
            out.extend_from_slice(bytes);
        }
    }
}

/// Appends `value`, valid JSON from an answer, as a placeholder's value: compact (an answer
/// may be pretty-printed, and newline framing allows no line break) and with crabs escaped.
pub(super) fn push_value(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b == b'\n' || b == b'\r') {
        push_escaping_crabs(out, minify_json(value).as_bytes());
    } else {
        push_escaping_crabs(out, value.as_bytes());
    }
}

/// Cuts `payload` at its `{{NAME}}` placeholders and checks that, with `null` in each, it
/// is valid JSON.
fn cut_placeholders(payload: &str) -> anyhow::Result<Cut> {
    let text = minify_json(payload);
    let mut cut = Cut::default();
    let (mut in_string, mut escaped) = (false, false);
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        let rest = &text[at..];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if let Some(name) = placeholder(rest) {
                bail!(
                    "puts {{{{{name}}}}} inside a string; a placeholder is replaced by a whole \
                     JSON value, quotes included, so write it unquoted: {{{{{name}}}}}, not \
                     \"{{{{{name}}}}}\""
                );
            }
        } else if rest.starts_with("{{") {
            let Some(name) = placeholder(rest) else {
                let start: String = rest.chars().take(40).collect();
                bail!("has a placeholder without a valid name (write {{{{NAME}}}}) at {start}");
            };
            cut.rest.push((name.to_owned(), String::new()));
            at += name.len() + 4;
            continue;
        } else if c == '"' {
            in_string = true;
        }
        cut.end().push(c);
        at += c.len_utf8();
    }
    serde_json::from_str::<&RawValue>(&cut.with_nulls())
        .map_err(|e| anyhow!("is not valid JSON: {e}"))?;
    Ok(cut)
}

/// The NAME of a `{{NAME}}` at the start of `text`, if there is one. A name is one or more
/// characters other than braces, quotes, backslashes and whitespace.
fn placeholder(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?;
    let end = inner.find("}}")?;
    let name = &inner[..end];
    let valid = !name.is_empty()
        && !name
            .chars()
            .any(|c| matches!(c, '{' | '}' | '"' | '\\') || c.is_whitespace());
    valid.then_some(name)
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
        t.push(&mut out, 0, &[]);
        t.push(&mut out, 18_446_744_073_709_551_614, &[]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"getProxy\",\"queryIndex\":0,\"payload\":{\"r\":\"eu\"}}🦀\
             {\"type\":\"getProxy\",\"queryIndex\":18446744073709551614,\"payload\":{\"r\":\"eu\"}}🦀"
        );
        let t = Template::new("a\"🦀", None, Framing::Newline).unwrap();
        let mut out = Vec::new();
        t.push(&mut out, 42, &[]);
        assert_eq!(
            out,
            br#"{"type":"a\"\ud83e\udd80","queryIndex":42}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<_>>()
        );
    }

    /// `payload`'s template with `values` filled in and query index 1, as text.
    fn filled(payload: &str, values: &[&str]) -> String {
        let t = Template::new("t", Some(payload), Framing::Newline).unwrap();
        let values: Vec<Vec<u8>> = values
            .iter()
            .map(|v| {
                let mut bytes = Vec::new();
                push_value(&mut bytes, v);
                bytes
            })
            .collect();
        let mut out = Vec::new();
        t.push(&mut out, 1, &values);
        let text = String::from_utf8(out).unwrap();
        let body = text.strip_suffix('\n').unwrap();
        let payload = body.strip_prefix(r#"{"type":"t","queryIndex":1,"payload":"#);
        payload.unwrap().strip_suffix('}').unwrap().to_owned()
    }

    #[test]
    fn placeholders_are_replaced_by_whole_json_values() {
        let lease = r#"{"lease":{{lease}}}"#;
        assert_eq!(filled(lease, &[r#""L-7""#]), r#"{"lease":"L-7"}"#);
        assert_eq!(filled(lease, &["42"]), r#"{"lease":42}"#);
        assert_eq!(filled(lease, &["null"]), r#"{"lease":null}"#);
        // Values from an answer are made compact and crab-safe, strings left alone.
        assert_eq!(
            filled(lease, &["{\"a\": [1,\n 2], \"b\": \"x y 🦀\"}"]),
            r#"{"lease":{"a":[1,2],"b":"x y \ud83e\udd80"}}"#
        );
        // Several placeholders; one field used twice; spaces inside the braces; a payload
        // that is a placeholder alone; crabs in the template escaped.
        let t = Template::new(
            "t",
            Some(r#"{"a": {{ x }}, "b": [{{y}}, {{x}}], "c": "🦀"}"#),
            Framing::Crab,
        )
        .unwrap();
        assert_eq!(t.fields(), ["x", "y"]);
        assert_eq!(
            filled(
                r#"{"a": {{x}}, "b": [{{y}}, {{x}}], "c": "🦀"}"#,
                &["1", "true"]
            ),
            r#"{"a":1,"b":[true,1],"c":"\ud83e\udd80"}"#
        );
        assert_eq!(filled("{{v}}", &[r#""s""#]), r#""s""#);
        assert!(Template::new("t", Some("{}"), Framing::Crab)
            .unwrap()
            .fields()
            .is_empty());
    }

    #[test]
    fn misplaced_placeholders_are_rejected_at_start() {
        let error = |payload: &str| {
            Template::new("t", Some(payload), Framing::Crab)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            error(r#"{"lease":"{{lease}}"}"#).starts_with(
                "puts {{lease}} inside a string; a placeholder is replaced by a whole JSON \
                 value, quotes included, so write it unquoted: {{lease}}, not \"{{lease}}\""
            ),
            "{}",
            error(r#"{"lease":"{{lease}}"}"#)
        );
        assert!(error(r#"{"a":"x{{lease}}y"}"#).contains("inside a string"));
        assert!(error(r#"[{{k}}:1]"#).starts_with("is not valid JSON"));
        assert!(error(r#"{{{k}}:1}"#).starts_with("has a placeholder without a valid name"));
        assert!(error(r#"{"a":{{b}}x}"#).starts_with("is not valid JSON"));
        assert!(error(r#"{"a":[{{b}}{{c}}]}"#).starts_with("is not valid JSON"));
        assert!(error(r#"{"a":{{}}}"#).starts_with("has a placeholder without a valid name"));
        assert!(error(r#"{"a":{{b"#).starts_with("has a placeholder without a valid name"));
        assert!(error(r#"{"a":"#).starts_with("is not valid JSON"));
        // Braces in strings that are not placeholders are text.
        assert_eq!(
            filled(r#"{"a":"{{ not one }}","b":"}}{{"}"#, &[]),
            r#"{"a":"{{ not one }}","b":"}}{{"}"#
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
