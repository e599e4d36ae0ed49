//! Starting a real binary of the workspace for a test: built by cargo on first use, started
//! with given environment variables on a free port, ready once `/healthz` answers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{free_port, repo_root};

/// A running binary; killed on drop. Its output goes to a log file, printed when a test
/// fails while the binary is running.
pub struct RunningBinary {
    pub name: String,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
}

/// Options for [`spawn`].
pub struct Spawn<'a> {
    /// Binary name, e.g. `auditlog-service`.
    pub bin: &'a str,
    /// Arguments, e.g. `["run"]`.
    pub args: Vec<String>,
    /// Environment variables (added to the test's own environment).
    pub env: Vec<(String, String)>,
    /// The variable that sets the listen address; it is set to `127.0.0.1:<free port>`.
    pub listen_env: &'a str,
    /// Path of the health endpoint that answers 200 once the binary is ready.
    pub health_path: &'a str,
    /// The binary to run instead of the one cargo builds (a benchmark's release build).
    pub path: Option<PathBuf>,
}

impl<'a> Spawn<'a> {
    pub fn new(bin: &'a str) -> Self {
        Self {
            bin,
            args: vec![],
            env: vec![],
            listen_env: "AUDIT_LISTEN_ADDR",
            health_path: "/healthz",
            path: None,
        }
    }

    /// Runs the binary at `path` instead of building `bin`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Waits for `path` to answer 200 instead of `/healthz` (e.g. `/readyz`).
    pub fn health_path(mut self, path: &'a str) -> Self {
        self.health_path = path;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs(mut self, kv: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(kv);
        self
    }

    pub fn listen_env(mut self, name: &'a str) -> Self {
        self.listen_env = name;
        self
    }

    /// Starts the binary and waits up to 60 s for its health endpoint.
    pub async fn start(self) -> RunningBinary {
        let path = self.path.clone().unwrap_or_else(|| build(self.bin));
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("cannot create a log file");
        // One open file for both streams, so they share an offset instead of overwriting.
        let out = log.reopen().expect("log file");
        let child = Command::new(&path)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(self.listen_env, format!("127.0.0.1:{port}"))
            .env("AUDIT_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let mut running = RunningBinary {
            name: self.bin.to_owned(),
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            log,
        };
        running
            .wait_healthy(self.health_path, Duration::from_secs(60))
            .await;
        running
    }
}

impl RunningBinary {
    async fn wait_healthy(&mut self, path: &str, within: Duration) {
        let client = reqwest::Client::new();
        let url = format!("{}{}", self.base_url, path);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was healthy; its output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} not healthy at {url} within {within:?}; its output:\n{}",
            self.name,
            self.output()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the binary printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

/// Builds `bin` once per test process (cargo is quick when it is up to date) and returns its
/// path in the same target directory and profile as the running test. The directory comes from
/// the test executable's own path, so `CARGO_TARGET_DIR` (which the nested `cargo build`
/// inherits) and `build.target-dir` are honoured without asking cargo.
///
/// `AUDITLOG_TEST_BIN_DIR` names a directory of binaries to run instead (nothing is built): to
/// run today's tests against an older build, e.g. to show that a new test fails there.
pub fn build(bin: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("AUDITLOG_TEST_BIN_DIR") {
        return PathBuf::from(dir).join(bin);
    }
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let dir = target_profile_dir();
    let path = dir.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--quiet", "--bin", bin]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo build: {e}"));
        assert!(status.success(), "cargo build --bin {bin} failed");
        assert!(
            path.exists(),
            "cargo build --bin {bin} succeeded but {} does not exist: was the test built with \
             another CARGO_TARGET_DIR than the one in this environment?",
            path.display()
        );
        built.insert(bin.to_owned());
    }
    path
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("test executable is not under target/<profile>/deps")
}

/// Runs `bash <script> install` the first time `done` is reached in this test process, so
/// parallel tests do not each wait on an install (a build, a package) inside their start
/// timeout. Fails the test when the script fails.
pub fn install_once(done: &OnceLock<()>, script: &Path) {
    done.get_or_init(|| {
        let status = Command::new("bash")
            .arg(script)
            .arg("install")
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(status.success(), "{} install failed", script.display());
    });
}
