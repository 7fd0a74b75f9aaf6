//! `shoal._native`: the pyo3 extension. Translation only: extract arguments, release the GIL, call the
//! Rust client (or the node entry point), convert the answer. The public API lives in python/shoal/.

mod error;
mod runtime;
mod scroll;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use shoal_client::client::{Batching, read_level, write_level};
use shoal_client::v1;
use shoal_core::{IdType, PointId, validate};

use crate::error::{internal, to_py};
use crate::runtime::block_on;

/// Default per-call timeout when Python passes None.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn timeout_of(t: Option<f64>) -> PyResult<Duration> {
    match t {
        None => Ok(DEFAULT_TIMEOUT),
        Some(s) => {
            validate::check_timeout(s).map_err(|e| to_py(shoal_client::Error::from(e)))?;
            Ok(Duration::from_secs_f64(s))
        }
    }
}

fn id_type_of(s: &str) -> PyResult<IdType> {
    IdType::parse(s).map_err(|e| to_py(e.into()))
}

/// Extracts ids: a 1-D int64 array for "int" collections, a sequence of str for "str" ones.
fn extract_ids(ids: &Bound<'_, PyAny>, id_type: IdType) -> PyResult<v1::PointIds> {
    match id_type {
        IdType::Int => {
            let arr: PyReadonlyArray1<'_, i64> = ids.extract().map_err(|_| {
                to_py(shoal_client::Error::InvalidArgument(
                    "ids must be integers for a collection with id_type \"int\"".into(),
                ))
            })?;
            let view = arr.as_array();
            let mut ints = Vec::with_capacity(view.len());
            for (i, &v) in view.iter().enumerate() {
                ints.push(match validate::int_id(i, v).map_err(|e| to_py(e.into()))? {
                    PointId::Int(u) => u,
                    PointId::Str(_) => unreachable!("int_id returns Int"),
                });
            }
            Ok(v1::PointIds { ints, strs: vec![] })
        }
        IdType::Str => {
            let strs: Vec<String> = ids.extract().map_err(|_| {
                to_py(shoal_client::Error::InvalidArgument(
                    "ids must be strings for a collection with id_type \"str\"".into(),
                ))
            })?;
            Ok(v1::PointIds { ints: vec![], strs })
        }
    }
}

fn ids_to_domain(ids: &v1::PointIds) -> Vec<PointId> {
    if ids.strs.is_empty() {
        ids.ints.iter().map(|&v| PointId::Int(v)).collect()
    } else {
        ids.strs.iter().cloned().map(PointId::Str).collect()
    }
}

fn info_dict<'py>(py: Python<'py>, info: &v1::CollectionInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("dim", info.dim)?;
    d.set_item("metric", &info.metric)?;
    d.set_item("id_type", &info.id_type)?;
    d.set_item("shards", info.shards)?;
    d.set_item("replication_factor", info.replication_factor)?;
    d.set_item("on_disk", info.on_disk)?;
    match info.index.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(v1::index_params::Kind::Hnsw(h)) => {
            d.set_item("index", "hnsw")?;
            d.set_item("m", h.m)?;
            d.set_item("ef_construction", h.ef_construction)?;
            d.set_item("quantization", if h.quantization.is_empty() { "none" } else { h.quantization.as_str() })?;
        }
        _ => {
            d.set_item("index", "flat")?;
            d.set_item("m", py.None())?;
            d.set_item("ef_construction", py.None())?;
            d.set_item("quantization", "none")?;
        }
    }
    let pix = PyDict::new(py);
    for p in &info.payload_indexes {
        pix.set_item(&p.field, &p.kind)?;
    }
    d.set_item("payload_indexes", pix)?;
    Ok(d)
}

