//! Tests of the harness itself, and of the service binary answering `/healthz` on the
//! harness's MongoDB.

use std::time::Duration;

use mongodb::bson::doc;
use testcontainers_tests::binary::Spawn;
use testcontainers_tests::mongo::{test_mongo, Backend};

#[tokio::test]
async fn a_document_written_through_one_connection_is_read_through_another() {
    let mongo = test_mongo().await;
    let writer = mongo.store().await;
    writer
        .events()
        .insert_one(doc! { "type": "t1", "consumer": "c1", "n": 42 })
        .await
        .expect("insert");
    drop(writer);

    let reader = mongo.store().await;
    let found = reader
        .events()
        .find_one(doc! { "consumer": "c1" })
        .await
        .expect("find")
        .expect("the inserted document");
    assert_eq!(found.get_str("type").ok(), Some("t1"));
    assert_eq!(found.get_i32("n").ok(), Some(42));
}

#[tokio::test]
async fn two_tests_get_different_databases() {
    let (a, b) = tokio::join!(test_mongo(), test_mongo());
    assert_ne!(a.db_name, b.db_name);
    a.store()
        .await
        .events()
        .insert_one(doc! { "only": "in a" })
        .await
        .expect("insert");
    let in_b = b
        .store()
        .await
        .events()
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(
        in_b, 0,
        "a document written to one test's database is visible in another's"
    );
}

#[tokio::test]
async fn the_ferretdb_it_started_is_gone_after_the_test() {
    let mongo = test_mongo().await;
    let Some(ferret) = mongo.ferretdb() else {
        println!(
            "SKIPPED the_ferretdb_it_started_is_gone_after_the_test: the harness used {:?}, not a FerretDB of its own",
            mongo.backend
        );
        return;
    };
    assert_eq!(mongo.backend, Backend::FerretDb);
    let (pid, port) = (ferret.pid(), ferret.port());
    assert!(
        process_alive(pid),
        "FerretDB not running while the test holds it"
    );
    drop(mongo);
    assert!(
        !process_alive(pid),
        "FerretDB process {pid} still alive after the test"
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map(|r| r.is_err())
    .unwrap_or(true);
    assert!(
        refused,
        "port {port} still accepts connections after the test"
    );
}

/// True while a process exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test]
async fn the_service_binary_answers_healthz() {
    let mongo = test_mongo().await;
    let service = Spawn::new("auditlog-service")
        .envs(mongo.env())
        .env("AUDIT_API_KEY", "test-key")
        .start()
        .await;
    let r = reqwest::get(format!("{}/healthz", service.base_url))
        .await
        .expect("GET /healthz");
    assert_eq!(r.status(), 200);
}
