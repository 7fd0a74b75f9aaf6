//! Raft networking without peers: [`NoPeersNetwork`], for single-voter groups. The gRPC network
//! of both planes is in `crate::grpc` (client) and `crate::transport` (server).

use std::future::Future;

use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use crate::types::Node;
use crate::types::NodeId;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::TypeConfig;
use crate::types::Vote;

/// A network with no peers: every RPC to another node fails as `Unreachable`.
///
/// Only correct for single-voter groups (this node is the whole membership); a group with peers
/// on this network never replicates and, with several voters, never elects a leader.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeersNetwork;

/// The per-peer client of [`NoPeersNetwork`]; always unreachable.
#[derive(Debug, Clone)]
pub struct NoPeerClient {
    /// The peer this client was asked to reach.
    target: NodeId,
}

impl NoPeerClient {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("no network: peer {} is unreachable (single-node group)", self.target))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeersNetwork {
    type Network = NoPeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> NoPeerClient {
        NoPeerClient { target }
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