/// A connection to a Shoal cluster.
#[pyclass(module = "shoal._native", frozen)]
struct Client {
    /// The Rust client; shared with in-flight calls.
    inner: Arc<shoal_client::Client>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (addresses, connect_timeout = 10.0, api_key = None, tls_ca_pem = None))]
    fn new(
        py: Python<'_>,
        addresses: Vec<String>,
        connect_timeout: f64,
        api_key: Option<String>,
        tls_ca_pem: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let t = timeout_of(Some(connect_timeout))?;
        let opts = shoal_client::client::ConnectOptions { api_key, tls_ca_pem };
        let inner = block_on(py, async move { shoal_client::Client::connect_with(addresses, t, opts).await })?;
        Ok(Client { inner: Arc::new(inner) })
    }

    #[pyo3(signature = (role, name = String::new(), timeout = None), text_signature = "($self, role, name='', timeout=None)")]
    fn create_api_key(
        &self,
        py: Python<'_>,
        role: String,
        name: String,
        timeout: Option<f64>,
    ) -> PyResult<(String, String)> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.create_api_key(&role, &name, t).await })
    }

    #[pyo3(signature = (name, timeout = None))]
    fn revoke_api_key(&self, py: Python<'_>, name: String, timeout: Option<f64>) -> PyResult<bool> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.revoke_api_key(&name, t).await })
    }

    #[pyo3(signature = (timeout = None))]
    fn list_api_keys(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<(String, String)>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.list_api_keys(t).await })
    }

    fn addresses(&self) -> Vec<String> {
        self.inner.addresses().to_vec()
    }

    #[pyo3(signature = (timeout = None))]
    fn cluster_info<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let info = block_on(py, async move { c.cluster_info(t).await })?;
        let d = PyDict::new(py);
        d.set_item("node_id", info.node_id)?;
        let nodes = node_list(py, &info.nodes)?;
        d.set_item("nodes", nodes)?;
        d.set_item("meta_leader", (info.meta_leader != 0).then_some(info.meta_leader))?;
        Ok(d)
    }

    /// The cluster's health as a node assesses it: {status, reasons, nodes}.
    #[pyo3(signature = (timeout = None))]
    fn health<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let h = block_on(py, async move { c.health(t).await })?;
        let d = PyDict::new(py);
        d.set_item("status", &h.status)?;
        d.set_item("reasons", &h.reasons)?;
        d.set_item("nodes", node_list(py, &h.nodes)?)?;
        Ok(d)
    }

    #[pyo3(signature = (collection, timeout = None))]
    fn shards<'py>(&self, py: Python<'py>, collection: String, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let resp = block_on(py, async move { c.shards(&collection, t).await })?;
        let out = PyList::empty(py);
        for s in &resp.shards {
            let sd = PyDict::new(py);
            sd.set_item("id", s.id)?;
            sd.set_item("leader", (s.leader != 0).then_some(s.leader))?;
            sd.set_item("count", s.count)?;
            let replicas = PyList::empty(py);
            for r in &s.replicas {
                let rd = PyDict::new(py);
                rd.set_item("node", r.node)?;
                rd.set_item("role", &r.role)?;
                rd.set_item("state", &r.state)?;
                rd.set_item("applied_index", r.applied_index)?;
                rd.set_item("lag", r.lag)?;
                rd.set_item("count", r.count)?;
                rd.set_item("unindexed", r.unindexed)?;
                rd.set_item("digest", r.digest)?;
                rd.set_item("transfer_bytes", r.transfer_bytes)?;
                rd.set_item("transfer_total_bytes", r.transfer_total_bytes)?;
                rd.set_item("damage", &r.damage)?;
                rd.set_item("repair", &r.repair)?;
                replicas.append(rd)?;
            }
            sd.set_item("replicas", replicas)?;
            out.append(sd)?;
        }
        Ok(out)
    }

    #[pyo3(signature = (blocked, timeout = None))]
    fn set_faults(&self, py: Python<'_>, blocked: Vec<u64>, timeout: Option<f64>) -> PyResult<Vec<u64>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.set_faults(blocked, t).await })
    }

    #[pyo3(signature = (collection, shard, timeout = None))]
    fn diverge_replica(
        &self,
        py: Python<'_>,
        collection: String,
        shard: u32,
        timeout: Option<f64>,
    ) -> PyResult<String> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.diverge_replica(&collection, shard, t).await })
    }

    #[pyo3(signature = (offset_ms, timeout = None))]
    fn skew_clock(&self, py: Python<'_>, offset_ms: i64, timeout: Option<f64>) -> PyResult<i64> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.skew_clock(offset_ms, t).await })
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (name, dim, metric, id_type, shards, replication_factor, index, m, ef_construction, timeout = None,
                        quantization = String::new(), on_disk = false),
           text_signature = "($self, name, dim, metric, id_type, shards, replication_factor, index, m, ef_construction, \
                             timeout=None, quantization='', on_disk=False)")]
    fn create_collection<'py>(
        &self,
        py: Python<'py>,
        name: String,
        dim: i64,
        metric: String,
        id_type: String,
        shards: u32,
        replication_factor: u32,
        index: &str,
        m: u32,
        ef_construction: u32,
        timeout: Option<f64>,
        quantization: String,
        on_disk: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = timeout_of(timeout)?;
        if dim < 1 || dim > shoal_core::point::MAX_DIM as i64 {
            return Err(to_py(shoal_client::Error::invalid(format!(
                "dim must be in 1..={}, got {dim}",
                shoal_core::point::MAX_DIM
            ))));
        }
        check_metric(&metric)?;
        id_type_of(&id_type)?;
        let kind = match index {
            "flat" => v1::index_params::Kind::Flat(true),
            "hnsw" => v1::index_params::Kind::Hnsw(v1::HnswParams { m, ef_construction, quantization }),
            other => {
                return Err(to_py(shoal_client::Error::invalid(format!(
                    "unknown index {other:?}: expected \"flat\" or \"hnsw\""
                ))));
            }
        };
        let req = v1::CreateCollectionRequest {
            name,
            dim: dim as u32,
            metric,
            id_type,
            shards,
            replication_factor,
            index: Some(v1::IndexParams { kind: Some(kind) }),
            on_disk,
        };
        let c = self.inner.clone();
        let info = block_on(py, async move { c.create_collection(req, t).await })?;
        info_dict(py, &info)
    }

    #[pyo3(signature = (name, timeout = None))]
    fn get_collection<'py>(&self, py: Python<'py>, name: String, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let info = block_on(py, async move { c.get_collection(&name, t).await })?;
        info_dict(py, &info)
    }

    #[pyo3(signature = (timeout = None))]
    fn list_collections<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let infos = block_on(py, async move { c.list_collections(t).await })?;
        let out = PyList::empty(py);
        for i in &infos {
            out.append(info_dict(py, i)?)?;
        }
        Ok(out)
    }

    #[pyo3(signature = (collection, field, kind = None, timeout = None))]
    fn set_payload_index<'py>(
        &self,
        py: Python<'py>,
        collection: String,
        field: String,
        kind: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let info = block_on(py, async move { c.set_payload_index(&collection, &field, kind.as_deref(), t).await })?;
        info_dict(py, &info)
    }

    #[pyo3(signature = (name, timeout = None))]
    fn drop_collection(&self, py: Python<'_>, name: String, timeout: Option<f64>) -> PyResult<bool> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.drop_collection(&name, t).await })
    }

    #[pyo3(signature = (node_id, drain = true, timeout = None))]
    fn remove_node(&self, py: Python<'_>, node_id: u64, drain: bool, timeout: Option<f64>) -> PyResult<u32> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.remove_node(node_id, drain, t).await })
    }

    #[pyo3(signature = (collection, timeout = None))]
    fn rebalance<'py>(
        &self,
        py: Python<'py>,
        collection: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        let moves = block_on(py, async move { c.rebalance(&collection, t).await })?;
        let out = PyList::empty(py);
        for m in moves {
            let d = PyDict::new(py);
            d.set_item("collection", m.collection)?;
            d.set_item("shard", m.shard)?;
            d.set_item("from", (m.from != 0).then_some(m.from))?;
            d.set_item("to", m.to)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Writes a whole batch: the client splits it into requests of at most `batch_size` points (and below the
    /// gRPC message limit), each bounded by `timeout`, and calls `on_request(points, written)` after each one.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (collection, id_type, ids, vectors, payloads, consistency, timeout = None, batch_size = None,
                        on_request = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        collection: String,
        id_type: &str,
        ids: &Bound<'_, PyAny>,
        vectors: PyReadonlyArray2<'_, f32>,
        payloads: Option<Vec<String>>,
        consistency: &str,
        timeout: Option<f64>,
        batch_size: Option<usize>,
        on_request: Option<Py<PyAny>>,
    ) -> PyResult<u64> {
        let t = timeout_of(timeout)?;
        let level = write_level(consistency).map_err(to_py)?;
        let ids = extract_ids(ids, id_type_of(id_type)?)?;
        let dim = vectors.shape()[1];
        // Borrowed, not copied, when contiguous: the call below ends before `vectors` is released.
        let copied: Vec<f32>;
        let data: &[f32] = match vectors.as_slice() {
            Ok(s) => s,
            Err(_) => {
                copied = vectors.as_array().iter().copied().collect();
                &copied
            }
        };
        let payloads = payloads.unwrap_or_default();
        // The callback's own exception, re-raised instead of the Cancelled that stopping the upsert gives.
        let raised: Mutex<Option<PyErr>> = Mutex::new(None);
        let mut report = |points: usize, written: u64| {
            let Some(f) = on_request.as_ref() else { return true };
            Python::attach(|py| match f.call1(py, (points, written)) {
                Ok(_) => true,
                Err(e) => {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    false
                }
            })
        };
        let batching = Batching { max_points: batch_size, timeout_per_request: true, progress: Some(&mut report) };
        let c = &self.inner;
        let out = block_on(py, c.upsert_with(&collection, ids, data, dim, &payloads, level, t, batching));
        match raised.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => out,
        }
    }

    #[pyo3(signature = (collection, id_type, ids, consistency, timeout = None))]
    fn delete(
        &self,
        py: Python<'_>,
        collection: String,
        id_type: &str,
        ids: &Bound<'_, PyAny>,
        consistency: &str,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let t = timeout_of(timeout)?;
        let level = write_level(consistency).map_err(to_py)?;
        let ids = extract_ids(ids, id_type_of(id_type)?)?;
        let c = self.inner.clone();
        block_on(py, async move { c.delete(&collection, ids, level, t).await })
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (collection, id_type, ids, patch, consistency, timeout = None))]
    fn update_payload(
        &self,
        py: Python<'_>,
        collection: String,
        id_type: &str,
        ids: &Bound<'_, PyAny>,
        patch: String,
        consistency: &str,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let t = timeout_of(timeout)?;
        let level = write_level(consistency).map_err(to_py)?;
        let ids = extract_ids(ids, id_type_of(id_type)?)?;
        let c = self.inner.clone();
        block_on(py, async move { c.update_payload(&collection, ids, patch, level, t).await })
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pyo3(signature = (collection, id_type, ids, with_vectors, consistency, timeout = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        collection: String,
        id_type: &str,
        ids: &Bound<'py, PyAny>,
        with_vectors: bool,
        consistency: &str,
        timeout: Option<f64>,
    ) -> PyResult<(Vec<bool>, Option<Bound<'py, PyAny>>, Vec<String>)> {
        let t = timeout_of(timeout)?;
        let level = read_level(consistency).map_err(to_py)?;
        let ids = extract_ids(ids, id_type_of(id_type)?)?;
        let c = self.inner.clone();
        let resp = block_on(py, async move { c.get(&collection, ids, with_vectors, level, t).await })?;
        let dim = resp.dim as usize;
        let found_n = resp.found.iter().filter(|f| **f).count();
        let vectors = if with_vectors {
            let arr = Array2::from_shape_vec((found_n, dim), resp.vectors)
                .map_err(|e| to_py(internal(format!("bad vectors in reply: {e}"), e)))?;
            Some(arr.into_pyarray(py).into_any())
        } else {
            None
        };
        Ok((resp.found, vectors, resp.payloads))
    }

    #[pyo3(signature = (collection, consistency, timeout = None))]
    fn count(&self, py: Python<'_>, collection: String, consistency: &str, timeout: Option<f64>) -> PyResult<u64> {
        let t = timeout_of(timeout)?;
        let level = read_level(consistency).map_err(to_py)?;
        let c = self.inner.clone();
        block_on(py, async move { c.count(&collection, level, t).await })
    }

    /// A blocking search: (ids, distances, payload texts or None, failed shards, shards searched).
    fn search<'py>(&self, py: Python<'py>, request: SearchArgs<'py>) -> PyResult<SearchArrays<'py>> {
        let (req, shape, t) = request.build()?;
        let c = self.inner.clone();
        let resp = block_on(py, async move { c.search(req, t).await })?;
        shape.arrays(py, &resp)
    }

    /// Starts a search in the background and returns its handle (Collection.query).
    fn search_start(&self, request: SearchArgs<'_>) -> PyResult<PendingSearch> {
        let (req, shape, t) = request.build()?;
        let c = self.inner.clone();
        let task = runtime::spawn(async move { c.search(req, t).await });
        Ok(PendingSearch { shape, abort: task.abort_handle(), task: Mutex::new(Some(task)), outcome: Mutex::new(None) })
    }

    /// An awaitable search (asyncio): resolves to a SearchReply; cancelling the awaitable cancels the search.
    fn search_async<'py>(&self, py: Python<'py>, request: SearchArgs<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (req, shape, t) = request.build()?;
        let c = self.inner.clone();
        runtime::init_async();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let resp = c.search(req, t).await.map_err(to_py)?;
            Ok(SearchReply { shape, resp })
        })
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (collection, id_type, batch_size, filter, with_vectors, consistency, resume_token = None, timeout = None))]
    fn scroll(
        &self,
        py: Python<'_>,
        collection: String,
        id_type: &str,
        batch_size: u32,
        filter: Option<String>,
        with_vectors: bool,
        consistency: &str,
        resume_token: Option<Vec<u8>>,
        timeout: Option<f64>,
    ) -> PyResult<scroll::ScrollIter> {
        let (t, id_type) = (timeout_of(timeout)?, id_type_of(id_type)?);
        scroll::open(
            py,
            &self.inner,
            collection,
            id_type,
            batch_size,
            filter,
            with_vectors,
            consistency,
            resume_token,
            t,
        )
    }

    #[pyo3(signature = (collection, timeout = None))]
    fn index_status(&self, py: Python<'_>, collection: String, timeout: Option<f64>) -> PyResult<(u64, u64)> {
        let t = timeout_of(timeout)?;
        let c = self.inner.clone();
        block_on(py, async move { c.index_status(&collection, t).await })
    }

    fn __repr__(&self) -> String {
        format!("Client({:?})", self.inner.addresses())
    }
}

