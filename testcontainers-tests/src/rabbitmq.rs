//! A private RabbitMQ (Debian's `rabbitmq-server`, run as a process) on free ports in a
//! temporary directory, for queue mode's tests; stopped when dropped.
//!
//! It is started the one way the scripts start it, `infra/dev/rabbitmq.sh serve DIR PORT
//! DIST_PORT` (which installs the package first when it is missing), as the leader of a
//! process group of its own: RabbitMQ's wrapper script and the Erlang VM under it are stopped
//! together. [`RabbitMq::stop`] stops it gracefully (SIGTERM: RabbitMQ closes its clients'
//! connections and its queues), [`RabbitMq::kill`] does not, and [`RabbitMq::resume`] starts it
//! again on the same ports and data, queues and messages included.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{free_port, repo_root};

/// How long RabbitMQ may take to start on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running (or stopped, to be resumed) RabbitMQ.
pub struct RabbitMq {
    child: Option<Child>,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

impl RabbitMq {
    /// Starts RabbitMQ and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        install();
        // A port taken between free_port() and the bind shows up as a failed start: try again.
        for _ in 0..3 {
            let mut rabbit = RabbitMq {
                child: None,
                port: free_port(),
                dist_port: free_port(),
                dir: tempfile::Builder::new()
                    .prefix("auditlog-rabbitmq-")
                    .tempdir()
                    .expect("cannot create a temporary directory for RabbitMQ"),
            };
            if rabbit.launch().await {
                return rabbit;
            }
            eprintln!("RabbitMQ did not start; its log:\n{}", rabbit.log());
        }
        panic!(
            "RabbitMQ ({} serve) did not start after 3 attempts",
            script().display()
        );
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (guest may connect from the loopback only).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log and its wrapper's output so far.
    pub fn log(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("serve.out")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Runs `rabbitmqctl ARGS` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script())
            .arg("ctl")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
    }

    /// Stops RabbitMQ gracefully (SIGTERM), waiting up to 60 s, then kills what is left.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_group(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
    }

    /// Freezes RabbitMQ (SIGSTOP to its process group): its connections stay open and take
    /// what is sent, but nothing is answered — a publish waits for a confirm that does not
    /// come, as with a broker stuck on its disk.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal_group(child, libc::SIGSTOP);
        }
    }

    /// Lets a frozen RabbitMQ go on (SIGCONT).
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal_group(child, libc::SIGCONT);
        }
    }

    /// Kills RabbitMQ at once (SIGKILL to its process group).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn resume(&mut self) {
        assert!(
            self.launch().await,
            "RabbitMQ did not start again on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    async fn launch(&mut self) -> bool {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.out"))
            .expect("cannot create RabbitMQ's output file");
        let child = Command::new("bash")
            .arg(script())
            .arg("serve")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .arg(self.dist_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("output file")))
            .stderr(Stdio::from(out))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script().display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            // RabbitMQ opens its AMQP listener last, once it is ready.
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
        false
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- last lines of RabbitMQ's log ----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}

fn signal_group(child: &Child, signal: i32) {
    let Ok(pgid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on a process group we created (the child is its leader) with a valid
    // signal number has no memory effects.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn script() -> PathBuf {
    repo_root().join("infra/dev/rabbitmq.sh")
}

/// Installs Debian's rabbitmq-server unless it is there, once per test process.
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    crate::binary::install_once(&DONE, &script());
}
