//! Scoped API keys over real HTTP against the real binary and a real FerretDB: what a key's
//! rights and consumers let through (single events on the lean path and the full stack,
//! batches, finds with and without `consumer`, lookups), rates, reloading the key file without
//! a restart (a Kubernetes-style symlink swap, an in-place write with SIGHUP, a malformed
//! file), `AUDIT_API_KEY` alone, `keys new`, the separate metrics address, and that no key
//! ever shows in the logs or the metrics.

#[path = "support/service.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use auditlog_service::keys::digest::digest;
use serde_json::{json, Value};
use support::{hex, key_entry, metric, plain, start_service_env, stored, Answer, Api};
use testcontainers_tests::binary::RunningBinary;
use testcontainers_tests::mongo::{test_mongo, TestMongo};

// ------------------------------------------------------- key files, the service, its answers

/// One `[[key]]` entry granting `key`.
/// A key file laid out as Kubernetes mounts a Secret: `keys.toml` is a symlink to
/// `..data/keys.toml`, `..data` a symlink to a timestamped directory; an update writes a new
/// directory and swaps `..data` with a rename, so the file's path never changes.
struct KeyFile {
    dir: tempfile::TempDir,
    generation: u32,
}

impl KeyFile {
    fn new(text: &str) -> KeyFile {
        let mut f = KeyFile {
            dir: tempfile::tempdir().expect("tempdir"),
            generation: 0,
        };
        f.swap(text);
        std::os::unix::fs::symlink("..data/keys.toml", f.path()).expect("symlink keys.toml");
        f
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("keys.toml")
    }

    fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// The kubelet's atomic update.
    fn swap(&mut self, text: &str) {
        self.generation += 1;
        let data = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation, self.generation
        );
        let dir = self.dir.path();
        std::fs::create_dir(dir.join(&data)).expect("data dir");
        std::fs::write(dir.join(&data).join("keys.toml"), text).expect("write keys");
        std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).expect("symlink ..data_tmp");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    }

    /// An in-place write (an operator's editor, a file on a host).
    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path())
            .expect("open keys.toml");
        f.write_all(text.as_bytes()).expect("append keys.toml");
    }
}

/// The service with `env`; no `AUDIT_API_KEY` unless `env` sets one.
async fn start(mongo: &TestMongo, env: &[(&str, &str)]) -> RunningBinary {
    let mut all = vec![("AUDIT_API_KEY", ""), ("AUDIT_API_KEYS_FILE", "")];
    all.extend_from_slice(env);
    start_service_env(mongo.env(), &all).await
}

async fn post_event(api: &Api, key: &str, event: &Value) -> Answer {
    api.post_json_as(key, "/v1/event", event).await
}

/// `POST /v1/event`; `gzip`: with a gzip body, which takes the full stack instead of the lean
/// path.
async fn post_event_via(api: &Api, key: &str, event: &Value, gzip: bool) -> Answer {
    if !gzip {
        return post_event(api, key, event).await;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&serde_json::to_vec(event).unwrap()).unwrap();
    api.send(
        api.http
            .post(api.url("/v1/event"))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(enc.finish().unwrap()),
    )
    .await
}

async fn post_batch(api: &Api, key: &str, events: &Value) -> Answer {
    api.post_json_as(key, "/v1/events", events).await
}

async fn find_post(api: &Api, key: &str, body: &Value) -> Answer {
    api.post_json_as(key, "/v1/find", body).await
}

async fn lookup(api: &Api, key: &str, id: &str) -> Answer {
    api.lookup_as(key, id).await
}

/// Every event a find returns, following `next_cursor` (newest events included).
async fn find_every(api: &Api, key: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let mut events = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        q.push(("include_incomplete", "true"));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (status, body) = api.find_as(key, &q).await;
        assert_eq!(status, 200, "find {q:?}: {body}");
        let page = body["events"].as_array().expect("events");
        events.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) if !page.is_empty() => cursor = Some(c.to_owned()),
            _ => return events,
        }
    }
}

