//! `complete_until`: the instant before which every event that will ever be stored is
//! findable now — derived from what the replicas actually hold, in both ingest modes.
//!
//! - [`tracker`]: what this replica holds (events not yet stored, published but not yet
//!   confirmed, delivered but not yet settled), the `created_at` every event gets, and in queue
//!   mode what it handed to RabbitMQ and when it saw the queue empty.
//! - [`record`]: the replica's record in MongoDB (`service_replicas`), and the pure rule that
//!   turns the records into `complete_until`, with the argument for it.
//! - [`heartbeat`]: writes this replica's record and reads the others' about once a second,
//!   finds replicas that died (queue mode), and sets the lag metric.
//!
//! docs/api.md ("complete_until") tells readers what it promises and how a dead replica is
//! handled.

pub mod heartbeat;
pub mod record;
pub mod tracker;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::Document;
use mongodb::Collection;
use tokio::sync::{watch, Notify};

pub use record::Mode;
use record::{Params, Record};
pub use tracker::{Hold, Tracker};

/// How long a delivery may wait in the drain's connection before the drain holds it.
const DELIVERY_MARGIN: Duration = Duration::from_secs(1);

/// The watermark's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: Mode,
    /// How long after its `created_at` a direct-mode write may still land: the write deadline,
    /// the server-selection timeout and the clock skew.
    pub lag: Duration,
    /// How far apart two replicas' clocks may be (`AUDIT_CLOCK_SKEW_SECS`).
    pub skew: Duration,
}

/// This replica's watermark: its tracker, the others' records, and what it served.
pub struct Watermark {
    id: String,
    settings: Settings,
    tracker: Arc<Tracker>,
    records: Collection<Document>,
    others: Mutex<Vec<Record>>,
    /// The greatest `complete_until` served (ms).
    served: AtomicI64,
    /// Queue mode: the exclusive queue that lives as long as this replica's connection.
    liveness: Mutex<Option<String>>,
    /// `at` of the last record written (ms; 0: none yet).
    written: watch::Sender<i64>,
    /// Asks the heartbeat for a record now.
    nudge: Notify,
}

impl Watermark {
    pub fn new(settings: Settings, records: Collection<Document>) -> Arc<Watermark> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
        let id = format!("{host}-{}", mongodb::bson::oid::ObjectId::new().to_hex());
        Arc::new(Watermark {
            id,
            settings,
            tracker: Arc::new(Tracker::default()),
            records,
            others: Mutex::new(Vec::new()),
            served: AtomicI64::new(0),
            liveness: Mutex::new(None),
            written: watch::channel(0).0,
            nudge: Notify::new(),
        })
    }

    /// This replica's id in `service_replicas`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// A new event's `created_at`, held until its fate is known.
    pub fn stamp(&self) -> Hold {
        self.tracker.stamp()
    }

    fn params(&self, now_ms: i64) -> Params {
        Params {
            now_ms,
            lag_ms: millis(self.settings.lag),
            skew_ms: millis(self.settings.skew),
            margin_ms: millis(DELIVERY_MARGIN),
        }
    }

    fn lock_others(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This replica's record as of now.
    fn own_record(&self) -> Record {
        Record {
            id: self.id.clone(),
            mode: self.settings.mode,
            snap: self.tracker.snapshot(),
            served_ms: Some(self.served.load(Ordering::Relaxed)).filter(|s| *s > 0),
            dead_at_ms: None,
            liveness: self
                .liveness
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// `complete_until` now: this replica's state as of now, the others' as last read.
    pub fn complete_until(&self) -> DateTime<Utc> {
        let me = self.own_record();
        let params = self.params(me.snap.at_ms);
        let w = record::complete_until(&me, &self.lock_others(), &params);
        self.served.fetch_max(w, Ordering::Relaxed);
        DateTime::from_timestamp_millis(w).unwrap_or_default()
    }

    /// Direct mode: whether this replica may take events. It may not before its first record
    /// is written, nor while its record is older than the write lag: other replicas drop a
    /// record older than twice that, which is safe only because its replica took nothing
    /// since. Queue mode always may (an old record holds `complete_until` back instead).
    pub fn accepting(&self) -> Result<(), String> {
        if self.settings.mode == Mode::Queue {
            return Ok(());
        }
        let written = *self.written.borrow();
        let age = tracker::now_ms() - written;
        if written == 0 {
            return Err("this replica has not yet recorded its state in MongoDB".into());
        }
        if age > millis(self.settings.lag) {
            return Err(format!(
                "this replica cannot record its state in MongoDB (last recorded {} s ago)",
                age / 1000
            ));
        }
        Ok(())
    }

    /// Writes this replica's record now; `Ok` once MongoDB took it.
    pub async fn record_now(&self) -> Result<(), mongodb::error::Error> {
        let me = self.own_record();
        let at = me.snap.at_ms;
        self.records
            .replace_one(
                mongodb::bson::doc! { record::field::ID: &self.id },
                me.to_document(),
            )
            .upsert(true)
            .await?;
        self.written.send_if_modified(|w| {
            let newer = at > *w;
            if newer {
                *w = at;
            }
            newer
        });
        Ok(())
    }

    /// Queue mode: a new RabbitMQ connection is up and its exclusive queue `liveness` declared.
    /// Returns once a record naming it is written, so that no replica can find this one dead
    /// while it publishes or consumes on that connection; `Err` after `within`.
    pub async fn link_up(&self, liveness: String, within: Duration) -> Result<(), String> {
        *self.liveness.lock().unwrap_or_else(|e| e.into_inner()) = Some(liveness);
        let since = tracker::now_ms();
        let mut written = self.written.subscribe();
        self.nudge.notify_one();
        tokio::time::timeout(within, written.wait_for(|w| *w >= since))
            .await
            .map_err(|_| {
                format!(
                    "this replica could not record its state in MongoDB within {} s",
                    within.as_secs()
                )
            })?
            .map_err(|_| "the watermark stopped".to_owned())?;
        Ok(())
    }

    /// The exclusive queue name for this replica under the events' queue `queue`.
    pub fn liveness_queue(&self, queue: &str) -> String {
        format!("{queue}.replica.{}", self.id)
    }

    /// The replica is stopping and holds nothing more: its record says so, and others stop
    /// waiting for it (queue mode: once an empty poll follows; its connection is closed).
    pub async fn retire(&self) {
        let mut me = self.own_record();
        me.dead_at_ms = Some(me.snap.at_ms);
        let write = async {
            self.records
                .replace_one(
                    mongodb::bson::doc! { record::field::ID: &self.id },
                    me.to_document(),
                )
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot retire this replica's record; others wait for it until it is found dead"),
            Err(_) => tracing::warn!("cannot retire this replica's record in time; others wait for it until it is found dead"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
