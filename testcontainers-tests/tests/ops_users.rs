//! Least privilege: `auditlog-ops db users` creates the service's and the archiver's custom
//! roles and users once (a re-run creates nothing), says so where the server has no role
//! management (FerretDB), and — on real MongoDB with authorization — each user can do its job
//! and nothing more.

#[path = "support/ops.rs"]
mod support;

use mongodb::bson::{doc, DateTime, Document};
use support::{event, ops};
use testcontainers_tests::mongo::test_mongo;

#[tokio::test]
async fn db_users_creates_the_component_roles_and_users_once_or_says_the_server_has_no_roles() {
    let mongo = test_mongo().await;
    let none = ops(mongo.env(), &["db", "users"]).await;
    assert_eq!(none.code, Some(3), "no user given: {none:#?}");
    let args = [
        "db",
        "users",
        "--service-username",
        "svc-test",
        "--service-password",
        "svc-pw",
        "--archiver-username",
        "arc-test",
        "--archiver-password",
        "arc-pw",
    ];
    let first = ops(mongo.env(), &args).await;
    if mongo.is_ferretdb() {
        assert_eq!(first.code, Some(6), "{first:#?}");
        assert!(
            first.stderr.contains("no role management"),
            "{}",
            first.stderr
        );
    } else {
        let first = first.success();
        assert!(
            first.stdout.contains("created role auditlogService"),
            "{}",
            first.stdout
        );
        assert!(
            first.stdout.contains("created service user svc-test"),
            "{}",
            first.stdout
        );
        let again = ops(mongo.env(), &args).await.success();
        assert!(
            !again.stdout.contains("created"),
            "a re-run created something: {}",
            again.stdout
        );
    }
}

/// A database handle of the test's MongoDB, logged in as `user`.
async fn as_user(uri: &str, db: &str, user: &str, pwd: &str) -> mongodb::Database {
    let mut options = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("uri");
    options.credential = Some(
        mongodb::options::Credential::builder()
            .username(user.to_owned())
            .password(pwd.to_owned())
            .source("admin".to_owned())
            .build(),
    );
    mongodb::Client::with_options(options)
        .expect("client")
        .database(db)
}

#[tokio::test]
#[ignore = "needs real MongoDB with authorization enabled: roles and their privileges"]
async fn component_users_can_do_their_job_and_nothing_more() {
    let mongo = test_mongo().await;
    mongo.assert_real_mongodb("roles and privileges enforced by authorization");
    ops(mongo.env(), &["db", "setup"]).await.success();
    let (svc, arc) = (
        format!("svc-{}", mongo.db_name),
        format!("arc-{}", mongo.db_name),
    );
    ops(
        mongo.env(),
        &[
            "db",
            "users",
            "--service-username",
            &svc,
            "--service-password",
            "svc-pw-1",
            "--archiver-username",
            &arc,
            "--archiver-password",
            "arc-pw-1",
        ],
    )
    .await
    .success();
    let service = as_user(&mongo.uri, &mongo.db_name, &svc, "svc-pw-1").await;
    let events = service.collection::<Document>("events");
    events
        .insert_one(event("c", DateTime::now().timestamp_millis()))
        .await
        .expect("service inserts");
    events.find_one(doc! {}).await.expect("service finds");
    let refused = service
        .run_command(doc! { "collMod": "events", "index": { "keyPattern": { "created_at": 1 }, "expireAfterSeconds": 60 } })
        .await
        .expect_err("the service must not change retention");
    assert_eq!(
        auditlog_common::error::server_error_code(&refused),
        Some(13),
        "{refused}"
    );
    events
        .delete_many(doc! {})
        .await
        .expect_err("the service must not delete events");

    let archiver = as_user(&mongo.uri, &mongo.db_name, &arc, "arc-pw-1").await;
    archiver
        .run_command(doc! { "collMod": "events", "index": { "keyPattern": { "created_at": 1 }, "expireAfterSeconds": 90 * 86_400 } })
        .await
        .expect("the archiver's guard may raise the TTL");
    archiver
        .collection::<Document>("events")
        .delete_many(doc! {})
        .await
        .expect_err("the archiver must not delete events");
    archiver
        .collection::<Document>("archive_runs")
        .insert_one(doc! { "_id": "x" })
        .await
        .expect("archiver writes its state");
}
