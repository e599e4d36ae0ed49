//! The tamper-evident archive (docs/integrity.md) over the real archiver binary: a signed
//! archive of three runs verifies clean, and every tampering an auditor must catch is caught
//! and named by `verify --public-key`, with exit 1 — a flipped byte, a deleted or added file, a
//! deleted middle or last digest, an edited digest, a digest re-signed with another key, a
//! window archived again by an archiver with another key. A crash before the digest is written,
//! and one after it but before MongoDB's head moves, leave an archive that the next run makes
//! verify clean. Key rotation verifies with both public keys and names the unknown key with
//! one. Purge keeps a window no digest lists. Local files here; S3 (moto) at the end.

#[path = "support/archiver.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use mongodb::bson::{doc, Document};
use support::*;
use testcontainers_tests::mongo::{test_mongo, TestMongo};
use testcontainers_tests::tools::{python, s3_endpoint};

/// A key pair made by `keys new`: (private, public, id).
fn new_key(archiver: &Archiver, dir: &Path) -> (PathBuf, PathBuf, String) {
    let out = archiver
        .run(&["keys", "new", "--out", dir.to_str().unwrap()])
        .expect_code(0)
        .stdout();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("no key id in:\n{out}"))
        .to_owned();
    (
        dir.join("archive-signing.key"),
        dir.join("archive-signing.pub"),
        id,
    )
}

struct Signed {
    mongo: TestMongo,
    dir: tempfile::TempDir,
    archiver: Archiver,
    key: (PathBuf, PathBuf, String),
}

impl Signed {
    fn root(&self) -> PathBuf {
        self.dir.path().join("archive")
    }
    fn digests(&self) -> PathBuf {
        self.root()
            .join("_digests")
            .join(&self.mongo.db_name)
            .join("events")
    }
    fn digest(&self, seq: u32) -> PathBuf {
        self.digests().join(format!("{seq:012}.json"))
    }
    fn parquet_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = files_under(&self.root().join(&self.mongo.db_name))
            .into_iter()
            .filter(|f| f.ends_with(".parquet"))
            .map(|f| self.root().join(&self.mongo.db_name).join(f))
            .collect();
        files.sort();
        files
    }
    /// `verify --public-key` with these public keys: (exit code, stdout).
    fn verify(&self, keys: &[&Path]) -> (i32, String) {
        let mut args = vec!["verify".to_owned()];
        for k in keys {
            args.push("--public-key".into());
            args.push(k.to_str().unwrap().into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = self.archiver.run(&args);
        (r.code(), format!("{}{}", r.stdout(), r.stderr()))
    }
    fn verify_clean(&self) {
        let (code, out) = self.verify(&[&self.key.1]);
        assert_eq!(code, 0, "{out}");
        assert!(out.lines().any(|l| l.starts_with("ok: ")), "{out}");
    }
    /// Asserts exit 1 and a line `<kind>: <name containing needle>: …`.
    fn assert_caught(&self, keys: &[&Path], kind: &str, needle: &str) -> String {
        let (code, out) = self.verify(keys);
        assert_eq!(code, 1, "expected exit 1:\n{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{kind}: ")) && l.contains(needle)),
            "expected a `{kind}` line naming {needle}:\n{out}"
        );
        out
    }
}

