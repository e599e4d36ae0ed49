//! The archiver proper: the connected parts ([`Archiver`]), which windows are due, archiving
//! them one by one under the lease, recording each only after it verified, and marking
//! complete partitions with `_SUCCESS`. `once`, `backfill` and every tick of `run` go through
//! `Archiver::run_windows`; `status`, `verify` and `purge` are handed only the parts they use.

use std::collections::BTreeSet;

use auditlog_common::store::{ServerInfo, Store};
use chrono::{DateTime, Utc};
use mongodb::bson;
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::{ArchiveError, Result};
use crate::export;
use crate::guard::{self, GuardReport};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::purge::{self, PurgeReport};
use crate::sink::Sink;
use crate::source::Source;
use crate::state::{window_checksum, FileRecord, Lease, State, WindowRecord};
use crate::status::{self, StatusReport};
use crate::verify::{self, VerifyReport};
use crate::window::{partition_of, windows_covering, windows_in_hour, Window};

/// Everything a command needs, connected. Each command module takes only the parts it uses.
pub struct Archiver {
    settings: Settings,
    store: Store,
    server: ServerInfo,
    source: Source,
    sink: Sink,
    state: State,
    metrics: Metrics,
}

/// The outcome of archiving a list of windows.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    pub archived: usize,
    pub skipped_already_archived: usize,
    pub failed: usize,
    pub rows: u64,
    pub bytes: u64,
    pub guard: Option<GuardReport>,
}

