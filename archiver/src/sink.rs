//! Where archive files go: one `object_store` over a local directory, S3 or HDFS (opened by
//! `auditlog_common::archive_store`, as the service opens it to read), and the few
//! operations the archiver needs on it — publish atomically, list a partition, delete, read a
//! file's Parquet footer and checksum.
//!
//! Publishing: a file is written under a hidden temporary name (`.part-….parquet.inprogress`)
//! and renamed into place, so readers never see a partial file. On S3 a rename is a copy plus
//! a delete, while an upload itself only becomes visible when it completes; there the file is
//! uploaded straight to its final name, which is just as atomic and half the requests.

use std::sync::Arc;

use auditlog_common::archive_store::{self, Access};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
#[allow(deprecated)] // its replacement (a hand-written AsyncFileReader) would add nothing here
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use sha2::{Digest, Sha256};

use crate::config::{ArchiveUrl, Settings};
use crate::error::Result;

/// The opened archive store. Paths given to its methods are relative to
/// `<archive root>/<db>/<collection>/`.
#[derive(Debug, Clone)]
pub struct Sink {
    store: Arc<dyn ObjectStore>,
    /// `<db>/<collection>` inside the archive root.
    base: Path,
    /// Upload straight to the final name (see the module docs).
    direct_publish: bool,
    /// The URL, for logs and state records.
    url: ArchiveUrl,
    /// The directory of a local archive (to clean staging files the store does not list).
    local_root: Option<std::path::PathBuf>,
}

/// One published file, as recorded in the window's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// Relative to `<db>/<collection>/`, e.g. `dt=2024-05-01/hour=02/part-…-0000.parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

impl Sink {
    pub fn open(settings: &Settings) -> Result<Self> {
        let url = settings.archive_url.clone();
        let opened = archive_store::open(&url, &settings.store, Access::Write)?;
        let base = Path::from_iter([
            settings.mongo.db_name.as_str(),
            settings.mongo.collection.as_str(),
        ]);
        Ok(Sink {
            store: opened.store,
            base,
            direct_publish: opened.direct_publish,
            url,
            local_root: opened.local_root,
        })
    }

    /// The archive URL as configured.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn path(&self, relative: &str) -> Path {
        let mut p = self.base.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Where a file is written before it is published.
    pub fn write_location(&self, partition: &str, final_name: &str, temp_name: &str) -> Path {
        if self.direct_publish {
            self.path(&format!("{partition}/{final_name}"))
        } else {
            self.path(&format!("{partition}/{temp_name}"))
        }
    }

    /// Makes a written file visible under its final name.
    pub async fn publish(&self, written: &Path, final_path: &Path) -> Result<()> {
        if written != final_path {
            self.store.rename(written, final_path).await?;
        }
        Ok(())
    }

    /// Names (not paths) of the objects directly inside a partition directory.
    pub async fn list_names(&self, partition: &str) -> Result<Vec<String>> {
        let prefix = self.path(partition);
        let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    pub async fn delete(&self, relative: &str) -> Result<()> {
        match self.store.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put_small(&self, relative: &str, body: &'static [u8]) -> Result<()> {
        self.store
            .put(&self.path(relative), PutPayload::from_static(body))
            .await?;
        Ok(())
    }

    /// Rows and size of a published file, read from its Parquet footer.
    #[allow(deprecated)]
    pub async fn footer_rows(&self, relative: &str) -> Result<(u64, u64)> {
        let path = self.path(relative);
        let meta = self.store.head(&path).await?;
        let reader = ParquetObjectReader::new(self.store.clone(), path).with_file_size(meta.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let rows = builder.metadata().file_metadata().num_rows();
        Ok((u64::try_from(rows).unwrap_or(0), meta.size))
    }

    /// SHA-256 of a published file, streamed (memory stays at one chunk).
    pub async fn sha256(&self, relative: &str) -> Result<String> {
        let mut stream = self.store.get(&self.path(relative)).await?.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

impl Sink {
    /// Removes leftovers of interrupted writes of a window in one partition: hidden temporary
    /// files (ours, and the object store's own staging files) and published files of the
    /// window that the latest run did not write. Returns how many objects were removed.
    pub async fn remove_stale(
        &self,
        partition: &str,
        window_prefix: &str,
        keep: &[String],
    ) -> Result<usize> {
        let mut removed = 0;
        for name in self.list_names(partition).await? {
            let ours = name.starts_with(window_prefix)
                || (name.starts_with('.') && name.contains(window_prefix));
            if ours && !keep.contains(&name) {
                self.delete(&format!("{partition}/{name}")).await?;
                removed += 1;
            }
        }
        // The local store hides its own staging files (`name#N`) from listings.
        if let Some(root) = &self.local_root {
            let dir = root.join(self.base.as_ref()).join(partition);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.contains(window_prefix) && name.contains('#') {
                        let _ = std::fs::remove_file(e.path());
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}
