//! What the archiver remembers in MongoDB, next to the events (the collection names and the
//! fields other readers use are declared in `auditlog_common::archive_state`):
//! - `archive_windows`: one document per archived window (`_id` = window start, `end`, files,
//!   rows, bytes, checksum, times). Written only after the files were read back and their row
//!   count equals MongoDB's count for the window, so a record is a promise. `auditlog-ops
//!   status` reads the latest `end` from here.
//! - `archive_lease`: one document per archived collection naming the archiver that may work;
//!   it expires unless renewed, so a crashed archiver blocks others for one lease TTL at most.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auditlog_common::archive_state::{fields, LEASE_COLLECTION, WINDOWS_COLLECTION};
use auditlog_common::error::{codes, server_error_code};
use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
}

impl From<&FileFacts> for FileRecord {
    fn from(f: &FileFacts) -> Self {
        FileRecord {
            path: f.path.clone(),
            rows: i64::try_from(f.rows).unwrap_or(i64::MAX),
            bytes: i64::try_from(f.bytes).unwrap_or(i64::MAX),
            sha256: f.sha256.clone(),
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

/// Access to the archiver's state collections.
#[derive(Debug, Clone)]
pub struct State {
    windows: Collection<WindowRecord>,
    lease: Collection<Document>,
    lease_key: String,
}

impl State {
    pub fn new(store: &Store) -> Self {
        let db = store.database();
        State {
            windows: db.collection(WINDOWS_COLLECTION),
            lease: db.collection(LEASE_COLLECTION),
            lease_key: format!("{}.{}", store.db_name, store.collection_name),
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

    /// Takes the lease for `ttl`, or says who holds it. Renewed in the background until the
    /// returned guard is released or dropped.
    pub async fn acquire_lease(&self, ttl: Duration) -> Result<Lease> {
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            ObjectId::new().to_hex()
        );
        let expires = move |now: DateTime<Utc>| {
            bson::DateTime::from_chrono(now + chrono::Duration::from_std(ttl).unwrap_or_default())
        };
        let now = Utc::now();
        let taken = self
            .lease
            .find_one_and_update(
                doc! {
                    "_id": &self.lease_key,
                    "$or": [
                        { "expires_at": { "$lte": bson::DateTime::from_chrono(now) } },
                        { "owner": &owner },
                    ],
                },
                doc! { "$set": {
                    "owner": &owner,
                    "expires_at": expires(now),
                    "acquired_at": bson::DateTime::from_chrono(now),
                } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(_) => {}
            Err(e) if server_error_code(&e) == Some(codes::DUPLICATE_KEY) => {
                let current = self
                    .lease
                    .find_one(doc! { "_id": &self.lease_key })
                    .await
                    .map_err(ArchiveError::mongo("read lease"))?
                    .unwrap_or_default();
                return Err(ArchiveError::LeaseBusy {
                    owner: current.get_str("owner").unwrap_or("?").to_owned(),
                    until: current
                        .get_datetime("expires_at")
                        .map(|d| d.to_chrono().to_rfc3339())
                        .unwrap_or_else(|_| "?".into()),
                });
            }
            Err(e) => return Err(ArchiveError::mongo("take lease")(e)),
        }
        tracing::debug!(%owner, "lease taken");

        let lost = Arc::new(AtomicBool::new(false));
        let renew = {
            let lease = self.lease.clone();
            let key = self.lease_key.clone();
            let owner = owner.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                let every = ttl / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let r = lease
                        .update_one(
                            doc! { "_id": &key, "owner": &owner },
                            doc! { "$set": { "expires_at": expires(Utc::now()) } },
                        )
                        .await;
                    match r {
                        Ok(u) if u.matched_count == 1 => {}
                        Ok(_) => {
                            tracing::error!("lease taken over by another archiver; stopping");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // A transient error: the lease lasts 3 renewals, try again.
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };
        Ok(Lease {
            collection: self.lease.clone(),
            key: self.lease_key.clone(),
            owner,
            lost,
            renew,
        })
    }
}

/// A held lease. [`Lease::check`] before every commit; [`Lease::release`] when done.
pub struct Lease {
    collection: Collection<Document>,
    key: String,
    owner: String,
    lost: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            Err(ArchiveError::LeaseLost)
        } else {
            Ok(())
        }
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
        };
        let d = bson::to_document(&rec).unwrap();
        assert_eq!(d.get_datetime(fields::START).unwrap(), &rec.start);
        assert_eq!(d.get_datetime(fields::END).unwrap(), &rec.end);
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
