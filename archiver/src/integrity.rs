//! `verify --public-key`: checks a signed archive against its digests and MongoDB's archive
//! state — every signature, the chain from the first digest to the head MongoDB names, every
//! listed file's size and SHA-256, no data file the digests do not list, and every recorded
//! window listed. Each problem is named with its kind ([`Kind`]) and the file or digest.
//!
//! Files are hashed in parallel ([`PARALLEL_READS`]), streamed: memory stays at a few chunks
//! per read whatever the file sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::digest::{self, Digest};
use crate::error::Result;
use crate::keys::PublicKeys;
use crate::sink::Sink;
use crate::state::State;

/// Files read at once: enough to keep S3 or HDFS busy, few enough for a small pod.
pub const PARALLEL_READS: usize = 8;

/// What is wrong, in the words `verify` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    #[serde(rename = "modified")]
    Modified,
    #[serde(rename = "missing")]
    Missing,
    #[serde(rename = "unlisted")]
    Unlisted,
    #[serde(rename = "chain broken")]
    ChainBroken,
    #[serde(rename = "bad signature")]
    BadSignature,
    #[serde(rename = "unknown key")]
    UnknownKey,
    #[serde(rename = "gap")]
    Gap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Modified => "modified",
            Kind::Missing => "missing",
            Kind::Unlisted => "unlisted",
            Kind::ChainBroken => "chain broken",
            Kind::BadSignature => "bad signature",
            Kind::UnknownKey => "unknown key",
            Kind::Gap => "gap",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub kind: Kind,
    /// The file or digest, relative to the archive root (a window's start for a gap).
    pub name: String,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.kind.as_str(), self.name, self.detail)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct IntegrityReport {
    pub ok: bool,
    pub digests: usize,
    pub first_sequence: Option<i64>,
    pub last_sequence: Option<i64>,
    pub key_ids: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    /// Files of windows recorded after the latest digest: not signed yet, not a problem.
    pub pending_files: usize,
    pub problems: Vec<Problem>,
}

impl IntegrityReport {
    /// The one line printed when nothing is wrong.
    pub fn summary(&self) -> String {
        let seq = match (self.first_sequence, self.last_sequence) {
            (Some(a), Some(b)) => format!(" (sequence {a}–{b})"),
            _ => String::new(),
        };
        let pending = if self.pending_files > 0 {
            format!(
                "; {} files recorded after the latest digest await the next run's",
                self.pending_files
            )
        } else {
            String::new()
        };
        format!(
            "ok: {} digests{seq}, {} files, {} bytes verified; keys {}{pending}",
            self.digests,
            self.files,
            self.bytes,
            if self.key_ids.is_empty() {
                "none".to_owned()
            } else {
                self.key_ids.join(", ")
            }
        )
    }
}

/// The window range `verify --from/--to` restricts the file checks to; signatures, the chain
/// and the listing of the digest directory are always checked whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    fn overlaps(&self, start: &str, end: &str) -> bool {
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let (Some(s), Some(e)) = (parse(start), parse(end)) else {
            return true;
        };
        self.from.is_none_or(|f| e > f) && self.to.is_none_or(|t| s < t)
    }
}

/// A listed file and what reading it found: its size and SHA-256, or that it is gone.
type Read<'a> = (&'a digest::DigestFile, Result<Option<(u64, String)>>);

/// One digest as found.
struct Found {
    path: String,
    sequence: i64,
    bytes: bytes::Bytes,
    digest: Option<Digest>,
    signature: Option<bytes::Bytes>,
}

