//! Shoal's cluster logic: the group-0 catalog and shard state machines, pure decisions (placement, planner,
//! reconciler, mover, the sans-IO read and write executor) and the node's components that run them:
//! `MetaPlane` (group 0), `LocalReplicas` (this node's replicas), `MoveExecutor` (moves) and `Coordinator`
//! (read, write and scroll paths), wired together by `Engine`.

pub mod anti_entropy;
pub mod api_keys;
pub mod catalog;
pub mod cluster_view;
pub mod coordinator;
pub mod engine;
pub mod error;
pub mod executor;
pub mod heal;
pub mod indexer;
pub mod known_peers;
pub mod leader_hints;
pub mod levels;
pub mod lifecycle;
pub mod load;
pub mod local_replicas;
pub mod manifest;
pub mod meta_plane;
pub mod meta_rebuild;
pub mod move_executor;
pub mod mover;
pub mod peer;
pub mod placement;
pub mod planner;
pub mod quarantine;
pub mod read_path;
pub mod reconciler;
pub mod resources;
pub mod scroll;
pub mod shard_app;
pub mod write_path;

pub use engine::{Engine, EngineConfig, GroupMetrics, MetricsView};
pub use error::{Detail, Error, Result};
pub use levels::{LoadBalancing, ReadLevel, WriteLevel};
pub use move_executor::StartedMove;
pub use read_path::{SearchOutcome, SearchQuery, merge_top_k};
pub use write_path::{WriteOptions, WriteOutcome};
