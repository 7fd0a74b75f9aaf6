//! Shoal's engine: everything that runs inside one shard replica, with no networking and no consensus.
//!
//! Modules: `point` (ids, metrics, configs), `distance` (SIMD kernels), `arena` (vector storage),
//! `hnsw` (graph index), `quantizer` (int8 codes), `filter` (payload filter language), `hlc` (versions), `dedup` (write ids and retry
//! deduplication), `store` (the shard store),
//! `cost` (access-path cost model), `cancel` (cancellation tokens), `validate` (input checks shared by
//! client and server).

pub mod arena;
pub mod cancel;
mod cand;
pub mod cost;
pub mod dedup;
pub mod distance;
pub mod error;
pub mod filter;
pub mod hlc;
pub mod hnsw;
pub mod payload_index;
pub mod point;
pub mod quantizer;
pub mod store;
pub mod validate;

pub use arena::VectorStorage;
pub use cancel::CancelToken;
pub use cost::{AccessPath, ShardShape, choose_path};
pub use error::{Error, Result};
pub use point::{IdType, IndexConfig, Metric, PointId, ShardConfig};
pub use quantizer::Quantization;
