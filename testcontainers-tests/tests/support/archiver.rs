//! Helpers for the archiver's end-to-end tests: event documents in the exact shape the
//! service stores, running `auditlog-archiver` commands, and reading the archive back with
//! independent readers (pyarrow/DuckDB from the tools venv, Hadoop's parquet-hadoop).
#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, Duration, TimeZone, Utc};
use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use serde_json::Value;
use testcontainers_tests::mongo::TestMongo;
use testcontainers_tests::repo_root;
use testcontainers_tests::tools::python;

/// The start of the UTC hour `days` days ago: a window that is due with default settings.
pub fn hour_days_ago(days: i64) -> DateTime<Utc> {
    let t = Utc::now() - Duration::days(days);
    Utc.timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(3600), 0)
        .unwrap()
}

/// One event as the service stores it.
pub fn event(at: DateTime<Utc>, ty: &str, consumer: &str, payload: Option<Document>) -> Document {
    let mut d = doc! {
        "_id": ObjectId::new(),
        "type": ty,
        "consumer": consumer,
        "created_at": bson::DateTime::from_millis(at.timestamp_millis()),
    };
    if let Some(p) = payload {
        d.insert("payload", p);
    }
    d
}

/// Events covering what the archive must carry unchanged: unicode, nested objects, arrays,
/// numbers of every JSON kind, missing and large payloads, and instants exactly on window
/// boundaries (and one millisecond before them), across three hourly windows from `base`.
pub fn tricky_events(base: DateTime<Utc>) -> Vec<Document> {
    let ms = Duration::milliseconds;
    let big = "x".repeat(200 * 1024);
    let mut v = vec![
        event(base, "boundary.start", "c-1", Some(doc! { "at": "start" })),
        event(base + ms(3_600_000 - 1), "boundary.last-ms", "c-1", None),
        event(base + ms(3_600_000), "boundary.next", "c-2", Some(doc! {})),
        event(
            base + ms(1234),
            "unicode",
            "ünïcödé-消费者-🚀",
            Some(
                doc! { "text": "naïve café – 日本語 – emoji 😀 – quote \" backslash \\ tab \t nl \n", "ключ": "значение" },
            ),
        ),
        event(
            base + ms(2000),
            "nested",
            "c-1",
            Some(
                doc! { "a": { "b": { "c": { "d": [1, 2, 3], "e": Bson::Null } } }, "list": [ { "k": 1 }, { "k": "two" } ] },
            ),
        ),
        event(
            base + ms(3000),
            "numbers",
            "c-3",
            Some(doc! {
                "int": 42, "neg": -7, "zero": 0,
                "int64": 9_007_199_254_740_993_i64, "maxi64": i64::MAX, "mini64": i64::MIN,
                "float": 3.25, "whole_float": 1.0, "tiny": 1e-300, "huge": 1.5e300, "negf": -0.5,
                "bool_t": true, "bool_f": false, "null": Bson::Null,
                "mixed": [1, 2.5, "s", true, Bson::Null, { "o": 1 }],
            }),
        ),
        event(base + ms(4000), "large", "c-3", Some(doc! { "blob": big })),
        event(base + ms(2 * 3_600_000), "boundary.third", "c-2", None),
        event(
            base + ms(3 * 3_600_000 - 1),
            "boundary.third-last",
            "c-2",
            Some(doc! { "n": 1 }),
        ),
    ];
    // Some volume, so files have several batches.
    for i in 0..300 {
        v.push(event(
            base + ms(10_000 + i * 11_000),
            if i % 2 == 0 { "login" } else { "logout" },
            &format!("consumer-{}", i % 7),
            Some(doc! { "i": i, "tags": ["a", "b"] }),
        ));
    }
    v
}

pub async fn insert(mongo: &TestMongo, docs: &[Document]) {
    let store = mongo.store().await;
    for chunk in docs.chunks(1000) {
        store
            .events()
            .insert_many(chunk.to_vec())
            .await
            .expect("insert events");
    }
}

/// Every event in MongoDB, by id hex.
pub async fn mongo_events(mongo: &TestMongo) -> HashMap<String, Document> {
    use futures::TryStreamExt;
    let store = mongo.store().await;
    let docs: Vec<Document> = store
        .events()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.into_iter()
        .map(|d| (d.get_object_id("_id").unwrap().to_hex(), d))
        .collect()
}

/// An `auditlog-archiver` invocation.
pub struct Archiver {
    pub env: Vec<(String, String)>,
}

impl Archiver {
    pub fn new(mongo: &TestMongo, archive_url: &str) -> Self {
        let mut env = mongo.env();
        env.push(("AUDIT_ARCHIVE_URL".into(), archive_url.into()));
        env.push(("AUDIT_LOG_FORMAT".into(), "text".into()));
        env.push(("RUST_LOG".into(), "info".into()));
        Archiver { env }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let bin = testcontainers_tests::binary::build("auditlog-archiver");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Ran {
        let out = self.command(args).output().expect("run auditlog-archiver");
        Ran(out)
    }
}

pub struct Ran(pub Output);

impl Ran {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts the exit code, showing the output otherwise.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout()))
    }
}

const READ_PY: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.dataset as ds, pyarrow.fs as pafs
root = sys.argv[1]
fs = None
if root.startswith("s3://"):
    fs = pafs.S3FileSystem(endpoint_override=os.environ["S3_ENDPOINT"], scheme="http",
                           access_key="test", secret_key="test", region="us-east-1")
    root = root[len("s3://"):]
