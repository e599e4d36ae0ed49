//! Closed-loop producers for the service's load and outage tests: each sends one event at a
//! time — with an id it chose (so a refused event is known too), or one the service assigns —
//! and the tally records what every producer was told and how long it waited.
//!
//! Every event carries a sequence number of its own in `payload.seq`, unique over the run, so a
//! test can tell one event from another whoever chose its id: the store's `_id` being unique,
//! counting stored ids finds a lost event but never one stored twice under two ids; counting
//! stored documents per `seq` finds both.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use serde_json::{json, Value};

use super::support::{Api, KEY};

/// How the producers behave.
#[derive(Clone)]
pub struct Load {
    pub producers: usize,
    /// Events each producer sends at most; `None`: until stopped.
    pub per_producer: Option<usize>,
    /// Pause between one answer and the next event.
    pub pace: Duration,
    /// The status that acknowledges an event: 201 (direct mode) or 202 (queue mode).
    pub accepted: u16,
    /// The events' `type`.
    pub kind: &'static str,
    /// A producer whose connection fails stops quietly (the service was told to exit);
    /// otherwise the test fails.
    pub until_disconnected: bool,
    /// Who chooses the events' ids.
    pub ids: Ids,
}

/// Who chooses an event's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    /// The producer, for every event (`sent` then lists refused events too).
    Producer,
    /// The service, for every event: only acknowledged ids are known.
    Server,
    /// The service for every other event of each producer (the first included, so at least
    /// half), the producer for the rest.
    Mixed,
}

impl Load {
    pub fn new(producers: usize, accepted: u16) -> Load {
        Load {
            producers,
            per_producer: None,
            pace: Duration::ZERO,
            accepted,
            kind: "load",
            until_disconnected: false,
            ids: Ids::Producer,
        }
    }

    pub fn per_producer(mut self, n: usize) -> Load {
        self.per_producer = Some(n);
        self
    }

    pub fn pace(mut self, pace: Duration) -> Load {
        self.pace = pace;
        self
    }

    pub fn kind(mut self, kind: &'static str) -> Load {
        self.kind = kind;
        self
    }

    pub fn until_disconnected(mut self) -> Load {
        self.until_disconnected = true;
        self
    }

    pub fn server_ids(mut self) -> Load {
        self.ids = Ids::Server;
        self
    }

    /// The service assigns the id of at least half of each producer's events ([`Ids::Mixed`]).
    pub fn mixed_ids(mut self) -> Load {
        self.ids = Ids::Mixed;
        self
    }

    /// Whether the producer chooses the id of its `n`th event.
    fn producer_chooses(&self, n: usize) -> bool {
        match self.ids {
            Ids::Producer => true,
            Ids::Server => false,
            Ids::Mixed => n % 2 == 1,
        }
    }
}

/// What producers were told.
#[derive(Default)]
pub struct Tally {
    /// Ids acknowledged with the accepted status.
    pub acked: Vec<String>,
    /// Every id sent (with server-assigned ids: every id acknowledged).
    pub sent: Vec<String>,
    /// The `payload.seq` of each event acknowledged, with the id it was acknowledged with.
    pub acked_seqs: Vec<(u64, String)>,
    /// The `payload.seq` of every event sent, whatever its answer (or none).
    pub sent_seqs: Vec<u64>,
    /// Refusals: status, Retry-After, body.
    pub errors: Vec<(u16, Option<String>, String)>,
    /// Time from sending to the answer, per event.
    pub latencies: Vec<Duration>,
}

impl Tally {
    pub fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        l.get(((l.len() as f64 - 1.0) * 0.99).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// A sequence number no event of this tally has: for a test's own events beside the load.
    pub fn next_seq(&self) -> u64 {
        self.sent_seqs.iter().max().map_or(0, |s| s + 1)
    }

    fn extend(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.sent.extend(other.sent);
        self.acked_seqs.extend(other.acked_seqs);
        self.sent_seqs.extend(other.sent_seqs);
        self.errors.extend(other.errors);
        self.latencies.extend(other.latencies);
    }
}

/// Producers running in the background.
pub struct Producers {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tally>,
}

impl Producers {
    /// Tells every producer to stop after its current event, and returns the tally.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits until every producer has sent its events (or was disconnected).
    pub async fn finish(self) -> Tally {
        self.task.await.expect("producers")
    }
}

/// Starts `load` against `api` in the background.
pub fn start(api: &Api, load: Load) -> Producers {
    let stop = Arc::new(AtomicBool::new(false));
    let (api, flag) = (api.clone(), stop.clone());
    let task = tokio::spawn(async move { produce(&api, load, flag).await });
    Producers { stop, task }
}

/// Runs `load` against `api` until each producer has sent its events.
pub async fn run(api: &Api, load: Load) -> Tally {
    produce(api, load, Arc::new(AtomicBool::new(false))).await
}

async fn produce(api: &Api, load: Load, stop: Arc<AtomicBool>) -> Tally {
    let mut tasks = vec![];
    for p in 0..load.producers {
        let (api, stop, load) = (api.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && load.per_producer.is_none_or(|max| n < max) {
                // Unique over the run: producer p numbers its events p, p + producers, …
                let seq = (n * load.producers + p) as u64;
                let mut event = json!({"type": load.kind, "consumer": format!("producer-{p}"),
                                       "payload": {"n": n, "seq": seq}});
                let chosen = load.producer_chooses(n).then(|| ObjectId::new().to_hex());
                if let Some(id) = &chosen {
                    event["id"] = json!(id);
                }
                n += 1;
                // Sent, whatever comes back: a request cut off may still have been stored.
                tally.sent_seqs.push(seq);
                let sent = Instant::now();
                let answer = api
                    .http
                    .post(api.url("/v1/event"))
                    .header("X-Api-Key", KEY)
                    .json(&event)
                    .send()
                    .await;
                let r = match answer {
                    Ok(r) => r,
                    Err(_) if load.until_disconnected => break,
                    Err(e) => panic!("the service must stay up: {e}"),
                };
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Value = r.json().await.unwrap_or_default();
                tally.latencies.push(sent.elapsed());
                if status == load.accepted {
                    let id = body["id"]
                        .as_str()
                        .expect("an acknowledged event's id")
                        .to_owned();
                    if let Some(chosen) = &chosen {
                        assert_eq!(&id, chosen, "{body}");
                    }
                    tally.sent.push(id.clone());
                    tally.acked_seqs.push((seq, id.clone()));
                    tally.acked.push(id);
                } else {
                    tally.sent.extend(chosen);
                    tally.errors.push((status, retry_after, body.to_string()));
                }
                tokio::time::sleep(load.pace).await;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.extend(t.await.expect("producer task"));
    }
    all
}
