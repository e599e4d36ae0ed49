//! [`test_mongo`]: a MongoDB for one test, with a database name no other test uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use auditlog_common::settings::MongoSettings;
use auditlog_common::store::{ServerInfo, Store};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ContainerAsync;

use crate::ferretdb::FerretDb;

/// Where a test's MongoDB comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `MONGODB_URI` from the environment.
    External,
    /// A `mongo` container started through testcontainers.
    Container,
    /// A FerretDB process started for this test.
    FerretDb,
}

enum Guard {
    None,
    // Boxed: the container handle is large and this enum lives in every TestMongo.
    Container(#[allow(dead_code)] Box<ContainerAsync<Mongo>>),
    FerretDb(FerretDb),
}

/// A MongoDB for one test. The server (container or FerretDB process) stops when dropped.
pub struct TestMongo {
    pub uri: String,
    pub db_name: String,
    pub backend: Backend,
    pub server: ServerInfo,
    guard: Guard,
}

impl TestMongo {
    /// Settings pointing the binaries at this test's database (`events` collection).
    pub fn settings(&self) -> MongoSettings {
        MongoSettings {
            mongodb_uri: self.uri.clone(),
            db_name: self.db_name.clone(),
            collection: "events".to_owned(),
        }
    }

    /// Environment variables for a binary under test.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MONGODB_URI".into(), self.uri.clone()),
            ("AUDIT_DB_NAME".into(), self.db_name.clone()),
            ("AUDIT_COLLECTION".into(), "events".into()),
        ]
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.settings(), "auditlog-tests")
            .await
            .expect("cannot build a MongoDB client")
    }

    /// The FerretDB process this harness started, if any.
    pub fn ferretdb(&self) -> Option<&FerretDb> {
        match &self.guard {
            Guard::FerretDb(f) => Some(f),
            _ => None,
        }
    }

    /// Whether the server is FerretDB: no TTL indexes, no `explain` plan stages, no replica
    /// sets, no sharding.
    pub fn is_ferretdb(&self) -> bool {
        self.server.ferretdb_version.is_some()
    }

    /// Panics unless the server is real MongoDB. The first line of every test marked
    /// `#[ignore = "needs real MongoDB: <what>"]`: such a test runs only when asked to
    /// (`--include-ignored`, as `make test-mongodb` does with `MONGODB_URI` pointing at real
    /// MongoDB), and when it then gets FerretDB it fails here, naming what it needs, instead of
    /// passing without having tested anything.
    pub fn assert_real_mongodb(&self, needs: &str) {
        assert!(
            !self.is_ferretdb(),
            "this test needs real MongoDB ({needs}), which FerretDB does not implement, but it \
             got {} (backend {:?}); run it with MONGODB_URI pointing at real MongoDB \
             (`make test-mongodb`)",
            self.server.describe(),
            self.backend
        );
    }
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn unique_db_name() -> String {
    let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{}_{}_{:x}", std::process::id(), n, nanos)
}

/// A MongoDB for one test: `MONGODB_URI` if set; else a testcontainers `mongo` container where
/// a Docker engine answers (unless `AUDITLOG_TEST_NO_DOCKER=1`); else a FerretDB process.
pub async fn test_mongo() -> TestMongo {
    let (uri, backend, guard) = if let Ok(uri) = std::env::var("MONGODB_URI") {
        (uri, Backend::External, Guard::None)
    } else if docker_available().await {
        let container = Mongo::default()
            .start()
            .await
            .expect("Docker answers but the mongo container did not start");
        let host = container.get_host().await.expect("container host");
        let port = container
            .get_host_port_ipv4(27017)
            .await
            .expect("container port");
        (
            format!("mongodb://{host}:{port}/"),
            Backend::Container,
            Guard::Container(Box::new(container)),
        )
    } else {
        let f = FerretDb::start().await;
        (f.uri(), Backend::FerretDb, Guard::FerretDb(f))
    };
    let mut mongo = TestMongo {
        uri,
        db_name: unique_db_name(),
        backend,
        server: ServerInfo {
            version: String::new(),
            ferretdb_version: None,
            is_mongos: false,
            replica_set: None,
        },
        guard,
    };
    let store = mongo.store().await;
    mongo.server = retry(|| store.server_info(), Duration::from_secs(20)).await;
    mongo
}

async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut f: impl FnMut() -> F,
    within: Duration,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("test MongoDB did not answer within {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether a Docker engine answers on its socket (a `docker` client alone is not enough).
async fn docker_available() -> bool {
    if std::env::var("AUDITLOG_TEST_NO_DOCKER").is_ok_and(|v| v == "1") {
        return false;
    }
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let probe = async {
        if let Some(path) = host.strip_prefix("unix://") {
            tokio::net::UnixStream::connect(path).await.is_ok()
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        } else {
            false
        }
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .unwrap_or(false)
}