d = ds.dataset(root, format="parquet", partitioning="hive", filesystem=fs)
t = d.to_table()
meta = {"schema": {f.name: str(f.type) for f in d.schema}, "files": sorted(d.files)}
if fs is None:
    import duckdb
    con = duckdb.connect()
    q = "SELECT count(*), typeof(any_value(created_at)), count(DISTINCT id) FROM read_parquet(?, hive_partitioning=true)"
    n, ty, distinct = con.execute(q, [root.rstrip("/") + "/**/*.parquet"]).fetchone()
    meta["duckdb"] = {"rows": n, "created_at_type": ty, "distinct_ids": distinct}
print(json.dumps(meta))
created = t.column("created_at").cast(pa.int64()).to_pylist()
for i, row in enumerate(t.to_pylist()):
    row["created_at"] = created[i]
    print(json.dumps(row, default=str))
"#;

/// What an independent reader found: metadata (first line) and rows.
pub struct ReadBack {
    pub meta: Value,
    pub rows: Vec<Value>,
}

/// Reads a Hive-partitioned archive with pyarrow (plus a DuckDB count for local paths).
pub fn read_with_pyarrow(root: &str, env: &[(&str, &str)]) -> ReadBack {
    let out = Command::new(python())
        .arg("-c")
        .arg(READ_PY)
        .arg(root)
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyarrow reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lines(&String::from_utf8_lossy(&out.stdout), true)
}

fn parse_lines(text: &str, with_meta: bool) -> ReadBack {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let meta = if with_meta {
        serde_json::from_str(lines.next().expect("metadata line")).expect("metadata JSON")
    } else {
        Value::Null
    };
    let rows = lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    ReadBack { meta, rows }
}

/// Reads with Hadoop's own parquet-hadoop (`infra/dev/hdfs.sh dump`).
pub fn read_with_hadoop(url: &str) -> ReadBack {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/dev/hdfs.sh"))
        .arg("dump")
        .arg(url)
        .output()
        .expect("run hdfs.sh dump");
    assert!(
        out.status.success(),
        "hdfs.sh dump failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rb = parse_lines(&String::from_utf8_lossy(&out.stdout), false);
    rb.meta = Value::String(String::from_utf8_lossy(&out.stderr).into_owned());
    rb
}

/// The reader's `created_at` in epoch milliseconds (pyarrow gives an int after our cast;
/// Hadoop's dump may give a number or an ISO string).
fn created_ms(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().expect("created_at integer"),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("created_at `{s}`: {e}")),
        other => panic!("created_at: unexpected {other}"),
    }
}

/// Asserts that the rows read back are exactly MongoDB's events — each once — field by field.
/// `partitions`: whether the reader reports the Hive partition columns `dt` and `hour`.
pub fn assert_same_events(rows: &[Value], expected: &HashMap<String, Document>, partitions: bool) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in rows {
        *seen
            .entry(r["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated rows in the archive: {dups:?}");
    assert_eq!(
        rows.len(),
        expected.len(),
        "archive has {} rows, MongoDB {} events",
        rows.len(),
        expected.len()
    );
    for r in rows {
        let id = r["id"].as_str().unwrap();
        let d = expected
            .get(id)
            .unwrap_or_else(|| panic!("row {id} is not in MongoDB"));
        assert_eq!(
            r["type"].as_str(),
            Some(d.get_str("type").unwrap()),
            "{id}: type"
        );
        assert_eq!(
            r["consumer"].as_str(),
            Some(d.get_str("consumer").unwrap()),
            "{id}: consumer"
        );
        let ms = d.get_datetime("created_at").unwrap().timestamp_millis();
        assert_eq!(created_ms(&r["created_at"]), ms, "{id}: created_at");
        assert_eq!(created_ms(&r["created_at_ms"]), ms, "{id}: created_at_ms");
        let want_payload = match d.get("payload") {
            None | Some(Bson::Null) => Value::Null,
            Some(p) => p.clone().into_relaxed_extjson(),
        };
        let got_payload = match &r["payload"] {
            Value::Null => Value::Null,
            Value::String(s) => serde_json::from_str(s)
                .unwrap_or_else(|e| panic!("{id}: payload is not JSON ({e}): {s}")),
            other => panic!("{id}: payload has type {other}"),
        };
        assert_eq!(got_payload, want_payload, "{id}: payload");
        if partitions {
            let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let dt = r["dt"].to_string().trim_matches('"').to_owned();
            assert_eq!(dt, t.format("%Y-%m-%d").to_string(), "{id}: dt partition");
            let hour = r["hour"].to_string().trim_matches('"').to_owned();
            assert_eq!(
                hour.parse::<u32>().unwrap(),
                t.format("%H").to_string().parse::<u32>().unwrap(),
                "{id}: hour partition"
            );
        }
    }
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Window records as stored by the archiver.
pub async fn window_records(mongo: &TestMongo) -> Vec<Document> {
    use futures::TryStreamExt;
    let store = mongo.store().await;
    store
        .database()
        .collection::<Document>("archive_windows")
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

impl Archiver {
    pub fn clone_env(&self) -> Self {
        Archiver {
            env: self.env.clone(),
        }
    }
}

/// Events MongoDB holds with `created_at` in `[from, to)`.
pub async fn count_in_mongo(mongo: &TestMongo, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    mongo
        .store()
        .await
        .events()
        .count_documents(doc! { "created_at": {
            "$gte": mongodb::bson::DateTime::from_millis(from.timestamp_millis()),
            "$lt": mongodb::bson::DateTime::from_millis(to.timestamp_millis()),
        } })
        .await
        .unwrap()
}
