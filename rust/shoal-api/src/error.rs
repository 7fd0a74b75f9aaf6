//! Conversion errors: a proto message that does not describe a valid domain value.

/// Errors of shoal-api.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The message is well-formed protobuf but its content is invalid (named in the text).
    #[error(transparent)]
    Core(#[from] shoal_core::Error),
    /// The bytes are not a valid encoding of the expected message.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// The message being decoded.
        what: &'static str,
        /// The decoder's complaint.
        source: prost::DecodeError,
    },
    /// A command written by a newer format version.
    #[error("{what} has format version {found}, this build reads up to {supported}")]
    Format {
        /// The message being decoded.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}

/// Result alias of shoal-api.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid-argument error with the given message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Core(shoal_core::Error::invalid(msg))
    }
}
