//! Every setting of `auditlog-archiver`, as one clap struct: each is a flag and an environment
//! variable, and `--help` documents both. [`Settings::validate`] checks them without touching
//! the network, so a bad setting fails before any client is built.
//!
//! Environment variables:
//! `MONGODB_URI`, `AUDIT_DB_NAME`, `AUDIT_COLLECTION`, `AUDIT_ARCHIVE_URL`,
//! `AUDIT_ARCHIVE_AFTER`, `AUDIT_ARCHIVE_WINDOW`, `AUDIT_ARCHIVE_GRACE`,
//! `AUDIT_ARCHIVE_COMPRESSION`, `AUDIT_ARCHIVE_SAFETY_MARGIN`, `AUDIT_ARCHIVE_RAISE_TTL`,
//! `AUDIT_RETENTION_DAYS`, `AUDIT_ARCHIVE_SCHEDULE`, `AUDIT_ARCHIVER_LISTEN_ADDR`,
//! `AUDIT_ARCHIVE_BATCH_SIZE`, `AUDIT_ARCHIVE_ROW_GROUP_ROWS`, `AUDIT_ARCHIVE_ROW_GROUP_BYTES`,
//! `AUDIT_ARCHIVE_MAX_FILE_ROWS`, `AUDIT_ARCHIVE_LEASE_TTL`, `AUDIT_S3_ENDPOINT`,
//! `AUDIT_S3_REGION`, `AUDIT_S3_ACCESS_KEY_ID`, `AUDIT_S3_SECRET_ACCESS_KEY`,
//! `AUDIT_S3_ALLOW_HTTP`, `AUDIT_S3_VIRTUAL_HOSTED`, `AUDIT_HDFS_CONFIG`.

use std::fmt;
use std::str::FromStr;

use auditlog_common::settings::MongoSettings;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::ArchiveError;

/// Exports aged auditlog events from MongoDB to Parquet files (local directory, S3 or HDFS),
/// window by window, exactly once, before the TTL index expires them.
#[derive(Debug, Parser)]
#[command(name = "auditlog-archiver", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon: archives every due window on the cron schedule; serves /healthz and /metrics.
    Run,
    /// Archives every due window now and exits (0 when all succeeded). For a Kubernetes CronJob.
    Once,
    /// Last archived window, due windows, lag, and time left before TTL expires unarchived events.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-reads the recorded windows' files and compares row counts and checksums (and
    /// MongoDB's count where the events still exist); exits 6 on any mismatch.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Archives the windows overlapping [--from, --to) regardless of age. Windows already
    /// archived are skipped (no duplicates); windows that have not ended yet are refused.
    Backfill {
        /// Start (RFC 3339 like `2024-05-01T00:00:00Z`, or a date `2024-05-01`), rounded down
        /// to a window boundary.
        #[arg(long, value_parser = parse_instant)]
        from: DateTime<Utc>,
        /// End (exclusive; same formats), rounded up to a window boundary.
        #[arg(long, value_parser = parse_instant)]
        to: DateTime<Utc>,
    },
    /// Deletes from MongoDB only the events of windows that are archived and whose files still
    /// verify, and only when older than AUDIT_RETENTION_DAYS. For servers without TTL indexes.
    Purge {
        /// Show what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub mongo: MongoSettings,

    /// Where the Parquet files go: a local path or `file:///abs/path`, `s3://bucket/prefix`,
    /// or `hdfs://namenode:port/path`. Files land under `<db>/<collection>/dt=…/hour=…/`.
    #[arg(long, env = "AUDIT_ARCHIVE_URL", default_value = "./archive")]
    pub archive_url: String,

    /// Age at which events are archived (e.g. `24h`, `90m`, `2d`).
    #[arg(long, env = "AUDIT_ARCHIVE_AFTER", default_value = "24h")]
    pub archive_after: Span,

    /// Length of one archive window; must divide a day and be a divisor or multiple of an hour.
    #[arg(long, env = "AUDIT_ARCHIVE_WINDOW", default_value = "1h")]
    pub archive_window: Span,

    /// Extra wait after a window ends (beyond AUDIT_ARCHIVE_AFTER) for late writes and clock skew.
    #[arg(long, env = "AUDIT_ARCHIVE_GRACE", default_value = "10m")]
    pub archive_grace: Span,

    /// Parquet compression codec.
    #[arg(long, env = "AUDIT_ARCHIVE_COMPRESSION", value_enum, default_value_t = Compression::Snappy)]
    pub archive_compression: Compression,

    /// TTL guard: alert (and raise the TTL) when the oldest unarchived event is this close to
    /// expiring.
    #[arg(long, env = "AUDIT_ARCHIVE_SAFETY_MARGIN", default_value = "6h")]
    pub archive_safety_margin: Span,

    /// Whether the TTL guard may raise the TTL index's expireAfterSeconds with collMod.
    #[arg(long, env = "AUDIT_ARCHIVE_RAISE_TTL", default_value_t = true, action = clap::ArgAction::Set)]
    pub archive_raise_ttl: bool,

    /// Days events stay in MongoDB; `purge` deletes archived windows older than this, and the
    /// TTL guard uses it where the server has no TTL index. 0 keeps events forever.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Cron schedule of `run` (six fields, seconds first, UTC).
    #[arg(long, env = "AUDIT_ARCHIVE_SCHEDULE", default_value = "0 0 2 * * *")]
    pub archive_schedule: String,

    /// Address `run` serves /healthz and /metrics on.
    #[arg(
        long,
        env = "AUDIT_ARCHIVER_LISTEN_ADDR",
        default_value = "0.0.0.0:9464"
    )]
    pub listen_addr: String,

    /// Documents per MongoDB cursor batch (and per Arrow record batch).
    #[arg(long, env = "AUDIT_ARCHIVE_BATCH_SIZE", default_value_t = 4096)]
    pub batch_size: u32,

    /// Most rows in one Parquet row group.
    #[arg(long, env = "AUDIT_ARCHIVE_ROW_GROUP_ROWS", default_value_t = 128 * 1024)]
    pub row_group_rows: usize,

    /// A row group is flushed once its encoded size reaches this many bytes; bounds memory.
    #[arg(long, env = "AUDIT_ARCHIVE_ROW_GROUP_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub row_group_bytes: usize,

    /// Most rows in one Parquet file; a window's partition with more rows gets several files.
    #[arg(long, env = "AUDIT_ARCHIVE_MAX_FILE_ROWS", default_value_t = 5_000_000)]
    pub max_file_rows: u64,

    /// How long the lease lasts without renewal (a crashed archiver blocks others this long).
    #[arg(long, env = "AUDIT_ARCHIVE_LEASE_TTL", default_value = "60s")]
    pub lease_ttl: Span,

    #[command(flatten)]
    pub s3: S3Settings,

    /// Extra Hadoop client settings for hdfs:// URLs, `key=value` pairs separated by commas
    /// (e.g. HA name services). The HDFS user comes from HADOOP_USER_NAME.
    #[arg(long, env = "AUDIT_HDFS_CONFIG", default_value = "")]
    pub hdfs_config: String,
}

