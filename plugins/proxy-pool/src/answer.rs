//! What the plugin answers, shaped from what the pool returned: leases and the pool's
//! status become the camelCase objects the README documents. A lease's proxy is its grant's
//! resource id, so no resource data is read.
//!
//! The hot pair, `getProxy` and `releaseProxy`, answer typed structs whose JSON text is
//! written by hand ([`Answer::text`]); the rest build a `Value` with `json!`.

use resman_sdk::jobber::serde_text;
use resman_sdk::json::Object;
use resman_sdk::pool::{Lease, PoolStatus, SingleLease};
use resman_sdk::JobError;
use serde::Serialize;
use serde_json::{json, Value};

/// Any answer of this plugin. `Serialize` writes the same text as [`Answer::text`], more
/// slowly.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    Got(Got),
    Released(Released),
    Json(Value),
}

impl Answer {
    /// The answer's JSON text: the hot pair's written field by field, the same text
    /// `serde_json` writes at a fraction of its cost in a WASM guest.
    pub(crate) fn text(self) -> Result<String, JobError> {
        match self {
            Answer::Got(got) => Ok(got.text()),
            Answer::Released(released) => Ok(released.text()),
            Answer::Json(value) => serde_text(&value),
        }
    }
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Answer::Json(value)
    }
}

impl From<Got> for Answer {
    fn from(got: Got) -> Self {
        Answer::Got(got)
    }
}

impl From<Released> for Answer {
    fn from(released: Released) -> Self {
        Answer::Released(released)
    }
}

/// A lease's id as an answer carries it: always JSON text, kept as the number a brief lease
/// has until it is written, which spares the guest a string per answer.
#[derive(Debug)]
pub(crate) enum LeaseId {
    Number(u64),
    Text(String),
}

impl Serialize for LeaseId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LeaseId::Number(number) => serializer.collect_str(number),
            LeaseId::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl LeaseId {
    /// Adds it to `object` as the field `key`.
    fn write(&self, object: &mut Object, key: &str) {
        match self {
            LeaseId::Number(number) => object.u64_text(key, *number),
            LeaseId::Text(text) => object.str(key, text),
        };
    }
}

/// The `getProxy` answer: `{"proxy", "lease", "token"}`, and `expiresAtMs` when the lease
/// has a TTL.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Got {
    proxy: String,
    lease: LeaseId,
    token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

/// The `releaseProxy` answer: `{"released": "host:port" or null, "lease"}`.
#[derive(Debug, Serialize)]
pub(crate) struct Released {
    released: Option<String>,
    lease: LeaseId,
}

impl Got {
    fn text(&self) -> String {
        let mut object = Object::new();
        object.str("proxy", &self.proxy);
        self.lease.write(&mut object, "lease");
        object.u64("token", self.token);
        if let Some(at) = self.expires_at_ms {
            object.u64("expiresAtMs", at);
        }
        object.finish()
    }
}

impl Released {
    fn text(&self) -> String {
        let mut object = Object::new();
        object.opt_str("released", self.released.as_deref());
        self.lease.write(&mut object, "lease");
        object.finish()
    }
}

/// The `getProxy` answer: `{"proxy", "lease", "token"}`, and `expiresAtMs` when the lease
/// has a TTL. Moves the proxy out of the lease; this is the hot path.
pub(crate) fn got(lease: SingleLease) -> Got {
    Got {
        lease: LeaseId::Number(lease.lease),
        proxy: lease.id,
        token: lease.token,
        expires_at_ms: lease.expires_at_ms,
    }
}

/// The `releaseProxy` answer for a lease of one proxy, the hot path's.
pub(crate) fn released_single(lease: SingleLease) -> Released {
    Released {
        lease: LeaseId::Number(lease.lease),
        released: Some(lease.id),
    }
}

/// The `releaseProxy` answer: `{"released": "host:port", "lease"}`.
pub(crate) fn released(lease: Lease, pool: &str) -> Released {
    Released {
        released: proxy_of(&lease, pool).map(str::to_owned),
        lease: LeaseId::Text(lease.id),
    }
}

/// The `renewProxy` answer: `{"lease", "expiresAtMs"}`.
pub(crate) fn renewed(lease: &Lease) -> Value {
    json!({ "lease": lease.id, "expiresAtMs": lease.expires_at_ms })
}

/// The `proxyStatus` answer: free proxies in the order they will be granted, held ones with
/// their lease, and how many `getProxy` requests are waiting.
pub(crate) fn status(status: PoolStatus) -> Value {
    let free: Vec<String> = status.free.into_iter().map(|free| free.id).collect();
    let held: Vec<Value> = status
        .held
        .into_iter()
        .map(|held| {
            let mut entry = json!({
                "proxy": held.id,
                "lease": held.lease,
                "token": held.token,
                "holder": held.holder,
            });
            if let Some(at) = held.expires_at_ms {
                entry["expiresAtMs"] = at.into();
            }
            entry
        })
        .collect();
    json!({ "free": free, "held": held, "waiting": status.waiting })
}

