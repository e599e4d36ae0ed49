//! The service in front of a store that behaves like a sharded replica-set cluster, through the
//! harness's fault-injecting wire proxy: a primary election under load, a write applied but
//! never acknowledged, per-document errors from a shard in an election, a write-concern error,
//! and a find answered by two shards that hold the same `_id` under two consumers. What a
//! producer sees must be what is stored: every 2xx event exactly once.

#[path = "support/service.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mongodb::bson::{oid::ObjectId, Document};
use serde_json::{json, Value};
use support::{metric, quick_visibility, start_service_env, stored, with_mongodb_uri, Api};
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};

/// The service, connected to the test's MongoDB through a proxy.
async fn proxied_service(
    mongo: &TestMongo,
    env: &[(&str, &str)],
) -> (WireProxy, testcontainers_tests::binary::RunningBinary, Api) {
    proxied_service_with(mongo, |base| base, env).await
}

/// [`proxied_service`], with the service's base environment passed through `adjust` first.
async fn proxied_service_with(
    mongo: &TestMongo,
    adjust: impl FnOnce(Vec<(String, String)>) -> Vec<(String, String)>,
    env: &[(&str, &str)],
) -> (WireProxy, testcontainers_tests::binary::RunningBinary, Api) {
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let service = start_service_env(adjust(with_mongodb_uri(mongo.env(), &uri)), env).await;
    let api = Api::new(&service);
    (proxy, service, api)
}

/// A reader that tails `consumer` by cursor, as documented: it follows `next_cursor` and,
/// caught up, asks again later from the last cursor it got. Every event it is given, in order.
async fn tail_by_cursor(api: &Api, consumer: &str, until: Instant) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("consumer", consumer.to_owned()), ("limit", "50".into())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page) = api.find(&q).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().expect("events").clone();
        let complete_until = page["complete_until"].as_str().expect("complete_until");
        for e in &events {
            let at = e["created_at"].as_str().expect("created_at");
            // Same format (RFC 3339, ms, Z) on both sides, so strings order as instants.
            assert!(
                at < complete_until,
                "{at} returned at complete_until {complete_until}"
            );
        }
        cursor = Some(
            page["next_cursor"]
                .as_str()
                .expect("an ascending open-ended page always gives a cursor to come back with")
                .to_owned(),
        );
        if events.is_empty() {
            if Instant::now() > until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen.extend(events);
    }
}

/// A reader that tails by time, as a reader would without `complete_until`: it asks for
/// everything from the newest `created_at` it has seen (newest events included), skipping
/// ids it already has. The `_id`s it was given.
async fn tail_by_time(api: &Api, consumer: &str, until: Instant) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut from = "2000-01-01T00:00:00.000Z".to_owned();
    while Instant::now() < until {
        let q = [
            ("consumer", consumer),
            ("created_from", from.as_str()),
            ("include_incomplete", "true"),
            ("limit", "1000"),
        ];
        let (status, page) = api.find(&q).await;
        assert_eq!(status, 200, "{page}");
        let mut newest = from.clone();
        for e in page["events"].as_array().expect("events") {
            seen.insert(e["id"].as_str().expect("id").to_owned());
            newest = e["created_at"].as_str().expect("created_at").to_owned();
        }
        from = newest;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// How many stored documents each `_id` has.
fn copies(docs: &[Document]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for d in docs {
        *m.entry(d.get_object_id("_id").expect("ObjectId _id").to_hex())
            .or_default() += 1;
    }
    m
}

#[tokio::test]
async fn a_ten_second_election_under_64_producers_answers_every_request_and_stores_each_event_once()
{
    let mongo = test_mongo().await;
    let (proxy, _service, api) =
        proxied_service(&mongo, &[("AUDIT_WRITE_DEADLINE_SECS", "15")]).await;
    assert_eq!(
        api.post_event(&json!({"type": "warm-up", "consumer": "c"}))
            .await
            .0,
        201
    );

    // Every insert is refused as by a shard without a primary, for ten seconds.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()).on("events"));
    let election = tokio::spawn({
        let started = Instant::now();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            started.elapsed()
        }
    });
    let producers: Vec<_> = (0..64)
        .map(|p| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for n in 0..4 {
                    let id = ObjectId::new().to_hex();
                    let event = json!({"id": id, "type": "election", "consumer": format!("producer-{p}"),
                                       "payload": {"n": n}});
                    let (status, body) = api.post_event(&event).await;
                    answers.push((id, status, body));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                answers
            })
        })
        .collect();
    let lasted = election.await.expect("election timer");
    proxy.clear();
    let mut answers = Vec::new();
    for p in producers {
        answers.extend(p.await.expect("producer"));
    }
    assert!(lasted >= Duration::from_secs(10));
    assert!(
        proxy.applied("insert") > 0,
        "the election never refused an insert"
    );

    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, s, _)| !(200..300).contains(s))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    let by_id = copies(&stored(&mongo).await);
    for (id, _, body) in &answers {
        assert_eq!(
            by_id.get(id),
            Some(&1),
            "acknowledged event {id} stored {:?} times",
            by_id.get(id)
        );
        assert_eq!(body["id"], Value::String(id.clone()));
    }
    assert_eq!(
        by_id.len(),
        answers.len() + 1,
        "stored events that nobody acknowledged"
    );
}

