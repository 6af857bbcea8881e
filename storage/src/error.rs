//! Storage errors. Callers match on the variant to answer the right protocol or HTTP error;
//! backends map their own failures to [`StorageError::Backend`] and undecodable values to
//! [`StorageError::Corrupt`].

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The record does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Record kind (`device`, `product`, ...).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A record with this identity (or unique key) exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// Record kind.
        kind: &'static str,
        /// The conflicting id or key.
        id: String,
    },
    /// A limit would be exceeded (pending commands per device, groups per device, ...).
    #[error("limit exceeded: at most {limit} {what}")]
    LimitExceeded {
        /// What is limited.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The change conflicts with other records (a product that still has devices, a gateway
    /// that still has sub-devices, a membership that does not exist, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's mutation refused the change; the boxed error is the caller's own.
    #[error(transparent)]
    Aborted(Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be decoded.
    #[error("corrupt value in {cf} at key {key}: {reason}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// The key, escaped for display.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// The engine failed (I/O error, closed database, ...).
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StorageError {
    /// Wraps a caller's error so that it can be recovered with [`StorageError::aborted`].
    pub fn abort(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Aborted(Box::new(e))
    }

    /// The caller's error of an aborted mutation, if it is of type `E`.
    pub fn aborted<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            StorageError::Aborted(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::NotFound { .. } => "not_found",
            StorageError::AlreadyExists { .. } => "already_exists",
            StorageError::LimitExceeded { .. } => "limit_exceeded",
            StorageError::Conflict(_) => "conflict",
            StorageError::Aborted(_) => "aborted",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::Backend(_) => "backend",
        }
    }
}
