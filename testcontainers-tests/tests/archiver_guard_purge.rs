//! The TTL guard on a crafted state — on a server without TTL indexes (FerretDB) it guards
//! the retention horizon and triggers (loud error, `status` shows it; `once`, which archives
//! the event at risk, exits 0 on the state it leaves); on a
//! server with TTL indexes but none on the collection nothing expires and it stays silent; on
//! real MongoDB with a TTL index it raises the TTL with collMod — and `purge` deletes only
//! windows that are archived, still verify, hold the archived count, and are older than the
//! retention.

#[path = "support/archiver.rs"]
mod support;

use chrono::{Duration, Utc};
use mongodb::bson::doc;
use support::*;
use testcontainers_tests::mongo::test_mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_ttl_guard_triggers_when_unarchived_events_near_expiry() {
    let mongo = test_mongo().await;
    // What expires, per archiver/src/guard.rs: with no TTL index on the collection, a server
    // without TTL indexes (FerretDB) expires events at AUDIT_RETENTION_DAYS (`purge`), so the
    // guard watches that horizon; a server with TTL indexes (real MongoDB) expires nothing
    // without the index, so there is nothing to guard.
    let expect_guard = !mongo.server.supports_ttl();
    let expect_source = if expect_guard { "retention" } else { "none" };
    let server = mongo.server.describe();
    // Retention 1 day, safety margin 6 h: an event created 20 h ago expires in 4 h.
    let old = Utc::now() - Duration::hours(20);
    insert(
        &mongo,
        &[event(old, "near.expiry", "c", Some(doc! { "k": 1 }))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_RETENTION_DAYS", "1")
        .env("AUDIT_ARCHIVE_AFTER", "1h")
        .env("AUDIT_ARCHIVE_SAFETY_MARGIN", "6h");

    let status = archiver.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(
        status["guard"]["triggered"], expect_guard,
        "{server}: {status}"
    );
    assert_eq!(
        status["guard"]["ttl_source"], expect_source,
        "{server}: {status}"
    );
    if expect_guard {
        let left = status["guard"]["seconds_left"].as_i64().unwrap();
        assert!((3 * 3600..=4 * 3600 + 60).contains(&left), "{left}");
    } else {
        assert!(
            status["guard"]["seconds_left"].is_null(),
            "{server}: {status}"
        );
    }
    assert_eq!(status["due_windows"], 1);
    let text = archiver.run(&["status"]).expect_code(0).stdout();
    assert_eq!(
        text.contains("TTL GUARD TRIGGERED"),
        expect_guard,
        "{server}: {text}"
    );

    // The guard does not stop the archiving itself: the window is archived, and with it the
    // event at risk, so the run succeeded (exit 0) — saying loudly what was at risk before it.
    // (exit_paths.rs: a run that leaves an event at risk exits 4.)
    let ran = archiver.run(&["once"]).expect_code(0);
    assert_eq!(
        ran.stderr().contains("TTL GUARD"),
        expect_guard,
        "{server}: {}",
        ran.stderr()
    );
    assert_eq!(window_records(&mongo).await.len(), 1);
    let status = archiver.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(status["guard"]["triggered"], false, "{status}");
    archiver.run(&["once"]).expect_code(0);

    // With a comfortable margin nothing triggers.
    let relaxed = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_RETENTION_DAYS", "30")
        .env("AUDIT_ARCHIVE_AFTER", "1h");
    insert(&mongo, &[event(old - Duration::hours(2), "x", "c", None)]).await;
    relaxed.run(&["once"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real MongoDB: TTL index raised with collMod"]
async fn archiver_ttl_guard_raises_the_ttl_index_on_real_mongodb() {
    let mongo = test_mongo().await;
    mongo.assert_real_mongodb("TTL index raised with collMod");
    let store = mongo.store().await;
    auditlog_common::schema::ensure_storage(
        &store,
        &mongo.server,
        auditlog_common::schema::Retention::from_days(1),
    )
    .await
    .unwrap();
    insert(
        &mongo,
        &[event(Utc::now() - Duration::hours(20), "t", "c", None)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_ARCHIVE_AFTER", "1h")
        .env("AUDIT_ARCHIVE_SAFETY_MARGIN", "6h");
    // Raised before the run archives the event; the run then leaves nothing at risk: exit 0.
    let ran = archiver.run(&["once"]).expect_code(0);
    assert!(ran.stderr().contains("TTL GUARD"), "{}", ran.stderr());
    let ttl = auditlog_common::schema::current_ttl(&store)
        .await
        .unwrap()
        .flatten()
        .unwrap();
    assert!(ttl >= 20 * 3600 + 12 * 3600, "TTL not raised: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_purge_deletes_only_archived_verified_windows_past_retention() {
    let mongo = test_mongo().await;
    let a = hour_days_ago(4); // archived, past retention: purged
    let b = hour_days_ago(3); // archived, then a late event arrives: kept
    let c = hour_days_ago(5); // archived, then its file disappears: kept
    let d = hour_days_ago(1); // archived, younger than retention: kept
    let e = hour_days_ago(6); // written after the archive run: never archived, kept
    let mut docs = vec![];
    for (base, n) in [(a, 5), (b, 4), (c, 3), (d, 2)] {
        for i in 0..n {
            docs.push(event(base + Duration::seconds(i), "p", "c", None));
        }
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_RETENTION_DAYS", "2")
        .env("AUDIT_ARCHIVE_AFTER", "1h");
    // Archived with a 30-day retention: with 2 days the TTL guard would (rightly) fail the run.
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "30")
        .run(&["once"])
        .expect_code(0);
    assert_eq!(window_records(&mongo).await.len(), 4);

    insert(
        &mongo,
        &[event(b + Duration::minutes(30), "late", "c", None)],
    )
    .await;
    insert(&mongo, &[event(e, "unarchived", "c", None)]).await;
    let root = dir.path().join(&mongo.db_name).join("events");
    let c_file = root.join(format!(
        "{}/part-{}-0000.parquet",
        c.format("dt=%Y-%m-%d/hour=%H"),
        c.format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::remove_file(&c_file).unwrap();

    let dry = archiver.run(&["purge", "--dry-run"]).expect_code(0).json();
    assert_eq!(dry["purged_windows"], 1, "{dry}");
    assert_eq!(
        count_in_mongo(&mongo, a, a + Duration::hours(1)).await,
        5,
        "dry run deleted events"
    );

    let report = archiver.run(&["purge"]).expect_code(0).json();
    assert_eq!(report["purged_windows"], 1, "{report}");
    assert_eq!(report["purged_rows"], 5);
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains(&b.format("%Y%m%dT%H%M%SZ").to_string()),
        "{skipped}"
    );
    assert!(
        skipped.contains(&c.format("%Y%m%dT%H%M%SZ").to_string()),
        "{skipped}"
    );
    assert_eq!(count_in_mongo(&mongo, a, a + Duration::hours(1)).await, 0);
    assert_eq!(count_in_mongo(&mongo, b, b + Duration::hours(1)).await, 5);
    assert_eq!(count_in_mongo(&mongo, c, c + Duration::hours(1)).await, 3);
    assert_eq!(count_in_mongo(&mongo, d, d + Duration::hours(1)).await, 2);
    assert_eq!(count_in_mongo(&mongo, e, e + Duration::hours(1)).await, 1);
    let records = window_records(&mongo).await;
    let purged: Vec<_> = records
        .iter()
        .filter(|r| r.contains_key("purged_at"))
        .collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].get_i64("purged_rows").unwrap(), 5);

    // Purging again deletes nothing more; with retention 0 it refuses.
    let again = archiver.run(&["purge"]).expect_code(0).json();
    assert_eq!(again["purged_windows"], 0);
    archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "0")
        .run(&["purge"])
        .expect_code(2);
}
