//! A private FerretDB process (SQLite backend) on a free port in a temporary directory,
//! killed when dropped.
//!
//! FerretDB is started the one way every script here starts it: `infra/dev/ferretdb.sh serve
//! DIR PORT`, which builds the pinned FerretDB on first use and then `exec`s it with its flags
//! in the foreground — so the child this harness spawns *is* FerretDB once it answers, and
//! killing the child stops it.

use std::path::{Path, PathBuf};
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
        // A port taken between free_port() and the bind shows up as a failed start: try again.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("auditlog-ferretdb-")
                .tempdir()
                .expect("cannot create a temporary directory for FerretDB");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("ferretdb.log"))
                .expect("cannot create FerretDB log file");
            let child = command(dir.path(), port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", script().display()));
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
            "FerretDB ({} serve) did not start after 5 attempts",
            script().display()
        );
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // Only once the script has exec'd FerretDB (before that, a connection could reach
            // someone else's listener on a clashing port).
            if self.is_ferretdb()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Whether the child process is FerretDB itself (`ferretdb.sh serve` has exec'd it).
    fn is_ferretdb(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.child.id()))
            .map(|c| String::from_utf8_lossy(&c).contains("--listen-addr="))
            .unwrap_or(false)
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

fn script() -> PathBuf {
    repo_root().join("infra/dev/ferretdb.sh")
}

/// The command that runs FerretDB in the foreground on `127.0.0.1:port` with its data in
/// `dir`: `bash infra/dev/ferretdb.sh serve DIR PORT` (which execs the binary, so the spawned
/// child's pid is FerretDB's). Builds FerretDB first if needed (once per test process).
/// `FERRETDB_BIN` in the environment makes the script use that binary instead.
pub fn command(dir: &Path, port: u16) -> Command {
    install();
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("serve")
        .arg(dir)
        .arg(port.to_string());
    cmd
}

/// Builds the pinned FerretDB unless it is there (`infra/dev/ferretdb.sh install`), once per
/// test process, so parallel tests do not each wait on the build inside their start timeout.
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    crate::binary::install_once(&DONE, &script());
}
