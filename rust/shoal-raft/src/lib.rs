//! Shoal's openraft adapter (DESIGN §2, §6): the Raft type config of both planes, an on-disk
//! log store, a snapshotting state-machine adapter, and [`RaftGroup`], which a node opens per
//! group (group 0 for metadata, one per shard replica).
//!
//! ```text
//!   RaftGroup ──> openraft::Raft<TypeConfig, StateMachineStore>
//!                   ├── LogStore            (log_store/: segments + CRC32C, group commit)
//!                   ├── StateMachineStore   (state_machine.rs: snapshots) ──> StateMachineApp
//!                   └── network             NoPeersNetwork (network.rs: single-voter groups) or
//!                                           GrpcNetworkFactory (grpc.rs) ──gRPC──> RaftTransportService
//!                                           (transport.rs, one per node, routes by group id)
//! ```

mod codec;
pub mod error;
pub mod group;
pub mod grpc;
pub mod io_stats;
pub mod log_store;
pub mod network;
pub mod purge_guard;
pub mod state_machine;
pub mod transport;
pub mod types;
mod wire;

pub use error::Error;
pub use error::Result;
pub use group::GroupOptions;
pub use group::GroupStatus;
pub use group::RaftGroup;
pub use grpc::Blocklist;
pub use grpc::GrpcNetwork;
pub use grpc::GrpcNetworkFactory;
pub use grpc::GrpcNetworkOptions;
pub use grpc::SNAPSHOT_CHUNK_BYTES;
pub use log_store::LogReader;
pub use log_store::LogStore;
pub use log_store::LogStoreOptions;
pub use log_store::SalvageReport;
pub use log_store::salvage;
pub use network::NoPeersNetwork;
pub use shoal_api::tls;
pub use shoal_api::tls::{NodeTls, PeerNode};
pub use state_machine::SnapshotWriter;
pub use state_machine::StateMachineApp;
pub use state_machine::StateMachineStore;
pub use state_machine::verify_snapshot_file;
pub use transport::RaftTransportService;
pub use types::Command;
pub use types::Reply;
pub use types::TypeConfig;

/// Re-export of the pinned openraft, so users name the same version.
pub use openraft;
