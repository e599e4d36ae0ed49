//! The archive's object store — a local directory, S3 or HDFS — as `AUDIT_ARCHIVE_URL` and the
//! `AUDIT_S3_*` / `AUDIT_HDFS_CONFIG` settings name it, opened the same way by the archiver
//! (which writes Parquet files there) and the service (which reads them back for `find`).
//!
//! Only what both need lives here: the URL and its backend, the connection settings as clap
//! arguments (so both binaries take the same variables with the same meaning), and
//! [`open`]. Publishing, listing and footers stay with the archiver; reading stays with the
//! service.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

/// Why the archive store cannot be opened. Opening never touches the network: these are
/// settings errors, or a local directory that cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveStoreError {
    #[error("{0}")]
    Config(String),
    #[error("archive storage: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// S3 connection settings (for `s3://` archive URLs). Each one that is set wins; each one that
/// is unset falls back to the usual `AWS_*` variable (`AWS_ENDPOINT`, `AWS_REGION` then
/// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`, …), then to the object store's
/// default. None has a default of its own, or the `AWS_*` variable could never apply.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Settings {
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, …); unset: `AWS_ENDPOINT`, else AWS.
    #[arg(long, env = "AUDIT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region; unset: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[arg(long, env = "AUDIT_S3_REGION")]
    pub s3_region: Option<String>,
    /// Access key id.
    #[arg(long, env = "AUDIT_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// Secret access key.
    #[arg(long, env = "AUDIT_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints; unset: `AWS_ALLOW_HTTP`, else false.
    #[arg(long, env = "AUDIT_S3_ALLOW_HTTP", action = clap::ArgAction::Set)]
    pub s3_allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path style; unset:
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, else false (path style).
    #[arg(long, env = "AUDIT_S3_VIRTUAL_HOSTED", action = clap::ArgAction::Set)]
    pub s3_virtual_hosted: Option<bool>,
}

/// How to reach the archive's storage, beside its URL: S3 settings and Hadoop client settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ArchiveStoreSettings {
    #[command(flatten)]
    pub s3: S3Settings,

    /// Extra Hadoop client settings for hdfs:// URLs, `key=value` pairs separated by commas
    /// (e.g. HA name services). The HDFS user comes from HADOOP_USER_NAME.
    #[arg(long, env = "AUDIT_HDFS_CONFIG", default_value = "")]
    pub hdfs_config: String,
}

/// The archive location, parsed from `AUDIT_ARCHIVE_URL`, with the text it came from (which
/// logs and window records show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveUrl {
    raw: String,
    backend: Backend,
}

/// Which object store an [`ArchiveUrl`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Local { dir: PathBuf },
    S3 { bucket: String, prefix: String },
    Hdfs { namenode: String, prefix: String },
}

/// An `AUDIT_ARCHIVE_URL` no backend accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArchiveUrlError(String);

impl ArchiveUrl {
    pub fn parse(raw: &str) -> Result<Self, ArchiveUrlError> {
        let backend = Self::backend_of(raw)?;
        Ok(ArchiveUrl {
            raw: raw.to_owned(),
            backend,
        })
    }

    fn backend_of(raw: &str) -> Result<Backend, ArchiveUrlError> {
        let bad = |why: &str| ArchiveUrlError(why.to_owned());
        if !raw.contains("://") {
            if raw.is_empty() {
                return Err(bad("empty"));
            }
            return Ok(Backend::Local { dir: raw.into() });
        }
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let prefix = url.path().trim_matches('/').to_owned();
        match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| bad("file:// URLs need an absolute path"))?;
                Ok(Backend::Local { dir })
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("s3:// URLs need a bucket: s3://bucket/prefix"))?;
                Ok(Backend::S3 {
                    bucket: bucket.to_owned(),
                    prefix,
                })
            }
            "hdfs" | "viewfs" => {
                let host = url
                    .host_str()
                    .ok_or_else(|| bad("hdfs:// URLs need a namenode: hdfs://host:port/path"))?;
                let namenode = match url.port() {
                    Some(p) => format!("{}://{host}:{p}", url.scheme()),
                    None => format!("{}://{host}", url.scheme()),
                };
                Ok(Backend::Hdfs { namenode, prefix })
            }
            other => Err(bad(&format!(
                "unsupported scheme `{other}` (use a path, file://, s3:// or hdfs://)"
            ))),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for ArchiveUrl {
    type Err = ArchiveUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ArchiveUrl::parse(s)
    }
}

impl fmt::Display for ArchiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// What the opener is going to do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The archiver: a local directory is created if missing, and writes are fsynced (a window
    /// is recorded only once its files are durable). Network requests keep the object store's
    /// own retry policy (minutes), since a run can wait.
    Write,
    /// The service: nothing is created (a local directory that is not there yet reads as
    /// missing files, not as a start-up failure), and every request gives up after `timeout`
    /// with at most one retry, so a reader waiting on an unreachable store gets its 503 within
    /// the request's own time limit.
    Read { timeout: Duration },
}

/// The opened store, and what its backend means for writers.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// Paths are relative to the URL's directory or prefix.
    pub store: Arc<dyn ObjectStore>,
    /// Whether an upload is only visible once complete (S3), so a file may be written under
    /// its final name instead of published by rename.
    pub direct_publish: bool,
    /// The directory of a local archive.
    pub local_root: Option<PathBuf>,
}

