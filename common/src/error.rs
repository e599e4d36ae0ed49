//! Typed errors of the shared storage code. Binaries map them to their own error types
//! (HTTP statuses in the service, exit codes in the CLIs).

/// An error talking to, or setting up, the MongoDB store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string could not be parsed or the client could not be built.
    #[error("invalid MongoDB connection settings: {0}")]
    Config(#[source] mongodb::error::Error),
    /// The server did not answer, or answered with an error.
    #[error("MongoDB command `{command}` failed: {source}")]
    Command {
        command: &'static str,
        #[source]
        source: mongodb::error::Error,
    },
}

impl StoreError {
    pub(crate) fn command(command: &'static str) -> impl FnOnce(mongodb::error::Error) -> Self {
        move |source| StoreError::Command { command, source }
    }
}

/// The server error code of a MongoDB command failure, if the error carries one.
pub fn server_error_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            Some(w.code)
        }
        _ => None,
    }
}

/// Whether a server error code means "not now" rather than "not this": elections, stepdowns,
/// shutdowns, routing-table refreshes and network trouble between mongos and a shard. Writes
/// and reads failing with these are retried with the same ids until their deadline; anything
/// else is the request's own fault and final. (The driver's own `RetryableWriteError` label
/// covers the same ground for whole commands; a mongos reports per-document errors without it.)
pub fn is_transient_code(code: i32) -> bool {
    matches!(
        code,
        6 // HostUnreachable
            | 7 // HostNotFound
            | 89 // NetworkTimeout
            | 91 // ShutdownInProgress
            | 112 // WriteConflict
            | 133 // FailedToSatisfyReadPreference
            | 150 // StaleEpoch
            | 189 // PrimarySteppedDown
            | 262 // ExceededTimeLimit
            | 9001 // SocketException
            | 10107 // NotWritablePrimary
            | 11600 // InterruptedAtShutdown
            | 11602 // InterruptedDueToReplStateChange
            | 13388 // StaleConfig
            | 13435 // NotPrimaryNoSecondaryOk
            | 13436 // NotPrimaryOrSecondary
            | 63 // StaleShardVersion
            | 64 // WriteConcernFailed
            | 100 // UnsatisfiableWriteConcern (a replica set with too few members up)
    )
}

/// Whether a failed operation is worth retrying: a transient server code, a
/// `RetryableWriteError`/`RetryableReadError`/`TransientTransactionError` label, or no answer at
/// all (I/O, server selection, pool cleared).
pub fn is_transient(err: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    if [
        "RetryableWriteError",
        "RetryableReadError",
        "TransientTransactionError",
    ]
    .iter()
    .any(|l| err.contains_label(l))
    {
        return true;
    }
    match err.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => true,
        _ => server_error_code(err).is_some_and(is_transient_code),
    }
}

/// MongoDB server error codes the project branches on.
pub mod codes {
    /// The server does not implement the command or option (FerretDB: TTL, sharding).
    pub const NOT_IMPLEMENTED: i32 = 238;
    /// An index with the same key but other options exists.
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    /// An index with the same name but another key exists.
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    /// Duplicate key on insert.
    pub const DUPLICATE_KEY: i32 = 11000;
    /// The command is not known to the server (e.g. sharding commands on a plain mongod).
    pub const COMMAND_NOT_FOUND: i32 = 59;
    /// The collection or namespace is already sharded.
    pub const ALREADY_INITIALIZED: i32 = 23;
    /// The namespace does not exist.
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    /// Not authorized for the command.
    pub const UNAUTHORIZED: i32 = 13;
    /// Wrong user name, password or keyfile.
    pub const AUTHENTICATION_FAILED: i32 = 18;
    /// The server runs without replication (`replSetInitiate` on a standalone).
    pub const NO_REPLICATION_ENABLED: i32 = 76;
    /// The operation ran past its `maxTimeMS`.
    pub const MAX_TIME_EXPIRED: i32 = 50;
    /// `createUser` for a user that exists.
    pub const USER_ALREADY_EXISTS: i32 = 51003;
    /// A write reached a member that is not (or no longer) primary.
    pub const NOT_WRITABLE_PRIMARY: i32 = 10107;
}
