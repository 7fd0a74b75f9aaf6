//! The gRPC Raft network of both planes, server side: [`RaftTransportService`] holds a registry
//! `group id -> openraft::Raft` of the groups open on this node and dispatches every incoming
//! RPC to its group. Requests from peers on the node's [`Blocklist`] are refused.
//!
//! Status codes: `NOT_FOUND` unknown group, `UNAVAILABLE` blocked sender or stopped group,
//! `FAILED_PRECONDITION` request meant for another node id or in an unsupported wire format,
//! `INVALID_ARGUMENT` malformed body or snapshot stream. Clients treat them all as unreachable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use shoal_api::internal::RaftReply;
use shoal_api::internal::RaftRequest;
use shoal_api::internal::SnapshotChunk;
use shoal_api::internal::raft_transport_server::RaftTransport;
use shoal_api::internal::raft_transport_server::RaftTransportServer;
use tokio::io::AsyncWriteExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::group::RaftGroup;
use crate::grpc::Blocklist;
use crate::grpc::MAX_MESSAGE_BYTES;
use crate::tls::PeerNode;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::Snapshot;
use crate::wire;
use crate::wire::WIRE_FORMAT;

/// The server side of this node's Raft transport. Cloning shares the registry.
#[derive(Clone)]
pub struct RaftTransportService {
    /// State shared by the clones.
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    /// This node's id (requests addressed to another id are refused).
    node_id: NodeId,
    /// Peers whose requests are refused.
    blocklist: Blocklist,
    /// Whether requests must come from an authenticated peer (a [`PeerNode`] in their extensions, put
    /// there by the node's TLS admission layer) whose id is the sender the request and its Raft message claim.
    authenticated: bool,
    /// The groups open on this node.
    groups: RwLock<HashMap<String, Registered>>,
    /// Source of unique names of received snapshot files.
    seq: AtomicU64,
    /// Per group, the last (or current) snapshot received: (bytes received, bytes announced).
    snapshot_progress: RwLock<HashMap<String, (u64, u64)>>,
}

/// A group registered with the service.
#[derive(Clone)]
struct Registered {
    /// Its openraft handle.
    raft: Raft,
    /// Where received snapshots are staged (the group's snapshot directory, whose `*.tmp`
    /// leftovers are removed when the group opens).
    snapshot_dir: PathBuf,
    /// The group's leader-contact clock, touched on every append request it answers.
    contact: crate::group::ContactClock,
}

impl std::fmt::Debug for RaftTransportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self.inner.groups.read().keys().cloned().collect();
        f.debug_struct("RaftTransportService").field("node_id", &self.inner.node_id).field("groups", &groups).finish()
    }
}

