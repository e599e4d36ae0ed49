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

/// docs/integrity.md on HDFS: a signed archive of two runs verifies clean with its public key,
/// and with another key each digest is named as signed by an unknown key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_signed_archive_on_hdfs_verifies() {
    let url = hdfs_url();
    let mongo = test_mongo().await;
    let keys = tempfile::tempdir().unwrap();
    let archive = format!("{url}/auditlog-signed-{}", mongo.db_name);
    let archiver = Archiver::new(&mongo, &archive);
    archiver
        .run(&["keys", "new", "--out", keys.path().to_str().unwrap()])
        .expect_code(0);
    let key = keys.path().join("archive-signing.key");
    let public = keys.path().join("archive-signing.pub");
    let archiver = archiver.env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", key.to_str().unwrap());
    for days in [4, 3] {
        insert(&mongo, &[event(hour_days_ago(days), "login", "web", None)]).await;
        archiver.run(&["once"]).expect_code(0);
    }
    let ok = archiver
        .run(&["verify", "--public-key", public.to_str().unwrap()])
        .expect_code(0)
        .stdout();
    assert!(ok.starts_with("ok: 2 digests"), "{ok}");
    // Another key is not the archive's: every digest is named.
    let other = tempfile::tempdir().unwrap();
    archiver
        .run(&["keys", "new", "--out", other.path().to_str().unwrap()])
        .expect_code(0);
    let out = archiver
        .run(&[
            "verify",
            "--public-key",
            other.path().join("archive-signing.pub").to_str().unwrap(),
        ])
        .expect_code(1)
        .stdout();
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("unknown key: "))
            .count(),
        2,
        "{out}"
    );
}
