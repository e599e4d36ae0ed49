//! `run`: the daemon. `tokio-cron-scheduler` fires on `AUDIT_ARCHIVE_SCHEDULE` (UTC) and each
//! firing archives every due window exactly like `once` (and, when it succeeds, records the
//! run in `archive_runs`); `/healthz` and Prometheus `/metrics` are served on
//! `AUDIT_ARCHIVER_LISTEN_ADDR`. A firing while the previous run still works is skipped
//! (logged), never queued. SIGTERM/SIGINT stop the server and the scheduler and wait (up to a
//! minute) for a running archive to finish (a window's files are unpublished temporaries until
//! its count is verified, so even a SIGKILL leaves nothing half-visible).

use std::sync::Arc;
use std::time::Duration;

use auditlog_common::shutdown::shutdown_signal;
use chrono::Utc;
use poem::endpoint::make_sync;
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::{get, Response, Route, Server};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::archive::Archiver;
use crate::error::{ArchiveError, Result};

/// Serves until SIGTERM/SIGINT; the caller shuts `archiver`'s client down after.
pub async fn run(archiver: Arc<Archiver>) -> Result<()> {
    let busy = Arc::new(Mutex::new(()));
    let addr = archiver.settings().listen_addr.clone();
    let schedule = archiver.settings().archive_schedule.clone();

    let mut scheduler = JobScheduler::new()
        .await
        .map_err(|e| ArchiveError::Other(format!("cannot create the scheduler: {e}")))?;
    let job = {
        let archiver = archiver.clone();
        let busy = busy.clone();
        Job::new_async_tz(schedule.as_str(), Utc, move |_id, _sched| {
            let archiver = archiver.clone();
            let busy = busy.clone();
            Box::pin(async move { tick(&archiver, &busy).await })
        })
        .map_err(|e| ArchiveError::Config(format!("AUDIT_ARCHIVE_SCHEDULE `{schedule}`: {e}")))?
    };
    scheduler
        .add(job)
        .await
        .map_err(|e| ArchiveError::Other(format!("cannot schedule the archive job: {e}")))?;
    scheduler
        .start()
        .await
        .map_err(|e| ArchiveError::Other(format!("cannot start the scheduler: {e}")))?;

    let metrics = archiver.metrics().clone();
    let app = Route::new()
        .at(
            "/healthz",
            get(make_sync(|_| {
                Response::builder()
                    .content_type("application/json")
                    .body(r#"{"status":"ok"}"#)
            })),
        )
        .at(
            "/metrics",
            get(make_sync(move |_| match metrics.render() {
                Ok(text) => Response::builder()
                    .content_type("text/plain; version=0.0.4")
                    .body(text),
                Err(e) => Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(format!("cannot render metrics: {e}")),
            })),
        );
    tracing::info!(%addr, %schedule, "archiver daemon listening (/healthz, /metrics)");
    Server::new(TcpListener::bind(addr.as_str()))
        .run_with_graceful_shutdown(app, shutdown_signal(), Some(Duration::from_secs(5)))
        .await
        .map_err(|e| ArchiveError::Other(format!("cannot serve on {addr}: {e}")))?;

    tracing::info!("shutting down: waiting for a running archive to finish");
    let _ = scheduler.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(60), busy.lock()).await;
    Ok(())
}

/// One scheduled firing.
async fn tick(archiver: &Archiver, busy: &Mutex<()>) {
    let Ok(_guard) = busy.try_lock() else {
        tracing::warn!("previous archive run still working; skipping this firing");
        return;
    };
    tracing::info!("scheduled archive run starting");
    match archiver.once().await {
        Ok(r) => tracing::info!(
            archived = r.archived,
            rows = r.rows,
            bytes = r.bytes,
            "scheduled archive run finished"
        ),
        Err(e @ ArchiveError::LeaseBusy { .. }) => {
            tracing::info!(reason = %e, "another archiver is working; skipped")
        }
        Err(e) => tracing::error!(error = %e, "scheduled archive run failed"),
    }
}