fn consumers_of(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["consumer"].as_str().expect("consumer").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The value of the metric line `series` (name and labels exactly as exported).
async fn reloads(api: &Api, result: &str) -> f64 {
    let series = format!("auditlog_api_keys_reloads_total{{result=\"{result}\"}}");
    metric(&api.metrics_text().await, &series).unwrap_or(-1.0)
}

/// Waits until `check` holds, up to `within`; false if it never did.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(consumer: &str) -> Value {
    json!({"type": "t", "consumer": consumer, "payload": {"for": consumer}})
}

fn stored_consumers(docs: &[mongodb::bson::Document]) -> Vec<String> {
    let mut c: Vec<String> = docs
        .iter()
        .map(|d| d.get_str("consumer").expect("consumer").to_owned())
        .collect();
    c.sort();
    c
}

const PRODUCER: &str = "producer-key-8f2c1d";
const READER: &str = "reader-key-51be7a";
const DOTS: &str = "dots-key-0c93aa";
const ADMIN: &str = "admin-key-77d0e4";

// -------------------------------------------------------------------------------- tests

#[tokio::test]
async fn a_producer_key_writes_only_its_consumers_alone_and_in_a_batch() {
    let mongo = test_mongo().await;
    let file = KeyFile::new(&key_entry(
        "billing-producer",
        PRODUCER,
        &["ingest"],
        &["billing-*", "invoices"],
        None,
    ));
    let service = start(&mongo, &[("AUDIT_API_KEYS_FILE", &file.path_str())]).await;
    let api = Api::new(&service);

    // Single events: the lean path (plain body) and the full stack (gzip) alike.
    for gzip in [false, true] {
        for consumer in ["billing-eu", "invoices"] {
            let (status, body) = post_event_via(&api, PRODUCER, &event(consumer), gzip).await;
            assert_eq!(status, 201, "{consumer}: {body}");
        }
        for consumer in ["shipping", "billing", "invoices-2", "Billing-eu"] {
            let (status, body) = post_event_via(&api, PRODUCER, &event(consumer), gzip).await;
            assert_eq!(status, 403, "{consumer}: {body}");
            assert_eq!(body["error"]["code"], "consumer_not_allowed", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("\"{consumer}\""))
                    && message.contains("\"billing-producer\""),
                "the message names the consumer and the key: {message}"
            );
        }
    }

    // A batch: each event outside the scope is refused on its own, the rest stored.
    let (status, body) = post_batch(
        &api,
        PRODUCER,
        &json!([
            event("billing-us"),
            event("shipping"),
            event("invoices"),
            {"type": "t"},
            event("billingx"),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 403, 201, 422, 403], "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        body["results"][1]["error"]["code"], "consumer_not_allowed",
        "{body}"
    );
    assert!(body["results"][1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"shipping\""));

    assert_eq!(
        stored_consumers(&stored(&mongo).await),
        [
            "billing-eu",
            "billing-eu",
            "billing-us",
            "invoices",
            "invoices",
            "invoices"
        ],
        "exactly the events within the key's consumers are stored"
    );
    let metrics = api.metrics_text().await;
    for series in [
        "auditlog_http_requests_total{key=\"billing-producer\",method=\"POST\",route=\"/v1/event\",status=\"201\"}",
        "auditlog_http_requests_total{key=\"billing-producer\",method=\"POST\",route=\"/v1/event\",status=\"403\"}",
        "auditlog_events_rejected_total{reason=\"forbidden\"}",
    ] {
        assert!(metric(&metrics, series).is_some_and(|v| v > 0.0), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_key_with_ingest_only_cannot_find() {
    let mongo = test_mongo().await;
    let file = KeyFile::new(&key_entry("producer", PRODUCER, &["ingest"], &["*"], None));
    let service = start(&mongo, &[("AUDIT_API_KEYS_FILE", &file.path_str())]).await;
    let api = Api::new(&service);
    let (status, posted) = post_event(&api, PRODUCER, &event("c1")).await;
    assert_eq!(status, 201, "{posted}");

    for (status, body) in [
        api.find_as(PRODUCER, &[]).await,
        api.find_as(PRODUCER, &[("consumer", "c1")]).await,
        find_post(&api, PRODUCER, &json!({"consumer": "c1"})).await,
    ] {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "missing_right", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`read`"),
            "the message names the right: {body}"
        );
    }
    // Its own event's status, without the content (that needs `read`).
    let (status, body) = lookup(&api, PRODUCER, posted["id"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "stored");
    assert_eq!(body["created_at"], posted["created_at"]);
    for hidden in ["type", "consumer", "payload"] {
        assert!(
            body.get(hidden).is_none(),
            "{hidden} shown without read: {body}"
        );
    }
}

#[tokio::test]
async fn a_reader_key_finds_only_its_consumers_by_pattern_and_by_name() {
    let mongo = test_mongo().await;
    let file = KeyFile::new(
        &[
            key_entry(
                "billing-reader",
                READER,
                &["read"],
                &["billing-*", "invoices"],
                None,
            ),
            key_entry("dots-reader", DOTS, &["read"], &["a.b*"], None),
        ]
        .concat(),
    );
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEY", ADMIN),
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
        ],
    )
    .await;
    let api = Api::new(&service);
    let all = [
        "billing-eu",
        "billing-us",
        "billingx",
        "invoices",
        "invoices-old",
        "shipping",
        "a.b",
        "a.bc",
        "axb",
    ];
    let mut ids = std::collections::HashMap::new();
    for consumer in all {
        for _ in 0..2 {
            let (status, body) = post_event(&api, ADMIN, &event(consumer)).await;
            assert_eq!(status, 201, "{body}");
            ids.insert(consumer, body["id"].as_str().unwrap().to_owned());
        }
    }

    // No consumer: the key's consumers only, by pattern and by exact name; paged one event at
    // a time, so the scope meets the keyset condition on every page.
    let found = find_every(&api, READER, &[("limit", "1")]).await;
    assert_eq!(found.len(), 6, "{found:?}");
    assert_eq!(
        consumers_of(&found),
        set(&["billing-eu", "billing-us", "invoices"])
    );
    let found = find_every(&api, READER, &[("type", "t"), ("order", "desc")]).await;
    assert_eq!(
        consumers_of(&found),
        set(&["billing-eu", "billing-us", "invoices"])
    );
    // A pattern's regex characters are literal: `a.b*` is not `a?b*`.
    let found = find_every(&api, DOTS, &[]).await;
    assert_eq!(consumers_of(&found), set(&["a.b", "a.bc"]));
    assert_eq!(found.len(), 4);
    // The full key sees everything.
    let found = find_every(&api, ADMIN, &[]).await;
    assert_eq!(consumers_of(&found), set(&all));

    // A consumer named: within the scope, exactly its events; outside, 403.
    let found = find_every(&api, READER, &[("consumer", "billing-eu")]).await;
    assert_eq!(consumers_of(&found), set(&["billing-eu"]));
    assert_eq!(found.len(), 2);
    let found = find_every(&api, READER, &[("consumer", "invoices")]).await;
    assert_eq!(consumers_of(&found), set(&["invoices"]));
    for (status, body) in [
        api.find_as(READER, &[("consumer", "shipping")]).await,
        api.find_as(READER, &[("consumer", "invoices-old")]).await,
        find_post(&api, READER, &json!({"consumer": "billingx"})).await,
        api.find_as(DOTS, &[("consumer", "axb")]).await,
    ] {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "consumer_not_allowed", "{body}");
    }
    let (status, body) = api.find_as(READER, &[("consumer", "shipping")]).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"shipping\""));
    // The JSON body form is held to the same scope.
    let (status, body) = find_post(
        &api,
        READER,
        &json!({"type": "t", "include_incomplete": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        consumers_of(body["events"].as_array().unwrap()),
        set(&["billing-eu", "billing-us", "invoices"])
    );

    // Lookup: an event outside the scope is unknown; inside, shown with its content.
    let (status, body) = lookup(&api, READER, &ids["shipping"]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (404, Some("unknown")),
        "{body}"
    );
    assert!(body.get("consumer").is_none(), "{body}");
    let (status, body) = lookup(&api, READER, &ids["billing-us"]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("stored")),
        "{body}"
    );
    assert_eq!(body["payload"], json!({"for": "billing-us"}));
    let (status, _) = lookup(&api, ADMIN, &ids["shipping"]).await;
    assert_eq!(status, 200);

    // A reader may not write.
    let (status, body) = post_event(&api, READER, &event("billing-eu")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("missing_right"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`ingest`"));
}

#[tokio::test]
async fn a_key_file_change_takes_effect_without_a_restart() {
    let mongo = test_mongo().await;
    let old = "old-key-3b7e1f";
    let new = "new-key-c4a902";
    let mut file = KeyFile::new(&key_entry("old", old, &["ingest", "read"], &["*"], None));
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
            ("AUDIT_API_KEYS_POLL_MS", "200"),
        ],
    )
    .await;
    let api = Api::new(&service);
    assert_eq!(post_event(&api, old, &event("c")).await.0, 201);
    assert_eq!(post_event(&api, new, &event("c")).await.0, 401);

    // The Secret is updated: `old` revoked, `new` added.
    file.swap(&key_entry("new", new, &["ingest", "read"], &["*"], None));
    assert!(
        eventually(Duration::from_secs(10), || async {
            post_event(&api, new, &event("c")).await.0 == 201
        })
        .await,
        "the new key never worked; output:\n{}",
        service.output()
    );
    let (status, body) = post_event(&api, old, &event("c")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(api.find_as(old, &[]).await.0, 401);
    assert_eq!(api.find_as(new, &[]).await.0, 200);
    // The same process answered throughout (the harness started it once, on this port).
    assert_eq!(reloads(&api, "ok").await, 1.0);
    assert_eq!(reloads(&api, "error").await, 0.0);
    let metrics = api.metrics_text().await;
    assert_eq!(
        metric(&metrics, "auditlog_api_keys{source=\"file\"}"),
        Some(1.0)
    );
    let output = plain(&service.output());
    assert!(
        output.contains("API keys reloaded")
            && output.contains("added=[\"new\"]")
            && output.contains("removed=[\"old\"]"),
        "the reload is logged with what changed:\n{output}"
    );
    assert_eq!(stored(&mongo).await.len(), 2);
}

#[tokio::test]
async fn sighup_reloads_the_key_file() {
    let mongo = test_mongo().await;
    let first = "first-key-a18c44";
    let second = "second-key-9e03bd";
    let file = KeyFile::new(&key_entry("first", first, &["ingest"], &["*"], None));
    // No polling: only SIGHUP reloads.
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
            ("AUDIT_API_KEYS_POLL_MS", "0"),
        ],
    )
    .await;
    let api = Api::new(&service);
    file.append(&key_entry("second", second, &["ingest"], &["*"], None));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post_event(&api, second, &event("c")).await.0,
        401,
        "the file was reloaded without SIGHUP"
    );

    service.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || async {
            post_event(&api, second, &event("c")).await.0 == 201
        })
        .await,
        "SIGHUP did not reload the key file; output:\n{}",
        service.output()
    );
    assert_eq!(post_event(&api, first, &event("c")).await.0, 201);
    assert_eq!(reloads(&api, "ok").await, 1.0);
    let output = plain(&service.output());
    assert!(output.contains("trigger=\"SIGHUP\""), "{output}");
    // SIGHUP never stops the service.
    let (status, _) = api.send(api.http.get(api.url("/healthz"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_malformed_key_file_is_refused_and_the_keys_in_force_stay() {
    let mongo = test_mongo().await;
    let key = "steady-key-6d21f0";
    let good = key_entry("steady", key, &["ingest"], &["*"], None);
    let mut file = KeyFile::new(&good);
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
            ("AUDIT_API_KEYS_POLL_MS", "200"),
        ],
    )
    .await;
    let api = Api::new(&service);
    assert_eq!(post_event(&api, key, &event("c")).await.0, 201);

    let bad_files = [
        // Not TOML.
        format!("{good}name = \"unterminated\n"),
        // TOML, but a key without consumers.
        good.replace("consumers = [\"*\"]", "consumers = []"),
        // A truncated file: no key at all.
        String::new(),
    ];
    for (i, bad) in bad_files.iter().enumerate() {
        file.swap(bad);
        let expected = (i + 1) as f64;
        assert!(
            eventually(Duration::from_secs(10), || async {
                reloads(&api, "error").await == expected
            })
            .await,
            "refusal {expected} not counted; output:\n{}",
            service.output()
        );
        assert_eq!(
            post_event(&api, key, &event("c")).await.0,
            201,
            "the keys in force must stay after a bad file"
        );
    }
    // One log line per bad version, not one per poll.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(reloads(&api, "error").await, 3.0);
    let output = plain(&service.output());
    let refusals: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("API key file refused"))
        .collect();
    assert_eq!(refusals.len(), 3, "{output}");
    assert!(
        refusals[0].contains("line 7"),
        "the position is named: {}",
        refusals[0]
    );
    assert!(
        refusals[1].contains("`consumers` is empty"),
        "{}",
        refusals[1]
    );
    assert!(
        refusals[2].contains("no [[key]] entries"),
        "{}",
        refusals[2]
    );
    assert_eq!(reloads(&api, "ok").await, 0.0);

    file.swap(&good);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&api, "ok").await == 1.0
        })
        .await
    );
    assert_eq!(post_event(&api, key, &event("c")).await.0, 201);
}