/// Nodes as Python dicts (`Cluster.nodes()`, `Health.nodes`).
fn node_list<'py>(py: Python<'py>, infos: &[v1::NodeInfo]) -> PyResult<Bound<'py, PyList>> {
    let nodes = PyList::empty(py);
    for n in infos {
        let nd = PyDict::new(py);
        nd.set_item("id", n.id)?;
        nd.set_item("address", &n.address)?;
        nd.set_item("status", &n.status)?;
        nd.set_item("role", &n.role)?;
        nd.set_item("zone", &n.zone)?;
        nd.set_item("version", &n.version)?;
        nd.set_item("metrics_address", (!n.metrics_address.is_empty()).then_some(&n.metrics_address))?;
        if n.status != "down" && n.cpu_cores > 0 {
            let r = PyDict::new(py);
            r.set_item("cpu_seconds", n.cpu_seconds)?;
            r.set_item("cpu_cores", n.cpu_cores)?;
            r.set_item("memory_bytes", n.memory_bytes)?;
            r.set_item("disk_bytes", n.disk_bytes)?;
            r.set_item("disk_free_bytes", n.disk_free_bytes)?;
            nd.set_item("resources", r)?;
        }
        if let Some(st) = &n.stats {
            let sd = PyDict::new(py);
            sd.set_item("searches", st.searches)?;
            sd.set_item("reads", st.reads)?;
            sd.set_item("writes", st.writes)?;
            sd.set_item("in_flight", st.in_flight)?;
            sd.set_item("cancelled", st.cancelled)?;
            sd.set_item("hedged", st.hedged)?;
            nd.set_item("stats", sd)?;
        }
        nodes.append(nd)?;
    }
    Ok(nodes)
}

