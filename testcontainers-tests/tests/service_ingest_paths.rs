//! `POST /v1/event` has two implementations: the lean path (`http::lean_path`), which answers
//! uncompressed bodies before the route tree, and the OpenAPI operation behind the
//! `Compression` middleware, which answers compressed ones. These tests hold them to one
//! contract — every answer, refusals included, the same status, code, headers and body
//! whichever path a request takes and however its `Content-Encoding` is spelt — and hold the
//! in-flight body budget to what bodies really take: a compressed body counts at the bytes it
//! decodes to, not at the largest body accepted, and a body waiting for its write counts no
//! more once it is parsed.

#[path = "support/service.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use support::{key_entry, start_service_env, stored, with_mongodb_uri, Api, KEY};
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};
use tokio::io::AsyncWriteExt;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// How a request's body is sent; each takes `POST /v1/event` down a path.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// No `Content-Encoding`: the lean path.
    Plain,
    /// `gzip`: the OpenAPI operation, after the `Compression` middleware.
    Gzip,
    /// `GZIP`: content codings are case-insensitive (RFC 9110 §8.4.1), so the same.
    GzipUpperCase,
}

impl Encoding {
    const ALL: [Encoding; 3] = [Encoding::Plain, Encoding::Gzip, Encoding::GzipUpperCase];

    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Plain => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::GzipUpperCase => Some("GZIP"),
        }
    }
}

/// What a client sees of an answer.
#[derive(Debug)]
struct Seen {
    status: u16,
    /// Every header but `date` and `x-request-id`, which differ on every answer.
    headers: BTreeMap<String, String>,
    body: Value,
}

async fn post(
    api: &Api,
    key: Option<&str>,
    content_type: &str,
    body: &[u8],
    encoding: Encoding,
) -> Seen {
    let mut req = api
        .http
        .post(api.url("/v1/event"))
        .header("Content-Type", content_type);
    if let Some(key) = key {
        req = req.header("X-Api-Key", key);
    }
    req = match encoding.header() {
        Some(enc) => req.header("Content-Encoding", enc).body(gzip(body)),
        None => req.body(body.to_vec()),
    };
    let resp = req.send().await.expect("POST /v1/event is answered");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("<not text>").to_owned(),
            )
        })
        .collect();
    let text = resp.text().await.expect("answer body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Seen {
        status,
        headers,
        body,
    }
}

/// A JSON value's shape: its keys and the type of every leaf.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// What may differ between the answers to the same request sent three ways.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Differs {
    Nothing,
    /// Each request stores a new event: its own `id` and `created_at`.
    NewEvent,
    /// The wait for the key's rate, counted down between the requests: `Retry-After` (and the
    /// message that names it) may be a second shorter on a later one.
    RateWait,
    /// The store's error, which the message quotes, is the last one the writer saw.
    StoreError,
}

/// One way to refuse (or take) `POST /v1/event`.
struct Case {
    name: &'static str,
    key: Option<&'static str>,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    /// The error code; `None` for a success.
    code: Option<&'static str>,
    differs: Differs,
}

impl Case {
    fn new(name: &'static str, body: &Value, status: u16, code: Option<&'static str>) -> Case {
        Case {
            name,
            key: Some(KEY),
            content_type: "application/json",
            body: serde_json::to_vec(body).expect("json"),
            status,
            code,
            differs: if status == 201 {
                Differs::NewEvent
            } else {
                Differs::Nothing
            },
        }
    }

    fn key(mut self, key: Option<&'static str>) -> Case {
        self.key = key;
        self
    }

    fn raw(mut self, body: &[u8]) -> Case {
        self.body = body.to_vec();
        self
    }

    fn content_type(mut self, ct: &'static str) -> Case {
        self.content_type = ct;
        self
    }

    fn differs(mut self, d: Differs) -> Case {
        self.differs = d;
        self
    }