pub async fn check(
    state: &State,
    sink: &Sink,
    keys: &PublicKeys,
    range: Range,
) -> Result<IntegrityReport> {
    let mut report = IntegrityReport::default();
    let mut problems = vec![];
    let base = sink.base().to_owned();
    let found = read_digests(sink, &base, &mut problems).await?;
    check_chain(&found, keys, &mut problems, &mut report);
    let head = state.digest_head().await?;
    check_head(&found, head.as_ref(), &mut problems);

    // The latest listing of each path wins: a window archived again is listed again.
    let mut listed: BTreeMap<String, digest::DigestFile> = BTreeMap::new();
    let mut listed_windows: BTreeSet<String> = BTreeSet::new();
    for f in &found {
        if let Some(d) = &f.digest {
            for file in &d.files {
                listed.insert(file.path.clone(), file.clone());
            }
            listed_windows.extend(d.windows.iter().map(|w| w.start.clone()));
        }
    }
    let head_seq = head.as_ref().map_or(0, |h| h.sequence);
    let records = state.all().await?;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    for r in &records {
        let start = digest::instant(r.start.to_chrono());
        let end = digest::instant(r.end.to_chrono());
        let listed_by_head = r.digest_sequence.is_some_and(|s| s <= head_seq);
        if !listed_by_head {
            pending.extend(r.files.iter().map(|f| format!("{base}/{}", f.path)));
            continue;
        }
        if !listed_windows.contains(&start) && range.overlaps(&start, &end) {
            problems.push(Problem {
                kind: Kind::Gap,
                name: start.clone(),
                detail: format!(
                    "window {start} .. {end} is recorded as listed by digest {} but no digest lists it",
                    r.digest_sequence.unwrap_or_default()
                ),
            });
        }
    }
    let recorded: BTreeSet<String> = records
        .iter()
        .map(|r| digest::instant(r.start.to_chrono()))
        .collect();
    for f in &found {
        for w in f.digest.iter().flat_map(|d| &d.windows) {
            if !recorded.contains(&w.start) && range.overlaps(&w.start, &w.end) {
                problems.push(Problem {
                    kind: Kind::Gap,
                    name: w.start.clone(),
                    detail: format!(
                        "{} lists window {} .. {}, which the archive state does not record",
                        f.path, w.start, w.end
                    ),
                });
            }
        }
    }

    check_files(
        sink,
        &base,
        &listed,
        &pending,
        range,
        &mut problems,
        &mut report,
    )
    .await?;
    report.pending_files = pending.len();
    problems.sort();
    problems.dedup();
    report.ok = problems.is_empty();
    report.problems = problems;
    Ok(report)
}

/// Every digest and signature under the collection's digest directory, by sequence; anything
/// else there is unlisted.
async fn read_digests(sink: &Sink, base: &str, problems: &mut Vec<Problem>) -> Result<Vec<Found>> {
    let dir = digest::dir(base);
    let mut sequences: BTreeMap<i64, String> = BTreeMap::new();
    let mut signatures: BTreeSet<String> = BTreeSet::new();
    for (path, _) in sink.list_root(&dir).await? {
        let name = path.rsplit('/').next().unwrap_or_default();
        let seq = name
            .strip_suffix(".json")
            .filter(|s| s.len() == 12)
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(seq) = seq {
            sequences.insert(seq, path);
        } else if name.ends_with(".json.sig") {
            signatures.insert(path);
        } else {
            problems.push(Problem {
                kind: Kind::Unlisted,
                name: path,
                detail: "not a digest or a signature".into(),
            });
        }
    }
    for sig in &signatures {
        let digest = sig.trim_end_matches(".sig");
        if !sequences.values().any(|p| p == digest) {
            problems.push(Problem {
                kind: Kind::Missing,
                name: digest.to_owned(),
                detail: format!("{sig} exists but the digest it signs does not"),
            });
        }
    }
    let mut found = vec![];
    for (sequence, path) in sequences {
        let Some(bytes) = sink.get_root(&path).await? else {
            continue;
        };
        let signature = sink.get_root(&digest::signature_path(&path)).await?;
        let digest = serde_json::from_slice::<Digest>(&bytes).ok();
        found.push(Found {
            path,
            sequence,
            bytes,
            digest,
            signature,
        });
    }
    Ok(found)
}

