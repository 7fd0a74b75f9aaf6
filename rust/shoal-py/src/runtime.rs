//! The extension's tokio runtime and the interruptible blocking bridge: the GIL is released while a
//! future runs, and every 50 ms the caller checks for signals so Ctrl-C cancels the call.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use crate::error::to_py;

/// How often a blocked call wakes to check for KeyboardInterrupt.
pub const SIGNAL_POLL: Duration = Duration::from_millis(50);

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

/// Hands the runtime to pyo3-async-runtimes (once), so awaitables run on the same runtime as blocking calls.
pub fn init_async() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime());
    });
}

/// Runs `fut` in the background on the runtime.
pub fn spawn<T, F>(fut: F) -> tokio::task::JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    runtime().spawn(fut)
}

/// Waits up to `wait` (GIL released) for `task`: its outcome (a cancelled task is `Error::Cancelled`), or
/// the task back when it is still running.
pub fn join_for<T: Send + 'static>(
    py: Python<'_>,
    mut task: tokio::task::JoinHandle<shoal_client::Result<T>>,
    wait: Duration,
) -> Result<shoal_client::Result<T>, tokio::task::JoinHandle<shoal_client::Result<T>>> {
    match wait_up_to(py, &mut task, wait) {
        None => Err(task),
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) if e.is_cancelled() => Ok(Err(shoal_client::Error::Cancelled("the query was cancelled".into()))),
        Some(Err(e)) => Ok(Err(crate::error::internal(format!("the query's task failed: {e}"), e))),
    }
}

/// Runs `fut` to completion with the GIL released, on this thread (so it may borrow the caller's data).
/// Ctrl-C (or any pending signal handler raising) drops the future, which cancels the gRPC call, and
/// re-raises in Python.
pub fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = shoal_client::Result<T>> + Send,
    T: Send,
{
    let mut fut = Box::pin(fut);
    loop {
        match wait_up_to(py, &mut fut, SIGNAL_POLL) {
            Some(r) => return r.map_err(to_py),
            None => py.check_signals()?,
        }
    }
}

/// Drives `fut` on the runtime for at most `wait` with the GIL released: its output, or `None` (the future
/// is left as it was, to be awaited again or dropped).
fn wait_up_to<F>(py: Python<'_>, fut: &mut F, wait: Duration) -> Option<F::Output>
where
    F: Future + Unpin + Send,
    F::Output: Send,
{
    py.detach(|| {
        runtime().block_on(async {
            tokio::select! {
                r = fut => Some(r),
                _ = tokio::time::sleep(wait) => None,
            }
        })
    })
}
