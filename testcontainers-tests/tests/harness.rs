//! Tests of the harness itself, and of the service binary answering `/healthz` on the
//! harness's MongoDB.

use std::time::Duration;

use mongodb::bson::doc;
use testcontainers_tests::binary::Spawn;
use testcontainers_tests::ferretdb::FerretDb;
use testcontainers_tests::mongo::test_mongo;

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

/// The harness's own FerretDB, started directly (whatever backend `test_mongo` would pick):
/// the process it holds is FerretDB itself (so killing it stops the server), and after drop
/// neither the process nor the port is left.
#[tokio::test]
async fn a_ferretdb_the_harness_starts_is_gone_after_drop() {
    let ferret = FerretDb::start().await;
    let (pid, port) = (ferret.pid(), ferret.port());
    assert!(
        process_alive(pid),
        "FerretDB not running while the test holds it"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    assert!(
        cmdline.contains(&format!("--listen-addr=127.0.0.1:{port}")),
        "process {pid} is not the FerretDB serving port {port}: {cmdline}"
    );
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("FerretDB accepts connections while the test holds it");
    drop(ferret);
    assert!(
        !process_alive(pid),
        "FerretDB process {pid} still alive after drop"
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map(|r| r.is_err())
    .unwrap_or(true);
    assert!(refused, "port {port} still accepts connections after drop");
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

/// `make run` is `infra/dev/run.sh`: with `MONGODB_URI` given it starts no store of its own,
/// generates an API key, prints where Swagger UI is, and serves `/healthz`; `make stop`
/// (`run.sh stop`) stops the service, and make run then exits 0.
#[tokio::test]
async fn make_run_serves_healthz_and_prints_the_swagger_ui_address() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let mongo = test_mongo().await;
    let port = testcontainers_tests::free_port();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let out = log.reopen().expect("log");
    let run_dir = tempfile::tempdir().expect("run dir");
    let child = Command::new("bash")
        .arg(testcontainers_tests::repo_root().join("infra/dev/run.sh"))
        .envs(mongo.env())
        .env_remove("AUDIT_API_KEY")
        .env("AUDIT_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        // Its own pid file, so it neither sees nor is seen by a `make run` on this machine.
        .env("AUDITLOG_RUN_DIR", run_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("log")))
        .stderr(Stdio::from(out))
        .process_group(0)
        .spawn()
        .expect("start infra/dev/run.sh");
    /// Kills the whole process group (cargo, the service) and reaps the script.
    struct Group(std::process::Child);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Ok(pgid) = i32::try_from(self.0.id()) {
                // SAFETY: kill(2) on the process group this test created.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = self.0.wait();
        }
    }
    let mut group = Group(child);

    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut healthy = false;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = group.0.try_wait() {
            panic!(
                "make run exited with {status}:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(healthy, "make run did not serve /healthz:\n{output}");
    assert!(
        output.contains(&format!("Swagger UI:  http://127.0.0.1:{port}/docs")),
        "make run did not print the Swagger UI address:\n{output}"
    );
    assert!(
        output.contains("(generated; set AUDIT_API_KEY"),
        "no generated API key printed:\n{output}"
    );

    // `make stop` stops the service through its pid file, and make run then ends successfully.
    let stop = Command::new("bash")
        .arg(testcontainers_tests::repo_root().join("infra/dev/run.sh"))
        .arg("stop")
        .env("AUDITLOG_RUN_DIR", run_dir.path())
        .output()
        .expect("run infra/dev/run.sh stop");
    let said = String::from_utf8_lossy(&stop.stdout);
    assert!(
        stop.status.success() && said.starts_with("stopped auditlog-service (pid "),
        "run.sh stop did not stop the service: {said}{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let ended = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = group.0.try_wait() {
            break status;
        }
        assert!(
            std::time::Instant::now() < ended,
            "make run still running after its service was stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "make run exited with {status} after a normal stop:\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
}
