//! The client: connections, failover, deadlines and batch splitting (the only place a batch of points is
//! split into requests: Python passes whole batches).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_api::v1::{
    self, cluster_client::ClusterClient, collections_client::CollectionsClient, points_client::PointsClient,
};
use shoal_core::dedup::WriteId;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::scroll::ScrollStream;
use crate::session::Sessions;
use crate::{Detail, Error, Result};

/// Largest request the client sends; batches are split below it (the node accepts 256 MiB).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// How often a connection with calls in flight is pinged.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the node counts as not answering: its calls fail over to the
/// next address (writes with their write id, so the retry cannot apply twice).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long setting up a connection (TCP connect and TLS handshake) may take before the node counts as not
/// answering (at most the connect timeout given to `connect`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A write is re-sent (to another node, same write id) only within this span of its first attempt.
pub const RETRY_SPAN: Duration = Duration::from_millis(shoal_core::dedup::RETRY_SPAN_MS);

/// A channel to one node that sends this client's API key with every call.
pub(crate) type Ch = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <key>` to every call (when the client has a key).
#[derive(Clone)]
pub struct Credentials {
    /// The header value, checked to be valid ASCII once.
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("api_key", &self.bearer.as_ref().map(|_| "<hidden>")).finish()
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    }
}

/// How a client reaches and authenticates to the nodes.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// An API key, sent as `authorization: Bearer <key>` (`None`: no key, for an `--insecure` cluster).
    pub api_key: Option<String>,
    /// The cluster CA certificate (PEM): connect with TLS and verify the nodes against it (`None`: plain
    /// text, for an `--insecure` cluster).
    pub tls_ca_pem: Option<Vec<u8>>,
}

pub use v1::ReadConsistency as ReadLevel;
pub use v1::WriteConsistency as WriteLevel;

/// A connection to a cluster through one or more node addresses. Cheap to clone the channels inside;
/// every call carries a deadline and fails over to the next address when a node cannot be reached.
#[derive(Debug)]
pub struct Client {
    /// Node addresses ("host:port"), in the order given.
    addresses: Vec<String>,
    /// One lazily-connected channel per address (adding the API key to every call); same order as
    /// `addresses`.
    channels: Vec<Ch>,
    /// Index of the address used last successfully.
    current: AtomicUsize,
    /// Session tokens of this client's acknowledged writes, sent with every read.
    sessions: Sessions,
}

/// How [`Client::upsert_with`] splits a batch of points into requests and reports them. The default is
/// [`Client::upsert`]'s: requests as large as [`MAX_REQUEST_BYTES`] allows, one deadline for the whole batch.
#[derive(Default)]
pub struct Batching<'a> {
    /// Most points in one request (`None`: only the byte limit); at least 1.
    pub max_points: Option<usize>,
    /// Whether the timeout bounds each request (true) or the whole upsert (false).
    pub timeout_per_request: bool,
    /// Called after each acknowledged request with (points in it, points the node reports written); returning
    /// false stops the upsert there with [`Error::Cancelled`] (the requests before stay written).
    pub progress: Option<&'a mut (dyn FnMut(usize, u64) -> bool + Send)>,
}

/// The write consistency names [`write_level`] takes.
pub const WRITE_LEVELS: [&str; 3] = ["eventual", "quorum", "strong"];
/// The read consistency names [`read_level`] takes.
pub const READ_LEVELS: [&str; 3] = ["eventual", "session", "strong"];
/// The load-balancing strategy names [`load_balancing`] takes (besides "" for the node's default).
pub const LOAD_BALANCINGS: [&str; 3] = ["round_robin", "least_loaded", "locality"];

/// Parses a write consistency name.
pub fn write_level(s: &str) -> Result<WriteLevel> {
    match s {
        "eventual" => Ok(WriteLevel::Eventual),
        "quorum" => Ok(WriteLevel::Quorum),
        "strong" => Ok(WriteLevel::Strong),
        o => Err(Error::invalid(format!(
            "unknown consistency {o:?} for a write: expected \"eventual\", \"quorum\" or \"strong\""
        ))),
    }
}

/// Parses a read consistency name.
pub fn read_level(s: &str) -> Result<ReadLevel> {
    match s {
        "eventual" => Ok(ReadLevel::Eventual),
        "session" => Ok(ReadLevel::Session),
        "strong" => Ok(ReadLevel::Strong),
        o => Err(Error::invalid(format!(
            "unknown consistency {o:?} for a read: expected \"eventual\", \"session\" or \"strong\""
        ))),
    }
}

/// Parses a load-balancing strategy name ("" = the node's default).
pub fn load_balancing(s: &str) -> Result<v1::LoadBalancing> {
    match s {
        "" => Ok(v1::LoadBalancing::Unspecified),
        "round_robin" => Ok(v1::LoadBalancing::RoundRobin),
        "least_loaded" => Ok(v1::LoadBalancing::LeastLoaded),
        "locality" => Ok(v1::LoadBalancing::Locality),
        o => Err(Error::invalid(format!(
            "unknown load_balancing {o:?}: expected \"round_robin\", \"least_loaded\" or \"locality\""
        ))),
    }
}

pub(crate) fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// Whether the call should move on to another node: the status comes from the transport rather than from
/// a node (without the node's `x-shoal-error` mark, UNAVAILABLE, CANCELLED and UNKNOWN mean no connection,
/// or the connection dropped under the request), or the node said it is unavailable itself (starting or
/// shutting down: it did not take the request on).
pub(crate) fn from_transport(status: &tonic::Status) -> bool {
    if !shoal_api::ErrorKind::is_marked(status) {
        return matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown);
    }
    shoal_api::ErrorKind::of_status(status) == Some(shoal_api::ErrorKind::NodeUnavailable)
}

/// Runs `$call` against the current node, failing over to the others when a node cannot be reached or
/// stops answering (a connection refused or lost, or pings unanswered: see [`KEEPALIVE_TIMEOUT`]). A write
/// passes `resend: RETRY_SPAN` and keeps its write id on every attempt: it is re-sent only within that
/// span of its first attempt, so every copy lands inside the shards' dedup window.
macro_rules! with_failover {
    ($self:ident, $timeout:expr, |$ch:ident| $call:expr) => {
        with_failover!($self, $timeout, resend: Duration::MAX, |$ch| $call)
    };
    ($self:ident, $timeout:expr, resend: $resend:expr, |$ch:ident| $call:expr) => {{
        let first = tokio::time::Instant::now();
        let deadline = first + $timeout;
        let mut last = None;
        let n = $self.channels.len();
        let start = $self.current.load(Ordering::Relaxed);
        let mut out = None;
        let mut busy_backoff = Duration::from_millis(10);
        let mut attempt = 0;
        while attempt < n {
            let i = (start + attempt) % n;
            let $ch = $self.channels[i].clone();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || (attempt > 0 && first.elapsed() > $resend) {
                break;
            }
            let res: std::result::Result<_, tonic::Status> =
                match tokio::time::timeout(left + Duration::from_millis(50), ($call)(left)).await {
                    Ok(r) => r,
                    Err(_) => Err(tonic::Status::deadline_exceeded("client deadline exceeded")),
                };
            match res {
                Ok(v) => {
                    $self.current.store(i, Ordering::Relaxed);
                    out = Some(Ok(v));
                    break;
                }
                Err(status) => {
                    // tonic reports its own expired client deadline as CANCELLED "Timeout expired".
                    let expired = tokio::time::Instant::now() + Duration::from_millis(1) >= deadline;
                    if expired && matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded) {
                        out = Some(Err(Error::Timeout(Detail::caused_by(
                            format!("no answer from {} within {:?}", $self.addresses[i], $timeout),
                            status,
                        ))));
                        break;
                    }
                    // Without the node's `x-shoal-error` mark, UNAVAILABLE, CANCELLED and UNKNOWN come from the
                    // transport itself: no connection, or the connection dropped under the request (a killed
                    // node shows up as hyper's "operation was canceled" or as "Unknown: transport error").
                    let from_transport = from_transport(&status);
                    let err = Error::from_status(&status);
                    if from_transport {
                        last = Some(Error::NodeUnavailable(Detail::caused_by(
                            format!("node {} unreachable or not answering: {}", $self.addresses[i], status.message()),
                            status,
                        )));
                        attempt += 1;
                        continue;
                    }
                    // The node refused to start the call (too many in flight): back off and ask again, within
                    // the deadline (nothing was done, so a write keeps its write id and cannot apply twice).
                    let busy = shoal_api::ErrorKind::of_status(&status) == Some(shoal_api::ErrorKind::ResourceExhausted);
                    if busy && tokio::time::Instant::now() + busy_backoff < deadline {
                        tokio::time::sleep(busy_backoff).await;
                        busy_backoff = (busy_backoff * 2).min(Duration::from_millis(500));
                        last = Some(err);
                        continue;
                    }
                    out = Some(Err(err));
                    break;
                }
            }
        }
        match out {
            Some(r) => r,
            None => Err(last.unwrap_or_else(|| Error::Timeout("deadline exceeded before any node answered".into()))),
        }
    }};
}

impl Client {
    /// Creates a client for `addresses` of an `--insecure` cluster and checks that at least one answers
    /// within `connect_timeout`.
    pub async fn connect(addresses: Vec<String>, connect_timeout: Duration) -> Result<Client> {
        Self::connect_with(addresses, connect_timeout, ConnectOptions::default()).await
    }

    /// Creates a client for `addresses` with `opts` (TLS, API key) and checks that at least one node answers
    /// within `connect_timeout`.
    pub async fn connect_with(
        addresses: Vec<String>,
        connect_timeout: Duration,
        opts: ConnectOptions,
    ) -> Result<Client> {
        if addresses.is_empty() {
            return Err(Error::InvalidArgument("connect needs at least one address".into()));
        }
        let bearer = match &opts.api_key {
            None => None,
            Some(k) => Some(format!("Bearer {k}").parse().map_err(|e| {
                Error::InvalidArgument(Detail::caused_by(
                    "api_key must be printable ASCII without spaces or newlines",
                    e,
                ))
            })?),
        };
        let creds = Credentials { bearer };
        if opts.tls_ca_pem.is_some() {
            shoal_api::tls::install_crypto();
        }
        let mut channels = Vec::with_capacity(addresses.len());
        for a in &addresses {
            let mut ep = Endpoint::from_shared(format!("{}://{a}", shoal_api::tls::scheme(opts.tls_ca_pem.is_some())))
                .map_err(|e| {
                    Error::InvalidArgument(Detail::caused_by(format!("address {a:?} is not HOST:PORT: {e}"), e))
                })?;
            if let Some(ca) = &opts.tls_ca_pem {
                ep = ep.tls_config(shoal_api::tls::client_config(ca)).map_err(|e| {
                    Error::InvalidArgument(Detail::caused_by(format!("TLS settings for {a:?}: {e}"), e))
                })?;
            }
            let ep = ep
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .initial_stream_window_size(8 * 1024 * 1024)
                .initial_connection_window_size(32 * 1024 * 1024);
            let ch = shoal_api::tls::lazy_channel(ep, connect_timeout.min(HANDSHAKE_TIMEOUT), true);
            channels.push(InterceptedService::new(ch, creds.clone()));
        }
        let client = Client { addresses, channels, current: AtomicUsize::new(0), sessions: Sessions::default() };
        let tls = opts.tls_ca_pem.is_some();
        client.cluster_info(connect_timeout).await.map_err(|e| match e {
            Error::NodeUnavailable(m) | Error::Timeout(m) if !tls => Error::NodeUnavailable(m.reworded(format!(
                "no node of {:?} answered a plaintext connection: {m} (nodes started without --insecure serve TLS \
                 only: connect with the cluster CA certificate (tls_ca) and an API key)",
                client.addresses
            ))),
            Error::NodeUnavailable(m) | Error::Timeout(m) => {
                Error::NodeUnavailable(m.reworded(format!("no node of {:?} answered: {m}", client.addresses)))
            }
            // A TLS server answers a plaintext HTTP/2 preface with a TLS alert, which h2 reports as a protocol
            // error: say what it means.
            Error::Internal(m) if !tls && m.contains("h2 protocol error") => {
                Error::Unauthenticated(m.reworded(format!(
                    "{:?} did not accept a plaintext connection ({m}): the nodes serve TLS; connect with the cluster \
                 CA certificate (tls_ca) and an API key",
                    client.addresses
                )))
            }
            other => other,
        })?;
        Ok(client)
    }

    /// The addresses this client knows.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    pub(crate) fn points(ch: Ch) -> PointsClient<Ch> {
        PointsClient::new(ch)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Cluster and node information.
    pub async fn cluster_info(&self, timeout: Duration) -> Result<v1::ClusterInfo> {
        with_failover!(self, timeout, |ch| |t| async move {
            ClusterClient::new(ch).info(request(v1::ClusterInfoRequest {}, t)).await.map(|r| r.into_inner())
        })
    }

    /// The cluster's health as the answering node assesses it (one probe of every node).
    pub async fn health(&self, timeout: Duration) -> Result<v1::HealthResponse> {
        with_failover!(self, timeout, |ch| |t| async move {
            ClusterClient::new(ch).health(request(v1::HealthRequest {}, t)).await.map(|r| r.into_inner())
        })
    }

    /// Creates a collection.
    pub async fn create_collection(
        &self,
        req: v1::CreateCollectionRequest,
        timeout: Duration,
    ) -> Result<v1::CollectionInfo> {
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move { CollectionsClient::new(ch).create(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// Describes a collection.
    pub async fn get_collection(&self, name: &str, timeout: Duration) -> Result<v1::CollectionInfo> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::GetCollectionRequest { name: name.to_string() };
            async move { CollectionsClient::new(ch).get(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// Lists collections.
    pub async fn list_collections(&self, timeout: Duration) -> Result<Vec<v1::CollectionInfo>> {
        with_failover!(self, timeout, |ch| |t| async move {
            CollectionsClient::new(ch)
                .list(request(v1::ListCollectionsRequest {}, t))
                .await
                .map(|r| r.into_inner().collections)
        })
    }

    /// Drops a collection; returns whether it existed. Forgets this client's session tokens for it.
    pub async fn drop_collection(&self, name: &str, timeout: Duration) -> Result<bool> {
        let dropped = with_failover!(self, timeout, |ch| |t| {
            let req = v1::DropCollectionRequest { name: name.to_string() };
            async move { CollectionsClient::new(ch).drop(request(req, t)).await.map(|r| r.into_inner().dropped) }
        })?;
        self.sessions.forget(name);
        Ok(dropped)
    }

    /// Removes node `node_id` from the cluster (draining its replicas first when `drain`); returns the number
    /// of replica moves the drain started.
    pub async fn remove_node(&self, node_id: u64, drain: bool, timeout: Duration) -> Result<u32> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::RemoveNodeRequest { node_id, drain };
            async move { ClusterClient::new(ch).remove_node(request(req, t)).await.map(|r| r.into_inner().moves) }
        })
    }

    /// Starts replica moves that balance the cluster (`collection` = "" for every collection); returns the
    /// moves started (they run in the background).
    pub async fn rebalance(&self, collection: &str, timeout: Duration) -> Result<Vec<v1::ReplicaMove>> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::RebalanceRequest { collection: collection.to_string() };
            async move { CollectionsClient::new(ch).rebalance(request(req, t)).await.map(|r| r.into_inner().moves) }
        })
    }

    /// Adds (or changes the kind of) the payload index of `field` (`kind` = "keyword", "integer", "float"
    /// or "bool"); `None` drops it. Idempotent, so retried like a read. Returns the collection as it is now.
    pub async fn set_payload_index(
        &self,
        collection: &str,
        field: &str,
        kind: Option<&str>,
        timeout: Duration,
    ) -> Result<v1::CollectionInfo> {
        let req = v1::PayloadIndexRequest {
            collection: collection.to_string(),
            field: field.to_string(),
            kind: kind.unwrap_or_default().to_string(),
        };
        let create = kind.is_some();
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move {
                let mut c = CollectionsClient::new(ch);
                let r = if create {
                    c.create_payload_index(request(req, t)).await
                } else {
                    c.drop_payload_index(request(req, t)).await
                };
                r.map(|r| r.into_inner())
            }
        })
    }

    /// Upserts `ids` with row-major `vectors` (n x dim) and optional JSON payload texts, split into
    /// requests below [`MAX_REQUEST_BYTES`], all within `timeout`. Returns the number of points written.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert(
        &self,
        collection: &str,
        ids: v1::PointIds,
        vectors: &[f32],
        dim: usize,
        payloads: &[String],
        level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        self.upsert_with(collection, ids, vectors, dim, payloads, level, timeout, Batching::default()).await
    }

    /// [`Client::upsert`] with its batching chosen by `batching`: at most `max_points` per request (and always
    /// below [`MAX_REQUEST_BYTES`]), `timeout` for each request or for the whole upsert, and a progress
    /// callback after each acknowledged request. This is the only place a batch of points is split.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_with(
        &self,
        collection: &str,
        ids: v1::PointIds,
        vectors: &[f32],
        dim: usize,
        payloads: &[String],
        level: WriteLevel,
        timeout: Duration,
        mut batching: Batching<'_>,
    ) -> Result<u64> {
        let n = ids.ints.len() + ids.strs.len();
        if vectors.len() != n * dim || (dim == 0 && n > 0) {
            return Err(Error::invalid(format!(
                "got {n} ids but {} values of vectors (expected {n} x dim {dim})",
                vectors.len()
            )));
        }
        if !payloads.is_empty() && payloads.len() != n {
            return Err(Error::invalid(format!("got {n} ids but {} payloads", payloads.len())));
        }
        if n == 0 {
            return Ok(0);
        }
        // Each request holds whole points up to MAX_REQUEST_BYTES (by their actual sizes); a single point
        // larger than that is refused here, naming it, rather than failing in the transport.
        let row_bytes = |i: usize| {
            dim * 4 + 16 + payloads.get(i).map_or(0, |p| p.len() + 4) + ids.strs.get(i).map_or(0, |s| s.len() + 4)
        };
        for i in 0..n {
            if row_bytes(i) > MAX_REQUEST_BYTES {
                return Err(Error::invalid(format!(
                    "point {i} (its id, vector and payloads[{i}]) is {} bytes: a point may be at most \
                     {MAX_REQUEST_BYTES} bytes",
                    row_bytes(i)
                )));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let max_points = batching.max_points.unwrap_or(usize::MAX).max(1);
        let mut written = 0;
        let mut start = 0;
        while start < n {
            let mut end = start;
            let mut bytes = 0;
            while end < n && end - start < max_points && (end == start || bytes + row_bytes(end) <= MAX_REQUEST_BYTES) {
                bytes += row_bytes(end);
                end += 1;
            }
            let part = v1::PointIds {
                ints: if ids.ints.is_empty() { vec![] } else { ids.ints[start..end].to_vec() },
                strs: if ids.strs.is_empty() { vec![] } else { ids.strs[start..end].to_vec() },
            };
            let req = v1::UpsertRequest {
                collection: collection.to_string(),
                ids: Some(part),
                vectors: vectors[start * dim..end * dim].to_vec(),
                payloads: if payloads.is_empty() { vec![] } else { payloads[start..end].to_vec() },
                consistency: level as i32,
                write_id: WriteId::random().to_bytes().to_vec(),
            };
            let left = if batching.timeout_per_request {
                timeout
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            let resp = with_failover!(self, left, resend: RETRY_SPAN, |ch| |t| {
                let req = req.clone();
                async move { Self::points(ch).upsert(request(req, t)).await.map(|r| r.into_inner()) }
            })?;
            // Recorded per sub-batch: a later sub-batch failing does not undo this one.
            self.sessions.record(collection, &resp.tokens);
            written += resp.count;
            if let Some(report) = batching.progress.as_mut()
                && !report(end - start, resp.count)
            {
                return Err(Error::Cancelled(
                    format!("the upsert was stopped by its progress callback after {written} points").into(),
                ));
            }
            start = end;
        }
        Ok(written)
    }

    /// Deletes points by id.
    pub async fn delete(
        &self,
        collection: &str,
        ids: v1::PointIds,
        level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        let req = v1::DeleteRequest {
            collection: collection.to_string(),
            ids: Some(ids),
            consistency: level as i32,
            write_id: WriteId::random().to_bytes().to_vec(),
        };
        let resp = with_failover!(self, timeout, resend: RETRY_SPAN, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).delete(request(req, t)).await.map(|r| r.into_inner()) }
        })?;
        self.sessions.record(collection, &resp.tokens);
        Ok(resp.count)
    }

    /// Merges a JSON object into the payload of each point.
    pub async fn update_payload(
        &self,
        collection: &str,
        ids: v1::PointIds,
        patch: String,
        level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        let req = v1::UpdatePayloadRequest {
            collection: collection.to_string(),
            ids: Some(ids),
            patch,
            consistency: level as i32,
            write_id: WriteId::random().to_bytes().to_vec(),
        };
        let resp = with_failover!(self, timeout, resend: RETRY_SPAN, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).update_payload(request(req, t)).await.map(|r| r.into_inner()) }
        })?;
        self.sessions.record(collection, &resp.tokens);
        Ok(resp.count)
    }

    /// Fetches points by id.
    pub async fn get(
        &self,
        collection: &str,
        ids: v1::PointIds,
        with_vectors: bool,
        level: ReadLevel,
        timeout: Duration,
    ) -> Result<v1::GetResponse> {
        let req = v1::GetRequest {
            collection: collection.to_string(),
            ids: Some(ids),
            with_vectors,
            consistency: level as i32,
            session: self.sessions.tokens(collection),
        };
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).get(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// Counts live points.
    pub async fn count(&self, collection: &str, level: ReadLevel, timeout: Duration) -> Result<u64> {
        let req = v1::CountRequest {
            collection: collection.to_string(),
            consistency: level as i32,
            session: self.sessions.tokens(collection),
        };
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).count(request(req, t)).await.map(|r| r.into_inner().count) }
        })
    }

    /// Searches; the response holds per-query hit counts and the concatenated hits. The request's `session`
    /// is replaced by this client's tokens for the collection.
    pub async fn search(&self, mut req: v1::SearchRequest, timeout: Duration) -> Result<v1::SearchResponse> {
        req.session = self.sessions.tokens(&req.collection);
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).search(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// (live points, unindexed points) of a collection.
    pub async fn index_status(&self, collection: &str, timeout: Duration) -> Result<(u64, u64)> {
        let req = v1::IndexStatusRequest { collection: collection.to_string() };
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move {
                Self::points(ch).index_status(request(req, t)).await.map(|r| {
                    let r = r.into_inner();
                    (r.points, r.unindexed)
                })
            }
        })
    }

    /// The shards of a collection with the state of every replica.
    pub async fn shards(&self, collection: &str, timeout: Duration) -> Result<v1::ShardsResponse> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::ShardsRequest { collection: collection.to_string() };
            async move { ClusterClient::new(ch).shards(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// Opens a scroll (the request's `session` is replaced by this client's tokens). `timeout` bounds opening
    /// the stream and then each batch; see [`ScrollStream`] for failover mid-scroll.
    pub async fn scroll(self: &Arc<Self>, mut req: v1::ScrollRequest, timeout: Duration) -> Result<ScrollStream> {
        req.session = self.sessions.tokens(&req.collection);
        let stream = self.open_scroll(&req, timeout).await?;
        Ok(ScrollStream::new(Arc::clone(self), req, stream, timeout))
    }

    /// Opens the server stream of `req` on the first node that answers.
    pub(crate) async fn open_scroll(
        &self,
        req: &v1::ScrollRequest,
        timeout: Duration,
    ) -> Result<tonic::Streaming<v1::ScrollResponse>> {
        with_failover!(self, timeout, |ch| |t| {
            let req = req.clone();
            async move { Self::points(ch).scroll(request(req, t)).await.map(|r| r.into_inner()) }
        })
    }

    /// Creates an API key with `role` ("read", "write" or "admin") and `name` ("" for a generated one); returns
    /// (name, key). The key is shown only here: the cluster keeps its SHA-256 hash. Needs an admin key.
    pub async fn create_api_key(&self, role: &str, name: &str, timeout: Duration) -> Result<(String, String)> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::CreateApiKeyRequest { role: role.to_string(), name: name.to_string() };
            async move {
                ClusterClient::new(ch).create_api_key(request(req, t)).await.map(|r| {
                    let r = r.into_inner();
                    (r.name, r.key)
                })
            }
        })
    }

    /// Revokes the API key named `name`; returns whether it existed. Every node refuses it once the
    /// revocation has replicated (group 0). Needs an admin key.
    pub async fn revoke_api_key(&self, name: &str, timeout: Duration) -> Result<bool> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::RevokeApiKeyRequest { name: name.to_string() };
            async move { ClusterClient::new(ch).revoke_api_key(request(req, t)).await.map(|r| r.into_inner().revoked) }
        })
    }

    /// The cluster's API keys as (name, role), sorted by name; never the keys. Needs an admin key.
    pub async fn list_api_keys(&self, timeout: Duration) -> Result<Vec<(String, String)>> {
        with_failover!(self, timeout, |ch| |t| async move {
            ClusterClient::new(ch)
                .list_api_keys(request(v1::ListApiKeysRequest {}, t))
                .await
                .map(|r| r.into_inner().keys.into_iter().map(|k| (k.name, k.role)).collect())
        })
    }

    /// Fault injection (tests): the node that answers runs its clock `offset_ms` off its system clock.
    /// Connect to a single address to target one node.
    pub async fn skew_clock(&self, offset_ms: i64, timeout: Duration) -> Result<i64> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::SkewClockRequest { offset_ms };
            async move { ClusterClient::new(ch).skew_clock(request(req, t)).await.map(|r| r.into_inner().offset_ms) }
        })
    }

    /// Fault injection (tests): the node that answers changes one point of its replica of `shard` behind
    /// Raft's back. Connect to a single address to target one node.
    pub async fn diverge_replica(&self, collection: &str, shard: u32, timeout: Duration) -> Result<String> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::DivergeReplicaRequest { collection: collection.to_string(), shard };
            async move { ClusterClient::new(ch).diverge_replica(request(req, t)).await.map(|r| r.into_inner().id) }
        })
    }

    /// Fault injection (tests): the node that answers blocks all traffic with the `blocked` node ids (an
    /// empty list heals). Returns the blocklist now in force. Connect to a single address to target one node.
    pub async fn set_faults(&self, blocked: Vec<u64>, timeout: Duration) -> Result<Vec<u64>> {
        with_failover!(self, timeout, |ch| |t| {
            let req = v1::SetFaultsRequest { blocked: blocked.clone() };
            async move { ClusterClient::new(ch).set_faults(request(req, t)).await.map(|r| r.into_inner().blocked) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_level_and_strategy_names_are_exactly_the_parsed_ones() {
        assert!(WRITE_LEVELS.iter().all(|n| write_level(n).is_ok()));
        assert!(READ_LEVELS.iter().all(|n| read_level(n).is_ok()));
        assert!(LOAD_BALANCINGS.iter().all(|n| load_balancing(n).is_ok()));
        assert!(write_level("session").is_err() && read_level("quorum").is_err() && load_balancing("x").is_err());
    }
}