impl Archiver {
    pub async fn connect(settings: Settings, metrics: Metrics) -> Result<Self> {
        settings.validate()?;
        let store = Store::connect(&settings.mongo, "auditlog-archiver").await?;
        let server = store.server_info().await?;
        tracing::info!(server = %server.describe(), "connected to MongoDB");
        let sink = Sink::open(&settings)?;
        let source = Source::new(&store);
        let state = State::new(&store);
        Ok(Archiver {
            settings,
            store,
            server,
            source,
            sink,
            state,
            metrics,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `status`: the read-only report.
    pub async fn status(&self) -> Result<StatusReport> {
        status::status(
            &self.settings,
            &self.store,
            self.server.supports_ttl(),
            &self.source,
            &self.state,
            &self.sink,
            &self.metrics,
        )
        .await
    }

    /// `verify`: re-checks every recorded window.
    pub async fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.store, &self.source, &self.state, &self.sink).await
    }

    /// `purge`: deletes archived, verified, old windows from MongoDB.
    pub async fn purge(&self, dry_run: bool) -> Result<PurgeReport> {
        purge::purge(
            &self.settings,
            self.server.supports_ttl(),
            &self.source,
            &self.state,
            &self.sink,
            &self.metrics,
            dry_run,
        )
        .await
    }

    /// `once` (and every firing of `run`): guard, archive every due window; a run that
    /// finishes without error is recorded in the runs document (for the service's alerts and
    /// the guard's expected run time).
    pub async fn once(&self) -> Result<RunReport> {
        let started = Instant::now();
        let lease = self.lease().await?;
        let mut result = self.once_locked(&lease).await;
        if result.is_ok() {
            if let Err(e) = self
                .state
                .record_run(
                    Utc::now(),
                    started.elapsed(),
                    &self.settings.archive_schedule,
                )
                .await
            {
                result = Err(e);
            }
        }
        lease.release().await;
        self.finish_run(&result);
        result
    }

    async fn once_locked(&self, lease: &Lease) -> Result<RunReport> {
        let recorded = self.state.recorded_starts().await?;
        let cutoff = self.settings.due_cutoff(Utc::now());
        let (due, oldest) = self
            .source
            .unarchived(&recorded, cutoff, self.settings.window_seconds())
            .await?;
        let last_run_seconds = self.state.last_run_seconds().await?;
        // The guard runs first, so a TTL about to expire unarchived events is raised before the
        // (possibly long) archive work starts.
        lease.check()?;
        let before = guard::check(
            &self.store,
            self.server.supports_ttl(),
            &self.settings,
            &self.metrics,
            oldest,
            last_run_seconds,
            true,
        )
        .await?;
        self.metrics.due_windows.set(due.len() as i64);
        let mut report = self.run_windows(due, lease).await?;
        report.guard = Some(before.clone());
        if before.triggered {
            return Err(before.error());
        }
        if report.failed > 0 {
            return Err(ArchiveError::WindowsFailed {
                failed: report.failed,
                total: report.failed + report.archived,
            });
        }
        Ok(report)
    }

    /// `backfill --from --to`: every unarchived window overlapping the range, regardless of age.
    pub async fn backfill(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<RunReport> {
        if from >= to {
            return Err(ArchiveError::Config(format!(
                "--from ({from}) must be before --to ({to})"
            )));
        }
        let lease = self.lease().await?;
        let result = async {
            let now = Utc::now();
            let recorded = self.state.recorded_starts().await?;
            let mut todo = vec![];
            let mut skipped = 0;
            for w in windows_covering(from, to, self.settings.window_seconds()) {
                if recorded.contains(&w.start) {
                    skipped += 1;
                    continue;
                }
                if w.end > now {
                    tracing::warn!(window = %w.id(), "window has not ended yet; not archived");
                    continue;
                }
                if !w.is_due(self.settings.due_cutoff(now)) {
                    tracing::warn!(window = %w.id(),
                        "window ended less than AUDIT_ARCHIVE_GRACE ago: events written late will \
                         not be in the archive");
                }
                if self.source.count(&w).await? > 0 {
                    todo.push(w);
                }
            }
            let mut report = self.run_windows(todo, &lease).await?;
            report.skipped_already_archived = skipped;
            if report.failed > 0 {
                return Err(ArchiveError::WindowsFailed {
                    failed: report.failed,
                    total: report.failed + report.archived,
                });
            }
            Ok(report)
        }
        .await;
        lease.release().await;
        self.finish_run(&result);
        result
    }

    async fn lease(&self) -> Result<Lease> {
        self.state.acquire_lease(self.settings.lease_ttl).await
    }

    fn finish_run(&self, result: &Result<RunReport>) {
        let label = match result {
            Ok(_) => "ok",
            Err(ArchiveError::LeaseBusy { .. }) => "lease_busy",
            Err(ArchiveError::TtlGuard { .. }) => "ttl_guard",
            Err(_) => "failed",
        };
        self.metrics.runs.with_label_values(&[label]).inc();
        self.metrics.last_run_seconds.set(Utc::now().timestamp());
    }

    /// Archives the windows in order. A failing window is logged, counted and left for the
    /// next run; the others go on.
    async fn run_windows(&self, windows: Vec<Window>, lease: &Lease) -> Result<RunReport> {
        let mut report = RunReport::default();
        let mut progress = Progress::new(windows.len() as u64);
        progress.set_total(windows.len() as u64);
        let cursor_batch = self
            .source
            .cursor_batch_size(self.settings.batch_size)
            .await;
        for w in windows {
            lease.check()?;
            match self
                .archive_one(&w, cursor_batch, lease, &mut progress)
                .await
            {
                Ok(rec) => {
                    report.archived += 1;
                    report.rows += rec.rows as u64;
                    report.bytes += rec.bytes as u64;
                    progress.window_done(&w, rec.rows as u64, rec.bytes as u64, rec.files.len());
                }
                Err(e @ ArchiveError::LeaseLost { .. }) => {
                    tracing::error!(window = %w.id(), error = %e,
                        "lease lost: the window was not recorded and no other window is started");
                    return Err(e);
                }
                Err(e) => {
                    report.failed += 1;
                    self.metrics.window_failures.inc();
                    tracing::error!(window = %w.id(), error = %e, "window not archived; it will be retried on the next run");
                }
            }
        }
        progress.finish();
        Ok(report)
    }

    async fn archive_one(
        &self,
        w: &Window,
        cursor_batch: u32,
        lease: &Lease,
        progress: &mut Progress,
    ) -> Result<WindowRecord> {
        let written = export::write_window(
            &self.source,
            &self.sink,
            &self.settings,
            w,
            cursor_batch,
            lease,
            progress,
        )
        .await?;
        let files: Vec<FileRecord> = written.files.iter().map(FileRecord::from).collect();
        let bytes: u64 = written.files.iter().map(|f| f.bytes).sum();
        let rec = WindowRecord {
            start: bson::DateTime::from_chrono(w.start),
            end: bson::DateTime::from_chrono(w.end),
            source: self.source.name().to_owned(),
            archive_url: self.sink.url().to_owned(),
            checksum: window_checksum(&files),
            files,
            rows: i64::try_from(written.rows).unwrap_or(i64::MAX),
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            archived_at: bson::DateTime::now(),
            archiver_version: env!("CARGO_PKG_VERSION").to_owned(),
            verified_at: None,
            purged_at: None,
            purged_rows: None,
        };
        // The lease may have been lost since the files were published: then another archiver
        // may be rewriting the same names, and only it may record the window.
        lease.check()?;
        self.state.record(&rec).await?;
        self.metrics.windows_archived.inc();
        self.metrics.rows_archived.inc_by(written.rows);
        self.metrics.bytes_archived.inc_by(bytes);
        self.metrics.last_archived_end_seconds.set(
            self.metrics
                .last_archived_end_seconds
                .get()
                .max(w.end.timestamp()),
        );
        self.mark_complete_partitions(w, &rec, lease).await?;
        Ok(rec)
    }

    /// Writes `_SUCCESS` into each partition holding this window's files once every window
    /// sharing that partition is archived (or has no events).
    async fn mark_complete_partitions(
        &self,
        w: &Window,
        rec: &WindowRecord,
        lease: &Lease,
    ) -> Result<()> {
        let mut partitions: BTreeSet<String> = BTreeSet::new();
        for f in &rec.files {
            if let Some((p, _)) = f.path.rsplit_once('/') {
                partitions.insert(p.to_owned());
            }
        }
        for hour in w.hours() {
            let partition = partition_of(hour);
            if !partitions.contains(&partition) {
                continue;
            }
            let mut complete = true;
            for other in windows_in_hour(hour, self.settings.window_seconds()) {
                if other == *w || self.state.get(&other).await?.is_some() {
                    continue;
                }
                if other.end > Utc::now() || self.source.count(&other).await? > 0 {
                    complete = false;
                    break;
                }
            }
            if complete {
                lease.check()?;
                self.sink
                    .put_small(&format!("{partition}/_SUCCESS"), b"")
                    .await?;
            }
        }
        Ok(())
    }
}
