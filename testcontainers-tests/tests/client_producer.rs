//! The batching producer: 100,000 events through a 10 s MongoDB freeze: `send` never blocks
//! longer than its bound, and every event is stored once.
//!
//! Eight application tasks send 12,500 events each (ids made by the client) through one
//! `Producer` whose buffer (20,000 events) the freeze fills: from then on `send` waits for room
//! up to `WhenFull::Block { max: 1 s }` and answers `Full`, and the task sends the same event
//! again. MongoDB is frozen for real — FerretDB's process stopped with SIGSTOP, its sockets open
//! and silent (or, on a MongoDB this harness did not start, every insert held 10 s by the wire
//! proxy) — while the service's writes wait and the producer's requests hang. Then `close`, and
//! the test counts in MongoDB itself that exactly the 100,000 ids sent are stored, each once.
//!
//! The retry path against a key with a rate: the service answers 429 `rate_limited` with
//! `Retry-After`, the producer waits that long and sends the same batch again, and every event
//! is stored once; and `WhenFull::Fail`/`try_send` answering `Full` at once while a tiny rate
//! holds the producer back, the events taken before still delivered.

#[path = "support/service.rs"]
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_client::{Client, NewEvent, ProducerConfig, ProducerMetrics, SendError, WhenFull};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::json;
use support::{key_entry, metric_or_zero, start_service_env, with_mongodb_uri, Api, KEY};
use testcontainers_tests::binary::RunningBinary;
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};

const EVENTS: usize = 100_000;
const TASKS: usize = 8;
const FREEZE: Duration = Duration::from_secs(10);
const BLOCK_MAX: Duration = Duration::from_secs(1);
/// Scheduling slack on a shared 2-core machine over the `Block` bound.
const SLACK: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_10_s_mongodb_freeze_under_100k_events_blocks_send_no_longer_than_its_bound_and_loses_nothing(
) {
    let mongo = test_mongo().await;
    let ferret_pid = mongo.ferretdb().map(|f| f.pid());
    // Without a FerretDB process of our own to stop, the proxy holds the inserts instead.
    let (proxy, env) = match ferret_pid {
        Some(_) => (None, mongo.env()),
        None => {
            let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
            (Some(proxy), with_mongodb_uri(mongo.env(), &uri))
        }
    };
    let service = start_service_env(env, &[]).await;
    let client = Client::new(&service.base_url, KEY).expect("client");
    let producer = client.producer(ProducerConfig {
        buffer_events: 20_000,
        when_full: WhenFull::Block { max: BLOCK_MAX },
        ..ProducerConfig::default()
    });

    let started = Instant::now();
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let producer = producer.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS / TASKS);
            let mut longest = Duration::ZERO;
            let mut full = 0u64;
            for n in 0..EVENTS / TASKS {
                let event = NewEvent::new("load", "producer-test")
                    .payload(json!({"task": task, "n": n}))
                    .with_new_id();
                ids.push(event.id.clone().expect("an id"));
                loop {
                    let t = Instant::now();
                    let sent = producer.send(event.clone()).await;
                    longest = longest.max(t.elapsed());
                    match sent {
                        Ok(()) => break,
                        Err(SendError::Full) => full += 1,
                        Err(e) => panic!("send: {e}"),
                    }
                }
            }
            (ids, longest, full)
        }));
    }

    // The freeze, once a tenth of the events is stored: mid-stream, with batches in flight.
    while producer.stats().delivered < (EVENTS / 10) as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frozen_at = started.elapsed();
    match (ferret_pid, &proxy) {
        (Some(pid), _) => signal(pid, libc::SIGSTOP),
        (None, Some(proxy)) => proxy.add(Rule::new("insert", Fault::DelayBeforeForward(FREEZE))),
        (None, None) => unreachable!("a FerretDB or a proxy"),
    }
    tokio::time::sleep(FREEZE).await;
    match (ferret_pid, &proxy) {
        (Some(pid), _) => signal(pid, libc::SIGCONT),
        (_, Some(proxy)) => proxy.clear(),
        _ => {}
    }
    let during_freeze = producer.stats();

    let mut sent_ids = Vec::with_capacity(EVENTS);
    let mut longest = Duration::ZERO;
    let mut full = 0;
    for s in senders {
        let (ids, l, f) = s.await.expect("sender task");
        sent_ids.extend(ids);
        longest = longest.max(l);
        full += f;
    }
    let sending = started.elapsed();
    let stats = producer.close().await.expect("close");
    let total = started.elapsed();
    eprintln!(
        "producer: {EVENTS} events, {TASKS} tasks; freeze at {frozen_at:.1?} for {FREEZE:?}; \
         longest send {longest:.3?} (bound {BLOCK_MAX:?}); {full} sends answered Full; \
         sending took {sending:.1?}, close done at {total:.1?}; at thaw {during_freeze:?}; \
         final {stats:?}"
    );

    assert!(
        longest <= BLOCK_MAX + SLACK,
        "a send took {longest:?}, over its bound {BLOCK_MAX:?}"
    );
    assert!(
        full > 0,
        "the freeze never filled the buffer: the test proved nothing"
    );
    assert_eq!(stats.sent, EVENTS as u64, "{stats:?}");
    assert_eq!(stats.delivered, EVENTS as u64, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.buffered, 0, "{stats:?}");

    // In MongoDB itself: exactly the ids sent, each once.
    let store = mongo.store().await;
    let events = store.events();
    assert_eq!(
        events.count_documents(doc! {}).await.expect("count"),
        EVENTS as u64
    );
    let stored: Vec<Document> = events
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    let mut stored_ids = HashSet::with_capacity(EVENTS);
    for d in &stored {
        let id = d.get_object_id("_id").expect("ObjectId _id").to_hex();
        assert!(stored_ids.insert(id.clone()), "{id} stored twice");
    }
    let sent: HashSet<String> = sent_ids.into_iter().collect();
    assert_eq!(sent.len(), EVENTS, "the client made a duplicate id");
    assert_eq!(stored_ids, sent, "stored ids differ from the ids sent");
}

