//! Reading a response: its `queryIndex` and whether its `resultJob` is an error, borrowed
//! from the read buffer with serde rather than built into a JSON tree, since it runs once per
//! response. The first error's text is read once more, in full, for the report. A chain step
//! whose successor needs fields of its answer reads those, and only those, with
//! [`find_fields`].

use std::fmt;

use anyhow::{anyhow, bail};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer as _};
use serde_json::value::RawValue;

use super::report::FirstError;

/// What the generator needs from a response.
#[derive(Debug)]
pub(super) struct Parsed<'a> {
    pub(super) query_index: u64,
    pub(super) is_error: bool,
    /// The `resultJob`, unparsed, for a chain step to take fields from.
    pub(super) result_job: Option<&'a RawValue>,
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
pub(super) fn parse_response(body: &[u8]) -> anyhow::Result<Parsed<'_>> {
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
            result_job: response.result_job,
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

/// Calls `found(i, value)` for each top-level field of `job` named `names[i]`, reading past
/// the others without building them. Finds nothing in a `job` that is not an object.
pub(super) fn find_fields<'a>(
    job: &'a RawValue,
    names: &[String],
    found: impl FnMut(usize, &'a RawValue),
) {
    if !job.get().starts_with('{') {
        return;
    }
    let mut de = serde_json::Deserializer::from_str(job.get());
    // `job` is valid JSON (serde checked it when borrowing it), so this cannot fail.
    let _ = de.deserialize_map(FieldVisitor { names, found });
}

/// Walks an object for [`find_fields`].
struct FieldVisitor<'n, F> {
    names: &'n [String],
    found: F,
}

impl<'de, F: FnMut(usize, &'de RawValue)> Visitor<'de> for FieldVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(wanted) = map.next_key_seed(KeyIndex(self.names))? {
            match wanted {
                Some(i) => (self.found)(i, map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a key as its index in the names, without allocating it.
struct KeyIndex<'n>(&'n [String]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Option<usize>, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| name == key))
    }
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
        let ok = |s: &'static str| parse_response(s.as_bytes()).unwrap();
        let p = ok(r#"{"type":"ping","queryIndex":7,"resultJob":{"pong":1}}"#);
        assert_eq!((p.query_index, p.is_error), (7, false));
        assert_eq!(p.result_job.map(|j| j.get()), Some(r#"{"pong":1}"#));
        let p = ok(r#" {"resultJob":{"err":"x","code":"timeout"},"queryIndex":8,"type":"t"} "#);
        assert_eq!((p.query_index, p.is_error), (8, true));
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
    fn fields_are_found_by_name_and_kept_as_json_text() {
        let find = |job: &str, names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let job: &RawValue = serde_json::from_str(job).unwrap();
            let mut found = vec![None; names.len()];
            find_fields(job, &names, |i, v| found[i] = Some(v.get().to_owned()));
            found
        };
        let job = r#"{"proxy":"h:1","lease":"L\"7","token":3,"deep":{"lease":1},"n":null}"#;
        assert_eq!(
            find(job, &["token", "lease", "missing", "n", "deep"]),
            [
                Some("3".into()),
                Some(r#""L\"7""#.into()),
                None,
                Some("null".into()),
                Some(r#"{"lease":1}"#.into())
            ]
        );
        assert_eq!(
            find(r#"{"le\u0061se":[1, 2]}"#, &["lease"]),
            [Some("[1, 2]".into())]
        );
        assert_eq!(find(r#""lease""#, &["lease"]), [None]);
        assert_eq!(find("[1]", &["lease"]), [None]);
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
