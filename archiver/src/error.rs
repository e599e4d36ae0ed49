//! The archiver's typed errors and the one place they become process exit codes.
//!
//! Policy: library code returns [`ArchiveError`]; only `main.rs` uses `anyhow`. Exit codes are
//! part of the CLI contract (a Kubernetes CronJob or a script branches on them):
//!
//! | code | meaning                                                                   |
//! |------|---------------------------------------------------------------------------|
//! | 0    | success                                                                   |
//! | 1    | unexpected failure (storage, MongoDB, I/O), or the lease was lost mid-run; |
//! |      | `verify --public-key` found the archive tampered with (one line each)      |
//! | 2    | invalid settings or arguments                                             |
//! | 3    | one or more windows failed to archive (the others are archived)           |
//! | 4    | TTL guard: an unarchived event may expire before the next run archives it |
//! | 5    | another archiver holds the lease                                          |
//! | 6    | `verify` found a mismatch                                                 |

use auditlog_common::archive_store::ArchiveStoreError;
use auditlog_common::StoreError;

/// Everything that can go wrong while archiving.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid setting: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("MongoDB {operation} failed: {source}")]
    Mongo {
        operation: &'static str,
        #[source]
        source: mongodb::error::Error,
    },
    #[error("archive storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("event {id} cannot be archived: {reason}")]
    BadEvent { id: String, reason: String },
    #[error(
        "window {window}: {written} rows written and read back, but MongoDB holds {expected}; \
         the window was not recorded and will be archived again"
    )]
    CountMismatch {
        window: String,
        written: u64,
        expected: u64,
    },
    #[error(
        "{path}: read back {read_rows} rows / {read_bytes} bytes, wrote {rows} rows / {bytes} \
         bytes"
    )]
    ReadBack {
        path: String,
        read_rows: u64,
        read_bytes: u64,
        rows: u64,
        bytes: u64,
    },
    /// The count a pass's rows are compared with never answered (its task ended abnormally).
    #[error("the count of the events stopped: {0}")]
    CountStopped(#[source] tokio::task::JoinError),
    /// A window whose rows were written but could not be compared with MongoDB's count.
    #[error("not verified: {reason}")]
    NotVerified { reason: String },
    #[error("another archiver ({owner}) holds the lease until {until}")]
    LeaseBusy { owner: String, until: String },
    #[error(
        "the lease was lost ({reason}); stopped writing before another archiver could take \
         over: windows not recorded yet are archived by the next run"
    )]
    LeaseLost { reason: String },
    #[error("{failed} of {total} windows failed to archive")]
    WindowsFailed { failed: usize, total: usize },
    #[error(
        "TTL guard: the oldest unarchived event ({oldest}) expires in {seconds_left} s, but must \
         last {needed_seconds} s: until the next scheduled run ({next_run}) is expected to have \
         finished, plus the safety margin of {margin_seconds} s"
    )]
    TtlGuard {
        oldest: String,
        seconds_left: i64,
        needed_seconds: i64,
        next_run: String,
        margin_seconds: i64,
    },
    #[error("verify found {0} mismatching windows")]
    VerifyFailed(usize),
    /// The digest chain cannot be extended as it stands (another writer moved its head).
    #[error("archive digest chain: {0}")]
    DigestChain(String),
    #[error("the archive's integrity check found {0} problems")]
    IntegrityFailed(usize),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Other(String),
}

impl ArchiveError {
    pub fn mongo(operation: &'static str) -> impl FnOnce(mongodb::error::Error) -> Self {
        move |source| ArchiveError::Mongo { operation, source }
    }

    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            ArchiveError::Config(_) => 2,
            ArchiveError::WindowsFailed { .. } | ArchiveError::CountMismatch { .. } => 3,
            ArchiveError::TtlGuard { .. } => 4,
            ArchiveError::LeaseBusy { .. } => 5,
            ArchiveError::VerifyFailed(_) => 6,
            _ => 1,
        }
    }
}

/// Opening the store fails on settings (exit 2) or on the object store's own checks.
impl From<ArchiveStoreError> for ArchiveError {
    fn from(e: ArchiveStoreError) -> Self {
        match e {
            ArchiveStoreError::Config(why) => ArchiveError::Config(why),
            ArchiveStoreError::ObjectStore(e) => ArchiveError::ObjectStore(e),
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_outcome() {
        assert_eq!(ArchiveError::Config("x".into()).exit_code(), 2);
        assert_eq!(
            ArchiveError::WindowsFailed {
                failed: 1,
                total: 2
            }
            .exit_code(),
            3
        );
        assert_eq!(
            ArchiveError::TtlGuard {
                oldest: String::new(),
                seconds_left: 1,
                needed_seconds: 3,
                next_run: String::new(),
                margin_seconds: 2
            }
            .exit_code(),
            4
        );
        assert_eq!(
            ArchiveError::LeaseBusy {
                owner: "a".into(),
                until: "b".into()
            }
            .exit_code(),
            5
        );
        assert_eq!(ArchiveError::VerifyFailed(1).exit_code(), 6);
        assert_eq!(ArchiveError::Other("x".into()).exit_code(), 1);
    }
}