/// Signatures, and each digest naming the one before it.
fn check_chain(
    found: &[Found],
    keys: &PublicKeys,
    problems: &mut Vec<Problem>,
    report: &mut IntegrityReport,
) {
    let mut key_ids = BTreeSet::new();
    let mut prev: Option<&Found> = None;
    for f in found {
        report.digests += 1;
        report.first_sequence.get_or_insert(f.sequence);
        report.last_sequence = Some(f.sequence);
        let problem = |kind, detail: String| Problem {
            kind,
            name: f.path.clone(),
            detail,
        };
        let Some(d) = &f.digest else {
            problems.push(problem(Kind::BadSignature, "not a readable digest".into()));
            prev = Some(f);
            continue;
        };
        match &f.signature {
            None => problems.push(problem(
                Kind::BadSignature,
                "its .sig file is missing".into(),
            )),
            Some(sig) => match keys.verify(&d.key_id, &f.bytes, sig) {
                None => problems.push(problem(
                    Kind::UnknownKey,
                    format!(
                        "signed by {}, which is not among the public keys given",
                        d.key_id
                    ),
                )),
                Some(false) => problems.push(problem(
                    Kind::BadSignature,
                    format!("the signature does not match its bytes under {}", d.key_id),
                )),
                Some(true) => {
                    key_ids.insert(d.key_id.clone());
                }
            },
        }
        if d.sequence != f.sequence {
            problems.push(problem(
                Kind::ChainBroken,
                format!(
                    "its name says sequence {} but it says {}",
                    f.sequence, d.sequence
                ),
            ));
        }
        match (prev, &d.previous) {
            (None, None) if f.sequence == 1 => {}
            (None, _) => problems.push(problem(
                Kind::ChainBroken,
                format!(
                    "the chain starts here, at sequence {}: the digests before it are missing",
                    f.sequence
                ),
            )),
            (Some(_), None) => problems.push(problem(
                Kind::ChainBroken,
                "names no previous digest, but one precedes it".into(),
            )),
            (Some(p), Some(link)) => {
                if p.sequence + 1 != f.sequence {
                    problems.push(problem(
                        Kind::ChainBroken,
                        format!(
                            "follows sequence {}: digest(s) {}..{} are missing",
                            p.sequence,
                            p.sequence + 1,
                            f.sequence - 1
                        ),
                    ));
                } else if link.path != p.path
                    || link.sha256 != digest::sha256_hex(&p.bytes)
                    || Some(link.signature.as_str())
                        != p.signature.as_ref().map(|s| digest::base64(s)).as_deref()
                {
                    problems.push(problem(
                        Kind::ChainBroken,
                        format!(
                            "its link to {} does not match that digest's bytes or signature",
                            link.path
                        ),
                    ));
                }
            }
        }
        prev = Some(f);
    }
    report.key_ids = key_ids.into_iter().collect();
}

/// The latest digest must be the one MongoDB's archive state names: a deleted or replaced tail
/// leaves an intact-looking shorter chain otherwise.
fn check_head(
    found: &[Found],
    head: Option<&crate::state::DigestHead>,
    problems: &mut Vec<Problem>,
) {
    let last = found.last();
    match (head, last) {
        (None, None) => {}
        (None, Some(l)) => problems.push(Problem {
            kind: Kind::ChainBroken,
            name: l.path.clone(),
            detail: "the archive state names no digest, yet digests exist".into(),
        }),
        (Some(h), None) => problems.push(Problem {
            kind: Kind::Missing,
            name: h.path.clone(),
            detail: format!(
                "the archive state names digest {} as the latest; no digest is left",
                h.sequence
            ),
        }),
        (Some(h), Some(l)) => {
            if let Some(f) = found.iter().find(|f| f.sequence == h.sequence) {
                if digest::sha256_hex(&f.bytes) != h.sha256 {
                    problems.push(Problem {
                        kind: Kind::Modified,
                        name: f.path.clone(),
                        detail: "its SHA-256 is not the one the archive state recorded".into(),
                    });
                }
            } else {
                problems.push(Problem {
                    kind: Kind::Missing,
                    name: h.path.clone(),
                    detail: format!(
                        "the archive state names it (sequence {}) as the latest digest",
                        h.sequence
                    ),
                });
            }
            if l.sequence > h.sequence {
                problems.push(Problem {
                    kind: Kind::ChainBroken,
                    name: l.path.clone(),
                    detail: format!(
                        "beyond the latest digest the archive state names (sequence {})",
                        h.sequence
                    ),
                });
            }
        }
    }
}

