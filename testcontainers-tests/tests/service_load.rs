//! Many producers, store outages, SIGTERM and backpressure, over real HTTP against the real
//! binary: every acknowledged event is stored exactly once.

#[path = "support/load.rs"]
mod load;
#[path = "support/service.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use load::Load;
use serde_json::json;
use support::{
    metric_or_zero, start_service, start_service_env, stored, unique_ids, Api, RestartableFerret,
};
use testcontainers_tests::mongo::test_mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_producers_lose_nothing_and_repeat_nothing() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let tally = load::run(&api, Load::new(32, 201).per_producer(200).server_ids()).await;
    assert!(
        tally.errors.is_empty(),
        "errors: {:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert_eq!(tally.acked.len(), 32 * 200);

    let docs = stored(&mongo).await;
    let ids = unique_ids(&docs);
    assert_eq!(
        docs.len(),
        tally.acked.len(),
        "stored count differs from acknowledged count"
    );
    assert_eq!(ids, tally.acked.iter().cloned().collect::<HashSet<_>>());

    let metrics = api.metrics_text().await;
    let batches = metric_or_zero(&metrics, "auditlog_write_batch_size_count");
    let events = metric_or_zero(&metrics, "auditlog_write_batch_size_sum");
    assert_eq!(events, 6400.0);
    assert!(
        batches < events,
        "group commit never grouped: {batches} batches for {events} events"
    );
    println!("32 producers: {events} events in {batches} insert_many batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_group_commit_every_event_is_its_own_insert() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("AUDIT_GROUP_COMMIT", "false")]).await;
    let api = Api::new(&service);
    let tally = load::run(&api, Load::new(8, 201).per_producer(40).server_ids()).await;
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    let docs = stored(&mongo).await;
    assert_eq!(unique_ids(&docs).len(), 320);
    let metrics = api.metrics_text().await;
    assert_eq!(
        metric_or_zero(&metrics, "auditlog_write_batch_size_count"),
        320.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_retry_storm_stores_one_copy_each() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let ids: Vec<String> = (0..40)
        .map(|_| mongodb::bson::oid::ObjectId::new().to_hex())
        .collect();
    let mut tasks = vec![];
    for copy in 0..10 {
        for (i, id) in ids.iter().enumerate() {
            let (api, id) = (api.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let event = json!({"type": "retry", "consumer": format!("c{}", i % 4), "id": id, "payload": {"i": i}});
                let (status, body) = api.post_event(&event).await;
                (copy, status, body)
            }));
        }
    }
    let mut created = 0;
    for t in tasks {
        let (_, status, body) = t.await.unwrap();
        assert!(status == 201 || status == 200, "{status}: {body}");
        if status == 201 {
            created += 1;
        }
    }
    let docs = stored(&mongo).await;
    assert_eq!(docs.len(), 40, "one stored copy per producer id");
    assert_eq!(
        unique_ids(&docs),
        ids.iter().cloned().collect::<HashSet<_>>()
    );
    assert_eq!(created, 40, "exactly one 201 per id, the rest 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_of_five_seconds_costs_latency_not_events() {
    let mut ferret = RestartableFerret::start().await;
    let service =
        start_service_env(ferret.env("outage"), &[("AUDIT_WRITE_DEADLINE_SECS", "30")]).await;
    let api = Api::new(&service);
    let load = load::start(&api, Load::new(16, 201).server_ids());
    tokio::time::sleep(Duration::from_secs(1)).await;
    ferret.pause();
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, ready) = api.send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(
        status, 503,
        "readyz must fail while the store is down: {ready}"
    );
    let health = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "liveness must not depend on the store"
    );
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(paused.elapsed())).await;
    ferret.resume().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;

    assert!(
        tally.errors.is_empty(),
        "producers saw errors: {:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert!(
        tally.acked.len() > 100,
        "too little load to prove anything: {}",
        tally.acked.len()
    );
    let client = ferret.client().await;
    let docs: Vec<mongodb::bson::Document> = {
        use futures::TryStreamExt;
        client
            .database("outage")
            .collection("events")
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let ids = unique_ids(&docs);
    assert_eq!(
        docs.len(),
        tally.acked.len(),
        "stored count differs from acknowledged count"
    );
    assert!(
        tally.acked.iter().all(|id| ids.contains(id)),
        "an acknowledged event is missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let mongo = test_mongo().await;
    let mut service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let load = tokio::spawn(
        load::start(&api, Load::new(16, 201).server_ids().until_disconnected()).finish(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    service.signal(libc::SIGTERM);
    let status = service
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("the service did not exit after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        service.output()
    );
    let tally = tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .expect("producers hang")
        .unwrap();
    assert!(
        tally.acked.len() > 50,
        "too little load: {}",
        tally.acked.len()
    );
    // Refusals during shutdown are allowed (the producer knows it must retry); silence is not.
    assert!(
        tally.errors.iter().all(|(s, _, _)| *s == 503),
        "{:?}",
        tally.errors
    );

    let docs = stored(&mongo).await;
    let ids = unique_ids(&docs);
    assert!(
        tally.acked.iter().all(|id| ids.contains(id)),
        "an acknowledged event was lost"
    );
    assert!(
        service.output().contains("write queue drained"),
        "{}",
        service.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_an_unreachable_store_503_with_retry_after() {
    let mut ferret = RestartableFerret::start().await;
    let service = start_service_env(
        ferret.env("pressure"),
        &[
            ("AUDIT_QUEUE_CAPACITY", "4"),
            ("AUDIT_WRITERS", "1"),
            ("AUDIT_WRITE_DEADLINE_SECS", "3"),
        ],
    )
    .await;
    let api = Api::new(&service);
    ferret.pause();
    let mut tasks = vec![];
    for i in 0..12 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let r = api
                .http
                .post(api.url("/v1/event"))
                .header("X-Api-Key", support::KEY)
                .json(&json!({"type": "t", "consumer": "c", "payload": {"i": i}}))
                .send()
                .await
                .unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, retry_after, body)
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = vec![];
    for t in tasks {
        let (status, retry_after, body) = t.await.unwrap();
        match status {
            429 => assert_eq!(body["error"]["code"], "busy"),
            503 => assert_eq!(body["error"]["code"], "store_unavailable"),
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(
            retry_after.is_some_and(|v| v.parse::<u64>().is_ok()),
            "{status} without Retry-After"
        );
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
}
