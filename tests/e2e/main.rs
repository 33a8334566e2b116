//! End-to-end tests: the real host on 127.0.0.1:0, spoken to over real TCP.

mod client;
mod coordinator;
mod languages;
mod plugins;
mod pools;
mod protocol;
mod shutdown;
mod support;
