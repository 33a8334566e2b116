//! A frame's bytes → a [`Request`], or the reason it is not one. Pure, no I/O.

use crate::jobber::Request;
use resman_sdk::json::scan;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// The request types a connection has sent lately, so that a request of a type seen before
/// shares its name instead of allocating it again: a client sends a handful of types
/// thousands of times each.
#[derive(Debug, Default)]
pub(crate) struct Kinds {
    seen: Vec<Arc<str>>,
    /// Where the next new type goes once `seen` is full.
    next: usize,
}

impl Kinds {
    /// How many types are kept; a client cycling through more only allocates more.
    const KEPT: usize = 16;

    fn name(&mut self, kind: &str) -> Arc<str> {
        if let Some(seen) = self.seen.iter().find(|seen| ***seen == *kind) {
            return Arc::clone(seen);
        }
        let name: Arc<str> = Arc::from(kind);
        if self.seen.len() < Self::KEPT {
            self.seen.push(Arc::clone(&name));
        } else {
            self.seen[self.next] = Arc::clone(&name);
            self.next = (self.next + 1) % Self::KEPT;
        }
        name
    }
}

/// A message that is not a request; answered `errMsgFromClient` / `bad_request`.
#[derive(Debug, PartialEq)]
pub(crate) struct BadMessage {
    /// The message's `queryIndex` when it could be read.
    pub(crate) query_index: Option<Number>,
    pub(crate) reason: String,
}

/// The top level of a request, read in one pass. `type` and `queryIndex` are [`Field`]s, so
/// that a bad `type` does not hide a good `queryIndex` (the error answer echoes it); the
/// payload stays raw JSON text, as the jobber receives it.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Field<Cow<'a, str>>,
    #[serde(rename = "queryIndex", default)]
    query_index: Field<Number>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// One envelope field as it came: absent, of the kind wanted, or any other JSON value.
#[derive(Default)]
enum Field<T> {
    #[default]
    Missing,
    Good(T),
    Other,
}

impl<T> Field<T> {
    fn good(value: Option<T>) -> Self {
        value.map_or(Field::Other, Field::Good)
    }
}

/// The kinds of value a [`Field`] takes; anything else makes it [`Field::Other`].
trait Wanted<'de>: Sized {
    fn text(_: Cow<'de, str>) -> Option<Self> {
        None
    }

    fn number(_: Number) -> Option<Self> {
        None
    }
}

impl<'de: 'a, 'a> Wanted<'de> for Cow<'a, str> {
    /// Borrowed from the message unless it has escapes to decode.
    fn text(text: Cow<'de, str>) -> Option<Self> {
        Some(text)
    }
}

impl Wanted<'_> for Number {
    fn number(number: Number) -> Option<Self> {
        Some(number)
    }
}

impl<'de, T: Wanted<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

/// Takes any JSON value: the wanted kind as it is, anything else read past.
struct FieldVisitor<T>(PhantomData<T>);

