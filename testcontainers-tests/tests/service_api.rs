//! `auditlog-service` over real HTTP on the harness's MongoDB: the seed's examples, every
//! endpoint, every class of bad input, authentication and the operations endpoints.

#[path = "support/service.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use support::{plain, quick_visibility, start_service, start_service_env, stored, Api, KEY};
use testcontainers_tests::mongo::test_mongo;

fn is_api_timestamp(s: &str) -> bool {
    // 2022-05-25T16:27:40.004Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn the_seed_examples_work_end_to_end() {
    let mongo = test_mongo().await;
    // The seed's find is ascending up to 2999: it shows events once `complete_until` passed
    // them, which these settings bring to 1.5 s.
    let service = start_service_env(quick_visibility(mongo.env()), &[]).await;
    let api = Api::new(&service);

    let (status, first) = api
        .post_event(&json!({"type": "t2", "consumer": "c4"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = api
        .post_event(&json!({"type": "t2", "consumer": "c4", "payload": {"t2_data": 12341243}}))
        .await;
    assert_eq!(status, 201, "{second}");
    api.post_event(&json!({"type": "t1", "consumer": "c1", "payload": {}}))
        .await;
    for ack in [&first, &second] {
        assert_eq!(ack["id"].as_str().map(str::len), Some(24), "{ack}");
        assert!(
            is_api_timestamp(ack["created_at"].as_str().unwrap()),
            "{ack}"
        );
    }

    // The seed's request: GET with a JSON body.
    let seed_body = json!({
        "type": "t2",
        "consumer": "c4",
        "created_from": "2000-05-22T00:00:00Z",
        "created_to": "2999-05-23T00:00:00Z"
    });
    let seed_find = || {
        api.send(
            api.http
                .get(api.url("/v1/find"))
                .header("X-Api-Key", KEY)
                .json(&seed_body),
        )
    };
    let newest = second["created_at"].as_str().unwrap().to_owned();
    let found = loop {
        let (status, found) = seed_find().await;
        assert_eq!(status, 200, "{found}");
        if found["complete_until"].as_str().unwrap() > newest.as_str() {
            break found;
        }
        let complete_until = found["complete_until"].as_str().unwrap();
        for e in found["events"].as_array().unwrap() {
            assert!(
                e["created_at"].as_str().unwrap() < complete_until,
                "an event newer than complete_until was returned: {found}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected = json!([
        {"id": first["id"], "type": "t2", "consumer": "c4", "created_at": first["created_at"]},
        {"id": second["id"], "type": "t2", "consumer": "c4", "created_at": second["created_at"],
         "payload": {"t2_data": 12341243}},
    ]);
    assert_eq!(
        found["events"], expected,
        "payload must be omitted when absent, order ascending"
    );

    // The same find as query parameters and as POST.
    let (_, by_query) = api
        .find(&[
            ("type", "t2"),
            ("consumer", "c4"),
            ("created_from", "2000-05-22T00:00:00Z"),
        ])
        .await;
    assert_eq!(by_query["events"], expected);
    let (status, by_post) = api
        .send(
            api.http
                .post(api.url("/v1/find"))
                .header("X-Api-Key", KEY)
                .json(&seed_body),
        )
        .await;
    assert_eq!((status, &by_post["events"]), (200, &expected));
}

#[tokio::test]
async fn producer_ids_make_retries_safe() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let event = json!({"type": "login", "consumer": "c1", "id": "628e58fc08808bcd3b2af122",
                       "payload": {"user": "ann", "n": 1}});

    let (status, created) = api.post_event(&event).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "628e58fc08808bcd3b2af122");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, again) = api.post_event(&event).await;
    assert_eq!(status, 200, "the same event again is a retry: {again}");
    assert_eq!(
        again, created,
        "a retry answers the stored id and created_at"
    );

    let mut other = event.clone();
    other["payload"]["n"] = json!(2);
    let (status, conflict) = api.post_event(&other).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "id_conflict");

    let docs = stored(&mongo).await;
    assert_eq!(docs.len(), 1, "one stored copy: {docs:?}");
    assert_eq!(
        docs[0].get_document("payload").unwrap().get_i32("n").ok(),
        Some(1)
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_never_a_500() {
    let mongo = test_mongo().await;
    let service = start_service(
        &mongo,
        &[
            ("AUDIT_MAX_EVENT_BYTES", "2000"),
            ("AUDIT_MAX_PAYLOAD_DEPTH", "3"),
        ],
    )
    .await;
    let api = Api::new(&service);
    let json_ct = "application/json";
    let long = "x".repeat(257);
    let big = "x".repeat(3000);
    // (body, content type, status, code, words the message must contain)
    let cases: Vec<(String, &str, u16, &str, &str)> = vec![
        (
            "{\"type\": \"t\",".into(),
            json_ct,
            400,
            "malformed_json",
            "not valid JSON",
        ),
        ("".into(), json_ct, 400, "malformed_json", "not valid JSON"),
        (
            r#"{"consumer": "c"}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "missing field `type`",
        ),
        (
            r#"{"type": "", "consumer": "c"}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "`type` must not be empty",
        ),
        (
            format!(r#"{{"type": "t", "consumer": "{long}"}}"#),
            json_ct,
            422,
            "invalid_event",
            "at most 256",
        ),
        (
            r#"{"type": "t", "consumer": "c", "payload": "text"}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "`payload` must be a JSON object",
        ),
        (
            r#"{"type": "t", "consumer": "c", "payload": {"a": {"b": {"c": {}}}}}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "deeper than 3 levels at payload.a.b.c",
        ),
        (
            format!(r#"{{"type": "t", "consumer": "c", "payload": {{"s": "{big}"}}}}"#),
            json_ct,
            422,
            "invalid_event",
            "AUDIT_MAX_EVENT_BYTES",
        ),
        (
            r#"{"type": "t", "consumer": "c", "payload": {"a": {"$where": 1}}}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "\"$where\" under payload.a",
        ),
        (
            r#"{"type": "t", "consumer": "c", "payload": {"a.b": 1}}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "\"a.b\" under payload",
        ),
        (
            r#"{"type": "t", "consumer": "c", "payload": {"a\u0000": 1}}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "NUL",
        ),
        (
            r#"{"type": "t", "consumr": "c"}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "unknown field `consumr`",
        ),
        (
            r#"{"type": "t", "consumer": "c", "id": "123"}"#.into(),
            json_ct,
            422,
            "invalid_event",
            "24 hexadecimal",
        ),
        (
            r#"{"type": "t", "consumer": "c"}"#.into(),
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (body, ct, status, code, words) in cases {
        let (got, answer) = api
            .post_raw("/v1/event", ct, body.clone().into_bytes())
            .await;
        assert_eq!(got, status, "{body:.80} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body:.80} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{body:.80} → {message:?} lacks {words:?}"
        );
    }

    let find_cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("created_from", "yesterday")], "`created_from`"),
        (vec![("created_to", "2022-13-45T00:00:00Z")], "`created_to`"),
        (vec![("cursor", "not-a-cursor")], "`cursor`"),
        (vec![("order", "sideways")], "`order`"),
        (vec![("limit", "0")], "`limit`"),
        (vec![("limit", "many")], "limit"),
    ];
    for (query, words) in find_cases {
        let (status, answer) = api.find(&query).await;
        assert_eq!(status, 400, "{query:?} → {answer}");
        assert_eq!(answer["error"]["code"], "bad_query");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(words),
            "{answer}"
        );
    }
    let (status, answer) = api
        .post_raw("/v1/find", json_ct, br#"{"consumr": "c"}"#.to_vec())
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("consumr"));

    let (status, answer) = api
        .send(
            api.http
                .delete(api.url("/v1/event"))
                .header("X-Api-Key", KEY),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, answer) = api.send(api.http.get(api.url("/v2/nothing"))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    assert!(
        stored(&mongo).await.is_empty(),
        "a refused event was stored"
    );
    let metrics = api.metrics_text().await;
    assert!(
        !metrics.contains("status=\"500\""),
        "a 500 was answered:\n{metrics}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn body_limits_apply_while_reading_and_after_decompression() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("AUDIT_MAX_BODY_BYTES", "4000")]).await;
    let api = Api::new(&service);
    let huge = json!({"type": "t", "consumer": "c", "payload": {"s": "x".repeat(20_000)}});
    let huge = serde_json::to_vec(&huge).unwrap();

    let (status, answer) = api
        .post_raw("/v1/event", "application/json", huge.clone())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{answer}"
    );

    let compressed = gzip(&huge);
    assert!(
        compressed.len() < 4000,
        "the test needs a small compressed body"
    );
    let (status, answer) = api
        .send(
            api.http
                .post(api.url("/v1/event"))
                .header("X-Api-Key", KEY)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .body(compressed),
        )
        .await;
    assert_eq!(status, 413, "the cap applies after decompression: {answer}");

    let small = gzip(br#"{"type": "zipped", "consumer": "c"}"#);
    let (status, answer) = api
        .send(
            api.http
                .post(api.url("/v1/event"))
                .header("X-Api-Key", KEY)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .body(small),
        )
        .await;
    assert_eq!(status, 201, "gzip bodies are accepted: {answer}");

    let (status, answer) = api
        .send(
            api.http
                .post(api.url("/v1/event"))
                .header("X-Api-Key", KEY)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "lzma")
                .body("{}"),
        )
        .await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(stored(&mongo).await.len(), 1);
}

#[tokio::test]
async fn batches_accept_and_refuse_each_event_on_its_own() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("AUDIT_MAX_BATCH_EVENTS", "5")]).await;
    let api = Api::new(&service);

    let batch = json!([
        {"type": "t", "consumer": "c", "payload": {"i": 0}},
        {"type": "t"},
        {"type": "t", "consumer": "c", "payload": {"$bad": 1}},
        {"type": "t", "consumer": "c", "payload": {"i": 3}},
    ]);
    let (status, answer) = api
        .post_raw(
            "/v1/events",
            "application/json",
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 422, 422, 201], "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(answer["results"][1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("consumer"));

    let ndjson = "{\"type\": \"n\", \"consumer\": \"c\"}\n\nnot json\n{\"type\": \"n\", \"consumer\": \"d\"}\n";
    let (status, answer) = api
        .post_raw(
            "/v1/events",
            "application/x-ndjson",
            ndjson.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "blank lines are skipped: {answer}");
    assert_eq!(results[1]["status"], 400);
    assert!(results[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 3"));

    let six: Vec<Value> = (0..6)
        .map(|i| json!({"type": "t", "consumer": "c", "payload": {"i": i}}))
        .collect();
    let (status, answer) = api
        .post_raw(
            "/v1/events",
            "application/json",
            serde_json::to_vec(&six).unwrap(),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("too_many_events"))
    );

    let (status, _) = api
        .post_raw("/v1/events", "application/json", b"{\"type\": 1}".to_vec())
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .post_raw("/v1/events", "text/csv", b"a,b".to_vec())
        .await;
    assert_eq!(status, 415);

    let docs = stored(&mongo).await;
    assert_eq!(docs.len(), 4, "exactly the accepted events are stored");
}

#[tokio::test]
async fn every_v1_call_needs_one_of_the_configured_keys() {
    let mongo = test_mongo().await;
    let service = testcontainers_tests::binary::Spawn::new("auditlog-service")
        .envs(mongo.env())
        .env("AUDIT_API_KEY", "old-key, new-key")
        .start()
        .await;
    let api = Api::new(&service);
    let event = json!({"type": "t", "consumer": "c"});
    for key in ["old-key", "new-key"] {
        let r = api
            .http
            .post(api.url("/v1/event"))
            .header("X-Api-Key", key)
            .json(&event);
        assert_eq!(api.send(r).await.0, 201, "key {key} refused");
    }
    for key in [Some("wrong"), Some(""), Some("old-key,new-key"), None] {
        let mut r = api.http.post(api.url("/v1/event")).json(&event);
        if let Some(k) = key {
            r = r.header("X-Api-Key", k);
        }
        let (status, answer) = api.send(r).await;
        assert_eq!(status, 401, "key {key:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
        let (status, _) = api.send(api.http.get(api.url("/v1/find"))).await;
        assert_eq!(status, 401);
    }
    assert_eq!(stored(&mongo).await.len(), 2);
}

#[tokio::test]
async fn the_service_refuses_to_start_without_an_api_key() {
    let bin = testcontainers_tests::binary::build("auditlog-service");
    for value in [None, Some(""), Some(" , ")] {
        let mut cmd = std::process::Command::new(&bin);
        cmd.env_remove("AUDIT_API_KEY")
            .env("AUDIT_LISTEN_ADDR", "127.0.0.1:0")
            .env("MONGODB_URI", "mongodb://127.0.0.1:1/");
        if let Some(v) = value {
            cmd.env("AUDIT_API_KEY", v);
        }
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || cmd.output()),
        )
        .await
        .expect("the service must exit at once")
        .unwrap()
        .unwrap();
        assert!(
            !out.status.success(),
            "started with AUDIT_API_KEY={value:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("AUDIT_API_KEY"),
            "message must name the variable: {stderr}"
        );
    }
}

