//! A frame's bytes → a [`Request`], or the reason it is not one. Pure, no I/O.

use crate::jobber::Request;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Number;
use std::borrow::Cow;
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

/// The top level of a request, fields kept raw so that a bad `type` does not hide a good
/// `queryIndex` (the error answer echoes it).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "queryIndex", borrow, default)]
    query_index: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// A JSON string, borrowed from the message unless it has escapes to decode.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

pub(crate) fn parse_request(
    body: &[u8],
    client_id: u64,
    kinds: &mut Kinds,
) -> Result<Request, BadMessage> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|err| BadMessage {
        query_index: None,
        reason: format!("message is not a JSON object: {err}"),
    })?;
    let query_index = envelope
        .query_index
        .and_then(|raw| serde_json::from_str::<Number>(raw.get()).ok());
    let bad = |reason: &str| BadMessage {
        query_index: query_index.clone(),
        reason: reason.to_owned(),
    };
    let Some(raw_kind) = envelope.kind else {
        return Err(bad("message has no \"type\""));
    };
    let Text(kind) =
        serde_json::from_str(raw_kind.get()).map_err(|_| bad("\"type\" must be a string"))?;
    if kind.is_empty() {
        return Err(bad("\"type\" must not be empty"));
    }
    let kind = kinds.name(&kind);
    let Some(index) = query_index.clone() else {
        return Err(bad(if envelope.query_index.is_some() {
            "\"queryIndex\" must be a number"
        } else {
            "message has no \"queryIndex\""
        }));
    };
    Ok(Request {
        kind,
        query_index: index,
        payload: envelope.payload.map(|raw| Arc::from(raw.get())),
        client_id,
        attempt: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn garbage_is_refused() {
        assert!(parse(b"{not json", 1).is_err());
        assert!(parse(b"[1,2]", 1).is_err());
        assert!(parse(b"\xff\xfe", 1).is_err());
    }

    #[test]
    fn a_type_with_escapes_is_decoded() {
        let req = parse(br#"{"type":"get\u0050roxy\n","queryIndex":1}"#, 1).unwrap();
        assert_eq!(req.kind(), "getProxy\n");
        let plain: Text = serde_json::from_str(r#""getProxy""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("getProxy")), "no copy made");
        let err = parse(br#"{"type":7,"queryIndex":1}"#, 1).unwrap_err();
        assert!(err.reason.contains("must be a string"), "{}", err.reason);
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
