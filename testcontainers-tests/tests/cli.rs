//! The `auditlog` command-line tool end to end: the real binary as a subprocess against the
//! real service on the harness's MongoDB (FerretDB here). Posting one event and a 50,000-line
//! NDJSON file, every `find` format compared with the API's own find, `tail -f` picking up a
//! new event, and the failures: bad flags, a wrong key, an unreachable service, profiles.

#[path = "support/service.rs"]
mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{quick_visibility, start_service, start_service_env, Api, KEY};
use testcontainers_tests::binary::{self, RunningBinary};
use testcontainers_tests::free_port;
use testcontainers_tests::mongo::test_mongo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The environment variables the tool reads; cleared so the test's own cannot leak in.
const TOOL_ENV: [&str; 5] = [
    "AUDIT_URL",
    "AUDIT_API_KEY",
    "AUDIT_PROFILE",
    "AUDIT_CONFIG",
    "XDG_CONFIG_HOME",
];

/// How `auditlog` is run: the binary, and a home directory of its own (no configuration file
/// unless a test writes one).
struct Tool {
    bin: PathBuf,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a run printed, and its exit code.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Failure messages show the start and end of a long output, not 50,000 lines.
impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| {
            let chars: Vec<char> = s.chars().collect();
            if chars.len() <= 3000 {
                s.to_owned()
            } else {
                let head: String = chars[..1500].iter().collect();
                let tail: String = chars[chars.len() - 1500..].iter().collect();
                format!("{head}\n[… {} characters …]\n{tail}", chars.len() - 3000)
            }
        };
        f.debug_struct("Run")
            .field("code", &self.code)
            .field("stdout", &cut(&self.stdout))
            .field("stderr", &cut(&self.stderr))
            .finish()
    }
}

impl Run {
    /// Asserts the run failed with `code` and exactly one line `auditlog: error: …` on
    /// standard error, and returns that line.
    fn one_error_line(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("auditlog: error: "), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        lines[0]
    }

    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:#?}");
        &self.stdout
    }
}

impl Tool {
    /// The tool, pointed at `url` with `key` through the environment (as a user would).
    fn new(url: &str, key: &str) -> Self {
        let mut tool = Tool::bare();
        tool.env = vec![
            ("AUDIT_URL".into(), url.into()),
            ("AUDIT_API_KEY".into(), key.into()),
        ];
        tool
    }

