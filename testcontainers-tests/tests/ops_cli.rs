//! `auditlog-ops` end to end: the real binary against the harness's MongoDB (FerretDB here,
//! real MongoDB where `MONGODB_URI` or Docker provides one) — `db setup`, `status`,
//! `retention set`, and bootstrap's failure reports.

#[path = "support/ops.rs"]
mod support;

use auditlog_common::schema;
use mongodb::bson::{doc, DateTime};
use support::ops;
use testcontainers_tests::free_port;
use testcontainers_tests::mongo::test_mongo;

#[tokio::test]
async fn db_setup_creates_the_indexes_says_what_it_skipped_and_a_rerun_changes_nothing() {
    let mongo = test_mongo().await;
    let first = ops(mongo.env(), &["db", "setup"]).await.success();
    assert!(
        first
            .stdout
            .contains("sharding skipped: the server is not a mongos"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("created index"), "{}", first.stdout);

    let store = mongo.store().await;
    let indexes = schema::existing_indexes(&store).await.expect("indexes");
    for key in schema::query_indexes()
        .into_iter()
        .chain([schema::ttl_index_key()])
    {
        assert!(
            indexes.iter().any(|(k, _)| *k == key),
            "index {key} missing after db setup: {indexes:?}"
        );
    }
    let ttl = schema::current_ttl(&store).await.expect("ttl");
    if mongo.server.supports_ttl() {
        assert_eq!(ttl, Some(Some(30 * 86_400)), "default retention is 30 days");
    } else {
        assert_eq!(ttl, Some(None));
        assert!(
            first.stdout.contains("server has no TTL indexes"),
            "{}",
            first.stdout
        );
    }

    let second = ops(mongo.env(), &["db", "setup"]).await.success();
    assert!(
        !second.stdout.contains("created index") && !second.stdout.contains("sharded collection"),
        "a re-run created something: {}",
        second.stdout
    );
    assert!(
        second.stdout.contains("already present"),
        "{}",
        second.stdout
    );
    let after = schema::existing_indexes(&store).await.expect("indexes");
    assert_eq!(after.len(), indexes.len());
}

#[tokio::test]
async fn status_reports_indexes_ttl_and_the_archivers_lag() {
    let mongo = test_mongo().await;
    ops(mongo.env(), &["db", "setup"]).await.success();

    let run = ops(mongo.env(), &["status", "--json"]).await.success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json");
    assert_eq!(
        report["namespace"],
        format!("{}.events", mongo.db_name),
        "{report:#}"
    );
    assert_eq!(report["archive"]["note"], "no archive recorded");
    assert!(report["archive"]["lag_seconds"].is_null());
    let keys: Vec<&str> = report["indexes"]
        .as_array()
        .expect("indexes")
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.contains("consumer") && k.contains("created_at")),
        "{keys:?}"
    );
    if mongo.server.supports_ttl() {
        assert_eq!(report["ttl_seconds"], 30 * 86_400);
    } else {
        assert!(report["ttl"]
            .as_str()
            .is_some_and(|t| t.contains("no TTL indexes")));
    }

    // The archiver's record of a window that ended an hour ago.
    let now = DateTime::now().timestamp_millis();
    let end = DateTime::from_millis(now - 3_600_000);
    mongo
        .store()
        .await
        .database()
        .collection("archive_windows")
        .insert_one(doc! {
            "_id": DateTime::from_millis(now - 7_200_000),
            "end": end,
            "rows": 10_i64,
            "files": 1,
            "archived_at": DateTime::from_millis(now - 60_000),
        })
        .await
        .expect("insert archive window");

    let run = ops(mongo.env(), &["status", "--json"]).await.success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json");
    let lag = report["archive"]["lag_seconds"].as_i64().expect("lag");
    assert!(
        (3_595..3_700).contains(&lag),
        "lag {lag} s, expected about an hour"
    );

    let text = ops(mongo.env(), &["status"]).await.success();
    assert!(
        text.stdout.contains("archive:     archived up to"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("indexes:"), "{}", text.stdout);
}

#[tokio::test]
async fn retention_set_changes_the_ttl_or_says_the_server_has_none() {
    let mongo = test_mongo().await;
    ops(mongo.env(), &["db", "setup"]).await.success();
    let run = ops(mongo.env(), &["retention", "set", "--days", "7"]).await;
    let store = mongo.store().await;
    if mongo.server.supports_ttl() {
        let run = run.success();
        assert!(run.stdout.contains("to 7 d"), "{}", run.stdout);
        assert_eq!(
            schema::current_ttl(&store).await.expect("ttl"),
            Some(Some(7 * 86_400))
        );
    } else {
        assert_eq!(run.code, Some(6), "{run:#?}");
        assert!(run.stderr.contains("no TTL indexes"), "{}", run.stderr);
        assert_eq!(schema::current_ttl(&store).await.expect("ttl"), Some(None));
    }
}

