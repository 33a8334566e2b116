//! WASM plugins (placeholder).
