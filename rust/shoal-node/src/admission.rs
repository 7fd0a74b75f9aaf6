//! Admission of requests: a tower layer in front of every service that authenticates the caller (a peer's
//! node certificate, or a client's API key in `authorization: Bearer <key>`) and applies `auth.rs`'s verdict,
//! counts the public calls in flight and, once the node drains (a graceful stop), refuses new ones before
//! they do anything.
//!
//! ```text
//!   serving ──begin_drain──> draining: new public calls get UNAVAILABLE (kind node_unavailable: nothing
//!                            done, the client fails over); calls in flight finish; peer traffic (Raft,
//!                            node-to-node) goes on, so in-flight writes can still commit
//! ```
//!
//! Public calls are those of the `shoal.v1` services; Raft transport, node-to-node requests and
//! `grpc.health.v1` always pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_cluster::Error;
use shoal_cluster::api_keys::Role;
use shoal_cluster::peer::FROM_KEY;
use shoal_raft::PeerNode;
use tokio::sync::Notify;

use crate::auth::{self, Caller, Refusal};
use crate::metrics::Rejection;
use crate::status::status;
use shoal_api::ErrorKind;

/// A status with its `x-shoal-error` kind.
pub(crate) fn kinded(s: tonic::Status, kind: ErrorKind) -> tonic::Status {
    kind.mark(s, None)
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("node_id", &self.node_id)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// gRPC path prefix of the public services.
const PUBLIC_PREFIX: &str = "/shoal.v1.";

/// Most public calls a node serves at once; more get RESOURCE_EXHAUSTED (kind `resource_exhausted`: nothing
/// was done; the client backs off and retries within its deadline). Each call's body is bounded by the
/// message size limit, so this also bounds the memory of requests in flight.
pub const MAX_PUBLIC_IN_FLIGHT: usize = 1024;

/// Most bytes of public request bodies a node holds at once (from their arrival until their calls are
/// answered); a call whose body would go past it fails with RESOURCE_EXHAUSTED (kind `resource_exhausted`),
/// which the client retries with backoff within its deadline.
pub const MAX_IN_FLIGHT_BYTES: usize = 1 << 30;

/// Finds the role of an API key (the engine's key registry); `None` for an unknown or revoked key.
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<(String, Role)> + Send + Sync>;

/// The node's admission state, shared by the layer and the shutdown sequence.
#[derive(Default)]
pub struct Admission {
    /// This node's id (named in refusals).
    node_id: u64,
    /// Whether callers are authenticated (TLS on; false with `--insecure`).
    secure: bool,
    /// Whether the test-only fault-injection methods exist.
    faults_enabled: bool,
    /// The API key registry (`None`: no key is valid).
    keys: Option<KeyLookup>,
    /// Set once the node drains; never cleared.
    draining: AtomicBool,
    /// Public calls admitted and not yet answered.
    in_flight: AtomicUsize,
    /// Bytes of public request bodies received by calls not yet answered; at most `max_body_bytes`.
    body_bytes: AtomicUsize,
    /// The budget of `body_bytes` ([`MAX_IN_FLIGHT_BYTES`]; smaller in tests).
    max_body_bytes: usize,
    /// Signalled whenever `in_flight` drops to zero.
    idle: Notify,
    /// Where finished calls and refusals are counted (set when the node serves metrics).
    metrics: std::sync::OnceLock<Arc<crate::metrics::NodeMetrics>>,
}

impl Admission {
    /// Admission for node `node_id`, serving everyone (insecure, no fault injection).
    pub fn new(node_id: u64) -> Arc<Admission> {
        Arc::new(Admission { node_id, max_body_bytes: MAX_IN_FLIGHT_BYTES, ..Default::default() })
    }

    /// Admission for node `node_id`: `secure` authenticates every caller against `keys` and node certificates;
    /// `faults_enabled` exposes the fault-injection methods.
    pub fn with_auth(node_id: u64, secure: bool, faults_enabled: bool, keys: KeyLookup) -> Arc<Admission> {
        Arc::new(Admission {
            node_id,
            secure,
            faults_enabled,
            keys: Some(keys),
            max_body_bytes: MAX_IN_FLIGHT_BYTES,
            ..Default::default()
        })
    }

    /// Counts calls and refusals into `m` from now on (once; later calls are ignored).
    pub fn set_metrics(&self, m: Arc<crate::metrics::NodeMetrics>) {
        let _ = self.metrics.set(m);
    }

    fn reject(&self, why: crate::metrics::Rejection) {
        if let Some(m) = self.metrics.get() {
            m.record_rejection(why);
        }
    }

    /// Who sent `req`: a peer with a valid node certificate, a client with a key, or nobody known.
    fn caller<B>(&self, req: &http::Request<B>) -> Caller {
        type Tls = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;
        if let Some(certs) = req.extensions().get::<Tls>().and_then(|i| i.peer_certs())
            && let Some(id) = certs.first().and_then(|c| shoal_raft::tls::node_id_of(c.as_ref()))
        {
            return Caller::Member(id);
        }
        let Some(auth) = req.headers().get("authorization") else { return Caller::Anonymous };
        let key = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match (key, &self.keys) {
            (Some(k), Some(lookup)) => match lookup(k) {
                Some((name, role)) => Caller::Key { name, role },
                None => Caller::BadKey,
            },
            _ => Caller::BadKey,
        }
    }

    /// Refuses new public calls from now on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Public calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until no public call is in flight, at most `timeout`; returns how many still are.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            let n = self.in_flight();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn refusal(&self) -> tonic::Status {
        status(Error::NodeUnavailable(
            format!("node {} is shutting down: the request was not started (retry on another node)", self.node_id)
                .into(),
        ))
    }
}

