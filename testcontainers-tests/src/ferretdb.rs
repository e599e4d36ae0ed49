//! A private FerretDB process (SQLite backend) on a free port in a temporary directory,
//! killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{free_port, repo_root};

/// A running FerretDB; the process is killed and its directory removed on drop.
pub struct FerretDb {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl FerretDb {
    /// Starts FerretDB and waits until it accepts connections.
    pub async fn start() -> Self {
        let bin = binary_path();
        // A port taken between free_port() and the bind shows up as a failed start: try again.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("auditlog-ferretdb-")
                .tempdir()
                .expect("cannot create a temporary directory for FerretDB");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("ferretdb.log"))
                .expect("cannot create FerretDB log file");
            let child = Command::new(&bin)
                .arg("--handler=sqlite")
                .arg(format!("--sqlite-url=file:{}/", dir.path().display()))
                .arg(format!("--state-dir={}", dir.path().display()))
                .arg(format!("--listen-addr=127.0.0.1:{port}"))
                .args(["--debug-addr=-", "--telemetry=disable", "--log-level=warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut db = FerretDb {
                child,
                port,
                _dir: dir,
            };
            if db.wait_ready(Duration::from_secs(15)).await {
                return db;
            }
        }
        panic!(
            "FerretDB ({}) did not start after 5 attempts",
            bin.display()
        );
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The FerretDB binary: `FERRETDB_BIN`, else the one `infra/dev/ferretdb.sh` builds (building
/// it on first use).
pub fn binary_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("FERRETDB_BIN") {
            return PathBuf::from(p);
        }
        let script = repo_root().join("infra/dev/ferretdb.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("path")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} path failed", script.display());
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}