#[tokio::test]
async fn operations_endpoints_answer_and_storage_is_prepared() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    api.post_event(&json!({"type": "t", "consumer": "c"})).await;

    let health = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, ready) = api.send(api.http.get(api.url("/readyz"))).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    let metrics = api.metrics_text().await;
    for name in [
        "auditlog_http_requests_total{key=\"AUDIT_API_KEY[1]\",method=\"POST\",route=\"/v1/event\",status=\"201\"} 1",
        "auditlog_http_request_duration_seconds_bucket",
        "auditlog_events_stored_total 1",
        "auditlog_write_batch_size_count",
        "auditlog_write_duration_seconds_count 1",
        "auditlog_write_queue_depth 0",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }

    let served: Value = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(testcontainers_tests::repo_root().join("service/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, snapshot,
        "the served document differs from the reviewed snapshot"
    );

    let docs = api.http.get(api.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("swagger"));

    let keys: Vec<String> = auditlog_common::schema::existing_indexes(&mongo.store().await)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.keys().cloned().collect::<Vec<_>>().join(","))
        .collect();
    for wanted in [
        "consumer,created_at,_id",
        "type,created_at,_id",
        "created_at,_id",
        "created_at",
    ] {
        assert!(
            keys.iter().any(|k| k == wanted),
            "index {wanted} missing: {keys:?}"
        );
    }
    let answered = api
        .http
        .get(api.url("/healthz"))
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.headers()["x-request-id"], "trace-me-42");
}

