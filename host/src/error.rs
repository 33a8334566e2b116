//! The host library's error type: what can stop the host from starting or serving.
//! Errors of single requests are not here: they are answers on the wire (`ErrorCode`).

use std::net::SocketAddr;

pub use crate::config::ConfigError;

/// Why the host could not start or keep serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The plugins folder or the plugin runtime could not be set up.
    #[error("plugins: {0}")]
    Plugins(String),
    /// The data folder of the pools cannot be used (in use, unreadable, corrupt, or written
    /// by a newer version).
    #[error("{0}")]
    Store(#[from] crate::pools::StoreError),
    /// A request type was registered twice.
    #[error("request type {0:?} has two jobbers")]
    DuplicateType(String),
}
