//! The one map from client errors to Python exceptions (the classes of `shoal.errors`, defined there only):
//! the client error's chain of lower errors (`std::error::Error::source()`: the node's gRPC status, a
//! transport or I/O error) becomes the exception's `__cause__` chain.

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use shoal_client::{Detail, Error};

/// How many lower errors become `__cause__`s at most (a chain is short; this only bounds a cyclic one).
const MAX_CAUSES: usize = 16;

/// The `shoal.errors` class name of each error.
fn class_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "InvalidArgument",
        Error::CollectionNotFound(_) => "CollectionNotFound",
        Error::CollectionExists(_) => "CollectionExists",
        Error::Consistency(_) => "ConsistencyError",
        Error::Timeout(_) => "Timeout",
        Error::Cancelled(_) => "Cancelled",
        Error::ShardUnavailable(_) => "ShardUnavailable",
        Error::NodeUnavailable(_) => "NodeUnavailable",
        Error::Storage(_) => "StorageError",
        Error::Unauthenticated(_) => "Unauthenticated",
        Error::PermissionDenied(_) => "PermissionDenied",
        Error::Internal(_) => "ShoalError",
    }
}

/// An [`Error::Internal`] about `source` (a failure inside the binding, e.g. a malformed reply).
pub fn internal(message: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Internal(Detail::caused_by(message, source))
}

/// A `shoal.errors` class by name.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    py.import("shoal.errors")?.getattr(name)?.cast_into::<PyType>().map_err(PyErr::from)
}

/// The Python exception standing for one lower error: `OSError(errno, text)` for an I/O error (Python picks
/// the subclass, e.g. ConnectionRefusedError), `ShoalError(text)` for anything else (a gRPC status, a
/// transport error).
fn cause_of(py: Python<'_>, src: &(dyn std::error::Error + 'static)) -> PyErr {
    let text = src.to_string();
    if let Some(io) = src.downcast_ref::<std::io::Error>() {
        return match io.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, text)),
            None => PyOSError::new_err(text),
        };
    }
    match class(py, "ShoalError") {
        Ok(ty) => PyErr::from_type(ty, text),
        Err(_) => PyRuntimeError::new_err(text),
    }
}

/// Converts a client error into the matching Python exception, its lower errors chained as `__cause__`.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let msg = e.to_string();
        let err = match class(py, class_name(&e)) {
            Ok(ty) => PyErr::from_type(ty, msg),
            Err(import_err) => {
                let err = PyRuntimeError::new_err(msg);
                err.set_cause(py, Some(import_err));
                return err;
            }
        };
        let mut chain = Vec::new();
        let mut next = std::error::Error::source(&e);
        while let Some(src) = next {
            if chain.len() == MAX_CAUSES {
                break;
            }
            chain.push(cause_of(py, src));
            next = src.source();
        }
        // Innermost first: each exception takes the one below it as its cause.
        let mut below: Option<PyErr> = None;
        for cause in chain.into_iter().rev() {
            cause.set_cause(py, below.take());
            below = Some(cause);
        }
        err.set_cause(py, below);
        err
    })
}
