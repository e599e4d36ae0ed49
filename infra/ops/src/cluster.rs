//! The few server operations the planners need — run one command against the router or
//! against one replica-set member, and make the events collection ready — as a trait, so
//! bootstrap and setup are pure decisions over observed replies: [`crate::driver`] implements
//! it over the MongoDB driver, the tests over a scripted stand-in.

use std::fmt;

use auditlog_common::error::codes;
use auditlog_common::schema::{Retention, StorageReport};
use auditlog_common::store::ServerInfo;
use mongodb::bson::{Bson, Document};

/// Where a command goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `MONGODB_URI`: mongos in a sharded cluster, or whatever server the URI names.
    Router,
    /// One replica-set member, connected to directly (`host:port`).
    Member(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Router => f.write_str("router"),
            Target::Member(h) => f.write_str(h),
        }
    }
}

/// A failed command, reduced to what the planners branch on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CmdError {
    /// No answer: the server is down, not resolvable yet, or the connection broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Wrong keyfile or password; waiting will not fix it.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server answered `ok: 0`.
    #[error("server error {code} ({code_name}): {message}")]
    Server {
        code: i32,
        code_name: String,
        message: String,
    },
    /// Anything else the driver reports.
    #[error("{0}")]
    Other(String),
}

impl CmdError {
    pub fn code(&self) -> Option<i32> {
        match self {
            CmdError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether waiting and trying again may help. During bootstrap members restart, elect
    /// primaries and learn configurations, so nearly everything is worth retrying until the
    /// deadline; wrong credentials, missing privileges and a server that cannot be a
    /// replica-set member (no `--replSet`, or not MongoDB at all) are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            CmdError::Auth(_) => false,
            CmdError::Server { code, .. } => !matches!(
                *code,
                codes::UNAUTHORIZED
                    | codes::AUTHENTICATION_FAILED
                    | codes::COMMAND_NOT_FOUND
                    | codes::NO_REPLICATION_ENABLED
            ),
            CmdError::Unreachable(_) | CmdError::Other(_) => true,
        }
    }
}

impl From<mongodb::error::Error> for CmdError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match e.kind.as_ref() {
            ErrorKind::Command(c) => CmdError::Server {
                code: c.code,
                code_name: c.code_name.clone(),
                message: c.message.clone(),
            },
            ErrorKind::Authentication { message, .. } => CmdError::Auth(message.clone()),
            ErrorKind::ServerSelection { message, .. } => CmdError::Unreachable(message.clone()),
            ErrorKind::Io(io) => CmdError::Unreachable(io.to_string()),
            ErrorKind::ConnectionPoolCleared { message, .. } => {
                CmdError::Unreachable(message.clone())
            }
            ErrorKind::DnsResolve { message, .. } => CmdError::Unreachable(message.clone()),
            _ => CmdError::Other(e.to_string()),
        }
    }
}

/// The server operations bootstrap, setup and status need.
pub trait Cluster {
    /// Runs `command` against database `db` on `target` and returns the reply (`ok: 1`).
    async fn run(&self, target: &Target, db: &str, command: Document)
        -> Result<Document, CmdError>;

    /// Runs the shared [`auditlog_common::schema::ensure_storage`] through the router.
    async fn ensure_storage(
        &self,
        server: &ServerInfo,
        retention: Retention,
    ) -> Result<StorageReport, CmdError>;
}

/// Reads `cursor.firstBatch` of a `find`/`aggregate` reply.
pub fn first_batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .map(|a| {
            a.iter()
                .filter_map(|b| match b {
                    Bson::Document(d) => Some(d.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An integer field whatever numeric type the server chose.
pub fn get_int(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}