/// A search's arguments as Python passes them to `search`, `search_start` and `search_async`: one dict
/// (`Collection._search_call` builds it; the keys are the field names).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct SearchArgs<'py> {
    /// The collection's name.
    collection: String,
    /// The collection's id type ("int" | "str"): how the answer's ids are returned.
    id_type: String,
    /// The queries, (nq, dim) float32.
    queries: PyReadonlyArray2<'py, f32>,
    /// Hits per query, checked against 1..=MAX_K.
    k: i64,
    /// A filter as JSON text; None = no filter.
    #[pyo3(default)]
    filter: Option<String>,
    /// HNSW beam width; None = the server's choice.
    #[pyo3(default)]
    ef: Option<i64>,
    /// Whether hits carry their payload texts.
    #[pyo3(default)]
    with_payload: bool,
    /// A read consistency name (`READ_LEVELS`).
    consistency: String,
    /// Seconds for the whole call; None = the default.
    #[pyo3(default)]
    timeout: Option<f64>,
    /// Whether shards that fail leave a partial answer instead of an error.
    #[pyo3(default)]
    allow_partial: bool,
    /// A load-balancing name (`LOAD_BALANCING`); None = the node's default.
    #[pyo3(default)]
    load_balancing: Option<String>,
    /// Brute force instead of the graph.
    #[pyo3(default)]
    exact: bool,
    /// Whether quantized candidates are rescored with float vectors; None = the default (yes).
    #[pyo3(default)]
    rescore: Option<bool>,
    /// Quantized beam factor; None = the default.
    #[pyo3(default)]
    oversampling: Option<f32>,
}

