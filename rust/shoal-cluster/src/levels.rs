//! The vocabulary that reads and writes share with the pure planner and executor: consistency levels, the
//! load-balancing strategy among replicas, and the retry backoff bounds. No engine state here, so pure
//! modules (planner.rs, executor.rs) depend on this and not on the engine.

use std::time::Duration;

use shoal_api::v1;

use crate::{Error, Result};

/// Write consistency levels (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteLevel {
    /// Returns when the shard leader accepted the batch.
    Eventual,
    /// Returns when the batch is committed on a majority of the shard's voters.
    #[default]
    Quorum,
    /// Returns when committed, applied on the leader and replicated to every voter.
    Strong,
}

impl WriteLevel {
    /// Parses `eventual`, `quorum` or `strong`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "eventual" => Ok(WriteLevel::Eventual),
            "quorum" | "" => Ok(WriteLevel::Quorum),
            "strong" => Ok(WriteLevel::Strong),
            o => Err(Error::InvalidArgument(
                format!("unknown write consistency {o:?}: expected \"eventual\", \"quorum\" or \"strong\"").into(),
            )),
        }
    }

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteLevel::Eventual => "eventual",
            WriteLevel::Quorum => "quorum",
            WriteLevel::Strong => "strong",
        }
    }
}

/// Read consistency levels (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// Any replica.
    Eventual,
    /// A replica that has applied this client's last write.
    #[default]
    Session,
    /// The leader after a read-index round (linearizable).
    Strong,
}

impl ReadLevel {
    /// Parses `eventual`, `session` or `strong`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "eventual" => Ok(ReadLevel::Eventual),
            "session" | "" => Ok(ReadLevel::Session),
            "strong" => Ok(ReadLevel::Strong),
            o => Err(Error::InvalidArgument(
                format!("unknown read consistency {o:?}: expected \"eventual\", \"session\" or \"strong\"").into(),
            )),
        }
    }
}

/// How a read picks among the eligible replicas of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    /// Rotate over the eligible replicas.
    RoundRobin,
    /// Fewest requests in flight from this coordinator, then the lowest latency EWMA.
    #[default]
    LeastLoaded,
    /// This node, then this node's zone, then any.
    Locality,
}

impl LoadBalancing {
    /// Parses a strategy name ("" = `default`).
    pub fn parse(s: &str, default: LoadBalancing) -> Result<LoadBalancing> {
        match s {
            "" => Ok(default),
            "round_robin" => Ok(LoadBalancing::RoundRobin),
            "least_loaded" => Ok(LoadBalancing::LeastLoaded),
            "locality" => Ok(LoadBalancing::Locality),
            o => Err(Error::InvalidArgument(
                format!("unknown load_balancing {o:?}: expected \"round_robin\", \"least_loaded\" or \"locality\"")
                    .into(),
            )),
        }
    }

    /// The strategy a request asks for (UNSPECIFIED = `default`).
    pub fn from_proto(v: i32, default: LoadBalancing) -> LoadBalancing {
        match v1::LoadBalancing::try_from(v).unwrap_or_default() {
            v1::LoadBalancing::RoundRobin => LoadBalancing::RoundRobin,
            v1::LoadBalancing::LeastLoaded => LoadBalancing::LeastLoaded,
            v1::LoadBalancing::Locality => LoadBalancing::Locality,
            v1::LoadBalancing::Unspecified => default,
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> v1::LoadBalancing {
        match self {
            LoadBalancing::RoundRobin => v1::LoadBalancing::RoundRobin,
            LoadBalancing::LeastLoaded => v1::LoadBalancing::LeastLoaded,
            LoadBalancing::Locality => v1::LoadBalancing::Locality,
        }
    }

    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::LeastLoaded => "least_loaded",
            LoadBalancing::Locality => "locality",
        }
    }
}

/// How long a request waits between two attempts at first; doubled up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest wait between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(200);