    /// The tool with no URL, key or configuration at all.
    fn bare() -> Self {
        Tool {
            bin: binary::build("auditlog"),
            home: tempfile::tempdir().expect("temp dir"),
            env: vec![],
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for name in TOOL_ENV {
            cmd.env_remove(name);
        }
        cmd.args(args)
            .env("HOME", self.home.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.command(args), None).await
    }

    async fn run_with_stdin(&self, args: &[&str], input: Vec<u8>) -> Run {
        self.run_cmd(self.command(args), Some(input)).await
    }

    async fn run_cmd(&self, mut cmd: tokio::process::Command, input: Option<Vec<u8>>) -> Run {
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("cannot start auditlog");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            // Written from a task: the child may fill its stdout pipe before reading all.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
            .await
            .expect("auditlog did not finish within 10 minutes")
            .expect("auditlog's output");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The API's own find over every page, once it returns `n` events (ascending finds show an
/// event once `complete_until` has passed it).
async fn api_find_n(api: &Api, query: &[(&str, &str)], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (events, _) = api.find_all(query).await;
        if events.len() >= n {
            assert_eq!(events.len(), n, "more events than posted: {events:?}");
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the API found {} of {n} events within 60 s",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// CSV rows back as the API's JSON events: `payload` parsed, omitted when empty.
fn csv_events(text: &str) -> Vec<Value> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().expect("csv header"),
        vec!["id", "type", "consumer", "created_at", "payload"]
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("csv record");
            let mut e = json!({"id": &r[0], "type": &r[1], "consumer": &r[2], "created_at": &r[3]});
            if !r[4].is_empty() {
                e["payload"] = serde_json::from_str(&r[4]).expect("payload is JSON");
            }
            e
        })
        .collect()
}

#[tokio::test]
async fn post_then_every_find_format_matches_the_api_and_tail_follows() {
    let mongo = test_mongo().await;
    let service = start_service_env(quick_visibility(mongo.env()), &[]).await;
    let api = Api::new(&service);
    let tool = Tool::new(&service.base_url, KEY);

    // post: one line, "<id> <created_at>", and "already stored" for a retry of an id.
    let out = tool
        .run(&[
            "post",
            "--type",
            "login",
            "--consumer",
            "fmt",
            "--payload",
            r#"{"user":"ann","n":1}"#,
        ])
        .await;
    let line = out.ok().trim_end().to_owned();
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 2, "{out:#?}");
    assert_eq!(parts[0].len(), 24, "{out:#?}");
    assert!(parts[1].ends_with('Z'), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");

    let id = "628e58fc08808bcd3b2af122";
    let args = ["post", "--type", "logout", "--consumer", "fmt", "--id", id];
    let first = tool.run(&args).await;
    let again = tool.run(&args).await;
    assert!(first.ok().starts_with(id), "{first:#?}");
    assert_eq!(
        again.ok().trim_end(),
        format!("{} already stored", first.stdout.trim_end())
    );

    let payload_file = tool.home.path().join("payload.json");
    std::fs::write(&payload_file, r#"{"from": "a file", "list": [1, 2]}"#).unwrap();
    let at_file = format!("@{}", payload_file.display());
    tool.run(&[
        "post",
        "--type",
        "t,with \"quotes\"",
        "--consumer",
        "fmt",
        "--payload",
        &at_file,
    ])
    .await
    .ok();
    tool.run_with_stdin(
        &[
            "post",
            "--type",
            "login",
            "--consumer",
            "fmt",
            "--payload",
            "-",
        ],
        br#"{"from": "stdin", "text": "line one\nline two"}"#.to_vec(),
    )
    .await
    .ok();

    // Bad input: refused locally (2) or by the service (1), one line either way.
    tool.run(&[
        "post",
        "--type",
        "t",
        "--consumer",
        "fmt",
        "--payload",
        "{nope",
    ])
    .await
    .one_error_line(2);
    let refused = tool
        .run(&[
            "post",
            "--type",
            "t",
            "--consumer",
            "fmt",
            "--payload",
            "[1]",
        ])
        .await;
    assert!(
        refused.one_error_line(1).contains("422 invalid_event"),
        "{refused:#?}"
    );

    // login, logout (once: the retry was not stored again), the file's, the stdin's.
    let expected = api_find_n(&api, &[("consumer", "fmt")], 4).await;

    // json: one array, equal to the API's events.
    let json_out = tool
        .run(&["find", "--consumer", "fmt", "--output", "json"])
        .await;
    let found: Value = serde_json::from_str(json_out.ok()).expect("one JSON array");
    assert_eq!(found, Value::Array(expected.clone()));
    // ndjson: the same, one per line.
    let nd = tool
        .run(&["find", "--consumer", "fmt", "-o", "ndjson"])
        .await;
    assert_eq!(ndjson(nd.ok()), expected);
    // csv: header, then one row per event with the payload as compact JSON.
    let csv_out = tool.run(&["find", "--consumer", "fmt", "-o", "csv"]).await;
    assert_eq!(csv_events(csv_out.ok()), expected);
    // table (the default): a header and one aligned row per event, in order.
    let table = tool.run(&["find", "--consumer", "fmt"]).await;
    let rows: Vec<&str> = table.ok().lines().collect();
    assert_eq!(rows.len(), expected.len() + 1, "{table:#?}");
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("PAYLOAD"),
        "{table:#?}"
    );
    let id_col = rows[0].find("ID").unwrap();
    for (row, e) in rows[1..].iter().zip(&expected) {
        assert!(row.starts_with(e["created_at"].as_str().unwrap()), "{row}");
        assert_eq!(
            row.find(e["id"].as_str().unwrap()),
            Some(id_col),
            "{table:#?}"
        );
    }

    // Filters, order and limits.
    let desc = tool
        .run(&[
            "find",
            "--consumer",
            "fmt",
            "--order",
            "desc",
            "-o",
            "ndjson",
        ])
        .await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(ndjson(desc.ok()), reversed);
    let two = tool
        .run(&[
            "find",
            "--consumer",
            "fmt",
            "--limit-total",
            "2",
            "-o",
            "ndjson",
        ])
        .await;
    assert_eq!(ndjson(two.ok()), expected[..2].to_vec());
    let logins = tool
        .run(&[
            "find",
            "--consumer",
            "fmt",
            "--type",
            "login",
            "--since",
            "1h",
            "-o",
            "json",
        ])
        .await;
    let (api_logins, _) = api
        .find_all(&[("consumer", "fmt"), ("type", "login")])
        .await;
    assert_eq!(api_logins.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(logins.ok()).unwrap(),
        Value::Array(api_logins)
    );
    let future = tool
        .run(&[
            "find",
            "--consumer",
            "fmt",
            "--from",
            "2999-01-01",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(future.ok(), "[]\n");

    // tail without -f: what is complete, then exit.
    let tail = tool.run(&["tail", "--consumer", "fmt"]).await;
    assert_eq!(ndjson(tail.ok()), expected);

    // tail -f: an event posted after it started shows up, once.
    let mut cmd = tool.command(&["tail", "-f", "--consumer", "live", "--poll", "200ms"]);
    let mut child = cmd.spawn().expect("cannot start auditlog tail -f");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, posted) = api
        .post_event(&json!({"type": "late", "consumer": "live", "payload": {"k": "v"}}))
        .await;
    assert_eq!(status, 201, "{posted}");
    let seen = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("tail -f printed nothing within 30 s")
        .expect("tail -f's stdout")
        .expect("tail -f ended");
    let event: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(event["id"], posted["id"], "{seen}");
    assert_eq!(event["payload"], json!({"k": "v"}));
    // Nothing else (no second copy) within a few polls.
    let more = tokio::time::timeout(Duration::from_secs(3), lines.next_line()).await;
    assert!(more.is_err(), "tail -f printed more: {more:?}");
    // Ctrl-C ends it cleanly.
    let pid = i32::try_from(child.id().expect("tail -f is running")).unwrap();
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("tail -f did not stop on SIGINT")
        .unwrap();
    assert!(status.success(), "tail -f after Ctrl-C: {status:?}");

    // --include-incomplete shows the newest at once, before complete_until passes it.
    let (_, newest) = api
        .post_event(&json!({"type": "newest", "consumer": "live"}))
        .await;
    let now = tool
        .run(&["tail", "--consumer", "live", "--include-incomplete"])
        .await;
    let ids: Vec<Value> = ndjson(now.ok())
        .into_iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![posted["id"].clone(), newest["id"].clone()],
        "{now:#?}"
    );
}

/// NDJSON text: `events` lines, the ones at `bad` (1-based line number) replaced by those
/// texts.
fn ndjson_file(path: &Path, consumer: &str, lines: usize, bad: &[(usize, &str)]) {
    let mut text = String::with_capacity(lines * 80);
    for n in 1..=lines {
        match bad.iter().find(|(at, _)| *at == n) {
            Some((_, line)) => text.push_str(line),
            None => text.push_str(
                &json!({"type": "bulk", "consumer": consumer, "payload": {"n": n}}).to_string(),
            ),
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn post_ndjson_loads_50000_lines_and_counts_refusals_exactly() {
    let mongo = test_mongo().await;
    // FerretDB sorts a consumer's events for every page instead of reading them in index
    // order, which can overrun the 5 s find limit on a busy test machine; the subject here is
    // the tool, so the limit is lifted (and `find` below gets a longer --timeout).
    let service = start_service_env(
        quick_visibility(mongo.env()),
        &[("AUDIT_FIND_TIMEOUT_MS", "120000")],
    )
    .await;
    let tool = Tool::new(&service.base_url, KEY);

    // A file with bad lines, through standard input: each refused with its line number,
    // none fatal; a blank line is skipped, as the service skips it.
    let bad = [
        (7, "this is not JSON"),
        (100, ""),
        (1234, r#"{"type": "bulk", "consumer": "#),
        (20000, "[1, 2, 3]"),
        (30000, r#"{"type": "bulk"}"#),
        (
            40000,
            r#"{"type": "bulk", "consumer": "bulk-bad", "consumr": "typo"}"#,
        ),
        (
            45000,
            r#"{"type": "bulk", "consumer": "bulk-bad", "payload": {"$where": 1}}"#,
        ),
    ];
    let path = tool.home.path().join("bad.ndjson");
    ndjson_file(&path, "bulk-bad", 50_000, &bad);
    let input = std::fs::read(&path).unwrap();
    let started = Instant::now();
    let out = tool.run_with_stdin(&["post", "--ndjson", "-"], input).await;
    eprintln!("50,000 lines with 6 bad: {:?}", started.elapsed());
    let error = out.one_error_line(3);
    assert_eq!(error, "auditlog: error: 6 of 49999 lines refused");
    let summary: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(summary[0], "accepted 49993, refused 6", "{out:#?}");
    let refusals: Vec<(&str, &str)> = summary[1..]
        .iter()
        .map(|l| {
            let l = l.trim_start().strip_prefix("line ").expect(l);
            let (n, rest) = l.split_once(": ").unwrap();
            (n, rest.split(':').next().unwrap())
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            ("7", "malformed_json"),
            ("1234", "malformed_json"),
            ("20000", "invalid_event"),
            ("30000", "invalid_event"),
            ("40000", "invalid_event"),
            ("45000", "invalid_event"),
        ],
        "{out:#?}"
    );
    assert!(out.stdout.contains("consumr"), "{out:#?}");
    assert!(
        out.stdout.contains("$where"),
        "the service's own reason: {out:#?}"
    );

    // A clean file by path: exit 0, and find sees every event once.
    let path = tool.home.path().join("clean.ndjson");
    ndjson_file(&path, "bulk-clean", 50_000, &[]);
    let started = Instant::now();
    let out = tool
        .run(&["post", "--ndjson", path.to_str().unwrap()])
        .await;
    eprintln!("50,000 clean lines: {:?}", started.elapsed());
    assert_eq!(out.ok(), "accepted 50000, refused 0\n");
    assert!(
        out.stderr.is_empty(),
        "no progress bar without a terminal: {out:#?}"
    );

    // Every event stored once, read from MongoDB itself: paging 50,000 events through find
    // costs FerretDB a sort of them all per page (minutes), and find's paging is the
    // subject of the find tests, not of the load.
    let docs = support::stored(&mongo).await;
    let mut ns = HashSet::new();
    let mut ids = HashSet::new();
    for doc in docs
        .iter()
        .filter(|d| d.get_str("consumer") == Ok("bulk-clean"))
    {
        ids.insert(doc.get_object_id("_id").unwrap());
        let n = doc.get_document("payload").unwrap().get("n").unwrap();
        ns.insert(n.as_i64().or(n.as_i32().map(i64::from)).unwrap());
    }
    assert_eq!(ids.len(), 50_000, "every event once");
    assert_eq!(ns, (1..=50_000).collect::<HashSet<i64>>());
    let refused_file: usize = docs
        .iter()
        .filter(|d| d.get_str("consumer") == Ok("bulk-bad"))
        .count();
    assert_eq!(refused_file, 49_993, "the bad file's good lines, each once");

    // And the tool reads them back: the newest page, as CSV.
    let found = tool
        .run(&[
            "find",
            "--consumer",
            "bulk-clean",
            "--order",
            "desc",
            "--limit-total",
            "100",
            "-o",
            "csv",
            "--timeout",
            "150s",
        ])
        .await;
    let text = found.ok();
    assert_eq!(text.lines().count(), 1 + 100, "a header and 100 rows");
    assert!(text.contains("bulk-clean"), "{text}");
}

#[tokio::test]
async fn failures_are_one_line_with_their_exit_code_and_profiles_work() {
    // Usage errors: clap's own, and values clap cannot check; exit 2, one line.
    let bare = Tool::bare();
    let line = bare
        .run(&["find", "--bogus"])
        .await
        .one_error_line(2)
        .to_owned();
    assert!(line.contains("'--bogus'"), "{line}");
    bare.run(&["post", "--type", "t"]).await.one_error_line(2);
    bare.run(&["find", "--since", "soon", "--key", "k"])
        .await
        .one_error_line(2);
    bare.run(&["find", "--output", "xml"])
        .await
        .one_error_line(2);
    let nothing = bare.run(&[]).await;
    assert_eq!(nothing.code, 2, "{nothing:#?}");
    assert!(nothing.stderr.contains("Usage:"), "the help: {nothing:#?}");
    let no_key = bare.run(&["find"]).await;
    assert!(
        no_key.one_error_line(2).contains("no API key"),
        "{no_key:#?}"
    );
    assert!(bare.run(&["--help"]).await.ok().contains("Usage:"));
    assert!(bare
        .run(&["completions", "bash"])
        .await
        .ok()
        .contains("auditlog"));

    // An unreachable service: exit 1, one line naming it — find, post and tail -f alike.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let tool = Tool::new(&nowhere, KEY);
    for args in [
        &["find"][..],
        &["post", "--type", "t", "--consumer", "c"],
        &["tail", "-f"],
    ] {
        let out = tool.run(args).await;
        let line = out.one_error_line(1);
        assert!(
            line.contains("cannot reach") && line.contains(&nowhere),
            "{out:#?}"
        );
    }

    let mongo = test_mongo().await;
    let service: RunningBinary = start_service(&mongo, &[]).await;

    // A wrong key: exit 1, one line naming 401.
    let wrong = Tool::new(&service.base_url, "wrong-key");
    for args in [
        &["find"][..],
        &["post", "--type", "t", "--consumer", "c"],
        &["tail", "-f"],
    ] {
        let out = wrong.run(args).await;
        assert!(
            out.one_error_line(1).contains("401 unauthorized"),
            "{out:#?}"
        );
    }
    let out = wrong
        .run_with_stdin(
            &["post", "--ndjson", "-"],
            b"{\"type\":\"t\",\"consumer\":\"c\"}\n".to_vec(),
        )
        .await;
    assert!(
        out.one_error_line(1).contains("401 unauthorized"),
        "{out:#?}"
    );

    // Profiles: the default configuration file, a key_file, default_profile, --profile,
    // AUDIT_PROFILE, --config; and the environment's key before the profile's.
    let mut tool = Tool::bare();
    let dir = tool.home.path().join(".config/auditlog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test.key"), format!("{KEY}\n")).unwrap();
    let config = format!(
        "default_profile = \"broken\"\n\n[profiles.broken]\nurl = \"{nowhere}\"\nkey = \"x\"\n\n\
         [profiles.test]\nurl = \"{}\"\nkey_file = \"test.key\"\n",
        service.base_url
    );
    std::fs::write(dir.join("config.toml"), &config).unwrap();
    let posted = tool
        .run(&[
            "--profile",
            "test",
            "post",
            "--type",
            "t",
            "--consumer",
            "prof",
        ])
        .await;
    let id = posted.ok().split(' ').next().unwrap().to_owned();
    let found = tool
        .run(&[
            "find",
            "--profile",
            "test",
            "--consumer",
            "prof",
            "--order",
            "desc",
            "-o",
            "ndjson",
        ])
        .await;
    assert_eq!(ndjson(found.ok())[0]["id"], id.as_str());
    // The default profile is used without --profile (here: the unreachable one).
    assert!(tool
        .run(&["find"])
        .await
        .one_error_line(1)
        .contains("cannot reach"));
    let missing = tool.run(&["--profile", "nope", "find"]).await;
    assert!(
        missing.one_error_line(2).contains("no profile \"nope\""),
        "{missing:#?}"
    );
    tool.env = vec![("AUDIT_PROFILE".into(), "test".into())];
    tool.run(&["find", "--consumer", "prof"]).await.ok();
    tool.env.push(("AUDIT_API_KEY".into(), "wrong-key".into()));
    let out = tool.run(&["find", "--consumer", "prof"]).await;
    assert!(
        out.one_error_line(1).contains("401"),
        "the environment's key wins: {out:#?}"
    );
    // --config names another file.
    let other = tool.home.path().join("other.toml");
    std::fs::write(
        &other,
        config
            .replace("\"broken\"", "\"test\"")
            .replace("test.key", dir.join("test.key").to_str().unwrap()),
    )
    .unwrap();
    tool.env.clear();
    tool.run(&[
        "--config",
        other.to_str().unwrap(),
        "find",
        "--consumer",
        "prof",
    ])
    .await
    .ok();
}