/// The status of a pool nothing was ever added to.
pub(crate) fn empty_status(pool: &str) -> PoolStatus {
    PoolStatus {
        pool: pool.to_owned(),
        free: Vec::new(),
        held: Vec::new(),
        waiting: 0,
    }
}

/// Whether `lease` holds proxies of `pool` and nothing else, so that a lease of another
/// plugin's pool cannot be released or renewed through this one.
pub(crate) fn is_proxy_lease(lease: &Lease, pool: &str) -> bool {
    !lease.grants.is_empty() && lease.grants.iter().all(|grant| grant.pool == pool)
}

/// The first proxy `lease` holds in `pool` (a `getProxy` lease holds one).
fn proxy_of<'a>(lease: &'a Lease, pool: &str) -> Option<&'a str> {
    lease
        .grants
        .iter()
        .find(|grant| grant.pool == pool)
        .map(|grant| grant.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use resman_sdk::pool::{Grant, Held, Resource};

    fn lease(grants: &[(&str, &str)], expires_at_ms: Option<u64>) -> Lease {
        Lease {
            id: "L1".into(),
            token: 42,
            holder: 7,
            expires_at_ms,
            release_on_disconnect: false,
            grants: grants
                .iter()
                .map(|(pool, id)| Grant {
                    pool: (*pool).into(),
                    id: (*id).into(),
                    data: json!({}),
                })
                .collect(),
        }
    }

    /// `answer` as the client receives it, checked to be the text serde writes for it.
    fn json_of(answer: impl Into<Answer>) -> Value {
        let answer = answer.into();
        let serde_text = serde_json::to_string(&answer).unwrap();
        let text = answer.text().unwrap();
        assert_eq!(text, serde_text);
        serde_json::from_str(&text).unwrap()
    }

    fn single(expires_at_ms: Option<u64>) -> SingleLease {
        SingleLease {
            lease: 1,
            token: 42,
            expires_at_ms,
            id: "10.0.0.7:3128".into(),
        }
    }

    #[test]
    fn got_names_the_proxy_lease_and_token() {
        let answer = json_of(got(single(None)));
        assert_eq!(
            answer,
            json!({ "proxy": "10.0.0.7:3128", "lease": "1", "token": 42 })
        );
    }

    #[test]
    fn got_adds_the_expiry_when_the_lease_has_a_ttl() {
        let answer = json_of(got(single(Some(1_000))));
        assert_eq!(answer["expiresAtMs"], 1_000);
    }

    #[test]
    fn released_single_names_the_proxy_and_lease() {
        let answer = json_of(released_single(single(None)));
        assert_eq!(answer, json!({ "released": "10.0.0.7:3128", "lease": "1" }));
    }

    #[test]
    fn released_names_the_proxy_and_lease() {
        let answer = json_of(released(lease(&[("proxies", "a:1")], None), "proxies"));
        assert_eq!(answer, json!({ "released": "a:1", "lease": "L1" }));
    }

    #[test]
    fn released_of_a_lease_without_a_proxy_names_none() {
        let answer = json_of(released(lease(&[("show:x", "A-1")], None), "proxies"));
        assert_eq!(answer, json!({ "released": null, "lease": "L1" }));
    }

    #[test]
    fn renewed_names_the_new_expiry() {
        let answer = renewed(&lease(&[("proxies", "a:1")], Some(9)));
        assert_eq!(answer, json!({ "lease": "L1", "expiresAtMs": 9 }));
    }

    #[test]
    fn only_leases_of_the_pool_alone_are_proxy_leases() {
        assert!(is_proxy_lease(
            &lease(&[("proxies", "a:1")], None),
            "proxies"
        ));
        assert!(!is_proxy_lease(
            &lease(&[("show:x", "A-1")], None),
            "proxies"
        ));
        let mixed = lease(&[("proxies", "a:1"), ("show:x", "A-1")], None);
        assert!(!is_proxy_lease(&mixed, "proxies"));
        assert!(!is_proxy_lease(&lease(&[], None), "proxies"));
    }

    #[test]
    fn status_lists_free_and_held_proxies() {
        let status = PoolStatus {
            pool: "proxies".into(),
            free: vec![
                Resource::new("a:1", json!({})),
                Resource::new("b:2", json!({})),
            ],
            held: vec![
                Held {
                    id: "c:3".into(),
                    data: json!({}),
                    lease: "L9".into(),
                    token: 5,
                    holder: 11,
                    expires_at_ms: Some(77),
                },
                Held {
                    id: "d:4".into(),
                    data: json!({}),
                    lease: "L10".into(),
                    token: 6,
                    holder: 12,
                    expires_at_ms: None,
                },
            ],
            waiting: 3,
        };
        assert_eq!(
            super::status(status),
            json!({
                "free": ["a:1", "b:2"],
                "held": [
                    { "proxy": "c:3", "lease": "L9", "token": 5, "holder": 11, "expiresAtMs": 77 },
                    { "proxy": "d:4", "lease": "L10", "token": 6, "holder": 12 },
                ],
                "waiting": 3,
            })
        );
    }

    #[test]
    fn an_empty_pool_has_an_empty_status() {
        assert_eq!(
            status(empty_status("proxies")),
            json!({ "free": [], "held": [], "waiting": 0 })
        );
    }
}
