//! Reading a response: its `queryIndex`, whether its `resultJob` is an error, and the fields
//! of the `resultJob` a chain step's successor needs, all in one pass over the response as it
//! lies in the read buffer: no JSON tree is built, and nothing is read twice, since this runs
//! once per response on a generator that shares the machine with the server it measures.
//! The first error's text is read once more, in full, for the report.

use std::borrow::Cow;
use std::fmt;

use anyhow::{anyhow, bail};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer as _};
use serde_json::value::RawValue;

use super::report::FirstError;

/// What the generator needs from a response beyond the fields [`Fields`] took.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed {
    pub(super) query_index: u64,
    pub(super) is_error: bool,
}

/// Whoever keeps fields of a response's `resultJob`: the chain of the request it answers.
pub(super) trait Fields {
    /// The response answers the request with `query_index`, and its `resultJob` is an
    /// object whose fields come next. Returns whether any of them is wanted; when not, the
    /// fields are read past.
    fn answers(&mut self, query_index: u64) -> bool;

    /// A top-level field of the `resultJob`, as JSON text.
    fn field(&mut self, name: &str, value: &RawValue);
}

/// Keeps no fields.
pub(super) struct NoFields;

impl Fields for NoFields {
    fn answers(&mut self, _: u64) -> bool {
        false
    }

    fn field(&mut self, _: &str, _: &RawValue) {}
}

/// Reads `queryIndex` and whether `resultJob` is an error, and hands the `resultJob`'s fields
/// to `fields` when it wants them. The whole response must be valid JSON.
pub(super) fn parse_response(body: &[u8], fields: &mut dyn Fields) -> anyhow::Result<Parsed> {
    let malformed = |e: &dyn fmt::Display| anyhow!("malformed response ({e}): {}", excerpt(body));
    // Checked once here, so that serde reads strings and raw values without checking again.
    let text = std::str::from_utf8(body).map_err(|e| malformed(&e))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let read = de
        .deserialize_map(ResponseVisitor { fields })
        .and_then(|read| de.end().map(|()| read))
        .map_err(|e| malformed(&e))?;
    let Some(query_index) = read.query_index else {
        bail!(
            "response without a queryIndex (the server could not read a request?): {}",
            excerpt(body)
        );
    };
    let is_error = match (read.is_error, read.early_job) {
        (Some(is_error), _) => is_error,
        // The `resultJob` came before the `queryIndex`: its fields are read now.
        (None, Some(job)) => {
            let mut de = serde_json::Deserializer::from_str(job.get());
            JobSeed {
                query_index,
                fields,
            }
            .deserialize(&mut de)
            .map_err(|e| malformed(&e))?
        }
        (None, None) => false,
    };
    Ok(Parsed {
        query_index,
        is_error,
    })
}

/// The top-level object of a response, as [`ResponseVisitor`] reads it.
struct Read<'de> {
    /// `None` when absent or `null`.
    query_index: Option<u64>,
    /// Whether the `resultJob` was an error, once it was read.
    is_error: Option<bool>,
    /// A `resultJob` that came before the `queryIndex`, to be read once that is known.
    early_job: Option<&'de RawValue>,
}

struct ResponseVisitor<'f> {
    fields: &'f mut dyn Fields,
}

impl<'de> Visitor<'de> for ResponseVisitor<'_> {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<'de>, A::Error> {
        let mut read = Read {
            query_index: None,
            is_error: None,
            early_job: None,
        };
        let (mut seen_index, mut seen_job) = (false, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "queryIndex" => {
                    if std::mem::replace(&mut seen_index, true) {
                        return Err(serde::de::Error::duplicate_field("queryIndex"));
                    }
                    read.query_index = map.next_value()?;
                }
                "resultJob" => {
                    if std::mem::replace(&mut seen_job, true) {
                        return Err(serde::de::Error::duplicate_field("resultJob"));
                    }
                    match read.query_index {
                        Some(query_index) => {
                            let fields = &mut *self.fields;
                            read.is_error = Some(map.next_value_seed(JobSeed {
                                query_index,
                                fields,
                            })?);
                        }
                        None => read.early_job = Some(map.next_value()?),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(read)
    }
}

/// Reads a `resultJob`: whether it is an object holding a non-null `err` (an error answer;
/// anything else is not one), handing its fields to [`Fields`] on the way.
struct JobSeed<'f> {
    query_index: u64,
    fields: &'f mut dyn Fields,
}

impl<'de> DeserializeSeed<'de> for JobSeed<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JobSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a resultJob")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let wanted = self.fields.answers(self.query_index);
        let mut is_error = false;
        while let Some(key) = map.next_key::<Key>()? {
            let name = key.0.as_ref();
            if wanted {
                let value: &RawValue = map.next_value()?;
                is_error |= name == "err" && value.get() != "null";
                self.fields.field(name, value);
            } else if name == "err" {
                is_error |= map.next_value::<Option<IgnoredAny>>()?.is_some();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(is_error)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}

/// An object's key: borrowed from the buffer, or unescaped when it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Key<'de>, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
    }
}

#[derive(Deserialize)]
struct WireResponse<'a> {
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