/// Decrements the in-flight count when the call's response is ready (or the call is dropped), and gives
/// back the body bytes the call took from the node's budget.
struct Admitted(Arc<Admission>, Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.body_bytes.fetch_sub(self.1.swap(0, Ordering::AcqRel), Ordering::AcqRel);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A request body whose bytes count against the node's budget of request bytes in flight
/// ([`MAX_IN_FLIGHT_BYTES`]) from when they arrive until the call is answered (the decoded request lives that
/// long). A frame that would exceed the budget fails the body with RESOURCE_EXHAUSTED.
pub trait BudgetedBody: Sized {
    /// The body, counting its bytes into `held` (the call's share) and the admission's total.
    fn budgeted(self, admission: Arc<Admission>, held: Arc<AtomicUsize>) -> Self;
}

impl BudgetedBody for tonic::body::Body {
    fn budgeted(self, admission: Arc<Admission>, held: Arc<AtomicUsize>) -> Self {
        tonic::body::Body::new(Budgeted { inner: self, admission, held })
    }
}

/// Unit bodies (tests) carry no bytes.
impl BudgetedBody for () {
    fn budgeted(self, _: Arc<Admission>, _: Arc<AtomicUsize>) -> Self {}
}

/// See [`BudgetedBody`].
struct Budgeted {
    /// The request body as received.
    inner: tonic::body::Body,
    /// Whose budget.
    admission: Arc<Admission>,
    /// Bytes this call holds; given back by [`Admitted`].
    held: Arc<AtomicUsize>,
}

impl http_body::Body for Budgeted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len();
            let before = self.admission.body_bytes.fetch_add(n, Ordering::AcqRel);
            if before + n > self.admission.max_body_bytes {
                self.admission.body_bytes.fetch_sub(n, Ordering::AcqRel);
                let m = format!(
                    "node {} holds {} MiB of requests in flight already (at most {} MiB): this one was not started \
                     (retry later)",
                    self.admission.node_id,
                    before >> 20,
                    self.admission.max_body_bytes >> 20
                );
                return Poll::Ready(Some(Err(kinded(
                    tonic::Status::resource_exhausted(m),
                    ErrorKind::ResourceExhausted,
                ))));
            }
            self.held.fetch_add(n, Ordering::AcqRel);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The tower layer of [`Admission`].
#[derive(Debug, Clone)]
pub struct AdmissionLayer(pub Arc<Admission>);

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, admission: Arc::clone(&self.0) }
    }
}

