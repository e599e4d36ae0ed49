//! Queue mode tells the truth, over real HTTP against the real binary with a real RabbitMQ and
//! FerretDB: an event's "queued" answer holds while it is queued, even after a retry of it
//! failed; the dead events of a group land in the dead-letter queue once each, even when
//! RabbitMQ refuses a dead-letter publish.

#[path = "support/service.rs"]
mod support;

use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Document};
use serde_json::json;
use support::{amqp_channel, publish_group, start_service_env, with_mongodb_uri, Api, KEY};
use testcontainers_tests::binary::RunningBinary;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};
use testcontainers_tests::rabbitmq::RabbitMq;

/// Starts a queue-mode service on `base` (its store) and RabbitMQ at `amqp_url`, and waits
/// until it is ready.
async fn start_queue(base: Vec<(String, String)>, amqp_url: &str) -> RunningBinary {
    let env = [("AUDIT_INGEST_MODE", "queue"), ("AUDIT_AMQP_URL", amqp_url)];
    let service = start_service_env(base, &env).await;
    let api = Api::new(&service);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.send(api.http.get(api.url("/readyz"))).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service
}

#[tokio::test]
async fn a_failed_retry_does_not_turn_a_queued_event_into_an_unknown_one() {
    let (mut rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let url = rabbit.url();
    let service = start_queue(with_mongodb_uri(mongo.env(), &uri), &url).await;
    let api = Api::new(&service);
    // MongoDB refuses the events' inserts: the event stays queued.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()).on("events"));
    let id = ObjectId::new().to_hex();
    let event = json!({"id": id, "type": "t", "consumer": "c"});
    let (status, body) = api.post_event(&event).await;
    assert_eq!(status, 202, "{body}");
    assert_queued(&api, &id, "the first publish").await;

    // The producer retries (it did not hear the 202, say) while RabbitMQ has stopped
    // answering: the retry is remembered, sent, and its confirm never comes — 503. The first
    // publish was confirmed: the event is still queued, and says so.
    rabbit.freeze();
    let (status, body) = api.post_event(&event).await;
    assert_eq!(status, 503, "{body}");
    assert_queued(&api, &id, "a retry whose confirm never came").await;

    // So too when RabbitMQ is gone (the retry is refused before it is sent).
    rabbit.thaw();
    rabbit.stop().await;
    let (status, body) = api.post_event(&event).await;
    assert_eq!(status, 503, "{body}");
    assert_queued(&api, &id, "a retry refused before it was sent").await;
}

/// `GET /v1/event/{id}` says the event is queued (202), after `what`.
async fn assert_queued(api: &Api, id: &str, what: &str) {
    let (status, body) = api.lookup_as(KEY, id).await;
    assert_eq!(
        (status, body["status"].clone()),
        (202, json!("queued")),
        "after {what}, the event is not \"queued\": {body}"
    );
}

/// The event ids in every message of `queue` (a group's events one by one), taking them out.
async fn ids_in(channel: &lapin::Channel, queue: &str) -> Vec<ObjectId> {
    let mut ids = vec![];
    while let Some(m) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        let doc = Document::from_reader(m.delivery.data.as_slice()).expect("a BSON body");
        match doc.get_array("events") {
            Ok(events) => ids.extend(
                events
                    .iter()
                    .filter_map(|e| e.as_document()?.get_object_id("_id").ok()),
            ),
            Err(_) => ids.extend(doc.get_object_id("_id").ok()),
        }
    }
    ids
}

