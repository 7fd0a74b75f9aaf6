//! The gRPC Raft network of both planes, client side: [`GrpcNetwork`] (one per node: a pool of
//! lazily connected tonic channels, one per peer address, shared by every group of the node),
//! [`GrpcNetworkFactory`] (one per group: openraft's network factory, stamping requests with the
//! group id) and [`GrpcPeer`] (openraft's per-peer client). The server side is
//! [`crate::transport::RaftTransportService`]; [`Blocklist`] injects partitions on both sides.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Timeout;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::network::RaftNetworkFactory;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use parking_lot::Mutex;
use parking_lot::RwLock;
use shoal_api::internal::RaftReply;
use shoal_api::internal::RaftRequest;
use shoal_api::internal::SnapshotChunk;
use shoal_api::internal::SnapshotHeader;
use shoal_api::internal::raft_transport_client::RaftTransportClient;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncSeekExt;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::types::Node;
use crate::types::NodeId;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::wire;
use crate::wire::WIRE_FORMAT;

/// Size of the `data` of each snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest gRPC message either side of the transport accepts (an AppendEntries batch of big
/// write batches can be tens of MB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// HTTP/2 per-stream flow-control window of transport connections.
pub(crate) const HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-connection flow-control window of transport connections.
pub(crate) const HTTP2_CONNECTION_WINDOW: u32 = 32 << 20;

/// A test-only fault switch: the set of peer node ids a node refuses to talk to. Checked on both
/// sides of the transport: an outgoing RPC to a blocked peer fails as `Unreachable`, an incoming
/// RPC from a blocked peer is rejected. Cloning shares the set.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    /// The blocked peer node ids.
    blocked: Arc<RwLock<HashSet<NodeId>>>,
}

impl Blocklist {
    /// A new, empty blocklist.
    pub fn new() -> Blocklist {
        Blocklist::default()
    }

    /// Cuts this node off from `peer` (both directions).
    pub fn block(&self, peer: NodeId) {
        self.blocked.write().insert(peer);
    }

    /// Restores the link to `peer`.
    pub fn unblock(&self, peer: NodeId) {
        self.blocked.write().remove(&peer);
    }

    /// Restores every link.
    pub fn clear(&self) {
        self.blocked.write().clear();
    }

    /// Whether `peer` is blocked.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked.read().contains(&peer)
    }
}

/// Tuning of a [`GrpcNetwork`].
#[derive(Debug, Clone)]
pub struct GrpcNetworkOptions {
    /// Timeout of establishing a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Size of the `data` of each snapshot chunk (> 0).
    pub snapshot_chunk_bytes: usize,
    /// Upper bound on the rate at which one snapshot is sent, in bytes per second (0 = unlimited): keeps a
    /// transfer from taking the disk and network a node's foreground traffic needs, and lets tests watch
    /// (and interrupt) a transfer mid-stream.
    pub snapshot_bytes_per_sec: u64,
    /// Mutual TLS towards peers (`None`: plain text, insecure mode).
    pub tls: Option<crate::tls::NodeTls>,
}

impl Default for GrpcNetworkOptions {
    fn default() -> Self {
        GrpcNetworkOptions {
            connect_timeout: Duration::from_secs(1),
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            snapshot_bytes_per_sec: 0,
            tls: None,
        }
    }
}

/// The node-wide client side of the Raft transport: this node's id, its blocklist and one lazily
/// connected tonic channel per peer address, shared by all groups. Cloning shares it.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    /// State shared by the clones and every factory made from them.
    inner: Arc<NetInner>,
}

