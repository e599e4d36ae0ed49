//! The test harness: real servers and real binaries for auditlog's end-to-end tests.
//!
//! # Layout
//! - [`mongo`]: [`mongo::test_mongo`] hands a test a MongoDB of its own — `MONGODB_URI` if set,
//!   else a testcontainers `mongo` container where a Docker engine answers, else a FerretDB
//!   process started on a free port in a temporary directory. Each call gets its own database.
//! - [`binary`]: builds and starts a binary of the workspace with given environment variables on
//!   a free port, waits for its `/healthz`, and stops it when dropped.
//! - [`ferretdb`]: starting and stopping a private FerretDB process.
//! - [`rabbitmq`]: a private RabbitMQ process on free ports (queue mode), which tests can stop,
//!   kill and start again on the same data.
//! - [`proxy`]: a fault-injecting MongoDB wire proxy, so tests can script what only a cluster
//!   does (elections, per-document shard errors, write-concern errors, lost replies).
//! - [`tools`]: the tools venv's python and programs, `infra/dev/` scripts, required tools.
//!
//! # Tests that need what this machine may lack
//! - Real MongoDB (what FerretDB lacks: TTL indexes, `explain` plan stages, replica sets,
//!   sharding): the test is marked `#[ignore = "needs real MongoDB: <what>"]`, so cargo counts
//!   it as ignored and shows why, and it starts with
//!   [`mongo::TestMongo::assert_real_mongodb`]. Run with `--include-ignored` and `MONGODB_URI`
//!   pointing at real MongoDB (`make test-mongodb`); on FerretDB it then fails loudly.
//! - Tests whose expectation differs by server state it per backend from the detected
//!   capabilities ([`mongo::TestMongo::server`]: `supports_ttl()`, `replica_set`, ...).
//! - Tools that `make tools` installs or requires (Java and Maven for HDFS, the Python venv with
//!   pyarrow/DuckDB/boto3/moto): a test that needs one fails, naming it, when it is missing.
//!
//! No test passes by returning early.

pub mod binary;
pub mod ferretdb;
pub mod mongo;
pub mod proxy;
pub mod rabbitmq;
pub mod tools;

use std::net::TcpListener;
use std::path::PathBuf;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Peak resident memory (`VmHWM` in `/proc/<pid>/status`) of a running process, in bytes;
/// `None` once it is gone.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The value of one series (name with its labels, as printed) in Prometheus text; `None` when
/// the series is not there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}
