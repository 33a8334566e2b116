//! resman host