/// What Python gets back from a search: ids, distances, payload texts (or None), failed shards, shards.
type SearchArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Vec<Vec<String>>>, Vec<u32>, u32);

impl SearchArgs<'_> {
    /// Checks the arguments and builds the client's request, the shape of its answer and its timeout.
    fn build(self) -> PyResult<(v1::SearchRequest, SearchShape, Duration)> {
        let t = timeout_of(self.timeout)?;
        let level = read_level(&self.consistency).map_err(to_py)?;
        let lb = shoal_client::client::load_balancing(self.load_balancing.as_deref().unwrap_or("")).map_err(to_py)?;
        let id_type = id_type_of(&self.id_type)?;
        let k = self.k;
        validate::check_k(k).map_err(|e| to_py(e.into()))?;
        if let Some(ef) = self.ef {
            validate::check_ef(ef).map_err(|e| to_py(e.into()))?;
        }
        // 0 is the wire's "default"; a caller's explicit factor (0 included) must be in range.
        if let Some(f) = self.oversampling {
            validate::check_oversampling(f).map_err(|e| to_py(e.into()))?;
        }
        let queries = &self.queries;
        let nq = queries.shape()[0];
        let data: Vec<f32> = match queries.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => queries.as_array().iter().copied().collect(),
        };
        let with_payload = self.with_payload;
        let req = v1::SearchRequest {
            collection: self.collection,
            queries: data,
            k: k as u32,
            filter: self.filter.unwrap_or_default(),
            ef: self.ef.unwrap_or(0) as u32,
            with_payload,
            consistency: level as i32,
            session: Vec::new(),
            allow_partial: self.allow_partial,
            load_balancing: lb as i32,
            exact: self.exact,
            rescore: self.rescore,
            oversampling: self.oversampling.unwrap_or(0.0),
        };
        Ok((req, SearchShape { nq, k: k as usize, id_type, with_payload }, t))
    }
}