#[derive(Debug)]
struct NetInner {
    /// This node's id (stamped on every request as the sender).
    node_id: NodeId,
    /// Peers this node refuses to talk to.
    blocklist: Blocklist,
    /// Tuning.
    opts: GrpcNetworkOptions,
    /// One channel per peer address ("host:port").
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcNetwork {
    /// The client side of node `node_id`'s transport, checking `blocklist` on every RPC.
    pub fn new(node_id: NodeId, blocklist: Blocklist, opts: GrpcNetworkOptions) -> GrpcNetwork {
        GrpcNetwork { inner: Arc::new(NetInner { node_id, blocklist, opts, channels: Mutex::new(HashMap::new()) }) }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The blocklist checked by this network.
    pub fn blocklist(&self) -> &Blocklist {
        &self.inner.blocklist
    }

    /// The network factory of group `group` ("meta" or "<collection>@<uid>/<shard>"), to pass to
    /// [`crate::RaftGroup::open_with_network`].
    pub fn factory(&self, group: impl Into<String>) -> GrpcNetworkFactory {
        GrpcNetworkFactory { net: self.clone(), group: Arc::from(group.into()) }
    }

    /// The channel to `addr`, created (not yet connected) on first use. An invalid address yields
    /// an error message.
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.inner.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let tls = self.inner.opts.tls.as_ref();
        let mut ep = Endpoint::from_shared(format!("{}://{addr}", crate::tls::scheme(tls.is_some())))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?;
        if let Some(t) = tls {
            ep = ep.tls_config(t.client_config()).map_err(|e| format!("TLS towards {addr:?}: {e}"))?;
        }
        let ep = ep
            .connect_timeout(self.inner.opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        let channel = crate::tls::lazy_channel(ep, self.inner.opts.connect_timeout, true);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// openraft's network factory for one group on one node: makes a [`GrpcPeer`] per target.
#[derive(Debug, Clone)]
pub struct GrpcNetworkFactory {
    /// The node's network.
    net: GrpcNetwork,
    /// The group id stamped on every request.
    group: Arc<str>,
}

impl GrpcNetworkFactory {
    /// The group id of this factory.
    pub fn group(&self) -> &str {
        &self.group
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> GrpcPeer {
        let client = self.net.channel(&node.addr).map(|ch| {
            RaftTransportClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        GrpcPeer { net: self.net.clone(), group: self.group.clone(), target, addr: node.addr.clone(), client }
    }
}

/// openraft's client of one peer in one group.
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    /// The node's network (id, blocklist, options).
    net: GrpcNetwork,
    /// The group id stamped on every request.
    group: Arc<str>,
    /// The peer's node id.
    target: NodeId,
    /// The peer's address.
    addr: String,
    /// The gRPC client over the shared channel, or why the address is unusable.
    client: Result<RaftTransportClient<Channel>, String>,
}

/// How an RPC failed before openraft's error types are chosen.
enum Failure {
    /// The peer cannot be reached or refused the request: back off.
    Unreachable(String),
    /// The RPC exceeded its deadline.
    Timeout,
    /// A transient transport failure: retry at once.
    Network(String),
}

impl Failure {
    fn from_status(s: &tonic::Status) -> Failure {
        match s.code() {
            tonic::Code::DeadlineExceeded => Failure::Timeout,
            tonic::Code::Cancelled | tonic::Code::Aborted => Failure::Network(s.to_string()),
            _ => Failure::Unreachable(s.to_string()),
        }
    }
}

impl GrpcPeer {
    fn describe(&self, msg: &str) -> String {
        format!("raft group {}: peer {} at {}: {msg}", self.group, self.target, self.addr)
    }

    fn rpc_error(&self, f: Failure, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        match f {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(self.describe(&m))),
            Failure::Network(m) => RPCError::Network(NetworkError::from_string(self.describe(&m))),
            Failure::Timeout => {
                RPCError::Timeout(Timeout { action, id: self.net.node_id(), target: self.target, timeout: ttl })
            }
        }
    }

    /// The client, unless the peer is blocked or its address unusable.
    fn client(&self) -> Result<RaftTransportClient<Channel>, Failure> {
        if self.net.blocklist().is_blocked(self.target) {
            return Err(Failure::Unreachable("blocked by this node's blocklist".to_string()));
        }
        self.client.clone().map_err(Failure::Unreachable)
    }

    fn request(&self, body: Vec<u8>) -> RaftRequest {
        RaftRequest {
            format: WIRE_FORMAT,
            group: self.group.to_string(),
            from: self.net.node_id(),
            to: self.target,
            body,
        }
    }

    /// Sends one unary RPC with `option`'s deadline and returns the reply body.
    async fn unary<F, Fut>(&self, body: Vec<u8>, ttl: Duration, call: F) -> Result<Vec<u8>, Failure>
    where
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<RaftRequest>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftReply>, tonic::Status>>,
    {
        let client = self.client()?;
        let mut req = tonic::Request::new(self.request(body));
        req.set_timeout(ttl);
        let reply = match tokio::time::timeout(ttl, call(client, req)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(s)) => return Err(Failure::from_status(&s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        if reply.format != WIRE_FORMAT {
            return Err(Failure::Unreachable(format!("reply in unsupported wire format {}", reply.format)));
        }
        Ok(reply.body)
    }

    async fn send_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let body = wire::encode_vote(&rpc);
        let res = self
            .unary(body, ttl, |mut c, req| async move { if pre { c.pre_vote(req).await } else { c.vote(req).await } })
            .await
            .and_then(|b| wire::decode_vote_response(&b).map_err(Failure::Unreachable));
        res.map_err(|f| self.rpc_error(f, RPCTypes::Vote, ttl))
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcPeer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let body = wire::encode_append(&rpc);
        drop(rpc);
        let res = self
            .unary(body, ttl, |mut c, req| async move { c.append_entries(req).await })
            .await
            .and_then(|b| wire::decode_append_response(&b).map_err(Failure::Unreachable));
        res.map_err(|f| self.rpc_error(f, RPCTypes::AppendEntries, ttl))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, true).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let body = wire::encode_transfer(&req);
        let res = self
            .unary(body, ttl, |mut c, req| async move { c.transfer_leader(req).await })
            .await
            .and_then(|b| wire::decode_transfer_response(&b).map_err(Failure::Unreachable));
        res.map_err(|f| self.rpc_error(f, RPCTypes::TransferLeader, ttl))
    }

    /// Streams the snapshot file in chunks of `snapshot_chunk_bytes`, the header (vote, meta,
    /// size) in the first one; the receiver rebuilds the file and installs it. `option`'s
    /// deadline covers the whole transfer and install (see `GroupOptions::snapshot_timeout_ms`).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let to_err = |f: Failure| StreamingError::from(self.rpc_error(f, RPCTypes::InstallSnapshot, ttl));
        let mut client = self.client().map_err(to_err)?;
        let io_err = |what: &str, e: std::io::Error| {
            StreamingError::Unreachable(Unreachable::from_string(format!("snapshot file {what}: {e}")))
        };
        let total_bytes = snapshot.snapshot.metadata().map_err(|e| io_err("metadata", e))?.len();
        let mut file = tokio::fs::File::from_std(snapshot.snapshot);
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| io_err("seek", e))?;
        let header = SnapshotHeader {
            format: WIRE_FORMAT,
            group: self.group.to_string(),
            from: self.net.node_id(),
            to: self.target,
            vote: wire::encode_vote_only(&vote),
            meta: wire::encode_snapshot_meta(&snapshot.meta),
            total_bytes,
        };
        let chunk_bytes = self.net.inner.opts.snapshot_chunk_bytes.max(1);
        let rate = self.net.inner.opts.snapshot_bytes_per_sec;
        let chunks = snapshot_chunks(file, header, chunk_bytes, rate, self.describe("reading the snapshot"));
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(ttl);
        let call = async move { tokio::time::timeout(ttl, client.install_snapshot(req)).await };
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => match r {
                Err(_) => return Err(to_err(Failure::Timeout)),
                Ok(Err(s)) => return Err(to_err(Failure::from_status(&s))),
                Ok(Ok(r)) => r.into_inner(),
            },
        };
        if reply.format != WIRE_FORMAT {
            return Err(to_err(Failure::Unreachable(format!("reply in unsupported wire format {}", reply.format))));
        }
        wire::decode_snapshot_response(&reply.body).map_err(|e| to_err(Failure::Unreachable(e)))
    }
}

/// The chunks of a snapshot file: the header in the first, `chunk_bytes` of data in each, at most
/// `bytes_per_sec` on average (0 = unlimited). A read error ends the stream early; the receiver then
/// sees fewer bytes than announced and refuses.
fn snapshot_chunks(
    file: tokio::fs::File,
    header: SnapshotHeader,
    chunk_bytes: usize,
    bytes_per_sec: u64,
    context: String,
) -> impl futures::Stream<Item = SnapshotChunk> + Send + 'static {
    let started = tokio::time::Instant::now();
    futures::stream::unfold((file, Some(header), false, 0u64), move |(mut file, header, done, sent)| {
        let context = context.clone();
        async move {
            if done {
                return None;
            }
            if bytes_per_sec > 0 && sent > 0 {
                // Pace: the next chunk leaves no earlier than the rate allows for what was sent so far.
                tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64)).await;
            }
            let mut data = vec![0u8; chunk_bytes];
            let mut n = 0;
            while n < chunk_bytes {
                match file.read(&mut data[n..]).await {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        tracing::warn!("{context}: {e}");
                        return None;
                    }
                }
            }
            data.truncate(n);
            let eof = n < chunk_bytes;
            if n == 0 && header.is_none() {
                return None;
            }
            crate::io_stats::IO_STATS.snapshot_sent(n as u64);
            Some((SnapshotChunk { header, data }, (file, None, eof, sent + n as u64)))
        }
    })
}
