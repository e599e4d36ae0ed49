//! Where archive files go: one `object_store` over a local directory, S3 or HDFS (opened by
//! `auditlog_common::archive_store`, as the service opens it to read), and the few
//! operations the archiver needs on it — publish atomically, list a partition, delete, read a
//! file's Parquet footer and checksum.
//!
//! Publishing: a file is written under a hidden temporary name (`.part-….parquet.inprogress`)
//! in the collection's staging directory, `<db>/.<collection>.inprogress/` — beside the
//! collection's tree, not in it — and renamed into place, so readers never see a partial file,
//! and the collection's tree holds only published files: a run killed before it published
//! anything leaves no directory there for a reader (or Hive's `MSCK REPAIR`) to find empty. On
//! S3 a rename is a copy plus a delete, while an upload itself only becomes visible when it
//! completes; there the file is uploaded straight to its final name, which is just as atomic
//! and half the requests.

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
    /// `<db>/.<collection>.inprogress`: where files are written before they are published
    /// (see the module docs).
    staging: Path,
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
    /// Earliest and latest `created_at` in the file, epoch milliseconds (for the digest).
    pub created_ms: Option<(i64, i64)>,
}

impl Sink {
    pub fn open(settings: &Settings) -> Result<Self> {
        let url = settings.archive_url.clone();
        let opened = archive_store::open(&url, &settings.store, Access::Write)?;
        let base = Path::from_iter([
            settings.mongo.db_name.as_str(),
            settings.mongo.collection.as_str(),
        ]);
        let staging = Path::from_iter([
            settings.mongo.db_name.clone(),
            format!(".{}.inprogress", settings.mongo.collection),
        ]);
        Ok(Sink {
            store: opened.store,
            base,
            staging,
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

    /// Where a file is written before it is published: its final path on S3, else its
    /// temporary name in the staging directory (temporary names are unique per window and
    /// file number, so the staging directory needs no partitions).
    pub fn write_location(&self, partition: &str, final_name: &str, temp_name: &str) -> Path {
        if self.direct_publish {
            self.path(&format!("{partition}/{final_name}"))
        } else {
            self.staging.clone().join(temp_name)
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
        self.names_in(&self.path(partition)).await
    }

    async fn names_in(&self, prefix: &Path) -> Result<Vec<String>> {
        let listing = match self.store.list_with_delimiter(Some(prefix)).await {
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

/// Access by paths relative to the archive root, for what lives beside the collections' trees
/// (the digests under `_digests/`) and for `verify`, which names files from the root.
impl Sink {
    /// `<db>/<collection>` of this sink, as a root-relative prefix.
    pub fn base(&self) -> &str {
        self.base.as_ref()
    }

    /// A root-relative path.
    pub fn root_path(relative: &str) -> Path {
        Path::from_iter(relative.split('/').filter(|s| !s.is_empty()))
    }

    pub async fn put_root(&self, relative: &str, body: Vec<u8>) -> Result<()> {
        self.store
            .put(&Self::root_path(relative), PutPayload::from(body))
            .await?;
        Ok(())
    }

    /// The whole object (digests are small); `None` when it does not exist.
    pub async fn get_root(&self, relative: &str) -> Result<Option<bytes::Bytes>> {
        match self.store.get(&Self::root_path(relative)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under a root-relative prefix, recursively: (path, size).
    pub async fn list_root(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = Self::root_path(prefix);
        let mut out = vec![];
        let mut listing = self.store.list(Some(&prefix));
        loop {
            match listing.try_next().await {
                Ok(Some(meta)) => out.push((meta.location.to_string(), meta.size)),
                Ok(None) => break,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Size and SHA-256 of a root-relative file, streamed; `None` when it does not exist.
    /// `progress` is told of every chunk's length.
    pub async fn size_and_sha256(
        &self,
        relative: &str,
        progress: impl Fn(u64),
    ) -> Result<Option<(u64, String)>> {
        let mut stream = match self.store.get(&Self::root_path(relative)).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            progress(chunk.len() as u64);
        }
        Ok(Some((size, hex::encode(hasher.finalize()))))
    }
}

impl Sink {
    /// Removes leftovers of interrupted writes of a window in one partition: hidden temporary
    /// files (ours, and the object store's own staging files — archives written before the
    /// staging directory kept them in the partition) and published files of the window that
    /// the latest run did not write. Returns how many objects were removed.
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
        removed += self.remove_local_staging_files(&self.path(partition), window_prefix);
        Ok(removed)
    }

    /// Removes the window's temporaries left in the staging directory (by a run that stopped
    /// before publishing them, or with more parts than the latest). Returns how many.
    pub async fn remove_staged(&self, window_prefix: &str) -> Result<usize> {
        if self.direct_publish {
            return Ok(0); // nothing is staged
        }
        let mut removed = 0;
        for name in self.names_in(&self.staging).await? {
            if name.contains(window_prefix) {
                match self.store.delete(&self.staging.clone().join(name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                removed += 1;
            }
        }
        removed += self.remove_local_staging_files(&self.staging, window_prefix);
        Ok(removed)
    }

    /// The local store hides its own staging files (`name#N`, of a write it did not finish)
    /// from listings: removed from the directory itself.
    fn remove_local_staging_files(&self, dir: &Path, window_prefix: &str) -> usize {
        let Some(root) = &self.local_root else {
            return 0;
        };
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(root.join(dir.as_ref())) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.')
                    && name.contains(window_prefix)
                    && name.contains('#')
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    use crate::config::Cli;
    use crate::window::{partition_of, Window};

    #[tokio::test]
    async fn local_temporaries_wait_beside_the_collections_tree_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let cli =
            Cli::try_parse_from(["auditlog-archiver", "--archive-url", root, "once"]).unwrap();
        let sink = Sink::open(&cli.settings).unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2024-05-01T02:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let (w, other) = (
            Window::containing(t, 3600),
            Window::containing(t + chrono::Duration::hours(1), 3600),
        );
        let partition = partition_of(w.start);
        let tree = sink.path("");
        let staged =
            |w: &Window, n| sink.write_location(&partition, &w.file_name(n), &w.temp_name(n));
        for (w, n) in [(&w, 0), (&w, 1), (&other, 0)] {
            let at = staged(w, n);
            assert!(!at.as_ref().starts_with(tree.as_ref()), "{at} is in {tree}");
            sink.store()
                .put(&at, PutPayload::from_static(b"par1"))
                .await
                .unwrap();
        }
        // Nothing of the window is in the collection's tree before it is published.
        assert!(!dir.path().join(tree.as_ref()).exists());

        // Published: the first file moves into its partition; its leftover (a second part of an
        // earlier run) is removed, the other window's temporary stays.
        let final_path = sink.path(&format!("{partition}/{}", w.file_name(0)));
        sink.publish(&staged(&w, 0), &final_path).await.unwrap();
        assert_eq!(
            sink.list_names(&partition).await.unwrap(),
            vec![w.file_name(0)]
        );
        assert_eq!(sink.remove_staged(&w.file_prefix()).await.unwrap(), 1);
        assert_eq!(sink.remove_staged(&w.file_prefix()).await.unwrap(), 0);
        assert_eq!(
            sink.names_in(&sink.staging).await.unwrap(),
            vec![other.temp_name(0)]
        );
    }
}
