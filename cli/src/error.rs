//! The CLI's error type, and the exit code each kind of failure maps to.
//!
//! Exit codes are part of the interface (scripts test them), so they are decided here, in one
//! place, and documented in `docs/cli.md`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the service refused the request (4xx/5xx) or could not be reached; a local I/O error |
//! | 2 | bad usage: flags (clap's own errors), values, the configuration; nothing was sent |
//! | 3 | `post --ndjson`: the file was sent, but some of its lines were refused |

use std::path::PathBuf;

/// Exit code: the service or the transport failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line or configuration is wrong (the same as clap's own errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a bulk post finished but refused some lines.
pub const EXIT_REFUSED: u8 = 3;

/// Everything a command can fail with. `Display` is one line: `main` prints it after
/// `auditlog: error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value or a combination of flags that clap cannot check itself.
    #[error("{0}")]
    Usage(String),
    /// The configuration file, a profile or a key file is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The service answered with an error, or could not be reached.
    #[error(transparent)]
    Client(#[from] auditlog_client::Error),
    /// Reading an input file or writing the output failed.
    // Not a `source`: the message already holds it, and main prints the chain.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing to standard output failed (other than the reader going away).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// `post --ndjson` finished, but refused some lines; the summary is already printed.
    #[error("{refused} of {total} lines refused")]
    Refused { refused: u64, total: u64 },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::Client(_) | CliError::Io { .. } | CliError::Output(_) => EXIT_FAILURE,
            CliError::Refused { .. } => EXIT_REFUSED,
        }
    }

    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            error,
        }
    }
}

/// Whether an output error only means that the reader went away (`auditlog find | head`):
/// that ends the command quietly, as it does for other Unix tools.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_kind() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Config("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::Refused {
                refused: 1,
                total: 2
            }
            .exit_code(),
            3
        );
        assert_eq!(
            CliError::io("f", std::io::Error::other("boom")).to_string(),
            "f: boom"
        );
    }
}