/// A service behind [`AdmissionLayer`].
#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AdmissionService<S>
where
    ReqBody: BudgetedBody,
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let a = Arc::clone(&self.admission);
        // A deadline that does not parse (or would overflow) is refused rather than ignored.
        if let Some(v) = req.headers().get("grpc-timeout")
            && v.to_str().ok().and_then(crate::service::parse_grpc_timeout).is_none()
        {
            let m = format!("grpc-timeout header {v:?} is not a gRPC timeout (1 to 8 digits and a unit: H M S m u n)");
            let refusal = kinded(tonic::Status::invalid_argument(m), ErrorKind::InvalidArgument).into_http();
            a.reject(Rejection::BadTimeout);
            return Box::pin(async move { Ok(refusal) });
        }
        let caller = if a.secure { a.caller(&req) } else { Caller::Anonymous };
        if let Err(refusal) = auth::decide(req.uri().path(), &caller, a.secure, a.faults_enabled) {
            let status = match refusal {
                Refusal::Unauthenticated(m) => {
                    a.reject(Rejection::Unauthenticated);
                    kinded(tonic::Status::unauthenticated(m), ErrorKind::Unauthenticated)
                }
                Refusal::PermissionDenied(m) => {
                    a.reject(Rejection::PermissionDenied);
                    kinded(tonic::Status::permission_denied(m), ErrorKind::PermissionDenied)
                }
                Refusal::Unimplemented(m) => {
                    a.reject(Rejection::Unimplemented);
                    tonic::Status::unimplemented(m)
                }
            };
            let refusal = status.into_http();
            return Box::pin(async move { Ok(refusal) });
        }
        if let Caller::Member(id) = caller {
            // A peer's node-to-node requests name their sender: it must be the certificate's node.
            let from = req.headers().get(FROM_KEY).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if from.is_some_and(|f| f != id) {
                let m = format!("node {id}'s certificate cannot speak as node {}", from.unwrap_or(0));
                let refusal = kinded(tonic::Status::permission_denied(m), ErrorKind::PermissionDenied).into_http();
                a.reject(Rejection::PermissionDenied);
                return Box::pin(async move { Ok(refusal) });
            }
            req.extensions_mut().insert(PeerNode(id));
        }
        let timing = a.metrics.get().map(|m| (Arc::clone(m), req.uri().path().to_string(), std::time::Instant::now()));
        if !req.uri().path().starts_with(PUBLIC_PREFIX) {
            let fut = self.inner.call(req);
            return Box::pin(async move {
                fut.await.map(decode_errors_are_invalid_argument).inspect(|r| record(timing, r))
            });
        }
        let a = &self.admission;
        let before = a.in_flight.fetch_add(1, Ordering::AcqRel);
        let held = Arc::new(AtomicUsize::new(0));
        let guard = Admitted(Arc::clone(a), Arc::clone(&held));
        if before >= MAX_PUBLIC_IN_FLIGHT {
            let m = format!(
                "node {} is serving {MAX_PUBLIC_IN_FLIGHT} calls already: this one was not started (retry later)",
                a.node_id
            );
            let refusal = kinded(tonic::Status::resource_exhausted(m), ErrorKind::ResourceExhausted).into_http();
            a.reject(Rejection::Overloaded);
            drop(guard);
            return Box::pin(async move { Ok(refusal) });
        }
        // Checked after counting, so that a drain that starts now either sees this call or refuses it.
        if a.draining.load(Ordering::Acquire) {
            let refusal = a.refusal().into_http();
            a.reject(Rejection::Draining);
            drop(guard);
            return Box::pin(async move { Ok(refusal) });
        }
        let req = req.map(|b| b.budgeted(Arc::clone(a), held));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(guard);
            out.map(decode_errors_are_invalid_argument).inspect(|r| record(timing, r))
        })
    }
}

/// Counts a finished call: its method, its gRPC status (a trailers-only answer carries it in the headers; an
/// answer with a body carries it in the trailers, which are not seen here: counted as OK) and its latency.
fn record<B>(timing: Option<(Arc<crate::metrics::NodeMetrics>, String, std::time::Instant)>, resp: &http::Response<B>) {
    let Some((m, method, start)) = timing else { return };
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    m.record_call(&method, code, start.elapsed());
}

