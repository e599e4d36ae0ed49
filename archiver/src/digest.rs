//! Signed, chained digests of the archive: after each run that recorded windows, one canonical
//! JSON file under `_digests/<db>/<collection>/` lists every file those windows hold (path,
//! size, SHA-256, rows, window, earliest and latest `created_at`) and names the previous
//! digest by path, SHA-256 and signature; its Ed25519 signature lies beside it. MongoDB keeps
//! the chain's head ([`crate::state::DigestHead`]), so a deleted tail is noticed too.
//! `docs/integrity.md` is the format's reference and the auditor's recipe.
//!
//! Exactly once: the windows a digest lists are those recorded but not listed by a digest at or
//! before the head. The steps are: write the digest (under its sequence number, so a crashed
//! attempt's file is overwritten by the next, never left beside it), mark its windows, then
//! advance the head. A crash at any step leaves the head where it was and the windows unlisted,
//! and the next run writes that sequence number again, now with them.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{ArchiveError, Result};
use crate::keys::Signer25519;
use crate::sink::Sink;
use crate::state::{DigestHead, Lease, State, WindowRecord};

/// The value of `format` in every digest this archiver writes.
pub const FORMAT: &str = "auditlog-archive-digest/1";

/// Where the digests of `<db>/<collection>` live, relative to the archive root.
pub fn dir(base: &str) -> String {
    format!("_digests/{base}")
}

/// The digest with this sequence number, relative to the archive root.
pub fn path(base: &str, sequence: i64) -> String {
    format!("{}/{sequence:012}.json", dir(base))
}

/// The signature file of a digest.
pub fn signature_path(digest: &str) -> String {
    format!("{digest}.sig")
}

/// One digest. Fields are declared in alphabetical order and serialized compactly, which makes
/// the JSON canonical (sorted keys, no whitespace): the signed bytes can be re-derived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Digest {
    pub archiver_version: String,
    pub created_at: String,
    pub files: Vec<DigestFile>,
    pub format: String,
    pub key_id: String,
    pub previous: Option<Previous>,
    pub range: Range,
    pub sequence: i64,
    pub source: String,
    pub windows: Vec<DigestWindow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DigestFile {
    pub bytes: i64,
    pub max_created_at: Option<String>,
    pub min_created_at: Option<String>,
    /// Relative to the archive root.
    pub path: String,
    pub rows: i64,
    pub sha256: String,
    pub window_end: String,
    pub window_start: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Previous {
    pub path: String,
    pub sha256: String,
    /// Standard base64.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Range {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DigestWindow {
    pub checksum: String,
    pub end: String,
    pub rows: i64,
    pub start: String,
}

/// RFC 3339, UTC, milliseconds, `Z`: one spelling per instant.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn bson_instant(t: bson::DateTime) -> String {
    instant(t.to_chrono())
}

