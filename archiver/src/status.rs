//! `status`: what an operator asks first — what is archived, what is due, how far behind,
//! how long until TTL would expire the oldest unarchived event, and how long it must last
//! (until the next scheduled run is expected to have archived it, plus the margin).

use std::fmt::Write as _;

use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::error::Result;
use crate::guard::{self, GuardReport};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::State;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub source: String,
    pub archive_url: String,
    pub archived_windows: usize,
    pub archived_rows: i64,
    pub last_archived_window: Option<WindowSummary>,
    /// Windows with events, past `archive_after + grace`, not archived yet.
    pub due_windows: usize,
    pub oldest_due_window: Option<DateTime<Utc>>,
    /// How long the oldest due window has been due (0 when nothing is due).
    pub lag_seconds: i64,
    pub guard: GuardReport,
    pub next_scheduled_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct WindowSummary {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows: i64,
    pub files: usize,
    pub archived_at: DateTime<Utc>,
}

/// Builds the report. Reads only; the guard is evaluated without acting.
pub async fn status(
    settings: &Settings,
    store: &Store,
    server_supports_ttl: bool,
    source: &Source,
    state: &State,
    sink: &Sink,
    metrics: &Metrics,
) -> Result<StatusReport> {
    let now = Utc::now();
    let records = state.all().await?;
    let recorded = records.iter().map(|r| r.start.to_chrono()).collect();
    let cutoff = settings.due_cutoff(now);
    let (due, oldest) = source
        .unarchived(&recorded, cutoff, settings.window_seconds())
        .await?;
    let last_run_seconds = state.last_run_seconds().await?;
    let guard = guard::check(
        store,
        server_supports_ttl,
        settings,
        metrics,
        oldest,
        last_run_seconds,
        false,
    )
    .await?;
    let last = records.iter().max_by_key(|r| r.end).map(|r| WindowSummary {
        start: r.start.to_chrono(),
        end: r.end.to_chrono(),
        rows: r.rows,
        files: r.files.len(),
        archived_at: r.archived_at.to_chrono(),
    });
    let lag_seconds = due
        .first()
        .map(|w| (cutoff - w.end).num_seconds().max(0))
        .unwrap_or(0);
    Ok(StatusReport {
        now,
        source: source.name().to_owned(),
        archive_url: sink.url().to_owned(),
        archived_windows: records.len(),
        archived_rows: records.iter().map(|r| r.rows).sum(),
        last_archived_window: last,
        due_windows: due.len(),
        oldest_due_window: due.first().map(|w| w.start),
        lag_seconds,
        guard,
        next_scheduled_run: settings.archive_schedule.next_after(now),
    })
}

pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "source:               {}", r.source);
    let _ = writeln!(s, "archive:              {}", r.archive_url);
    let _ = writeln!(
        s,
        "archived:             {} windows, {} events",
        r.archived_windows, r.archived_rows
    );
    match &r.last_archived_window {
        Some(w) => {
            let _ = writeln!(
                s,
                "last archived window: {} .. {} ({} events, {} files, at {})",
                w.start, w.end, w.rows, w.files, w.archived_at
            );
        }
        None => {
            let _ = writeln!(s, "last archived window: none");
        }
    }
    let _ = writeln!(
        s,
        "due windows:          {}{}",
        r.due_windows,
        r.oldest_due_window
            .map(|t| format!(" (oldest starts {t})"))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "lag:                  {} s", r.lag_seconds);
    let g = &r.guard;
    let expiry =
        match (g.seconds_left, g.ttl_seconds) {
            (Some(left), Some(ttl)) => {
                format!(
            "{left} s left before expiry of the oldest unarchived event ({}; TTL {ttl} s from \
             {:?}); it must last {} s (next run + {} s expected run time + {} s margin){}",
            g.oldest_unarchived.map(|t| t.to_rfc3339()).unwrap_or_default(),
            g.ttl_source,
            g.must_last_seconds,
            g.expected_run_seconds,
            g.safety_margin_seconds,
            if g.triggered { " — TTL GUARD TRIGGERED" } else { "" }
        )
            }
            (None, Some(_)) => "nothing unarchived".into(),
            _ => "no TTL and no retention: nothing expires".into(),
        };
    let _ = writeln!(s, "ttl:                  {expiry}");
    if let Some(n) = r.next_scheduled_run {
        let _ = writeln!(s, "next scheduled run:   {n}");
    }
    s
}
