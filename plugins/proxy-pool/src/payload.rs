//! What each request type's payload may say, parsed and checked before the pool is asked
//! anything. A payload that does not fit is answered `invalid` naming the request type, so
//! a client can tell its own mistake from the pool's state.
//!
//! `getProxy` ignores fields it does not know, because the original package's clients send
//! `{"region": ...}` with it; the other types refuse unknown fields, which catches typos such
//! as `ttl` for `ttlMs`.
//!
//! The two hot types, `getProxy` and `releaseProxy`, first try their payload's plain shape
//! with [`scan`] (strings without escapes, whole numbers, each field once): serde's derived
//! reading was about a fifth of the plugin's instructions per request. Anything else goes to
//! serde, which reads it the same way or words the error.

use crate::proxy;
use resman_sdk::json::scan;
use resman_sdk::pool::AcquireRequest;
use resman_sdk::{parse_object as parse, JobError};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Display;

/// The longest `requestId`, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 256;

/// A `getProxy` payload; `null` and `{}` ask for any free proxy at once, for good.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GetProxy {
    /// Repeating a `getProxy` with it returns the lease it granted.
    pub request_id: Option<String>,
    /// The lease expires this long after the grant.
    pub ttl_ms: Option<u64>,
    /// Wait up to this long for a proxy to come free.
    pub wait_ms: Option<u64>,
    /// Give the proxy back when the client disconnects.
    pub release_on_disconnect: bool,
}

impl GetProxy {
    /// The payload read plainly: `null`, or an object whose fields this type knows are plain
    /// (`requestId` a string without escapes, `ttlMs` and `waitMs` whole numbers,
    /// `releaseOnDisconnect` a boolean) and each there once; `None` for anything else.
    fn plain(payload: &str) -> Option<GetProxy> {
        let mut get = GetProxy::default();
        if payload == "null" {
            return Some(get);
        }
        let mut seen = 0u8;
        scan::members(payload, |key, value| {
            let field = match key {
                "requestId" => {
                    get.request_id = Some(scan::plain_str(value)?.to_owned());
                    1
                }
                "ttlMs" => {
                    get.ttl_ms = Some(scan::whole_u64(value)?);
                    2
                }
                "waitMs" => {
                    get.wait_ms = Some(scan::whole_u64(value)?);
                    4
                }
                "releaseOnDisconnect" => {
                    get.release_on_disconnect = match value {
                        "true" => true,
                        "false" => false,
                        _ => return None,
                    };
                    8
                }
                _ => return Some(()),
            };
            // Twice is an error serde words.
            (seen & field == 0).then(|| seen |= field)
        })?;
        Some(get)
    }

    /// The acquire of one proxy of `pool` this payload asks for. The pool's request ids are
    /// shared by every plugin, so the client's `requestId` is scoped as `<pool>/<requestId>`:
    /// a client reusing an id it gave another plugin gets a proxy, not that plugin's lease.
    pub(crate) fn into_acquire(self, pool: &str) -> AcquireRequest {
        let mut acquire = AcquireRequest::count(pool, 1);
        acquire.request_id = self.request_id.map(|id| format!("{pool}/{id}"));
        acquire.ttl_ms = self.ttl_ms;
        acquire.wait_ms = self.wait_ms;
        acquire.release_on_disconnect = self.release_on_disconnect;
        acquire
    }
}

/// What a `releaseProxy` names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// The proxy (canonical `host:port`); its lease is released.
    Proxy(String),
    /// The lease.
    Lease(String),
}

/// A `renewProxy` payload.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(expecting = r#"an object {"lease": "<id>", "ttlMs": n}"#)]
pub(crate) struct Renew {
    /// The lease to renew.
    pub lease: String,
    /// Its new deadline, from now.
    pub ttl_ms: u64,
}

/// A `removeProxy` payload, its proxies canonical and without repeats.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"proxies": ["host:port", ...], "force": bool}"#)]
pub(crate) struct Remove {
    /// The proxies to remove.
    pub proxies: Vec<String>,
    /// Remove held ones too, ending their leases.
    #[serde(default)]
    pub force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"proxies": ["host:port", ...]}"#)]
struct Proxies {
    proxies: Vec<String>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"proxy": "host:port"} or {"lease": "<id>"}"#)]
struct ReleaseFields {
    proxy: Option<String>,
    lease: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "an empty object")]
struct Empty {}

