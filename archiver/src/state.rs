//! What the archiver remembers in MongoDB, next to the events (the collection names and the
//! fields other readers use are declared in `auditlog_common::archive_state`):
//! - `archive_windows`: one document per archived window (`_id` = window start, `end`, files,
//!   rows, bytes, checksum, times). Written only after the files were read back and their row
//!   count equals MongoDB's count for the window, so a record is a promise. `auditlog-ops
//!   status` reads the latest `end` from here.
//! - `archive_lease`: one document per archived collection naming the archiver that may work;
//!   it expires unless renewed, so a crashed archiver blocks others for one lease TTL at most.
//!   The holder fences itself: once its renewals have failed for so long that the lease could
//!   have expired (less a safety third of the TTL, see [`Lease::check`]), or another archiver
//!   holds it, every further write is refused with [`ArchiveError::LeaseLost`].
//! - `archive_runs`: one document per archived collection describing the last successful run
//!   (end, duration, the schedule and its next firing), for the service's alerts and the TTL
//!   guard's expected run time; and, when the archive is signed, `digest_head`: the latest
//!   digest of the chain ([`DigestHead`]), so `verify` notices a deleted tail.

use auditlog_common::store::number;
use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use auditlog_common::archive_state::{
    fields, runs, LEASE_COLLECTION, RUNS_COLLECTION, WINDOWS_COLLECTION,
};
use auditlog_common::error::{codes, server_error_code};
use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{ArchiveError, Result};
use crate::schedule::Schedule;
use crate::sink::FileFacts;
use crate::window::Window;

/// One archived window, as stored. `start` and `end` are the fields other readers rely on
/// ([`fields::START`], [`fields::END`]; a test keeps the serde names equal to them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowRecord {
    /// Window start.
    #[serde(rename = "_id")]
    pub start: bson::DateTime,
    pub end: bson::DateTime,
    /// `<db>.<collection>` the events came from.
    pub source: String,
    pub archive_url: String,
    pub files: Vec<FileRecord>,
    pub rows: i64,
    pub bytes: i64,
    /// SHA-256 over the files' `path sha256` lines: one value to compare for the whole window.
    pub checksum: String,
    pub archived_at: bson::DateTime,
    pub archiver_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_rows: Option<i64>,
    /// The sequence number of the signed digest that lists this window (see [`crate::digest`]).
    /// A record is replaced whole when a window is archived again, which clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_sequence: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    /// Earliest and latest `created_at` in the file (absent in records older than digests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_created_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_created_at: Option<bson::DateTime>,
}

impl From<&FileFacts> for FileRecord {
    fn from(f: &FileFacts) -> Self {
        FileRecord {
            path: f.path.clone(),
            rows: i64::try_from(f.rows).unwrap_or(i64::MAX),
            bytes: i64::try_from(f.bytes).unwrap_or(i64::MAX),
            sha256: f.sha256.clone(),
            min_created_at: f.created_ms.map(|(lo, _)| bson::DateTime::from_millis(lo)),
            max_created_at: f.created_ms.map(|(_, hi)| bson::DateTime::from_millis(hi)),
        }
    }
}

impl WindowRecord {
    pub fn window(&self) -> Window {
        Window {
            start: self.start.to_chrono(),
            end: self.end.to_chrono(),
        }
    }
}

/// Checksum of a window: stable across reruns that write the same bytes.
pub fn window_checksum(files: &[FileRecord]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(format!("{} {}\n", f.path, f.sha256));
    }
    hex::encode(h.finalize())
}

/// The latest digest of the archive's chain, as the run that wrote it recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DigestHead {
    pub sequence: i64,
    /// Relative to the archive root.
    pub path: String,
    pub sha256: String,
    /// Standard base64 of the digest's signature.
    pub signature: String,
    pub key_id: String,
    pub written_at: bson::DateTime,
}

const DIGEST_HEAD: &str = "digest_head";

/// Access to the archiver's state collections.
#[derive(Debug, Clone)]
pub struct State {
    windows: Collection<WindowRecord>,
    lease: Collection<Document>,
    runs: Collection<Document>,
    /// `<db>.<collection>`: the `_id` of the lease and of the runs document.
    lease_key: String,
}

impl State {
    pub fn new(store: &Store) -> Self {
        let db = store.database();
        State {
            windows: db.collection(WINDOWS_COLLECTION),
            lease: db.collection(LEASE_COLLECTION),
            runs: db.collection(RUNS_COLLECTION),
            lease_key: store.namespace(),
        }
    }