/// The shape of a search's answer: what turning a SearchResponse into arrays needs.
#[derive(Clone, Copy, Debug)]
struct SearchShape {
    /// Number of queries (rows).
    nq: usize,
    /// Hits per query (columns).
    k: usize,
    /// The collection's id type.
    id_type: IdType,
    /// Whether payload texts are returned.
    with_payload: bool,
}

impl SearchShape {
    /// Pads the hits of `resp` into (nq, k) arrays: ids (-1 / None pads) and distances (inf pads).
    fn arrays<'py>(&self, py: Python<'py>, resp: &v1::SearchResponse) -> PyResult<SearchArrays<'py>> {
        let (nq, k) = (self.nq, self.k);
        let mut dist = vec![f32::INFINITY; nq * k];
        let empty = v1::PointIds::default();
        let ids = resp.ids.as_ref().unwrap_or(&empty);
        let mut payloads: Option<Vec<Vec<String>>> = self.with_payload.then(|| Vec::with_capacity(nq));
        // One pass over the per-query hit counts: `src[cell]` is the hit index that fills padded cell
        // (q, j), or None for padding. Ids are then built from it for either id type.
        let mut src: Vec<Option<usize>> = vec![None; nq * k];
        let mut pos = 0usize;
        for (q, &cnt) in resp.counts.iter().enumerate().take(nq) {
            let cnt = (cnt as usize).min(k);
            for j in 0..cnt {
                src[q * k + j] = Some(pos + j);
                dist[q * k + j] = resp.distances.get(pos + j).copied().unwrap_or(f32::INFINITY);
            }
            if let Some(p) = payloads.as_mut() {
                p.push(resp.payloads.get(pos..pos + cnt).unwrap_or_default().to_vec());
            }
            pos += cnt;
        }
        let ids_obj = match self.id_type {
            IdType::Int => {
                let out: Vec<i64> =
                    src.iter().map(|i| i.and_then(|i| ids.ints.get(i)).map_or(-1, |&v| v as i64)).collect();
                Array2::from_shape_vec((nq, k), out)
                    .map_err(|e| to_py(internal(e.to_string(), e)))?
                    .into_pyarray(py)
                    .into_any()
            }
            IdType::Str => {
                let objs = src
                    .iter()
                    .map(|i| match i.and_then(|i| ids.strs.get(i)) {
                        Some(s) => Ok(s.into_pyobject(py)?.into_any().unbind()),
                        None => Ok(py.None()),
                    })
                    .collect::<PyResult<Vec<Py<PyAny>>>>()?;
                PyArray1::from_vec(py, objs).reshape([nq, k])?.into_any()
            }
        };
        let dist = Array2::from_shape_vec((nq, k), dist)
            .map_err(|e| to_py(internal(e.to_string(), e)))?
            .into_pyarray(py)
            .into_any();
        Ok((ids_obj, dist, payloads, resp.failed_shards.clone(), resp.shards))
    }
}