/// Opens the store `url` names. Builds clients only: nothing is sent over the network.
pub fn open(
    url: &ArchiveUrl,
    settings: &ArchiveStoreSettings,
    access: Access,
) -> Result<OpenedStore, ArchiveStoreError> {
    match url.backend() {
        Backend::Local { dir } => open_local(dir, access),
        Backend::S3 { bucket, prefix } => {
            let mut builder = s3_builder(AmazonS3Builder::from_env(), &settings.s3, bucket);
            if let Access::Read { timeout } = access {
                builder = with_read_limits(builder, timeout);
            }
            Ok(OpenedStore {
                store: prefixed(Arc::new(builder.build()?), prefix),
                direct_publish: true,
                local_root: None,
            })
        }
        Backend::Hdfs { namenode, prefix } => {
            let config = parse_kv(&settings.hdfs_config)?;
            let hdfs = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                .with_url(namenode.clone())
                .with_config(config)
                .build()?;
            Ok(OpenedStore {
                store: prefixed(Arc::new(hdfs), prefix),
                direct_publish: false,
                local_root: None,
            })
        }
    }
}

fn open_local(dir: &std::path::Path, access: Access) -> Result<OpenedStore, ArchiveStoreError> {
    match access {
        Access::Write => {
            std::fs::create_dir_all(dir).map_err(|e| {
                ArchiveStoreError::Config(format!(
                    "cannot create archive directory {}: {e}",
                    dir.display()
                ))
            })?;
            // fsync: a window is recorded as archived only after its files are durable.
            let fs = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
            Ok(OpenedStore {
                store: Arc::new(fs),
                direct_publish: false,
                local_root: std::fs::canonicalize(dir).ok(),
            })
        }
        Access::Read { .. } => {
            // `new_with_prefix` needs the directory to exist already; a reader must not need
            // the archiver to have run before it starts.
            let absolute = std::path::absolute(dir).map_err(|e| {
                ArchiveStoreError::Config(format!("archive directory {}: {e}", dir.display()))
            })?;
            let prefix = absolute
                .to_str()
                .ok_or_else(|| {
                    ArchiveStoreError::Config(format!(
                        "archive directory {} is not valid UTF-8",
                        dir.display()
                    ))
                })?
                .trim_start_matches('/')
                .to_owned();
            Ok(OpenedStore {
                store: prefixed(Arc::new(LocalFileSystem::new()), &prefix),
                direct_publish: false,
                local_root: Some(absolute),
            })
        }
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

/// Per-request and connect timeouts, and one quick retry. Set key by key: replacing the client
/// options whole would drop `AWS_ALLOW_HTTP` and the other client settings read from the
/// environment.
fn with_read_limits(b: AmazonS3Builder, timeout: Duration) -> AmazonS3Builder {
    let ms = format!("{}ms", timeout.as_millis().max(1));
    b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), &ms)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            &ms,
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: timeout,
        })
}

fn prefixed(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

fn parse_kv(raw: &str) -> Result<HashMap<String, String>, ArchiveStoreError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| {
                    ArchiveStoreError::Config(format!(
                        "AUDIT_HDFS_CONFIG: `{pair}` is not key=value"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};

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
        let b = s3_builder(aws_env(), &S3Settings::default(), "bkt");
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
        let b = s3_builder(AmazonS3Builder::new(), &S3Settings::default(), "bkt");
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
            ..S3Settings::default()
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
    fn readers_get_request_timeouts_without_losing_the_environment() {
        let b = with_read_limits(aws_env(), Duration::from_millis(1500));
        let get = |k: &AmazonS3ConfigKey| b.get_config_value(k);
        assert_eq!(
            get(&AmazonS3ConfigKey::Client(ClientConfigKey::Timeout)).as_deref(),
            Some("1500ms")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout)).as_deref(),
            Some("1500ms")
        );
        assert_eq!(
            get(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
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

    #[test]
    fn urls_of_every_backend_parse() {
        let backend = |s: &str| ArchiveUrl::parse(s).unwrap().backend().clone();
        assert_eq!(
            backend("./archive"),
            Backend::Local {
                dir: "./archive".into()
            }
        );
        assert_eq!(
            backend("file:///var/lib/archive"),
            Backend::Local {
                dir: "/var/lib/archive".into()
            }
        );
        assert_eq!(
            backend("s3://bucket/audit/events"),
            Backend::S3 {
                bucket: "bucket".into(),
                prefix: "audit/events".into()
            }
        );
        assert_eq!(
            backend("hdfs://nn:9000/archive"),
            Backend::Hdfs {
                namenode: "hdfs://nn:9000".into(),
                prefix: "archive".into()
            }
        );
        assert_eq!(
            ArchiveUrl::parse("file:///var/lib/archive")
                .unwrap()
                .as_str(),
            "file:///var/lib/archive"
        );
        assert!(ArchiveUrl::parse("ftp://x/y")
            .unwrap_err()
            .to_string()
            .contains("unsupported scheme"));
        assert!(ArchiveUrl::parse("s3:///nobucket").is_err());
        assert!(ArchiveUrl::parse("").is_err());
    }

    #[tokio::test]
    async fn a_reader_opens_a_local_archive_before_it_exists_and_sees_it_once_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("not-yet");
        let url = ArchiveUrl::parse(dir.to_str().unwrap()).unwrap();
        let settings = ArchiveStoreSettings::default();
        let reader = open(
            &url,
            &settings,
            Access::Read {
                timeout: Duration::from_secs(1),
            },
        )
        .unwrap();
        assert!(!dir.exists(), "a reader must not create the directory");
        let path = Path::from("db/events/dt=2024-05-01/hour=02/x.parquet");
        assert!(matches!(
            reader.store.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let writer = open(&url, &settings, Access::Write).unwrap();
        writer
            .store
            .put(&path, PutPayload::from_static(b"abc"))
            .await
            .unwrap();
        assert_eq!(reader.store.head(&path).await.unwrap().size, 3);
        assert!(dir
            .join("db/events/dt=2024-05-01/hour=02/x.parquet")
            .exists());
    }
}