    pub async fn record(&self, rec: &WindowRecord) -> Result<()> {
        self.windows
            .replace_one(doc! { fields::START: rec.start }, rec)
            .upsert(true)
            .await
            .map_err(ArchiveError::mongo("record window"))?;
        Ok(())
    }

    pub async fn get(&self, w: &Window) -> Result<Option<WindowRecord>> {
        self.windows
            .find_one(doc! { fields::START: bson::DateTime::from_chrono(w.start) })
            .await
            .map_err(ArchiveError::mongo("read window record"))
    }

    /// Every recorded window, oldest first.
    pub async fn all(&self) -> Result<Vec<WindowRecord>> {
        self.windows
            .find(doc! {})
            .sort(doc! { fields::START: 1 })
            .await
            .map_err(ArchiveError::mongo("list window records"))?
            .try_collect()
            .await
            .map_err(ArchiveError::mongo("list window records"))
    }

    /// Starts of every recorded window.
    pub async fn recorded_starts(&self) -> Result<BTreeSet<DateTime<Utc>>> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .map(|r| r.start.to_chrono())
            .collect())
    }

    pub async fn mark(&self, start: bson::DateTime, set: Document) -> Result<()> {
        self.windows
            .update_one(doc! { fields::START: start }, doc! { "$set": set })
            .await
            .map_err(ArchiveError::mongo("update window record"))?;
        Ok(())
    }

    /// Takes the lease for `ttl`, or says who holds it. Renewed in the background (every third
    /// of `ttl`, sooner after a failure) until the returned guard is released or dropped.
    pub async fn acquire_lease(&self, ttl: Duration) -> Result<Lease> {
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            ObjectId::new().to_hex()
        );
        let sent = self.take_lease(&owner, ttl).await?;
        tracing::debug!(%owner, "lease taken");
        let fence = Arc::new(Fence::new(sent, ttl));
        let renew = tokio::spawn(renew_lease(
            self.lease.clone(),
            self.lease_key.clone(),
            owner.clone(),
            ttl,
            fence.clone(),
        ));
        Ok(Lease {
            collection: self.lease.clone(),
            key: self.lease_key.clone(),
            owner,
            fence,
            renew,
        })
    }

    /// Takes the lease for `owner` when it is free, expired or already `owner`'s; returns when
    /// the request was sent (the fence counts from then). A lease held by another archiver is
    /// [`ArchiveError::LeaseBusy`], naming it.
    async fn take_lease(&self, owner: &str, ttl: Duration) -> Result<Instant> {
        let sent = Instant::now();
        let now = Utc::now();
        let taken = self
            .lease
            .find_one_and_update(
                doc! {
                    "_id": &self.lease_key,
                    "$or": [
                        { "expires_at": { "$lte": bson::DateTime::from_chrono(now) } },
                        { "owner": owner },
                    ],
                },
                doc! { "$set": {
                    "owner": owner,
                    "expires_at": lease_expiry(now, ttl),
                    "acquired_at": bson::DateTime::from_chrono(now),
                } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(_) => Ok(sent),
            // The upsert met the lease held by another: the filter did not match it.
            Err(e) if server_error_code(&e) == Some(codes::DUPLICATE_KEY) => {
                let current = self
                    .lease
                    .find_one(doc! { "_id": &self.lease_key })
                    .await
                    .map_err(ArchiveError::mongo("read lease"))?
                    .unwrap_or_default();
                Err(ArchiveError::LeaseBusy {
                    owner: current.get_str("owner").unwrap_or("?").to_owned(),
                    until: current
                        .get_datetime("expires_at")
                        .map(|d| d.to_chrono().to_rfc3339())
                        .unwrap_or_else(|_| "?".into()),
                })
            }
            Err(e) => Err(ArchiveError::mongo("take lease")(e)),
        }
    }

    /// Records a run that finished without error in [`RUNS_COLLECTION`], for the service's
    /// alerts: when it ended, how long it took, and when the schedule fires next.
    pub async fn record_run(
        &self,
        finished: DateTime<Utc>,
        took: Duration,
        schedule: &Schedule,
    ) -> Result<()> {
        self.runs
            .update_one(
                doc! { "_id": &self.lease_key },
                run_update(finished, took, schedule),
            )
            .upsert(true)
            .await
            .map_err(ArchiveError::mongo("record run"))?;
        Ok(())
    }

    /// The chain's latest digest, if the archive was ever signed.
    pub async fn digest_head(&self) -> Result<Option<DigestHead>> {
        let found = self
            .runs
            .find_one(doc! { "_id": &self.lease_key })
            .projection(doc! { DIGEST_HEAD: 1 })
            .await
            .map_err(ArchiveError::mongo("read digest head"))?;
        let Some(head) = found.and_then(|d| d.get_document(DIGEST_HEAD).ok().cloned()) else {
            return Ok(None);
        };
        bson::from_document(head).map(Some).map_err(|e| {
            ArchiveError::Config(format!(
                "unreadable {DIGEST_HEAD} in the archive state: {e}"
            ))
        })
    }

    /// Moves the head from `previous` (sequence; 0: none yet) to `head`. Refused when the head
    /// is no longer `previous`: only the lease holder writes digests, so another head means
    /// another writer, and a chain must not fork.
    pub async fn advance_digest_head(&self, previous: i64, head: &DigestHead) -> Result<()> {
        let seq = format!("{DIGEST_HEAD}.sequence");
        let filter = if previous == 0 {
            doc! { "_id": &self.lease_key, DIGEST_HEAD: { "$exists": false } }
        } else {
            doc! { "_id": &self.lease_key, seq: previous }
        };
        let head_doc = bson::to_document(head)
            .map_err(|e| ArchiveError::Config(format!("cannot encode the digest head: {e}")))?;
        let r = self
            .runs
            .update_one(filter, doc! { "$set": { DIGEST_HEAD: head_doc } })
            .upsert(previous == 0)
            .await;
        match r {
            Ok(r) if r.matched_count == 1 || r.upserted_id.is_some() => Ok(()),
            Ok(_) => Err(ArchiveError::DigestChain(format!(
                "the chain's head moved past sequence {previous} while this run wrote {}",
                head.sequence
            ))),
            // The upsert of a first head collides with a runs document that has one already.
            Err(e) if server_error_code(&e) == Some(codes::DUPLICATE_KEY) => {
                Err(ArchiveError::DigestChain(format!(
                    "a chain head appeared while this run wrote the first digest ({})",
                    head.path
                )))
            }
            Err(e) => Err(ArchiveError::mongo("advance digest head")(e)),
        }
    }

    /// The recorded windows no digest at or before sequence `head` lists, oldest first: those
    /// the chain's next digest must list. Asked of MongoDB, so a run reads only these, not the
    /// whole history.
    pub async fn undigested(&self, head: i64) -> Result<Vec<WindowRecord>> {
        self.windows
            .find(doc! { "$or": [
                { "digest_sequence": { "$exists": false } },
                { "digest_sequence": { "$gt": head } },
            ] })
            .sort(doc! { fields::START: 1 })
            .await
            .map_err(ArchiveError::mongo("list undigested windows"))?
            .try_collect()
            .await
            .map_err(ArchiveError::mongo("list undigested windows"))
    }

    /// Records that digest `sequence` lists these windows.
    pub async fn mark_digested(&self, starts: &[bson::DateTime], sequence: i64) -> Result<()> {
        self.windows
            .update_many(
                doc! { fields::START: { "$in": starts } },
                doc! { "$set": { "digest_sequence": sequence } },
            )
            .await
            .map_err(ArchiveError::mongo("mark windows digested"))?;
        Ok(())
    }

    /// How long the last successful run took, in seconds (none recorded yet: `None`).
    pub async fn last_run_seconds(&self) -> Result<Option<f64>> {
        let found = self
            .runs
            .find_one(doc! { "_id": &self.lease_key })
            .projection(doc! { runs::LAST_RUN_SECONDS: 1 })
            .await
            .map_err(ArchiveError::mongo("read run record"))?;
        Ok(found.and_then(|d| d.get(runs::LAST_RUN_SECONDS).and_then(number)))
    }
}

