//! A frame's bytes → a [`Request`], or the reason it is not one. Pure, no I/O.

use crate::jobber::Request;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Number;
use std::borrow::Cow;
use std::sync::Arc;

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

pub(crate) fn parse_request(body: &[u8], client_id: u64) -> Result<Request, BadMessage> {
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
    let kind: Cow<str> =
        serde_json::from_str(raw_kind.get()).map_err(|_| bad("\"type\" must be a string"))?;
    if kind.is_empty() {
        return Err(bad("\"type\" must not be empty"));
    }
    let Some(index) = query_index.clone() else {
        return Err(bad(if envelope.query_index.is_some() {
            "\"queryIndex\" must be a number"
        } else {
            "message has no \"queryIndex\""
        }));
    };
    Ok(Request {
        kind: Arc::from(kind.as_ref()),
        query_index: index,
        payload: envelope.payload.map(|raw| Arc::from(raw.to_owned())),
        client_id,
        attempt: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_payload_raw() {
        let req =
            parse_request(br#"{"type":"a","queryIndex":3,"payload":{"x":[1, 2]}}"#, 9).unwrap();
        assert_eq!(req.kind(), "a");
        assert_eq!(req.query_index(), &Number::from(3));
        assert_eq!(req.payload_raw().unwrap().get(), r#"{"x":[1, 2]}"#);
        assert_eq!(req.client_id(), 9);
    }

    #[test]
    fn missing_type_echoes_the_query_index() {
        let err = parse_request(br#"{"queryIndex":5}"#, 1).unwrap_err();
        assert_eq!(err.query_index, Some(Number::from(5)));
        assert!(err.reason.contains("type"));
    }

    #[test]
    fn missing_or_bad_query_index_is_refused() {
        let err = parse_request(br#"{"type":"a"}"#, 1).unwrap_err();
        assert_eq!(err.query_index, None);
        assert!(err.reason.contains("queryIndex"));
        let err = parse_request(br#"{"type":"a","queryIndex":"x"}"#, 1).unwrap_err();
        assert!(err.reason.contains("number"));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_request(b"{not json", 1).is_err());
        assert!(parse_request(b"[1,2]", 1).is_err());
        assert!(parse_request(b"\xff\xfe", 1).is_err());
    }
}
