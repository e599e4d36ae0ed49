//! The errors auditlog-ops ends with, and the one place they become exit codes.

use auditlog_common::StoreError;

use crate::cluster::CmdError;

/// Why a command could not finish.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Arguments or files that cannot work whatever the cluster does.
    #[error("configuration: {0}")]
    Config(String),
    /// The deadline passed while waiting for the cluster.
    #[error("gave up after {elapsed_secs} s at step `{step}`: {reason}")]
    Deadline {
        step: String,
        reason: String,
        elapsed_secs: u64,
    },
    /// The server refused a command, and retrying will not help.
    #[error("{step}: {source}")]
    Refused {
        step: String,
        #[source]
        source: CmdError,
    },
    /// The server lacks what was asked for.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A check found that going on would lose or strand data.
    #[error("refused: {0}")]
    Unsafe(String),
    /// Shared storage code failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpsError {
    /// Exit codes, documented in `--help` and docs/operations.md.
    pub fn exit_code(&self) -> u8 {
        match self {
            OpsError::Config(_) => 3,
            OpsError::Deadline { .. } => 4,
            OpsError::Store(StoreError::Config(_)) => 3,
            OpsError::Store(StoreError::Command { source, .. })
                if CmdError::from(source.clone()).is_retriable() =>
            {
                4
            }
            OpsError::Refused { .. } | OpsError::Store(_) => 5,
            OpsError::Unsupported(_) => 6,
            OpsError::Unsafe(_) => 7,
        }
    }
}