/// The update of the runs document after a successful run. Fields the schedule cannot give
/// (it never fires again) are removed, so no stale value outlives the schedule it came from.
fn run_update(finished: DateTime<Utc>, took: Duration, schedule: &Schedule) -> Document {
    let mut set = doc! {
        runs::LAST_SUCCESS_AT: bson::DateTime::from_chrono(finished),
        runs::LAST_RUN_SECONDS: took.as_secs_f64(),
        runs::SCHEDULE: schedule.as_str(),
    };
    let mut unset = Document::new();
    let next = schedule.next_after(finished);
    match next {
        Some(n) => set.insert(runs::NEXT_RUN_AT, bson::DateTime::from_chrono(n)),
        None => unset.insert(runs::NEXT_RUN_AT, ""),
    };
    match schedule.period_after(finished) {
        Some(p) => set.insert(runs::SCHEDULE_PERIOD_SECONDS, p),
        None => unset.insert(runs::SCHEDULE_PERIOD_SECONDS, ""),
    };
    let mut update = doc! { "$set": set };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    update
}

/// When the lease stops being ours, as far as this process can tell.
///
/// The lease document says `expires_at` = (our clock when the renewal was sent) + TTL, and
/// another archiver may take it over once its own clock passes that. So the last renewal the
/// server confirmed fixes the earliest moment the lease can pass on; we stop working a third
/// of the TTL before it ([`Fence::work_until`]). That third absorbs clock skew between the
/// archivers and the time the writer takes to notice (it checks before every batch, every
/// file it publishes and every record). It is computed from the monotonic clock on every
/// [`Fence::check`], not only by the renewal task, so a renewal that hangs cannot keep the
/// archiver working.
struct Fence {
    ttl: Duration,
    inner: std::sync::Mutex<FenceState>,
}

