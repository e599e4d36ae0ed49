//! The archiver in front of a store that behaves like a sharded replica-set cluster, through the
//! harness's fault-injecting wire proxy: a cursor lost mid-window to an election or a connection
//! reset resumes after its last row and archives every event exactly once; an error that is not
//! transient fails the window without retrying; a lease whose renewals keep failing fences the
//! archiver before another one could take over. And every successful run is recorded in
//! `archive_runs` for the service's alerts.
//!
//! The proxy also counts what the archiver asks of the events collection: a run reads it with
//! one sorted stream and one count however many windows are due, and a window whose count
//! differs from the rows streamed (an event written late) is the only one read again. And,
//! with the stream slowed down, a run stopped (SIGKILL) after writing a window but before its
//! count leaves nothing in the collection's tree for a reader to find, and the next run leaves
//! no temporaries.

#[path = "support/archiver.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use mongodb::bson::{doc, Document};
use support::*;
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};

/// An archiver of `mongo` writing to `dir`, connected through a new proxy.
async fn proxied_archiver(mongo: &TestMongo, dir: &std::path::Path) -> (WireProxy, Archiver) {
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let archiver =
        Archiver::new(mongo, dir.to_str().expect("utf-8 temp dir")).env("MONGODB_URI", &uri);
    (proxy, archiver)
}

/// `n` events spread over the hourly window starting at `base`.
fn events_in_window(base: chrono::DateTime<Utc>, n: i64, ty: &str) -> Vec<Document> {
    (0..n)
        .map(|i| {
            event(
                base + chrono::Duration::milliseconds(i * (3_600_000 / n)),
                ty,
                &format!("consumer-{}", i % 5),
                Some(doc! { "i": i }),
            )
        })
        .collect()
}

/// A BSON date field of `d` as a chrono instant.
fn at(d: &Document, field: &str) -> chrono::DateTime<Utc> {
    let t = d
        .get_datetime(field)
        .unwrap_or_else(|e| panic!("{field}: {e} in {d}"));
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).expect("date in range")
}

/// Runs `once` off the async runtime (the proxy runs on it).
async fn run_once(archiver: &Archiver) -> Ran {
    let archiver = archiver.clone_env();
    tokio::task::spawn_blocking(move || archiver.run(&["once"]))
        .await
        .expect("archiver thread")
}

/// The archive read back by pyarrow equals MongoDB, each event once.
async fn assert_archived_exactly_once(mongo: &TestMongo, dir: &std::path::Path) {
    let expected = mongo_events(mongo).await;
    let root = dir.join(&mongo.db_name).join("events");
    let root = root.to_str().expect("utf-8 path").to_owned();
    let read = tokio::task::spawn_blocking(move || read_with_pyarrow(&root, &[]))
        .await
        .expect("pyarrow thread");
    assert_same_events(&read.rows, &expected, true);
    assert_eq!(
        read.meta["duckdb"]["distinct_ids"].as_i64(),
        Some(expected.len() as i64),
        "{}",
        read.meta
    );
}

