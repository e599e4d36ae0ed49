//! The key file (`AUDIT_API_KEYS_FILE`): its format, its validation, and the text of one
//! entry as `auditlog-service keys new` prints it.
//!
//! TOML, read with serde: one `[[key]]` table per key. TOML because operators edit this file by
//! hand and in Helm values — comments, no significant indentation, and a typo in a field name
//! is refused (`deny_unknown_fields`) instead of silently widening or narrowing a key.
//!
//! ```toml
//! [[key]]
//! name = "billing-producer"           # in logs and metrics; never the key
//! sha256 = "9f86d0818…"               # SHA-256 of the key, 64 hex characters
//! rights = ["ingest"]                 # ingest, read, or both
//! consumers = ["billing-*", "invoices"]   # exact names, prefix patterns, or "*"
//! rate = { events_per_second = 200, burst = 1000 }   # optional, producers only
//! ```
//!
//! The file holds hashes only, so it can sit in a ConfigMap-like place without granting
//! anything; errors never quote a `sha256` value, in case someone pasted a key there.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::digest::digest;
use super::rate::Rate;
use super::scope::{Consumers, Right, Rights};

/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("not valid TOML for a key file at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "it holds no [[key]] entries (an empty file would lock every client out; it is refused)"
    )]
    NoKeys,
    #[error("entry {index} ({name:?}): {problem}")]
    Entry {
        /// 1-based position in the file.
        index: usize,
        name: String,
        problem: String,
    },
    #[error("entries {first} and {second} are both named {name:?}: names must be unique")]
    DuplicateName {
        first: usize,
        second: usize,
        name: String,
    },
    #[error("entries {first:?} and {second:?} have the same sha256: each key may appear once")]
    DuplicateKey { first: String, second: String },
    #[error("entry {name:?} has the sha256 of a key that is also in AUDIT_API_KEY: each key may appear once")]
    AlsoInEnv { name: String },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    key: Vec<EntryDoc>,
}

/// One `[[key]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    name: String,
    sha256: String,
    rights: Vec<Right>,
    consumers: Vec<String>,
    #[serde(default)]
    rate: Option<Rate>,
}

/// One validated entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    pub rights: Rights,
    pub consumers: Consumers,
    pub rate: Option<Rate>,
}

/// Reads the key file: its text, and the SHA-256 of its content (to notice changes).
pub fn read(path: &Path) -> Result<(String, [u8; 32]), KeyFileError> {
    let bytes = std::fs::read(path).map_err(|e| KeyFileError::Read(e.to_string()))?;
    let content = digest(&bytes);
    Ok((text_of(bytes)?, content))
}

