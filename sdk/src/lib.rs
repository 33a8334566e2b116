//! # resman-sdk
//!
//! What plugin authors and client programs share with the resman host:
//!
//! - [`protocol`]: the wire protocol's request and response shapes, error codes and framing
//!   constants, so host, client and plugins cannot disagree about them.
//! - [`Jobber`], [`Request`], [`JobError`] and [`export_jobber!`]: write a request handler
//!   once and build it as a WASM component (`--target wasm32-wasip2`) or a native library.
//! - [`host`]: what a jobber may call back into the host for (logging, the clock).
//! - [`pool`]: the host's durable resource pools (acquire, release, renew, fencing tokens).
//! - [`store`]: a durable key-value store of the plugin's own.
//! - [`json`]: JSON text written by hand, for answers on a hot path.
//! - [`alloc`]: a global allocator for WASM plugins, faster than the target's for the
//!   short-lived strings every request brings.
//! - [`native`]: the C ABI of native plugins; `bindings` (on `wasm32`): the WIT world's
//!   generated bindings. Plugin authors use neither directly.
//! - `client` (feature `client`): an async Rust client that keeps many requests in flight
//!   on one connection and matches answers by `queryIndex`.
//!
//! # Layout
//!
//! - `jobber.rs`: the plugin author's interface.
//! - `export.rs`: the export macro, which picks one of the two adapters below by target.
//! - `wasm.rs` + `bindings`: the adapter to the WIT world (`wit/resman.wit`).
//! - `native/guest.rs`: the adapter to the C ABI (`native.rs`).
//! - `host.rs`: the host API as a jobber calls it, over either adapter.
#![deny(missing_docs)]

pub mod alloc;
mod export;
pub mod frame;
pub mod host;
pub mod jobber;
pub mod json;
pub mod native;
pub mod pool;
pub mod protocol;
pub mod store;

#[cfg(feature = "client")]
pub mod client;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

/// The bindings wit-bindgen generates from `wit/resman.wit` (world `jobber-batched`: the
/// world `jobber` and batched calls), used by [`export_jobber!`] and [`host`] in WASM builds.
#[cfg(target_arch = "wasm32")]
#[allow(missing_docs, clippy::too_many_arguments)] // generated code: `handle`'s lowered request
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "jobber-batched",
        pub_export_macro: true,
        default_bindings_module: "resman_sdk::bindings",
    });
}

pub use jobber::{parse_object, parse_payload, JobError, Jobber, Request};
pub use protocol::{ErrorCode, ErrorReply};
