//! `purge`: where the server has no TTL index, events leave MongoDB only here, and only when
//! their window is archived, its files still read back with the recorded row count, MongoDB
//! still holds exactly that many events for the window, and the window is older than
//! `AUDIT_RETENTION_DAYS`. When the archive is signed, the window must also be listed in a
//! digest of the chain: events leave MongoDB only once their files are under a signature.
//! Anything else is skipped with a reason, never deleted.

use chrono::Utc;
use mongodb::bson::{self, doc};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{ArchiveError, Result};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::{Lease, State};

#[derive(Debug, Default, Serialize)]
pub struct PurgeReport {
    pub purged_windows: usize,
    pub purged_rows: u64,
    pub skipped: Vec<String>,
    pub dry_run: bool,
}

/// Purges under the lease (taken here, for `settings.lease_ttl`).
pub async fn purge(
    settings: &Settings,
    server_supports_ttl: bool,
    source: &Source,
    state: &State,
    sink: &Sink,
    metrics: &Metrics,
    dry_run: bool,
) -> Result<PurgeReport> {
    let Some(retention) = settings.retention_seconds() else {
        return Err(ArchiveError::Config(
            "AUDIT_RETENTION_DAYS is 0 (keep forever): purge has nothing to do".into(),
        ));
    };
    if server_supports_ttl {
        tracing::info!("this server has TTL indexes; purge only removes what TTL has not yet");
    }
    let lease = state.acquire_lease(settings.lease_ttl).await?;
    // Signed: the archiver holds a key, so every window it archived goes into the chain.
    let digested_up_to = if settings.signing_key_file.is_some() {
        Some(state.digest_head().await?.map_or(0, |h| h.sequence))
    } else {
        None
    };
    let result = purge_locked(
        source,
        state,
        sink,
        metrics,
        Limits {
            retention_seconds: retention,
            digested_up_to,
        },
        dry_run,
        &lease,
    )
    .await;
    lease.release().await;
    result
}

/// What a window must satisfy beyond its own checks.
struct Limits {
    retention_seconds: i64,
    /// Signed archive: the chain's head sequence; a window must be listed at or before it.
    digested_up_to: Option<i64>,
}

async fn purge_locked(
    source: &Source,
    state: &State,
    sink: &Sink,
    metrics: &Metrics,
    limits: Limits,
    dry_run: bool,
    lease: &Lease,
) -> Result<PurgeReport> {
    let horizon = Utc::now() - chrono::Duration::seconds(limits.retention_seconds);
    let mut report = PurgeReport {
        dry_run,
        ..PurgeReport::default()
    };
    for rec in state.all().await? {
        let w = rec.window();
        if rec.purged_at.is_some() || w.end > horizon {
            continue;
        }
        if let Some(head) = limits.digested_up_to {
            if rec.digest_sequence.is_none_or(|s| s > head) {
                report.skipped.push(format!(
                    "{}: no signed digest lists it yet (the next archive run writes one)",
                    w.id()
                ));
                continue;
            }
        }
        let mut file_rows = 0i64;
        let mut unreadable = None;
        for f in &rec.files {
            match sink.footer_rows(&f.path).await {
                Ok((r, _)) => file_rows += r as i64,
                Err(e) => unreadable = Some(format!("{}: {e}", f.path)),
            }
        }
        if let Some(why) = unreadable {
            report
                .skipped
                .push(format!("{}: archive file unreadable ({why})", w.id()));
            continue;
        }
        if file_rows != rec.rows {
            report.skipped.push(format!(
                "{}: files hold {file_rows} rows, recorded {}",
                w.id(),
                rec.rows
            ));
            continue;
        }
        let count = source.count(&w).await? as i64;
        if count != rec.rows {
            report.skipped.push(format!(
                "{}: MongoDB holds {count} events but {} were archived; archive it again \
                 (backfill) before purging",
                w.id(),
                rec.rows
            ));
            continue;
        }
        if dry_run {
            report.purged_windows += 1;
            report.purged_rows += count as u64;
            continue;
        }
        lease.check()?;
        let deleted = source.delete_window(&w).await?;
        state
            .mark(
                rec.start,
                doc! { "purged_at": bson::DateTime::now(), "purged_rows": deleted as i64 },
            )
            .await?;
        metrics.purged_rows.inc_by(deleted);
        tracing::info!(window = %w.id(), deleted, "purged archived window from MongoDB");
        report.purged_windows += 1;
        report.purged_rows += deleted;
    }
    for s in &report.skipped {
        tracing::warn!(reason = %s, "window not purged");
    }
    Ok(report)
}