/// Three runs, three windows, three digests, signed with one key.
async fn signed_archive() -> Signed {
    let mongo = test_mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let archiver = Archiver::new(&mongo, root.to_str().unwrap());
    let key = new_key(&archiver, &dir.path().join("key-a"));
    let archiver = archiver.env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", key.0.to_str().unwrap());
    for days in [5, 4, 3] {
        let at = hour_days_ago(days);
        insert(
            &mongo,
            &[
                event(at, "login", "web", None),
                event(at, "logout", "app", None),
            ],
        )
        .await;
        archiver.run(&["once"]).expect_code(0);
    }
    let s = Signed {
        mongo,
        dir,
        archiver,
        key,
    };
    for seq in 1..=3 {
        assert!(s.digest(seq).exists(), "digest {seq} missing");
        assert!(PathBuf::from(format!("{}.sig", s.digest(seq).display())).exists());
    }
    assert!(
        !s.digest(4).exists(),
        "a run with nothing new wrote a digest"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_signed_archive_verifies_and_each_digest_lists_its_run() {
    let s = signed_archive().await;
    s.verify_clean();
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.digest(2)).unwrap()).unwrap();
    assert_eq!(d["format"], "auditlog-archive-digest/1");
    assert_eq!(d["sequence"], 2);
    assert_eq!(d["key_id"], s.key.2.as_str());
    assert_eq!(d["windows"].as_array().unwrap().len(), 1);
    let file = &d["files"][0];
    assert_eq!(file["rows"], 2);
    assert!(file["path"].as_str().unwrap().ends_with(".parquet"));
    assert!(file["min_created_at"].as_str().unwrap() <= file["max_created_at"].as_str().unwrap());
    assert_eq!(
        d["previous"]["path"],
        format!("_digests/{}/events/000000000001.json", s.mongo.db_name)
    );
    // JSON output for machines, on the same archive.
    let r = s
        .archiver
        .run(&[
            "verify",
            "--json",
            "--public-key",
            s.key.1.to_str().unwrap(),
        ])
        .expect_code(0)
        .json();
    assert_eq!(
        (
            r["ok"].as_bool(),
            r["digests"].as_u64(),
            r["files"].as_u64()
        ),
        (Some(true), Some(3), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_a_deleted_file_and_an_added_file_are_named() {
    let s = signed_archive().await;
    let files = s.parquet_files();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    let name = |p: &PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
    s.assert_caught(&[&s.key.1], "modified", &name(&files[0]));

    std::fs::remove_file(&files[1]).unwrap();
    s.assert_caught(&[&s.key.1], "missing", &name(&files[1]));

    let added = files[2].with_file_name("part-extra.parquet");
    std::fs::copy(&files[2], &added).unwrap();
    let out = s.assert_caught(&[&s.key.1], "unlisted", "part-extra.parquet");
    // The intact file is not blamed.
    assert!(!out.contains(&name(&files[2])), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_middle_digest_and_a_deleted_last_digest_are_named() {
    let s = signed_archive().await;
    std::fs::remove_file(s.digest(2)).unwrap();
    s.assert_caught(&[&s.key.1], "chain broken", "000000000003.json");

    let s = signed_archive().await;
    std::fs::remove_file(s.digest(3)).unwrap();
    std::fs::remove_file(format!("{}.sig", s.digest(3).display())).unwrap();
    // The shorter chain is intact in itself: MongoDB's head is what names the loss.
    s.assert_caught(&[&s.key.1], "missing", "000000000003.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_digest_and_one_re_signed_with_another_key_are_named() {
    let s = signed_archive().await;
    let path = s.digest(2);
    let original = std::fs::read(&path).unwrap();
    let mut d: serde_json::Value = serde_json::from_slice(&original).unwrap();
    d["files"][0]["rows"] = serde_json::json!(1);
    let edited = serde_json::to_vec(&d).unwrap();
    std::fs::write(&path, &edited).unwrap();
    s.assert_caught(&[&s.key.1], "bad signature", "000000000002.json");

    // The attacker's own key signs the edited digest, under the attacker's key id.
    let other = new_key(&s.archiver, &s.dir.path().join("key-b"));
    d["key_id"] = serde_json::json!(other.2);
    let resigned = serde_json::to_vec(&d).unwrap();
    std::fs::write(&path, &resigned).unwrap();
    let sig = format!("{}.sig", path.display());
    let ok = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&other.0)
        .args(["-in", path.to_str().unwrap(), "-out", &sig])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = s.assert_caught(&[&s.key.1], "unknown key", "000000000002.json");
    assert!(out.contains(&other.2), "the unknown key is named:\n{out}");
    // Digest 3 still names digest 2 by its original bytes.
    s.assert_caught(&[&s.key.1], "chain broken", "000000000003.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_archived_again_with_another_key_is_named() {
    let s = signed_archive().await;
    // The attacker drops a window's record, so an archiver of theirs archives it again.
    let store = s.mongo.store().await;
    let windows = store.database().collection::<Document>("archive_windows");
    let first = windows
        .find_one(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .unwrap();
    windows
        .delete_one(doc! { "_id": first.get("_id").unwrap() })
        .await
        .unwrap();
    let other = new_key(&s.archiver, &s.dir.path().join("key-b"));
    let theirs = s
        .archiver
        .clone_env()
        .env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", other.0.to_str().unwrap());
    theirs.run(&["once"]).expect_code(0);
    assert!(s.digest(4).exists());
    let out = s.assert_caught(&[&s.key.1], "unknown key", "000000000004.json");
    assert!(out.contains(&other.2), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_verifies_with_both_keys_and_names_the_unknown_one_with_one() {
    let s = signed_archive().await;
    let b = new_key(&s.archiver, &s.dir.path().join("key-b"));
    let rotated = s
        .archiver
        .clone_env()
        .env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", b.0.to_str().unwrap());
    insert(&s.mongo, &[event(hour_days_ago(6), "login", "web", None)]).await;
    rotated.run(&["once"]).expect_code(0);
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.digest(4)).unwrap()).unwrap();
    assert_eq!(d["key_id"], b.2.as_str());

    let (code, out) = s.verify(&[&s.key.1, &b.1]);
    assert_eq!(code, 0, "{out}");
    // A directory of public keys, as the chart mounts them.
    let keys = s.dir.path().join("public-keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(&s.key.1, keys.join("a.pub")).unwrap();
    std::fs::copy(&b.1, keys.join("b.pub")).unwrap();
    let (code, out) = s.verify(&[&keys]);
    assert_eq!(code, 0, "{out}");

    let out = s.assert_caught(&[&s.key.1], "unknown key", "000000000004.json");
    assert!(out.contains(&b.2), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_digest_or_before_the_head_moves_ends_clean_on_the_next_run() {
    let s = signed_archive().await;
    // The digest cannot be written (a directory holds its name; the tests run as root, so
    // permissions would not stop the write): the run fails after its window is recorded.
    std::fs::create_dir_all(s.digest(4).join("blocker")).unwrap();
    insert(&s.mongo, &[event(hour_days_ago(6), "login", "web", None)]).await;
    let failed = s.archiver.run(&["once"]);
    std::fs::remove_dir_all(s.digest(4)).unwrap();
    assert_ne!(
        failed.code(),
        0,
        "a run whose digest cannot be written must fail"
    );
    assert!(!s.digest(4).exists());
    // Recorded but unsigned: verify says they wait, and purge leaves them in MongoDB.
    let (code, out) = s.verify(&[&s.key.1]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("await the next run"), "{out}");

    // The next run lists them: no fork, no stale entry.
    s.archiver.run(&["once"]).expect_code(0);
    assert!(s.digest(4).exists() && !s.digest(5).exists());
    s.verify_clean();

    // Written, but MongoDB's head did not move (a crash right after the files were written).
    let store = s.mongo.store().await;
    let runs = store.database().collection::<Document>("archive_runs");
    let head = runs.find_one(doc! {}).await.unwrap().unwrap();
    let head = head.get_document("digest_head").unwrap().clone();
    let mut back = head.clone();
    back.insert("sequence", 3_i64);
    back.insert(
        "path",
        format!("_digests/{}/events/000000000003.json", s.mongo.db_name),
    );
    back.insert("sha256", hex_sha256(&std::fs::read(s.digest(3)).unwrap()));
    let sig = Command::new("base64")
        .args(["-w0", &format!("{}.sig", s.digest(3).display())])
        .output()
        .unwrap();
    back.insert("signature", String::from_utf8(sig.stdout).unwrap());
    runs.update_one(doc! {}, doc! { "$set": { "digest_head": back } })
        .await
        .unwrap();
    insert(&s.mongo, &[event(hour_days_ago(7), "login", "web", None)]).await;
    s.archiver.run(&["once"]).expect_code(0);
    // Sequence 4 written again over the orphan, now with both windows.
    assert!(!s.digest(5).exists());
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.digest(4)).unwrap()).unwrap();
    assert_eq!(d["windows"].as_array().unwrap().len(), 2, "{d}");
    s.verify_clean();
}

fn hex_sha256(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_a_window_no_signed_digest_lists() {
    let s = signed_archive().await;
    let store = s.mongo.store().await;
    // As if the window's digest had not been written yet.
    let windows = store.database().collection::<Document>("archive_windows");
    windows
        .update_many(doc! {}, doc! { "$unset": { "digest_sequence": "" } })
        .await
        .unwrap();
    let r = s
        .archiver
        .clone_env()
        .env("AUDIT_RETENTION_DAYS", "1")
        .run(&["purge"])
        .expect_code(0)
        .json();
    assert_eq!(r["purged_windows"], 0, "{r}");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 3, "{r}");
    assert!(
        skipped
            .iter()
            .all(|s| s.as_str().unwrap().contains("no signed digest lists it")),
        "{r}"
    );
    assert_eq!(
        count_in_mongo(&s.mongo, hour_days_ago(10), hour_days_ago(0)).await,
        6
    );
}

const BOTO: &str = r#"
import boto3, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
op, bucket = sys.argv[2], sys.argv[3]
if op == "create":
    s3.create_bucket(Bucket=bucket)
elif op == "flip":
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".parquet")]
    body = bytearray(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    body[100] ^= 1
    s3.put_object(Bucket=bucket, Key=keys[0], Body=bytes(body))
    print(keys[0])
elif op == "delete-last-digest":
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".json"))
    s3.delete_object(Bucket=bucket, Key=keys[-1])
    print(keys[-1])
"#;

fn boto(endpoint: &str, op: &str, bucket: &str) -> String {
    let out = Command::new(python())
        .args(["-c", BOTO, endpoint, op, bucket])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_clean_archive_verifies_and_a_flipped_byte_and_a_deleted_tail_are_named() {
    let endpoint = s3_endpoint();
    let mongo = test_mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let bucket = format!("signed-{}", mongo.db_name.replace('_', "-").to_lowercase());
    boto(&endpoint, "create", &bucket);
    let archiver = Archiver::new(&mongo, &format!("s3://{bucket}/audit"))
        .env("AUDIT_S3_ENDPOINT", &endpoint)
        .env("AUDIT_S3_ALLOW_HTTP", "true")
        .env("AUDIT_S3_ACCESS_KEY_ID", "test")
        .env("AUDIT_S3_SECRET_ACCESS_KEY", "test");
    let key = new_key(&archiver, dir.path());
    let archiver = archiver.env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", key.0.to_str().unwrap());
    for days in [4, 3] {
        insert(&mongo, &[event(hour_days_ago(days), "login", "web", None)]).await;
        archiver.run(&["once"]).expect_code(0);
    }
    let pubkey = key.1.to_str().unwrap();
    let ok = archiver
        .run(&["verify", "--public-key", pubkey])
        .expect_code(0)
        .stdout();
    assert!(ok.starts_with("ok: 2 digests"), "{ok}");

    let flipped = boto(&endpoint, "flip", &bucket);
    let out = archiver
        .run(&["verify", "--public-key", pubkey])
        .expect_code(1)
        .stdout();
    let name = flipped.trim_start_matches("audit/");
    assert!(
        out.lines()
            .any(|l| l.starts_with("modified: ") && l.contains(name)),
        "{out}"
    );

    let last = boto(&endpoint, "delete-last-digest", &bucket);
    let out = archiver
        .run(&["verify", "--public-key", pubkey])
        .expect_code(1)
        .stdout();
    let name = last.trim_start_matches("audit/");
    assert!(
        out.lines()
            .any(|l| l.starts_with("missing: ") && l.contains(name)),
        "{out}"
    );
}
