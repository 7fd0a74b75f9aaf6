//! Node configuration from flags, environment variables (`SHOAL_*`) and an optional JSON file.
//! Precedence: flags > environment > file > defaults.

use std::path::PathBuf;

/// Help text of the node command line.
pub const USAGE: &str = "usage: shoal-node [--data-dir DIR] [--listen HOST:PORT] [--advertise HOST:PORT] [--node-id N]
                  [--zone Z] [--join HOST:PORT] [--shards-default N] [--config FILE.json]
                  [--load-balancing S] [--hedging B] [--log-level LEVEL] [--raft-snapshot-every N]
                  [--snapshot-chunk-bytes N] [--snapshot-rate N] [--async-threads N] [--min-free-disk BYTES]
                  (--tls-cert F --tls-key F --tls-ca F --api-keys F | --insecure) [--enable-fault-injection]

Secure by default: a node needs its TLS certificate and key, the cluster CA and an API key file (make them
all with `shoal-node certs --nodes 3 --out DIR`), or --insecure, which turns TLS and authentication off (for
loopback test clusters).

  --tls-cert FILE     this node's certificate (PEM), signed by the cluster CA, naming its node id
                      (env SHOAL_TLS_CERT)
  --tls-key FILE      this node's private key (PEM) (env SHOAL_TLS_KEY)
  --tls-ca FILE       the cluster CA certificate (PEM): peers must present certificates it signed
                      (env SHOAL_TLS_CA)
  --api-keys FILE     API keys this node accepts: NAME ROLE SHA256-OF-KEY lines (env SHOAL_API_KEYS); more
                      keys are added and revoked at runtime by an admin (replicated through the cluster)
  --insecure          no TLS, no authentication: anyone who reaches the port can do anything
  --enable-fault-injection
                      expose the test-only fault-injection methods (partitions, clock skew); off by default

  --data-dir DIR      where the node keeps its data (env SHOAL_DATA_DIR; default ./shoal-data)
  --listen HOST:PORT  gRPC address; port 0 picks a free port (env SHOAL_LISTEN; default 127.0.0.1:7301)
  --advertise ADDR    address given to clients and peers (default: the bound listen address)
  --node-id N         node id >= 1 (env SHOAL_NODE_ID; default 1)
  --zone Z            failure zone label (env SHOAL_ZONE)
  --join HOST:PORT    join the cluster of that node (env SHOAL_JOIN); ignored once this data dir belongs to
                      a cluster. Without it a new data dir starts a new cluster.
  --shards-default N  shards per collection when a request says none (default 1 per node)
  --auto-rebalance B  move replicas onto nodes that join (true|false, env SHOAL_AUTO_REBALANCE; default true)
  --load-balancing S  how reads pick among replicas when a request does not say: least_loaded (default),
                      round_robin or locality (env SHOAL_LOAD_BALANCING)
  --hedging B         send a second request to another replica when a shard read is slower than that
                      replica's p95 latency (true|false, env SHOAL_HEDGING; default true)
  --raft-snapshot-every N
                      snapshot each shard's state and compact its log every N applied entries (default
                      1000); a new replica of a compacted shard receives a snapshot, else a log replay.
                      Small values make tests exercise snapshot transfers with few writes.
  --snapshot-chunk-bytes N
                      size of the chunks a snapshot is streamed in (default 1048576)
  --snapshot-rate N   send each snapshot at most N bytes per second (default 0 = unlimited); with small
                      chunks, tests use it to watch and interrupt a transfer mid-stream
  --async-threads N   threads serving gRPC, Raft and I/O (env SHOAL_ASYNC_THREADS; default half the cores, at
                      least 1). Searches and indexing run on their own thread pools; fewer async threads
                      mean fewer cross-thread wake-ups per request, which is most of a request's latency
                      when several nodes share a small machine.
  --min-free-disk BYTES
                      refuse writes (StorageError, nothing written) while the data dir's file system has fewer
                      free bytes; reads go on, writes resume once space is freed (env SHOAL_MIN_FREE_DISK;
                      default 67108864 = 64 MiB; 0 = never refuse). Suffixes k, M, G (powers of 1024) accepted.
  --max-clock-offset-ms N
                      refuse a forwarded write stamped more than N ms ahead of this node's clock, and never
                      advance the clock past that bound (env SHOAL_MAX_CLOCK_OFFSET_MS; default 60000)
  --metrics-listen HOST:PORT
                      serve Prometheus metrics (GET /metrics, OpenMetrics text) and the probes GET /healthz and
                      GET /readyz over plain HTTP on this address (env SHOAL_METRICS_LISTEN; default off; port
                      0 picks a free port, written to node.json as metrics_address)
  --config FILE       JSON object with any of: data_dir, listen, advertise, node_id, zone, join, auto_rebalance,
                      load_balancing, hedging, log_level, raft_snapshot_every, snapshot_chunk_bytes,
                      snapshot_rate, async_threads, min_free_disk, max_clock_offset_ms, metrics_listen
  --log-level LEVEL   tracing filter, e.g. info or shoal=debug (env SHOAL_LOG; default info)

