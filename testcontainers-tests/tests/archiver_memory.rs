//! The archiver's memory stays bounded by its batch and row-group sizes, not by the size of the
//! events: Arrow batches are cut by bytes (`AUDIT_ARCHIVE_BATCH_MAX_BYTES`, 64 MiB) as well as
//! rows (4,096), which alone would let 4,096 events of 256 KiB hold 1 GiB.

#[path = "support/archiver.rs"]
mod support;

use std::time::Duration;

use mongodb::bson::doc;
use support::{event, hour_days_ago, insert, Archiver};
use testcontainers_tests::mongo::test_mongo;

#[tokio::test]
async fn large_events_are_archived_within_a_documented_memory_bound() {
    let mongo = test_mongo().await;
    // 1,200 events of 200 KiB in one hourly window: 240 MB, under one 4,096-row batch.
    let base = hour_days_ago(2);
    let blob = "x".repeat(200 * 1024);
    let events: Vec<_> = (0..1200)
        .map(|i| {
            event(
                base + chrono::Duration::milliseconds(i * 1000),
                "big",
                "c",
                Some(doc! { "i": i as i32, "blob": &blob }),
            )
        })
        .collect();
    for chunk in events.chunks(50) {
        insert(&mongo, chunk).await;
    }
    drop(events);
    let dir = tempfile::tempdir().expect("tempdir");
    let archiver = Archiver::new(&mongo, &format!("file://{}", dir.path().display()));
    let mut child = archiver
        .command(&["once"])
        .spawn()
        .expect("start the archiver");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(testcontainers_tests::peak_rss(pid).unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "archiver failed: {status:?}");
    println!(
        "1,200 × 200 KiB events archived; archiver peak RSS {} MiB",
        peak >> 20
    );
    assert!(peak > 0, "the archiver's memory was never read");
    assert!(
        peak < 512 * 1024 * 1024,
        "peak RSS {} MiB is over the documented 512 MiB",
        peak >> 20
    );
}
