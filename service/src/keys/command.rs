//! `auditlog-service keys new`: makes a key and the key-file entry that grants it.
//!
//! The key is 32 random bytes from the operating system's generator (through `rand`'s
//! `ThreadRng`, a CSPRNG it seeds), in base64url without padding (43 characters, safe in a
//! header and a shell). It is printed once and stored nowhere: the entry holds its SHA-256.
//! The entry goes through the same validation as the key file, so what is printed is always
//! accepted when appended.

use base64::Engine;

use super::digest::digest;
use super::file::{entry_text, parse, Entry, KeyFileError};
use super::rate::{Rate, PER_REPLICA};
use super::scope::{Consumers, Right, Rights};

/// `auditlog-service keys …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a new random API key: print it once, with the entry to append to the key file
    /// (AUDIT_API_KEYS_FILE). Needs no database and no running service.
    New(NewKey),
}

/// What the new key may do.
#[derive(Debug, Clone, clap::Args)]
pub struct NewKey {
    /// The key's name in logs, metrics and 403 answers (A-Z a-z 0-9 - _ ., at most 64).
    #[arg(long)]
    pub name: String,
    /// Rights, comma-separated: ingest, read.
    #[arg(long, value_delimiter = ',', required = true, value_enum)]
    pub rights: Vec<Right>,
    /// Consumers, comma-separated: exact names, prefix patterns such as `billing-*`, or `*`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub consumers: Vec<String>,
    /// Producer keys: sustained events per second (fractions allowed), enforced by each
    /// replica on its own (N replicas: up to N times this). Omitted: no limit.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: events that may come at once, and the largest batch (default: one
    /// second's worth of --rate, at least 1).
    #[arg(long, requires = "rate")]
    pub burst: Option<u32>,
    /// Print one JSON object {"key", "entry"} instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A fresh key and its entry.
#[derive(Debug, Clone)]
pub struct NewKeyOutput {
    pub key: String,
    /// The exact text to append to the key file.
    pub entry: String,
}

/// Runs a `keys` command; returns what to print.
pub fn run(command: &KeysCommand) -> Result<String, KeyFileError> {
    match command {
        KeysCommand::New(args) => {
            let out = new_key(args)?;
            Ok(if args.json {
                serde_json::json!({"key": out.key, "entry": out.entry}).to_string()
            } else {
                let mut text = format!(
                    "New API key {name:?}, shown this once (only its SHA-256 is kept):\n\n    {key}\n\n\
                     Append this entry to the key file (AUDIT_API_KEYS_FILE); the service takes it \
                     within seconds, or at once on SIGHUP:\n{entry}",
                    name = args.name,
                    key = out.key,
                    entry = out.entry
                );
                if args.rate.is_some() {
                    text.push_str(&format!("\n{PER_REPLICA}\n"));
                }
                text
            })
        }
    }
}

/// Makes the key and its entry, validated like a key file.
pub fn new_key(args: &NewKey) -> Result<NewKeyOutput, KeyFileError> {
    let bytes: [u8; 32] = rand::random();
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let invalid = |problem: String| KeyFileError::Entry {
        index: 1,
        name: args.name.clone(),
        problem,
    };
    let rate = args.rate.map(|events_per_second| Rate {
        events_per_second,
        burst: args
            .burst
            .unwrap_or_else(|| events_per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
    });
    let entry = Entry {
        name: args.name.clone(),
        digest: digest(key.as_bytes()),
        rights: Rights::of(&args.rights),
        consumers: Consumers::parse(&args.consumers).map_err(|e| invalid(e.to_string()))?,
        rate,
    };
    let text = entry_text(&entry);
    // The file's own rules (name, rights, rate) decide, so the entry is never refused later.
    let parsed = parse(&text)?;
    if parsed != [entry] {
        return Err(invalid("the entry does not read back as written".into()));
    }
    Ok(NewKeyOutput { key, entry: text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ring::{KeyRing, Keys};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        keys: KeysCommand,
    }

    fn args(line: &[&str]) -> NewKey {
        let Cli {
            keys: KeysCommand::New(args),
        } = Cli::try_parse_from(std::iter::once("keys").chain(line.iter().copied())).unwrap();
        args
    }

    #[test]
    fn a_new_key_is_random_and_its_entry_grants_it() {
        let a = args(&[
            "new",
            "--name",
            "billing-producer",
            "--rights",
            "ingest",
            "--consumers",
            "billing-*,invoices",
            "--rate",
            "2.5",
        ]);
        let out = new_key(&a).unwrap();
        assert_eq!(out.key.len(), 43, "32 bytes in base64url, no padding");
        assert!(out
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(new_key(&a).unwrap().key, out.key);
        assert!(
            !out.entry.contains(&out.key),
            "the entry holds the hash only"
        );
        let entries = parse(&out.entry).unwrap();
        assert_eq!(entries[0].rate.map(|r| r.burst), Some(3));
        let ring = KeyRing::new(&[], entries, None).unwrap();
        let key = ring.get(&digest(out.key.as_bytes())).unwrap();
        assert_eq!(key.name, "billing-producer");
        assert!(key.has(Right::Ingest) && !key.has(Right::Read));
        assert!(key.consumers.allows("invoices") && !key.consumers.allows("shipping"));
    }

    #[test]
    fn the_text_output_says_a_rate_holds_per_replica() {
        let with_rate = run(&KeysCommand::New(args(&[
            "new",
            "--name",
            "p",
            "--rights",
            "ingest",
            "--consumers",
            "*",
            "--rate",
            "10",
        ])))
        .unwrap();
        assert!(with_rate.contains("each replica on its own"), "{with_rate}");
        assert!(with_rate.contains("N times the rate"), "{with_rate}");
        let without = run(&KeysCommand::New(args(&[
            "new",
            "--name",
            "r",
            "--rights",
            "read",
            "--consumers",
            "*",
        ])))
        .unwrap();
        assert!(!without.contains("replica"), "{without}");
    }

    #[test]
    fn json_output_is_one_object_whose_entry_appends_to_a_file() {
        let a = args(&[
            "new",
            "--name",
            "reader",
            "--rights",
            "read,ingest",
            "--consumers",
            "*",
            "--json",
        ]);
        let printed = run(&KeysCommand::New(a)).unwrap();
        assert!(!printed.contains('\n') || printed.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
        let key = v["key"].as_str().unwrap();
        let entry = v["entry"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "# keys\n[[key]]\nname = \"old\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nrights = [\"read\"]\nconsumers = [\"*\"]").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(entry);
        std::fs::write(&path, text).unwrap();
        let (keys, _) = Keys::load(None, Some(&path)).unwrap();
        assert_eq!(keys.authenticate(key.as_bytes()).unwrap().name, "reader");
    }

    #[test]
    fn bad_arguments_are_refused_before_a_key_is_printed() {
        for (line, expected) in [
            (
                vec![
                    "new",
                    "--name",
                    "a b",
                    "--rights",
                    "read",
                    "--consumers",
                    "*",
                ],
                "`name` must be",
            ),
            (
                vec![
                    "new",
                    "--name",
                    "a",
                    "--rights",
                    "read",
                    "--consumers",
                    "a*b",
                ],
                "`*` may only end",
            ),
            (
                vec![
                    "new",
                    "--name",
                    "a",
                    "--rights",
                    "read",
                    "--consumers",
                    "*",
                    "--rate",
                    "5",
                ],
                "no \"ingest\" right",
            ),
        ] {
            let err = new_key(&args(&line)).unwrap_err().to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
        assert!(Cli::try_parse_from(["keys", "new", "--name", "a", "--consumers", "*"]).is_err());
        assert!(Cli::try_parse_from([
            "keys",
            "new",
            "--name",
            "a",
            "--rights",
            "write",
            "--consumers",
            "*"
        ])
        .is_err());
    }
}
