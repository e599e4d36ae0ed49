//! Helpers for the service's end-to-end tests: starting `auditlog-service` on the harness's
//! MongoDB, talking to it over HTTP, and a FerretDB that can be stopped and started again on
//! the same port and data (for outage tests).
#![allow(dead_code)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::Value;
use testcontainers_tests::binary::{RunningBinary, Spawn};
use testcontainers_tests::mongo::TestMongo;

pub const KEY: &str = "test-key";

pub use testcontainers_tests::metric;

/// Lower-case hexadecimal, as key files write SHA-256 digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `[[key]]` entry of an API key file: `key`'s SHA-256, its rights over `consumers`,
/// and its `rate` (TOML, e.g. `{ events_per_second = 0.05, burst = 1 }`) when given.
pub fn key_entry(
    name: &str,
    key: &str,
    rights: &[&str],
    consumers: &[&str],
    rate: Option<&str>,
) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sha256 = hex(&auditlog_service::keys::digest::digest(key.as_bytes()));
    let mut text = format!(
        "\n[[key]]\nname = {name:?}\nsha256 = \"{sha256}\"\nrights = [{}]\nconsumers = [{}]\n",
        list(rights),
        list(consumers)
    );
    if let Some(rate) = rate {
        text.push_str(&format!("rate = {rate}\n"));
    }
    text
}

/// [`metric`], 0 when the series is not there (a counter no event has touched yet).
pub fn metric_or_zero(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// Starts the service on `mongo` with extra environment variables.
pub async fn start_service(mongo: &TestMongo, env: &[(&str, &str)]) -> RunningBinary {
    start_service_env(mongo.env(), env).await
}

pub async fn start_service_env(base: Vec<(String, String)>, env: &[(&str, &str)]) -> RunningBinary {
    let mut spawn = Spawn::new("auditlog-service")
        .envs(base)
        .env("AUDIT_API_KEY", KEY)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        spawn = spawn.env(*k, *v);
    }
    spawn.arg("run").start().await
}

/// `base` (a binary's environment) changed so that the service's `complete_until` trails now
/// by 1.5 s instead of ~22 s: a 1 s write deadline, 0.5 s server selection and no clock-skew
/// allowance. For tests that read, in ascending order, what they have just written.
pub fn quick_visibility(base: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .into_iter()
        .map(|(k, v)| {
            if k == "MONGODB_URI" {
                let sep = if v.contains('?') { '&' } else { '?' };
                (k, format!("{v}{sep}serverSelectionTimeoutMS=500"))
            } else {
                (k, v)
            }
        })
        .collect();
    env.push(("AUDIT_WRITE_DEADLINE_SECS".into(), "1".into()));
    env.push(("AUDIT_CLOCK_SKEW_SECS".into(), "0".into()));
    env
}

/// A small HTTP client bound to one service.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// Status and JSON body (Null when the body is not JSON).
pub type Answer = (u16, Value);

