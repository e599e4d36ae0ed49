//! Running the real `auditlog-ops` binary to completion against a test's MongoDB.
// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

/// What one run of `auditlog-ops` printed and how it ended.
#[derive(Debug)]
pub struct OpsRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl OpsRun {
    /// Panics with both outputs unless the run exited 0.
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "auditlog-ops failed: {self:#?}");
        self
    }
}

/// Runs `auditlog-ops args…` with `env`, giving it at most two minutes.
pub async fn ops(env: Vec<(String, String)>, args: &[&str]) -> OpsRun {
    let bin = tokio::task::spawn_blocking(|| testcontainers_tests::binary::build("auditlog-ops"))
        .await
        .expect("build auditlog-ops");
    let child = tokio::process::Command::new(bin)
        .args(args)
        .envs(env)
        .env("AUDIT_LOG_FORMAT", "text")
        .env_remove("MONGODB_KEYFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start auditlog-ops");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("auditlog-ops did not finish within 2 minutes")
        .expect("wait for auditlog-ops");
    OpsRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An event as the service stores it, of `consumer`, created at `created_ms`.
pub fn event(consumer: &str, created_ms: i64) -> mongodb::bson::Document {
    use mongodb::bson::{doc, oid::ObjectId, DateTime};
    doc! { "_id": ObjectId::new(), "type": "t", "consumer": consumer,
    "created_at": DateTime::from_millis(created_ms) }
}
