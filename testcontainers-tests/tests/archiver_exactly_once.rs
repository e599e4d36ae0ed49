//! Exactly once: rerunning `once`, overlapping `backfill`, and SIGKILL at several moments
//! followed by a rerun all leave every event in the archive exactly once, and readers never
//! see a partial file. A held lease keeps a second archiver out.

#[path = "support/archiver.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::Duration as Span;
use mongodb::bson::{self, doc};
use support::*;
use testcontainers_tests::mongo::test_mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_rerun_and_overlapping_backfill_write_no_duplicates() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &tricky_events(base)).await;
    let expected = mongo_events(&mongo).await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap());
    let root = dir.path().join(&mongo.db_name).join("events");

    // Backfill of the middle window first, then `once` for everything due, then both again.
    let from = (base + Span::hours(1)).to_rfc3339();
    let to = (base + Span::hours(2)).to_rfc3339();
    archiver
        .run(&["backfill", "--from", &from, "--to", &to])
        .expect_code(0);
    assert_eq!(window_records(&mongo).await.len(), 1);
    archiver.run(&["once"]).expect_code(0);
    let files_after_first = files_under(&root);
    let records_after_first = window_records(&mongo).await;
    archiver.run(&["once"]).expect_code(0);
    let whole = (base - Span::hours(5)).to_rfc3339();
    let end = (base + Span::hours(6)).to_rfc3339();
    archiver
        .run(&["backfill", "--from", &whole, "--to", &end])
        .expect_code(0);

    let read = read_with_pyarrow(root.to_str().unwrap(), &[]);
    assert_same_events(&read.rows, &expected, true);
    assert_eq!(files_under(&root), files_after_first);
    // Reruns skipped recorded windows: their records (and archive times) are unchanged.
    assert_eq!(window_records(&mongo).await, records_after_first);

    // A window that has not ended yet is refused by backfill, not half-archived.
    insert(&mongo, &[event(chrono::Utc::now(), "now", "c", None)]).await;
    let now_from = (chrono::Utc::now() - Span::minutes(1)).to_rfc3339();
    let now_to = (chrono::Utc::now() + Span::hours(2)).to_rfc3339();
    archiver
        .run(&["backfill", "--from", &now_from, "--to", &now_to])
        .expect_code(0);
    assert_eq!(window_records(&mongo).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_killed_at_any_moment_then_rerun_archives_exactly_once() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(2);
    let mut docs = vec![];
    for i in 0..9_000i64 {
        // Three hourly windows, 3,000 events each, with a payload worth compressing.
        docs.push(event(
            base + Span::milliseconds(i * 1_200),
            "kill.test",
            &format!("consumer-{}", i % 13),
            Some(doc! { "i": i, "text": format!("event number {i} with some text to encode") }),
        ));
    }
    insert(&mongo, &docs).await;
    let expected = mongo_events(&mongo).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(&mongo.db_name).join("events");
    // Small batches, row groups and files: many publish steps to interrupt; short lease so a
    // killed archiver blocks the rerun only briefly.
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_ARCHIVE_BATCH_SIZE", "100")
        .env("AUDIT_ARCHIVE_ROW_GROUP_ROWS", "500")
        .env("AUDIT_ARCHIVE_MAX_FILE_ROWS", "1000")
        .env("AUDIT_ARCHIVE_LEASE_TTL", "5s");
    // Build before timing anything.
    testcontainers_tests::binary::build("auditlog-archiver");

    let mut kills = 0;
    // Early kills first: a run that resumes after a kill has less left to do and may finish
    // within the later delays, so the early ones make sure it is interrupted several times.
    for delay_ms in [100u64, 250, 500, 900, 1_500, 2_500, 4_000] {
        let mut child = archiver.command(&["once"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        // Whatever is visible now reads as complete Parquet with no duplicates.
        if root.exists() {
            let visible = read_with_pyarrow(root.to_str().unwrap(), &[]);
            let mut ids: Vec<_> = visible.rows.iter().map(|r| r["id"].clone()).collect();
            let n = ids.len();
            ids.sort_by_key(|v| v.to_string());
            ids.dedup();
            assert_eq!(
                ids.len(),
                n,
                "duplicates visible after a kill at {delay_ms} ms"
            );
        }
        wait_for_lease_expiry(&mongo).await;
    }
    assert!(
        kills >= 2,
        "the archiver finished too fast to be interrupted"
    );

    archiver.run(&["once"]).expect_code(0);
    let read = read_with_pyarrow(root.to_str().unwrap(), &[]);
    assert_same_events(&read.rows, &expected, true);
    let files = files_under(&root);
    assert!(
        files
            .iter()
            .all(|f| !f.rsplit('/').next().unwrap().starts_with('.')),
        "temporaries left behind: {files:?}"
    );
    // 3,000 events per window with at most 1,000 per file: exactly 3 files per partition.
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".parquet")).count(),
        9,
        "{files:?}"
    );
    assert_eq!(window_records(&mongo).await.len(), 3);
    archiver.run(&["verify"]).expect_code(0);
}

async fn wait_for_lease_expiry(mongo: &testcontainers_tests::mongo::TestMongo) {
    let store = mongo.store().await;
    let lease = store
        .database()
        .collection::<mongodb::bson::Document>("archive_lease");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let held = lease
            .find_one(doc! { "expires_at": { "$gt": bson::DateTime::now() } })
            .await
            .unwrap();
        if held.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("lease did not expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_held_lease_keeps_a_second_archiver_out() {
    let mongo = test_mongo().await;
    insert(&mongo, &tricky_events(hour_days_ago(2))[..10]).await;
    let store = mongo.store().await;
    let key = format!("{}.events", mongo.db_name);
    store
        .database()
        .collection::<mongodb::bson::Document>("archive_lease")
        .insert_one(doc! {
            "_id": &key, "owner": "other-host:1:abc",
            "expires_at": bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 600_000),
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap());
    let ran = archiver.run(&["once"]).expect_code(5);
    assert!(
        ran.stderr().contains("other-host:1:abc"),
        "{}",
        ran.stderr()
    );
    assert!(window_records(&mongo).await.is_empty());
    assert!(files_under(dir.path()).is_empty());

    // Once the other archiver's lease has expired, this one takes over.
    store
        .database()
        .collection::<mongodb::bson::Document>("archive_lease")
        .update_one(
            doc! { "_id": &key },
            doc! { "$set": { "expires_at": bson::DateTime::from_millis(0) } },
        )
        .await
        .unwrap();
    archiver.run(&["once"]).expect_code(0);
    // The first ten tricky events span three hourly windows.
    assert_eq!(window_records(&mongo).await.len(), 3);
}