#[tokio::test]
async fn a_producer_over_its_rate_gets_429_with_retry_after() {
    let mongo = test_mongo().await;
    let limited = "limited-key-2f8b55";
    let free = "free-key-a0d3c7";
    let file = KeyFile::new(
        &[
            // One event every 5 s after a burst of 3.
            key_entry(
                "limited",
                limited,
                &["ingest"],
                &["*"],
                Some("{ events_per_second = 0.2, burst = 3 }"),
            ),
            key_entry("free", free, &["ingest"], &["*"], None),
        ]
        .concat(),
    );
    let service = start(&mongo, &[("AUDIT_API_KEYS_FILE", &file.path_str())]).await;
    let api = Api::new(&service);

    for _ in 0..3 {
        assert_eq!(post_event(&api, limited, &event("c")).await.0, 201);
    }
    let resp = api
        .http
        .post(api.url("/v1/event"))
        .header("X-Api-Key", limited)
        .json(&event("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // A batch costs its number of events: refused whole while the bucket is empty, and one
    // larger than the burst can never pass.
    let resp = api
        .http
        .post(api.url("/v1/events"))
        .header("X-Api-Key", limited)
        .json(&json!([event("c"), event("c")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = post_batch(&api, limited, &Value::Array(vec![event("c"); 4])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_many_events")),
        "{body}"
    );
    // Other keys have their own (or no) rate.
    for _ in 0..5 {
        assert_eq!(post_event(&api, free, &event("c")).await.0, 201);
    }

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        post_event(&api, limited, &event("c")).await.0,
        201,
        "Retry-After was long enough"
    );
    assert_eq!(stored(&mongo).await.len(), 9, "nothing refused was stored");
    let metrics = api.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "auditlog_events_rejected_total{reason=\"rate_limited\"}"
        ),
        Some(3.0),
        "one single event and a batch of two"
    );
}

#[tokio::test]
async fn the_api_key_variable_alone_still_works() {
    let mongo = test_mongo().await;
    let service = start(&mongo, &[("AUDIT_API_KEY", "env-one, env-two")]).await;
    let api = Api::new(&service);
    for key in ["env-one", "env-two"] {
        let (status, posted) = post_event(&api, key, &event(&format!("any-{key}"))).await;
        assert_eq!(status, 201, "{posted}");
        let found = find_every(&api, key, &[("consumer", "any-env-one")]).await;
        assert_eq!(found.len(), 1);
        let (status, body) = lookup(&api, key, posted["id"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(body["payload"], json!({"for": format!("any-{key}")}));
    }
    assert_eq!(find_every(&api, "env-two", &[]).await.len(), 2);
    for wrong in ["env-one,env-two", "env-on", ""] {
        assert_eq!(
            post_event(&api, wrong, &event("c")).await.0,
            401,
            "{wrong:?}"
        );
    }
    let metrics = api.metrics_text().await;
    let series = "auditlog_http_requests_total{key=\"AUDIT_API_KEY[2]\",method=\"POST\",route=\"/v1/event\",status=\"201\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
    assert_eq!(
        metric(&metrics, "auditlog_api_keys{source=\"env\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn the_service_refuses_to_start_without_keys_or_with_a_bad_key_file() {
    let bin = testcontainers_tests::binary::build("auditlog-service");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, key_entry("a b", "k", &["read"], &["*"], None)).unwrap();
    let missing = dir.path().join("missing.toml");
    for (env, expected) in [
        (
            vec![("AUDIT_API_KEY", ""), ("AUDIT_API_KEYS_FILE", "")],
            vec!["AUDIT_API_KEY", "AUDIT_API_KEYS_FILE"],
        ),
        (
            vec![
                ("AUDIT_API_KEY", "k"),
                ("AUDIT_API_KEYS_FILE", bad.to_str().unwrap()),
            ],
            vec![
                "AUDIT_API_KEYS_FILE",
                "bad.toml",
                "entry 1 (\"a b\"): `name` must be",
            ],
        ),
        (
            vec![("AUDIT_API_KEYS_FILE", missing.to_str().unwrap())],
            vec!["missing.toml", "cannot read it"],
        ),
    ] {
        let out = std::process::Command::new(&bin)
            .env_remove("AUDIT_API_KEY")
            .envs(env.iter().copied())
            .env("AUDIT_LISTEN_ADDR", "127.0.0.1:0")
            .env("MONGODB_URI", "mongodb://127.0.0.1:1/")
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for words in expected {
            assert!(stderr.contains(words), "{env:?}: {words:?} not in {stderr}");
        }
    }
}

#[tokio::test]
async fn a_key_from_keys_new_works_once_its_entry_is_appended() {
    let mongo = test_mongo().await;
    let file = KeyFile::new(&key_entry("someone", ADMIN, &["read"], &["*"], None));
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
            ("AUDIT_API_KEYS_POLL_MS", "200"),
        ],
    )
    .await;
    let api = Api::new(&service);
    let out = std::process::Command::new(testcontainers_tests::binary::build("auditlog-service"))
        .args([
            "keys",
            "new",
            "--name",
            "cli-made",
            "--rights",
            "ingest,read",
            "--consumers",
            "cli-*",
            "--json",
        ])
        .env_remove("AUDIT_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let key = printed["key"].as_str().expect("key");
    let entry_text = printed["entry"].as_str().expect("entry");
    assert_eq!(key.len(), 43, "32 random bytes, base64url without padding");
    assert!(
        !entry_text.contains(key),
        "the entry holds the key's hash only"
    );
    assert!(entry_text.contains(&hex(&digest(key.as_bytes()))));
    assert_eq!(post_event(&api, key, &event("cli-a")).await.0, 401);

    file.append(entry_text);
    assert!(
        eventually(Duration::from_secs(10), || async {
            post_event(&api, key, &event("cli-a")).await.0 == 201
        })
        .await,
        "the appended key never worked; output:\n{}",
        service.output()
    );
    assert_eq!(post_event(&api, key, &event("other")).await.0, 403);
    assert_eq!(
        consumers_of(&find_every(&api, key, &[]).await),
        set(&["cli-a"])
    );
}

#[tokio::test]
async fn metrics_are_served_on_their_own_address_and_not_on_the_api_port() {
    let mongo = test_mongo().await;
    let port = testcontainers_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEY", ADMIN),
            ("AUDIT_METRICS_LISTEN_ADDR", &addr),
        ],
    )
    .await;
    let api = Api::new(&service);
    assert_eq!(post_event(&api, ADMIN, &event("c")).await.0, 201);

    let (status, body) = api.send(api.http.get(api.url("/metrics"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let resp = api
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let series = "auditlog_http_requests_total{key=\"AUDIT_API_KEY[1]\",method=\"POST\",route=\"/v1/event\",status=\"201\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{text}");
    // The metrics address serves nothing else.
    for path in ["/v1/find", "/healthz", "/docs"] {
        let status = api
            .http
            .get(format!("http://{addr}{path}"))
            .header("X-Api-Key", ADMIN)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path} on the metrics address");
    }
}

#[tokio::test]
async fn no_key_ever_shows_in_the_logs_or_the_metrics() {
    let mongo = test_mongo().await;
    let env_key = "env-secret-key-4b1d9a0c77";
    let file_key = "file-secret-key-e2f05b6613";
    let good = key_entry(
        "scoped-producer",
        file_key,
        &["ingest"],
        &["mine-*"],
        Some("{ events_per_second = 0.1, burst = 3 }"),
    );
    let mut file = KeyFile::new(&good);
    let service = start(
        &mongo,
        &[
            ("AUDIT_API_KEY", env_key),
            ("AUDIT_API_KEYS_FILE", &file.path_str()),
            ("AUDIT_API_KEYS_POLL_MS", "200"),
            ("RUST_LOG", "auditlog_service=debug,info"),
        ],
    )
    .await;
    let api = Api::new(&service);
    // Every kind of answer: 201, 403, 429, 401 (with keys close to the real ones), 200. Each
    // event costs the rate, the refused one too.
    assert_eq!(post_event(&api, file_key, &event("mine-1")).await.0, 201);
    assert_eq!(post_event(&api, file_key, &event("yours")).await.0, 403);
    assert_eq!(post_event(&api, file_key, &event("mine-2")).await.0, 201);
    assert_eq!(post_event(&api, file_key, &event("mine-3")).await.0, 429);
    assert_eq!(api.find_as(file_key, &[]).await.0, 403);
    assert_eq!(post_event(&api, &env_key[1..], &event("c")).await.0, 401);
    assert_eq!(
        post_event(&api, &format!("{file_key}x"), &event("c"))
            .await
            .0,
        401
    );
    assert_eq!(post_event(&api, env_key, &event("c")).await.0, 201);
    assert_eq!(api.find_as(env_key, &[]).await.0, 200);
    // Someone pastes the key itself where its hash belongs: refused, and not echoed.
    file.swap(&good.replace(&hex(&digest(file_key.as_bytes())), file_key));
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&api, "error").await == 1.0
        })
        .await
    );

    let output = plain(&service.output());
    let metrics = api.metrics_text().await;
    for secret in [env_key, file_key] {
        assert!(!output.contains(secret), "a key is in the log:\n{output}");
        assert!(
            !metrics.contains(secret),
            "a key is in the metrics:\n{metrics}"
        );
    }
    // What identifies the keys instead: their names.
    assert!(output.contains("key=\"scoped-producer\""), "{output}");
    assert!(output.contains("key=\"AUDIT_API_KEY[1]\""), "{output}");
    assert!(output.contains("`sha256` must be"), "{output}");
    assert!(metrics.contains("key=\"scoped-producer\""), "{metrics}");
}
