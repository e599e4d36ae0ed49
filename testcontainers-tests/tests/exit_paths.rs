//! How the binaries start and stop, over the real binaries: a SIGHUP while the service waits for
//! MongoDB at start neither kills it nor is lost; an archive run that catches up on events
//! already past the retention exits on the state it leaves (0), still warning about what was at
//! risk before it, while one that leaves an event at risk exits 4; and no exit path of
//! `auditlog-service`, `auditlog-archiver` or `auditlog-ops` — success, error, refused
//! settings, signal — prints a panic (the MongoDB driver's background tasks panicked when the
//! runtime stopped under a client that was never shut down).

#[path = "support/archiver.rs"]
mod archiver_support;
#[path = "support/ops.rs"]
mod ops_support;
#[path = "support/service.rs"]
mod service_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archiver_support::{event, hour_days_ago, insert, window_records, Archiver};
use chrono::Utc;
use ops_support::ops;
use service_support::{key_entry, plain, start_service, Api, RestartableFerret};
use testcontainers_tests::binary::Spawn;
use testcontainers_tests::free_port;
use testcontainers_tests::mongo::test_mongo;

/// A binary started without waiting for it to answer (it may not, yet); killed on drop.
struct Started {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Started {
    fn spawn(bin: &str, args: &[&str], env: &[(String, String)]) -> Started {
        let path = testcontainers_tests::binary::build(bin);
        let log = tempfile::NamedTempFile::new().expect("log file");
        let out = log.reopen().expect("log file");
        let child = Command::new(path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AUDIT_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start the binary");
        Started { child, log }
    }

    fn output(&self) -> String {
        plain(&std::fs::read_to_string(self.log.path()).unwrap_or_default())
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    async fn wait_for_output(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.output().contains(needle) {
            assert!(
                self.alive(),
                "exited before printing {needle:?}:\n{}",
                self.output()
            );
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- output ----\n{}", self.output());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_sighup_while_mongodb_is_unreachable_at_start_neither_kills_it_nor_is_lost() {
    // A FerretDB that is not there yet: its port known, the process stopped.
    let mut ferret = RestartableFerret::start().await;
    ferret.pause();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        key_entry("first", "first-key", &["ingest", "read"], &["*"], None),
    )
    .unwrap();
    let port = free_port();
    let mut env = ferret.env("exit_paths");
    env.extend([
        ("AUDIT_API_KEYS_FILE".into(), keys.display().to_string()),
        // Only SIGHUP reloads: a reload seen later can only be the signal's.
        ("AUDIT_API_KEYS_POLL_MS".into(), "0".into()),
        ("AUDIT_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
        ("RUST_LOG".into(), "info".into()),
    ]);
    let mut service = Started::spawn("auditlog-service", &["run"], &env);
    // Logged once the settings are read, just before the service waits (up to the driver's
    // 5 s server selection) for MongoDB to answer.
    service
        .wait_for_output("listening", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        &keys,
        key_entry("first", "first-key", &["ingest", "read"], &["*"], None)
            + &key_entry("second", "second-key", &["ingest", "read"], &["*"], None),
    )
    .unwrap();
    service.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        service.alive(),
        "a SIGHUP during start-up killed the service:\n{}",
        service.output()
    );

    ferret.resume().await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            service.alive() && Instant::now() < deadline,
            "not ready within 60 s of MongoDB answering:\n{}",
            service.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The key added before the SIGHUP works: the reload the signal asked for was done once
    // the keys were in place, not dropped.
    let api = Api {
        base: base.clone(),
        http: http.clone(),
    };
    let event = serde_json::json!({"type": "t", "consumer": "c", "payload": {"n": 1}});
    let (status, body) = api.post_json_as("second-key", "/v1/event", &event).await;
    assert_eq!(status, 201, "{body}\n{}", service.output());
    let out = service.output();
    assert!(
        out.lines()
            .any(|l| l.contains("API keys reloaded") && l.contains("trigger=\"SIGHUP\"")),
        "{out}"
    );

    service.signal(libc::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}\n{}", service.output());
    assert_no_panic("auditlog-service run, SIGTERM", &service.output());
}

/// Hourly events from `from_days` days ago to `to_days` days ago, one per hour.
fn hourly(from_days: i64, to_days: i64) -> Vec<mongodb::bson::Document> {
    let start = hour_days_ago(from_days);
    (0..(from_days - to_days) * 24)
        .map(|h| {
            event(
                start + chrono::Duration::hours(h) + chrono::Duration::minutes(7),
                "t",
                "c",
                None,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_run_that_catches_up_exits_on_the_state_it_leaves_and_warns_of_the_one_before() {
    let mongo = test_mongo().await;
    // Where the guard watches the retention (a server without TTL indexes, FerretDB), events
    // older than AUDIT_RETENTION_DAYS (30, the default) are at risk before the run; with TTL
    // indexes but none on the collection nothing expires (archiver_guard_purge.rs).
    let at_risk = !mongo.server.supports_ttl();
    let server = mongo.server.describe();
    // 7 days of hourly events, the oldest 5 days past the retention.
    let events = hourly(35, 28);
    insert(&mongo, &events).await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_ARCHIVE_AFTER", "1d")
        .env("AUDIT_ARCHIVE_WINDOW", "1h");

    let ran = archiver.run(&["once"]);
    let (stdout, stderr) = (ran.stdout(), ran.stderr());
    assert_eq!(
        ran.code(),
        0,
        "{server}: the run archived every event at risk, yet failed:\n{stderr}"
    );
    assert_eq!(window_records(&mongo).await.len(), events.len());
    // What was at risk before the run is still said, loudly.
    assert_eq!(stderr.contains("TTL GUARD"), at_risk, "{server}:\n{stderr}");
    assert_no_panic("auditlog-archiver once (caught up)", &(stdout + &stderr));
    let status = archiver.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(status["guard"]["triggered"], false, "{status}");
    assert_eq!(status["due_windows"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_run_exits_4_while_an_event_at_risk_is_still_unarchived_after_it() {
    let mongo = test_mongo().await;
    let at_risk = !mongo.server.supports_ttl();
    let server = mongo.server.describe();
    // Retention 1 day, archived once 23 h old: an event 22.5 h old expires in 1.5 h, within
    // the 6 h safety margin, and this run cannot archive it (not due yet).
    insert(
        &mongo,
        &[
            event(Utc::now() - chrono::Duration::days(2), "due", "c", None),
            event(
                Utc::now() - chrono::Duration::minutes(22 * 60 + 30),
                "not.due",
                "c",
                None,
            ),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ran = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_RETENTION_DAYS", "1")
        .env("AUDIT_ARCHIVE_AFTER", "23h")
        .run(&["once"]);
    assert_eq!(
        ran.code(),
        if at_risk { 4 } else { 0 },
        "{server}:\n{}",
        ran.stderr()
    );
    assert_eq!(
        window_records(&mongo).await.len(),
        1,
        "the due window is archived"
    );
    if at_risk {
        assert!(
            ran.stderr()
                .contains("TTL guard: the oldest unarchived event"),
            "{}",
            ran.stderr()
        );
    }
    assert_no_panic(
        "auditlog-archiver once (exit 4)",
        &(ran.stdout() + &ran.stderr()),
    );
}

/// Fails naming the path when `output` carries a panic.
fn assert_no_panic(path: &str, output: &str) {
    assert!(
        !output.contains("panicked"),
        "{path} printed a panic:\n{output}"
    );
}

/// A MongoDB URI where nothing answers, failing fast.
fn unreachable_uri() -> String {
    format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
        free_port()
    )
}

fn with_uri(env: Vec<(String, String)>, uri: &str) -> Vec<(String, String)> {
    service_support::with_mongodb_uri(env, uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exit_path_of_any_binary_prints_a_panic() {
    let mongo = test_mongo().await;
    insert(
        &mongo,
        &[event(
            Utc::now() - chrono::Duration::days(2),
            "t",
            "c",
            None,
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let archiver = Archiver::new(&mongo, url);
    let mut failures = vec![];
    let mut check = |path: &str, code: i32, want: i32, output: String| {
        if code != want {
            failures.push(format!("{path}: exit {code}, expected {want}:\n{output}"));
        } else if output.contains("panicked") {
            failures.push(format!("{path} printed a panic:\n{output}"));
        }
    };
    let both = |r: &archiver_support::Ran| r.stdout() + &r.stderr();

    // auditlog-archiver: each command to its end, several times over (the panic came from a
    // race between the runtime's shutdown and the driver's tasks).
    for _ in 0..3 {
        let r = archiver.run(&["once"]);
        check("archiver once (done)", r.code(), 0, both(&r));
        let r = archiver.run(&["status"]);
        check("archiver status", r.code(), 0, both(&r));
        let r = archiver.run(&["verify"]);
        check("archiver verify", r.code(), 0, both(&r));
    }
    let r = archiver
        .clone_env()
        .env("AUDIT_ARCHIVE_WINDOW", "7m")
        .run(&["once"]);
    check("archiver once (bad setting)", r.code(), 2, both(&r));
    for _ in 0..3 {
        let r = Archiver {
            env: with_uri(archiver.env.clone(), &unreachable_uri()),
        }
        .run(&["once"]);
        check("archiver once (MongoDB unreachable)", r.code(), 1, both(&r));
    }
    let mut daemon = Spawn::new("auditlog-archiver")
        .envs(archiver.env.clone())
        .arg("run")
        .listen_env("AUDIT_ARCHIVER_LISTEN_ADDR")
        .start()
        .await;
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(90)).await;
    check(
        "archiver run (SIGTERM)",
        status.and_then(|s| s.code()).unwrap_or(-1),
        0,
        daemon.output(),
    );

    // auditlog-ops: done, refused before and after it connects, MongoDB unreachable.
    for _ in 0..3 {
        let r = ops(mongo.env(), &["status"]).await;
        check("ops status", r.code.unwrap_or(-1), 0, r.stdout + &r.stderr);
        let r = ops(mongo.env(), &["db", "users"]).await;
        check(
            "ops db users (no user)",
            r.code.unwrap_or(-1),
            3,
            r.stdout + &r.stderr,
        );
    }
    let r = ops(
        mongo.env(),
        &["--keyfile", "/nonexistent/keyfile", "status"],
    )
    .await;
    check(
        "ops (unreadable keyfile)",
        r.code.unwrap_or(-1),
        3,
        r.stdout + &r.stderr,
    );
    let r = ops(with_uri(mongo.env(), &unreachable_uri()), &["status"]).await;
    check(
        "ops status (MongoDB unreachable)",
        r.code.unwrap_or(-1),
        4,
        r.stdout + &r.stderr,
    );

    // auditlog-service: SIGTERM after serving, SIGINT, and the settings refused.
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut service = start_service(&mongo, &[]).await;
        let api = Api::new(&service);
        let (status, body) = api
            .post_event(&serde_json::json!({"type": "t", "consumer": "c"}))
            .await;
        assert_eq!(status, 201, "{body}");
        service.signal(signal);
        let status = service.wait_exit(Duration::from_secs(60)).await;
        check(
            &format!("service run (signal {signal})"),
            status.and_then(|s| s.code()).unwrap_or(-1),
            0,
            plain(&service.output()),
        );
    }
    let bin = testcontainers_tests::binary::build("auditlog-service");
    let out = Command::new(bin)
        .arg("run")
        .envs(mongo.env())
        .env_remove("AUDIT_API_KEY")
        .env_remove("AUDIT_API_KEYS_FILE")
        .env("AUDIT_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("run auditlog-service");
    check(
        "service run (no API key)",
        out.status.code().unwrap_or(-1),
        1,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    );

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
