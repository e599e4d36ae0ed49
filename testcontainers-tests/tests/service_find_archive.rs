//! One `find` across MongoDB and the Parquet archive, over real HTTP, against archives written
//! by the real `auditlog-archiver` (local files and an S3 server) and events removed from
//! MongoDB by its `purge`, the way TTL removes them on real MongoDB.
//!
//! What a reader must see, whatever tier an event lives in: the same events, once each, in
//! the same order, under the same cursor — checked by taking the answers of a set of queries
//! while every event is still in MongoDB, then archiving and purging, and asking again. Plus:
//! the seam when windows are archived but still in MongoDB, a purge between two pages, paging
//! through 10,000 events, an unreachable archive (503), and what pruning skips.

#[path = "support/archiver.rs"]
mod archiver;
#[path = "support/service.rs"]
mod service;

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::tools::{hdfs_url, python, s3_endpoint};

use archiver::{count_in_mongo, event, hour_days_ago, insert, window_records, Archiver};
use service::{key_entry, metric_or_zero, start_service, Api, KEY};

/// A reader key the tests' key file scopes to `consumer-1` and `consumer-3*`.
const SCOPED_READER: &str = "scoped-reader-key-for-consumer-1-and-3";

/// The start of the `step`-aligned UTC interval holding `t`.
fn align(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let s = step.num_seconds();
    Utc.timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(s), 0)
        .unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every page of a find: the events and, per page, the tiers it was read from.
async fn pages(api: &Api, query: &[(&str, &str)]) -> (Vec<Value>, Vec<Vec<String>>) {
    pages_as(api, KEY, query).await
}

/// [`pages`] with API key `key`.
async fn pages_as(api: &Api, key: &str, query: &[(&str, &str)]) -> (Vec<Value>, Vec<Vec<String>>) {
    let mut events = vec![];
    let mut tiers = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (status, body) = api.find_as(key, &q).await;
        assert_eq!(status, 200, "find {q:?}: {body}");
        let page = body["events"].as_array().expect("events").clone();
        tiers.push(
            body["tiers"]
                .as_array()
                .expect("tiers")
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        );
        let empty = page.is_empty();
        events.extend(page);
        match body["next_cursor"].as_str() {
            Some(c) if !empty => cursor = Some(c.to_owned()),
            _ => return (events, tiers),
        }
        assert!(tiers.len() < 5_000, "paging does not end");
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Each event once, and strictly in page order.
fn assert_once_in_order(events: &[Value], descending: bool) {
    let unique: HashSet<String> = ids(events).into_iter().collect();
    assert_eq!(unique.len(), events.len(), "an event came twice");
    for pair in events.windows(2) {
        let key = |e: &Value| {
            (
                e["created_at"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        };
        let (a, b) = (key(&pair[0]), key(&pair[1]));
        assert!(
            if descending { a > b } else { a < b },
            "out of order: {a:?} then {b:?}"
        );
    }
}

/// The value of a metric series (`name{labels}`) in the Prometheus text; 0 when absent.
/// `n` events from `start`, `step_ms` apart, over a few consumers and types, some sharing a
/// millisecond (ordered by id then).
fn spread(start: DateTime<Utc>, n: i64, step_ms: i64, tag: &str) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let at = start + Duration::milliseconds((i - i / 10) * step_ms);
            event(
                at,
                &format!("type-{}", i % 3),
                &format!("consumer-{}", i % 4),
                Some(doc! { "tag": tag, "i": i, "f": 1.5, "nested": { "list": [1, "x"] } }),
            )
        })
        .collect()
}