    /// Sends the case plain, gzip and GZIP; every answer must be the expected one, and the
    /// compressed ones the same as the plain one.
    async fn check(&self, api: &Api) {
        let mut answers = Vec::new();
        for encoding in Encoding::ALL {
            let seen = post(api, self.key, self.content_type, &self.body, encoding).await;
            answers.push((encoding, seen));
        }
        let (_, plain) = &answers[0];
        let name = self.name;
        assert_eq!(plain.status, self.status, "{name}, plain: {plain:?}");
        match self.code {
            Some(code) => {
                assert_eq!(
                    plain.body["error"]["code"], code,
                    "{name}, plain: {plain:?}"
                );
                assert_eq!(
                    shape(&plain.body),
                    json!({"error": {"code": "string", "message": "string"}}),
                    "{name}, plain: {plain:?}"
                );
            }
            None => assert_eq!(
                shape(&plain.body),
                json!({"id": "string", "created_at": "string"}),
                "{name}, plain: {plain:?}"
            ),
        }
        let retry_after = matches!(self.status, 429 | 503);
        assert_eq!(
            plain.headers.contains_key("retry-after"),
            retry_after,
            "{name}, plain: Retry-After on 429 and 503 only: {plain:?}"
        );
        for (encoding, other) in &answers[1..] {
            let why = format!("{name}: {encoding:?} answers {other:?}, plain {plain:?}");
            assert_eq!(other.status, plain.status, "{why}");
            let (mut ours, mut theirs) = (plain.headers.clone(), other.headers.clone());
            let (mut body, mut other_body) = (plain.body.clone(), other.body.clone());
            match self.differs {
                Differs::Nothing => {}
                Differs::NewEvent => {
                    body = shape(&body);
                    other_body = shape(&other_body);
                }
                Differs::RateWait => {
                    let secs = |h: &mut BTreeMap<String, String>| -> i64 {
                        h.remove("retry-after")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(-1)
                    };
                    let (a, b) = (secs(&mut ours), secs(&mut theirs));
                    assert!(a >= 1 && (a - b == 0 || a - b == 1), "{why}");
                    body["error"]["message"] = Value::Null;
                    other_body["error"]["message"] = Value::Null;
                }
                Differs::StoreError => {
                    body["error"]["message"] = Value::Null;
                    other_body["error"]["message"] = Value::Null;
                }
            }
            assert_eq!(theirs, ours, "headers differ; {why}");
            assert_eq!(other_body, body, "bodies differ; {why}");
        }
    }
}

/// One `[[key]]` entry of a key file granting `key`.
/// The service, connected to the test's store through a fault-injecting proxy.
async fn proxied(
    mongo: &TestMongo,
    env: &[(&str, &str)],
) -> (WireProxy, testcontainers_tests::binary::RunningBinary, Api) {
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let service = start_service_env(with_mongodb_uri(mongo.env(), &uri), env).await;
    let api = Api::new(&service);
    (proxy, service, api)
}

const READER: &str = "paths-reader-key-5c1e";
const SCOPED: &str = "paths-scoped-key-9a07";
const LIMITED: &str = "paths-limited-key-e3b4";

/// Every answer of `POST /v1/event` — 201, 200 and each refusal (400, 401, 403, 409, 413,
/// 415, 422, 429, 503) — sent uncompressed (the lean path), gzip and GZIP (the OpenAPI
/// operation): the same status, error code, headers and body.
#[tokio::test]
async fn post_event_answers_alike_on_the_lean_path_and_the_openapi_operation() {
    let mongo = test_mongo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        [
            key_entry("reader", READER, &["read"], &["*"], None),
            key_entry("scoped", SCOPED, &["ingest"], &["mine"], None),
            // One event every 20 s.
            key_entry(
                "limited",
                LIMITED,
                &["ingest"],
                &["*"],
                Some("{ events_per_second = 0.05, burst = 1 }"),
            ),
        ]
        .concat(),
    )
    .expect("write the key file");
    let keys = keys.display().to_string();
    // Bodies up to 4 KiB, and 4 KiB of them in flight at once: one body of the largest size
    // fills the budget.
    let (proxy, service, api) = proxied(
        &mongo,
        &[
            ("AUDIT_API_KEYS_FILE", &keys),
            ("AUDIT_MAX_BODY_BYTES", "4096"),
            ("AUDIT_MAX_INFLIGHT_BODY_BYTES", "4096"),
            ("AUDIT_WRITE_DEADLINE_SECS", "1"),
        ],
    )
    .await;
    let event = json!({"type": "paths", "consumer": "c", "payload": {"n": 1}});
    let big = json!({"type": "paths", "consumer": "c", "payload": {"s": "x".repeat(5000)}});

    let stateless = [
        Case::new("stored", &event, 201, None),
        Case::new("not JSON", &json!(null), 400, Some("malformed_json")).raw(b"{\"type\": \"t\","),
        Case::new("no key", &event, 401, Some("unauthorized")).key(None),
        Case::new("unknown key", &event, 401, Some("unauthorized")).key(Some("not-a-key")),
        Case::new("key without ingest", &event, 403, Some("missing_right")).key(Some(READER)),
        Case::new(
            "consumer outside the key's",
            &json!({"type": "paths", "consumer": "theirs"}),
            403,
            Some("consumer_not_allowed"),
        )
        .key(Some(SCOPED)),
        Case::new(
            "over AUDIT_MAX_BODY_BYTES",
            &big,
            413,
            Some("body_too_large"),
        ),
        Case::new(
            "not application/json",
            &event,
            415,
            Some("unsupported_media_type"),
        )
        .content_type("text/plain"),
        Case::new(
            "invalid event",
            &json!({"type": "paths"}),
            422,
            Some("invalid_event"),
        ),
    ];
    for case in &stateless {
        case.check(&api).await;
    }

    // A producer id: the same event again is a retry (200), other content a conflict (409).
    let id = "65f0c0ffee0000000000abcd";
    let first = json!({"id": id, "type": "paths", "consumer": "c", "payload": {"n": 1}});
    let (status, answer) = api.post_event(&first).await;
    assert_eq!(status, 201, "{answer}");
    Case::new("the same event again", &first, 200, None)
        .differs(Differs::Nothing)
        .check(&api)
        .await;
    let other = json!({"id": id, "type": "paths", "consumer": "c", "payload": {"n": 2}});
    Case::new("an id reused", &other, 409, Some("id_conflict"))
        .check(&api)
        .await;

    // The key's one event spent, the next ones wait for its rate.
    let (status, answer) = api.post_json_as(LIMITED, "/v1/event", &event).await;
    assert_eq!(status, 201, "{answer}");
    Case::new("over the key's rate", &event, 429, Some("rate_limited"))
        .key(Some(LIMITED))
        .differs(Differs::RateWait)
        .check(&api)
        .await;

    // The store refuses every write (a shard without a primary) past the write deadline.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()).on("events"));
    Case::new("store away", &event, 503, Some("store_unavailable"))
        .differs(Differs::StoreError)
        .check(&api)
        .await;
    proxy.clear();

    // A body of the largest size, sent slowly, holds the whole in-flight budget.
    let mut hog = tokio::net::TcpStream::connect(("127.0.0.1", service.port))
        .await
        .expect("connect");
    hog.write_all(
        format!(
            "POST /v1/event HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .expect("send the slow body's start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    Case::new(
        "bodies in flight fill the budget",
        &event,
        503,
        Some("overloaded"),
    )
    .check(&api)
    .await;
    drop(hog);

    // Once the service sees the slow body end, its share returns to the budget.
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        answer = api.post_event(&event).await;
        if answer.0 == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 201, "the budget is whole again: {}", answer.1);
    let metrics = api.metrics_text().await;
    assert!(
        !metrics.contains("status=\"500\""),
        "a 500 was answered:\n{metrics}"
    );
}

