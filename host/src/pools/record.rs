//! [`Record`]: one effect on the pools' state, as the journal stores it. Records say what
//! happened (this lease was granted these resources with this token), never what was asked
//! (acquire 2), so replaying them rebuilds exactly the state that answered clients, whatever
//! the waiters, clocks and choices were at the time.
//!
//! Resource data is JSON text checked when it was added ([`Data`]), kept and written as is.

use resman_sdk::json::{push_str, push_u64};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A lease's number; clients see it as a decimal string.
pub(crate) type LeaseId = u64;

/// A pool name or resource id as the state keeps it: shared, so that a grant hands the same
/// text to its lease, record and view without copying it.
pub(crate) type Name = Arc<str>;

/// One effect on the state. [`super::state::State::apply`] is the only code that changes the
/// state, for live operations and replay alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Record {
    /// Resources joined a pool (made if new); an empty list only makes the pool. The names
    /// are the ones the state keeps, shared.
    Add {
        pool: Name,
        resources: Vec<(Name, Data)>,
    },
    /// A free resource left its pool.
    Remove { pool: String, id: String },
    /// A lease was granted.
    Grant(GrantRecord),
    /// A lease ended (released, expired, its holder gone, or forced by a removal).
    Release { lease: LeaseId },
    /// A lease got a new deadline.
    Renew {
        lease: LeaseId,
        expires_at_ms: Option<u64>,
    },
    /// A plugin's key was set.
    KvSet {
        ns: String,
        key: String,
        value: String,
    },
    /// A plugin's key was removed.
    KvDelete { ns: String, key: String },
}

/// A grant as stored: which resources, under which lease and token. The options a grant
/// rarely has (a deadline, release on disconnect, a request id) are left out when unset, so a
/// plain grant's record is about a third shorter; records written with them spelled out as
/// `null` and `false` read back the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GrantRecord {
    pub(crate) lease: LeaseId,
    pub(crate) token: u64,
    pub(crate) holder: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) on_disconnect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    /// (pool, resource id) pairs.
    pub(crate) resources: Vec<(Name, Name)>,
}

impl Record {
    /// Appends the record's JSON, exactly the text `serde_json` writes for it: grants and
    /// releases, nearly every record under load, by hand ([`resman_sdk::json`]), the rest
    /// through serde. Replay reads either through serde.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Record::Grant(grant) => grant.write_json(out),
            Record::Release { lease } => {
                out.extend_from_slice(b"{\"release\":{\"lease\":");
                push_u64(out, *lease);
                out.extend_from_slice(b"}}");
            }
            other => serde_json::to_writer(&mut *out, other).expect("records serialize"),
        }
    }
}

impl GrantRecord {
    /// `{"grant":{...}}`, the fields in declaration order, unset options left out.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"grant\":{\"lease\":");
        push_u64(out, self.lease);
        out.extend_from_slice(b",\"token\":");
        push_u64(out, self.token);
        out.extend_from_slice(b",\"holder\":");
        push_u64(out, self.holder);
        if let Some(at) = self.expires_at_ms {
            out.extend_from_slice(b",\"expires_at_ms\":");
            push_u64(out, at);
        }
        if self.on_disconnect {
            out.extend_from_slice(b",\"on_disconnect\":true");
        }
        if let Some(id) = &self.request_id {
            out.extend_from_slice(b",\"request_id\":");
            push_str(out, id);
        }
        out.extend_from_slice(b",\"resources\":[");
        for (index, (pool, id)) in self.resources.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            push_str(out, pool);
            out.push(b',');
            push_str(out, id);
            out.push(b']');
        }
        out.extend_from_slice(b"]}}");
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

/// Resource data: JSON text, validated once when it is added, shared and never re-parsed on
/// the grant path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Data(Arc<str>);

impl Data {
    /// Checks that `text` is one JSON value.
    pub(crate) fn parse(text: &str) -> Result<Data, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Data(raw.get().into()))
    }

    /// The JSON text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON `null`.
    pub(crate) fn null() -> Data {
        Data("null".into())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The text was checked when it was made, so this only re-reads its extent.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Data(raw.get().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Name> {
        "[a-z0-9.:]{1,12}|\\PC{0,6}|[\"\\\\\\x00-\\x1f]{1,3}".prop_map(Name::from)
    }

    fn grant() -> impl Strategy<Value = GrantRecord> {
        let options = (
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            proptest::option::of("\\PC{0,8}"),
        );
        let resources = proptest::collection::vec((name(), name()), 0..4);
        (any::<[u64; 3]>(), options, resources).prop_map(
            |([lease, token, holder], (expires_at_ms, on_disconnect, request_id), resources)| {
                GrantRecord {
                    lease,
                    token,
                    holder,
                    expires_at_ms,
                    on_disconnect,
                    request_id,
                    resources,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn hand_written_records_are_serdes_text(grant in grant(), lease: u64) {
            for record in [Record::Grant(grant), Record::Release { lease }] {
                let mut out = Vec::new();
                record.write_json(&mut out);
                prop_assert_eq!(&out, &serde_json::to_vec(&record).unwrap());
                prop_assert_eq!(serde_json::from_slice::<Record>(&out).unwrap(), record);
            }
        }
    }

    #[test]
    fn records_round_trip_with_data_kept_as_written() {
        let record = Record::Add {
            pool: "p".into(),
            resources: vec![("a".into(), Data::parse(r#"{"x": [1, 2]}"#).unwrap())],
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"add":{"pool":"p","resources":[["a",{"x": [1, 2]}]]}}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }

    #[test]
    fn a_grant_leaves_out_unset_options_and_reads_them_spelled_out() {
        let plain = GrantRecord {
            lease: 7,
            token: 9,
            holder: 3,
            expires_at_ms: None,
            on_disconnect: false,
            request_id: None,
            resources: vec![("p".into(), "a".into())],
        };
        let text = serde_json::to_string(&Record::Grant(plain.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"grant":{"lease":7,"token":9,"holder":3,"resources":[["p","a"]]}}"#
        );
        let spelled_out = r#"{"grant":{"lease":7,"token":9,"holder":3,"expires_at_ms":null,"on_disconnect":false,"request_id":null,"resources":[["p","a"]]}}"#;
        for text in [text.as_str(), spelled_out] {
            assert_eq!(
                serde_json::from_str::<Record>(text).unwrap(),
                Record::Grant(plain.clone())
            );
        }
        let full = GrantRecord {
            expires_at_ms: Some(1_000),
            on_disconnect: true,
            request_id: Some("r-1".into()),
            ..plain
        };
        let text = serde_json::to_string(&Record::Grant(full.clone())).unwrap();
        assert!(
            text.contains(r#""expires_at_ms":1000,"on_disconnect":true,"request_id":"r-1""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<Record>(&text).unwrap(),
            Record::Grant(full)
        );
    }

    #[test]
    fn data_must_be_one_json_value() {
        assert!(Data::parse("{").is_err());
        assert!(Data::parse("1 2").is_err());
        assert_eq!(Data::parse(" 7 ").unwrap().as_str(), "7");
    }
}