fn signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits in i32");
    // SAFETY: kill(2) on a process this test's harness started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

// ------------------------------------------------------------------ a key with a rate: 429s

/// The rated key the producer tests below send with (the service's `AUDIT_API_KEY` stays
/// `KEY`, without a rate).
const RATED_KEY: &str = "rated-producer-key-5d91c4";

/// The service with a key file holding [`RATED_KEY`] at `rate` (TOML, as in the key file).
/// The temporary directory holds the file; keep it as long as the service runs.
async fn start_rated_service(mongo: &TestMongo, rate: &str) -> (RunningBinary, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        key_entry("rated", RATED_KEY, &["ingest"], &["*"], Some(rate)),
    )
    .expect("write the key file");
    let path = path.display().to_string();
    let service = start_service_env(mongo.env(), &[("AUDIT_API_KEYS_FILE", &path)]).await;
    (service, dir)
}

/// Asserts, in MongoDB itself, that exactly the ids `sent` are stored, each once.
async fn assert_stored_once(mongo: &TestMongo, sent: Vec<String>) {
    let count = sent.len();
    let sent: HashSet<String> = sent.into_iter().collect();
    assert_eq!(sent.len(), count, "the client made a duplicate id");
    let store = mongo.store().await;
    let events = store.events();
    assert_eq!(
        events.count_documents(doc! {}).await.expect("count"),
        count as u64
    );
    let stored: Vec<Document> = events
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    let mut stored_ids = HashSet::with_capacity(count);
    for d in &stored {
        let id = d.get_object_id("_id").expect("ObjectId _id").to_hex();
        assert!(stored_ids.insert(id.clone()), "{id} stored twice");
    }
    assert_eq!(stored_ids, sent, "stored ids differ from the ids sent");
}

/// What the producer's `retried` hook saw: each 429 `rate_limited` answer (when, its events,
/// its `Retry-After`), and how many events were retried for any other reason.
#[derive(Default)]
struct Retries {
    rate_limited: Mutex<Vec<(Instant, usize, Option<Duration>)>>,
    other_events: Mutex<u64>,
}

impl ProducerMetrics for Retries {
    fn retried(&self, events: usize, error: &auditlog_client::Error) {
        match error {
            auditlog_client::Error::Api {
                status: 429,
                code,
                retry_after,
                ..
            } if code == "rate_limited" => {
                self.rate_limited.lock().expect("lock").push((
                    Instant::now(),
                    events,
                    *retry_after,
                ));
            }
            _ => *self.other_events.lock().expect("lock") += events as u64,
        }
    }
}