impl<'de, T: Wanted<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Field<T>, E> {
        Ok(Field::good(T::text(Cow::Borrowed(text))))
    }

    fn visit_str<E>(self, text: &str) -> Result<Field<T>, E> {
        Ok(Field::good(T::text(Cow::Owned(text.to_owned()))))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Field<T>, E> {
        Ok(Field::good(T::number(number.into())))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Field<T>, E> {
        Ok(Field::good(T::number(number.into())))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Field<T>, E> {
        Ok(Field::good(Number::from_f64(number).and_then(T::number)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
        Ok(Field::Other)
    }

    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

/// A request in the form clients send: a `type` without escapes, a `queryIndex` that is a
/// whole number a u64 holds, any `payload`, each at most once. Read by
/// [`scan::members`] in a fraction of what the [`Envelope`] costs; any other message,
/// including every bad one, is left to the envelope, which words the errors.
struct Plain<'a> {
    kind: &'a str,
    query_index: Number,
    payload: Option<&'a str>,
}

impl<'a> Plain<'a> {
    fn read(text: &'a str) -> Option<Self> {
        let (mut kind, mut query_index, mut payload) = (None, None, None);
        scan::members(text, |key, value| {
            let field = match key {
                "type" => &mut kind,
                "queryIndex" => &mut query_index,
                "payload" => &mut payload,
                _ => return Some(()),
            };
            // Twice is an error the envelope words.
            field.replace(value).is_none().then_some(())
        })?;
        let kind = scan::plain_str(kind?).filter(|kind| !kind.is_empty())?;
        Some(Plain {
            kind,
            query_index: scan::whole_u64(query_index?)?.into(),
            // `null` is no payload, as `Option<&RawValue>` reads it.
            payload: payload.filter(|raw| *raw != "null"),
        })
    }
}

pub(crate) fn parse_request(
    body: &[u8],
    client_id: u64,
    kinds: &mut Kinds,
) -> Result<Request, BadMessage> {
    // Checked whole once, so that the parser need not check each string it reads.
    let text = std::str::from_utf8(body).map_err(|err| BadMessage {
        query_index: None,
        reason: format!("message is not UTF-8 text: {err}"),
    })?;
    if let Some(plain) = Plain::read(text) {
        return Ok(Request {
            kind: kinds.name(plain.kind),
            query_index: plain.query_index,
            payload: plain.payload.map(Arc::from),
            client_id,
            attempt: 1,
        });
    }
    parse_envelope(text, client_id, kinds)
}

/// Any message, read through the [`Envelope`].
fn parse_envelope(text: &str, client_id: u64, kinds: &mut Kinds) -> Result<Request, BadMessage> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|err| BadMessage {
        query_index: None,
        reason: format!("message is not a JSON object: {err}"),
    })?;
    let query_index = match envelope.query_index {
        Field::Good(index) => Ok(index),
        Field::Missing => Err("message has no \"queryIndex\""),
        Field::Other => Err("\"queryIndex\" must be a number"),
    };
    let echoed = query_index.as_ref().ok().cloned();
    let bad = |reason: &str| BadMessage {
        query_index: echoed.clone(),
        reason: reason.to_owned(),
    };
    let kind = match envelope.kind {
        Field::Good(kind) if kind.is_empty() => return Err(bad("\"type\" must not be empty")),
        Field::Good(kind) => kinds.name(&kind),
        Field::Missing => return Err(bad("message has no \"type\"")),
        Field::Other => return Err(bad("\"type\" must be a string")),
    };
    let query_index = query_index.map_err(bad)?;
    Ok(Request {
        kind,
        query_index,
        payload: envelope.payload.map(|raw| Arc::from(raw.get())),
        client_id,
        attempt: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(body: &[u8], client_id: u64) -> Result<Request, BadMessage> {
        parse_request(body, client_id, &mut Kinds::default())
    }

    #[test]
    fn a_request_keeps_its_payload_raw() {
        let req = parse(br#"{"type":"a","queryIndex":3,"payload":{"x":[1, 2]}}"#, 9).unwrap();
        assert_eq!(req.kind(), "a");
        assert_eq!(req.query_index(), &Number::from(3));
        assert_eq!(req.payload_text(), Some(r#"{"x":[1, 2]}"#));
        assert_eq!(req.client_id(), 9);
    }

    #[test]
    fn missing_type_echoes_the_query_index() {
        let err = parse(br#"{"queryIndex":5}"#, 1).unwrap_err();
        assert_eq!(err.query_index, Some(Number::from(5)));
        assert!(err.reason.contains("type"));
    }

    #[test]
    fn missing_or_bad_query_index_is_refused() {
        let err = parse(br#"{"type":"a"}"#, 1).unwrap_err();
        assert_eq!(err.query_index, None);
        assert!(err.reason.contains("queryIndex"));
        let err = parse(br#"{"type":"a","queryIndex":"x"}"#, 1).unwrap_err();
        assert!(err.reason.contains("number"));
    }

    #[test]
    fn a_type_of_any_other_kind_is_refused_with_the_query_index_echoed() {
        for kind in [
            r#"{"a":[1,{"b":"}"}]}"#,
            "[[]]",
            "null",
            "true",
            "7",
            r#""""#,
        ] {
            let body = format!(r#"{{"type":{kind},"queryIndex":-4,"payload":1}}"#);
            let err = parse(body.as_bytes(), 1).unwrap_err();
            assert_eq!(err.query_index, Some(Number::from(-4)), "type {kind}");
            assert!(err.reason.contains("\"type\" must"), "{}", err.reason);
        }
        let req = parse(br#"{"queryIndex":1.5,"type":"a"}"#, 1).unwrap();
        assert_eq!(req.query_index(), &Number::from_f64(1.5).unwrap());
        let err = parse(br#"{"type":"a","queryIndex":[1]}"#, 1).unwrap_err();
        assert_eq!(err.query_index, None);
        assert!(err.reason.contains("must be a number"), "{}", err.reason);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse(b"{not json", 1).is_err());
        assert!(parse(b"[1,2]", 1).is_err());
        let err = parse(b"{\"type\":\"a\xff\",\"queryIndex\":1}", 1).unwrap_err();
        assert!(err.reason.contains("not UTF-8"), "{}", err.reason);
    }

    #[test]
    fn a_type_with_escapes_is_decoded() {
        let req = parse(br#"{"type":"get\u0050roxy\n","queryIndex":1}"#, 1).unwrap();
        assert_eq!(req.kind(), "getProxy\n");
        let plain: Envelope = serde_json::from_str(r#"{"type":"getProxy"}"#).unwrap();
        assert!(
            matches!(plain.kind, Field::Good(Cow::Borrowed("getProxy"))),
            "no copy made"
        );
        let err = parse(br#"{"type":7,"queryIndex":1}"#, 1).unwrap_err();
        assert!(err.reason.contains("must be a string"), "{}", err.reason);
    }

    /// Messages near the form clients send, and off it in every way the plain reading
    /// must notice: escapes, other kinds of value, numbers it does not take, repeated
    /// fields, other fields, whitespace, and a few bytes changed.
    fn messages() -> impl Strategy<Value = String> {
        let kind = prop_oneof![
            "\"[a-zA-Z]{1,12}\"",
            Just(r#""""#.to_owned()),
            Just(r#""get\u0050roxy""#.to_owned()),
            Just(r#""a\"b""#.to_owned()),
            Just("7".to_owned()),
            Just("null".to_owned()),
        ];
        let index = prop_oneof![
            "0|[1-9][0-9]{0,21}",
            Just("-3".to_owned()),
            Just("-0".to_owned()),
            Just("1.5".to_owned()),
            Just("2e3".to_owned()),
            Just(r#""7""#.to_owned()),
        ];
        let payload = prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just(r#"{"lease":"42"}"#.to_owned()),
            Just(r#"[1, {"x": "🦀\n"}]"#.to_owned()),
            Just(r#""\ud83e\udd80""#.to_owned()),
        ];
        let member = prop_oneof![
            kind.prop_map(|value| format!(r#""type":{value}"#)),
            index.prop_map(|value| format!(r#""queryIndex":{value}"#)),
            payload
                .clone()
                .prop_map(|value| format!(r#""payload":{value}"#)),
            payload.prop_map(|value| format!(r#""other" : {value}"#)),
        ];
        let message = (prop::collection::vec(member, 0..5), " ?", "\n?").prop_map(
            |(members, space, newline)| {
                format!("{space}{{{}}}{newline}", members.join(&format!(",{space}")))
            },
        );
        let byte = prop::sample::select(&br#"{}[]":,\ 0-.e"#[..]);
        let edit = (any::<prop::sample::Index>(), byte);
        (message, prop::collection::vec(edit, 0..2)).prop_map(|(message, edits)| {
            let mut bytes = message.into_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len() + 1);
                bytes.insert(at, byte);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn the_plain_reading_agrees_with_the_envelope(text in messages()) {
            let plain = Plain::read(&text);
            let full = parse_envelope(&text, 1, &mut Kinds::default());
            if let Some(plain) = plain {
                let full = full.unwrap_or_else(|err| panic!("{text:?}: {}", err.reason));
                prop_assert_eq!(plain.kind, full.kind());
                prop_assert_eq!(&plain.query_index, full.query_index());
                prop_assert_eq!(plain.payload, full.payload_text());
            }
        }
    }

    #[test]
    fn what_clients_send_is_read_plainly() {
        for text in [
            r#"{"type":"getProxy","queryIndex":17,"payload":{}}"#,
            r#"{ "payload" : null , "queryIndex" : 0, "type" : "ping", "x": [1] }"#,
            r#"{"type":"a","queryIndex":18446744073709551615}"#,
        ] {
            assert!(Plain::read(text).is_some(), "{text}");
            let req = parse(text.as_bytes(), 1).unwrap();
            let full = parse_envelope(text, 1, &mut Kinds::default()).unwrap();
            assert_eq!(
                (req.kind(), req.payload_text()),
                (full.kind(), full.payload_text())
            );
            assert_eq!(req.query_index(), full.query_index());
        }
        for text in [
            r#"{"type":"a","queryIndex":18446744073709551616}"#,
            r#"{"type":"a","queryIndex":-1}"#,
            r#"{"type":"a","type":"b","queryIndex":1}"#,
            r#"{"type":"a\u0062","queryIndex":1}"#,
            r#"{"type":"a","queryIndex":1,"payload":{]}"#,
        ] {
            assert!(Plain::read(text).is_none(), "{text}");
        }
    }

    #[test]
    fn requests_of_one_type_share_its_name() {
        let mut kinds = Kinds::default();
        let mut kind = |body: &[u8]| parse_request(body, 1, &mut kinds).unwrap().kind;
        let first = kind(br#"{"type":"getProxy","queryIndex":1}"#);
        let again = kind(br#"{"type":"getProxy","queryIndex":2}"#);
        assert!(Arc::ptr_eq(&first, &again));
        // More types than are kept: each still reads as itself, the old ones allocated anew.
        for n in 0..3 * Kinds::KEPT {
            let body = format!(r#"{{"type":"t{n}","queryIndex":1}}"#);
            assert_eq!(&*kind(body.as_bytes()), format!("t{n}"));
        }
        assert_eq!(&*kind(br#"{"type":"getProxy","queryIndex":3}"#), "getProxy");
    }
}
