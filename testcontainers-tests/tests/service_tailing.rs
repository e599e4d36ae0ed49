//! `complete_until` over real HTTP against the real binary: a reader who follows `next_cursor`
//! sees every acknowledged event exactly once, in both ingest modes — in queue mode through a
//! 40 s write outage (MongoDB refusing every write while it still serves reads, as when no
//! majority can be reached, injected by the wire proxy) with two replicas, one of which cannot
//! record its state meanwhile — and a fresh event is found by an ascending find within seconds,
//! not after a fixed worst case.

#[path = "support/load.rs"]
mod load;
#[path = "support/service.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use load::Load;
use serde_json::{json, Value};
use support::{start_service_env, with_mongodb_uri, Api};
use testcontainers_tests::binary::RunningBinary;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};
use testcontainers_tests::rabbitmq::RabbitMq;

#[tokio::test]
async fn a_post_is_found_by_an_ascending_find_two_seconds_later() {
    let mongo = test_mongo().await;
    let service = start_service_env(mongo.env(), &[]).await;
    let api = Api::new(&service);
    let (status, ack) = api
        .post_event(&json!({"type": "seed-check", "consumer": "newcomer"}))
        .await;
    assert_eq!(status, 201, "{ack}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The specification's own check: find by type, ascending (the default), no other option.
    let (status, page) = api.find(&[("type", "seed-check")]).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [ack["id"].as_str().unwrap()],
        "a stored event is not found 2 s later: {page}"
    );
    assert!(
        page["complete_until"].as_str().unwrap() > ack["created_at"].as_str().unwrap(),
        "{page}"
    );
    let lag = support::metric(
        &api.metrics_text().await,
        "auditlog_complete_until_lag_seconds",
    )
    .expect("the lag metric");
    assert!(
        lag < 5.0,
        "the lag metric says {lag} s while nothing is in flight"
    );
}

/// A reader tailing by cursor: what it saw, per `(type, payload.seq)`.
struct Reader {
    seen: HashMap<(String, u64), usize>,
    cursor: Option<String>,
    pages: usize,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            seen: HashMap::new(),
            cursor: None,
            pages: 0,
        }
    }

    /// Comes back every 300 ms for `for_`.
    async fn tail(&mut self, api: &Api, for_: Duration) {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            self.catch_up(api).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Reads pages until one comes back empty; returns the last page's `complete_until`.
    async fn catch_up(&mut self, api: &Api) -> String {
        // A reader that is refused for minutes has its answer: the test ends there, not hangs.
        let mut refused_since: Option<Instant> = None;
        loop {
            let mut q: Vec<(&str, &str)> = vec![("limit", "1000")];
            if let Some(c) = &self.cursor {
                q.push(("cursor", c));
            }
            let (status, page) = api.find(&q).await;
            // A reader retries what it is told to retry (FerretDB sorts in memory: a find can
            // exceed its time limit on a loaded machine).
            if status == 503 {
                let since = *refused_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(120),
                    "every find answered 503 for 2 minutes; the last: {page}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            refused_since = None;
            assert_eq!(status, 200, "{page}");
            self.pages += 1;
            let events = page["events"].as_array().unwrap();
            for e in events {
                let kind = e["type"].as_str().unwrap_or_default().to_owned();
                let seq = e["payload"]["seq"].as_u64().unwrap_or(u64::MAX);
                *self.seen.entry((kind, seq)).or_default() += 1;
            }
            self.cursor = Some(
                page["next_cursor"]
                    .as_str()
                    .expect("an ascending page has a cursor to come back with")
                    .to_owned(),
            );
            if events.is_empty() {
                return page["complete_until"].as_str().unwrap().to_owned();
            }
        }
    }
}

async fn start_queue_replica(base: Vec<(String, String)>, rabbit: &RabbitMq) -> RunningBinary {
    let url = rabbit.url();
    let env = [
        ("AUDIT_INGEST_MODE", "queue"),
        ("AUDIT_AMQP_URL", url.as_str()),
    ];
    let service = start_service_env(base, &env).await;
    let api = Api::new(&service);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.send(api.http.get(api.url("/readyz"))).await.0 != 200 {
        assert!(Instant::now() < deadline, "queue replica not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_mode_tailing_through_a_40_s_write_outage_sees_every_acknowledged_event_once() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let base = with_mongodb_uri(mongo.env(), &uri);
    // Two replicas on one queue: producers on both, the reader on the first.
    let a = start_queue_replica(base.clone(), &rabbit).await;
    let b = start_queue_replica(base, &rabbit).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));

    let load = |kind| {
        Load::new(8, 202)
            .kind(kind)
            .mixed_ids()
            .pace(Duration::from_millis(40))
    };
    let on_a = load::start(&api_a, load("tail-a"));
    let on_b = load::start(&api_b, load("tail-b"));
    let mut reader = Reader::new();
    reader.tail(&api_a, Duration::from_secs(5)).await;

    // 40 s without a primary: every write refused (the events' inserts and the replicas'
    // records alike), reads served.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()));
    proxy.add(Rule::new("update", Fault::not_writable_primary()));
    reader.tail(&api_a, Duration::from_secs(40)).await;
    proxy.clear();
    assert!(
        proxy.seen("insert") > 0,
        "the drains tried to write during the outage"
    );
    reader.tail(&api_a, Duration::from_secs(5)).await;
    let (tally_a, tally_b) = tokio::join!(on_a.stop(), on_b.stop());

    // Every event created before this marker is complete once the reader passed it. A replica
    // still re-linking to RabbitMQ after the outage answers 503 queue_unavailable, which tells
    // a producer to retry (docs/api.md): so does this one, for up to a minute.
    let posted = Instant::now();
    loop {
        let (status, marker) = api_a
            .post_event(&json!({"type": "marker", "consumer": "marker", "payload": {"seq": 0}}))
            .await;
        if status == 202 {
            break;
        }
        assert!(
            status == 503 && posted.elapsed() < Duration::from_secs(60),
            "the marker was refused: {status} {marker}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while !reader.seen.contains_key(&("marker".to_owned(), 0)) {
        assert!(
            Instant::now() < deadline,
            "the reader did not reach the marker within 180 s of the outage's end"
        );
        reader.catch_up(&api_a).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut missed = vec![];
    let mut acked = 0;
    for (kind, tally) in [("tail-a", &tally_a), ("tail-b", &tally_b)] {
        for (seq, _) in &tally.acked_seqs {
            acked += 1;
            match reader.seen.get(&(kind.to_owned(), *seq)) {
                Some(1) => {}
                Some(n) => panic!("{kind} seq {seq} was read {n} times"),
                None => missed.push((kind, *seq)),
            }
        }
    }
    let twice: Vec<_> = reader.seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events read more than once: {twice:?}");
    assert!(
        missed.is_empty(),
        "the reader missed {} of {acked} acknowledged events, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert!(acked > 1000, "only {acked} events acknowledged");
    let during: Value = json!({"acked": acked, "pages": reader.pages});
    eprintln!("tailing through the outage: {during}");
}
