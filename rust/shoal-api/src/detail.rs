//! [`Detail`]: an error's message together with the lower error it came from, shared by the error types of
//! shoal-cluster and shoal-client so that their cause chains reach the error that started them.

use std::sync::Arc;

/// A lower error kept as a source: shared, so that errors stay `Clone`.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What an error says, and the lower error it came from: the text carried by the variants of shoal-client's
/// and shoal-cluster's `Error`. Dereferences to its message, so `Error::Timeout(m)` patterns read `m` as a
/// `str`; displays as its message; its `source()` is the lower error.
#[derive(Clone)]
pub struct Detail {
    /// The message for people; names what failed.
    message: String,
    /// The lower error (a node's status, a transport, I/O, storage or Raft error); `None` when the layer that
    /// built the error found the problem itself (a bad argument, its own deadline).
    source: Option<Source>,
}

impl Detail {
    /// A message with no lower error.
    pub fn new(message: impl Into<String>) -> Self {
        Detail { message: message.into(), source: None }
    }

    /// A message about `source`, which is kept as the error's `source()`.
    pub fn caused_by(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Detail { message: message.into(), source: Some(Arc::new(source)) }
    }

    /// A message about a lower error already shared (taken from another error).
    pub fn caused_by_shared(message: impl Into<String>, source: Source) -> Self {
        Detail { message: message.into(), source: Some(source) }
    }

    /// The same lower error under another message.
    pub fn reworded(&self, message: impl Into<String>) -> Self {
        Detail { message: message.into(), source: self.source.clone() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::ops::Deref for Detail {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::fmt::Debug for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            None => std::fmt::Debug::fmt(&self.message, f),
            Some(s) => write!(f, "{:?} (caused by {s})", self.message),
        }
    }
}

impl std::error::Error for Detail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<String> for Detail {
    fn from(message: String) -> Self {
        Detail::new(message)
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Self {
        Detail::new(message)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_detail_reads_as_its_message_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let d = Detail::caused_by("node 2 unreachable", io);
        assert_eq!(d.to_string(), "node 2 unreachable");
        assert!(d.contains("unreachable"));
        assert!(d.source().and_then(|s| s.downcast_ref::<std::io::Error>()).is_some());
        let shared = d.source.clone().expect("kept");
        let again = Detail::caused_by_shared("again", shared);
        assert!(again.source().is_some());
        assert!(Detail::from("plain").source().is_none());
    }
}