/// The queries whose answers must not change when events move to the archive.
fn queries(a: DateTime<Utc>) -> Vec<(String, Vec<(&'static str, String)>)> {
    let h = Duration::hours(1);
    let q = |pairs: &[(&'static str, String)]| pairs.to_vec();
    vec![
        ("everything asc".into(), q(&[("limit", "7".into())])),
        (
            "everything desc".into(),
            q(&[("limit", "9".into()), ("order", "desc".into())]),
        ),
        (
            "one consumer asc".into(),
            q(&[("consumer", "consumer-1".into()), ("limit", "4".into())]),
        ),
        (
            "one type desc".into(),
            q(&[
                ("type", "type-2".into()),
                ("limit", "5".into()),
                ("order", "desc".into()),
            ]),
        ),
        (
            "consumer and type".into(),
            q(&[
                ("consumer", "consumer-2".into()),
                ("type", "type-0".into()),
                ("limit", "3".into()),
            ]),
        ),
        (
            // The second hour of a 2 h window: its start is an hour (partition) boundary
            // inside the window, its end a window boundary.
            "hour inside a window".into(),
            q(&[
                ("created_from", iso(a + h)),
                ("created_to", iso(a + h * 2)),
                ("limit", "6".into()),
            ]),
        ),
        (
            "across a window boundary desc".into(),
            q(&[
                ("created_from", iso(a + h + h / 2)),
                ("created_to", iso(a + h * 2 + h / 2)),
                ("order", "desc".into()),
                ("limit", "6".into()),
            ]),
        ),
    ]
}

async fn answers(api: &Api, a: DateTime<Utc>) -> Vec<(String, Vec<Value>, Vec<Vec<String>>)> {
    let mut out = vec![];
    for (name, q) in queries(a) {
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (events, tiers) = pages(api, &pairs).await;
        let desc = q.iter().any(|(k, v)| *k == "order" && v == "desc");
        assert_once_in_order(&events, desc);
        out.push((name, events, tiers));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_answers_the_same_before_and_after_events_move_to_the_archive() {
    let mongo = test_mongo().await;
    let window = Duration::hours(2);
    let h = Duration::hours(1);
    // Two-hour windows; from old to new:
    let a = align(hour_days_ago(5), window); // archived, purged
    let b = align(hour_days_ago(4), window); // archived, purged
    let c = align(hour_days_ago(3) + Duration::hours(12), window); // archived, kept, past the horizon
    let d = align(hour_days_ago(1), window); // archived, kept, before the horizon: MongoDB's
    let e = Utc::now() - Duration::minutes(20); // not due: never archived
    let ms = Duration::milliseconds;
    let mut docs = vec![
        // Window and partition boundaries: the first and last millisecond of each hour of `a`.
        event(
            a,
            "boundary",
            "consumer-1",
            Some(doc! { "at": "window start" }),
        ),
        event(a + h - ms(1), "boundary", "consumer-1", None),
        event(
            a + h,
            "boundary",
            "consumer-2",
            Some(doc! { "at": "hour inside" }),
        ),
        event(a + window - ms(1), "boundary", "consumer-2", None),
        event(
            a + window,
            "boundary",
            "consumer-3",
            Some(doc! { "at": "next window" }),
        ),
        event(
            a + window + ms(5),
            "unicode",
            "consumer-1",
            Some(
                doc! { "text": "naïve café – 日本語 – 😀", "big": 9_007_199_254_740_993_i64, "whole": 1.0 },
            ),
        ),
    ];
    docs.extend(spread(a + ms(10), 40, 200_000, "a"));
    docs.extend(spread(b, 30, 230_000, "b"));
    docs.extend(spread(c, 30, 230_000, "c"));
    docs.extend(spread(d, 30, 230_000, "d"));
    docs.extend(spread(e, 20, 1_000, "e"));
    insert(&mongo, &docs).await;

    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    // A reader key scoped to one exact consumer and one prefix, beside the full-rights key.
    let keys_file = dir.path().join("keys.toml");
    std::fs::write(
        &keys_file,
        key_entry(
            "reader-1-3",
            SCOPED_READER,
            &["read"],
            &["consumer-1", "consumer-3*"],
            None,
        ),
    )
    .unwrap();
    // The service's retention (2 days) places the horizon: `c` is past it, `d` before it.
    let service = start_service(
        &mongo,
        &[
            ("AUDIT_ARCHIVE_URL", &url),
            ("AUDIT_RETENTION_DAYS", "2"),
            ("AUDIT_API_KEYS_FILE", keys_file.to_str().unwrap()),
        ],
    )
    .await;
    let api = Api::new(&service);
    let before = answers(&api, a).await;
    for (name, events, tiers) in &before {
        assert!(!events.is_empty(), "{name}: no events");
        assert!(
            tiers.iter().flatten().all(|t| t == "mongodb"),
            "{name}: nothing is archived yet: {tiers:?}"
        );
    }
    let (all, _) = pages(&api, &[("limit", "1000")]).await;
    assert_eq!(all.len(), docs.len());

    let archiver = Archiver::new(&mongo, &url)
        .env("AUDIT_ARCHIVE_WINDOW", "2h")
        .env("AUDIT_ARCHIVE_AFTER", "1h");
    archiver.run(&["once"]).expect_code(0);
    let recorded = window_records(&mongo).await.len();
    assert!(recorded >= 5, "{recorded} windows recorded");
    // Purge what ended more than 3 days ago: `a` and `b` leave MongoDB; `c` stays there although
    // the service reads it from the archive.
    let purged = archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "3")
        .run(&["purge"])
        .expect_code(0)
        .json();
    assert!(purged["purged_windows"].as_u64().unwrap() >= 3, "{purged}");
    assert_eq!(count_in_mongo(&mongo, a, b + window).await, 0);
    assert_eq!(count_in_mongo(&mongo, c, c + window).await, 30);
    assert_eq!(count_in_mongo(&mongo, d, d + window).await, 30);

    let after = answers(&api, a).await;
    for ((name, was, _), (_, is, tiers)) in before.iter().zip(&after) {
        assert_eq!(
            ids(is),
            ids(was),
            "{name}: other events or another order once archived (tiers {tiers:?})"
        );
        assert_eq!(
            is, was,
            "{name}: an event reads differently from the archive"
        );
    }
    let tiers_of = |name: &str| -> Vec<Vec<String>> {
        after
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, t)| t.clone())
            .unwrap()
    };
    let flat = |t: Vec<Vec<String>>| t.into_iter().flatten().collect::<HashSet<_>>();
    assert_eq!(
        flat(tiers_of("everything asc")),
        HashSet::from(["archive".to_owned(), "mongodb".to_owned()])
    );
    assert_eq!(
        tiers_of("hour inside a window"),
        vec![vec!["archive".to_owned()]; tiers_of("hour inside a window").len()],
        "wholly in purged windows: the archive alone"
    );

    // Wholly in the archive, a window still in MongoDB but past the horizon: read once, from
    // the archive.
    let c_range = [
        ("created_from", iso(c)),
        ("created_to", iso(c + window)),
        ("limit", "8".into()),
    ];
    let pairs: Vec<(&str, &str)> = c_range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (c_events, c_tiers) = pages(&api, &pairs).await;
    assert_eq!(
        c_events.len(),
        30,
        "archived and still in MongoDB: not doubled"
    );
    assert_once_in_order(&c_events, false);
    assert!(
        c_tiers.iter().flatten().all(|t| t == "archive"),
        "{c_tiers:?}"
    );
    // Wholly in MongoDB: `d` is archived but before the horizon, `e` is not archived.
    let d_range = [
        ("created_from", iso(d)),
        ("order", "desc".into()),
        ("limit", "8".into()),
    ];
    let pairs: Vec<(&str, &str)> = d_range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (d_events, d_tiers) = pages(&api, &pairs).await;
    assert_eq!(d_events.len(), 50, "archived and in MongoDB: not doubled");
    assert_once_in_order(&d_events, true);
    assert!(
        d_tiers.iter().flatten().all(|t| t == "mongodb"),
        "{d_tiers:?}"
    );

    // The range of one hour inside a two-hour window opens only that hour's partition.
    let m = api.metrics_text().await;
    assert!(
        metric_or_zero(
            &m,
            r#"auditlog_archive_find_files_total{outcome="pruned_partition"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(metric_or_zero(&m, r#"auditlog_archive_find_queries_total{result="ok"}"#) > 0.0);

    // A key scoped to `consumer-1` and `consumer-3*` that names no consumer gets exactly its
    // consumers' events, from both tiers, in the same order as the full key sees them.
    let scoped_expected: Vec<String> = all
        .iter()
        .filter(|e| matches!(e["consumer"].as_str(), Some("consumer-1" | "consumer-3")))
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(scoped_expected.len() > 20, "{}", scoped_expected.len());
    let (scoped, scoped_tiers) = pages_as(&api, SCOPED_READER, &[("limit", "7")]).await;
    assert_eq!(
        ids(&scoped),
        scoped_expected,
        "a scoped reader sees its consumers' events, once each, in order"
    );
    assert!(
        flat(scoped_tiers).contains("archive"),
        "the scoped find read the archive"
    );
    // Naming a consumer outside the key is refused, in the archive's range as anywhere.
    let (status, body) = api
        .find_as(
            SCOPED_READER,
            &[("consumer", "consumer-2"), ("created_to", &iso(b))],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "consumer_not_allowed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_ten_thousand_events_across_the_seam_returns_each_once_in_order() {
    let mongo = test_mongo().await;
    let old = hour_days_ago(4); // archived and purged: the archive alone holds them
    let day = hour_days_ago(1); // archived, still in MongoDB (before the horizon)
    let recent = Utc::now() - Duration::minutes(40); // not archived
    let mut docs = spread(old, 3_500, 2_900, "old"); // ~2.8 h: two or three windows
    docs.extend(spread(day, 3_000, 2_100, "day"));
    docs.extend(spread(recent, 3_500, 600, "recent"));
    insert(&mongo, &docs).await;
    let mut expected: Vec<(i64, String)> = docs
        .iter()
        .map(|d| {
            (
                d.get_datetime("created_at").unwrap().timestamp_millis(),
                d.get_object_id("_id").unwrap().to_hex(),
            )
        })
        .collect();
    expected.sort();
    let expected_ids: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let archiver = Archiver::new(&mongo, &url).env("AUDIT_ARCHIVE_AFTER", "1h");
    archiver.run(&["once"]).expect_code(0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "2")
        .run(&["purge"])
        .expect_code(0);
    assert_eq!(
        count_in_mongo(&mongo, old - Duration::hours(1), old + Duration::hours(4)).await,
        0,
        "the oldest events are only in the archive"
    );

    let service = start_service(
        &mongo,
        &[("AUDIT_ARCHIVE_URL", &url), ("AUDIT_RETENTION_DAYS", "2")],
    )
    .await;
    let api = Api::new(&service);
    let (asc, asc_tiers) = pages(&api, &[("limit", "37")]).await;
    assert_eq!(asc.len(), 10_000);
    assert_eq!(
        ids(&asc),
        expected_ids,
        "ascending: every event once, in order"
    );
    let seen: HashSet<String> = asc_tiers.into_iter().flatten().collect();
    assert_eq!(seen.len(), 2, "{seen:?}");

    let (desc, _) = pages(&api, &[("limit", "61"), ("order", "desc")]).await;
    let mut reversed = expected_ids.clone();
    reversed.reverse();
    assert_eq!(
        ids(&desc),
        reversed,
        "descending: every event once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_purged_from_mongodb_between_two_pages_are_still_returned_once() {
    let mongo = test_mongo().await;
    let w1 = hour_days_ago(2) + Duration::hours(6); // 42 h ago
    let w2 = w1 + Duration::hours(1);
    let mut docs = spread(w1, 12, 200_000, "w1");
    docs.extend(spread(w2, 12, 200_000, "w2"));
    docs.extend(spread(
        Utc::now() - Duration::minutes(30),
        6,
        1_000,
        "recent",
    ));
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let archiver = Archiver::new(&mongo, &url).env("AUDIT_ARCHIVE_AFTER", "1h");
    archiver.run(&["once"]).expect_code(0);
    assert_eq!(window_records(&mongo).await.len(), 2);
    // Retention 30 days (the default): both windows are archived and still MongoDB's tier.
    let service = start_service(&mongo, &[("AUDIT_ARCHIVE_URL", &url)]).await;
    let api = Api::new(&service);

    let mut got = vec![];
    let mut tiers = vec![];
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let mut q = vec![("limit", "5".to_owned())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = api.find(&pairs).await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().unwrap().clone();
        tiers.push(body["tiers"].to_string());
        let empty = events.is_empty();
        got.extend(events);
        if page == 1 {
            // Half-way through the first window, both windows leave MongoDB as TTL would take
            // them: purged by an archiver whose retention (1 day) is shorter than the
            // service's — the `purged_at` marks are what tell the service.
            let report = archiver
                .clone_env()
                .env("AUDIT_RETENTION_DAYS", "1")
                .run(&["purge"])
                .expect_code(0)
                .json();
            assert_eq!(report["purged_windows"], 2, "{report}");
            assert_eq!(count_in_mongo(&mongo, w1, w2 + Duration::hours(1)).await, 0);
        }
        match body["next_cursor"].as_str() {
            Some(c) if !empty => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    assert_eq!(got.len(), docs.len(), "pages: {tiers:?}");
    assert_once_in_order(&got, false);
    assert!(
        tiers[0].contains("mongodb") && !tiers[0].contains("archive"),
        "{tiers:?}"
    );
    assert!(tiers[2].contains("archive"), "after the purge: {tiers:?}");
}

/// Starts (or finds running) moto's S3 server (`infra/dev/s3.sh`) and creates a bucket.
fn s3_bucket(name: &str) -> String {
    let endpoint = s3_endpoint();
    let create = r#"
import boto3, sys
boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
             aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket=sys.argv[2])
"#;
    let out = std::process::Command::new(python())
        .args(["-c", create, &endpoint, name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    endpoint
}

fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AUDIT_S3_ENDPOINT", endpoint.to_owned()),
        ("AUDIT_S3_ALLOW_HTTP", "true".into()),
        ("AUDIT_S3_ACCESS_KEY_ID", "test".into()),
        ("AUDIT_S3_SECRET_ACCESS_KEY", "test".into()),
        ("AUDIT_S3_REGION", "us-east-1".into()),
    ]
}

/// 25 events four days old and 5 recent ones; the old ones archived to `url` (with the
/// archiver's extra `env`) and purged from MongoDB.
async fn archived_and_purged(mongo: &TestMongo, url: &str, env: &[(&str, String)]) {
    let old = hour_days_ago(4);
    let mut docs = spread(old, 25, 100_000, "old");
    docs.extend(spread(
        Utc::now() - Duration::minutes(30),
        5,
        1_000,
        "recent",
    ));
    insert(mongo, &docs).await;
    let mut archiver = Archiver::new(mongo, url).env("AUDIT_ARCHIVE_AFTER", "1h");
    for (k, v) in env {
        archiver = archiver.env(k, v);
    }
    archiver.run(&["once"]).expect_code(0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "2")
        .run(&["purge"])
        .expect_code(0);
    assert_eq!(
        count_in_mongo(mongo, old, old + Duration::hours(2)).await,
        0,
        "the old events are only in the archive now"
    );
}

/// The 30 events of [`archived_and_purged`], paged in both orders: each once, in order, the
/// old ones from the archive.
async fn assert_pages_across_the_seam(api: &Api) {
    let (asc, tiers) = pages(api, &[("limit", "4")]).await;
    assert_eq!(asc.len(), 30);
    assert_once_in_order(&asc, false);
    assert!(tiers.iter().flatten().any(|t| t == "archive"), "{tiers:?}");
    let (desc, _) = pages(api, &[("limit", "6"), ("order", "desc")]).await;
    assert_eq!(desc.len(), 30);
    assert_once_in_order(&desc, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hdfs_archive_answers_across_the_seam() {
    let url = hdfs_url();
    let mongo = test_mongo().await;
    let archive = format!("{url}/find-{}", mongo.db_name);
    archived_and_purged(&mongo, &archive, &[]).await;
    let service = start_service(&mongo, &[("AUDIT_ARCHIVE_URL", &archive)]).await;
    assert_pages_across_the_seam(&Api::new(&service)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_archive_answers_across_the_seam_and_an_unreachable_one_answers_503() {
    let mongo = test_mongo().await;
    let bucket = format!("find-{}", mongo.db_name.replace('_', "-").to_lowercase());
    let endpoint = s3_bucket(&bucket);
    let url = format!("s3://{bucket}/audit");
    let env = s3_env(&endpoint);
    archived_and_purged(&mongo, &url, &env).await;

    let mut with: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    with.push(("AUDIT_ARCHIVE_URL", &url));
    let service = start_service(&mongo, &with).await;
    assert_pages_across_the_seam(&Api::new(&service)).await;

    // The same state, but the archive's S3 endpoint does not answer.
    let closed = format!("http://127.0.0.1:{}", testcontainers_tests::free_port());
    let env = s3_env(&closed);
    let mut unreachable: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    unreachable.push(("AUDIT_ARCHIVE_URL", &url));
    unreachable.push(("AUDIT_FIND_TIMEOUT_MS", "3000"));
    let broken = start_service(&mongo, &unreachable).await;
    let broken_api = Api::new(&broken);
    let started = std::time::Instant::now();
    let resp = broken_api
        .http
        .get(broken_api.url("/v1/find"))
        .header("X-Api-Key", KEY)
        .query(&[("limit", "4")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(
        resp.headers().get("retry-after").is_some(),
        "503 without Retry-After"
    );
    let body: Value = resp.json().await.unwrap();
    assert!(
        ["archive_unavailable", "query_timeout"].contains(&body["error"]["code"].as_str().unwrap()),
        "{body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the 503 took {:?}",
        started.elapsed()
    );
    // A range MongoDB answers alone is still served.
    let from = iso(Utc::now() - Duration::hours(1));
    let (status, body) = broken_api
        .find(&[("created_from", &from), ("limit", "100")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 5);
    assert_eq!(body["tiers"], serde_json::json!(["mongodb"]));
    let m = broken_api.metrics_text().await;
    assert!(
        metric_or_zero(
            &m,
            r#"auditlog_archive_find_queries_total{result="unavailable"}"#
        ) + metric_or_zero(
            &m,
            r#"auditlog_archive_find_queries_total{result="timeout"}"#
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_archive_file_is_a_503_never_a_shorter_page() {
    let mongo = test_mongo().await;
    let old = hour_days_ago(4);
    let docs = spread(old, 10, 100_000, "old");
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let archiver = Archiver::new(&mongo, &url).env("AUDIT_ARCHIVE_AFTER", "1h");
    archiver.run(&["once"]).expect_code(0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "2")
        .run(&["purge"])
        .expect_code(0);
    std::fs::remove_dir_all(dir.path().join(&mongo.db_name)).unwrap();
    let service = start_service(&mongo, &[("AUDIT_ARCHIVE_URL", &url)]).await;
    let api = Api::new(&service);
    let (status, body) = api.find(&[("limit", "100")]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "archive_unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloom_filters_skip_row_groups_without_the_consumer_and_read_no_data_pages() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(4);
    let h = Duration::hours(1);
    // Six hourly windows (one file, one row group each). Every hour has consumers `c-a` and
    // `c-z`, so the statistics (min `c-a`, max `c-z`) rule out no hour for `c-m`; `c-m` itself
    // writes only in hours 1 and 4.
    let mut docs = vec![];
    for hour in 0..6 {
        let t = base + h * hour;
        for i in 0..20 {
            let at = t + Duration::seconds(i * 60);
            docs.push(event(at, "t", if i % 2 == 0 { "c-a" } else { "c-z" }, None));
        }
        if hour == 1 || hour == 4 {
            docs.push(event(
                t + Duration::seconds(30),
                "t",
                "c-m",
                Some(doc! { "n": hour }),
            ));
        }
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let archiver = Archiver::new(&mongo, &url).env("AUDIT_ARCHIVE_AFTER", "1h");
    archiver.run(&["once"]).expect_code(0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "2")
        .run(&["purge"])
        .expect_code(0);
    let service = start_service(&mongo, &[("AUDIT_ARCHIVE_URL", &url)]).await;
    let api = Api::new(&service);
    let range = [
        ("created_from", iso(base)),
        ("created_to", iso(base + h * 6)),
    ];
    let counters = |m: &str| {
        (
            metric_or_zero(
                m,
                r#"auditlog_archive_find_row_groups_total{outcome="pruned_bloom"}"#,
            ),
            metric_or_zero(
                m,
                r#"auditlog_archive_find_row_groups_total{outcome="read"}"#,
            ),
            metric_or_zero(m, r#"auditlog_archive_find_bytes_read_total{part="data"}"#),
            metric_or_zero(
                m,
                r#"auditlog_archive_find_files_total{outcome="pruned_bloom"}"#,
            ),
        )
    };

    let m0 = counters(&api.metrics_text().await);
    let mut q: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    q.push(("consumer", "c-m"));
    let (status, body) = api.find(&q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["tiers"], serde_json::json!(["archive"]));
    let m1 = counters(&api.metrics_text().await);
    assert_eq!(
        m1.0 - m0.0,
        4.0,
        "the four hours without c-m are skipped by their bloom filter"
    );
    assert_eq!(m1.1 - m0.1, 2.0, "the two hours with c-m are read");
    assert_eq!(m1.3 - m0.3, 4.0, "so are their files");
    assert!(m1.2 > m0.2, "reading c-m's hours fetched data pages");

    // A consumer no hour has, between the statistics' bounds: every row group is skipped by
    // its bloom filter, and not one data page is fetched.
    let mut q: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    q.push(("consumer", "c-n"));
    let (status, body) = api.find(&q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
    let m2 = counters(&api.metrics_text().await);
    assert_eq!(
        m2.0 - m1.0,
        6.0,
        "every hour is skipped by its bloom filter"
    );
    assert_eq!(m2.1 - m1.1, 0.0, "no row group is read");
    assert_eq!(m2.2 - m1.2, 0.0, "no data page is fetched");
}