/// The log line of a request carries its request id, path and key name — on the lean
/// `POST /v1/event` path too, which creates the request's span only when it logs. Refusals
/// are logged at `info`, successes only at `debug`.
#[tokio::test]
async fn request_log_lines_carry_the_request_id_and_the_key() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("RUST_LOG", "info,auditlog_service=debug")]).await;
    let api = Api::new(&service);
    let post = |id: &str, body: &Value| {
        api.http
            .post(api.url("/v1/event"))
            .header("X-Api-Key", KEY)
            .header("X-Request-Id", id)
            .json(body)
    };
    let (status, _) = api
        .send(post(
            "served-on-the-lean-path",
            &json!({"type": "t", "consumer": "c"}),
        ))
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .send(post("refused-on-the-lean-path", &json!({"type": "t"})))
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .send(
            api.http
                .get(api.url("/v1/find?created_from=yesterday"))
                .header("X-Api-Key", KEY)
                .header("X-Request-Id", "refused-by-the-route-tree"),
        )
        .await;
    assert_eq!(status, 400);

    // The harness logs as text, coloured: compare without the colour codes.
    let log = plain(&service.output());
    for (request_id, path, line_says) in [
        (
            "served-on-the-lean-path",
            "/v1/event",
            "request served status=201",
        ),
        (
            "refused-on-the-lean-path",
            "/v1/event",
            "request refused status=422",
        ),
        (
            "refused-by-the-route-tree",
            "/v1/find",
            "request refused status=400",
        ),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("request_id={request_id} ")))
            .unwrap_or_else(|| panic!("no log line names {request_id}:\n{log}"));
        for part in [
            &format!("path={path} ") as &str,
            "key=\"AUDIT_API_KEY[1]\"",
            line_says,
        ] {
            assert!(line.contains(part), "{part:?} is not in: {line}");
        }
    }
}
