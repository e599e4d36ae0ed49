//! The round trip to a real HDFS — Hadoop's MiniDFSCluster started by infra/dev/hdfs.sh — with
//! the files read back by Hadoop's own Parquet reader (parquet-hadoop), so we know Hadoop
//! reads what we write: every event once, field by field equal to MongoDB, TIMESTAMP(MILLIS,
//! UTC) for `created_at`, no temporaries left, `_SUCCESS` per partition.

#[path = "support/archiver.rs"]
mod support;

use support::*;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::tools::hdfs_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_round_trip_hdfs_read_back_by_parquet_hadoop() {
    let url = hdfs_url();
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &tricky_events(base)).await;
    let expected = mongo_events(&mongo).await;

    let archive = format!("{url}/auditlog-{}", mongo.db_name);
    let archiver = Archiver::new(&mongo, &archive).env("AUDIT_ARCHIVE_BATCH_SIZE", "50");
    archiver.run(&["once"]).expect_code(0);
    archiver.run(&["once"]).expect_code(0);

    let root = format!("{archive}/{}/events", mongo.db_name);
    let read = read_with_hadoop(&root);
    assert_same_events(&read.rows, &expected, false);
    let info = read.meta.as_str().unwrap_or_default().to_owned();
    assert!(
        info.contains("\"files\": 3") || info.contains("\"files\":3"),
        "expected 3 files read by parquet-hadoop:\n{info}"
    );
    assert!(
        info.contains("TIMESTAMP(MILLIS,true)"),
        "created_at is not TIMESTAMP(MILLIS, UTC) for Hadoop:\n{info}"
    );

    let verify = archiver.run(&["verify", "--json"]).expect_code(0).json();
    assert_eq!(verify["ok"], 3);
    let status = archiver.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(status["due_windows"], 0);
}
