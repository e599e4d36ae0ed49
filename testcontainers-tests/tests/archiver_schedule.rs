//! `run`: the cron trigger fires and archives; `/healthz` and `/metrics` answer; the TTL
//! guard shows in the metrics where it fires (a server without TTL indexes, which guards the
//! retention horizon) and stays at zero where it must not (TTL indexes supported, none on the
//! collection: nothing expires); SIGTERM stops the daemon cleanly.
//!
//! The schedule's timing itself (when `0 0 2 * * *` fires) is unit-tested against fixed
//! clocks in `archiver/src/schedule.rs`; here a per-second schedule proves the trigger is
//! wired to the archive run, waiting on the outcome (a recorded window), not on a clock.

#[path = "support/archiver.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use support::*;
use testcontainers_tests::binary::Spawn;
use testcontainers_tests::mongo::test_mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_run_cron_trigger_archives_and_exports_metrics() {
    let mongo = test_mongo().await;
    // As in archiver_guard_purge.rs: without a TTL index, only a server that has no TTL
    // indexes (FerretDB) expires events at the retention horizon, which the guard watches.
    let expect_guard = !mongo.server.supports_ttl();
    let server = mongo.server.describe();
    let base = hour_days_ago(2);
    insert(&mongo, &tricky_events(base)[..10]).await;
    // Close to the 1-day retention: where the guard watches the retention, it must show in
    // the metrics.
    insert(
        &mongo,
        &[event(
            Utc::now() - chrono::Duration::hours(22),
            "old",
            "c",
            None,
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Spawn::new("auditlog-archiver")
        .envs(Archiver::new(&mongo, dir.path().to_str().unwrap()).env)
        .env("AUDIT_ARCHIVE_SCHEDULE", "* * * * * *")
        .env("AUDIT_ARCHIVE_AFTER", "1h")
        .env("AUDIT_RETENTION_DAYS", "1")
        .arg("run")
        .listen_env("AUDIT_ARCHIVER_LISTEN_ADDR")
        .start()
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while window_records(&mongo).await.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the scheduled run did not archive within 60 s; output:\n{}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", daemon.base_url))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    // The run that archived the windows counts its result when it ends, just after the
    // windows are recorded: wait for that count. It archived the event at risk too, so it
    // succeeded even where the guard fired before it.
    let run_result = "auditlog_archiver_runs_total{result=\"ok\"}";
    let metrics = loop {
        let metrics = client
            .get(format!("{}/metrics", daemon.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|l| l.starts_with(run_result)) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{server}: {run_result} missing within 60 s in:\n{metrics}\noutput:\n{}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    assert_eq!(value("auditlog_archiver_windows_archived_total"), 4.0);
    assert!(value("auditlog_archiver_rows_archived_total") >= 11.0);
    assert!(value(run_result) >= 1.0);
    if expect_guard {
        // Fired before the run that archived the event at risk.
        assert!(
            value("auditlog_archiver_ttl_guard_triggered_total") >= 1.0,
            "{server}"
        );
    } else {
        assert_eq!(
            value("auditlog_archiver_ttl_guard_triggered_total"),
            0.0,
            "{server}: the guard fired with nothing that expires:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("auditlog_archiver_runs_total{result=\"ttl_guard\"}"),
        "{server}: a run ended on the TTL guard, though it left nothing at risk:\n{metrics}"
    );

    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("daemon did not stop on SIGTERM");
    assert!(status.success(), "exit status {status}");
}
