//! The archiver's Prometheus metrics (served by `run` on `/metrics`, text format). One
//! registry per process, so tests can start several archivers side by side.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the archiver exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub windows_archived: IntCounter,
    pub window_failures: IntCounter,
    pub rows_archived: IntCounter,
    pub bytes_archived: IntCounter,
    pub runs: IntCounterVec,
    pub due_windows: IntGauge,
    pub last_archived_end_seconds: IntGauge,
    pub last_run_seconds: IntGauge,
    pub ttl_seconds_left: IntGauge,
    pub ttl_guard_triggered: IntCounter,
    pub ttl_raised: IntCounter,
    pub purged_rows: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric; fails on an invalid or duplicate definition.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let runs = IntCounterVec::new(
            Opts::new(
                "auditlog_archiver_runs_total",
                "Archive runs by result (ok, failed, lease_busy, ttl_guard).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        Ok(Metrics {
            windows_archived: counter(
                "auditlog_archiver_windows_archived_total",
                "Windows archived, verified and recorded.",
            )?,
            window_failures: counter(
                "auditlog_archiver_window_failures_total",
                "Window archive attempts that failed (retried on the next run).",
            )?,
            rows_archived: counter(
                "auditlog_archiver_rows_archived_total",
                "Events written to Parquet in recorded windows.",
            )?,
            bytes_archived: counter(
                "auditlog_archiver_bytes_archived_total",
                "Parquet bytes written in recorded windows.",
            )?,
            due_windows: gauge(
                "auditlog_archiver_due_windows",
                "Windows that are due and not archived yet, as of the last run.",
            )?,
            last_archived_end_seconds: gauge(
                "auditlog_archiver_last_archived_window_end_seconds",
                "End of the newest archived window (Unix seconds).",
            )?,
            last_run_seconds: gauge(
                "auditlog_archiver_last_run_timestamp_seconds",
                "When the last run finished (Unix seconds).",
            )?,
            ttl_seconds_left: gauge(
                "auditlog_archiver_ttl_seconds_left",
                "Seconds until TTL (or retention) would expire the oldest unarchived event.",
            )?,
            ttl_guard_triggered: counter(
                "auditlog_archiver_ttl_guard_triggered_total",
                "Times the oldest unarchived event was found within the safety margin of expiry.",
            )?,
            ttl_raised: counter(
                "auditlog_archiver_ttl_raised_total",
                "Times the TTL guard raised the TTL index with collMod.",
            )?,
            purged_rows: counter(
                "auditlog_archiver_purged_rows_total",
                "Events deleted from MongoDB by purge after their window was archived and verified.",
            )?,
            runs,
            registry,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_renders() {
        let m = super::Metrics::new().unwrap();
        m.runs.with_label_values(&["ok"]).inc();
        let text = m.render().unwrap();
        assert!(text.contains("auditlog_archiver_ttl_seconds_left"));
        assert!(text.contains("auditlog_archiver_runs_total{result=\"ok\"} 1"));
    }
}