`shoal-node repair --data-dir DIR --collection NAME --shard N` salvages a damaged shard replica that has no
other replica (run `shoal-node repair --help`).

When ready the node writes DATA_DIR/node.json ({\"address\", \"pid\", \"node_id\"}) and logs
`shoal-node ready on ADDR`. SIGTERM or SIGINT stop it gracefully.";

/// Flags that take no value.
const SWITCHES: &[&str] = &["insecure", "enable-fault-injection"];

/// Effective node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Data directory; created when missing.
    pub data_dir: PathBuf,
    /// Address to bind; port 0 = any free port.
    pub listen: String,
    /// Address advertised to clients; `None` = the bound address.
    pub advertise: Option<String>,
    /// Node id, >= 1.
    pub node_id: u64,
    /// Failure zone label (may be empty).
    pub zone: String,
    /// Address of a cluster member to join through (only used while the data dir is new).
    pub join: Option<String>,
    /// Whether replicas are moved onto nodes that join (decided by the group-0 leader).
    pub auto_rebalance: bool,
    /// Default shard count of new collections, >= 1.
    pub shards_default: u32,
    /// How reads pick among eligible replicas when a request does not say.
    pub load_balancing: shoal_cluster::LoadBalancing,
    /// Whether slow shard reads get a hedged request to another replica.
    pub hedging: bool,
    /// Raft snapshot (and log compaction) period of every group, in applied entries, >= 1.
    pub raft_snapshot_every: u64,
    /// Chunk size of snapshot streams, >= 1.
    pub snapshot_chunk_bytes: usize,
    /// Send rate limit of one snapshot stream in bytes per second (0 = unlimited).
    pub snapshot_rate: u64,
    /// Worker threads of the node's tokio runtime, >= 1.
    pub async_threads: usize,
    /// Writes are refused while the data dir's file system has fewer free bytes (0 = never).
    pub min_free_disk: u64,
    /// How far (ms) ahead of this node's clock a received version may be, >= 1000.
    pub max_clock_offset_ms: u64,
    /// Where to serve /metrics, /healthz and /readyz over HTTP (`None` = off).
    pub metrics_listen: Option<String>,
    /// This node's certificate (PEM, signed by the cluster CA, naming its node id).
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// The API keys this node starts with (NAME ROLE SHA256 lines).
    pub api_keys: Option<PathBuf>,
    /// No TLS and no authentication (loopback tests only).
    pub insecure: bool,
    /// Expose the test-only fault-injection methods (SetFaults, SkewClock, DivergeReplica).
    pub enable_fault_injection: bool,
    /// Tracing filter directive.
    pub log_level: String,
    /// `--help` was given.
    pub help: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("shoal-data"),
            listen: "127.0.0.1:7301".into(),
            advertise: None,
            node_id: 1,
            zone: String::new(),
            join: None,
            auto_rebalance: true,
            shards_default: 1,
            load_balancing: shoal_cluster::LoadBalancing::default(),
            hedging: true,
            raft_snapshot_every: 1000,
            snapshot_chunk_bytes: shoal_raft::SNAPSHOT_CHUNK_BYTES,
            snapshot_rate: 0,
            async_threads: default_async_threads(),
            min_free_disk: 64 << 20,
            max_clock_offset_ms: shoal_core::hlc::DEFAULT_MAX_AHEAD_MS,
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            api_keys: None,
            insecure: false,
            enable_fault_injection: false,
            log_level: "info,openraft=error".into(),
            help: false,
        }
    }
}