#[tokio::test]
async fn retention_of_zero_days_is_refused_with_the_reason() {
    let mongo = test_mongo().await;
    let run = ops(mongo.env(), &["retention", "set", "--days", "0"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--days"), "{}", run.stderr);
}

#[tokio::test]
async fn bootstrap_gives_up_at_the_deadline_naming_the_members_that_do_not_answer() {
    let mongo = test_mongo().await;
    let (a, b) = (free_port(), free_port());
    let config = format!("--config-replset=cfg/127.0.0.1:{a},127.0.0.1:{b}");
    let shard = format!("--shard-replset=s0/127.0.0.1:{}", free_port());
    // Build first, so the clock below measures the run only.
    ops(mongo.env(), &["--version"]).await.success();
    let started = std::time::Instant::now();
    let run = ops(
        mongo.env(),
        &["cluster", "bootstrap", &config, &shard, "--deadline=4s"],
    )
    .await;
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stderr.contains("replica set cfg"),
        "the failing step is not named: {}",
        run.stderr
    );
    for port in [a, b] {
        assert!(
            run.stderr.contains(&format!("127.0.0.1:{port}")),
            "member :{port} not named: {}",
            run.stderr
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// The first `host:port` of a `mongodb://` URI (credentials and options left out).
fn first_host(uri: &str) -> String {
    let rest = uri.trim_start_matches("mongodb://");
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = hosts.rsplit('@').next().unwrap_or_default();
    let host = hosts.split(',').next().unwrap_or_default();
    assert!(!host.is_empty(), "no host:port in the URI {uri}");
    host.to_owned()
}

#[test]
fn first_host_leaves_out_credentials_other_hosts_and_options() {
    assert_eq!(first_host("mongodb://127.0.0.1:27017/"), "127.0.0.1:27017");
    assert_eq!(
        first_host("mongodb://u:p@a:1,b:2/admin?replicaSet=rs0"),
        "a:1"
    );
    assert_eq!(first_host("mongodb://h:3?directConnection=true"), "h:3");
}

#[tokio::test]
async fn bootstrap_refuses_a_server_that_cannot_be_a_replica_set_member() {
    let mongo = test_mongo().await;
    let server = mongo.server.describe();
    let member = first_host(&mongo.uri);
    let run = ops(
        mongo.env(),
        &[
            "cluster",
            "bootstrap",
            &format!("--config-replset=cfg/{member}"),
            &format!("--shard-replset=s0/{member}"),
            "--deadline=60s",
        ],
    )
    .await;
    match &mongo.server.replica_set {
        // No replica set configured, so bootstrap sends `replSetInitiate`, which every such
        // server refuses for good: FerretDB and mongos have no such command, a standalone
        // mongod answers NoReplicationEnabled. Refused (5) at once, not retried to the deadline.
        None => {
            assert_eq!(run.code, Some(5), "{server}: {run:#?}");
            assert!(
                run.stderr.contains("replSetInitiate"),
                "{server}: {}",
                run.stderr
            );
        }
        // A member of another replica set: bootstrap will not take it over (configuration, 3).
        Some(rs) => {
            assert_eq!(run.code, Some(3), "{server}: {run:#?}");
            assert!(
                run.stderr
                    .contains(&format!("belongs to replica set {rs}, not cfg")),
                "{server}: {}",
                run.stderr
            );
        }
    }
}

#[tokio::test]
async fn bootstrap_with_an_unreadable_keyfile_is_a_configuration_error() {
    let mongo = test_mongo().await;
    let run = ops(
        mongo.env(),
        &[
            "--keyfile=/nonexistent/keyfile",
            "cluster",
            "bootstrap",
            "--config-replset=cfg/127.0.0.1:1",
            "--shard-replset=s0/127.0.0.1:2",
        ],
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("cannot read keyfile /nonexistent/keyfile"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_missing_tls_file_is_a_configuration_error_not_a_timeout() {
    let mongo = test_mongo().await;
    let run = ops(
        mongo.env(),
        &["status", "--tls-ca-file=/nonexistent/ca.crt"],
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("cannot read TLS file /nonexistent/ca.crt"),
        "{}",
        run.stderr
    );
}