/// A `getProxy` payload.
///
/// # Errors
///
/// `invalid` for a payload that is not an object of the fields above, a `ttlMs` of 0, or an
/// empty or overlong `requestId`.
pub(crate) fn get_proxy(payload: &str) -> Result<GetProxy, JobError> {
    let get = match GetProxy::plain(payload) {
        Some(get) => get,
        None => parse::<Option<GetProxy>>("getProxy", payload)?.unwrap_or_default(),
    };
    if get.ttl_ms == Some(0) {
        return Err(invalid("getProxy", "ttlMs must be at least 1"));
    }
    if let Some(id) = &get.request_id {
        check_request_id(id).map_err(|why| invalid("getProxy", why))?;
    }
    Ok(get)
}

/// The proxies of an `addProxy` payload, canonical and without repeats.
///
/// # Errors
///
/// `invalid` for a payload that is not `{"proxies": [...]}`, an empty list, or an entry
/// that is not `host:port`.
pub(crate) fn add_proxy(payload: &str) -> Result<Vec<String>, JobError> {
    let Proxies { proxies } = parse("addProxy", payload)?;
    proxy_list("addProxy", proxies)
}

/// What a `releaseProxy` payload names.
///
/// # Errors
///
/// `invalid` unless exactly one of `proxy` (a `host:port`) and `lease` (not empty) is given.
pub(crate) fn release_proxy(payload: &str) -> Result<Release, JobError> {
    let fields = match plain_release(payload) {
        Some(fields) => fields,
        None => parse("releaseProxy", payload)?,
    };
    match fields {
        ReleaseFields {
            proxy: Some(proxy),
            lease: None,
        } => Ok(Release::Proxy(
            proxy::canonical(&proxy).map_err(|why| invalid("releaseProxy", why))?,
        )),
        ReleaseFields {
            proxy: None,
            lease: Some(lease),
        } => Ok(Release::Lease(non_empty("releaseProxy", "lease", lease)?)),
        _ => Err(invalid(
            "releaseProxy",
            "give exactly one of proxy and lease",
        )),
    }
}

/// A `releaseProxy` payload read plainly: an object of one member, `proxy` or `lease`, a
/// string without escapes. `None` for anything else.
fn plain_release(payload: &str) -> Option<ReleaseFields> {
    let mut only = None;
    scan::members(payload, |key, value| {
        matches!(key, "proxy" | "lease").then_some(())?;
        let string = scan::plain_str(value)?;
        only.replace((key, string)).is_none().then_some(())
    })?;
    let (key, string) = only?;
    let string = Some(string.to_owned());
    Some(match key {
        "proxy" => ReleaseFields {
            proxy: string,
            lease: None,
        },
        _ => ReleaseFields {
            proxy: None,
            lease: string,
        },
    })
}

/// A `renewProxy` payload.
///
/// # Errors
///
/// `invalid` for a missing or empty `lease` or a missing or zero `ttlMs`.
pub(crate) fn renew_proxy(payload: &str) -> Result<Renew, JobError> {
    let renew: Renew = parse("renewProxy", payload)?;
    if renew.ttl_ms == 0 {
        return Err(invalid("renewProxy", "ttlMs must be at least 1"));
    }
    let lease = non_empty("renewProxy", "lease", renew.lease)?;
    Ok(Renew { lease, ..renew })
}

/// A `removeProxy` payload.
///
/// # Errors
///
/// As [`add_proxy`], and `invalid` for a `force` that is not a boolean.
pub(crate) fn remove_proxy(payload: &str) -> Result<Remove, JobError> {
    let remove: Remove = parse("removeProxy", payload)?;
    let proxies = proxy_list("removeProxy", remove.proxies)?;
    Ok(Remove { proxies, ..remove })
}

/// A `proxyStatus` payload: `null` or `{}`.
///
/// # Errors
///
/// `invalid` for anything else.
pub(crate) fn proxy_status(payload: &str) -> Result<(), JobError> {
    parse::<Option<Empty>>("proxyStatus", payload).map(drop)
}

/// An `invalid` rejection of a `kind` request.
pub(crate) fn invalid(kind: &str, message: impl Display) -> JobError {
    JobError::invalid(format!("{kind}: {message}"))
}

fn proxy_list(kind: &str, proxies: Vec<String>) -> Result<Vec<String>, JobError> {
    if proxies.is_empty() {
        return Err(invalid(kind, "proxies is empty"));
    }
    let mut seen = HashSet::with_capacity(proxies.len());
    let mut canonical = Vec::with_capacity(proxies.len());
    for text in &proxies {
        let proxy = proxy::canonical(text).map_err(|why| invalid(kind, why))?;
        if seen.insert(proxy.clone()) {
            canonical.push(proxy);
        }
    }
    Ok(canonical)
}

fn non_empty(kind: &str, field: &str, value: String) -> Result<String, JobError> {
    if value.is_empty() {
        Err(invalid(kind, format_args!("{field} is empty")))
    } else {
        Ok(value)
    }
}

