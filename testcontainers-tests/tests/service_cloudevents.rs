//! CloudEvents 1.0 over HTTP against the real binary: events sent by the CloudEvents Rust SDK
//! (`cloudevents-sdk`, binary mode through its reqwest binding, structured mode from its own
//! serializer) are stored and found again — also as CloudEvents the SDK reads back — and
//! everything that holds for our own events holds for them: retries stored once, conflicts,
//! clear 4xx errors, limits, gzip bodies, scoped keys and queue mode.

#[path = "support/service.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use cloudevents::binding::reqwest::RequestBuilderExt;
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde_json::{json, Value};
use support::{key_entry, start_service, start_service_env, stored, Answer, Api, KEY};
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::rabbitmq::RabbitMq;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// The stored id of (`source`, `id`), as docs/api.md says to compute it.
fn stored_id(source: &str, id: &str) -> String {
    auditlog_service::cloudevents::stored_id(source, id)
}

fn order_event(id: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("https://shop.example/orders")
        .ty("order.created")
        .subject("order-17")
        .time("2026-12-07T10:00:00Z")
        .extension("tenant", "acme")
        .data(
            "application/json",
            json!({"total": 12, "items": ["a", "b"]}),
        )
        .build()
        .expect("a valid CloudEvent")
}

/// `POST path` of `body` as `content_type` with API key `key`.
async fn post_as(api: &Api, key: &str, path: &str, content_type: &str, body: &Value) -> Answer {
    api.send(
        api.http
            .post(api.url(path))
            .header("X-Api-Key", key)
            .header("Content-Type", content_type)
            .body(body.to_string()),
    )
    .await
}

async fn post_structured(api: &Api, key: &str, event: &Value) -> Answer {
    post_as(api, key, "/v1/event", STRUCTURED, event).await
}

async fn post_batch(api: &Api, key: &str, events: &Value) -> Answer {
    post_as(api, key, "/v1/events", BATCH, events).await
}

/// Every event of `source` as CloudEvents, with the paging headers of the first page.
async fn find_cloudevents(api: &Api, query: &[(&str, &str)]) -> (Vec<Value>, Option<String>) {
    let resp = api
        .http
        .get(api.url("/v1/find"))
        .header("X-Api-Key", KEY)
        .header("Accept", BATCH)
        .query(&[("include_incomplete", "true")])
        .query(query)
        .send()
        .await
        .expect("find");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(BATCH)
    );
    assert!(resp.headers().contains_key("x-complete-until"));
    let next = resp
        .headers()
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = resp.json().await.expect("a JSON array");
    (body.as_array().expect("an array").clone(), next)
}

#[tokio::test]
async fn events_sent_by_the_rust_sdk_are_found_again_with_their_attributes() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);

    // Binary mode, as the SDK's reqwest binding sends it.
    let binary = order_event("bin-1");
    let resp = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", KEY)
        .event(binary.clone())
        .expect("the SDK builds the request")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 201);
    let ack: Value = resp.json().await.expect("ack");
    assert_eq!(ack["id"], stored_id("https://shop.example/orders", "bin-1"));

    // Structured mode, from the SDK's own JSON serializer.
    let structured = order_event("str-1");
    let (status, ack2) =
        post_structured(&api, KEY, &serde_json::to_value(&structured).unwrap()).await;
    assert_eq!(status, 201, "{ack2}");

    // Binary data that is not JSON.
    let raw = EventBuilderV10::new()
        .id("bin-2")
        .source("https://shop.example/orders")
        .ty("order.receipt")
        .data("application/octet-stream", vec![0u8, 159, 146, 150])
        .build()
        .unwrap();
    let resp = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", KEY)
        .event(raw.clone())
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    // Stored as our own events: consumer = source, the payload keeps attributes and data.
    let docs = stored(&mongo).await;
    assert_eq!(docs.len(), 3);
    let (status, found) = api
        .find(&[
            ("consumer", "https://shop.example/orders"),
            ("type", "order.created"),
            ("include_incomplete", "true"),
        ])
        .await;
    assert_eq!(status, 200, "{found}");
    let events = found["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{found}");
    assert_eq!(events[0]["payload"]["data"]["total"], 12);
    assert_eq!(events[0]["payload"]["cloudevent"]["tenant"], "acme");

    // And back as CloudEvents, which the SDK parses with every attribute as sent.
    let (back, _) = find_cloudevents(&api, &[("consumer", "https://shop.example/orders")]).await;
    assert_eq!(back.len(), 3);
    for sent in [&binary, &structured, &raw] {
        let json = back
            .iter()
            .find(|e| e["id"] == sent.id())
            .unwrap_or_else(|| panic!("{} not found in {back:?}", sent.id()));
        let got: Event = serde_json::from_value(json.clone()).expect("the SDK reads it");
        assert_eq!(got.ty(), sent.ty());
        assert_eq!(got.source(), sent.source());
        assert_eq!(got.subject(), sent.subject());
        assert_eq!(got.time(), sent.time());
        assert_eq!(got.data(), sent.data(), "{json}");
        assert_eq!(
            got.extension("auditlogid").map(|v| v.to_string()),
            Some(stored_id(sent.source().as_str(), sent.id()))
        );
        if sent.id() != "bin-2" {
            assert_eq!(
                got.extension("tenant").map(|v| v.to_string()).as_deref(),
                Some("acme")
            );
        }
    }
}