const RATED_EVENTS: usize = 20_000;
const RATED_TASKS: usize = 4;
/// The key's rate: 2,000 events/s after a burst of 500 — a batch of 500 costs 250 ms of it.
/// The service rounds `Retry-After` up to whole seconds, so a producer that honours it gets
/// about one batch through per second here (~500 events/s, ~40 s for the 20,000): the bucket
/// holds a quarter of a second, and refills beyond it are lost while the producer waits.
const RATE_PER_SECOND: f64 = 2_000.0;
const RATE_BURST: usize = 500;
/// The service's `Retry-After` is in whole seconds, at least 1.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const IN_FLIGHT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rated_key_answers_429_with_retry_after_and_the_producer_waits_it_out_and_stores_each_event_once(
) {
    let mongo = test_mongo().await;
    let rate = format!("{{ events_per_second = {RATE_PER_SECOND:.1}, burst = {RATE_BURST} }}");
    let (service, _keys) = start_rated_service(&mongo, &rate).await;
    let api = Api::new(&service);
    let client = Client::new(&service.base_url, RATED_KEY).expect("client");
    let retries = Arc::new(Retries::default());
    let producer = client.producer(ProducerConfig {
        // A batch may not exceed the key's burst: the service refuses such a batch for good
        // (413), as it could never pass.
        max_batch_events: RATE_BURST,
        max_in_flight: IN_FLIGHT,
        // The producer's own backoff starts at 10 ms and stays at most 1 s: whatever spaces
        // its retries of a 429 a whole second apart is the service's Retry-After, not this.
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_secs(1),
        metrics: Some(retries.clone()),
        ..ProducerConfig::default()
    });

    let started = Instant::now();
    let mut senders = Vec::new();
    for task in 0..RATED_TASKS {
        let producer = producer.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(RATED_EVENTS / RATED_TASKS);
            for n in 0..RATED_EVENTS / RATED_TASKS {
                let event = NewEvent::new("load", "producer-rate-test")
                    .payload(json!({"task": task, "n": n}))
                    .with_new_id();
                ids.push(event.id.clone().expect("an id"));
                producer.send(event).await.expect("send");
            }
            ids
        }));
    }
    let mut sent_ids = Vec::with_capacity(RATED_EVENTS);
    for s in senders {
        sent_ids.extend(s.await.expect("sender task"));
    }
    let stats = producer.close().await.expect("close");
    let elapsed = started.elapsed();

    let rate_limited = retries.rate_limited.lock().expect("lock").clone();
    let other_retried = *retries.other_events.lock().expect("lock");
    let limited_events: usize = rate_limited.iter().map(|(_, events, _)| events).sum();
    let metrics = api.metrics_text().await;
    let rejected = metric_or_zero(
        &metrics,
        "auditlog_events_rejected_total{reason=\"rate_limited\"}",
    );
    eprintln!(
        "producer against {RATE_PER_SECOND} events/s, burst {RATE_BURST}: {RATED_EVENTS} events \
         in {elapsed:.1?} ({:.0} events/s); {} answers 429 rate_limited ({limited_events} \
         events), {other_retried} events retried for other reasons; service counted {rejected} \
         rate-limited events; {stats:?}",
        RATED_EVENTS as f64 / elapsed.as_secs_f64(),
        rate_limited.len(),
    );

    assert_eq!(stats.sent, RATED_EVENTS as u64, "{stats:?}");
    assert_eq!(stats.delivered, RATED_EVENTS as u64, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.buffered, 0, "{stats:?}");
    // It really retried: 20,000 events at 2,000/s cannot pass without the rate refusing some.
    assert!(
        stats.retries > 0,
        "no retry: the test proved nothing; {stats:?}"
    );
    assert!(
        !rate_limited.is_empty(),
        "no 429 rate_limited answer reached the producer"
    );
    assert_eq!(
        stats.retries,
        limited_events as u64 + other_retried,
        "every retried event went through the hook"
    );
    // The service counted as rate-limited exactly the events of the 429s the producer saw
    // (and sent again): no 429 went unseen, none was invented.
    assert_eq!(rejected, limited_events as f64, "{metrics}");
    // Every 429 carried a Retry-After of at least the service's minimum.
    for (_, _, retry_after) in &rate_limited {
        assert!(
            retry_after.is_some_and(|ra| ra >= RETRY_AFTER_MIN),
            "a 429 without a usable Retry-After: {retry_after:?}"
        );
    }
    // Retry-After honoured, i.e. no hammering. After a 429 its delivery task sleeps at least
    // Retry-After (≥ 1 s) before it asks again, and holds one of the IN_FLIGHT slots while it
    // sleeps; a new batch only gets a slot when a delivery ends. So five 429s within less than
    // 1 s would need five delivery tasks alive at once (each still asleep from its own 429),
    // one more than IN_FLIGHT: any IN_FLIGHT + 1 consecutive 429s span at least 1 s, and
    // there are at most IN_FLIGHT × (elapsed s + 1) of them in all. A producer that ignored
    // Retry-After would ask again after its own backoff of 10–20 ms and pack many 429s into
    // a second. (The hook reads the clock just before the sleep starts, and Tokio's timer
    // never wakes early, so the argument is exact; the 10 ms off the bound is only a margin.)
    let mut times: Vec<Instant> = rate_limited.iter().map(|(t, _, _)| *t).collect();
    times.sort();
    let tightest = times
        .windows(IN_FLIGHT + 1)
        .map(|w| w[IN_FLIGHT] - w[0])
        .min();
    eprintln!(
        "the tightest {} consecutive 429s spanned {tightest:.3?}",
        IN_FLIGHT + 1
    );
    if let Some(span) = tightest {
        assert!(
            span >= RETRY_AFTER_MIN - Duration::from_millis(10),
            "{} 429s within {span:?}: the producer did not wait out Retry-After",
            IN_FLIGHT + 1
        );
    }
    let bound = IN_FLIGHT as f64 * (elapsed.as_secs_f64() + 1.0);
    assert!(
        (rate_limited.len() as f64) <= bound,
        "{} 429s in {elapsed:?}, over {bound:.0}",
        rate_limited.len()
    );

    assert_stored_once(&mongo, sent_ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_full_fail_answers_full_at_once_and_what_was_taken_is_still_delivered() {
    let mongo = test_mongo().await;
    // 10 events/s after a burst of 10: the first batch passes, the next waits a second.
    let (service, _keys) =
        start_rated_service(&mongo, "{ events_per_second = 10.0, burst = 10 }").await;
    let client = Client::new(&service.base_url, RATED_KEY).expect("client");
    let producer = client.producer(ProducerConfig {
        buffer_events: 10,
        when_full: WhenFull::Fail,
        max_batch_events: 10,
        max_in_flight: 1,
        ..ProducerConfig::default()
    });
    // "At once": no waiting for room at all (`Block`'s default would wait up to 5 s); the
    // bound is only scheduling slack on a shared 2-core machine.
    const AT_ONCE: Duration = Duration::from_millis(250);
    let event = |n: usize| {
        NewEvent::new("load", "producer-full-test")
            .payload(json!({"n": n}))
            .with_new_id()
    };

    let mut taken = Vec::new();
    // try_send in a tight loop until `Full`: the buffer's 10 events, and as many more as the
    // batcher took from it meanwhile into the batch it fills and the one in flight (at most
    // 20; none when the loop, which never yields, kept the batcher from running).
    let mut full_try = false;
    for n in 0..10_000 {
        let e = event(n);
        let id = e.id.clone().expect("an id");
        let t = Instant::now();
        let answer = producer.try_send(e);
        assert!(t.elapsed() <= AT_ONCE, "try_send took {:?}", t.elapsed());
        match answer {
            Ok(()) => taken.push(id),
            Err(SendError::Full) => {
                full_try = true;
                break;
            }
            Err(e) => panic!("try_send: {e}"),
        }
    }
    assert!(full_try, "try_send never answered Full");
    let by_try_send = taken.len();
    // `send` with `WhenFull::Fail` does not wait for room either. (Room may open between two
    // calls as a batch is answered; the rate soon holds the producer for a whole second.)
    let mut full_send = false;
    for n in 0..10_000 {
        let e = event(100_000 + n);
        let id = e.id.clone().expect("an id");
        let t = Instant::now();
        let answer = producer.send(e).await;
        assert!(t.elapsed() <= AT_ONCE, "send took {:?}", t.elapsed());
        match answer {
            Ok(()) => taken.push(id),
            Err(SendError::Full) => {
                full_send = true;
                break;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(full_send, "send with WhenFull::Fail never answered Full");
    let before_close = producer.stats();
    let stats = producer.close().await.expect("close");
    eprintln!(
        "WhenFull::Fail: try_send took {by_try_send} events before Full, {} in all; \
         before close {before_close:?}; final {stats:?}",
        taken.len()
    );
    assert_eq!(stats.sent, taken.len() as u64, "{stats:?}");
    assert_eq!(stats.delivered, taken.len() as u64, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_stored_once(&mongo, taken).await;
}