fn check_request_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("requestId is empty")
    } else if id.len() > MAX_REQUEST_ID_BYTES {
        Err("requestId is longer than 256 bytes")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The message of an `invalid` rejection; panics on anything else.
    fn invalid_message(err: JobError) -> String {
        match err {
            JobError::Reject { code, message } if code == "invalid" => message,
            other => panic!("expected an invalid rejection, got {other:?}"),
        }
    }

    /// Payloads of the fields these types know and some they do not, each value mostly of
    /// the field's own kind and otherwise anything, some fields twice.
    fn payloads() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "requestId",
            "ttlMs",
            "waitMs",
            "releaseOnDisconnect",
            "region",
            "proxy",
            "lease",
        ]);
        let other = prop::sample::select(vec![
            r#""a\"b""#,
            r#""\u0041:1""#,
            "-1",
            "1.5",
            "1e3",
            "null",
            r#"{"x": [1]}"#,
            "\"\"",
        ]);
        let member = (key, any::<bool>(), "[a-z0-9:.]{0,6}", any::<u64>(), other).prop_map(
            |(key, own_kind, text, number, other)| {
                let value = match (own_kind, key) {
                    (false, _) => other.to_owned(),
                    (true, "ttlMs" | "waitMs") => number.to_string(),
                    (true, "releaseOnDisconnect") => (number % 2 == 0).to_string(),
                    (true, _) => format!("{text:?}"),
                };
                format!("{key:?}: {value}")
            },
        );
        let object = prop::collection::vec(member, 0..4)
            .prop_map(|members| format!("{{{}}}", members.join(", ")));
        prop_oneof![
            8 => object,
            1 => Just("null".to_owned()),
            1 => Just("[]".to_owned()),
            1 => Just(r#"{"ttlMs": 1"#.to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn the_plain_readings_agree_with_serde(payload in payloads()) {
            if let Some(plain) = GetProxy::plain(&payload) {
                let serde = parse::<Option<GetProxy>>("getProxy", &payload);
                prop_assert_eq!(Ok(plain), serde.map(Option::unwrap_or_default), "{}", payload);
            }
            if let Some(plain) = plain_release(&payload) {
                let serde = parse::<ReleaseFields>("releaseProxy", &payload);
                prop_assert_eq!(Ok(plain), serde, "{}", payload);
            }
        }
    }

    #[test]
    fn what_clients_send_is_read_plainly() {
        for payload in [
            "null",
            "{}",
            r#"{"requestId": "r1", "ttlMs": 30000, "waitMs": 500,
                "releaseOnDisconnect": true, "region": "eu"}"#,
        ] {
            assert!(GetProxy::plain(payload).is_some(), "{payload}");
        }
        for payload in [r#"{"lease": "17"}"#, r#"{"proxy": "a:1"}"#] {
            assert!(plain_release(payload).is_some(), "{payload}");
        }
        // Left to serde, to read or to refuse with its words.
        for payload in [r#"{"ttlMs": 1, "ttlMs": 2}"#, r#"{"requestId": "\u0041"}"#] {
            assert_eq!(GetProxy::plain(payload), None, "{payload}");
        }
        for payload in [r#"{"lease": "1", "proxy": "a:1"}"#, r#"{"lease": 1}"#, "{}"] {
            assert_eq!(plain_release(payload), None, "{payload}");
        }
    }

    #[test]
    fn get_proxy_accepts_null_and_an_empty_object() {
        assert_eq!(get_proxy("null").unwrap(), GetProxy::default());
        assert_eq!(get_proxy("{}").unwrap(), GetProxy::default());
    }

    #[test]
    fn get_proxy_reads_every_option_and_ignores_unknown_fields() {
        let get = get_proxy(
            r#"{"requestId": "r1", "ttlMs": 30000, "waitMs": 500,
                "releaseOnDisconnect": true, "region": "eu"}"#,
        )
        .unwrap();
        let acquire = get.into_acquire("proxies");
        assert_eq!(acquire.wants.len(), 1);
        assert_eq!(acquire.wants[0].pool, "proxies");
        assert_eq!(acquire.wants[0].count, 1);
        assert_eq!(acquire.request_id.as_deref(), Some("proxies/r1"));
        assert_eq!(acquire.ttl_ms, Some(30_000));
        assert_eq!(acquire.wait_ms, Some(500));
        assert!(acquire.release_on_disconnect);
    }

    #[test]
    fn get_proxy_without_options_neither_expires_nor_waits() {
        let acquire = get_proxy("{}").unwrap().into_acquire("proxies");
        assert_eq!(acquire.ttl_ms, None);
        assert_eq!(acquire.wait_ms, None);
        assert_eq!(acquire.request_id, None);
        assert!(!acquire.release_on_disconnect);
    }

    #[test]
    fn get_proxy_refuses_bad_options() {
        let cases = [
            (r#"{"ttlMs": 0}"#, "ttlMs must be at least 1"),
            (r#"{"ttlMs": -1}"#, "bad payload"),
            (r#"{"waitMs": "soon"}"#, "bad payload"),
            (r#"{"requestId": ""}"#, "requestId is empty"),
            (r#"{"releaseOnDisconnect": 1}"#, "bad payload"),
            ("[]", "an array, expected an object"),
            (r#"["r1", 5]"#, "an array, expected an object"),
            ("7", "bad payload"),
        ];
        for (payload, expected) in cases {
            let message = invalid_message(get_proxy(payload).unwrap_err());
            assert!(message.starts_with("getProxy: "), "{message}");
            assert!(message.contains(expected), "{payload}: {message}");
        }
        let long = format!(r#"{{"requestId": "{}"}}"#, "r".repeat(257));
        assert!(invalid_message(get_proxy(&long).unwrap_err()).contains("256 bytes"));
    }

    #[test]
    fn add_proxy_canonicalises_and_drops_repeats() {
        let proxies = add_proxy(r#"{"proxies": ["A:80", "b:3128", "a:080"]}"#).unwrap();
        assert_eq!(proxies, ["a:80", "b:3128"]);
    }

    #[test]
    fn add_proxy_refuses_an_empty_list_a_bad_entry_and_unknown_fields() {
        let cases = [
            (r#"{"proxies": []}"#, "proxies is empty"),
            (r#"{"proxies": ["a:80", "b"]}"#, r#""b" is not host:port"#),
            (
                r#"{"proxies": ["a:80"], "pool": "x"}"#,
                "unknown field `pool`",
            ),
            ("{}", "missing field `proxies`"),
            ("null", r#"expected an object {"proxies""#),
        ];
        for (payload, expected) in cases {
            let message = invalid_message(add_proxy(payload).unwrap_err());
            assert!(message.starts_with("addProxy: "), "{message}");
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn release_proxy_names_a_proxy_or_a_lease() {
        assert_eq!(
            release_proxy(r#"{"proxy": "H:81"}"#).unwrap(),
            Release::Proxy("h:81".into())
        );
        assert_eq!(
            release_proxy(r#"{"lease": "L7"}"#).unwrap(),
            Release::Lease("L7".into())
        );
    }

    #[test]
    fn release_proxy_needs_exactly_one_of_proxy_and_lease() {
        let cases = [
            ("{}", "exactly one of proxy and lease"),
            (r#"{"proxy": "h:1", "lease": "L"}"#, "exactly one"),
            (r#"{"lease": ""}"#, "lease is empty"),
            (r#"{"proxy": "h"}"#, "is not host:port"),
            (r#"{"id": "L"}"#, "unknown field `id`"),
        ];
        for (payload, expected) in cases {
            let message = invalid_message(release_proxy(payload).unwrap_err());
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn renew_proxy_needs_a_lease_and_a_positive_ttl() {
        let renew = renew_proxy(r#"{"lease": "L1", "ttlMs": 5000}"#).unwrap();
        assert_eq!(
            renew,
            Renew {
                lease: "L1".into(),
                ttl_ms: 5000
            }
        );
        let cases = [
            (r#"{"lease": "L1"}"#, "missing field `ttlMs`"),
            (r#"{"lease": "L1", "ttlMs": 0}"#, "ttlMs must be at least 1"),
            (r#"{"lease": "", "ttlMs": 1}"#, "lease is empty"),
            (r#"{"ttlMs": 1}"#, "missing field `lease`"),
        ];
        for (payload, expected) in cases {
            let message = invalid_message(renew_proxy(payload).unwrap_err());
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn remove_proxy_defaults_to_not_forcing() {
        let remove = remove_proxy(r#"{"proxies": ["a:1", "A:1"]}"#).unwrap();
        assert_eq!(remove.proxies, ["a:1"]);
        assert!(!remove.force);
        assert!(
            remove_proxy(r#"{"proxies": ["a:1"], "force": true}"#)
                .unwrap()
                .force
        );
        let message = invalid_message(remove_proxy(r#"{"proxies": []}"#).unwrap_err());
        assert!(
            message.starts_with("removeProxy: proxies is empty"),
            "{message}"
        );
    }

    #[test]
    fn proxy_status_takes_nothing() {
        assert!(proxy_status("null").is_ok());
        assert!(proxy_status("{}").is_ok());
        let message = invalid_message(proxy_status(r#"{"pool": "x"}"#).unwrap_err());
        assert!(message.contains("unknown field `pool`"), "{message}");
    }
}