#[tokio::test]
async fn a_retried_cloudevent_is_stored_once_and_other_content_conflicts() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let event = serde_json::to_value(order_event("retry-1")).unwrap();

    let (first, ack1) = post_structured(&api, KEY, &event).await;
    let (second, ack2) = post_structured(&api, KEY, &event).await;
    assert_eq!((first, second), (201, 200), "{ack1} {ack2}");
    assert_eq!(ack1, ack2, "a retry answers the stored id and created_at");

    // The same event once more, in binary mode this time, and inside a batch.
    let resp = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", KEY)
        .event(order_event("retry-1"))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, batch) = post_batch(&api, KEY, &json!([event])).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["status"], 200, "{batch}");
    assert_eq!(stored(&mongo).await.len(), 1);

    // Same source and id, other content: refused as a producer id's conflict is.
    let mut other = event.clone();
    other["data"] = json!({"total": 13});
    let (status, body) = post_structured(&api, KEY, &other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "id_conflict");
    // Same id from another source is another event.
    let mut elsewhere = event.clone();
    elsewhere["source"] = json!("https://shop.example/returns");
    assert_eq!(post_structured(&api, KEY, &elsewhere).await.0, 201);
    assert_eq!(stored(&mongo).await.len(), 2);
}

#[tokio::test]
async fn bad_cloudevents_get_clear_errors_and_limits_hold() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("AUDIT_MAX_BATCH_EVENTS", "3")]).await;
    let api = Api::new(&service);
    let good = serde_json::to_value(order_event("ok-1")).unwrap();

    let cases: [(&str, Value, u16, &str, &str); 5] = [
        (
            "no source",
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
            400,
            "invalid_cloudevent",
            "`source` is missing",
        ),
        (
            "old version",
            json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
            400,
            "invalid_cloudevent",
            "specversion",
        ),
        (
            "bad extension name",
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Tenant": "x"}),
            400,
            "invalid_cloudevent",
            "Tenant",
        ),
        (
            "both data forms",
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": 1, "data_base64": "AA=="}),
            400,
            "invalid_cloudevent",
            "not both",
        ),
        (
            "a data key MongoDB cannot store",
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"a.b": 1}}),
            422,
            "invalid_event",
            "a.b",
        ),
    ];
    for (what, event, status, code, names) in cases {
        let (got, body) = post_structured(&api, KEY, &event).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{what}: {message}");
    }

    // A batch sent where one event is expected, and the reverse: 415 naming the right path.
    let (status, body) = post_batch(&api, KEY, &json!([good])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .post_raw("/v1/event", BATCH, json!([good]).to_string().into_bytes())
        .await;
    assert_eq!(status, 415, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/events"));
    let (status, body) = api
        .post_raw("/v1/events", STRUCTURED, good.to_string().into_bytes())
        .await;
    assert_eq!(status, 415, "{body}");

    // A batch: each event on its own; over AUDIT_MAX_BATCH_EVENTS the whole batch is refused.
    let mut bad = good.clone();
    bad["specversion"] = json!("0.3");
    let mut second = good.clone();
    second["id"] = json!("ok-2");
    let (status, body) = post_batch(&api, KEY, &json!([second, bad])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["results"][1]["status"], 400);
    assert_eq!(body["results"][1]["error"]["code"], "invalid_cloudevent");
    let (status, body) = post_batch(&api, KEY, &json!([good, good, good, good])).await;
    assert_eq!(status, 413, "{body}");

    // A gzip body goes through the compression layer and is the same event.
    let mut third = good.clone();
    third["id"] = json!("gz-1");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(third.to_string().as_bytes()).unwrap();
    let resp = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", KEY)
        .header("Content-Type", STRUCTURED)
        .header("Content-Encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(stored(&mongo).await.len(), 3, "ok-1, ok-2 and gz-1");
}

#[tokio::test]
async fn a_scoped_key_sees_cloudevents_sources_as_its_consumers() {
    let mongo = test_mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(
        &file,
        key_entry(
            "orders",
            "orders-key",
            &["ingest", "read"],
            &["https://shop.example/orders"],
            None,
        ),
    )
    .unwrap();
    let env = [("AUDIT_API_KEYS_FILE", file.to_str().unwrap())];
    let service = start_service(&mongo, &env).await;
    let api = Api::new(&service);
    let ours = serde_json::to_value(order_event("s-1")).unwrap();
    let mut theirs = ours.clone();
    theirs["source"] = json!("https://shop.example/payments");

    assert_eq!(post_structured(&api, "orders-key", &ours).await.0, 201);
    let (status, body) = post_structured(&api, "orders-key", &theirs).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "consumer_not_allowed");
    let (status, body) = post_batch(&api, "orders-key", &json!([theirs])).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["status"], 403, "{body}");
    assert_eq!(stored(&mongo).await.len(), 1);
}