#[tokio::test]
async fn a_write_applied_but_never_acknowledged_is_stored_once_and_answered_201() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied_service(&mongo, &[]).await;
    // The insert reaches the store; the connection drops before the service hears back.
    proxy.add(
        Rule::new("insert", Fault::ResetAfterForward)
            .on("events")
            .times(1),
    );
    let (status, body) = api.post_event(&json!({"type": "t", "consumer": "c"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(proxy.applied("insert"), 1);
    let by_id = copies(&stored(&mongo).await);
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(by_id, HashMap::from([(id, 1)]));
}

#[tokio::test]
async fn a_large_batch_applied_but_never_acknowledged_is_resolved_with_one_read_not_one_per_event()
{
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied_service(&mongo, &[]).await;
    // The writes of one 300-event POST reach the store and their connections drop before the
    // service hears back, twice (so every event's write is hit, however the writer batched
    // them): the next attempt meets 300 duplicates, which are the service's own writes. On
    // FerretDB a read by `_id` and `consumer` scans the collection: one such read per event
    // once stalled the queue-mode drain for minutes after a store outage.
    proxy.add(
        Rule::new("insert", Fault::ResetAfterForward)
            .on("events")
            .times(2),
    );
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"type": "t", "consumer": format!("c{}", i % 7), "payload": {"i": i}}))
        .collect();
    let reads_before = proxy.seen_on("find", "events");
    let body = serde_json::to_vec(&events).expect("json");
    let (status, answer) = api.post_raw("/v1/events", "application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 300, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert!(
        results.iter().all(|r| r["status"] == 201),
        "the service's own earlier attempts are still 201: {answer}"
    );
    let reads = proxy.seen_on("find", "events") - reads_before;
    let by_id = copies(&stored(&mongo).await);
    assert_eq!(by_id.len(), 300);
    assert!(by_id.values().all(|&n| n == 1), "an event stored twice");
    let metrics = api.metrics_text().await;
    let stored_first_time = metric(&metrics, "auditlog_events_stored_total").unwrap_or(0.0);
    assert!(
        stored_first_time <= 150.0,
        "most events should have been resolved as duplicates; {stored_first_time} were stored \
         by a write the service heard back from"
    );
    assert!(
        reads <= 2,
        "{reads} reads of the events collection to resolve {} duplicates",
        300.0 - stored_first_time
    );
}

#[tokio::test]
async fn per_document_transient_errors_in_a_batch_retry_only_those_documents() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied_service(&mongo, &[]).await;
    // A mongos whose shard for consumer "flaky" is electing: those documents fail once with
    // InterruptedDueToReplStateChange, the others are stored by the same command.
    proxy.add(
        Rule::new(
            "insert",
            Fault::FailEachDocumentOnce {
                consumer: "flaky".into(),
                code: 11602,
            },
        )
        .on("events"),
    );
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"type": "t", "consumer": if i % 3 == 0 { "flaky" } else { "steady" }, "payload": {"i": i}}))
        .collect();
    let body = serde_json::to_vec(&events).expect("json");
    let (status, answer) = api.post_raw("/v1/events", "application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 10, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["status"] == 201), "{answer}");
    assert_eq!(
        proxy.documents_failed(),
        4,
        "each flaky document failed once"
    );

    let by_id = copies(&stored(&mongo).await);
    assert_eq!(by_id.len(), 10);
    assert!(by_id.values().all(|n| *n == 1), "{by_id:?}");
    for r in results {
        assert!(by_id.contains_key(r["id"].as_str().expect("id")));
    }
}

