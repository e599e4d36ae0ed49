//! `GET /v1/histogram` over real HTTP, held against `GET /v1/find`: for every bucket, the
//! count is the number of events find returns for that bucket's part of the range (with
//! `include_incomplete=true`), the breakdown sums to it, `top` folds the rest into `other`, a
//! scoped key counts only its consumers — in MongoDB (on FerretDB, through the scan
//! fallback) and over windows `auditlog-archiver` archived and purged, where row groups the
//! footer's statistics settle are counted without reading a data page.

#[path = "support/archiver.rs"]
mod archiver;
#[path = "support/service.rs"]
mod service;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mongodb::bson::Document;
use serde_json::{json, Value};
use testcontainers_tests::mongo::test_mongo;

use archiver::{event, hour_days_ago, insert, Archiver};
use service::{key_entry, metric_or_zero, start_service, Api, KEY};

/// A reader key scoped to `consumer-1` and `consumer-3*`.
const SCOPED: &str = "histogram-scoped-reader-key-0123456789";

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(3600), 0)
        .unwrap()
}

async fn histogram_as(api: &Api, key: &str, query: &[(&str, &str)]) -> (u16, Value) {
    api.send(
        api.http
            .get(api.url("/v1/histogram"))
            .header("X-Api-Key", key)
            .query(query),
    )
    .await
}

async fn histogram(api: &Api, query: &[(&str, &str)]) -> Value {
    let (status, body) = histogram_as(api, KEY, query).await;
    assert_eq!(status, 200, "histogram {query:?}: {body}");
    body
}

/// Every event find returns for `query` with `include_incomplete=true`, page by page.
async fn find_every(api: &Api, key: &str, query: &[(&str, String)]) -> Vec<Value> {
    let mut events = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        q.push(("include_incomplete", "true"));
        q.push(("limit", "1000"));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (status, body) = api.find_as(key, &q).await;
        assert_eq!(status, 200, "find {q:?}: {body}");
        let page = body["events"].as_array().expect("events").clone();
        let empty = page.is_empty();
        events.extend(page);
        match body["next_cursor"].as_str() {
            Some(c) if !empty => cursor = Some(c.to_owned()),
            _ => return events,
        }
    }
}

