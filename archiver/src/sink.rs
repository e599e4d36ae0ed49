//! Where archive files go: one `object_store` over a local directory, S3 or HDFS, and the few
//! operations the archiver needs on it — publish atomically, list a partition, delete, read a
//! file's Parquet footer and checksum.
//!
//! Publishing: a file is written under a hidden temporary name (`.part-….parquet.inprogress`)
//! and renamed into place, so readers never see a partial file. On S3 a rename is a copy plus
//! a delete, while an upload itself only becomes visible when it completes; there the file is
//! uploaded straight to its final name, which is just as atomic and half the requests.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
#[allow(deprecated)] // its replacement (a hand-written AsyncFileReader) would add nothing here
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use sha2::{Digest, Sha256};

use crate::config::{ArchiveUrl, Backend, S3Settings, Settings};
use crate::error::{ArchiveError, Result};

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
        let mut local_root = None;
        let (store, direct_publish): (Arc<dyn ObjectStore>, bool) = match url.backend() {
            Backend::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ArchiveError::Config(format!(
                        "cannot create archive directory {}: {e}",
                        dir.display()
                    ))
                })?;
                // fsync: a window is recorded as archived only after its files are durable.
                let fs = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
                local_root = std::fs::canonicalize(dir).ok();
                (Arc::new(fs), false)
            }
            Backend::S3 { bucket, prefix } => {
                let s3_store =
                    s3_builder(AmazonS3Builder::from_env(), &settings.s3, bucket).build()?;
                (prefixed(Arc::new(s3_store), prefix), true)
            }
            Backend::Hdfs { namenode, prefix } => {
                let config = parse_kv(&settings.hdfs_config)?;
                let hdfs = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                    .with_url(namenode.clone())
                    .with_config(config)
                    .build()?;
                (prefixed(Arc::new(hdfs), prefix), false)
            }
        };
        let base = Path::from_iter([
            settings.mongo.db_name.as_str(),
            settings.mongo.collection.as_str(),
        ]);
        Ok(Sink {
            store,
            base,
            direct_publish,
            url,
            local_root,
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

/// Applies the `AUDIT_S3_*` settings that are set over `base` (the `AWS_*` environment, from
/// [`AmazonS3Builder::from_env`]); the unset ones leave what `base` has, and the object store
/// defaults what neither sets (region `us-east-1`, HTTPS only, path style).
fn s3_builder(base: AmazonS3Builder, s3: &S3Settings, bucket: &str) -> AmazonS3Builder {
    let mut b = base.with_bucket_name(bucket);
    if let Some(r) = &s3.s3_region {
        b = b.with_region(r);
    }
    if let Some(allow) = s3.s3_allow_http {
        b = b.with_allow_http(allow);
    }
    if let Some(virtual_hosted) = s3.s3_virtual_hosted {
        b = b.with_virtual_hosted_style_request(virtual_hosted);
    }
    if let Some(e) = &s3.s3_endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(k) = &s3.s3_access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = &s3.s3_secret_access_key {
        b = b.with_secret_access_key(k);
    }
    b
}

fn prefixed(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

fn parse_kv(raw: &str) -> Result<HashMap<String, String>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| {
                    ArchiveError::Config(format!("AUDIT_HDFS_CONFIG: `{pair}` is not key=value"))
                })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::aws::AmazonS3ConfigKey;
    use object_store::ClientConfigKey;

    fn unset() -> S3Settings {
        S3Settings {
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: None,
            s3_virtual_hosted: None,
        }
    }

    /// What `from_env` reads from `AWS_REGION`, `AWS_ALLOW_HTTP`, `AWS_ENDPOINT`.
    fn aws_env() -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Region, "eu-west-3")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
                "true",
            )
            .with_config(AmazonS3ConfigKey::Endpoint, "http://minio:9000")
    }

    #[test]
    fn unset_s3_settings_leave_the_aws_environment_alone() {
        let b = s3_builder(aws_env(), &unset(), "bkt");
        let get = |k: &AmazonS3ConfigKey| b.get_config_value(k);
        assert_eq!(
            get(&AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(get(&AmazonS3ConfigKey::Bucket).as_deref(), Some("bkt"));
        // Nothing anywhere: the object store's own default region (us-east-1) applies at build.
        let b = s3_builder(AmazonS3Builder::new(), &unset(), "bkt");
        assert_eq!(b.get_config_value(&AmazonS3ConfigKey::Region), None);
        assert!(b.build().is_ok());
    }

    #[test]
    fn set_s3_settings_win_over_the_aws_environment() {
        let s3 = S3Settings {
            s3_region: Some("ap-south-1".into()),
            s3_allow_http: Some(false),
            s3_endpoint: Some("https://ceph:443".into()),
            s3_virtual_hosted: Some(true),
            ..unset()
        };
        let b = s3_builder(aws_env(), &s3, "bkt");
        let get = |k: &AmazonS3ConfigKey| b.get_config_value(k);
        assert_eq!(
            get(&AmazonS3ConfigKey::Region).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("false")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("https://ceph:443")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("true")
        );
    }

    #[test]
    fn hdfs_config_pairs() {
        let m = parse_kv("dfs.a=1, dfs.b = two").unwrap();
        assert_eq!(m.get("dfs.b").map(String::as_str), Some("two"));
        assert!(parse_kv("novalue").is_err());
        assert!(parse_kv("").unwrap().is_empty());
    }
}
