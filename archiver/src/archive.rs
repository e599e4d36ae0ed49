//! The archiver proper: the connected parts ([`Archiver`]), what is due, and archiving it under
//! the lease — in passes, each reading a scope with one sorted stream and one count beside it
//! ([`crate::pass`], [`crate::tally`]); a window is published and recorded only after its count
//! is verified and its files read back, and complete partitions are marked with `_SUCCESS`.
//! `once`, `backfill` and every tick of `run` go through `Archiver::archive`; `status`,
//! `verify` and `purge` are handed only the parts they use.
//!
//! Passes of one invocation: the first reads the whole scope. A window whose count differs is
//! read again, once, in a pass of its own (with the others that differ); a second difference
//! fails it. When the stream fails mid-way, the window in progress fails and a new pass reads
//! what follows it.
//!
//! The TTL guard of `once` looks twice: before anything is written, where it warns and raises
//! the TTL in time for the work, and after, on what the run left unarchived — which alone
//! decides whether the run failed on it.

use std::collections::{BTreeSet, VecDeque};

use auditlog_common::shutdown::close_client;
use auditlog_common::store::{ServerInfo, Store};
use chrono::{DateTime, Utc};
use mongodb::bson;
use tokio::time::Instant;

use crate::config::Settings;
use crate::digest;
use crate::error::{ArchiveError, Result};
use crate::export;
use crate::guard::{self, GuardReport};
use crate::integrity::{self, IntegrityReport};
use crate::keys::{PublicKeys, Signer25519};
use crate::metrics::Metrics;
use crate::pass::{self, Passed, Written};
use crate::plan::{Scope, MAX_RUNS, OPEN_END};
use crate::progress::Progress;
use crate::purge::{self, PurgeReport};
use crate::sink::Sink;
use crate::source::Source;
use crate::state::{window_checksum, FileRecord, Lease, State, WindowRecord};
use crate::status::{self, StatusReport};
use crate::stream::Events;
use crate::tally::{self, Count};
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
    /// Signs each run's digest; `None`: the archive is not signed.
    signer: Option<Signer25519>,
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
    /// Checks the settings and opens the archive's storage before MongoDB (a bad setting is
    /// refused without waiting for a server), then connects. Call [`Archiver::close`] before
    /// the runtime stops.
    pub async fn connect(settings: Settings, metrics: Metrics) -> Result<Self> {
        settings.validate()?;
        let signer = settings
            .signing_key_file
            .as_deref()
            .map(Signer25519::load)
            .transpose()?;
        let sink = Sink::open(&settings)?;
        let store = Store::connect(&settings.mongo, "auditlog-archiver").await?;
        let server = match store.server_info().await {
            Ok(server) => server,
            Err(e) => {
                close_client(&store.client).await;
                return Err(e.into());
            }
        };
        tracing::info!(server = %server.describe(), "connected to MongoDB");
        let source = Source::new(&store);
        let state = State::new(&store);
        match &signer {
            Some(s) => {
                tracing::info!(key_id = %s.id(), "each run's digest is signed (docs/integrity.md)")
            }
            None => tracing::warn!(
                "the archive is not signed: set AUDIT_ARCHIVE_SIGNING_KEY_FILE to make edits, \
                 deletions and insertions in it detectable (docs/integrity.md)"
            ),
        }
        Ok(Archiver {
            settings,
            store,
            server,
            source,
            sink,
            state,
            metrics,
            signer,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Shuts the MongoDB client down (see [`close_client`]); every command's way out ends here.
    pub async fn close(&self) {
        close_client(&self.store.client).await;
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

    /// `verify --public-key`: the signed archive against its digests and the archive state.
    pub async fn integrity(
        &self,
        keys: &PublicKeys,
        range: integrity::Range,
    ) -> Result<IntegrityReport> {
        integrity::check(&self.state, &self.sink, keys, range).await
    }

    /// `once` (and every firing of `run`): guard, archive every due window, and guard again on
    /// what is left; a run that finishes without error is recorded in the runs document (for
    /// the service's alerts and the guard's expected run time).
    pub async fn once(&self) -> Result<RunReport> {
        let started = Instant::now();
        let lease = self.lease().await?;
        let mut result = self.once_locked(&lease, started).await;
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

    async fn once_locked(&self, lease: &Lease, started: Instant) -> Result<RunReport> {
        let recorded = self.state.recorded_starts().await?;
        let len = self.settings.window_seconds();
        let cutoff = self.settings.due_cutoff(Utc::now());
        let last_run_seconds = self.state.last_run_seconds().await?;
        // What to archive comes from the state: every unrecorded window that is due.
        let everything = Scope::unarchived(&recorded, None, len);
        let mut scope = Scope::unarchived(&recorded, Some(cutoff), len);
        let mut known_oldest = None;
        if scope.runs().len() > MAX_RUNS {
            // Many gaps between recorded windows: start at the oldest unarchived event.
            let t = self.source.first_in(&everything).await?;
            scope = match t {
                Some(t) => scope.from(Window::containing(t, len).start),
                None => Scope::of_windows(&[], len),
            };
            known_oldest = Some(t);
        }
        let cursor_batch = self.cursor_batch().await;
        let mut first = Pass::open(&self.source, scope, cursor_batch);
        // The stream's first row is the oldest unarchived event that is due; with none, the
        // oldest unarchived event is not due yet (or there is none).
        let oldest = match known_oldest {
            Some(t) => t,
            None => match first.events.peek_time().await? {
                Some(t) => Some(t),
                None => {
                    let due_end = Window::containing(cutoff, len).start;
                    self.source.first_in(&everything.from(due_end)).await?
                }
            },
        };
        // The guard runs before anything is written, so a TTL about to expire unarchived events
        // is raised before the (possibly long) archive work.
        lease.check()?;
        let before = self.guard(oldest, last_run_seconds, true).await?;
        let mut report = self.archive(first, recorded, cursor_batch, lease).await?;
        self.metrics
            .due_windows
            .set((report.archived + report.failed) as i64);
        // The run's outcome is the state it leaves: a run that archived every event at risk
        // (catching up on a backlog past the retention) succeeded, and one that left one at
        // risk did not, whatever the guard said before it. The error logged above still says
        // what was at risk then. The expected run time is the longer of the last run and this
        // one (which the runs record is about to hold).
        let last_run_seconds = last_run_seconds
            .unwrap_or_default()
            .max(started.elapsed().as_secs_f64());
        let after = self
            .guard_after_run(Some(last_run_seconds), !before.triggered)
            .await?;
        report.guard = Some(after.clone());
        if after.triggered {
            return Err(after.error());
        }
        if before.triggered {
            tracing::warn!(
                oldest_unarchived = %after
                    .oldest_unarchived
                    .map_or_else(|| "none".to_owned(), |t| t.to_rfc3339()),
                "TTL guard: this run archived the events that were at risk; none left expires \
                 before the next run"
            );
        }
        if report.failed > 0 {
            return Err(ArchiveError::WindowsFailed {
                failed: report.failed,
                total: report.failed + report.archived,
            });
        }
        Ok(report)
    }

    /// The TTL guard on the state after a run: the oldest event still unarchived, read again.
    /// With `act`, an event at risk is logged, counted and the TTL raised, as before a run
    /// (only needed when the guard before it did not already).
    async fn guard_after_run(
        &self,
        last_run_seconds: Option<f64>,
        act: bool,
    ) -> Result<GuardReport> {
        let recorded = self.state.recorded_starts().await?;
        let len = self.settings.window_seconds();
        let oldest = self
            .source
            .first_in(&Scope::unarchived(&recorded, None, len))
            .await?;
        self.guard(oldest, last_run_seconds, act).await
    }

    /// The TTL guard on `oldest`, the oldest unarchived event (see [`guard::check`]).
    async fn guard(
        &self,
        oldest: Option<DateTime<Utc>>,
        last_run_seconds: Option<f64>,
        act: bool,
    ) -> Result<GuardReport> {
        guard::check(
            &self.store,
            self.server.supports_ttl(),
            &self.settings,
            &self.metrics,
            oldest,
            last_run_seconds,
            act,
        )
        .await
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
            let len = self.settings.window_seconds();
            let mut todo = vec![];
            let mut skipped = 0;
            for w in windows_covering(from, to, len) {
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
                todo.push(w);
            }
            // Windows without events are read past, not recorded.
            let cursor_batch = self.cursor_batch().await;
            let first = Pass::open(&self.source, Scope::of_windows(&todo, len), cursor_batch);
            let mut report = self.archive(first, recorded, cursor_batch, &lease).await?;
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

    /// Documents per cursor batch, measured once per run.
    async fn cursor_batch(&self) -> u32 {
        self.source
            .cursor_batch_size(self.settings.batch_size)
            .await
    }

    /// Archives what `first` reads, and what it leaves to read again. A window that fails is
    /// logged, counted and left for the next run; the others go on. `recorded`: the windows
    /// recorded before.
    async fn archive(
        &self,
        first: Pass,
        recorded: BTreeSet<DateTime<Utc>>,
        cursor_batch: u32,
        lease: &Lease,
    ) -> Result<RunReport> {
        let mut books = Books {
            report: RunReport::default(),
            progress: Progress::new(),
            ledger: Ledger {
                recorded,
                ..Ledger::default()
            },
        };
        let mut first = Some(first);
        let mut later: VecDeque<(Scope, Again)> = VecDeque::new();
        loop {
            let (mut pass, again) = match first.take() {
                Some(p) => (p, None),
                None => match later.pop_front() {
                    Some((scope, again)) => {
                        (Pass::open(&self.source, scope, cursor_batch), Some(again))
                    }
                    None => break,
                },
            };
            lease.check()?;
            let Some(start) = self
                .first_window(&mut pass, again, &mut books.report)
                .await?
            else {
                continue;
            };
            books
                .progress
                .begin_pass(pass.scope.windows_between(start, OPEN_END), start);
            let passed = pass::write(
                &mut pass.events,
                &pass.scope,
                &self.sink,
                &self.settings,
                self.source.name(),
                lease,
                &mut books.progress,
            )
            .await?;
            let Pass {
                scope,
                events,
                count,
            } = pass;
            drop(events);
            for _ in &passed.failed {
                books.report.failed += 1;
                self.metrics.window_failures.inc();
            }
            books
                .ledger
                .streamed
                .extend(passed.streamed.keys().copied());
            let stopped_at = passed.stopped_at;
            let to_redo = self
                .verify_and_record(&scope, count, passed, again, lease, &mut books)
                .await?;
            later.extend(self.passes_after(&scope, to_redo, stopped_at));
        }
        books.progress.finish();
        // Signed, every window this run (or a crashed one before it) recorded is listed in the
        // chain's next digest before the run counts as done.
        if let Some(signer) = &self.signer {
            lease.check()?;
            digest::seal(&self.state, &self.sink, signer, self.source.name(), lease).await?;
        }
        Ok(books.report)
    }

    /// The first window a pass reads, from its first event; `None` when it has none, or when
    /// a later pass cannot read (its windows then fail and wait for the next run). A first
    /// pass that cannot read fails the run: it is the discovery.
    async fn first_window(
        &self,
        pass: &mut Pass,
        again: Option<Again>,
        report: &mut RunReport,
    ) -> Result<Option<DateTime<Utc>>> {
        match pass.events.peek_time().await {
            Ok(Some(t)) => Ok(Some(pass.scope.window_of(t).start)),
            Ok(None) => Ok(None),
            Err(e) if again.is_none() => Err(e),
            Err(e) => {
                tracing::error!(error = %e,
                    "reading the events failed; the windows are left for the next run");
                let windows = again.map_or(1, |a| a.windows);
                report.failed += windows;
                self.metrics.window_failures.inc_by(windows as u64);
                Ok(None)
            }
        }
    }

    /// Compares the pass's count with the rows it streamed, and records each written window
    /// whose count matches. Returns the windows to read again: a window whose count differs
    /// is read again once, and fails on a second difference.
    async fn verify_and_record(
        &self,
        scope: &Scope,
        count: Count,
        passed: Passed,
        again: Option<Again>,
        lease: &Lease,
        books: &mut Books,
    ) -> Result<Vec<Window>> {
        // The count covers what was read completely: all, or what came before the window the
        // stream failed in.
        let until = passed.stopped_at.map(|w| w.start);
        let count = match until {
            None => count,
            Some(t) => {
                drop(count);
                Count::start(&self.source, &scope.before(t))
            }
        };
        let streamed = passed.streamed_before(until);
        let may_redo = again.is_none_or(|a| !a.redo);
        let mismatched =
            match tally::mismatches(&self.source, count, streamed, &passed.written).await {
                Ok(mismatched) => mismatched,
                Err(e) => {
                    // Unverified, so unrecorded: the next run writes these windows again.
                    let reason = e.to_string();
                    for w in passed.written {
                        let e = ArchiveError::NotVerified {
                            reason: reason.clone(),
                        };
                        self.failed(&w.window, e, &mut books.report);
                    }
                    return Ok(vec![]);
                }
            };
        if mismatched.is_empty() && until.is_none() {
            books
                .ledger
                .settled
                .push((scope.clone(), passed.streamed.keys().copied().collect()));
        }
        let mut to_redo = vec![];
        for w in passed.written {
            match mismatched.get(&w.window.start) {
                None => {
                    self.record(
                        w,
                        lease,
                        &mut books.ledger,
                        &mut books.report,
                        &mut books.progress,
                    )
                    .await?
                }
                Some(_) if may_redo => to_redo.push(w.window),
                Some(&counted) => {
                    let e = ArchiveError::CountMismatch {
                        window: w.window.id(),
                        written: w.rows,
                        expected: counted,
                    };
                    self.failed(&w.window, e, &mut books.report);
                }
            }
        }
        Ok(to_redo)
    }

    /// The passes a pass leaves for later: its windows to read again, together, and what
    /// follows the window its stream failed in.
    fn passes_after(
        &self,
        scope: &Scope,
        to_redo: Vec<Window>,
        stopped_at: Option<Window>,
    ) -> Vec<(Scope, Again)> {
        let mut later = vec![];
        if !to_redo.is_empty() {
            let redo = Scope::of_windows(&to_redo, self.settings.window_seconds());
            later.push((
                redo,
                Again {
                    redo: true,
                    windows: to_redo.len(),
                },
            ));
        }
        if let Some(w) = stopped_at {
            let rest = scope.from(w.end);
            if !rest.is_empty() {
                later.push((
                    rest,
                    Again {
                        redo: false,
                        windows: 1,
                    },
                ));
            }
        }
        later
    }

    /// A window that was not archived: logged, counted, left for the next run.
    fn failed(&self, w: &Window, e: ArchiveError, report: &mut RunReport) {
        report.failed += 1;
        self.metrics.window_failures.inc();
        tracing::error!(window = %w.id(), error = %e, "window not archived; it will be retried on the next run");
    }

    /// Publishes and records a verified window. Only a lost lease is an error: any other
    /// failure fails this window alone.
    async fn record(
        &self,
        written: Written,
        lease: &Lease,
        ledger: &mut Ledger,
        report: &mut RunReport,
        progress: &mut Progress,
    ) -> Result<()> {
        let w = written.window;
        match self.publish_and_record(written, lease, ledger).await {
            Ok(rec) => {
                report.archived += 1;
                report.rows += rec.rows as u64;
                report.bytes += rec.bytes as u64;
                progress.window_done(&w, rec.rows as u64, rec.bytes as u64, rec.files.len());
                Ok(())
            }
            Err(e @ ArchiveError::LeaseLost { .. }) => {
                tracing::error!(window = %w.id(), error = %e,
                    "lease lost: the window was not recorded and no other window is started");
                Err(e)
            }
            Err(e) => {
                self.failed(&w, e, report);
                Ok(())
            }
        }
    }

    async fn publish_and_record(
        &self,
        written: Written,
        lease: &Lease,
        ledger: &mut Ledger,
    ) -> Result<WindowRecord> {
        let w = written.window;
        let published = export::publish(&self.sink, lease, &w, written.files, written.rows).await?;
        let files: Vec<FileRecord> = published.iter().map(FileRecord::from).collect();
        let bytes: u64 = published.iter().map(|f| f.bytes).sum();
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
            digest_sequence: None,
        };
        // The lease may have been lost since the files were published: then another archiver
        // may be rewriting the same names, and only it may record the window.
        lease.check()?;
        self.state.record(&rec).await?;
        ledger.recorded.insert(w.start);
        self.metrics.windows_archived.inc();
        self.metrics.rows_archived.inc_by(written.rows);
        self.metrics.bytes_archived.inc_by(bytes);
        self.metrics.last_archived_end_seconds.set(
            self.metrics
                .last_archived_end_seconds
                .get()
                .max(w.end.timestamp()),
        );
        self.mark_complete_partitions(&w, &rec, lease, ledger)
            .await?;
        Ok(rec)
    }

    /// Writes `_SUCCESS` into each partition holding this window's files once every window
    /// sharing that partition is archived (or has no events).
    async fn mark_complete_partitions(
        &self,
        w: &Window,
        rec: &WindowRecord,
        lease: &Lease,
        ledger: &Ledger,
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
                if other == *w || ledger.recorded.contains(&other.start) || ledger.empty(&other) {
                    continue;
                }
                // Read in this run but not recorded (yet): its own record marks the partition.
                if ledger.streamed.contains(&other.start) {
                    complete = false;
                    break;
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

/// A pass: the stream of a scope and MongoDB's count of it, both under way.
struct Pass {
    scope: Scope,
    events: Events,
    count: Count,
}

impl Pass {
    fn open(source: &Source, scope: Scope, cursor_batch: u32) -> Self {
        Pass {
            count: Count::start(source, &scope),
            events: Events::open(source, &scope, cursor_batch),
            scope,
        }
    }
}

/// Why a later pass reads again.
#[derive(Debug, Clone, Copy)]
struct Again {
    /// Windows whose count differed (a second difference fails them); else what follows a
    /// failed stream.
    redo: bool,
    /// Windows that fail if the pass cannot read at all.
    windows: usize,
}

/// What a run keeps as it goes: its report, its progress display, and its ledger.
struct Books {
    report: RunReport,
    progress: Progress,
    ledger: Ledger,
}

/// What this run knows of windows without asking MongoDB (for `_SUCCESS`).
#[derive(Debug, Default)]
struct Ledger {
    /// Windows recorded, before or during this run.
    recorded: BTreeSet<DateTime<Utc>>,
    /// Windows that streamed rows in this run.
    streamed: BTreeSet<DateTime<Utc>>,
    /// Scopes read completely whose count equalled the rows streamed, with their windows that
    /// streamed rows: their other windows hold no events.
    settled: Vec<(Scope, BTreeSet<DateTime<Utc>>)>,
}

impl Ledger {
    fn empty(&self, w: &Window) -> bool {
        self.settled
            .iter()
            .any(|(scope, with_rows)| scope.contains(w) && !with_rows.contains(&w.start))
    }
}