/// tonic answers a request body that does not decode as protobuf with INTERNAL; it is the caller's bad input,
/// so it becomes INVALID_ARGUMENT (the message, naming the field, is kept).
fn decode_errors_are_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let decode_failure = resp.headers().get("grpc-status").is_some_and(|v| v == "13")
        && resp.headers().get("grpc-message").is_some_and(|m| m.as_bytes().starts_with(b"failed%20to%20decode"));
    if decode_failure {
        resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, Service};

    /// Answers "done" once the gate opens.
    #[derive(Clone)]
    struct Echo(tokio::sync::watch::Receiver<bool>);

    impl Service<http::Request<()>> for Echo {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut gate = self.0.clone();
            Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(http::Response::new("done".to_string()))
            })
        }
    }

    fn req(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    /// Reads the whole request body; answers "read N" or "error CODE".
    #[derive(Clone)]
    struct Drain;

    impl Service<http::Request<tonic::body::Body>> for Drain {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let mut body = req.into_body();
                let mut n = 0;
                loop {
                    match std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await {
                        None => return Ok(http::Response::new(format!("read {n}"))),
                        Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len()),
                        Some(Err(s)) => return Ok(http::Response::new(format!("error {}", s.code() as i32))),
                    }
                }
            })
        }
    }

    #[tokio::test]
    async fn request_bytes_in_flight_are_bounded() {
        let admission = Arc::new(Admission { node_id: 1, max_body_bytes: 100, ..Default::default() });
        let mut svc = AdmissionLayer(Arc::clone(&admission)).layer(Drain);
        let call = |n: usize| {
            http::Request::builder().uri("/shoal.v1.Points/Upsert").body(tonic::body::Body::new("x".repeat(n))).unwrap()
        };
        assert_eq!(svc.call(call(60)).await.unwrap().into_body(), "read 60");
        assert_eq!(admission.body_bytes.load(Ordering::Acquire), 0, "given back when the call is answered");
        assert_eq!(svc.call(call(150)).await.unwrap().into_body(), "error 8", "RESOURCE_EXHAUSTED");
        assert_eq!(admission.body_bytes.load(Ordering::Acquire), 0);
        assert_eq!(svc.call(call(100)).await.unwrap().into_body(), "read 100");
    }

    #[tokio::test]
    async fn counts_public_calls_and_refuses_new_ones_while_draining() {
        let admission = Admission::new(7);
        let (gate, gate_rx) = tokio::sync::watch::channel(false);
        let mut svc = AdmissionLayer(Arc::clone(&admission)).layer(Echo(gate_rx));
        let public = tokio::spawn(svc.call(req("/shoal.v1.Points/Upsert")));
        let internal = tokio::spawn(svc.call(req("/shoal.internal.NodeInternal/ShardWrite")));
        tokio::task::yield_now().await;
        assert_eq!(admission.in_flight(), 1, "only the public call counts");
        admission.begin_drain();
        let refused = svc.call(req("/shoal.v1.Points/Search")).await.unwrap();
        assert_eq!(refused.headers().get("grpc-status").unwrap(), "14", "UNAVAILABLE");
        assert_eq!(refused.headers().get(shoal_api::wire_error::ERROR_KIND_KEY).unwrap(), "node_unavailable");
        let msg = refused.headers().get("grpc-message").unwrap().to_str().unwrap().replace("%20", " ");
        assert!(msg.contains("node 7 is shutting down"), "{msg}");
        assert_eq!(admission.wait_idle(Duration::from_millis(20)).await, 1, "the admitted call is still running");
        let waiter = {
            let a = Arc::clone(&admission);
            tokio::spawn(async move { a.wait_idle(Duration::from_secs(10)).await })
        };
        gate.send(true).unwrap();
        assert_eq!(public.await.unwrap().unwrap().into_body(), "done");
        assert_eq!(internal.await.unwrap().unwrap().into_body(), "done");
        assert_eq!(waiter.await.unwrap(), 0);
        // peer traffic still passes while draining
        let answer = svc.call(req("/shoal.internal.RaftTransport/Vote")).await.unwrap();
        assert_eq!(answer.into_body(), "done");
    }
}
