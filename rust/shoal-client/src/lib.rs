//! Shoal's Rust client: one lazily-connected gRPC channel per known node address, failover between them,
//! a deadline on every call, and write batches split below the gRPC message limit.

pub mod client;
pub mod error;

pub use client::{Client, ReadLevel, WriteLevel};
pub use error::{Error, Result};
pub use shoal_api::v1;
