//! Archiver round trip to local files: tricky events go to Parquet and come back — read by
//! pyarrow (and counted by DuckDB) with Hive partitioning — equal to MongoDB's documents
//! field by field, in the documented schema, with `_SUCCESS` markers and no hidden files
//! left behind; `verify` and `status` agree.

#[path = "support/archiver.rs"]
mod support;

use support::*;
use testcontainers_tests::mongo::test_mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_round_trip_local_files_read_back_by_pyarrow_and_duckdb() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &tricky_events(base)).await;
    let expected = mongo_events(&mongo).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    // Small batches and row groups, so files hold several of each.
    let archiver = Archiver::new(&mongo, &url)
        .env("AUDIT_ARCHIVE_BATCH_SIZE", "64")
        .env("AUDIT_ARCHIVE_ROW_GROUP_ROWS", "100");

    archiver.run(&["once"]).expect_code(0);

    let root = dir.path().join(&mongo.db_name).join("events");
    let read = read_with_pyarrow(root.to_str().unwrap(), &[]);
    assert_same_events(&read.rows, &expected, true);

    let schema = &read.meta["schema"];
    assert_eq!(schema["id"], "string");
    assert_eq!(schema["type"], "string");
    assert_eq!(schema["consumer"], "string");
    assert_eq!(schema["created_at"], "timestamp[ms, tz=UTC]");
    assert_eq!(schema["created_at_ms"], "int64");
    assert_eq!(schema["payload"], "string");
    let duck = &read.meta["duckdb"];
    assert_eq!(duck["rows"].as_u64(), Some(expected.len() as u64));
    assert_eq!(duck["distinct_ids"].as_u64(), Some(expected.len() as u64));
    assert_eq!(duck["created_at_type"], "TIMESTAMP WITH TIME ZONE");

    // Three hourly windows → three partitions, each with one deterministic file and _SUCCESS;
    // nothing hidden (temporaries) left.
    let files = files_under(&root);
    let day = |h: i64| (base + chrono::Duration::hours(h)).format("dt=%Y-%m-%d/hour=%H");
    for h in 0..3 {
        let start = (base + chrono::Duration::hours(h)).format("%Y%m%dT%H%M%SZ");
        assert!(
            files.contains(&format!("{}/part-{start}-0000.parquet", day(h))),
            "missing file of hour {h} in {files:?}"
        );
        assert!(files.contains(&format!("{}/_SUCCESS", day(h))), "{files:?}");
    }
    assert_eq!(files.len(), 6, "unexpected files: {files:?}");
    assert!(files
        .iter()
        .all(|f| !f.rsplit('/').next().unwrap().starts_with('.')));

    // State: three windows recorded with rows summing to MongoDB's count.
    let records = window_records(&mongo).await;
    assert_eq!(records.len(), 3);
    let rows: i64 = records.iter().map(|r| r.get_i64("rows").unwrap()).sum();
    assert_eq!(rows as usize, expected.len());
    assert!(records
        .iter()
        .all(|r| r.get_str("checksum").unwrap().len() == 64));

    let verify = archiver.run(&["verify", "--json"]).expect_code(0).json();
    assert_eq!(verify["ok"], 3);

    let status = archiver.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(status["due_windows"], 0);
    assert_eq!(status["archived_windows"], 3);
    assert_eq!(
        status["last_archived_window"]["end"]
            .as_str()
            .map(|s| s.to_owned()),
        Some(
            (base + chrono::Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );

    // A file changed behind the archiver's back is caught by verify (exit 6).
    let first = root.join(format!(
        "{}/part-{}-0000.parquet",
        day(0),
        base.format("%Y%m%dT%H%M%SZ")
    ));
    let mut bytes = std::fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let ran = archiver.run(&["verify"]).expect_code(6);
    assert!(ran.stdout().contains("MISMATCH"), "{}", ran.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_zstd_and_bad_settings() {
    let mongo = test_mongo().await;
    insert(&mongo, &tricky_events(hour_days_ago(2))[..20]).await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap());

    let bad = archiver
        .run(&["--archive-window", "7m", "once"])
        .expect_code(2);
    assert!(
        bad.stderr().contains("AUDIT_ARCHIVE_WINDOW"),
        "{}",
        bad.stderr()
    );
    let bad = Archiver::new(&mongo, "ftp://nowhere/x")
        .run(&["once"])
        .expect_code(2);
    assert!(
        bad.stderr().contains("unsupported scheme"),
        "{}",
        bad.stderr()
    );

    let archiver = archiver.env("AUDIT_ARCHIVE_COMPRESSION", "zstd");
    archiver.run(&["once"]).expect_code(0);
    let root = dir.path().join(&mongo.db_name).join("events");
    let read = read_with_pyarrow(root.to_str().unwrap(), &[]);
    assert_same_events(&read.rows, &mongo_events(&mongo).await, true);
}