async fn transient_cursor_loss_resumes_after_the_last_row(fault: Fault) {
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &events_in_window(base, 1000, "resume")).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    // Ten cursor batches in the window: the failure hits mid-window, after rows were written.
    let archiver = archiver.env("AUDIT_ARCHIVE_BATCH_SIZE", "100");
    proxy.add(Rule::new("getMore", fault.clone()).times(1));

    let ran = run_once(&archiver).await.expect_code(0);
    assert_eq!(proxy.applied("getMore"), 1, "the fault never fired");
    assert!(
        ran.stderr()
            .contains("cursor lost; resuming after the last archived row"),
        "{fault:?}: no resumption logged:\n{}",
        ran.stderr()
    );
    let records = window_records(&mongo).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].get_i64("rows").unwrap(), 1000, "{records:?}");
    assert_archived_exactly_once(&mongo, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_getmore_refused_by_an_election_mid_window_resumes_and_archives_each_event_once() {
    transient_cursor_loss_resumes_after_the_last_row(Fault::CommandError {
        code: 10107,
        code_name: "NotWritablePrimary".into(),
        labels: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_getmore_whose_reply_is_lost_to_a_reset_resumes_and_archives_each_event_once() {
    // The server advanced the cursor past a batch the archiver never received: only the
    // keyset (not the cursor) knows where to go on.
    transient_cursor_loss_resumes_after_the_last_row(Fault::ResetAfterForward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_getmore_failing_with_an_error_that_is_not_transient_fails_the_window_without_retry() {
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &events_in_window(base, 500, "final")).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    let archiver = archiver.env("AUDIT_ARCHIVE_BATCH_SIZE", "100");
    // BadValue: the request's own fault, which would fail again.
    proxy.add(
        Rule::new(
            "getMore",
            Fault::CommandError {
                code: 2,
                code_name: "BadValue".into(),
                labels: vec![],
            },
        )
        .times(1),
    );
    let finds_before = proxy.seen("find");

    let ran = run_once(&archiver).await.expect_code(3);
    assert_eq!(proxy.applied("getMore"), 1);
    assert!(
        !ran.stderr().contains("cursor lost; resuming"),
        "a final error was retried:\n{}",
        ran.stderr()
    );
    assert!(
        ran.stderr().contains("BadValue") || ran.stderr().contains("read window events"),
        "{}",
        ran.stderr()
    );
    // One `find` opened the window's cursor; none reopened it.
    let window_finds = proxy.seen("find") - finds_before;
    assert!(window_finds >= 1, "{window_finds}");
    assert!(window_records(&mongo).await.is_empty());

    // The next run archives the window, once.
    run_once(&archiver).await.expect_code(0);
    assert_eq!(window_records(&mongo).await.len(), 1);
    assert_archived_exactly_once(&mongo, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_renewals_fail_fences_the_archiver_before_it_could_pass_on() {
    let mongo = test_mongo().await;
    const WINDOWS: i64 = 10;
    let first = hour_days_ago(3) - chrono::Duration::hours(WINDOWS);
    let mut docs = vec![];
    for w in 0..WINDOWS {
        docs.extend(events_in_window(
            first + chrono::Duration::hours(w),
            200,
            "fenced",
        ));
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    let lease_ttl = Duration::from_secs(6);
    let archiver = archiver
        .env("AUDIT_ARCHIVE_LEASE_TTL", "6s")
        .env("AUDIT_ARCHIVE_BATCH_SIZE", "50");
    // Every lease renewal is refused (taking the lease is a findAndModify, and goes through);
    // every cursor batch takes 300 ms, so the ten windows take far longer than the lease.
    proxy.add(
        Rule::new(
            "update",
            Fault::CommandError {
                code: 10107,
                code_name: "NotWritablePrimary".into(),
                labels: vec![],
            },
        )
        .on("archive_lease"),
    );
    proxy.add(Rule::new(
        "getMore",
        Fault::Delay(Duration::from_millis(300)),
    ));

    let started = Utc::now();
    let ran = run_once(&archiver).await;
    assert_ne!(
        ran.code(),
        0,
        "the run ignored its lost lease:\n{}",
        ran.stderr()
    );
    assert!(
        ran.stderr().contains("the lease was lost"),
        "no lease-lost error:\n{}",
        ran.stderr()
    );
    assert!(proxy.applied("update") >= 1, "no renewal was refused");

    // Nothing was recorded once another archiver could have held the lease (it was taken
    // after `started`, so it could pass on no earlier than `started + TTL`).
    let records = window_records(&mongo).await;
    assert!(
        (records.len() as i64) < WINDOWS,
        "the run outlasted its lease but recorded every window"
    );
    let lease_end = started + chrono::Duration::from_std(lease_ttl).unwrap();
    for r in &records {
        let archived_at = at(r, "archived_at");
        assert!(
            archived_at < lease_end,
            "window {r:?} recorded after the lease could expire ({lease_end})"
        );
    }
    // The window in progress at the loss was not published: visible files belong to recorded
    // windows, except at most one whose files were published just before the fence closed and
    // whose record it then refused (the next run rewrites those under the same names).
    let published: std::collections::BTreeSet<String> = files_under(dir.path())
        .iter()
        .filter_map(|f| f.rsplit('/').next())
        .filter(|name| name.starts_with("part-"))
        .filter_map(|name| name.rsplit_once('-').map(|(window, _)| window.to_owned()))
        .collect();
    assert!(
        published.len() <= records.len() + 1,
        "{} windows published, {} recorded: {published:?}",
        published.len(),
        records.len()
    );

    // Another archiver takes over and finishes: every window once, nothing doubled.
    proxy.clear();
    run_once(&archiver).await.expect_code(0);
    let records = window_records(&mongo).await;
    assert_eq!(records.len() as i64, WINDOWS);
    assert_archived_exactly_once(&mongo, dir.path()).await;
    archiver.run(&["verify", "--json"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_run_is_recorded_for_the_services_alerts() {
    let mongo = test_mongo().await;
    insert(&mongo, &events_in_window(hour_days_ago(3), 20, "runs")).await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(&mongo, dir.path().to_str().unwrap())
        .env("AUDIT_ARCHIVE_SCHEDULE", "0 0 2 * * *");
    let store = mongo.store().await;
    let runs = store.database().collection::<Document>("archive_runs");
    let id = format!("{}.events", mongo.db_name);

    // A run that does not finish (another archiver holds the lease) records nothing.
    let lease = store.database().collection::<Document>("archive_lease");
    lease
        .insert_one(doc! {
            "_id": &id,
            "owner": "another-archiver",
            "expires_at": mongodb::bson::DateTime::from_millis((Utc::now() + chrono::Duration::hours(1)).timestamp_millis()),
        })
        .await
        .unwrap();
    run_once(&archiver).await.expect_code(5);
    assert!(runs.find_one(doc! { "_id": &id }).await.unwrap().is_none());
    lease.delete_one(doc! { "_id": &id }).await.unwrap();

    let before = Utc::now();
    run_once(&archiver).await.expect_code(0);
    let after = Utc::now();
    let rec = runs
        .find_one(doc! { "_id": &id })
        .await
        .unwrap()
        .expect("no archive_runs document after a successful run");
    let last = at(&rec, "last_success_at");
    assert!(before <= last && last <= after, "{rec}");
    let took = rec.get_f64("last_run_seconds").unwrap();
    assert!(
        took >= 0.0 && took <= (after - before).num_milliseconds() as f64 / 1000.0 + 1.0,
        "{rec}"
    );
    let next = at(&rec, "next_run_at");
    assert!(
        next > last && next - last <= chrono::Duration::days(1),
        "{rec}"
    );
    assert_eq!(next.format("%H:%M:%S").to_string(), "02:00:00", "{rec}");
    assert_eq!(
        rec.get_i64("schedule_period_seconds").unwrap(),
        86_400,
        "{rec}"
    );
    assert_eq!(rec.get_str("schedule").unwrap(), "0 0 2 * * *");

    // Each successful run moves it on, with nothing left to archive too.
    run_once(&archiver).await.expect_code(0);
    let again = runs.find_one(doc! { "_id": &id }).await.unwrap().unwrap();
    assert!(at(&again, "last_success_at") >= last);
    assert_eq!(
        runs.count_documents(doc! {}).await.unwrap(),
        1,
        "one document per archived collection"
    );
}

/// Makes `proxy` count the archiver's reads of the events collection: rules that change
/// nothing (no delay) on each read command, so `proxy.applied` counts exactly those. (A
/// `getMore` names its cursor, not its collection: every `getMore` counts.)
fn count_event_reads(proxy: &WireProxy) {
    for command in ["find", "aggregate", "count", "distinct"] {
        proxy.add(Rule::new(command, Fault::Delay(Duration::ZERO)).on("events"));
    }
    proxy.add(Rule::new("getMore", Fault::Delay(Duration::ZERO)));
}

/// The reads of the events collection a proxy counted, by command.
fn event_reads(proxy: &WireProxy) -> Vec<(&'static str, usize)> {
    ["find", "getMore", "aggregate", "count", "distinct"]
        .into_iter()
        .map(|c| (c, proxy.applied(c)))
        .collect()
}

/// Archives `windows` consecutive hourly windows of 100 events each (ending three days ago)
/// through a proxy; returns the reads of the events collection the run made.
async fn reads_to_archive(windows: i64) -> Vec<(&'static str, usize)> {
    let mongo = test_mongo().await;
    let first = hour_days_ago(3) - chrono::Duration::hours(windows);
    let mut docs = vec![];
    for w in 0..windows {
        docs.extend(events_in_window(
            first + chrono::Duration::hours(w),
            100,
            "once",
        ));
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    count_event_reads(&proxy);
    run_once(&archiver).await.expect_code(0);
    assert_eq!(window_records(&mongo).await.len() as i64, windows);
    assert_archived_exactly_once(&mongo, dir.path()).await;
    event_reads(&proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reads_the_events_once_however_many_windows_are_due() {
    let two = reads_to_archive(2).await;
    let twelve = reads_to_archive(12).await;
    println!("reads of the events collection: 2 windows {two:?}, 12 windows {twelve:?}");
    assert_eq!(
        two, twelve,
        "the reads of the events grow with the number of windows"
    );
    // One sorted stream (a find; no getMore at 100 events per window), the TTL guard's look
    // at the oldest event still unarchived once the run is done (a find of one document), one
    // count and the collection statistics for the cursor batch size (two aggregates); no
    // per-window query.
    assert_eq!(
        twelve,
        vec![
            ("find", 2),
            ("getMore", 0),
            ("aggregate", 2),
            ("count", 0),
            ("distinct", 0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_mismatch_in_one_window_reads_only_that_window_again() {
    let mongo = test_mongo().await;
    const WINDOWS: i64 = 5;
    let first = hour_days_ago(3) - chrono::Duration::hours(WINDOWS);
    let mut docs = vec![];
    for w in 0..WINDOWS {
        docs.extend(events_in_window(
            first + chrono::Duration::hours(w),
            100,
            "late",
        ));
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    // The collection statistics and the run's count (the first two aggregates on the events)
    // are held for 4 s before they reach the server, so the count comes after the stream has
    // gone past the first window — and after the event written late into it below.
    proxy.add(
        Rule::new(
            "aggregate",
            Fault::DelayBeforeForward(Duration::from_secs(4)),
        )
        .on("events")
        .times(2),
    );
    count_event_reads(&proxy);

    let mut child = archiver
        .command(&["once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first window's files appear (hidden, unpublished) once the stream is past it.
    let first_window = first.format("part-%Y%m%dT%H%M%SZ-").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_under(dir.path())
        .iter()
        .any(|f| f.contains(&first_window))
    {
        assert!(
            Instant::now() < deadline,
            "the first window was never written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the archiver ended early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        window_records(&mongo).await.is_empty(),
        "a window was recorded before the run's count"
    );
    let late = event(
        first + chrono::Duration::minutes(30),
        "late.write",
        "consumer-late",
        None,
    );
    insert(&mongo, std::slice::from_ref(&late)).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let ran = Ran(out).expect_code(0);

    // Only the first window's count differed, and only it was read again.
    let stderr = ran.stderr();
    let mismatches: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("count mismatch: the window is read again"))
        .collect();
    let first_id = first.format("%Y%m%dT%H%M%SZ").to_string();
    assert_eq!(mismatches.len(), 1, "{stderr}");
    assert!(mismatches[0].contains(&first_id), "{stderr}");
    // Reads: the run's stream, then one stream of the first window, then the TTL guard's look
    // at the oldest event left; the statistics, the run's count, a count per window that
    // streamed rows, and the first window's count again.
    assert_eq!(
        event_reads(&proxy),
        vec![
            ("find", 3),
            ("getMore", 0),
            ("aggregate", 2 + WINDOWS as usize + 1),
            ("count", 0),
            ("distinct", 0)
        ],
        "{stderr}"
    );
    let records = window_records(&mongo).await;
    assert_eq!(records.len() as i64, WINDOWS);
    let rows: Vec<i64> = records.iter().map(|r| r.get_i64("rows").unwrap()).collect();
    assert_eq!(rows, vec![101, 100, 100, 100, 100]);
    // The late event is archived, every event once.
    assert_archived_exactly_once(&mongo, dir.path()).await;
}

/// Waits until the lease of `mongo`'s events collection has expired (a killed archiver's).
async fn wait_for_lease_expiry(mongo: &TestMongo) {
    let lease = mongo
        .store()
        .await
        .database()
        .collection::<Document>("archive_lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease
        .find_one(doc! { "expires_at": { "$gt": mongodb::bson::DateTime::now() } })
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_before_its_count_leaves_the_tree_untouched_and_its_rerun_no_temporaries() {
    let mongo = test_mongo().await;
    const WINDOWS: i64 = 4;
    const PER_WINDOW: i64 = 200;
    let first = hour_days_ago(3) - chrono::Duration::hours(WINDOWS);
    let mut docs = vec![];
    for w in 0..WINDOWS {
        docs.extend(events_in_window(
            first + chrono::Duration::hours(w),
            PER_WINDOW,
            "staged",
        ));
    }
    insert(&mongo, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, archiver) = proxied_archiver(&mongo, dir.path()).await;
    const BATCH: i64 = 50;
    let archiver = archiver
        .env("AUDIT_ARCHIVE_BATCH_SIZE", &BATCH.to_string())
        .env("AUDIT_ARCHIVE_LEASE_TTL", "5s");
    // Every cursor batch after the first takes 300 ms: the stream lasts seconds after the first
    // window's file is complete, and the run's count is compared only once the stream ended.
    proxy.add(Rule::new(
        "getMore",
        Fault::Delay(Duration::from_millis(300)),
    ));
    let getmores_to_the_end = (WINDOWS * PER_WINDOW / BATCH - 1) as usize;
    let root = dir.path().join(&mongo.db_name).join("events");
    let staging = dir.path().join(&mongo.db_name).join(".events.inprogress");
    // The first window's first file, complete: the local store writes `<name>#<n>` and renames
    // it to `<name>` when the upload completes.
    let first_file = format!(
        ".part-{}-0000.parquet.inprogress",
        first.format("%Y%m%dT%H%M%SZ")
    );

    let mut child = archiver
        .command(&["once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !staging.join(&first_file).exists() {
        assert!(
            Instant::now() < deadline,
            "the first window was never written: {:?}",
            files_under(dir.path())
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the archiver ended early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let getmores = proxy.seen("getMore");
    assert!(
        getmores < getmores_to_the_end,
        "the stream had ended ({getmores} getMores): the run was not stopped before its count"
    );
    assert!(
        !root.exists(),
        "a run stopped before its count left {:?} in the collection's tree",
        files_under(&root)
    );
    assert!(window_records(&mongo).await.is_empty());

    // The next run (once the stopped run's lease expired) archives every event once, and
    // leaves no temporary of its own or of the stopped run, staged or in the tree.
    proxy.clear();
    wait_for_lease_expiry(&mongo).await;
    run_once(&archiver).await.expect_code(0);
    assert_eq!(window_records(&mongo).await.len() as i64, WINDOWS);
    assert_archived_exactly_once(&mongo, dir.path()).await;
    assert_eq!(files_under(&staging), Vec::<String>::new());
    let published = files_under(&root);
    assert!(
        published
            .iter()
            .all(|f| !f.rsplit('/').next().unwrap_or_default().starts_with('.')),
        "{published:?}"
    );
}
