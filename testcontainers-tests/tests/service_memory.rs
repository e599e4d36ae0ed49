//! Memory stays bounded however many connections send large bodies at once: request bodies
//! being read or parsed share one byte budget (`AUDIT_MAX_INFLIGHT_BODY_BYTES`, 128 MiB by
//! default); past it a request is answered 503 with `Retry-After` instead of taking memory.

#[path = "support/service.rs"]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{start_service, KEY};
use testcontainers_tests::mongo::test_mongo;

#[tokio::test]
async fn three_hundred_concurrent_8_mib_bodies_are_all_answered_within_a_gigabyte() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    // 8 MiB: a batch of 1,000 events of about 8 KiB each. They lack `consumer`, so each is
    // refused on its own after parsing: the body is read and parsed in full, and the test
    // measures the request path's memory, not the store's speed (the write queue has its own
    // byte bound, tested elsewhere).
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "bulk", "payload": {"i": i, "blob": "x".repeat(8 * 1024 + 200)}}))
        .collect();
    let body = bytes::Bytes::from(serde_json::to_vec(&events).expect("json"));
    assert!(body.len() >= 8 * 1024 * 1024, "{} bytes", body.len());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("{}/v1/events", service.base_url);
    let requests: Vec<_> = (0..300)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .header("X-Api-Key", KEY)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").is_some();
                let answer: Value = resp.json().await.unwrap_or(Value::Null);
                Ok::<_, reqwest::Error>((status, retry_after, answer))
            })
        })
        .collect();
    let (mut parsed, mut overloaded) = (0, 0);
    for r in requests {
        let (status, retry_after, answer) =
            r.await.expect("task").expect("every request is answered");
        match status {
            200 => {
                assert_eq!(answer["rejected"], 1000, "{answer}");
                parsed += 1;
            }
            503 => {
                assert!(retry_after, "503 without Retry-After");
                assert_eq!(answer["error"]["code"], "overloaded", "{answer}");
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let peak = testcontainers_tests::peak_rss(service.pid()).expect("the service is running");
    println!(
        "300 × 8 MiB: {parsed} parsed, {overloaded} answered 503; service peak RSS {} MiB",
        peak >> 20
    );
    assert!(parsed > 0, "no body got through");
    assert!(
        peak < 1024 * 1024 * 1024,
        "peak RSS {} MiB is over the documented 1 GiB",
        peak >> 20
    );
    // The budget is released: once the burst is over, a body goes through again.
    let (status, _) = support::Api::new(&service)
        .post_event(&json!({"type": "after", "consumer": "c"}))
        .await;
    assert_eq!(status, 201);
}