impl RaftTransportService {
    /// The transport service of node `node_id`, refusing requests from peers on `blocklist`.
    pub fn new(node_id: NodeId, blocklist: Blocklist) -> RaftTransportService {
        RaftTransportService {
            inner: Arc::new(ServiceInner {
                node_id,
                blocklist,
                authenticated: false,
                groups: RwLock::new(HashMap::new()),
                seq: AtomicU64::new(0),
                snapshot_progress: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The same service, requiring every request to come from the authenticated peer it claims to be (mutual
    /// TLS): set once, before the service is shared.
    pub fn authenticated(self) -> RaftTransportService {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("authenticated() on a shared service"));
        RaftTransportService { inner: Arc::new(ServiceInner { authenticated: true, ..inner }) }
    }

    /// Routes RPCs for `group` to `g` (replacing an earlier registration of that id).
    pub fn register(&self, group: impl Into<String>, g: &RaftGroup) {
        let reg =
            Registered { raft: g.raft().clone(), snapshot_dir: g.dir().join("snapshots"), contact: g.contact_clock() };
        self.inner.groups.write().insert(group.into(), reg);
    }

    /// Stops routing RPCs for `group`; returns whether it was registered.
    pub fn deregister(&self, group: &str) -> bool {
        self.inner.groups.write().remove(group).is_some()
    }

    /// The last (or in-progress) snapshot `group` received on this node: (bytes received, bytes announced).
    pub fn snapshot_progress(&self, group: &str) -> Option<(u64, u64)> {
        self.inner.snapshot_progress.read().get(group).copied()
    }

    /// Ids of the registered groups, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.groups.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The tonic service to add to the node's gRPC server (message size limits raised for large
    /// AppendEntries batches).
    pub fn into_server(self) -> RaftTransportServer<RaftTransportService> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Checks the envelope and finds the target group.
    fn route(&self, format: u32, group: &str, from: NodeId, to: NodeId) -> Result<Registered, Status> {
        let me = self.inner.node_id;
        if format != WIRE_FORMAT {
            return Err(Status::failed_precondition(format!(
                "node {me}: unsupported raft wire format {format} (this node speaks {WIRE_FORMAT})"
            )));
        }
        if to != me {
            return Err(Status::failed_precondition(format!("request for node {to} reached node {me}")));
        }
        if self.inner.blocklist.is_blocked(from) {
            return Err(Status::unavailable(format!("node {me} blocks node {from} (fault injection)")));
        }
        match self.inner.groups.read().get(group) {
            Some(r) => Ok(r.clone()),
            None => Err(Status::not_found(format!("raft group {group:?} is not open on node {me}"))),
        }
    }

    /// Checks that `from` is the authenticated peer (when required).
    fn check_sender(&self, peer: Option<PeerNode>, from: NodeId) -> Result<(), Status> {
        if !self.inner.authenticated {
            return Ok(());
        }
        match peer {
            Some(PeerNode(id)) if id == from => Ok(()),
            Some(PeerNode(id)) => Err(Status::permission_denied(format!(
                "node {id}'s certificate cannot speak as node {from} (raft message refused by node {})",
                self.inner.node_id
            ))),
            None => Err(Status::unauthenticated("raft messages need a cluster member's certificate")),
        }
    }

    /// Checks that the node a Raft message names as its author is its sender.
    fn check_author(&self, from: NodeId, author: NodeId, what: &str) -> Result<(), Status> {
        if self.inner.authenticated && author != from {
            return Err(Status::permission_denied(format!("{what} from node {from} claims to be from node {author}")));
        }
        Ok(())
    }

    fn unpack(&self, req: Request<RaftRequest>) -> Result<(Registered, String, NodeId, Vec<u8>), Status> {
        let peer = req.extensions().get::<PeerNode>().copied();
        let r = req.into_inner();
        self.check_sender(peer, r.from)?;
        let reg = self.route(r.format, &r.group, r.from, r.to)?;
        Ok((reg, r.group, r.from, r.body))
    }

    fn stopped(&self, group: &str, e: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("raft group {group:?} on node {}: {e}", self.inner.node_id))
    }
}

fn reply(body: Vec<u8>) -> Response<RaftReply> {
    Response::new(RaftReply { format: WIRE_FORMAT, body })
}

fn malformed(what: &str, e: String) -> Status {
    Status::invalid_argument(format!("malformed {what}: {e}"))
}

/// Removes a staged snapshot file when dropped (on success it is already unlinked).
struct StagedFile {
    /// The file's path.
    path: PathBuf,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn append_entries(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (reg, group, from, body) = self.unpack(req)?;
        let rpc = wire::decode_append(&body).map_err(|e| malformed("append request", e))?;
        drop(body);
        self.check_author(from, rpc.vote.leader_id.node_id, "append request")?;
        let resp = reg.raft.append_entries(rpc).await.map_err(|e| self.stopped(&group, e))?;
        reg.contact.touch();
        Ok(reply(wire::encode_append_response(&resp)))
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (reg, group, from, body) = self.unpack(req)?;
        let rpc = wire::decode_vote(&body).map_err(|e| malformed("vote request", e))?;
        self.check_author(from, rpc.vote.leader_id.node_id, "vote request")?;
        let resp = reg.raft.vote(rpc).await.map_err(|e| self.stopped(&group, e))?;
        Ok(reply(wire::encode_vote_response(&resp)))
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (reg, group, from, body) = self.unpack(req)?;
        let rpc = wire::decode_vote(&body).map_err(|e| malformed("pre-vote request", e))?;
        self.check_author(from, rpc.vote.leader_id.node_id, "pre-vote request")?;
        let resp = reg.raft.pre_vote(rpc).await.map_err(|e| self.stopped(&group, e))?;
        Ok(reply(wire::encode_vote_response(&resp)))
    }

    async fn transfer_leader(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (reg, group, from, body) = self.unpack(req)?;
        let rpc = wire::decode_transfer(&body).map_err(|e| malformed("transfer leader request", e))?;
        self.check_author(from, rpc.from_leader().leader_id.node_id, "transfer leader request")?;
        let resp = reg.raft.handle_transfer_leader(rpc).await.map_err(|e| self.stopped(&group, e))?;
        Ok(reply(wire::encode_transfer_response(&resp)))
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let peer = req.extensions().get::<PeerNode>().copied();
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header = first.header.ok_or_else(|| Status::invalid_argument("first snapshot chunk has no header"))?;
        self.check_sender(peer, header.from)?;
        let reg = self.route(header.format, &header.group, header.from, header.to)?;
        let group = header.group;
        let vote = wire::decode_vote_only(&header.vote).map_err(|e| malformed("snapshot vote", e))?;
        self.check_author(header.from, vote.leader_id.node_id, "snapshot")?;
        let meta = wire::decode_snapshot_meta(&header.meta).map_err(|e| malformed("snapshot meta", e))?;

        let io = |e: std::io::Error| Status::internal(format!("staging a snapshot of group {group:?}: {e}"));
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let staged = StagedFile { path: reg.snapshot_dir.join(format!("recv-{}-{n}.tmp", std::process::id())) };
        // Read and write: the handle is what openraft installs (it reads the file back).
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&staged.path)
            .await
            .map_err(io)?;
        let mut received = first.data.len() as u64;
        let progress = |received: u64| {
            self.inner.snapshot_progress.write().insert(group.clone(), (received, header.total_bytes));
        };
        progress(received);
        file.write_all(&first.data).await.map_err(io)?;
        drop(first.data);
        while let Some(chunk) = stream.message().await? {
            if chunk.header.is_some() {
                return Err(Status::invalid_argument("snapshot header repeated after the first chunk"));
            }
            received += chunk.data.len() as u64;
            if received > header.total_bytes {
                return Err(Status::invalid_argument(format!(
                    "snapshot stream longer than announced ({} bytes)",
                    header.total_bytes
                )));
            }
            file.write_all(&chunk.data).await.map_err(io)?;
            progress(received);
        }
        if received != header.total_bytes {
            return Err(Status::invalid_argument(format!(
                "snapshot stream truncated: {received} of {} bytes",
                header.total_bytes
            )));
        }
        file.flush().await.map_err(io)?;
        let file = file.into_std().await;
        // The open handle keeps the data; the name is no longer needed (installing copies it).
        drop(staged);
        let snapshot = Snapshot { meta, snapshot: file };
        let resp = reg.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| self.stopped(&group, e))?;
        Ok(reply(wire::encode_snapshot_response(&resp)))
    }
}