impl NodeConfig {
    /// Parses flags and the environment of this process.
    pub fn from_args_and_env(args: &[String]) -> Result<Self, String> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("SHOAL_")).collect();
        Self::parse(args, &env)
    }

    /// Parses flags, environment pairs and (when named) a config file.
    pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Self, String> {
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut help = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                help = true;
                continue;
            }
            let Some(name) = a.strip_prefix("--") else { return Err(format!("unexpected argument {a:?}")) };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                // Switches take no value.
                None if SWITCHES.contains(&name) => (name.to_string(), "true".to_string()),
                None => (name.to_string(), it.next().ok_or_else(|| format!("--{name} needs a value"))?.clone()),
            };
            flags.push((name.replace('-', "_"), value));
        }
        let mut cfg = NodeConfig { help, ..NodeConfig::default() };
        let file = flags.iter().rev().find(|(k, _)| k == "config").map(|(_, v)| v.clone());
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read config file {path}: {e}"))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("config file {path} is not valid JSON: {e}"))?;
            let obj = v.as_object().ok_or_else(|| format!("config file {path} must hold a JSON object"))?;
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                cfg.set(k, &s).map_err(|e| format!("config file {path}: {e}"))?;
            }
        }
        for (k, v) in env {
            let key = match k.as_str() {
                "SHOAL_DATA_DIR" => "data_dir",
                "SHOAL_LISTEN" => "listen",
                "SHOAL_ADVERTISE" => "advertise",
                "SHOAL_NODE_ID" => "node_id",
                "SHOAL_ZONE" => "zone",
                "SHOAL_JOIN" => "join",
                "SHOAL_AUTO_REBALANCE" => "auto_rebalance",
                "SHOAL_LOG" => "log_level",
                "SHOAL_LOAD_BALANCING" => "load_balancing",
                "SHOAL_HEDGING" => "hedging",
                "SHOAL_ASYNC_THREADS" => "async_threads",
                "SHOAL_MIN_FREE_DISK" => "min_free_disk",
                "SHOAL_MAX_CLOCK_OFFSET_MS" => "max_clock_offset_ms",
                "SHOAL_METRICS_LISTEN" => "metrics_listen",
                "SHOAL_TLS_CERT" => "tls_cert",
                "SHOAL_TLS_KEY" => "tls_key",
                "SHOAL_TLS_CA" => "tls_ca",
                "SHOAL_API_KEYS" => "api_keys",
                "SHOAL_INSECURE" => "insecure",
                "SHOAL_ENABLE_FAULT_INJECTION" => "enable_fault_injection",
                _ => continue,
            };
            cfg.set(key, v).map_err(|e| format!("environment {k}: {e}"))?;
        }
        for (k, v) in &flags {
            if k != "config" {
                cfg.set(k, v).map_err(|e| format!("--{}: {e}", k.replace('_', "-")))?;
            }
        }
        Ok(cfg)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "data_dir" => self.data_dir = PathBuf::from(value),
            "listen" => {
                value
                    .parse::<std::net::SocketAddr>()
                    .map_err(|_| format!("{value:?} is not HOST:PORT (an IP address)"))?;
                self.listen = value.to_string();
            }
            "advertise" => self.advertise = Some(value.to_string()),
            "node_id" => {
                self.node_id = value
                    .parse()
                    .ok()
                    .filter(|&n: &u64| n >= 1)
                    .ok_or_else(|| format!("{value:?} is not a node id >= 1"))?
            }
            "zone" => self.zone = value.to_string(),
            "join" => {
                if value.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(format!("{value:?} is not HOST:PORT"));
                }
                self.join = Some(value.to_string());
            }
            "metrics_listen" => {
                if value.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(format!("{value:?} is not HOST:PORT"));
                }
                self.metrics_listen = Some(value.to_string());
            }
            "shards_default" => {
                self.shards_default = value
                    .parse()
                    .ok()
                    .filter(|&n: &u32| (1..=1024).contains(&n))
                    .ok_or_else(|| format!("{value:?} is not in 1..=1024"))?
            }
            "raft_snapshot_every" => {
                self.raft_snapshot_every = value
                    .parse()
                    .ok()
                    .filter(|&n: &u64| n >= 1)
                    .ok_or_else(|| format!("{value:?} is not a number of entries >= 1"))?
            }
            "snapshot_chunk_bytes" => {
                self.snapshot_chunk_bytes = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| (1..=64 << 20).contains(&n))
                    .ok_or_else(|| format!("{value:?} is not a chunk size in 1..=67108864"))?
            }
            "snapshot_rate" => {
                self.snapshot_rate =
                    value.parse().map_err(|_| format!("{value:?} is not a rate in bytes per second (0 = unlimited)"))?
            }
            "async_threads" => {
                self.async_threads = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| (1..=1024).contains(&n))
                    .ok_or_else(|| format!("{value:?} is not a thread count in 1..=1024"))?
            }
            "min_free_disk" => self.min_free_disk = parse_bytes(value)?,
            "max_clock_offset_ms" => {
                self.max_clock_offset_ms = value
                    .parse()
                    .ok()
                    .filter(|n: &u64| (1000..=86_400_000).contains(n))
                    .ok_or_else(|| format!("{value:?} is not a clock offset in 1000..=86400000 ms"))?
            }
            "tls_cert" => self.tls_cert = Some(PathBuf::from(value)),
            "tls_key" => self.tls_key = Some(PathBuf::from(value)),
            "tls_ca" => self.tls_ca = Some(PathBuf::from(value)),
            "api_keys" => self.api_keys = Some(PathBuf::from(value)),
            "insecure" => self.insecure = parse_bool(value)?,
            "enable_fault_injection" => self.enable_fault_injection = parse_bool(value)?,
            "auto_rebalance" => self.auto_rebalance = parse_bool(value)?,
            "hedging" => self.hedging = parse_bool(value)?,
            "load_balancing" => {
                self.load_balancing =
                    shoal_cluster::LoadBalancing::parse(value, self.load_balancing).map_err(|e| e.to_string())?
            }
            "log_level" => self.log_level = value.to_string(),
            other => return Err(format!("unknown setting {other:?}")),
        }
        Ok(())
    }
}

