//! Shoal's Rust client: one lazily-connected gRPC channel per known node address, failover between them,
//! a deadline on every call, write batches split below the gRPC message limit, and session tokens so that
//! `session` reads see this client's own writes.

pub mod client;
pub mod error;
pub mod scroll;
pub mod session;

pub use client::{Client, ReadLevel, WriteLevel};
pub use error::{Detail, Error, Result};
pub use scroll::ScrollStream;
pub use shoal_api::v1;
