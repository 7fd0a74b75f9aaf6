//! The metrics listener (`--metrics-listen`): a minimal HTTP/1.1 responder for `GET /metrics` (OpenMetrics
//! text), `GET /healthz` (the process serves) and `GET /readyz` (the node should get traffic: joined, not
//! draining, not cut off from the majority). One request per connection; requests are bounded in size, time
//! and number of connections, and anything else gets 400, 404 or 405.

use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_cluster::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::NodeMetrics;

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

/// Serves `listener` until the engine is gone.
pub async fn serve(listener: TcpListener, engine: Weak<Engine>, metrics: Arc<NodeMetrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if engine.strong_count() == 0 {
            return;
        }
        let (engine, metrics) = (engine.clone(), Arc::clone(&metrics));
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_secs(30), answer(conn, engine, metrics)).await;
        });
    }
}

async fn answer(mut conn: TcpStream, engine: Weak<Engine>, metrics: Arc<NodeMetrics>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    })
    .await;
    let (status, ctype, body) = match complete {
        Ok(Ok(true)) => route(&head, &engine, &metrics),
        _ => (400, "text/plain; charset=utf-8", "bad request: an HTTP/1.1 request head of at most 8 KiB\n".into()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// The answer to a request head: (status, content type, body).
fn route(head: &[u8], engine: &Weak<Engine>, metrics: &NodeMetrics) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return (400, TEXT, "bad request line\n".into());
    };
    if !version.starts_with(b"HTTP/1.") {
        return (400, TEXT, "HTTP/1.x only\n".into());
    }
    if method != b"GET" {
        return (405, TEXT, "GET only\n".into());
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let Some(engine) = engine.upgrade() else { return (503, TEXT, "stopping\n".into()) };
    match path {
        b"/metrics" => {
            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode(&engine.metrics_view()))
        }
        b"/healthz" => (200, TEXT, "ok\n".into()),
        b"/readyz" => match engine.readiness() {
            Ok(()) => (200, TEXT, "ready\n".into()),
            Err(why) => (503, TEXT, format!("not ready: {why}\n")),
        },
        _ => (404, TEXT, "not found: /metrics, /healthz, /readyz\n".into()),
    }
}