#[tokio::test]
async fn a_write_concern_error_is_retried_without_duplicates() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied_service(&mongo, &[]).await;
    proxy.add(
        Rule::new("insert", Fault::write_concern_failed())
            .on("events")
            .times(1),
    );
    let (status, body) = api.post_event(&json!({"type": "t", "consumer": "c"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(proxy.applied("insert"), 1);
    assert!(
        proxy.seen("insert") >= 2,
        "the write was not sent again after the write-concern error"
    );
    let by_id = copies(&stored(&mongo).await);
    assert_eq!(
        by_id,
        HashMap::from([(body["id"].as_str().expect("id").to_owned(), 1)])
    );
}

#[tokio::test]
async fn a_producer_retry_after_the_first_was_stored_gets_200_with_the_first_created_at() {
    let mongo = test_mongo().await;
    let (_proxy, _service, api) = proxied_service(&mongo, &[]).await;
    let id = ObjectId::new().to_hex();
    let event = json!({"id": id, "type": "t", "consumer": "billing", "payload": {"a": 1}});
    let (first, a) = api.post_event(&event).await;
    assert_eq!(first, 201, "{a}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (again, b) = api.post_event(&event).await;
    assert_eq!(again, 200, "{b}");
    assert_eq!(
        b["created_at"], a["created_at"],
        "the retry must report the first copy's time"
    );
    assert_eq!(
        copies(&stored(&mongo).await),
        HashMap::from([(id.clone(), 1)])
    );
    // The same id under another consumer is somebody else's event: a conflict, not a retry.
    let other = json!({"id": id, "type": "t", "consumer": "shipping", "payload": {"a": 1}});
    let (status, c) = api.post_event(&other).await;
    assert_eq!(status, 409, "{c}");
}

/// Another shard, for [`Fault::FindAlsoIn`]: a collection beside the events whose documents the
/// proxy adds to every find's answer.
const OTHER_SHARD: &str = "events_on_another_shard";

/// `n` events of consumer "billing" and `n` of "shipping", each with an id of its producer's;
/// and, on another shard ([`OTHER_SHARD`]), a "shipping" event with the id of each "billing"
/// one — as a sharded cluster with the key `{consumer: "hashed", _id: 1}` can hold, `_id` being
/// unique per shard only. Returns the events (as producers send them) and the other shard's.
fn same_ids_under_two_consumers(n: usize) -> (Vec<Value>, Vec<Document>) {
    let mut events = Vec::new();
    let mut others = Vec::new();
    let now = mongodb::bson::DateTime::now();
    for i in 0..n {
        let (billing, shipping) = (ObjectId::new(), ObjectId::new());
        events.push(
            json!({"id": billing.to_hex(), "type": "t", "consumer": "billing",
                           "payload": {"i": i}}),
        );
        events.push(
            json!({"id": shipping.to_hex(), "type": "t", "consumer": "shipping",
                           "payload": {"i": i}}),
        );
        others.push(
            mongodb::bson::doc! {"_id": billing, "type": "t", "consumer": "shipping",
            "created_at": now, "payload": {"i": i as i32}},
        );
    }
    (events, others)
}

#[tokio::test]
async fn a_retry_is_compared_with_its_own_consumers_copy_not_another_consumers_with_the_same_id() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied_service(&mongo, &[]).await;
    let (events, others) = same_ids_under_two_consumers(20);
    let body = serde_json::to_vec(&events).expect("json");
    let (status, first) = api
        .post_raw("/v1/events", "application/json", body.clone())
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["accepted"], 40, "{first}");
    // The shipping events that share the billing events' ids live on another shard; every
    // find on the events goes to both shards from now on.
    let database = mongo.store().await.database();
    database
        .collection::<Document>(OTHER_SHARD)
        .insert_many(others)
        .await
        .expect("store the other shard's events");
    proxy.add(Rule::events_also_on_shard(OTHER_SHARD));

    // The producers retry the whole batch: each event meets its own copy as a duplicate, and
    // the read of the batch's copies (by `_id` and `consumer`, both consumers being in the
    // batch) also returns the other shard's shipping events with the billing events' ids.
    let (status, again) = api.post_raw("/v1/events", "application/json", body).await;
    assert_eq!(status, 200, "{again}");
    assert!(
        proxy.applied("find") > 0,
        "the copies were never read through both shards"
    );
    let (first, again) = (
        first["results"].as_array().expect("results"),
        again["results"].as_array().expect("results"),
    );
    for ((event, a), b) in events.iter().zip(first).zip(again) {
        assert_eq!(
            b["status"], 200,
            "a retry of {event} with the same content is 200, whatever another consumer \
             stored under the same id: {b}"
        );
        assert_eq!(b["id"], a["id"], "{b}");
        assert_eq!(
            b["created_at"], a["created_at"],
            "the first copy's time: {b}"
        );
    }
    let by_id = copies(&stored(&mongo).await);
    assert_eq!(by_id.len(), 40);
    assert!(by_id.values().all(|&n| n == 1), "an event stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_tailing_by_cursor_sees_every_event_once_while_some_writes_land_late() {
    let mongo = test_mongo().await;
    // complete_until trails now by 2.5 s: a 2 s write deadline, 0.5 s server selection.
    // Single inserts, many in flight: while one is held, the others land, as the writes of the
    // other replicas of a deployment do while one replica's write waits on a shard.
    let (proxy, _service, api) = proxied_service_with(
        &mongo,
        quick_visibility,
        &[
            ("AUDIT_WRITE_DEADLINE_SECS", "2"),
            ("AUDIT_GROUP_COMMIT", "false"),
        ],
    )
    .await;

    let writing = Duration::from_secs(4);
    let started = Instant::now();
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                while started.elapsed() < writing {
                    let event = json!({"type": "tail", "consumer": "tailed", "payload": {"p": p}});
                    let (status, body) = api.post_event(&event).await;
                    assert_eq!(status, 201, "{body}");
                    acked.push(body["id"].as_str().expect("id").to_owned());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        })
        .collect();
    // Both readers go on until every acknowledged event is older than complete_until.
    let until = started + writing + Duration::from_secs(4);
    let by_cursor = tokio::spawn({
        let api = api.clone();
        async move { tail_by_cursor(&api, "tailed", until).await }
    });
    let by_time = tokio::spawn({
        let api = api.clone();
        async move { tail_by_time(&api, "tailed", until).await }
    });

    // Every 250 ms (once the previous one was taken), one insert is held 800 ms before it
    // reaches the store, as behind a shard's election: the events written meanwhile on the
    // other connection land first.
    let mut delays = 0;
    while started.elapsed() < writing {
        if proxy.applied("insert") == delays {
            proxy.add(
                Rule::new(
                    "insert",
                    Fault::DelayBeforeForward(Duration::from_millis(800)),
                )
                .on("events")
                .times(1),
            );
            delays += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut acked = HashSet::new();
    for p in producers {
        acked.extend(p.await.expect("producer"));
    }
    assert!(
        proxy.applied("insert") >= 5,
        "only {} late writes happened",
        proxy.applied("insert")
    );

    let got = by_cursor.await.expect("cursor reader");
    let ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "the cursor reader got an event twice"
    );
    let missed: Vec<_> = acked.difference(&unique).collect();
    assert!(
        missed.is_empty(),
        "the cursor reader missed {} of {} acknowledged events, e.g. {:?}",
        missed.len(),
        acked.len(),
        missed.first()
    );
    assert_eq!(
        unique.len(),
        acked.len(),
        "the cursor reader got events nobody acknowledged"
    );

    // The hazard is real: the reader that follows the newest events by time misses some.
    let by_time = by_time.await.expect("time reader");
    let missed_by_time = acked.difference(&by_time).count();
    assert!(
        missed_by_time > 0,
        "no write landed behind a reader that tails by time; the late writes proved nothing"
    );
}
