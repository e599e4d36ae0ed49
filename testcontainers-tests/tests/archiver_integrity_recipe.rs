//! The auditor's recipe in docs/integrity.md works as written: the ```sh block after
//! `<!-- auditor-recipe -->`, run with bash and nothing of ours but the archive and the public
//! key, accepts an archive the real archiver signed over two runs (so the link from the second
//! digest to the first is checked), reports the key id `keys new` printed, and fails once one
//! byte of a listed Parquet file is flipped. `verify --public-key` agrees both times.

#[path = "support/archiver.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use chrono::Duration;
use support::*;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::repo_root;

const MARKER: &str = "<!-- auditor-recipe -->";

/// The recipe block, exactly as docs/integrity.md shows it.
fn recipe() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/integrity.md")).unwrap();
    let after = doc
        .split_once(MARKER)
        .unwrap_or_else(|| panic!("docs/integrity.md has no {MARKER}"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block right after the marker");
    let end = block.find("\n```").expect("the end of the recipe block");
    block[..=end].to_owned()
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_recipe(script: &Path, archive: &Path, public_key: &Path, digest: &str) -> Outcome {
    let out = Command::new("bash")
        .arg("-e")
        .arg(script)
        .env("ARCHIVE", archive)
        .env("PUB", public_key)
        .env("DIGEST", digest)
        .output()
        .expect("run bash");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `sha256:` and 64 hex digits after `key id: ` in `text`.
fn key_id_in(text: &str) -> Option<String> {
    let at = text.find("key id: sha256:")? + "key id: ".len();
    let id: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    (id.len() == "sha256:".len() + 64).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_auditor_recipe_checks_a_signed_archive_and_catches_a_flipped_byte() {
    let mongo = test_mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let keys = dir.path().join("keys");
    let url = format!("file://{}", archive.display());
    let archiver = Archiver::new(&mongo, &url);

    let made = archiver
        .run(&["keys", "new", "--out", keys.to_str().unwrap()])
        .expect_code(0);
    let key_id = key_id_in(&format!("{}{}", made.stdout(), made.stderr())).unwrap_or_else(|| {
        panic!(
            "`keys new` printed no key id:\n{}{}",
            made.stdout(),
            made.stderr()
        )
    });
    let private = keys.join("archive-signing.key");
    let public = keys.join("archive-signing.pub");
    assert!(private.is_file() && public.is_file());
    let archiver = archiver.env("AUDIT_ARCHIVE_SIGNING_KEY_FILE", private.to_str().unwrap());

    // Two runs, two digests: the second's `previous` names the first.
    let base = hour_days_ago(3);
    let first: Vec<_> = tricky_events(base).into_iter().take(40).collect();
    insert(&mongo, &first).await;
    archiver.run(&["once"]).expect_code(0);
    let later = base + Duration::days(1);
    let second: Vec<_> = (0..30)
        .map(|i| event(later + Duration::seconds(i * 97), "login", "c-later", None))
        .collect();
    insert(&mongo, &second).await;
    archiver.run(&["once"]).expect_code(0);

    let digests = format!("_digests/{}/events", mongo.db_name);
    let head = format!("{digests}/000000000002.json");
    assert!(
        archive.join(&head).is_file(),
        "no second digest: {:?}",
        files_under(&archive)
    );
    assert!(archive
        .join(format!("{digests}/000000000001.json.sig"))
        .is_file());
    assert!(!archive
        .join(format!("{digests}/000000000003.json"))
        .exists());

    let script = dir.path().join("recipe.sh");
    std::fs::write(&script, recipe()).unwrap();

    let ok = run_recipe(&script, &archive, &public, &head);
    assert_eq!(
        ok.code, 0,
        "the recipe refused a good archive:\n{}{}",
        ok.stdout, ok.stderr
    );
    assert_eq!(ok.stdout.lines().last(), Some("OK"), "{}", ok.stdout);
    assert_eq!(
        key_id_in(&ok.stdout).as_deref(),
        Some(key_id.as_str()),
        "{}",
        ok.stdout
    );
    let verify = Archiver::new(&mongo, &url)
        .run(&["verify", "--public-key", public.to_str().unwrap()])
        .expect_code(0);
    assert!(verify.stdout().starts_with("ok:"), "{}", verify.stdout());

    // One byte of a file the first digest lists.
    let digest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(archive.join(format!("{digests}/000000000001.json"))).unwrap(),
    )
    .unwrap();
    let listed = digest["files"][0]["path"]
        .as_str()
        .expect("a listed file")
        .to_owned();
    assert!(listed.ends_with(".parquet"), "{listed}");
    let file = archive.join(&listed);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let bad = run_recipe(&script, &archive, &public, &head);
    assert_ne!(
        bad.code, 0,
        "the recipe accepted a flipped byte:\n{}{}",
        bad.stdout, bad.stderr
    );
    assert_ne!(bad.stdout.lines().last(), Some("OK"));
    assert!(
        bad.stderr.contains(&listed),
        "the recipe did not name the file:\n{}",
        bad.stderr
    );
    let verify = Archiver::new(&mongo, &url)
        .run(&["verify", "--public-key", public.to_str().unwrap()])
        .expect_code(1);
    assert!(
        verify
            .stdout()
            .lines()
            .any(|l| l.starts_with("modified: ") && l.contains(&listed)),
        "{}",
        verify.stdout()
    );
}
