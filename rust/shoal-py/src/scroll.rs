//! `Client.scroll` -> `ScrollIter`: the batches of a server stream, one `next_batch` call each (the GIL is
//! released while a batch is awaited, and Ctrl-C cancels the scroll).

use std::sync::Arc;
use std::time::Duration;

use numpy::IntoPyArray;
use numpy::ndarray::Array2;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_client::client::read_level;
use shoal_client::{ScrollStream, v1};
use shoal_core::IdType;

use crate::error::{internal, to_py};
use crate::runtime::block_on;

/// One batch for Python: (ids, vectors or None, payload texts, resume token).
type Batch<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>, Vec<String>, Bound<'py, PyBytes>);

/// The batches of a scroll, in order.
#[pyclass(module = "shoal._native")]
pub struct ScrollIter {
    /// The stream; `None` while a batch is awaited, after the end, or after an error / Ctrl-C.
    stream: Option<ScrollStream>,
    /// Set once the server ended the scroll.
    finished: bool,
    /// The collection's id type (how ids are returned).
    id_type: IdType,
}

/// Opens a scroll (what `Client.scroll` runs).
#[allow(clippy::too_many_arguments)]
pub fn open(
    py: Python<'_>,
    client: &Arc<shoal_client::Client>,
    collection: String,
    id_type: IdType,
    batch_size: u32,
    filter: Option<String>,
    with_vectors: bool,
    consistency: &str,
    resume_token: Option<Vec<u8>>,
    timeout: Duration,
) -> PyResult<ScrollIter> {
    let level = read_level(consistency).map_err(to_py)?;
    let req = v1::ScrollRequest {
        collection,
        batch_size,
        filter: filter.unwrap_or_default(),
        with_vectors,
        consistency: level as i32,
        session: Vec::new(),
        resume_token: resume_token.unwrap_or_default(),
    };
    let c = Arc::clone(client);
    let stream = block_on(py, async move { c.scroll(req, timeout).await })?;
    Ok(ScrollIter { stream: Some(stream), finished: false, id_type })
}

#[pymethods]
impl ScrollIter {
    /// The next batch as (ids, vectors (n, dim) float32 or None, payload JSON texts ("" = none), resume
    /// token), or None at the end of the scroll.
    fn next_batch<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Batch<'py>>> {
        if self.finished {
            return Ok(None);
        }
        let Some(mut s) = self.stream.take() else {
            return Err(to_py(shoal_client::Error::Cancelled(
                "this scroll was stopped by an earlier error or interrupt; resume it with the resume_token of \
                 its last batch"
                    .into(),
            )));
        };
        let (s, batch) = block_on(py, async move {
            let b = s.next().await?;
            Ok((s, b))
        })?;
        let Some(b) = batch else {
            self.finished = true;
            return Ok(None);
        };
        self.stream = Some(s);
        let ids = b.ids.unwrap_or_default();
        let n = ids.ints.len() + ids.strs.len();
        let ids_obj = match self.id_type {
            IdType::Int => ids.ints.iter().map(|&v| v as i64).collect::<Vec<i64>>().into_pyarray(py).into_any(),
            IdType::Str => ids.strs.into_pyobject(py)?.into_any(),
        };
        let vectors = if b.vectors.is_empty() && n > 0 {
            None
        } else {
            let arr = Array2::from_shape_vec((n, b.dim as usize), b.vectors)
                .map_err(|e| to_py(internal(format!("bad vectors in a scroll batch: {e}"), e)))?;
            Some(arr.into_pyarray(py).into_any())
        };
        Ok(Some((ids_obj, vectors, b.payloads, PyBytes::new(py, &b.resume_token))))
    }

    fn __repr__(&self) -> String {
        format!("ScrollIter(finished={})", self.finished)
    }
}
