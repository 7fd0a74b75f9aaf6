//! The extension's tokio runtime and the interruptible blocking bridge: the GIL is released while a
//! future runs, and every 50 ms the caller checks for signals so Ctrl-C cancels the call.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use crate::error::to_py;

/// How often a blocked call wakes to check for KeyboardInterrupt.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoal-client")
            .enable_all()
            .build()
            .expect("start the shoal client runtime")
    })
}

/// Runs `fut` to completion with the GIL released. Ctrl-C (or any pending signal handler raising) drops
/// the future, which cancels the gRPC call, and re-raises in Python.
pub fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = shoal_client::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut fut = Box::pin(fut);
    loop {
        let step = py.detach(|| {
            runtime().block_on(async {
                tokio::select! {
                    r = &mut fut => Some(r),
                    _ = tokio::time::sleep(SIGNAL_POLL) => None,
                }
            })
        });
        match step {
            Some(r) => return r.map_err(to_py),
            None => py.check_signals()?,
        }
    }
}