/// A compressed single event counts against `AUDIT_MAX_INFLIGHT_BODY_BYTES` at what it decodes
/// to, not at `AUDIT_MAX_BODY_BYTES`: 64 producers sending one gzip event each while every
/// write takes 3 s all get 201 (they got 8 × 201 and 56 × 503 when each such body counted as
/// 16 MiB of the 128 MiB budget until it was written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_gzip_events_while_the_store_is_slow_are_all_stored() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied(&mongo, &[]).await;
    let (status, answer) = api
        .post_event(&json!({"type": "warm-up", "consumer": "c"}))
        .await;
    assert_eq!(status, 201, "{answer}");

    proxy.add(Rule::new("insert", Fault::Delay(Duration::from_secs(3))).on("events"));
    let producers: Vec<_> = (0..64)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let event = json!({"type": "slow-store", "consumer": "c", "payload": {"i": i}});
                let seen = post(
                    &api,
                    Some(KEY),
                    "application/json",
                    &serde_json::to_vec(&event).expect("json"),
                    Encoding::Gzip,
                )
                .await;
                (seen.status, seen.body)
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut refused = Vec::new();
    for p in producers {
        let (status, body) = p.await.expect("producer");
        *statuses.entry(status).or_default() += 1;
        if status != 201 {
            refused.push(body);
        }
    }
    proxy.clear();
    assert_eq!(
        statuses,
        BTreeMap::from([(201, 64)]),
        "every event is stored; refused: {:?}",
        refused.first()
    );
    assert_eq!(stored(&mongo).await.len(), 65);
}

/// A body counts against `AUDIT_MAX_INFLIGHT_BODY_BYTES` until it is parsed, not until its
/// event is written: with room for one 40 KiB body in flight, a second one is taken while the
/// first waits 3 s for the store — plain, and gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_waiting_for_its_write_leaves_the_in_flight_budget() {
    let mongo = test_mongo().await;
    let (proxy, _service, api) = proxied(
        &mongo,
        &[
            ("AUDIT_MAX_BODY_BYTES", "65536"),
            ("AUDIT_MAX_INFLIGHT_BODY_BYTES", "65536"),
        ],
    )
    .await;
    let event = |n: u32| {
        let e = json!({"type": "waiting", "consumer": "c", "payload": {"n": n, "s": "x".repeat(40 * 1024)}});
        serde_json::to_vec(&e).expect("json")
    };
    let (status, answer) = api
        .post_event(&json!({"type": "warm-up", "consumer": "c"}))
        .await;
    assert_eq!(status, 201, "{answer}");

    proxy.add(Rule::new("insert", Fault::Delay(Duration::from_secs(3))).on("events"));
    let mut sent = Vec::new();
    for (n, encoding) in [Encoding::Plain, Encoding::Plain, Encoding::Gzip]
        .into_iter()
        .enumerate()
    {
        let api = api.clone();
        let body = event(n as u32);
        sent.push(tokio::spawn(async move {
            let seen = post(&api, Some(KEY), "application/json", &body, encoding).await;
            (encoding, seen.status, seen.body)
        }));
        // The one before is parsed and waiting for the store by now.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for s in sent {
        let (encoding, status, body) = s.await.expect("producer");
        assert_eq!(status, 201, "{encoding:?}: {body}");
    }
    proxy.clear();
    assert_eq!(stored(&mongo).await.len(), 4);
}
