//! Reading a response: its `queryIndex` and whether its `resultJob` is an error, borrowed
//! from the read buffer with serde rather than built into a JSON tree, since it runs once per
//! response. The first error's text is read once more, in full, for the report.

use anyhow::{anyhow, bail};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::report::FirstError;

/// What the generator needs from a response.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed {
    pub(super) query_index: u64,
    pub(super) is_error: bool,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(rename = "queryIndex")]
    query_index: Option<u64>,
    #[serde(rename = "resultJob", borrow)]
    result_job: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorProbe<'a> {
    #[serde(borrow)]
    err: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

/// Reads `queryIndex` and whether `resultJob` is an error, without building a JSON tree.
pub(super) fn parse_response(body: &[u8]) -> anyhow::Result<Parsed> {
    let response: WireResponse = serde_json::from_slice(body)
        .map_err(|e| anyhow!("malformed response ({e}): {}", excerpt(body)))?;
    let is_error = match response.result_job {
        Some(job) => probe_error(job)?.is_some(),
        None => false,
    };
    match response.query_index {
        Some(query_index) => Ok(Parsed {
            query_index,
            is_error,
        }),
        None => bail!(
            "response without a queryIndex (the server could not read a request?): {}",
            excerpt(body)
        ),
    }
}

/// The `err` and `code` of a `resultJob`, if it is an object holding a non-null `err`.
fn probe_error(job: &RawValue) -> anyhow::Result<Option<ErrorProbe<'_>>> {
    if !job.get().starts_with('{') {
        return Ok(None);
    }
    let probe: ErrorProbe = serde_json::from_str(job.get()).map_err(|e| {
        anyhow!(
            "malformed resultJob ({e}): {}",
            excerpt(job.get().as_bytes())
        )
    })?;
    Ok(probe.err.is_some().then_some(probe))
}

/// The error of a response already known to be one, for the report.
pub(super) fn first_error(body: &[u8]) -> Option<FirstError> {
    let response: WireResponse = serde_json::from_slice(body).ok()?;
    let probe = probe_error(response.result_job?).ok()??;
    let text = |raw: &RawValue| {
        serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned())
    };
    Some(FirstError {
        err: probe.err.map(text).unwrap_or_default(),
        code: probe.code.map(text),
    })
}

/// The start of `body`, as text, for an error message.
pub(super) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{args, failure, Mode};
    use super::*;

    #[test]
    fn responses_are_parsed_cheaply_and_strictly() {
        let ok = |s: &str| parse_response(s.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"type":"ping","queryIndex":7,"resultJob":{"pong":1}}"#),
            Parsed {
                query_index: 7,
                is_error: false
            }
        );
        assert_eq!(
            ok(r#" {"resultJob":{"err":"x","code":"timeout"},"queryIndex":8,"type":"t"} "#),
            Parsed {
                query_index: 8,
                is_error: true
            }
        );
        // The original server's errors have no code; a null err is no error; nor is a
        // result that is not an object, or a missing one.
        assert!(ok(r#"{"queryIndex":1,"resultJob":{"err":{"m":1}}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":{"err":null,"e":"err"}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":"err"}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":null}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1}"#).is_error);

        let bad = |s: &str| format!("{:#}", parse_response(s.as_bytes()).unwrap_err());
        assert!(bad("nope").contains("malformed response"));
        assert!(bad(r#"{"queryIndex":-1}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":"1"}"#).contains("malformed response"));
        assert!(
            bad(r#"{"type":"errMsgFromClient","queryIndex":null,"resultJob":{"err":"bad"}}"#)
                .contains("without a queryIndex")
        );
    }

    #[test]
    fn the_first_error_reads_err_and_code() {
        let e = |s: &str| first_error(s.as_bytes());
        assert_eq!(
            e(r#"{"queryIndex":1,"resultJob":{"err":"no \"x\"","code":"unknown_type"}}"#),
            Some(FirstError {
                err: "no \"x\"".into(),
                code: Some("unknown_type".into())
            })
        );
        assert_eq!(
            e(r#"{"queryIndex":1,"resultJob":{"err":{"m":1}}}"#),
            Some(FirstError {
                err: r#"{"m":1}"#.into(),
                code: None
            })
        );
        assert_eq!(e(r#"{"queryIndex":1,"resultJob":{"pong":1}}"#), None);
    }

    #[test]
    fn a_malformed_response_aborts() {
        let msg = failure(Mode::Malformed, |s| args(s, 1, 1, 10));
        assert!(msg.contains("malformed response"), "{msg}");
        assert!(msg.contains("this is not json"), "{msg}");
    }
}