struct FenceState {
    /// When the last renewal the server confirmed was sent.
    renewed_at: Instant,
    /// Set when the lease is known lost (taken over, or renewals failed too long).
    lost: Option<String>,
}

impl Fence {
    fn new(acquired_at: Instant, ttl: Duration) -> Self {
        Fence {
            ttl,
            inner: std::sync::Mutex::new(FenceState {
                renewed_at: acquired_at,
                lost: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last moment to work, for a lease last renewed at `renewed_at`.
    fn work_until(&self, renewed_at: Instant) -> Instant {
        renewed_at + self.ttl - self.ttl / 3
    }

    fn renewed(&self, sent: Instant) {
        let mut s = self.state();
        if s.lost.is_none() && sent > s.renewed_at {
            s.renewed_at = sent;
        }
    }

    fn lose(&self, reason: String) {
        let mut s = self.state();
        if s.lost.is_none() {
            s.lost = Some(reason);
        }
    }

    fn check_at(&self, now: Instant) -> Result<()> {
        let s = self.state();
        if let Some(reason) = &s.lost {
            return Err(ArchiveError::LeaseLost {
                reason: reason.clone(),
            });
        }
        let until = self.work_until(s.renewed_at);
        if now >= until {
            return Err(ArchiveError::LeaseLost {
                reason: format!(
                    "not renewed for {} s of its {} s TTL",
                    now.saturating_duration_since(s.renewed_at).as_secs(),
                    self.ttl.as_secs()
                ),
            });
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        self.check_at(Instant::now())
    }
}

/// A held lease. [`Lease::check`] before every write; [`Lease::release`] when done.
pub struct Lease {
    collection: Collection<Document>,
    key: String,
    owner: String,
    fence: Arc<Fence>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// `Err(LeaseLost)` once the lease is lost or could have expired (see [`Fence`]): the
    /// caller must not write anything more.
    pub fn check(&self) -> Result<()> {
        self.fence.check()
    }

    pub async fn release(self) {
        self.renew.abort();
        if let Err(e) = self
            .collection
            .delete_one(doc! { "_id": &self.key, "owner": &self.owner })
            .await
        {
            tracing::warn!(error = %e, "could not release the lease; it expires by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

/// When a lease taken or renewed at `now` expires.
fn lease_expiry(now: DateTime<Utc>, ttl: Duration) -> bson::DateTime {
    bson::DateTime::from_chrono(now + chrono::Duration::from_std(ttl).unwrap_or_default())
}

/// Renews `owner`'s lease every third of `ttl` until it is lost: taken over by another
/// archiver, or not renewed before the fence closes. Either way the fence says why.
async fn renew_lease(
    lease: Collection<Document>,
    key: String,
    owner: String,
    ttl: Duration,
    fence: Arc<Fence>,
) {
    let every = ttl / 3;
    // After a failure, try again sooner (every sixth of the TTL), so a brief outage is bridged
    // before the fence closes two thirds of the TTL after the last renewal.
    let retry_every = ttl / 6;
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        // A renewal that hangs is a failed one: the fence does not wait for it.
        let r = tokio::time::timeout(
            retry_every,
            lease
                .update_one(
                    doc! { "_id": &key, "owner": &owner },
                    doc! { "$set": { "expires_at": lease_expiry(Utc::now(), ttl) } },
                )
                .into_future(),
        )
        .await;
        let failure = match r {
            Ok(Ok(u)) if u.matched_count == 1 => {
                fence.renewed(sent);
                wait = every;
                continue;
            }
            Ok(Ok(_)) => {
                fence.lose("another archiver took it over".into());
                tracing::error!("lease taken over by another archiver; stopping");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", retry_every.as_millis()),
        };
        wait = retry_every;
        match fence.check() {
            Ok(()) => tracing::warn!(
                error = %failure,
                retry_in_ms = retry_every.as_millis() as u64,
                "lease renewal failed; retrying"
            ),
            Err(_) => {
                fence.lose(format!(
                    "renewals failed until it could expire (last error: {failure})"
                ));
                tracing::error!(error = %failure,
                    "lease renewals failed for too long: another archiver may take \
                     it over now; stopping");
                return;
            }
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_use_the_shared_field_names() {
        let rec = WindowRecord {
            start: bson::DateTime::from_millis(0),
            end: bson::DateTime::from_millis(3_600_000),
            source: "db.events".into(),
            archive_url: "./archive".into(),
            files: vec![],
            rows: 0,
            bytes: 0,
            checksum: window_checksum(&[]),
            archived_at: bson::DateTime::from_millis(0),
            archiver_version: "0".into(),
            verified_at: None,
            purged_at: None,
            purged_rows: None,
            digest_sequence: None,
        };
        let d = bson::to_document(&rec).unwrap();
        assert_eq!(d.get_datetime(fields::START).unwrap(), &rec.start);
        assert_eq!(d.get_datetime(fields::END).unwrap(), &rec.end);
    }

    #[test]
    fn the_runs_document_says_when_the_schedule_fires_next_and_how_often() {
        let finished = DateTime::parse_from_rfc3339("2024-05-01T02:17:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let daily = Schedule::parse("0 0 2 * * *").unwrap();
        let u = run_update(finished, Duration::from_millis(1_050_500), &daily);
        let set = u.get_document("$set").unwrap();
        assert_eq!(
            set.get_datetime(runs::LAST_SUCCESS_AT).unwrap().to_chrono(),
            finished
        );
        assert_eq!(set.get_f64(runs::LAST_RUN_SECONDS).unwrap(), 1050.5);
        assert_eq!(
            set.get_datetime(runs::NEXT_RUN_AT).unwrap().to_chrono(),
            DateTime::parse_from_rfc3339("2024-05-02T02:00:00Z").unwrap()
        );
        assert_eq!(set.get_i64(runs::SCHEDULE_PERIOD_SECONDS).unwrap(), 86_400);
        assert_eq!(set.get_str(runs::SCHEDULE).unwrap(), "0 0 2 * * *");
        assert!(u.get("$unset").is_none());
        // A schedule that never fires again: no stale next run or period is left behind.
        let never = Schedule::parse("0 0 0 30 2 *").unwrap();
        let u = run_update(finished, Duration::from_secs(1), &never);
        let unset = u.get_document("$unset").unwrap();
        assert!(unset.contains_key(runs::NEXT_RUN_AT));
        assert!(unset.contains_key(runs::SCHEDULE_PERIOD_SECONDS));
    }

    #[test]
    fn the_fence_closes_a_third_of_the_ttl_before_the_lease_can_expire() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let fence = Fence::new(t0, s(60));
        assert!(fence.check_at(t0 + s(39)).is_ok());
        // Renewals failed since t0: at 40 s the lease has 20 s left, and we stop.
        let err = fence.check_at(t0 + s(40)).unwrap_err();
        assert!(matches!(err, ArchiveError::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("lease was lost"), "{err}");
        // A confirmed renewal sent at 20 s moves the fence to 60 s.
        fence.renewed(t0 + s(20));
        assert!(fence.check_at(t0 + s(59)).is_ok());
        assert!(fence.check_at(t0 + s(60)).is_err());
        // A confirmation of an older renewal arriving late does not move it back.
        fence.renewed(t0 + s(10));
        assert!(fence.check_at(t0 + s(59)).is_ok());
        // Lost is final, whatever renewals say afterwards.
        fence.lose("another archiver took it over".into());
        fence.renewed(t0 + s(30));
        let err = fence.check_at(t0 + s(31)).unwrap_err();
        assert!(err.to_string().contains("took it over"), "{err}");
    }

    #[test]
    fn checksums_are_lowercase_sha256_hex() {
        // SHA-256 of no bytes.
        assert_eq!(
            window_checksum(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
