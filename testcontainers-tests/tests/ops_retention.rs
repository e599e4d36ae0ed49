//! Retention only goes down on purpose: `auditlog-ops retention set` refuses a TTL that would
//! expire events the archiver has not exported (naming the oldest one), `--force` overrides,
//! and `db setup` — run by the chart on every `helm upgrade` — never lowers a TTL.

#[path = "support/ops.rs"]
mod support;

use auditlog_common::schema;
use mongodb::bson::{doc, DateTime, Document};
use support::{event, ops};
use testcontainers_tests::mongo::test_mongo;

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn retention_set_refuses_to_expire_unarchived_events_naming_the_oldest() {
    let mongo = test_mongo().await;
    ops(mongo.env(), &["db", "setup"]).await.success();
    let store = mongo.store().await;
    let ttl_before = schema::current_ttl(&store).await.expect("ttl");

    let now = DateTime::now().timestamp_millis();
    let hour = |ms: i64| ms - ms.rem_euclid(3_600_000);
    // Ten days old and archived; eight days old and not archived; one day old.
    let archived = event("archived-consumer", now - 10 * DAY_MS);
    let oldest_unarchived = event("billing", now - 8 * DAY_MS);
    let recent = event("billing", now - DAY_MS);
    store
        .events()
        .insert_many([archived.clone(), oldest_unarchived.clone(), recent])
        .await
        .expect("insert events");
    let start = hour(now - 10 * DAY_MS);
    store
        .database()
        .collection::<Document>("archive_windows")
        .insert_one(doc! {
            "_id": DateTime::from_millis(start),
            "end": DateTime::from_millis(start + 3_600_000),
            "rows": 1_i64,
        })
        .await
        .expect("crafted archive state");

    let refused = ops(mongo.env(), &["retention", "set", "--days", "7"]).await;
    assert_eq!(refused.code, Some(3), "{refused:#?}");
    let id = oldest_unarchived.get_object_id("_id").expect("id").to_hex();
    assert!(
        refused.stderr.contains(&id),
        "the oldest unarchived event is not named: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("billing"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    let archived_id = archived.get_object_id("_id").expect("id").to_hex();
    assert!(
        !refused.stderr.contains(&archived_id),
        "an archived event was named: {}",
        refused.stderr
    );
    assert_eq!(
        schema::current_ttl(&store).await.expect("ttl"),
        ttl_before,
        "refused, yet changed"
    );

    // Nine days leave the eight-day-old event one day: inside the default one-day margin.
    let refused = ops(mongo.env(), &["retention", "set", "--days", "9"]).await;
    assert_eq!(refused.code, Some(3), "{refused:#?}");
    // ...but not inside a margin of one hour.
    let allowed = ops(
        mongo.env(),
        &["retention", "set", "--days", "9", "--margin", "1h"],
    )
    .await;
    let forced = |run: &support::OpsRun| run.stderr.contains("--force: lowering retention");
    if mongo.server.supports_ttl() {
        let allowed = allowed.success();
        assert!(!forced(&allowed), "{allowed:#?}");
        assert_eq!(
            schema::current_ttl(&store).await.expect("ttl"),
            Some(Some(9 * 86_400))
        );
    } else {
        // Past the archive check, FerretDB then says it has no TTL indexes at all.
        assert_eq!(allowed.code, Some(6), "{allowed:#?}");
    }

    let run = ops(mongo.env(), &["retention", "set", "--days", "7", "--force"]).await;
    assert!(forced(&run), "--force must warn: {run:#?}");
    if mongo.server.supports_ttl() {
        run.success();
        assert_eq!(
            schema::current_ttl(&store).await.expect("ttl"),
            Some(Some(7 * 86_400))
        );
    } else {
        assert_eq!(run.code, Some(6), "{run:#?}");
    }
}

#[tokio::test]
#[ignore = "needs real MongoDB: TTL indexes and collMod"]
async fn db_setup_raises_the_ttl_but_never_lowers_it() {
    let mongo = test_mongo().await;
    assert!(
        mongo.server.supports_ttl(),
        "this test needs a server with TTL indexes (real MongoDB), got {}",
        mongo.server.describe()
    );
    let store = mongo.store().await;
    ops(mongo.env(), &["db", "setup", "--retention-days", "30"])
        .await
        .success();
    // The archiver's guard raises the TTL to 90 days.
    schema::set_ttl(&store, 90 * 86_400).await.expect("collMod");

    // An upgrade re-runs setup with the configured 30 days: the raise stays.
    let run = ops(mongo.env(), &["db", "setup", "--retention-days", "30"])
        .await
        .success();
    assert_eq!(
        schema::current_ttl(&store).await.expect("ttl"),
        Some(Some(90 * 86_400))
    );
    assert!(
        run.stdout.contains("never lowers retention"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("retention set --days N"),
        "{}",
        run.stdout
    );

    // A higher configured value is applied.
    let run = ops(mongo.env(), &["db", "setup", "--retention-days", "120"])
        .await
        .success();
    assert_eq!(
        schema::current_ttl(&store).await.expect("ttl"),
        Some(Some(120 * 86_400))
    );
    assert!(run.stdout.contains("raised TTL"), "{}", run.stdout);
}