/// S3 connection settings (for `s3://` archive URLs). Unset values fall back to the usual
/// `AWS_*` variables.
#[derive(Debug, Clone, Args)]
pub struct S3Settings {
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, …); unset means AWS.
    #[arg(long, env = "AUDIT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region.
    #[arg(long, env = "AUDIT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Access key id.
    #[arg(long, env = "AUDIT_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// Secret access key.
    #[arg(long, env = "AUDIT_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints.
    #[arg(long, env = "AUDIT_S3_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path style.
    #[arg(long, env = "AUDIT_S3_VIRTUAL_HOSTED", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_virtual_hosted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Snappy,
    Zstd,
}

impl Settings {
    /// Checks the settings without network access.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        crate::window::validate_window(self.archive_window.seconds())?;
        if self.batch_size == 0 || self.row_group_rows == 0 || self.max_file_rows == 0 {
            return Err(ArchiveError::Config(
                "batch size, row group rows and max file rows must be positive".into(),
            ));
        }
        if self.row_group_bytes < 1024 * 1024 {
            return Err(ArchiveError::Config(
                "AUDIT_ARCHIVE_ROW_GROUP_BYTES must be at least 1 MiB".into(),
            ));
        }
        if self.lease_ttl.seconds() < 5 {
            return Err(ArchiveError::Config(
                "AUDIT_ARCHIVE_LEASE_TTL must be at least 5s".into(),
            ));
        }
        crate::schedule::parse(&self.archive_schedule)?;
        crate::sink::ArchiveUrl::parse(&self.archive_url)?;
        Ok(())
    }

    /// The TTL horizon `purge` uses and the guard falls back to where the server has no TTL.
    pub fn retention_seconds(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| i64::from(self.retention_days) * 86_400)
    }
}

/// A length of time written as `<number><unit>` pairs: `90s`, `15m`, `24h`, `7d`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(i64);

impl Span {
    pub fn from_seconds(s: i64) -> Self {
        Span(s)
    }
    pub fn seconds(self) -> i64 {
        self.0
    }
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.0)
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        let mut total: i64 = 0;
        let mut number = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(format!("`{s}`: unknown unit `{c}` (use s, m, h or d)")),
            };
            let n: i64 = number
                .parse()
                .map_err(|_| format!("`{s}`: expected a number before `{c}`"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("`{s}` is too long"))?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!(
                "`{s}`: missing unit after {number} (e.g. {number}s)"
            ));
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// RFC 3339 instant or a plain date (midnight UTC).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("`{s}`: expected RFC 3339 (2024-05-01T00:00:00Z) or a date (2024-05-01)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn spans_parse_units_and_reject_garbage() {
        assert_eq!("90s".parse::<Span>().unwrap().seconds(), 90);
        assert_eq!("1h30m".parse::<Span>().unwrap().seconds(), 5400);
        assert_eq!("2d".parse::<Span>().unwrap().seconds(), 172_800);
        assert!("10".parse::<Span>().is_err());
        assert!("5w".parse::<Span>().is_err());
        assert!("".parse::<Span>().is_err());
    }

    #[test]
    fn instants_accept_dates_and_rfc3339() {
        assert_eq!(
            parse_instant("2024-05-01").unwrap().to_rfc3339(),
            "2024-05-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_instant("2024-05-01T03:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2024-05-01T01:00:00+00:00"
        );
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn defaults_validate_and_bad_windows_do_not() {
        let cli = Cli::try_parse_from(["auditlog-archiver", "once"]).unwrap();
        cli.settings.validate().unwrap();
        let cli =
            Cli::try_parse_from(["auditlog-archiver", "--archive-window", "7m", "once"]).unwrap();
        assert!(cli.settings.validate().is_err());
    }
}