/// A finished search, converted to arrays on demand (the result of search_async).
#[pyclass(module = "shoal._native", frozen)]
struct SearchReply {
    /// How to shape the answer.
    shape: SearchShape,
    /// The node's answer.
    resp: v1::SearchResponse,
}

#[pymethods]
impl SearchReply {
    /// (ids, distances, payload texts or None, failed shards, shards searched).
    fn arrays<'py>(&self, py: Python<'py>) -> PyResult<SearchArrays<'py>> {
        self.shape.arrays(py, &self.resp)
    }
}

/// A search running in the background (Collection.query): wait for it, poll it or cancel it.
#[pyclass(module = "shoal._native", frozen)]
struct PendingSearch {
    /// How to shape the answer.
    shape: SearchShape,
    /// Stops the task (dropping the gRPC call, which cancels the work on the nodes).
    abort: tokio::task::AbortHandle,
    /// The task; taken by the thread waiting on it, `None` once joined.
    task: Mutex<Option<tokio::task::JoinHandle<shoal_client::Result<v1::SearchResponse>>>>,
    /// The outcome once known (an error message kind for failures).
    outcome: Mutex<Option<Result<Arc<v1::SearchResponse>, shoal_client::Error>>>,
}

#[pymethods]
impl PendingSearch {
    /// Waits for the answer (at most `timeout` seconds; None = as long as it takes) with the GIL released.
    /// Ctrl-C cancels the search. Raises the search's own error, Cancelled after cancel(), or Timeout when
    /// `timeout` passes first (the search keeps running).
    #[pyo3(signature = (timeout = None))]
    fn result<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<SearchArrays<'py>> {
        let until = match timeout {
            None => None,
            Some(t) => Some(std::time::Instant::now() + timeout_of(Some(t))?),
        };
        loop {
            if let Some(out) = self.outcome.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                return match out {
                    Ok(resp) => self.shape.arrays(py, resp),
                    Err(e) => Err(to_py(e.clone())),
                };
            }
            let taken = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
            let step = match taken {
                // Another thread waits on the task: poll its outcome.
                None => {
                    py.detach(|| std::thread::sleep(Duration::from_millis(2)));
                    None
                }
                Some(task) => {
                    let wait = until.map_or(runtime::SIGNAL_POLL, |u| {
                        u.saturating_duration_since(std::time::Instant::now()).min(runtime::SIGNAL_POLL)
                    });
                    match runtime::join_for(py, task, wait) {
                        Ok(joined) => Some(joined),
                        Err(task) => {
                            *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                            None
                        }
                    }
                }
            };
            if let Some(joined) = step {
                *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(joined.map(Arc::new));
                continue;
            }
            if let Err(interrupt) = py.check_signals() {
                self.abort.abort();
                return Err(interrupt);
            }
            if until.is_some_and(|u| std::time::Instant::now() >= u) {
                return Err(to_py(shoal_client::Error::Timeout(
                    format!(
                        "the query did not finish within {:.3} s (it keeps running; cancel() stops it)",
                        timeout.unwrap_or_default()
                    )
                    .into(),
                )));
            }
        }
    }

    /// Stops the search: the gRPC call is dropped and the nodes stop its work. True when it was still running.
    fn cancel(&self) -> bool {
        let running = !self.done();
        self.abort.abort();
        running
    }

    /// Whether the search finished (answered, failed or cancelled).
    fn done(&self) -> bool {
        if self.outcome.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return true;
        }
        self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|t| t.is_finished())
    }
}