impl Api {
    pub fn new(service: &RunningBinary) -> Self {
        Self {
            base: service.base_url.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post_event(&self, event: &Value) -> Answer {
        self.post_json_as(KEY, "/v1/event", event).await
    }

    /// `POST path` of a JSON body with API key `key`.
    pub async fn post_json_as(&self, key: &str, path: &str, body: &Value) -> Answer {
        self.send(
            self.http
                .post(self.url(path))
                .header("X-Api-Key", key)
                .json(body),
        )
        .await
    }

    /// `GET /v1/event/{id}` with API key `key`.
    pub async fn lookup_as(&self, key: &str, id: &str) -> Answer {
        self.send(
            self.http
                .get(self.url(&format!("/v1/event/{id}")))
                .header("X-Api-Key", key),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.send(
            self.http
                .post(self.url(path))
                .header("X-Api-Key", KEY)
                .header("Content-Type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn find(&self, query: &[(&str, &str)]) -> Answer {
        self.find_as(KEY, query).await
    }

    /// `GET /v1/find` with API key `key`.
    pub async fn find_as(&self, key: &str, query: &[(&str, &str)]) -> Answer {
        self.send(
            self.http
                .get(self.url("/v1/find"))
                .header("X-Api-Key", key)
                .query(query),
        )
        .await
    }

    /// Follows `next_cursor` to the end — its absence, or an empty page (an ascending reader
    /// that caught up with `complete_until`); returns every event and the number of pages.
    pub async fn find_all(&self, query: &[(&str, &str)]) -> (Vec<Value>, usize) {
        let mut events = vec![];
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let (status, body) = self.find(&q).await;
            assert_eq!(status, 200, "find failed: {body}");
            pages += 1;
            let page = body["events"].as_array().expect("events");
            events.extend(page.iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) if !page.is_empty() => cursor = Some(c.to_owned()),
                _ => return (events, pages),
            }
        }
    }
}

/// Every document of the test's collection.
pub async fn stored(mongo: &TestMongo) -> Vec<Document> {
    all_docs(&mongo.store().await.events()).await
}

/// Every document of `collection`.
pub async fn all_docs(collection: &mongodb::Collection<Document>) -> Vec<Document> {
    use futures::TryStreamExt;
    collection
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

/// `base` (a binary's environment) with its `MONGODB_URI` replaced by `uri` — to put a wire
/// proxy between the binary and the test's store.
pub fn with_mongodb_uri(base: Vec<(String, String)>, uri: &str) -> Vec<(String, String)> {
    base.into_iter()
        .map(|(k, v)| {
            if k == "MONGODB_URI" {
                (k, uri.to_owned())
            } else {
                (k, v)
            }
        })
        .collect()
}

/// A FerretDB on a fixed port and data directory that can be stopped and started again.
pub struct RestartableFerret {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RestartableFerret {
    pub async fn start() -> Self {
        let mut f = RestartableFerret {
            port: testcontainers_tests::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        f.resume().await;
        f
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    pub fn env(&self, db: &str) -> Vec<(String, String)> {
        vec![
            ("MONGODB_URI".into(), self.uri()),
            ("AUDIT_DB_NAME".into(), db.into()),
            ("AUDIT_COLLECTION".into(), "events".into()),
        ]
    }

    /// Starts the process (again) on the same port and data.
    pub async fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ferretdb.log"))
            .expect("log");
        // The one FerretDB command line (`infra/dev/ferretdb.sh serve`), which execs the
        // binary: killing this child kills FerretDB.
        let child = testcontainers_tests::ferretdb::command(self.dir.path(), self.port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start FerretDB");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("FerretDB did not come back on port {}", self.port);
    }

    /// Kills the process (like a crashed or unreachable primary).
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn client(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(self.uri())
            .await
            .expect("client")
    }
}

impl Drop for RestartableFerret {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Ids of stored documents, checking none repeats.
pub fn unique_ids(docs: &[Document]) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    for d in docs {
        let id = d.get_object_id("_id").expect("ObjectId _id").to_hex();
        assert!(ids.insert(id.clone()), "id {id} stored twice");
    }
    ids
}

/// The service's log without the terminal colours its text format carries.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A channel on the RabbitMQ at `url`, with the connection it lives on.
pub async fn amqp_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.expect("open a channel");
    (conn, channel)
}

/// Publishes `body` straight into `queue` (the default exchange), as another producer than
/// the service would, and waits until RabbitMQ has it.
pub async fn publish_raw(
    channel: &lapin::Channel,
    queue: &str,
    body: &[u8],
    content_type: Option<&str>,
) {
    let mut properties = lapin::BasicProperties::default();
    if let Some(content_type) = content_type {
        properties = properties.with_content_type(content_type.into());
    }
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("RabbitMQ's confirm");
}

/// Publishes `events` into `queue` as one group, the way the service publishes the events that
/// arrive together.
pub async fn publish_group(channel: &lapin::Channel, queue: &str, events: Vec<Document>) {
    let group = doc! { "events": events };
    let body = mongodb::bson::to_vec(&group).expect("a BSON group");
    publish_raw(
        channel,
        queue,
        &body,
        Some("application/vnd.auditlog.events+bson"),
    )
    .await;
}
