//! The one map from client errors to Python exceptions (the classes of `shoal.errors`), keeping the
//! Rust error as `__cause__`-style context in the message.

use pyo3::prelude::*;
use pyo3::types::PyType;
use shoal_client::Error;

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

/// Converts a client error into the matching Python exception.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let msg = e.to_string();
        let class = py
            .import("shoal.errors")
            .and_then(|m| m.getattr(class_name(&e)))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(ty) => PyErr::from_type(ty, msg),
            Err(import_err) => {
                let err = pyo3::exceptions::PyRuntimeError::new_err(msg);
                err.set_cause(py, Some(import_err));
                err
            }
        }
    })
}