/// A byte count: digits with an optional k, M or G suffix (powers of 1024).
fn parse_bytes(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let (num, mult) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&v[..v.len() - 1], 1 << 20),
        Some('g' | 'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{value:?} is not a byte count (digits with an optional k, M or G)"))
}

/// Half the cores this process may use, at least 1.
fn default_async_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_beat_env() {
        let env = vec![("SHOAL_NODE_ID".to_string(), "4".to_string()), ("SHOAL_LISTEN".into(), "127.0.0.1:9".into())];
        let c = NodeConfig::parse(&s(&["--node-id", "7", "--data-dir=/tmp/x"]), &env).unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn transfer_tuning_flags() {
        let c = NodeConfig::parse(
            &s(&["--raft-snapshot-every", "20", "--snapshot-chunk-bytes=16384", "--snapshot-rate", "500000"]),
            &[],
        )
        .unwrap();
        assert_eq!((c.raft_snapshot_every, c.snapshot_chunk_bytes, c.snapshot_rate), (20, 16384, 500_000));
        let d = NodeConfig::default();
        assert_eq!((d.raft_snapshot_every, d.snapshot_chunk_bytes, d.snapshot_rate), (1000, 1 << 20, 0));
        assert!(NodeConfig::parse(&s(&["--raft-snapshot-every", "0"]), &[]).is_err());
        assert!(NodeConfig::parse(&s(&["--snapshot-chunk-bytes", "0"]), &[]).is_err());
    }

    #[test]
    fn min_free_disk() {
        let env = [("SHOAL_MIN_FREE_DISK".to_string(), "8M".to_string())];
        assert_eq!(NodeConfig::default().min_free_disk, 64 << 20);
        assert_eq!(NodeConfig::parse(&[], &env).unwrap().min_free_disk, 8 << 20);
        assert_eq!(NodeConfig::parse(&s(&["--min-free-disk", "0"]), &env).unwrap().min_free_disk, 0);
        assert_eq!(NodeConfig::parse(&s(&["--min-free-disk", "3k"]), &[]).unwrap().min_free_disk, 3072);
        let e = NodeConfig::parse(&s(&["--min-free-disk", "lots"]), &[]).unwrap_err();
        assert!(e.contains("--min-free-disk") && e.contains("byte count"), "{e}");
        assert!(NodeConfig::parse(&s(&["--min-free-disk", "99999999999G"]), &[]).is_err());
    }

    #[test]
    fn async_threads() {
        assert!(NodeConfig::default().async_threads >= 1);
        let env = [("SHOAL_ASYNC_THREADS".to_string(), "3".to_string())];
        assert_eq!(NodeConfig::parse(&[], &env).unwrap().async_threads, 3);
        assert_eq!(NodeConfig::parse(&s(&["--async-threads", "1"]), &env).unwrap().async_threads, 1);
        let err = NodeConfig::parse(&s(&["--async-threads", "0"]), &[]).unwrap_err();
        assert!(err.contains("--async-threads") && err.contains("\"0\""), "{err}");
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(NodeConfig::parse(&s(&["--node-id", "0"]), &[]).unwrap_err().contains("--node-id"));
        assert!(NodeConfig::parse(&s(&["--bogus", "1"]), &[]).unwrap_err().contains("bogus"));
        assert!(NodeConfig::parse(&s(&["--listen"]), &[]).unwrap_err().contains("needs a value"));
        assert!(NodeConfig::parse(&s(&["--listen", "localhost"]), &[]).is_err());
    }
}
