//! # resman-sdk
//!
//! What plugin authors and client programs share with the resman host:
//!
//! - [`protocol`]: the wire protocol's request and response shapes, error codes and framing
//!   constants, so host, client and plugins cannot disagree about them.
//! - [`client`] (feature `client`): an async Rust client that keeps many requests in flight
//!   on one connection and matches answers by `queryIndex`.
#![deny(missing_docs)]

pub mod frame;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

pub use protocol::{ErrorCode, ErrorReply};
