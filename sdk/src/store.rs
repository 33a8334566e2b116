//! A small durable key-value store of the plugin's own: the `store` interface of
//! `sdk/wit/resman.wit`. Its namespace is the plugin file's name without its extension, so
//! the WASM and the native build of one plugin share it, and no other plugin sees it. Writes
//! are on disk before the answer of the request that made them leaves the host.
//!
//! Keep a plugin's durable state here rather than in the jobber's fields: fields are per
//! instance and lost when the instance is replaced.
//!
//! ```no_run
//! use resman_sdk::store;
//!
//! store::set("room/blue", r#"{"seats": 8}"#).unwrap();
//! assert!(store::get("room/blue").is_some());
//! assert_eq!(store::keys("room/"), ["room/blue"]);
//! ```

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The value of `key`, if set.
pub fn get(key: &str) -> Option<String> {
    imp::get(key)
}

/// Sets `key` to `value`.
///
/// # Errors
///
/// A message when the key or value is too long ([`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`]) or
/// the host could not store it.
pub fn set(key: &str, value: &str) -> Result<(), String> {
    imp::set(key, value)
}

/// Compare-and-set: if the value of `key` is `expected` (`None`: not set), sets it to
/// `value` (`None`: removes it) and returns `true`; otherwise changes nothing and returns
/// `false`.
///
/// A jobber's request types run at the same time, each one request at a time; a
/// read-modify-write of a key that more than one type writes is made safe with it: read,
/// compute, `set_if` with the value read, and start again on `false`.
///
/// # Errors
///
/// A message when the key or value is too long or the host could not store it.
pub fn set_if(key: &str, expected: Option<&str>, value: Option<&str>) -> Result<bool, String> {
    imp::set_if(key, expected, value)
}

/// Removes `key`; whether it was set.
///
/// # Errors
///
/// A message when the host could not store the removal.
pub fn delete(key: &str) -> Result<bool, String> {
    imp::delete(key)
}

/// The keys starting with `prefix`, in order.
pub fn keys(prefix: &str) -> Vec<String> {
    imp::keys(prefix)
}

/// The argument objects of the native ABI's `call` (`store.*` operations).
#[doc(hidden)]
pub mod args {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Key {
        pub key: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Set {
        pub key: String,
        pub value: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct SetIf {
        pub key: String,
        pub expected: Option<String>,
        pub value: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Prefix {
        pub prefix: String,
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::args;
    use crate::host::call;

    fn key(key: &str) -> args::Key {
        args::Key {
            key: key.to_owned(),
        }
    }

    pub(super) fn get(k: &str) -> Option<String> {
        call::<_, Option<String>, String>("store.get", &key(k))
            .ok()
            .flatten()
    }

    pub(super) fn set(key: &str, value: &str) -> Result<(), String> {
        let args = args::Set {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        call("store.set", &args)
    }

    pub(super) fn set_if(
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool, String> {
        let args = args::SetIf {
            key: key.to_owned(),
            expected: expected.map(str::to_owned),
            value: value.map(str::to_owned),
        };
        call("store.set-if", &args)
    }

    pub(super) fn delete(k: &str) -> Result<bool, String> {
        call("store.delete", &key(k))
    }

    pub(super) fn keys(prefix: &str) -> Vec<String> {
        let args = args::Prefix {
            prefix: prefix.to_owned(),
        };
        call::<_, Vec<String>, String>("store.keys", &args).unwrap_or_default()
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::resman::jobber::store as wit;

    pub(super) fn get(key: &str) -> Option<String> {
        wit::get(key)
    }

    pub(super) fn set(key: &str, value: &str) -> Result<(), String> {
        wit::set(key, value)
    }

    pub(super) fn set_if(
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool, String> {
        wit::set_if(key, expected, value)
    }

    pub(super) fn delete(key: &str) -> Result<bool, String> {
        wit::delete(key)
    }

    pub(super) fn keys(prefix: &str) -> Vec<String> {
        wit::keys(prefix)
    }
}