impl Digest {
    /// The digest listing `windows` (sorted here), after `previous`.
    pub fn build(
        sequence: i64,
        previous: Option<Previous>,
        key_id: &str,
        source: &str,
        base: &str,
        windows: &[WindowRecord],
    ) -> Self {
        let mut windows: Vec<&WindowRecord> = windows.iter().collect();
        windows.sort_by_key(|w| w.start);
        let mut files: Vec<DigestFile> = windows
            .iter()
            .flat_map(|w| {
                w.files.iter().map(|f| DigestFile {
                    bytes: f.bytes,
                    max_created_at: f.max_created_at.map(bson_instant),
                    min_created_at: f.min_created_at.map(bson_instant),
                    path: format!("{base}/{}", f.path),
                    rows: f.rows,
                    sha256: f.sha256.clone(),
                    window_end: bson_instant(w.end),
                    window_start: bson_instant(w.start),
                })
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let range = Range {
            from: windows
                .first()
                .map_or_else(String::new, |w| bson_instant(w.start)),
            to: windows
                .iter()
                .map(|w| w.end)
                .max()
                .map_or_else(String::new, bson_instant),
        };
        Digest {
            archiver_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: instant(Utc::now()),
            files,
            format: FORMAT.to_owned(),
            key_id: key_id.to_owned(),
            previous,
            range,
            sequence,
            source: source.to_owned(),
            windows: windows
                .iter()
                .map(|w| DigestWindow {
                    checksum: w.checksum.clone(),
                    end: bson_instant(w.end),
                    rows: w.rows,
                    start: bson_instant(w.start),
                })
                .collect(),
        }
    }

    /// The canonical bytes: what is written and signed.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| ArchiveError::Other(format!("cannot encode a digest: {e}")))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What [`seal`] wrote.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub path: String,
    pub sequence: i64,
    pub windows: usize,
    pub files: usize,
}

/// Writes the next digest of the chain for every recorded window no digest lists yet, under
/// the lease. `None` when there is none. An error fails the run: with a key, nothing stays
/// unsigned silently (the windows wait for the next run's digest, and purge keeps them).
pub async fn seal(
    state: &State,
    sink: &Sink,
    signer: &Signer25519,
    source: &str,
    lease: &Lease,
) -> Result<Option<Sealed>> {
    let head = state.digest_head().await?;
    let head_seq = head.as_ref().map_or(0, |h| h.sequence);
    let pending = state.undigested(head_seq).await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let previous = head.map(|h| Previous {
        path: h.path,
        sha256: h.sha256,
        signature: h.signature,
    });
    let sequence = head_seq + 1;
    let digest = Digest::build(
        sequence,
        previous,
        signer.id(),
        source,
        sink.base(),
        &pending,
    );
    let bytes = digest.to_bytes()?;
    let signature = signer.sign(&bytes);
    let path = path(sink.base(), sequence);
    let sha256 = sha256_hex(&bytes);
    lease.check()?;
    // The signature after the digest: a digest without its signature fails verification until
    // the next attempt rewrites both; a signature without its digest would be an orphan.
    sink.put_root(&path, bytes).await?;
    sink.put_root(&signature_path(&path), signature.to_vec())
        .await?;
    let starts: Vec<bson::DateTime> = pending.iter().map(|r| r.start).collect();
    lease.check()?;
    state.mark_digested(&starts, sequence).await?;
    state
        .advance_digest_head(
            head_seq,
            &DigestHead {
                sequence,
                path: path.clone(),
                sha256,
                signature: base64(&signature),
                key_id: signer.id().to_owned(),
                written_at: bson::DateTime::now(),
            },
        )
        .await?;
    tracing::info!(digest = %path, sequence, windows = pending.len(), files = digest.files.len(),
        key_id = %signer.id(), "signed archive digest written");
    Ok(Some(Sealed {
        path,
        sequence,
        windows: pending.len(),
        files: digest.files.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileRecord;

    fn record(start_ms: i64, files: &[&str]) -> WindowRecord {
        WindowRecord {
            start: bson::DateTime::from_millis(start_ms),
            end: bson::DateTime::from_millis(start_ms + 3_600_000),
            source: "db.events".into(),
            archive_url: "./archive".into(),
            files: files
                .iter()
                .map(|p| FileRecord {
                    path: (*p).to_owned(),
                    rows: 2,
                    bytes: 10,
                    sha256: "ab".repeat(32),
                    min_created_at: Some(bson::DateTime::from_millis(start_ms + 1)),
                    max_created_at: Some(bson::DateTime::from_millis(start_ms + 2)),
                })
                .collect(),
            rows: 2 * files.len() as i64,
            bytes: 10,
            checksum: "c".into(),
            archived_at: bson::DateTime::from_millis(0),
            archiver_version: "0".into(),
            verified_at: None,
            purged_at: None,
            purged_rows: None,
            digest_sequence: None,
        }
    }

    #[test]
    fn the_json_is_canonical_sorted_keys_and_no_whitespace() {
        let d = Digest::build(
            2,
            Some(Previous {
                path: "_digests/db/events/000000000001.json".into(),
                sha256: "00".into(),
                signature: "c2ln".into(),
            }),
            "sha256:k",
            "db.events",
            "db/events",
            &[
                record(3_600_000, &["dt=x/b.parquet"]),
                record(0, &["dt=x/a.parquet"]),
            ],
        );
        let bytes = d.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains(' ') && !text.contains('\n'), "{text}");
        // Keys sorted at every level: re-serializing through a sorted map changes nothing.
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        fn sorted(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Object(m) => {
                    let keys: Vec<&String> = m.keys().collect();
                    let mut s = keys.clone();
                    s.sort();
                    keys == s && m.values().all(sorted)
                }
                serde_json::Value::Array(a) => a.iter().all(sorted),
                _ => true,
            }
        }
        assert!(sorted(&value), "{text}");
        assert!(text.starts_with("{\"archiver_version\":"));
        // Files by path, windows by start, paths from the archive root.
        assert_eq!(d.files[0].path, "db/events/dt=x/a.parquet");
        assert_eq!(d.windows[0].start, "1970-01-01T00:00:00.000Z");
        assert_eq!(d.range.from, "1970-01-01T00:00:00.000Z");
        assert_eq!(d.range.to, "1970-01-01T02:00:00.000Z");
        assert_eq!(
            d.files[0].min_created_at.as_deref(),
            Some("1970-01-01T00:00:00.001Z")
        );
        let back: Digest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn digest_paths_sort_by_sequence() {
        assert_eq!(path("db/events", 7), "_digests/db/events/000000000007.json");
        assert!(path("db/events", 10) > path("db/events", 9));
        assert_eq!(
            signature_path(&path("db/events", 1)),
            "_digests/db/events/000000000001.json.sig"
        );
    }
}
