//! Queue mode (`AUDIT_INGEST_MODE=queue`) over real HTTP against the real binary, with a real
//! RabbitMQ (a private `rabbitmq-server` process per test) and FerretDB: every event RabbitMQ
//! confirmed (202) reaches MongoDB exactly once — through MongoDB outages, a SIGKILLed
//! service and a stopped RabbitMQ — events published together share messages, poison messages
//! (and poison events of a group, alone) are dead-lettered with their reason, and
//! producers meet backpressure (429/503 with Retry-After), never unbounded waits.

#[path = "support/load.rs"]
mod load;
#[path = "support/service.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use load::Load;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use serde_json::{json, Value};
use support::{
    all_docs, amqp_channel, metric_or_zero, publish_group, publish_raw, quick_visibility,
    start_service_env, unique_ids, with_mongodb_uri, Api, RestartableFerret, KEY,
};
use testcontainers_tests::binary::RunningBinary;
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::proxy::{Rule, WireProxy};
use testcontainers_tests::rabbitmq::RabbitMq;

const QUEUE: &str = "auditlog.events";

/// The environment of a queue-mode service on `rabbit`, plus `extra`.
fn queue_env(rabbit: &RabbitMq, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("AUDIT_INGEST_MODE".to_owned(), "queue".to_owned()),
        ("AUDIT_AMQP_URL".to_owned(), rabbit.url()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Starts the service with `base` (its store) and `env`, and waits for `/readyz` (RabbitMQ).
async fn start_queue_service(
    base: Vec<(String, String)>,
    env: &[(String, String)],
) -> RunningBinary {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let service = start_service_env(base, &env).await;
    wait_ready(&Api::new(&service), Duration::from_secs(60)).await;
    service
}

async fn wait_ready(api: &Api, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = api.send(api.http.get(api.url("/readyz"))).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `collection` holds `expected` documents (and not more), then returns them.
async fn wait_stored(
    collection: &mongodb::Collection<Document>,
    expected: usize,
    within: Duration,
) -> Vec<Document> {
    let deadline = Instant::now() + within;
    loop {
        let count = collection.count_documents(doc! {}).await.unwrap_or(0) as usize;
        assert!(
            count <= expected,
            "{count} documents stored, more than the {expected} expected"
        );
        if count == expected {
            // Anything still on its way would show up now.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return all_docs(collection).await;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {expected} events stored within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn events_of(mongo: &TestMongo) -> mongodb::Collection<Document> {
    mongo.store().await.events()
}

async fn events_in(ferret: &RestartableFerret, db: &str) -> mongodb::Collection<Document> {
    ferret.client().await.database(db).collection("events")
}

/// Every acknowledged event stored exactly once, and nothing else stored but events sent (an
/// event refused or cut off may be stored or not — once at most). Events are told apart by
/// their `payload.seq`, not their ids: the service assigns most ids, and an event stored twice
/// would be stored under two ids, which a check of ids cannot see.
fn assert_exactly_once(docs: &[Document], tally: &load::Tally) {
    if let Some(violation) = exactly_once_violation(docs, tally) {
        panic!("{violation}");
    }
}

/// How `docs` break [`assert_exactly_once`], if they do.
fn exactly_once_violation(docs: &[Document], tally: &load::Tally) -> Option<String> {
    let mut stored: HashMap<u64, Vec<String>> = HashMap::new();
    for d in docs {
        let id = d.get_object_id("_id").expect("ObjectId _id").to_hex();
        let seq = d
            .get_document("payload")
            .ok()
            .and_then(|p| match p.get("seq") {
                Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
                Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
                _ => None,
            });
        let Some(seq) = seq else {
            return Some(format!(
                "stored event {id} has no payload.seq: nobody sent it"
            ));
        };
        stored.entry(seq).or_default().push(id);
    }
    let twice: Vec<_> = stored.iter().filter(|(_, ids)| ids.len() > 1).collect();
    if let Some(first) = twice.first() {
        return Some(format!(
            "{} events stored more than once, e.g. seq {first:?}",
            twice.len()
        ));
    }
    let missing: Vec<&(u64, String)> = tally
        .acked_seqs
        .iter()
        .filter(|(seq, id)| stored.get(seq) != Some(&vec![id.clone()]))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} acknowledged events were not stored (or not under the id acknowledged), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        ));
    }
    let sent: HashSet<u64> = tally.sent_seqs.iter().copied().collect();
    let strangers: Vec<&u64> = stored.keys().filter(|seq| !sent.contains(seq)).collect();
    if !strangers.is_empty() {
        return Some(format!("events nobody sent were stored: seq {strangers:?}"));
    }
    None
}

#[test]
fn the_exactly_once_check_sees_an_event_stored_twice_as_well_as_one_lost() {
    let event = |id: ObjectId, seq: i64| {
        doc! {"_id": id, "type": "t", "consumer": "c", "created_at": mongodb::bson::DateTime::now(),
        "payload": {"seq": seq}}
    };
    // Seq 0 with the producer's id, seq 1 with the service's: both acknowledged.
    let (a, b) = (ObjectId::new(), ObjectId::new());
    let tally = load::Tally {
        acked: vec![a.to_hex(), b.to_hex()],
        sent: vec![a.to_hex(), b.to_hex()],
        acked_seqs: vec![(0, a.to_hex()), (1, b.to_hex())],
        sent_seqs: vec![0, 1, 2],
        ..load::Tally::default()
    };
    assert_eq!(
        exactly_once_violation(&[event(a, 0), event(b, 1)], &tally),
        None
    );
    // Seq 2 was refused (or cut off) yet stored: allowed, once.
    let c = ObjectId::new();
    assert_eq!(
        exactly_once_violation(&[event(a, 0), event(b, 1), event(c, 2)], &tally),
        None
    );
    // Seq 1 stored a second time, under another id the service assigned: every id is unique
    // and every acknowledged id is there, yet the event is there twice.
    let twice = exactly_once_violation(&[event(a, 0), event(b, 1), event(c, 1)], &tally);
    assert!(
        twice
            .as_deref()
            .is_some_and(|m| m.contains("more than once")),
        "{twice:?}"
    );
    let lost = exactly_once_violation(&[event(a, 0)], &tally);
    assert!(
        lost.as_deref().is_some_and(|m| m.contains("not stored")),
        "{lost:?}"
    );
    let stranger = exactly_once_violation(&[event(a, 0), event(b, 1), event(c, 3)], &tally);
    assert!(
        stranger
            .as_deref()
            .is_some_and(|m| m.contains("nobody sent")),
        "{stranger:?}"
    );
}

/// Messages in the events' queue once a stopped service's unacknowledged ones are back.
async fn left_in_queue(channel: &lapin::Channel) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let queue = channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the events' queue");
        // The consumer's unacknowledged messages return when RabbitMQ notices the dead
        // connection; give it a moment to show them.
        if queue.message_count() > 0 || Instant::now() > deadline {
            return queue.message_count();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_published_in_queue_mode_reach_mongodb_exactly_once() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let service = start_queue_service(mongo.env(), &queue_env(&rabbit, &[])).await;
    let api = Api::new(&service);

    let load = load::start(&api, Load::new(16, 202).kind("queued").mixed_ids());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut tally = load.stop().await;
    assert!(
        tally.errors.is_empty(),
        "{:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert!(
        tally.acked.len() > 200,
        "too little load: {}",
        tally.acked.len()
    );

    // A batch: its events are published concurrently, so they share messages; each is
    // answered 202.
    let first_seq = tally.next_seq();
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"type": "batch", "consumer": "batcher", "payload": {"i": i, "seq": first_seq + i}}))
        .collect();
    let (status, body) = api
        .send(
            api.http
                .post(api.url("/v1/events"))
                .header("X-Api-Key", KEY)
                .json(&batch),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 50, "{body}");
    for (seq, item) in (first_seq..).zip(body["results"].as_array().unwrap()) {
        assert_eq!(item["status"], 202, "{item}");
        let id = item["id"].as_str().unwrap().to_owned();
        tally.acked.push(id.clone());
        tally.sent.push(id.clone());
        tally.acked_seqs.push((seq, id));
        tally.sent_seqs.push(seq);
    }

    // A producer's retries: the same id and content three times, stored once.
    let (id, seq) = (ObjectId::new().to_hex(), first_seq + 50);
    for _ in 0..3 {
        let (status, body) = api
            .post_event(
                &json!({"type": "retry", "consumer": "retrier", "id": id, "payload": {"seq": seq}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    tally.acked.push(id.clone());
    tally.sent.push(id.clone());
    tally.acked_seqs.push((seq, id));
    tally.sent_seqs.push(seq);

    let expected = tally.acked.iter().collect::<HashSet<_>>().len();
    let docs = wait_stored(&events_of(&mongo).await, expected, Duration::from_secs(120)).await;
    assert_exactly_once(&docs, &tally);

    let metrics = api.metrics_text().await;
    let published = metric_or_zero(&metrics, "auditlog_queue_published_total");
    assert_eq!(
        published as usize,
        tally.acked.len() + 2,
        "every confirm counted"
    );
    let stored = metric_or_zero(&metrics, "auditlog_queue_drained_total{outcome=\"stored\"}");
    let duplicate = metric_or_zero(
        &metrics,
        "auditlog_queue_drained_total{outcome=\"duplicate\"}",
    );
    assert_eq!(stored as usize, expected, "{metrics}");
    assert_eq!(
        duplicate, 2.0,
        "the retries resolved as duplicates: {metrics}"
    );
    // Events published at the same moment travel in groups: fewer messages than events.
    let messages = metric_or_zero(&metrics, "auditlog_queue_published_messages_total");
    assert!(
        messages >= 1.0 && messages < published,
        "{messages} messages for {published} events: {metrics}"
    );
    assert!(metrics.contains("auditlog_queue_publish_confirm_seconds_count"));
    assert_eq!(
        metric_or_zero(&metrics, "auditlog_queue_visibility_seconds_count"),
        stored,
        "every stored event's time to visibility observed: {metrics}"
    );
    assert_eq!(metric_or_zero(&metrics, "auditlog_queue_connected"), 1.0);
    println!(
        "{} events through RabbitMQ, p99 {:?}; {} stored",
        tally.acked.len(),
        tally.p99(),
        docs.len()
    );

    // Every stored message was acknowledged: killed now, the service leaves nothing that
    // RabbitMQ would deliver again.
    drop(service);
    let (_conn, channel) = amqp_channel(&rabbit.url()).await;
    let left = left_in_queue(&channel).await;
    assert_eq!(left, 0, "messages left unacknowledged by the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_event_reports_queued_then_stored() {
    let (rabbit, mut ferret) = tokio::join!(RabbitMq::start(), RestartableFerret::start());
    // Direct mode: stored at once, or unknown.
    let direct = start_service_env(ferret.env("status_direct"), &[]).await;
    let api = Api::new(&direct);
    let (status, ack) = api
        .post_event(&json!({"type": "t", "consumer": "c", "payload": {"k": 1}}))
        .await;
    assert_eq!(status, 201, "{ack}");
    let id = ack["id"].as_str().unwrap();
    let (status, body) = api.lookup_as(KEY, id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": id, "status": "stored", "created_at": ack["created_at"], "type": "t", "consumer": "c", "payload": {"k": 1}})
    );
    let unknown = ObjectId::new().to_hex();
    let (status, body) = api.lookup_as(KEY, &unknown).await;
    assert_eq!(
        (status, body),
        (404, json!({"id": unknown, "status": "unknown"}))
    );
    let (status, body) = api.lookup_as(KEY, "not-an-id").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_query");
    let (status, body) = api
        .send(api.http.get(api.url(&format!("/v1/event/{id}"))))
        .await;
    assert_eq!(status, 401, "{body}");
    drop(direct);

    // Queue mode, MongoDB stopped: 202 from the POST, then queued, then stored once it is back.
    let env = queue_env(&rabbit, &[]);
    let service = start_queue_service(quick_visibility(ferret.env("status_queue")), &env).await;
    let api = Api::new(&service);
    ferret.pause();
    let (status, ack) = api
        .post_event(&json!({"type": "t", "consumer": "c", "payload": {"k": 2}}))
        .await;
    assert_eq!(status, 202, "{ack}");
    let acked = Instant::now();
    let id = ack["id"].as_str().unwrap().to_owned();
    let (status, body) = api.lookup_as(KEY, &id).await;
    assert_eq!((status, body), (202, json!({"id": id, "status": "queued"})));
    let (status, body) = api.lookup_as(KEY, &unknown).await;
    assert_eq!(
        status, 503,
        "MongoDB is down and the id was not published here: {body}"
    );
    // Nothing is stored while MongoDB is stopped: the event waited at least this long.
    let queued_at_least = acked.elapsed();
    ferret.resume().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = api.lookup_as(KEY, &id).await;
        if status == 200 {
            break body;
        }
        assert_eq!((status, &body["status"]), (202, &json!("queued")), "{body}");
        assert!(Instant::now() < deadline, "not stored within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        body,
        json!({"id": id, "status": "stored", "created_at": ack["created_at"], "type": "t", "consumer": "c", "payload": {"k": 2}})
    );
    let (status, body) = api.lookup_as(KEY, &unknown).await;
    assert_eq!(
        (status, body),
        (404, json!({"id": unknown, "status": "unknown"}))
    );
    // The visibility histogram saw that one event, and how long the outage held it back.
    let metrics = api.metrics_text().await;
    assert_eq!(
        metric_or_zero(&metrics, "auditlog_queue_visibility_seconds_count"),
        1.0,
        "{metrics}"
    );
    let lag = metric_or_zero(&metrics, "auditlog_queue_visibility_seconds_sum");
    assert!(
        lag >= queued_at_least.as_secs_f64() - 0.002,
        "visibility {lag} s, but the event was queued at least {queued_at_least:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_stopped_for_60_s_under_32_producers_costs_them_nothing() {
    let (rabbit, mut ferret) = tokio::join!(RabbitMq::start(), RestartableFerret::start());
    let service = start_queue_service(ferret.env("outage"), &queue_env(&rabbit, &[])).await;
    let api = Api::new(&service);
    // Each producer sends an event every ~10 ms: a steady load the machine can carry
    // beside RabbitMQ and FerretDB, so latency is the service's and not the CPU queue's.
    let load = load::start(
        &api,
        Load::new(32, 202)
            .kind("queued")
            .mixed_ids()
            .pace(Duration::from_millis(10)),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    ferret.pause();
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = api.send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(status, 200, "queue mode is ready without MongoDB: {body}");
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(paused.elapsed())).await;
    let depth = metric_or_zero(&api.metrics_text().await, "auditlog_queue_depth");
    ferret.resume().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;

    assert!(
        tally.errors.is_empty(),
        "producers saw errors: {:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    let p99 = tally.p99();
    println!(
        "{} events acknowledged during a 60 s MongoDB outage; p99 {p99:?}; queue depth before MongoDB returned: {depth}",
        tally.acked.len()
    );
    assert!(
        tally.acked.len() > 10_000,
        "too little load: {}",
        tally.acked.len()
    );
    assert!(
        depth > 1000.0,
        "the queue should have held the backlog: {depth}"
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");

    let collection = events_in(&ferret, "outage").await;
    let docs = wait_stored(&collection, tally.acked.len(), Duration::from_secs(300)).await;
    assert_exactly_once(&docs, &tally);
}

/// A backlog: MongoDB paused (and left paused) while `producers` send for `during`; every one
/// of at least `at_least` events confirmed.
async fn backlog(
    ferret: &mut RestartableFerret,
    api: &Api,
    producers: usize,
    during: Duration,
    at_least: usize,
) -> load::Tally {
    ferret.pause();
    let load = load::start(api, Load::new(producers, 202).kind("queued").mixed_ids());
    tokio::time::sleep(during).await;
    let tally = load.stop().await;
    assert!(
        tally.errors.is_empty(),
        "{:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert!(
        tally.acked.len() > at_least,
        "too little backlog: {}",
        tally.acked.len()
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_sigkilled_while_draining_stores_every_confirmed_event_once() {
    let (rabbit, mut ferret) = tokio::join!(RabbitMq::start(), RestartableFerret::start());
    let base = ferret.env("sigkill");
    let env = queue_env(&rabbit, &[]);
    let mut service = start_queue_service(base.clone(), &env).await;
    let api = Api::new(&service);
    let tally = backlog(&mut ferret, &api, 16, Duration::from_secs(5), 3000).await;

    ferret.resume().await;
    let collection = events_in(&ferret, "sigkill").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let n = collection.count_documents(doc! {}).await.unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "the drain never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    service.signal(libc::SIGKILL);
    service
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("SIGKILL");
    assert!(
        (at_kill as usize) < tally.acked.len(),
        "the drain finished before the kill ({at_kill}); nothing was proven"
    );
    drop(service);

    let service = start_queue_service(base, &env).await;
    let api = Api::new(&service);
    let docs = wait_stored(&collection, tally.acked.len(), Duration::from_secs(180)).await;
    assert_exactly_once(&docs, &tally);
    let metrics = api.metrics_text().await;
    println!(
        "killed at {at_kill} of {} stored; redelivered after the restart: {}",
        tally.acked.len(),
        metric_or_zero(&metrics, "auditlog_queue_redeliveries_total")
    );
    assert!(
        metric_or_zero(&metrics, "auditlog_queue_redeliveries_total") > 0.0,
        "the killed drain's unacknowledged messages come back as redeliveries: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_mongodb_away_exits_within_the_grace_and_loses_nothing() {
    let (rabbit, mut ferret) = tokio::join!(RabbitMq::start(), RestartableFerret::start());
    let base = ferret.env("sigterm");
    // A write deadline far beyond the grace: waiting for it is what the service must not do.
    let env = queue_env(
        &rabbit,
        &[
            ("AUDIT_WRITE_DEADLINE_SECS", "300"),
            ("AUDIT_SHUTDOWN_GRACE_SECS", "2"),
        ],
    );
    let mut service = start_queue_service(base.clone(), &env).await;
    let api = Api::new(&service);
    let tally = backlog(&mut ferret, &api, 8, Duration::from_secs(3), 500).await;

    // The drain holds a prefetch window of messages whose writes wait for MongoDB.
    let stopping = Instant::now();
    service.signal(libc::SIGTERM);
    let status = service
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the service did not exit within 30 s of SIGTERM with MongoDB away");
    let took = stopping.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(15),
        "exit took {took:?}: the grace is 2 s per step, the write deadline 300 s"
    );
    drop(service);

    ferret.resume().await;
    let collection = events_in(&ferret, "sigterm").await;
    let _service = start_queue_service(base, &env).await;
    let docs = wait_stored(&collection, tally.acked.len(), Duration::from_secs(120)).await;
    assert_exactly_once(&docs, &tally);
    println!(
        "exited {took:?} after SIGTERM; {} confirmed events stored once after the restart",
        tally.acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_stopped_answers_503_with_retry_after_and_loses_nothing_confirmed() {
    let (mut rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let service = start_queue_service(mongo.env(), &queue_env(&rabbit, &[])).await;
    let api = Api::new(&service);
    let load = load::start(
        &api,
        Load::new(8, 202)
            .kind("queued")
            .mixed_ids()
            .pace(Duration::from_millis(5)),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbit.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", KEY)
        .json(&json!({"type": "t", "consumer": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.headers().get("retry-after").is_some(),
        "503 without Retry-After"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable", "{body}");
    let (status, _) = api.send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(status, 503, "not ready without RabbitMQ");
    let health = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbit.resume().await;
    wait_ready(&api, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;

    for (status, retry_after, body) in &tally.errors {
        assert_eq!(*status, 503, "{body}");
        assert!(retry_after.is_some(), "503 without Retry-After: {body}");
    }
    assert!(
        !tally.errors.is_empty(),
        "RabbitMQ was down: some producer should have seen it"
    );
    let docs_before = tally.acked.len();
    assert!(docs_before > 100, "too little load: {docs_before}");
    // Each acknowledged event exactly once; an event refused with 503 may be stored or not
    // (its confirm may have been lost with the connection) — never twice.
    let collection = events_of(&mongo).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let docs = loop {
        let docs = all_docs(&collection).await;
        let ids = unique_ids(&docs);
        if tally.acked.iter().all(|id| ids.contains(id)) {
            break docs;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged events missing after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_exactly_once(&docs, &tally);
    println!(
        "{} acknowledged, {} refused with 503 while RabbitMQ was down, {} stored",
        tally.acked.len(),
        tally.errors.len(),
        docs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_land_in_the_dead_letter_queue_with_their_reason() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    // Through a proxy that answers as a store refusing every event of consumer "refused" for
    // good: DocumentValidationFailure (121), which no retry can mend.
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    proxy.add(Rule::refuse_consumer_for_good("refused"));
    let service = start_queue_service(
        with_mongodb_uri(mongo.env(), &uri),
        &queue_env(&rabbit, &[]),
    )
    .await;
    let api = Api::new(&service);

    // Not an event at all, straight into the queue.
    let (_conn, channel) = amqp_channel(&rabbit.url()).await;
    publish_raw(&channel, QUEUE, b"this is not BSON", None).await;
    // A group of events, as the service publishes them: one the store takes, one it refuses.
    // The refused one is dead-lettered alone; the other is stored and the group acknowledged.
    let (kept, refused_in_group) = (ObjectId::new(), ObjectId::new());
    let now = mongodb::bson::DateTime::now();
    publish_group(
        &channel,
        QUEUE,
        vec![
            doc! { "_id": kept, "type": "t", "consumer": "grouped", "created_at": now },
            doc! { "_id": refused_in_group, "type": "t", "consumer": "refused", "created_at": now },
        ],
    )
    .await;
    // The same producer id with other content: the second cannot be stored.
    let id = ObjectId::new().to_hex();
    let (status, body) = api
        .post_event(&json!({"type": "t", "consumer": "c", "id": id, "payload": {"v": "first"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api
        .post_event(&json!({"type": "t", "consumer": "c", "id": id, "payload": {"v": "second"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    // An event the store refuses for good.
    let (status, refused) = api
        .post_event(&json!({"type": "t", "consumer": "refused", "payload": {"v": "x"}}))
        .await;
    assert_eq!(status, 202, "{refused}");
    let refused_id = refused["id"].as_str().expect("id").to_owned();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = api.metrics_text().await;
        let dead = metric_or_zero(&metrics, "auditlog_queue_dead_letter_depth");
        if dead >= 4.0 {
            assert_eq!(
                metric_or_zero(
                    &metrics,
                    "auditlog_queue_dead_letters_total{reason=\"malformed\"}"
                ),
                1.0,
                "{metrics}"
            );
            assert_eq!(
                metric_or_zero(
                    &metrics,
                    "auditlog_queue_dead_letters_total{reason=\"id_conflict\"}"
                ),
                1.0,
                "{metrics}"
            );
            assert_eq!(
                metric_or_zero(
                    &metrics,
                    "auditlog_queue_dead_letters_total{reason=\"rejected\"}"
                ),
                2.0,
                "{metrics}"
            );
            assert_eq!(dead, 4.0, "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letters within 60 s: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        proxy.documents_failed(),
        2,
        "each refused event was sent once"
    );
    let mut reasons = vec![];
    for _ in 0..4 {
        let message = channel
            .basic_get(
                format!("{QUEUE}.dead").into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .expect("a dead letter");
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let text = |key: &str| match headers.inner().get(key) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("header {key}: {other:?}"),
        };
        // A refused event of the group is dead-lettered as a message of its own: its document.
        let body = mongodb::bson::from_slice::<Document>(&message.delivery.data).ok();
        let alone = body.as_ref().and_then(|b| b.get_object_id("_id").ok());
        reasons.push((
            text("x-auditlog-reason-code"),
            text("x-auditlog-reason"),
            alone == Some(refused_in_group),
        ));
    }
    reasons.sort();
    assert_eq!(reasons[0].0, "id_conflict", "{reasons:?}");
    assert!(reasons[0].1.contains(&id), "{reasons:?}");
    assert_eq!(reasons[1].0, "malformed", "{reasons:?}");
    assert!(reasons[1].1.contains("BSON"), "{reasons:?}");
    for rejected in &reasons[2..] {
        assert_eq!(rejected.0, "rejected", "{reasons:?}");
        assert!(rejected.1.contains("code 121"), "{reasons:?}");
    }
    assert_eq!(
        reasons.iter().filter(|r| r.2).count(),
        1,
        "the group's refused event alone: {reasons:?}"
    );

    // The first event is stored, once, with its own content; so is the group's other event.
    let docs = all_docs(&events_of(&mongo).await).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    let first = docs
        .iter()
        .find(|d| d.get_str("consumer") == Ok("c"))
        .expect("the first event");
    assert_eq!(
        first.get_document("payload").unwrap().get_str("v").unwrap(),
        "first"
    );
    assert!(
        docs.iter().any(|d| d.get_object_id("_id") == Ok(kept)),
        "{docs:?}"
    );
    let (status, body) = api.lookup_as(KEY, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"]["v"], "first");
    // The refused event is not stored, and this replica no longer calls it queued.
    let (status, body) = api.lookup_as(KEY, &refused_id).await;
    assert_eq!(
        (status, body),
        (404, json!({"id": refused_id, "status": "unknown"}))
    );

    // Every message was settled, the group's too: killed now, the service leaves nothing that
    // RabbitMQ would deliver again.
    drop(service);
    assert_eq!(
        left_in_queue(&channel).await,
        0,
        "a message left unacknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_event_is_compared_with_its_own_consumers_copy_not_another_consumers() {
    const OTHER_SHARD: &str = "events_on_another_shard";
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let service = start_queue_service(
        with_mongodb_uri(mongo.env(), &uri),
        &queue_env(&rabbit, &[]),
    )
    .await;
    let api = Api::new(&service);
    // Events of "billing" and of "shipping"; and, on another shard of a cluster sharded on
    // `{consumer: "hashed", _id: 1}`, a "shipping" event with each billing event's id (`_id`
    // is unique per shard only), which the proxy adds to every find's answer.
    let now = mongodb::bson::DateTime::now();
    let mut events = Vec::new();
    let mut others = Vec::new();
    for i in 0..20 {
        let (billing, shipping) = (ObjectId::new(), ObjectId::new());
        events.push(json!({"id": billing.to_hex(), "type": "t", "consumer": "billing", "payload": {"i": i}}));
        events.push(json!({"id": shipping.to_hex(), "type": "t", "consumer": "shipping", "payload": {"i": i}}));
        others.push(
            doc! {"_id": billing, "type": "t", "consumer": "shipping", "created_at": now,
            "payload": {"i": i}},
        );
    }
    let post_all = || async {
        let (status, body) = api
            .send(
                api.http
                    .post(api.url("/v1/events"))
                    .header("X-Api-Key", KEY)
                    .json(&events),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 40, "{body}");
    };
    post_all().await;
    let collection = events_of(&mongo).await;
    wait_stored(&collection, 40, Duration::from_secs(60)).await;
    mongo
        .store()
        .await
        .database()
        .collection::<Document>(OTHER_SHARD)
        .insert_many(others)
        .await
        .expect("store the other shard's events");
    proxy.add(Rule::events_also_on_shard(OTHER_SHARD));

    // The producers send the same events again: the drain meets each one's own copy as a
    // duplicate; the read of a batch's copies returns the other shard's events too.
    post_all().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let metrics = api.metrics_text().await;
        let duplicate = metric_or_zero(
            &metrics,
            "auditlog_queue_drained_total{outcome=\"duplicate\"}",
        );
        let conflicts = metric_or_zero(
            &metrics,
            "auditlog_queue_dead_letters_total{reason=\"id_conflict\"}",
        );
        if duplicate + conflicts >= 40.0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the second sending not drained within 60 s: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        proxy.applied("find") > 0,
        "the copies were never read through both shards"
    );
    assert_eq!(
        metric_or_zero(
            &metrics,
            "auditlog_queue_dead_letters_total{reason=\"id_conflict\"}"
        ),
        0.0,
        "a retry with the same content was taken for a conflict with another consumer's \
         event: {metrics}"
    );
    assert_eq!(
        metric_or_zero(
            &metrics,
            "auditlog_queue_drained_total{outcome=\"duplicate\"}"
        ),
        40.0,
        "{metrics}"
    );
    let docs = all_docs(&collection).await;
    assert_eq!(unique_ids(&docs).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_alarm_answers_503_and_a_deep_queue_429_both_with_retry_after() {
    let (rabbit, mut ferret) = tokio::join!(RabbitMq::start(), RestartableFerret::start());
    let env = queue_env(
        &rabbit,
        &[
            ("AUDIT_AMQP_MAX_DEPTH", "50"),
            ("AUDIT_AMQP_PREFETCH", "10"),
        ],
    );
    let service = start_queue_service(ferret.env("pressure"), &env).await;
    let api = Api::new(&service);
    let post = |i: u64| {
        let api = api.clone();
        async move {
            let started = Instant::now();
            let r = api
                .http
                .post(api.url("/v1/event"))
                .header("X-Api-Key", KEY)
                .json(&json!({"type": "t", "consumer": "c", "payload": {"i": i}}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap_or_default();
            (status, retry_after, body, started.elapsed())
        }
    };
    assert_eq!(post(0).await.0, 202);

    // A disk alarm: RabbitMQ blocks publishers; producers hear it within seconds.
    let out = rabbit.ctl(&["set_disk_free_limit", "1000000GB"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, retry_after, body, took) = post(1).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "queue_unavailable", "{body}");
            assert!(retry_after.is_some(), "503 without Retry-After");
            assert!(
                took < Duration::from_secs(10),
                "a blocked publish waited {took:?}"
            );
            break;
        }
        assert_eq!(status, 202, "{body}");
        assert!(
            Instant::now() < deadline,
            "publishes still confirmed during a disk alarm"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = rabbit.ctl(&["set_disk_free_limit", "50MB"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(2).await.0 != 202 {
        assert!(
            Instant::now() < deadline,
            "publishes not confirmed again after the alarm"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // MongoDB away: the queue grows past AUDIT_AMQP_MAX_DEPTH (50 ready) and producers get 429.
    ferret.pause();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 3;
    loop {
        let (status, retry_after, body, _) = post(i).await;
        i += 1;
        if status == 429 {
            assert_eq!(body["error"]["code"], "busy", "{body}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            break;
        }
        assert_eq!(status, 202, "{body}");
        assert!(Instant::now() < deadline, "no 429 after {i} events");
    }
    let depth = metric_or_zero(&api.metrics_text().await, "auditlog_queue_depth");
    assert!(depth > 50.0, "{depth}");
}

#[tokio::test]
async fn queue_mode_without_an_amqp_url_refuses_to_start() {
    let bin = testcontainers_tests::binary::build("auditlog-service");
    let out = std::process::Command::new(bin)
        .arg("run")
        .env("AUDIT_API_KEY", KEY)
        .env("AUDIT_INGEST_MODE", "queue")
        .env_remove("AUDIT_AMQP_URL")
        .output()
        .expect("run the service");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUDIT_AMQP_URL"), "{stderr}");
}
