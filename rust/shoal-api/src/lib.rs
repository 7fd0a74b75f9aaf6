//! Shoal's wire formats: the generated protobuf/gRPC code and every conversion between proto messages and
//! domain types, one module per message family. Nothing else in the workspace touches prost types by hand.

pub mod collections;
pub mod commands;
pub mod detail;
pub mod error;
pub mod points;
pub mod scroll;
pub mod tls;
pub mod wire_error;

pub use detail::{Detail, Source};
pub use error::{Error, Result};
pub use wire_error::ErrorKind;

/// Generated code of `proto/shoal/v1` (the public API).
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("shoal.v1");
}

/// Generated code of `proto/shoal/internal` (Raft commands).
pub mod internal {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("shoal.internal");
}

/// Format version written into every encoded Raft command. 2: write batches carry a write id and apply in
/// log order (a node that only reads format 1 refuses them instead of applying them differently).
pub const COMMAND_FORMAT: u32 = 2;