#[tokio::test]
async fn a_groups_dead_events_land_in_the_dead_letter_queue_once_each() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    // A store that refuses every event of consumer "refused" for good (121).
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    proxy.add(Rule::refuse_consumer_for_good("refused"));
    // A dead-letter queue that takes one more message, then refuses publishes: the second of two
    // separate dead-letter publishes fails after the first succeeded. (A quorum queue takes
    // one message past its max-length before it refuses: a max-length of 0 takes exactly one.)
    let out = rabbit.ctl(&[
        "set_policy",
        "dead-cap",
        "^auditlog\\.events\\.dead$",
        r#"{"max-length":0,"overflow":"reject-publish"}"#,
        "--apply-to",
        "queues",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = rabbit.url();
    let _service = start_queue(with_mongodb_uri(mongo.env(), &uri), &url).await;

    // A group as the service publishes them: one event the store takes, two it refuses.
    let (kept, r1, r2) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    let now = mongodb::bson::DateTime::now();
    let (_conn, channel) = amqp_channel(&url).await;
    publish_group(
        &channel,
        "auditlog.events",
        vec![
            doc! { "_id": kept, "type": "t", "consumer": "kept", "created_at": now },
            doc! { "_id": r1, "type": "t", "consumer": "refused", "created_at": now },
            doc! { "_id": r2, "type": "t", "consumer": "refused", "created_at": now },
        ],
    )
    .await;

    // The kept event is stored, and the group settled.
    let events = mongo.store().await.events();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events.count_documents(doc! {"_id": kept}).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the kept event was not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut dead = ids_in(&channel, "auditlog.events.dead").await;
    dead.sort();
    let mut expected = vec![r1, r2];
    expected.sort();
    assert_eq!(
        dead, expected,
        "each refused event of the group once in the dead-letter queue (and nothing else)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_is_a_refusal_unless_it_says_the_event_may_be_stored() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let url = rabbit.url();
    let service = start_queue(mongo.env(), &url).await;
    let api = Api::new(&service);
    // 32 producers, ids assigned by the service: a producer told 503 retries with a new id,
    // so an event published after its 503 would be stored twice.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = vec![];
    for p in 0..32u64 {
        let (api, stop) = (api.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut answers = vec![];
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seq = n * 32 + p;
                n += 1;
                let (status, body) = api
                    .post_event(&json!({"type": "t", "consumer": "c", "payload": {"seq": seq}}))
                    .await;
                answers.push((seq, status, body));
                if status != 202 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A memory alarm: RabbitMQ stops reading publishes, confirms stop; events wait behind the
    // publishes in flight until their producers give up. Then it lifts.
    let set = |args: &[&str]| {
        let out = rabbit.ctl(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set(&["set_vm_memory_high_watermark", "absolute", "1"]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    set(&["set_vm_memory_high_watermark", "0.6"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = vec![];
    for p in producers {
        answers.extend(p.await.unwrap());
    }
    // Everything published is stored by now (MongoDB is well): wait until the count settles.
    let events = mongo.store().await.events();
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let count = events.count_documents(doc! {}).await.unwrap();
        if count == last {
            break;
        }
        last = count;
    }
    let stored: std::collections::HashSet<u64> = support::all_docs(&events)
        .await
        .iter()
        .filter_map(|d| {
            d.get_document("payload")
                .ok()?
                .get_i64("seq")
                .ok()
                .map(|s| s as u64)
                .or_else(|| {
                    d.get_document("payload")
                        .ok()?
                        .get_i32("seq")
                        .ok()
                        .map(|s| s as u64)
                })
        })
        .collect();
    let refused: Vec<&(u64, u16, serde_json::Value)> = answers
        .iter()
        .filter(|(_, status, _)| *status == 503)
        .collect();
    assert!(
        !refused.is_empty(),
        "no producer got 503 during the alarm; the test proved nothing"
    );
    let wrong: Vec<_> = refused
        .iter()
        .filter(|(seq, _, body)| {
            stored.contains(seq)
                && !body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("may be stored")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} events refused with 503 were stored all the same, e.g. {:?}",
        wrong.len(),
        refused.len(),
        wrong.first()
    );
    eprintln!(
        "{} answers, {} refused with 503, {} stored",
        answers.len(),
        refused.len(),
        stored.len()
    );
}