/// The file's bytes as text.
pub fn text_of(bytes: Vec<u8>) -> Result<String, KeyFileError> {
    String::from_utf8(bytes).map_err(|e| {
        KeyFileError::Read(format!(
            "not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Parses and validates a whole key file.
pub fn parse(text: &str) -> Result<Vec<Entry>, KeyFileError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    if doc.key.is_empty() {
        return Err(KeyFileError::NoKeys);
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut digests: HashMap<[u8; 32], &str> = HashMap::new();
    let mut entries = Vec::with_capacity(doc.key.len());
    for (i, raw) in doc.key.iter().enumerate() {
        let index = i + 1;
        let entry = validate(raw).map_err(|problem| KeyFileError::Entry {
            index,
            name: raw.name.clone(),
            problem,
        })?;
        if let Some(first) = names.insert(raw.name.as_str(), index) {
            return Err(KeyFileError::DuplicateName {
                first,
                second: index,
                name: raw.name.clone(),
            });
        }
        if let Some(first) = digests.insert(entry.digest, raw.name.as_str()) {
            return Err(KeyFileError::DuplicateKey {
                first: first.to_owned(),
                second: raw.name.clone(),
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn validate(raw: &EntryDoc) -> Result<Entry, String> {
    let name = &raw.name;
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "`name` must be 1 to {MAX_NAME_LEN} characters among A-Z a-z 0-9 - _ ."
        ));
    }
    let digest = parse_digest(&raw.sha256).ok_or_else(|| {
        "`sha256` must be the 64 hexadecimal characters of the key's SHA-256 (the hash, not the key: printf %s \"$KEY\" | sha256sum)".to_owned()
    })?;
    let rights = Rights::of(&raw.rights);
    if rights.is_empty() {
        return Err("`rights` is empty: give \"ingest\", \"read\" or both".into());
    }
    let consumers = Consumers::parse(&raw.consumers).map_err(|e| e.to_string())?;
    if let Some(rate) = raw.rate {
        if let Some(problem) = rate.problem() {
            return Err(problem);
        }
        if !rights.has(Right::Ingest) {
            return Err(
                "`rate` limits events sent; this key has no \"ingest\" right, so it would do nothing"
                    .into(),
            );
        }
    }
    Ok(Entry {
        name: name.clone(),
        digest,
        rights,
        consumers,
        rate: raw.rate,
    })
}

fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut digest).ok()?;
    Some(digest)
}

/// One line, with the position: TOML's own message spans several lines with a snippet of
/// the file, and a refused reload is reported in one log line.
fn syntax_error(text: &str, err: &toml::de::Error) -> KeyFileError {
    let (line, column) = match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    KeyFileError::Syntax {
        line,
        column,
        message: err.message().trim().replace('\n', " "),
    }
}

/// The text of one entry, to append to a key file: starts with a blank line (so appending to
/// a file without a final newline stays valid) and ends with a newline.
pub fn entry_text(entry: &Entry) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rights: Vec<String> = [Right::Ingest, Right::Read]
        .into_iter()
        .filter(|r| entry.rights.has(*r))
        .map(|r| r.as_str().to_owned())
        .collect();
    let mut text = format!(
        "\n[[key]]\nname = {}\nsha256 = \"{}\"\nrights = [{}]\nconsumers = [{}]\n",
        toml_string(&entry.name),
        hex::encode(entry.digest),
        list(&rights),
        list(&entry.consumers.patterns()),
    );
    if let Some(rate) = entry.rate {
        text.push_str(&format!(
            "rate = {{ events_per_second = {}, burst = {} }}\n",
            toml_float(rate.events_per_second),
            rate.burst
        ));
    }
    text
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number TOML reads back as the same value: integers without a fraction.
fn toml_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn entry(name: &str, hash: &str, extra: &str) -> String {
        format!(
            "[[key]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrights = [\"ingest\"]\nconsumers = [\"billing-*\"]\n{extra}\n"
        )
    }

    #[test]
    fn a_producer_and_a_reader() {
        let text = format!(
            "# comment\n{}\n[[key]]\nname = \"reader\"\nsha256 = \"{}\"\nrights = [\"read\"]\nconsumers = [\"*\"]\n",
            entry(
                "billing-producer",
                HASH_A,
                "rate = { events_per_second = 200, burst = 1000 }"
            ),
            HASH_B.to_uppercase(),
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        let p = &entries[0];
        assert_eq!(p.name, "billing-producer");
        assert_eq!(hex::encode(p.digest), HASH_A);
        assert!(p.rights.has(Right::Ingest) && !p.rights.has(Right::Read));
        assert!(p.consumers.allows("billing-eu") && !p.consumers.allows("shipping"));
        assert_eq!(
            p.rate,
            Some(Rate {
                events_per_second: 200.0,
                burst: 1000
            })
        );
        let r = &entries[1];
        assert_eq!(hex::encode(r.digest), HASH_B, "hex in any case");
        assert_eq!(r.consumers, Consumers::All);
        assert_eq!(r.rate, None);
    }

    fn problem(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry_and_the_field() {
        let cases = [
            (entry("a", HASH_A, "ratee = 3"), "unknown field `ratee`"),
            (
                entry("a", HASH_A, "").replace("[\"ingest\"]", "[\"write\"]"),
                "unknown variant `write`",
            ),
            (
                entry("a", HASH_A, "").replace("[\"ingest\"]", "[]"),
                "entry 1 (\"a\"): `rights` is empty",
            ),
            (
                entry("a", HASH_A, "").replace("[\"billing-*\"]", "[]"),
                "`consumers` is empty",
            ),
            (
                entry("a", HASH_A, "").replace("billing-*", "bil*ling"),
                "`*` may only end a pattern",
            ),
            (entry("a b", HASH_A, ""), "`name` must be 1 to 64"),
            (entry("", HASH_A, ""), "`name` must be 1 to 64"),
            (entry("a", &HASH_A[1..], ""), "`sha256` must be the 64"),
            (
                entry("a", HASH_A, "rate = { events_per_second = 0, burst = 5 }"),
                "events_per_second` must be above 0",
            ),
            (
                entry("a", HASH_A, "rate = { events_per_second = 5 }"),
                "missing field `burst`",
            ),
            (
                entry("a", HASH_A, "")
                    .replace("[\"ingest\"]", "[\"read\"]")
                    .replace("\n\n", "\nrate = { events_per_second = 5, burst = 5 }\n"),
                "no \"ingest\" right",
            ),
            (
                format!("{}{}", entry("a", HASH_A, ""), entry("a", HASH_B, "")),
                "entries 1 and 2 are both named \"a\"",
            ),
            (
                format!("{}{}", entry("a", HASH_A, ""), entry("b", HASH_A, "")),
                "entries \"a\" and \"b\" have the same sha256",
            ),
            (String::new(), "no [[key]] entries"),
            ("# nothing yet\n".into(), "no [[key]] entries"),
            ("[[keys]]\nname = \"a\"\n".into(), "unknown field `keys`"),
        ];
        for (text, expected) in cases {
            let got = problem(&text);
            assert!(got.contains(expected), "{text}\n=> {got}");
        }
    }

    #[test]
    fn syntax_errors_are_one_line_with_the_position() {
        let text = format!("{}name = \"unterminated\n", entry("a", HASH_A, ""));
        let err = parse(&text).unwrap_err();
        let KeyFileError::Syntax { line, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*line, 7, "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn a_sha256_value_is_never_quoted_in_an_error() {
        // Someone pasted the key itself instead of its hash.
        let key = "u6Jx1rK2mQpW8vZyT3nB5cD7eF9gH0iJkLmNoPqRsTu";
        let err = problem(&entry("a", key, ""));
        assert!(err.contains("`sha256` must be"), "{err}");
        assert!(!err.contains(key), "{err}");
    }

    #[test]
    fn an_entry_as_printed_parses_back_to_itself() {
        let original = Entry {
            name: "billing.producer_1".into(),
            digest: [7; 32],
            rights: Rights::of(&[Right::Ingest, Right::Read]),
            consumers: Consumers::parse(&["billing-*", "in\"voi\\ces", "é"]).unwrap(),
            rate: Some(Rate {
                events_per_second: 0.5,
                burst: 3,
            }),
        };
        let text = entry_text(&original);
        assert!(
            text.starts_with("\n[[key]]\n") && text.ends_with('\n'),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), vec![original.clone()]);
        // Appended to a file that lacks its final newline, it is still a valid file.
        let file = format!("{}{}", entry("other", HASH_A, "").trim_end(), text);
        assert_eq!(parse(&file).unwrap().len(), 2);
        let whole = Entry {
            rate: Some(Rate {
                events_per_second: 200.0,
                burst: 1000,
            }),
            ..original
        };
        assert!(entry_text(&whole).contains("events_per_second = 200,"));
        assert_eq!(parse(&entry_text(&whole)).unwrap(), vec![whole]);
    }
}
