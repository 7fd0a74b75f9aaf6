//! Node-to-node requests (`shoal.internal.NodeInternal`), client side: one lazily connected channel per
//! peer address, the fault blocklist checked before sending, deadlines as gRPC timeouts, and statuses
//! decoded back into [`Error`]s (the kind travels in `x-shoal-error`).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;
use shoal_api::ErrorKind;
use shoal_api::internal::node_internal_client::NodeInternalClient;
use shoal_api::internal::{
    HealReplicaRequest, JoinRequest, MetaProposeRequest, NodeStateReply, NodeStateRequest, ShardReadReply,
    ShardReadRequest, ShardWriteReply, ShardWriteRequest,
};
use shoal_raft::Blocklist;
use tonic::transport::{Channel, Endpoint};

use crate::{Detail, Error, Result};

/// Metadata key naming the sending node (checked against the receiver's blocklist).
pub const FROM_KEY: &str = "x-shoal-from";
/// How often an idle-looking connection with requests in flight is pinged.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection (and its requests) is given up.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest node-to-node message (search batches with payloads, write batches).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Clients of the other nodes. Cheap to share.
#[derive(Debug)]
pub struct Peers {
    /// This node's id (sent as `x-shoal-from`).
    me: u64,
    /// Peers this node must not talk to (fault injection).
    blocklist: Blocklist,
    /// Channels by address; created on first use, reconnect by themselves.
    channels: RwLock<HashMap<String, Channel>>,
    /// Mutual TLS towards peers (`None`: plain text, insecure mode).
    tls: Option<shoal_raft::NodeTls>,
}

impl Peers {
    /// Clients of node `me`, honouring `blocklist`.
    pub fn new(me: u64, blocklist: Blocklist, tls: Option<shoal_raft::NodeTls>) -> Peers {
        Peers { me, blocklist, channels: RwLock::new(HashMap::new()), tls }
    }

    fn client(&self, node: u64, addr: &str) -> Result<NodeInternalClient<Channel>> {
        if self.blocklist.is_blocked(node) {
            return Err(Error::NodeUnavailable(
                format!("node {node} is unreachable (blocked by fault injection)").into(),
            ));
        }
        if let Some(ch) = self.channels.read().get(addr) {
            return Ok(Self::wrap(ch.clone()));
        }
        let mut ep = Endpoint::from_shared(format!("{}://{addr}", shoal_raft::tls::scheme(self.tls.is_some())))
            .map_err(|e| Error::Internal(Detail::caused_by(format!("bad address {addr:?} of node {node}: {e}"), e)))?;
        if let Some(t) = &self.tls {
            ep = ep
                .tls_config(t.client_config())
                .map_err(|e| Error::Internal(Detail::caused_by(format!("TLS towards node {node}: {e}"), e)))?;
        }
        let ep = ep
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // A peer that stops answering (paused, hung) fails its requests within a few seconds instead of
            // holding them to their deadline, so the caller moves on to another replica.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .initial_stream_window_size(8 * 1024 * 1024)
            .initial_connection_window_size(32 * 1024 * 1024);
        let ch = shoal_raft::tls::lazy_channel(ep, Duration::from_secs(1), true);
        self.channels.write().insert(addr.to_string(), ch.clone());
        Ok(Self::wrap(ch))
    }

    fn wrap(ch: Channel) -> NodeInternalClient<Channel> {
        NodeInternalClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout.max(Duration::from_millis(1)));
        if let Ok(v) = self.me.to_string().parse() {
            r.metadata_mut().insert(FROM_KEY, v);
        }
        r
    }

    /// Proposes an encoded metadata command on the group-0 leader `node`.
    pub async fn meta_propose(&self, node: u64, addr: &str, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let mut c = self.client(node, addr)?;
        let call = c.meta_propose(self.request(MetaProposeRequest { command }, timeout));
        Ok(bounded(node, timeout, call).await?.reply)
    }

    /// Asks the group-0 leader `node` to add a node.
    pub async fn join(&self, node: u64, addr: &str, req: JoinRequest, timeout: Duration) -> Result<()> {
        let mut c = self.client(node, addr)?;
        bounded(node, timeout, c.join(self.request(req, timeout))).await.map(|_| ())
    }

    /// Proposes a write batch on the shard leader `node`.
    pub async fn shard_write(
        &self,
        node: u64,
        addr: &str,
        req: ShardWriteRequest,
        timeout: Duration,
    ) -> Result<ShardWriteReply> {
        let mut c = self.client(node, addr)?;
        bounded(node, timeout, c.shard_write(self.request(req, timeout))).await
    }

    /// Asks the shard leader `node` to drop a damaged replica from its group.
    pub async fn heal_replica(&self, node: u64, addr: &str, req: HealReplicaRequest, timeout: Duration) -> Result<()> {
        let mut c = self.client(node, addr)?;
        bounded(node, timeout, c.heal_replica(self.request(req, timeout))).await.map(|_| ())
    }

    /// Reads shards held by `node`.
    pub async fn shard_read(
        &self,
        node: u64,
        addr: &str,
        req: ShardReadRequest,
        timeout: Duration,
    ) -> Result<ShardReadReply> {
        let mut c = self.client(node, addr)?;
        bounded(node, timeout, c.shard_read(self.request(req, timeout))).await
    }

    /// The replicas and roles of `node` (with what `want` asks for).
    pub async fn node_state(
        &self,
        node: u64,
        addr: &str,
        want: NodeStateRequest,
        timeout: Duration,
    ) -> Result<NodeStateReply> {
        let mut c = self.client(node, addr)?;
        bounded(node, timeout, c.node_state(self.request(want, timeout))).await
    }
}

/// Awaits `call` at most `timeout` (plus a little for the peer's own deadline reply) and decodes failures.
async fn bounded<T>(
    node: u64,
    timeout: Duration,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(timeout + Duration::from_millis(20), call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(decode_status(node, &s)),
        Err(elapsed) => {
            Err(Error::Timeout(Detail::caused_by(format!("node {node} did not answer within {timeout:?}"), elapsed)))
        }
    }
}

/// A status from node `node` as an [`Error`]: its own kind when the peer sent one, otherwise (no
/// connection, connection lost, refused by its blocklist) the node counts as unavailable. The status is the
/// error's `source()`.
pub fn decode_status(node: u64, s: &tonic::Status) -> Error {
    let leader = ErrorKind::leader_of(s);
    if let Some(e) = ErrorKind::of_status(s).and_then(|k| Error::from_kind(k, s.message(), leader)) {
        return e.caused_by(s.clone());
    }
    let d = |message: String| Detail::caused_by(message, s.clone());
    match s.code() {
        tonic::Code::DeadlineExceeded => Error::Timeout(d(format!("node {node}: {}", s.message()))),
        _ => Error::NodeUnavailable(d(format!("node {node} unreachable: {}", s.message()))),
    }
}
