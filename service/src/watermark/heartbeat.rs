//! The watermark's background task: about once a second it writes this replica's record to
//! `service_replicas`, reads every replica's, sets the lag metrics, and in queue mode finds the
//! replicas that died. Once a minute it removes records nobody needs any more.
//!
//! A replica is found dead by RabbitMQ, not by the age of its record (an old record may belong
//! to a replica that only cannot write to MongoDB, and still holds messages): each replica
//! declares an exclusive queue on its drain's connection, which RabbitMQ deletes when that
//! connection closes — and with it returns the connection's unacknowledged deliveries to the
//! events' queue. A record older than [`STALE`] whose exclusive queue is gone is marked
//! `dead_at`, on the condition that it has not been written meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use mongodb::bson::doc;

use super::record::{field, Mode, Record};
use super::tracker::now_ms;
use super::Watermark;
use crate::metrics::Metrics;
use crate::queue::link::Links;
use crate::task::{StopHandle, StopSignal};

/// How often the record is written and the others read.
const EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one write or read: a heartbeat that waits longer is late anyway.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A queue-mode record this old has its replica's liveness checked in RabbitMQ.
const STALE: Duration = Duration::from_secs(5);
/// Records of replicas that stopped (or direct-mode ones this old) are removed after this.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often old records are removed.
const GC_EVERY: Duration = Duration::from_secs(60);

/// The running heartbeat.
pub struct HeartbeatTask(StopHandle);

impl HeartbeatTask {
    /// Stops the heartbeat; the caller then retires the record ([`Watermark::retire`]).
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

/// Starts the heartbeat; `links` in queue mode, to find dead replicas.
pub fn start(wm: Arc<Watermark>, metrics: Arc<Metrics>, links: Option<Links>) -> HeartbeatTask {
    HeartbeatTask(StopHandle::spawn("the watermark's heartbeat", |stop| {
        run(wm, metrics, links, stop)
    }))
}

async fn run(
    wm: Arc<Watermark>,
    metrics: Arc<Metrics>,
    links: Option<Links>,
    mut stop: StopSignal,
) {
    let mut failing = false;
    let mut last_gc = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = wm.nudge.notified() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        match tokio::time::timeout(CALL_TIMEOUT, wm.record_now()).await {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("this replica records its state in MongoDB again");
                }
                failing = false;
            }
            outcome => {
                if !failing {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                    };
                    tracing::warn!(%error, "cannot record this replica's state in MongoDB; complete_until waits for it (direct mode: events are refused after the write lag)");
                }
                failing = true;
            }
        }
        if let Ok(Ok(records)) = tokio::time::timeout(CALL_TIMEOUT, read(&wm)).await {
            *wm.lock_others() = records;
        }
        let now = now_ms();
        let until = wm.complete_until().timestamp_millis();
        metrics
            .complete_until_lag
            .set((now - until).max(0) as f64 / 1000.0);
        metrics
            .watermark_record_age
            .set((now - *wm.written.borrow()).max(0) as f64 / 1000.0);
        if let Some(links) = &links {
            find_dead(&wm, links).await;
        }
        if last_gc.elapsed() >= GC_EVERY {
            last_gc = tokio::time::Instant::now();
            forget_old(&wm).await;
        }
    }
}

/// Every other replica's record.
async fn read(wm: &Watermark) -> Result<Vec<Record>, mongodb::error::Error> {
    let docs: Vec<_> = wm.records.find(doc! {}).await?.try_collect().await?;
    Ok(docs
        .iter()
        .filter_map(Record::from_document)
        .filter(|r| r.id != wm.id)
        .collect())
}

/// Marks dead the queue-mode replicas whose records are old and whose exclusive queue is gone.
async fn find_dead(wm: &Watermark, links: &Links) {
    let now = now_ms();
    let stale: Vec<Record> = wm
        .lock_others()
        .iter()
        .filter(|r| {
            r.mode == Mode::Queue
                && r.dead_at_ms.is_none()
                && r.snap.at_ms < now - super::millis(STALE)
        })
        .cloned()
        .collect();
    if stale.is_empty() {
        return;
    }
    let Some(link) = links.current() else { return };
    for r in stale {
        let gone = match &r.liveness {
            // It never had a link: it never published nor consumed.
            None => true,
            Some(name) => match liveness_queue_gone(&link, name).await {
                Ok(gone) => gone,
                Err(e) => {
                    tracing::debug!(error = %e, replica = %r.id, "cannot check a replica's liveness");
                    continue;
                }
            },
        };
        if !gone {
            continue;
        }
        // Only if it was not written meanwhile: a replica that came back writes a new `at`.
        let marked = wm
            .records
            .update_one(
                doc! { field::ID: &r.id, field::AT: r.snap.at_ms },
                doc! { "$set": { field::DEAD_AT: now } },
            )
            .await;
        match marked {
            Ok(u) if u.modified_count == 1 => tracing::info!(
                replica = %r.id,
                last_seen_s_ago = (now - r.snap.at_ms) / 1000,
                "a replica is gone (its RabbitMQ connection closed); complete_until no longer waits for it"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, replica = %r.id, "cannot mark a replica dead"),
        }
    }
}

/// Whether the exclusive queue `name` is gone (a passive declare answers NOT_FOUND).
async fn liveness_queue_gone(
    link: &crate::queue::link::Link,
    name: &str,
) -> Result<bool, lapin::Error> {
    let channel = link.consumer().create_channel().await?;
    let declared = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(_) => {
            let _ = channel.close(200, "".into()).await;
            Ok(false)
        }
        // NOT_FOUND closes the channel.
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404 => Ok(true),
            _ => Err(e),
        },
    }
}

/// Removes the records of replicas that stopped, or (direct mode) went silent, long ago.
async fn forget_old(wm: &Watermark) {
    let before = now_ms() - super::millis(FORGET_AFTER);
    let filter = doc! {
        field::AT: { "$lt": before },
        "$or": [
            { field::DEAD_AT: { "$ne": null } },
            { field::MODE: "direct" },
        ],
    };
    if let Err(e) = wm.records.delete_many(filter).await {
        tracing::debug!(error = %e, "cannot remove old replica records");
    }
}
