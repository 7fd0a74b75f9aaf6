//! The service manager: locks the data dir, starts the engine, serves gRPC (+ `grpc.health.v1`),
//! announces readiness in `DATA_DIR/node.json`, and on SIGTERM/SIGINT drains and shuts down in order.
//!
//! ```text
//!   starting ──engine recovered──> serving ──SIGTERM/SIGINT──> draining ──groups flushed──> stopped
//!   (health NOT_SERVING)          (SERVING, node.json)        (NOT_SERVING, in-flight finish)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::internal::node_internal_server::NodeInternalServer;
use shoal_api::v1::{
    cluster_server::ClusterServer, collections_server::CollectionsServer, points_server::PointsServer,
};
use shoal_cluster::{Engine, EngineConfig};
use shoal_raft::{Blocklist, GroupOptions, GrpcNetwork, GrpcNetworkOptions, RaftTransportService};
use tokio::net::TcpListener;

use shoal_cluster::api_keys::KeyFile;

use crate::NodeConfig;
use crate::admission::{Admission, AdmissionLayer};
use crate::service::cluster::ClusterService;
use crate::service::collections::CollectionsService;
use crate::service::internal::InternalService;
use crate::service::points::PointsService;

/// Largest gRPC message accepted or sent (the client splits batches below it).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// HTTP/2 stream flow-control window.
pub const HTTP2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// How long a new node may take to join its cluster (or a single node to recover group 0).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// HTTP/2 connection flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Errors that stop a node from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory cannot be used.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds this data directory.
    #[error("data dir {0} is in use by another shoal-node process")]
    Locked(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The engine failed to start.
    #[error(transparent)]
    Engine(#[from] shoal_cluster::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The security settings are missing or unusable.
    #[error("{0}")]
    Security(String),
}

/// The node's security material: TLS files and its API key file, or nothing with `--insecure`.
fn load_security(cfg: &NodeConfig) -> Result<(Option<shoal_raft::NodeTls>, KeyFile), ServeError> {
    let files = [&cfg.tls_cert, &cfg.tls_key, &cfg.tls_ca];
    if cfg.insecure {
        if files.iter().any(|f| f.is_some()) || cfg.api_keys.is_some() {
            return Err(ServeError::Security(
                "--insecure turns TLS and API keys off: do not pass --tls-* or --api-keys with it".into(),
            ));
        }
        tracing::warn!(
            "running with --insecure: no TLS, no authentication; anyone who reaches the port can do anything"
        );
        return Ok((None, KeyFile::default()));
    }
    let (Some(cert), Some(key), Some(ca), Some(keys)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.tls_ca, &cfg.api_keys)
    else {
        return Err(ServeError::Security(
            "secure by default: pass --tls-cert, --tls-key, --tls-ca and --api-keys (make them with `shoal-node \
             certs --nodes N --out DIR`), or --insecure for a test node on loopback"
                .into(),
        ));
    };
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| ServeError::Security(format!("cannot read {what} {}: {e}", p.display())))
    };
    let tls = shoal_raft::NodeTls {
        cert_pem: read(cert, "--tls-cert")?,
        key_pem: read(key, "--tls-key")?,
        ca_pem: read(ca, "--tls-ca")?,
    };
    let id = pem_node_id(&tls.cert_pem)
        .ok_or_else(|| ServeError::Security(format!("--tls-cert {} names no shoal node id", cert.display())))?;
    if id != cfg.node_id {
        return Err(ServeError::Security(format!(
            "--tls-cert {} is node {id}'s certificate, but this node is --node-id {}",
            cert.display(),
            cfg.node_id
        )));
    }
    let text = String::from_utf8(read(keys, "--api-keys")?)
        .map_err(|_| ServeError::Security(format!("--api-keys {} is not text", keys.display())))?;
    let keys =
        KeyFile::parse(&text).map_err(|e| ServeError::Security(format!("--api-keys {}: {e}", keys.display())))?;
    Ok((Some(tls), keys))
}