/// Listed files against what the collection's tree holds: size and SHA-256 of each, in
/// parallel; files nobody lists.
async fn check_files(
    sink: &Sink,
    base: &str,
    listed: &BTreeMap<String, digest::DigestFile>,
    pending: &BTreeSet<String>,
    range: Range,
    problems: &mut Vec<Problem>,
    report: &mut IntegrityReport,
) -> Result<()> {
    let present: BTreeMap<String, u64> = sink
        .list_root(base)
        .await?
        .into_iter()
        .filter(|(p, _)| is_data_file(p))
        .collect();
    for path in present.keys() {
        if !listed.contains_key(path) && !pending.contains(path) {
            problems.push(Problem {
                kind: Kind::Unlisted,
                name: path.clone(),
                detail: "no digest lists this file".into(),
            });
        }
    }
    let todo: Vec<&digest::DigestFile> = listed
        .values()
        .filter(|f| range.overlaps(&f.window_start, &f.window_end))
        .collect();
    let total: u64 = todo.iter().map(|f| f.bytes.max(0) as u64).sum();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let results: Vec<Read<'_>> = futures::stream::iter(todo)
        .map(|f| {
            let bar = bar.clone();
            async move {
                let r = sink
                    .size_and_sha256(&f.path, |n| {
                        if let Some(b) = &bar {
                            b.inc(n);
                        }
                    })
                    .await;
                (f, r)
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .collect()
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    for (f, r) in results {
        match r? {
            None => problems.push(Problem {
                kind: Kind::Missing,
                name: f.path.clone(),
                detail: "listed by a digest, not in the archive".into(),
            }),
            Some((size, sha)) => {
                report.files += 1;
                report.bytes += size;
                if size as i64 != f.bytes || sha != f.sha256 {
                    problems.push(Problem {
                        kind: Kind::Modified,
                        name: f.path.clone(),
                        detail: format!(
                            "{size} bytes, SHA-256 {sha}; the digest says {} bytes, {}",
                            f.bytes, f.sha256
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A published data file: not a hidden temporary, not a `_SUCCESS` marker.
fn is_data_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    !(name.starts_with('.') || name.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_temporaries_are_not_data_files() {
        assert!(is_data_file(
            "db/events/dt=2024-05-01/hour=02/part-1.parquet"
        ));
        assert!(!is_data_file("db/events/dt=2024-05-01/hour=02/_SUCCESS"));
        assert!(!is_data_file(
            "db/events/dt=2024-05-01/hour=02/.part-1.parquet.inprogress"
        ));
    }

    #[test]
    fn the_range_keeps_windows_that_overlap_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let r = Range {
            from: Some(t("2024-05-01T02:00:00Z")),
            to: Some(t("2024-05-01T04:00:00Z")),
        };
        assert!(r.overlaps("2024-05-01T01:30:00.000Z", "2024-05-01T02:30:00.000Z"));
        assert!(!r.overlaps("2024-05-01T01:00:00.000Z", "2024-05-01T02:00:00.000Z"));
        assert!(!r.overlaps("2024-05-01T04:00:00.000Z", "2024-05-01T05:00:00.000Z"));
        assert!(Range::default().overlaps("x", "y"));
    }
}