/// Holds a histogram against find: for every bucket, find over the bucket's part of the range
/// with the same filters returns `count` events, and (with `by`) `counts` and `other` are
/// their breakdown. Returns the histogram's total.
async fn assert_matches_find(api: &Api, key: &str, filters: &[(&str, &str)], h: &Value) -> u64 {
    let from = parse(h["created_from"].as_str().unwrap());
    let to = parse(h["created_to"].as_str().unwrap());
    let bucket = Duration::milliseconds(h["bucket_ms"].as_i64().unwrap());
    let by = h.get("by").and_then(Value::as_str);
    let series: Vec<String> = h
        .get("series")
        .and_then(Value::as_array)
        .map(|s| s.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let buckets = h["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty(), "{h}");
    let first = parse(buckets[0]["start"].as_str().unwrap());
    assert!(
        first <= from && from < first + bucket,
        "first bucket {first}"
    );
    let mut sum = 0;
    let mut by_key_total: BTreeMap<String, u64> = BTreeMap::new();
    for (i, b) in buckets.iter().enumerate() {
        let start = parse(b["start"].as_str().unwrap());
        assert_eq!(
            start,
            first + bucket * i as i32,
            "buckets are contiguous: {h}"
        );
        assert_eq!(start.timestamp_millis() % bucket.num_milliseconds(), 0);
        let lo = start.max(from);
        let hi = (start + bucket).min(to);
        assert!(lo < hi, "bucket {start} lies outside the range");
        let mut q: Vec<(&str, String)> = filters.iter().map(|(k, v)| (*k, v.to_string())).collect();
        q.push(("created_from", iso(lo)));
        q.push(("created_to", iso(hi)));
        let events = find_every(api, key, &q).await;
        let count = b["count"].as_u64().unwrap();
        assert_eq!(
            count,
            events.len() as u64,
            "bucket {start} of {filters:?}: the histogram says {count}, find returns {}",
            events.len()
        );
        sum += count;
        if let Some(field) = by {
            let mut found: BTreeMap<String, u64> = BTreeMap::new();
            for e in &events {
                *found
                    .entry(e[field].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            let counts = b["counts"].as_object().expect("counts with by");
            assert_eq!(
                counts.keys().cloned().collect::<Vec<_>>(),
                {
                    let mut s = series.clone();
                    s.sort();
                    s
                },
                "every series in every bucket"
            );
            let mut kept = 0;
            for k in &series {
                let n = counts[k].as_u64().unwrap();
                assert_eq!(n, found.get(k).copied().unwrap_or(0), "{k} in {start}");
                kept += n;
            }
            assert_eq!(b["other"].as_u64().unwrap() + kept, count, "{b}");
            for (k, n) in found {
                *by_key_total.entry(k).or_default() += n;
            }
        } else {
            assert!(b.get("counts").is_none() && b.get("other").is_none(), "{b}");
        }
    }
    assert!(
        to <= parse(buckets[buckets.len() - 1]["start"].as_str().unwrap()) + bucket,
        "the last bucket holds created_to - 1 ms"
    );
    assert_eq!(h["total"].as_u64().unwrap(), sum, "{h}");
    if by.is_some() {
        // The kept series are the largest totals, ties by key.
        let mut ranked: Vec<(String, u64)> = by_key_total.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let top = ranked.iter().take(series.len()).map(|(k, _)| k.clone());
        assert_eq!(series, top.collect::<Vec<_>>(), "{h}");
    }
    sum
}

/// Six hours of events: types skewed (`login` most, then `logout`, `view`, …), four
/// consumers, and events on the first and last millisecond of hours.
fn six_hours(base: DateTime<Utc>) -> Vec<Document> {
    let ms = Duration::milliseconds;
    let types = [
        "login", "login", "login", "login", "logout", "logout", "view", "view", "delete", "share",
    ];
    let mut docs = vec![];
    for i in 0..240_i64 {
        let at = base + ms(i * 89_000 + (i % 7) * 13);
        docs.push(event(
            at,
            types[(i % 10) as usize],
            &format!("consumer-{}", 1 + i % 4),
            None,
        ));
    }
    for hour in 1..6 {
        let t = base + Duration::hours(hour);
        docs.push(event(t, "edge", "consumer-1", None));
        docs.push(event(t - ms(1), "edge", "consumer-3x", None));
    }
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_counts_equal_finds_with_filters_breakdown_top_and_scope() {
    let mongo = test_mongo().await;
    let base = hour_start(Utc::now()) - Duration::hours(7);
    insert(&mongo, &six_hours(base)).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        key_entry(
            "scoped",
            SCOPED,
            &["read"],
            &["consumer-1", "consumer-3*"],
            None,
        ),
    )
    .unwrap();
    let service = start_service(&mongo, &[("AUDIT_API_KEYS_FILE", keys.to_str().unwrap())]).await;
    let api = Api::new(&service);

    // Edges inside buckets: 00:17 to 05:03 past `base`, by the hour.
    let from = iso(base + Duration::minutes(17));
    let to = iso(base + Duration::hours(5) + Duration::minutes(3));
    let range = [("created_from", from.as_str()), ("created_to", to.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        range.iter().chain(extra).copied().collect()
    };

    let h = histogram(&api, &with(&[("bucket", "1h")])).await;
    assert_eq!(h["bucket"], "1h");
    assert_eq!(h["bucket_ms"], 3_600_000);
    assert_eq!(h["created_from"], from.as_str());
    assert!(h.get("by").is_none() && h["series"] == json!([]), "{h}");
    assert_eq!(h["buckets"].as_array().unwrap().len(), 6, "{h}");
    assert_eq!(h["tiers"], json!(["mongodb"]));
    assert!(h["complete_until"].is_string());
    let total = assert_matches_find(&api, KEY, &[], &h).await;
    assert!(total > 150, "{total}");

    // Filters, and `bucket=auto` (5 h → 5 min buckets), with the same edges.
    let h = histogram(
        &api,
        &with(&[("type", "login"), ("consumer", "consumer-1")]),
    )
    .await;
    assert_eq!(h["bucket"], "5m", "{h}");
    let filtered = assert_matches_find(
        &api,
        KEY,
        &[("type", "login"), ("consumer", "consumer-1")],
        &h,
    )
    .await;
    assert!(filtered > 0 && filtered < total);

    // By type: every key's counts per bucket; top 2 folds the rest into `other`.
    let h = histogram(&api, &with(&[("bucket", "30m"), ("by", "type")])).await;
    assert_eq!(h["by"], "type");
    assert_eq!(h["series"].as_array().unwrap().len(), 6, "{h}");
    assert_eq!(assert_matches_find(&api, KEY, &[], &h).await, total);
    let h = histogram(
        &api,
        &with(&[("bucket", "1h"), ("by", "type"), ("top", "2")]),
    )
    .await;
    assert_eq!(h["series"], json!(["login", "logout"]), "{h}");
    assert!(
        h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["other"].as_u64().unwrap() > 0),
        "{h}"
    );
    assert_matches_find(&api, KEY, &[], &h).await;
    let h = histogram(
        &api,
        &with(&[("bucket", "1h"), ("by", "consumer"), ("type", "view")]),
    )
    .await;
    assert_matches_find(&api, KEY, &[("type", "view")], &h).await;

    // A scoped key counts its consumers only, and may not name another.
    let (status, h) =
        histogram_as(&api, SCOPED, &with(&[("bucket", "1h"), ("by", "consumer")])).await;
    assert_eq!(status, 200, "{h}");
    let scoped = assert_matches_find(&api, SCOPED, &[], &h).await;
    assert!(scoped > 0 && scoped < total, "{scoped} of {total}");
    let mut series: Vec<&str> = h["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    series.sort();
    assert_eq!(series, ["consumer-1", "consumer-3", "consumer-3x"]);
    let (status, body) = histogram_as(&api, SCOPED, &with(&[("consumer", "consumer-2")])).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "consumer_not_allowed", "{body}");
    let (status, body) = histogram_as(&api, SCOPED, &with(&[("consumer", "consumer-1")])).await;
    assert_eq!(status, 200, "{body}");

    // The defaults: the last 24 h, auto buckets of 30 min.
    let h = histogram(&api, &[]).await;
    assert_eq!(h["bucket"], "30m", "{h}");
    let n = h["buckets"].as_array().unwrap().len();
    assert!(n == 48 || n == 49, "{n}");
    let span =
        parse(h["created_to"].as_str().unwrap()) - parse(h["created_from"].as_str().unwrap());
    assert_eq!(span, Duration::hours(24));
    assert!(h["total"].as_u64().unwrap() >= total);

    // Bad parameters: 400 with the error body.
    let day = [("created_from", "2026-01-01"), ("created_to", "2026-01-02")];
    for (bad, words) in [
        (vec![("bucket", "1w")], "`bucket`"),
        (vec![("bucket", "0h")], "`bucket`"),
        (vec![("bucket", "soon")], "`bucket`"),
        (vec![("bucket", "1s")], "at most 1000"),
        (vec![("by", "payload")], "`by`"),
        (vec![("by", "type"), ("top", "0")], "`top`"),
        (vec![("by", "type"), ("top", "51")], "`top`"),
        (vec![("top", "many")], "top"),
        (
            vec![("created_from", "2026-01-02"), ("created_to", "2026-01-01")],
            "before `created_to`",
        ),
        (
            vec![("created_from", "2026-01-02"), ("created_to", "2026-01-02")],
            "before `created_to`",
        ),
        (vec![("created_from", "yesterday")], "`created_from`"),
    ] {
        let mut q: Vec<(&str, &str)> = day
            .iter()
            .filter(|(k, _)| !bad.iter().any(|(b, _)| b == k))
            .copied()
            .collect();
        q.extend(bad.iter().copied());
        let (status, body) = histogram_as(&api, KEY, &q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{q:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{q:?}: {message}");
    }
    let (status, body) = histogram_as(&api, "wrong-key", &[]).await;
    assert_eq!(status, 401, "{body}");

    // FerretDB cannot compute the bucket in one aggregation: the service says so once and
    // counts from a scan; real MongoDB takes the one pipeline.
    let log = service.output();
    let fallbacks = log.matches("counting from a scan of created_at").count();
    for line in log
        .lines()
        .filter(|l| l.contains("from a scan of created_at"))
    {
        eprintln!("{line}");
    }
    if mongo.is_ferretdb() {
        assert_eq!(fallbacks, 1, "{log}");
    } else {
        assert_eq!(fallbacks, 0, "{log}");
    }
}

fn row_groups(m: &str, outcome: &str) -> f64 {
    metric_or_zero(
        m,
        &format!(r#"auditlog_histogram_archive_row_groups_total{{outcome="{outcome}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_archived_windows_counts_equal_finds_and_footers_answer_what_they_can() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(4);
    let h = Duration::hours(1);
    // Six hourly windows of 40 events, 90 s apart. Hours 0–2 hold `login` only, hours 3–5 mix
    // types; consumers alternate. With row groups of 10 rows every group lies in one hour.
    let mut docs = vec![];
    for hour in 0..6 {
        for i in 0..40 {
            let at = base + h * hour + Duration::seconds(i * 90);
            let ty = if hour < 3 {
                "login"
            } else {
                ["login", "logout", "view"][(i % 3) as usize]
            };
            docs.push(event(at, ty, &format!("consumer-{}", 1 + i % 2), None));
        }
    }
    // And recent ones, MongoDB's.
    for i in 0..12 {
        docs.push(event(
            Utc::now() - Duration::minutes(30) + Duration::seconds(i * 7),
            "login",
            "consumer-3",
            None,
        ));
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("archive").to_str().unwrap().to_owned();
    let archiver = Archiver::new(&mongo, &url)
        .env("AUDIT_ARCHIVE_AFTER", "1h")
        .env("AUDIT_ARCHIVE_ROW_GROUP_ROWS", "10");
    archiver.run(&["once"]).expect_code(0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "2")
        .run(&["purge"])
        .expect_code(0);
    assert_eq!(
        archiver::count_in_mongo(&mongo, base, base + h * 6).await,
        0,
        "the old events are only in the archive now"
    );
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        key_entry("scoped", SCOPED, &["read"], &["consumer-1"], None),
    )
    .unwrap();
    let service = start_service(
        &mongo,
        &[
            ("AUDIT_ARCHIVE_URL", &url),
            ("AUDIT_API_KEYS_FILE", keys.to_str().unwrap()),
            ("RUST_LOG", "info,auditlog_service::find::histogram=debug"),
        ],
    )
    .await;
    let api = Api::new(&service);

    // The archived hours alone, by the hour, no filter: every row group is counted from its
    // footer, not one data page read.
    let (from, to) = (iso(base), iso(base + h * 6));
    let range = [("created_from", from.as_str()), ("created_to", to.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        range.iter().chain(extra).copied().collect()
    };
    let m0 = api.metrics_text().await;
    let hist = histogram(&api, &with(&[("bucket", "1h")])).await;
    let m1 = api.metrics_text().await;
    assert_eq!(hist["tiers"], json!(["archive"]), "{hist}");
    assert_eq!(hist["total"], 240, "{hist}");
    assert_eq!(
        row_groups(&m1, "statistics") - row_groups(&m0, "statistics"),
        24.0,
        "four row groups an hour, each within one hour: {m1}"
    );
    assert_eq!(row_groups(&m1, "read") - row_groups(&m0, "read"), 0.0);
    assert_eq!(
        metric_or_zero(&m1, "auditlog_histogram_archive_data_bytes_total")
            - metric_or_zero(&m0, "auditlog_histogram_archive_data_bytes_total"),
        0.0,
        "no data page fetched"
    );
    assert_matches_find(&api, KEY, &[], &hist).await;

    // By type: the `login`-only hours still from their footers, the mixed ones decoded.
    let m0 = api.metrics_text().await;
    let hist = histogram(&api, &with(&[("bucket", "1h"), ("by", "type")])).await;
    let m1 = api.metrics_text().await;
    assert_eq!(
        row_groups(&m1, "statistics") - row_groups(&m0, "statistics"),
        12.0
    );
    assert_eq!(row_groups(&m1, "read") - row_groups(&m0, "read"), 12.0);
    assert_matches_find(&api, KEY, &[], &hist).await;

    // Buckets shorter than a row group, and a consumer filter: decoded, the same counts.
    let hist = histogram(&api, &with(&[("bucket", "5m"), ("consumer", "consumer-2")])).await;
    assert_matches_find(&api, KEY, &[("consumer", "consumer-2")], &hist).await;

    // Across the seam: archive then MongoDB, up to now.
    let from = iso(base - Duration::minutes(30));
    let hist = histogram(
        &api,
        &[
            ("created_from", &from),
            ("bucket", "6h"),
            ("by", "consumer"),
        ],
    )
    .await;
    let tiers = hist["tiers"].as_array().unwrap();
    assert!(
        tiers.contains(&json!("archive")) && tiers.contains(&json!("mongodb")),
        "{hist}"
    );
    assert_eq!(hist["total"], 252, "{hist}");
    assert_matches_find(&api, KEY, &[], &hist).await;

    // A scoped key, no consumer named: its consumers only, in the archive too.
    let (status, hist) = histogram_as(&api, SCOPED, &with(&[("bucket", "1h")])).await;
    assert_eq!(status, 200, "{hist}");
    assert_eq!(hist["total"], 120, "{hist}");
    assert_matches_find(&api, SCOPED, &[], &hist).await;

    assert!(
        service.output().contains("histogram counted the archive"),
        "the debug line says what the archive part did"
    );
}