/// The node id named by the first certificate of a PEM file.
fn pem_node_id(pem: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(pem).ok()?;
    let b64: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64_decode(&b64)?;
    shoal_raft::tls::node_id_of(&der)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = T.iter().position(|&t| t == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn write_ready_file(dir: &Path, address: &str, node_id: u64, metrics: Option<&str>) -> std::io::Result<()> {
    let body = serde_json::json!({
        "address": address, "pid": std::process::id(), "node_id": node_id, "metrics_address": metrics,
    });
    let tmp = dir.join("node.json.tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, dir.join("node.json"))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A node that is serving: returned by [`start`], stopped by [`RunningNode::shutdown`].
pub struct RunningNode {
    /// The advertised address (the bound one unless `--advertise` was given).
    address: String,
    /// The engine behind the services.
    engine: Arc<Engine>,
    /// Health state, flipped to NOT_SERVING while draining.
    health: tonic_health::server::HealthReporter,
    /// Admission of public calls (refused once the node drains).
    admission: Arc<Admission>,
    /// Tells the gRPC server to stop accepting and drain.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The gRPC server task.
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// The data directory.
    dir: PathBuf,
    /// Exclusive lock on the data directory, released on drop.
    _lock: std::fs::File,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode").field("address", &self.address).finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The address clients use.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The engine (for in-process tests and tools).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Graceful stop (DESIGN §5):
    ///
    /// ```text
    ///   NOT_SERVING; new public calls refused (clients fail over); peers stop probing and electing it
    ///   -> hand leadership of every group it leads to another voter (3 s at most)
    ///   -> public calls in flight finish (10 s at most) while Raft and peer traffic go on, so that the
    ///      writes they wait for can still commit with this node's vote
    ///   -> hand off again whatever came back meanwhile, shut every Raft group down (flushing logs)
    ///   -> stop the server, release the data directory
    /// ```
    pub async fn shutdown(self) {
        self.health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let _ = std::fs::remove_file(self.dir.join("node.json"));
        self.admission.begin_drain();
        self.engine.begin_drain();
        self.engine.hand_off_leadership(Duration::from_secs(3)).await;
        let left = self.admission.wait_idle(Duration::from_secs(10)).await;
        if left > 0 {
            tracing::warn!(in_flight = left, "public requests did not finish within 10 s");
        }
        self.engine.hand_off_leadership(Duration::from_secs(1)).await;
        self.engine.shutdown().await;
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(_) => tracing::warn!("the server did not stop within 5 s"),
            _ => {}
        }
        tracing::info!("stopped");
    }
}

/// Starts a node: locks the data dir, binds, recovers the engine, serves, writes `node.json`.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode, ServeError> {
    shoal_raft::tls::install_crypto();
    let (tls, api_keys) = load_security(&cfg)?;
    let dir = cfg.data_dir.clone();
    let dir_err = |source| ServeError::DataDir { path: dir.display().to_string(), source };
    std::fs::create_dir_all(&dir).map_err(dir_err)?;
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK")).map_err(dir_err)?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Locked(dir.display().to_string()));
    }
    let _ = std::fs::remove_file(dir.join("node.json"));
    let listener =
        TcpListener::bind(&cfg.listen).await.map_err(|source| ServeError::Bind { addr: cfg.listen.clone(), source })?;
    let bound: SocketAddr =
        listener.local_addr().map_err(|source| ServeError::Bind { addr: cfg.listen.clone(), source })?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    tracing::info!(node_id = cfg.node_id, %advertise, data_dir = %dir.display(), "starting");
    let metrics_listener = match &cfg.metrics_listen {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
            let at = l.local_addr().map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
            Some((l, at.to_string()))
        }
    };
    let metrics_address = metrics_listener.as_ref().map(|(_, a)| a.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;

    let blocklist = Blocklist::new();
    let net_opts = GrpcNetworkOptions {
        snapshot_chunk_bytes: cfg.snapshot_chunk_bytes,
        snapshot_bytes_per_sec: cfg.snapshot_rate,
        tls: tls.clone(),
        ..GrpcNetworkOptions::default()
    };
    let net = GrpcNetwork::new(cfg.node_id, blocklist.clone(), net_opts);
    let mut transport = RaftTransportService::new(cfg.node_id, blocklist);
    if tls.is_some() {
        transport = transport.authenticated();
    }
    let engine = Engine::open(
        EngineConfig {
            node_id: cfg.node_id,
            data_dir: dir.clone(),
            advertise: advertise.clone(),
            raft: GroupOptions { snapshot_every: cfg.raft_snapshot_every, ..GroupOptions::default() },
            default_shards: cfg.shards_default,
            zone: cfg.zone.clone(),
            join: cfg.join.clone(),
            auto_rebalance: cfg.auto_rebalance,
            load_balancing: cfg.load_balancing,
            hedging: cfg.hedging,
            min_free_disk: cfg.min_free_disk,
            max_clock_offset_ms: cfg.max_clock_offset_ms,
            tls: tls.clone(),
            api_keys,
            metrics_address: metrics_address.clone(),
        },
        net,
        transport.clone(),
    )
    .await?;

    let points = PointsServer::new(PointsService { engine: engine.clone(), scrolls: Default::default() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let collections = CollectionsServer::new(CollectionsService { engine: engine.clone() });
    let cluster = ClusterServer::new(ClusterService { engine: engine.clone() });
    let internal = NodeInternalServer::new(InternalService { engine: engine.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let lookup = {
        let engine = Arc::downgrade(&engine);
        Arc::new(move |key: &str| engine.upgrade().and_then(|e| e.authenticate_key(key)))
    };
    let admission = Admission::with_auth(cfg.node_id, tls.is_some(), cfg.enable_fault_injection, lookup);
    let metrics = Arc::new(crate::metrics::NodeMetrics::new(&dir));
    if metrics_listener.is_some() {
        admission.set_metrics(Arc::clone(&metrics));
    }
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = &tls {
        builder = builder.tls_config(t.server_config())?;
    }
    let server = tokio::spawn(
        builder
            .layer(AdmissionLayer(Arc::clone(&admission)))
            .tcp_nodelay(true)
            // Large flow-control windows: a 1000-query batch is 512 KB, far above HTTP/2's 64 KB default,
            // which would cost a WINDOW_UPDATE round trip per 64 KB.
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
            .add_service(health_service)
            .add_service(points)
            .add_service(collections)
            .add_service(cluster)
            .add_service(internal)
            .add_service(transport.into_server())
            .serve_with_incoming_shutdown(
                // Builder::tcp_nodelay only applies to listeners tonic binds itself; without NODELAY on
                // accepted sockets, Nagle + delayed ACK add ~40 ms to every multi-frame response.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    // Serving from here on (peers must reach this node while it joins); requests wait for `ready`.
    if let Err(e) = engine.start(JOIN_TIMEOUT).await {
        let _ = stop.send(());
        let _ = server.await;
        engine.shutdown().await;
        return Err(e.into());
    }
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // grpc.health.v1 follows the node: NOT_SERVING while it is drained or after it left the cluster.
    {
        let (engine, health) = (Arc::downgrade(&engine), health.clone());
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(e) = engine.upgrade() else { break };
                let now = e.is_ready() && !e.is_leaving();
                if now != serving {
                    serving = now;
                    let st = if now {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status("", st).await;
                }
            }
        });
    }
    if let Some((listener, at)) = metrics_listener {
        tracing::info!(%at, "serving /metrics, /healthz and /readyz");
        tokio::spawn(crate::metrics_listener::serve(listener, Arc::downgrade(&engine), metrics));
    }
    write_ready_file(&dir, &advertise, cfg.node_id, metrics_address.as_deref()).map_err(dir_err)?;
    tracing::info!("shoal-node ready on {advertise}");
    Ok(RunningNode { address: advertise, engine, health, admission, stop, server, dir, _lock: lock })
}

/// Runs the node until SIGTERM/SIGINT, then stops it gracefully.
pub async fn run(cfg: NodeConfig) -> Result<(), ServeError> {
    let node = start(cfg).await?;
    eprintln!("shoal-node ready on {}", node.address());
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}