#[tokio::test]
async fn our_own_events_come_back_as_cloudevents_page_by_page() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let (status, a) = api
        .post_event(&json!({"type": "login", "consumer": "web", "payload": {"user": "ann"}}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        api.post_event(&json!({"type": "logout", "consumer": "web"}))
            .await
            .0,
        201
    );

    let (page, next) = find_cloudevents(&api, &[("consumer", "web"), ("limit", "1")]).await;
    assert_eq!(page.len(), 1);
    let ce = &page[0];
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], a["id"]);
    assert_eq!(ce["source"], "web");
    assert_eq!(ce["type"], "login");
    assert_eq!(ce["time"], a["created_at"]);
    assert_eq!(ce["data"], json!({"user": "ann"}));
    let event: Event = serde_json::from_value(ce.clone()).expect("the SDK reads it");
    assert_eq!(event.ty(), "login");
    let next = next.expect("X-Next-Cursor on a page with more after it");
    let (rest, _) = find_cloudevents(
        &api,
        &[("consumer", "web"), ("limit", "1"), ("cursor", &next)],
    )
    .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["type"], "logout");
    assert!(
        rest[0].get("data").is_none(),
        "no payload, no data: {}",
        rest[0]
    );

    // Without the CloudEvents Accept, the usual answer.
    let (status, body) = api
        .find(&[("consumer", "web"), ("include_incomplete", "true")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn queue_mode_takes_cloudevents_with_202_and_stores_a_retry_once() {
    let (rabbit, mongo) = tokio::join!(RabbitMq::start(), test_mongo());
    let mut env = mongo.env();
    env.push(("AUDIT_INGEST_MODE".into(), "queue".into()));
    env.push(("AUDIT_AMQP_URL".into(), rabbit.url()));
    let service = start_service_env(env, &[]).await;
    let api = Api::new(&service);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while api.send(api.http.get(api.url("/readyz"))).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "queue mode never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let event = serde_json::to_value(order_event("q-1")).unwrap();
    let (status, ack) = post_structured(&api, KEY, &event).await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(post_structured(&api, KEY, &event).await.0, 202);
    let (status, body) = post_batch(&api, KEY, &json!([event])).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["status"], 202, "{body}");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, got) = api.lookup_as(KEY, ack["id"].as_str().unwrap()).await;
        if status == 200 {
            assert_eq!(got["consumer"], "https://shop.example/orders", "{got}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stored: {got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // All three deliveries drained; one event stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored(&mongo).await.len(), 1);
}