fn check_metric(metric: &str) -> PyResult<()> {
    shoal_core::Metric::parse(metric).map(|_| ()).map_err(|e| to_py(e.into()))
}

/// Validates a whole upsert batch and raises InvalidArgument naming the first offending item.
#[pyfunction]
#[pyo3(signature = (ids, vectors, payloads, dim, id_type))]
fn validate_upsert(
    py: Python<'_>,
    ids: &Bound<'_, PyAny>,
    vectors: PyReadonlyArray2<'_, f32>,
    payloads: Option<Vec<String>>,
    dim: usize,
    id_type: &str,
) -> PyResult<()> {
    let id_type = id_type_of(id_type)?;
    let ids = ids_to_domain(&extract_ids(ids, id_type)?);
    let shape = vectors.shape();
    let n = shape[0];
    let err = |m: String| to_py(shoal_client::Error::invalid(m));
    if shape[1] != dim {
        return Err(err(format!("vectors have dim {} but the collection has dim {dim}", shape[1])));
    }
    if n != ids.len() {
        return Err(err(format!("got {} ids but {} vectors", ids.len(), n)));
    }
    let data: Vec<f32>;
    let slice = match vectors.as_slice() {
        Ok(s) => s,
        Err(_) => {
            data = vectors.as_array().iter().copied().collect();
            &data
        }
    };
    py.detach(|| -> Result<(), shoal_core::Error> {
        validate::check_ids(&ids, id_type)?;
        validate::check_vectors(slice, dim, n)?;
        if let Some(p) = &payloads {
            if p.len() != n {
                return Err(shoal_core::Error::invalid(format!("got {n} ids but {} payloads", p.len())));
            }
            shoal_api_payloads(p)?;
        }
        Ok(())
    })
    .map_err(|e| to_py(e.into()))
}

fn shoal_api_payloads(p: &[String]) -> Result<(), shoal_core::Error> {
    for (i, t) in p.iter().enumerate() {
        if t.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| shoal_core::Error::invalid(format!("payloads[{i}] is not valid JSON: {e}")))?;
        validate::check_payload(i, &v)?;
    }
    Ok(())
}

/// Runs a node in this process until SIGTERM/SIGINT; returns the exit code.
#[pyfunction]
fn run_node(py: Python<'_>, args: Vec<String>) -> i32 {
    py.detach(move || shoal_node::main_with_args(args))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The limits and names Python pre-checks with (for NumPy-friendly errors before a call): taken from the
    // Rust definitions, so they are written once.
    let limits = pyo3::types::PyDict::new(m.py());
    limits.set_item("MAX_DIM", shoal_core::point::MAX_DIM)?;
    limits.set_item("MAX_K", shoal_core::validate::MAX_K)?;
    limits.set_item("MAX_INT_ID", i64::MAX)?;
    limits.set_item("METRICS", pyo3::types::PyTuple::new(m.py(), shoal_core::Metric::NAMES)?)?;
    limits.set_item("ID_TYPES", pyo3::types::PyTuple::new(m.py(), shoal_core::IdType::NAMES)?)?;
    limits.set_item("WRITE_LEVELS", pyo3::types::PyTuple::new(m.py(), shoal_client::client::WRITE_LEVELS)?)?;
    limits.set_item("READ_LEVELS", pyo3::types::PyTuple::new(m.py(), shoal_client::client::READ_LEVELS)?)?;
    limits.set_item("LOAD_BALANCING", pyo3::types::PyTuple::new(m.py(), shoal_client::client::LOAD_BALANCINGS)?)?;
    m.add("LIMITS", limits)?;
    m.add_class::<Client>()?;
    m.add_class::<SearchReply>()?;
    m.add_class::<PendingSearch>()?;
    m.add_class::<scroll::ScrollIter>()?;
    m.add_function(wrap_pyfunction!(validate_upsert, m)?)?;
    m.add_function(wrap_pyfunction!(run_node, m)?)?;
    Ok(())
}