/// The `err` and `code` of a `resultJob`, if it is an object holding a non-null `err`.
fn probe_error(job: &RawValue) -> Option<ErrorProbe<'_>> {
    if !job.get().starts_with('{') {
        return None;
    }
    let probe: ErrorProbe = serde_json::from_str(job.get()).ok()?;
    probe.err.is_some().then_some(probe)
}

/// The error of a response already known to be one, for the report.
pub(super) fn first_error(body: &[u8]) -> Option<FirstError> {
    let response: WireResponse = serde_json::from_slice(body).ok()?;
    let probe = probe_error(response.result_job?)?;
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

    /// Keeps the fields it names, as JSON text, and says which answer they came from.
    #[derive(Default)]
    struct Keep {
        names: Vec<&'static str>,
        answered: Option<u64>,
        found: Vec<Option<String>>,
    }

    impl Fields for Keep {
        fn answers(&mut self, query_index: u64) -> bool {
            self.answered = Some(query_index);
            self.found = vec![None; self.names.len()];
            !self.names.is_empty()
        }

        fn field(&mut self, name: &str, value: &RawValue) {
            if let Some(i) = self.names.iter().position(|n| *n == name) {
                self.found[i] = Some(value.get().to_owned());
            }
        }
    }

    fn parse(body: &str) -> anyhow::Result<Parsed> {
        parse_response(body.as_bytes(), &mut NoFields)
    }

    #[test]
    fn responses_are_parsed_cheaply_and_strictly() {
        let ok = |s: &'static str| parse(s).unwrap();
        let p = ok(r#"{"type":"ping","queryIndex":7,"resultJob":{"pong":1}}"#);
        assert_eq!((p.query_index, p.is_error), (7, false));
        let p = ok(r#" {"resultJob":{"err":"x","code":"timeout"},"queryIndex":8,"type":"t"} "#);
        assert_eq!((p.query_index, p.is_error), (8, true));
        // The original server's errors have no code; a null err is no error; nor is a
        // result that is not an object, or a missing one.
        assert!(ok(r#"{"queryIndex":1,"resultJob":{"err":{"m":1}}}"#).is_error);
        assert!(ok(r#"{"queryIndex":1,"resultJob":{"e\u0072r":"x"}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":{"err":null,"e":"err"}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":"err"}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":[{"err":1}]}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":null}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1}"#).is_error);

        let bad = |s: &str| format!("{:#}", parse(s).unwrap_err());
        assert!(bad("nope").contains("malformed response"));
        assert!(bad(r#"{"queryIndex":-1}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":"1"}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":1,"resultJob":{"a":}}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":1} {}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":1,"queryIndex":2}"#).contains("duplicate field"));
        assert!(bad(r#"{"resultJob":1,"queryIndex":2,"resultJob":3}"#).contains("duplicate"));
        let latin1 = format!(
            "{:#}",
            parse_response(b"{\"queryIndex\":1,\"x\":\"\xe9\"}", &mut NoFields).unwrap_err()
        );
        assert!(latin1.contains("malformed response"), "{latin1}");
        assert!(
            bad(r#"{"type":"errMsgFromClient","queryIndex":null,"resultJob":{"err":"bad"}}"#)
                .contains("without a queryIndex")
        );
    }

    #[test]
    fn fields_are_found_by_name_and_kept_as_json_text() {
        let find = |body: &str, names: &[&'static str]| {
            let mut keep = Keep {
                names: names.to_vec(),
                ..Keep::default()
            };
            let parsed = parse_response(body.as_bytes(), &mut keep).unwrap();
            assert_eq!(keep.answered, Some(parsed.query_index), "{body}");
            keep.found
        };
        let job = r#"{"proxy":"h:1","lease":"L\"7","token":3,"deep":{"lease":1},"n":null}"#;
        let body = format!(r#"{{"queryIndex":4,"resultJob":{job}}}"#);
        let all = [
            Some("3".into()),
            Some(r#""L\"7""#.into()),
            None,
            Some("null".into()),
            Some(r#"{"lease":1}"#.into()),
        ];
        assert_eq!(
            find(&body, &["token", "lease", "missing", "n", "deep"]),
            all
        );
        // The same when the resultJob comes first.
        let body = format!(r#"{{"resultJob":{job},"queryIndex":4}}"#);
        assert_eq!(
            find(&body, &["token", "lease", "missing", "n", "deep"]),
            all
        );
        assert_eq!(
            find(
                r#"{"queryIndex":1,"resultJob":{"le\u0061se":[1, 2]}}"#,
                &["lease"]
            ),
            [Some("[1, 2]".into())]
        );
        // Only an object's fields are handed on, so a resultJob of another type answers nothing.
        let none = |body: &str| {
            let mut keep = Keep {
                names: vec!["lease"],
                ..Keep::default()
            };
            parse_response(body.as_bytes(), &mut keep).unwrap();
            keep.answered
        };
        assert_eq!(none(r#"{"queryIndex":1,"resultJob":"lease"}"#), None);
        assert_eq!(none(r#"{"queryIndex":1,"resultJob":["lease"]}"#), None);
        assert_eq!(none(r#"{"queryIndex":1}"#), None);
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
