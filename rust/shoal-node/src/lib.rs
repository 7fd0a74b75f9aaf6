//! The Shoal node: configuration, the gRPC services, and the service manager (startup, readiness,
//! graceful shutdown). `shoal-node` (the binary) and `python -m shoal.node` both call [`main_with_args`].

pub mod admission;
pub mod auth;
pub mod certs;
pub mod config;
pub mod metrics;
pub mod metrics_listener;
pub mod repair;
pub mod scroll_slots;
pub mod server;
pub mod service;
pub mod status;

pub use config::NodeConfig;

/// Runs a node with command-line `args` (without the program name) until SIGTERM/SIGINT; returns the
/// process exit code (0 after a clean shutdown, 2 for bad flags, 1 for a failure).
pub fn main_with_args(args: Vec<String>) -> i32 {
    if args.first().is_some_and(|a| a == "repair") {
        return repair::run(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "certs") {
        return certs::run(&args[1..]);
    }
    let cfg = match NodeConfig::from_args_and_env(&args) {
        Ok(c) => c,
        Err(e) => {
            // The error last: log tails (e.g. Cluster.local's startup errors) show it.
            eprintln!("{}\n\nshoal-node: {e}", config::USAGE);
            return 2;
        }
    };
    if cfg.help {
        println!("{}", config::USAGE);
        return 0;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
    pin_malloc_thresholds();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.async_threads)
        .enable_all()
        .thread_name("shoal-node")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-node: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(server::run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("shoal-node: {e}");
            1
        }
    }
}

/// Allocations at or above this size get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Pins glibc's mmap threshold. By default glibc raises it (up to 32 MiB) each time a mapped chunk is freed,
/// so after the first few write batches every batch's multi-MiB buffers (decoded request, Raft entry, apply)
/// come from the heap and stay resident once freed: ~150 bytes per ingested vector at 100k x 128-d
/// (bench/RESULTS.md, "Memory per vector"). Pinning it also pins the trim threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_malloc_thresholds() {
    // SAFETY: mallopt only changes allocator tunables and takes glibc's own lock; no pointer is passed.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok == 0 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; freed batch buffers may stay resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_malloc_thresholds() {}
