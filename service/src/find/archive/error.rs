//! Why a find failed ([`FindError`]), and the HTTP answer for each: find's errors become
//! [`ApiError`]s here, not in [`crate::error`].

use auditlog_common::StoreError;

use crate::error::ApiError;

/// Why a find failed. Each maps to its HTTP answer below.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// MongoDB did not answer the events query (or ran past `maxTimeMS`).
    #[error("{0}")]
    Mongo(#[source] mongodb::error::Error),
    /// MongoDB did not answer the archive state's queries.
    #[error("{0}")]
    State(#[source] StoreError),
    /// A window record that does not read as the archiver writes them.
    #[error("archive window record {start}: {why}")]
    BadRecord { start: String, why: String },
    /// The archive's store did not answer, or a recorded file is not there.
    #[error("the archive cannot be read ({path}): {why}")]
    ArchiveUnavailable { path: String, why: String },
    /// A recorded file that does not read as Parquet.
    #[error("archive file {path}: {source}")]
    ArchiveFile {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A recorded file that reads, but not as an auditlog archive file.
    #[error("archive file {path}: {why}")]
    Corrupt { path: String, why: String },
    /// Events came out of the tiers out of page order or twice.
    #[error("event {id} is out of order ({why}); the page was not answered")]
    Unordered { id: String, why: String },
    /// The whole find ran past `AUDIT_FIND_TIMEOUT_MS`.
    #[error("the find exceeded its time limit of {ms} ms")]
    Timeout { ms: u64 },
    /// A task reading the archive panicked, or was cancelled by the runtime's shutdown.
    #[error("{0}")]
    Internal(String),
}

impl FindError {
    pub(super) fn state(
        command: &'static str,
    ) -> impl Fn(mongodb::error::Error) -> FindError + Copy {
        move |source| FindError::State(StoreError::Command { command, source })
    }
}

/// A find's failure: MongoDB's and the archive store's outages are 503 (`maxTimeMS` and the
/// find's own time limit `query_timeout`), an archive that does not read as written a bug-class
/// 500 (logged in full).
impl From<FindError> for ApiError {
    fn from(e: FindError) -> Self {
        match e {
            FindError::Mongo(source) => ApiError::Unavailable(source.to_string()),
            FindError::State(e) => ApiError::Unavailable(e.to_string()),
            FindError::Timeout { ms } => ApiError::QueryTimeout { ms },
            FindError::ArchiveUnavailable { .. } => ApiError::ArchiveUnavailable(e.to_string()),
            FindError::BadRecord { .. }
            | FindError::ArchiveFile { .. }
            | FindError::Corrupt { .. }
            | FindError::Unordered { .. }
            | FindError::Internal(_) => ApiError::Internal(e.to_string()),
        }
    }
}
