//! The service's `/metrics` carries what alerting on the archive needs, read from MongoDB:
//! the age of the oldest unarchived event, the TTL headroom, and the archiver's last successful
//! run with its schedule period — so the alerts work in CronJob mode, where nobody scrapes the
//! archiver.

#[path = "support/service.rs"]
mod support;

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use support::{start_service, Api};
use testcontainers_tests::mongo::test_mongo;

/// The value of an unlabelled metric in the Prometheus text, if present.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| match v {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse().ok(),
        })
}

#[tokio::test]
async fn metrics_report_the_oldest_unarchived_event_the_ttl_headroom_and_the_last_run() {
    let mongo = test_mongo().await;
    let store = mongo.store().await;
    let inserted = std::time::Instant::now();
    let now = DateTime::now().timestamp_millis();
    let hour = 3_600_000;
    let aligned = now - now.rem_euclid(hour);
    // An archived window five hours ago (its event too), and an unarchived event two hours ago.
    store
        .events()
        .insert_many([
            doc! { "_id": ObjectId::new(), "type": "t", "consumer": "c", "created_at": DateTime::from_millis(aligned - 5 * hour + 10) },
            doc! { "_id": ObjectId::new(), "type": "t", "consumer": "c", "created_at": DateTime::from_millis(now - 2 * hour) },
        ])
        .await
        .expect("events");
    store
        .database()
        .collection::<Document>("archive_windows")
        .insert_one(doc! { "_id": DateTime::from_millis(aligned - 5 * hour), "end": DateTime::from_millis(aligned - 4 * hour) })
        .await
        .expect("window");
    let last_run = now - 30 * 60_000;
    store
        .database()
        .collection::<Document>("archive_runs")
        .insert_one(doc! {
            "_id": format!("{}.events", mongo.db_name),
            "last_success_at": DateTime::from_millis(last_run),
            "schedule_period_seconds": 86_400_i64,
        })
        .await
        .expect("runs");

    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);
    let mut text = String::new();
    for _ in 0..100 {
        text = api.metrics_text().await;
        if value(&text, "auditlog_archive_watch_last_read_timestamp_seconds").unwrap_or(0.0) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let age = value(&text, "auditlog_archive_oldest_unarchived_age_seconds").expect(&text);
    // Two hours old when inserted, plus however long building and starting the service took.
    let upper = 7_200.0 + inserted.elapsed().as_secs_f64() + 5.0;
    assert!(
        (7_195.0..upper).contains(&age),
        "the unarchived event is two hours old, got {age}: {text}"
    );
    let headroom = value(&text, "auditlog_archive_ttl_headroom_seconds").expect("headroom");
    if mongo.server.supports_ttl() {
        // The service created the TTL index with the default 30 days.
        let expected = 30.0 * 86_400.0 - age;
        assert!(
            (headroom - expected).abs() < 120.0,
            "headroom {headroom}, expected about {expected}"
        );
    } else {
        assert_eq!(headroom, f64::INFINITY, "no TTL index: nothing expires");
    }
    let last = value(&text, "auditlog_archive_last_success_timestamp_seconds").expect("last run");
    assert_eq!(
        last,
        (last_run / 1000) as f64 + (last_run % 1000) as f64 / 1000.0
    );
    assert_eq!(
        value(&text, "auditlog_archive_schedule_period_seconds"),
        Some(86_400.0)
    );
    assert_eq!(
        value(&text, "auditlog_write_queue_capacity").map(|v| v > 0.0),
        Some(true)
    );
}

/// `AUDIT_ARCHIVE_WATCH_SECS=0` turns the reads off: the service serves, and the figures say
/// they were never read.
#[tokio::test]
async fn the_archive_state_is_not_read_when_the_watch_is_off() {
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[("AUDIT_ARCHIVE_WATCH_SECS", "0")]).await;
    let api = Api::new(&service);
    let (status, _) = api
        .post_event(&serde_json::json!({"type": "t", "consumer": "c"}))
        .await;
    assert_eq!(status, 201);
    // A read starts with the service; give one the time it took in the test above.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = api.metrics_text().await;
    assert_eq!(
        value(&text, "auditlog_archive_watch_last_read_timestamp_seconds"),
        Some(0.0),
        "{text}"
    );
}
