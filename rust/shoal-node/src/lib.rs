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
