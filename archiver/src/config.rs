//! Every setting of `auditlog-archiver`, as one clap struct: each is a flag and an environment
//! variable, and `--help` documents both. Each is parsed once, by clap, into its type —
//! durations (`humantime` syntax, whole seconds), the archive URL ([`ArchiveUrl`]), the cron
//! schedule ([`Schedule`]) — so nothing downstream re-parses a string.
//! [`Settings::validate`] then checks what relates settings to each other, without touching the
//! network, so a bad setting fails before any client is built.
//!
//! Environment variables:
//! `MONGODB_URI`, `AUDIT_DB_NAME`, `AUDIT_COLLECTION`, `AUDIT_ARCHIVE_URL`,
//! `AUDIT_ARCHIVE_AFTER`, `AUDIT_ARCHIVE_WINDOW`, `AUDIT_ARCHIVE_GRACE`,
//! `AUDIT_ARCHIVE_COMPRESSION`, `AUDIT_ARCHIVE_SAFETY_MARGIN`, `AUDIT_ARCHIVE_EXPECTED_RUN_TIME`,
//! `AUDIT_ARCHIVE_RAISE_TTL`, `AUDIT_RETENTION_DAYS`, `AUDIT_ARCHIVE_SCHEDULE`,
//! `AUDIT_ARCHIVER_LISTEN_ADDR`, `AUDIT_ARCHIVE_BATCH_SIZE`, `AUDIT_ARCHIVE_BATCH_MAX_BYTES`,
//! `AUDIT_ARCHIVE_ROW_GROUP_ROWS`, `AUDIT_ARCHIVE_ROW_GROUP_BYTES`,
//! `AUDIT_ARCHIVE_MAX_FILE_ROWS`, `AUDIT_ARCHIVE_LEASE_TTL`, `AUDIT_S3_ENDPOINT`,
//! `AUDIT_S3_REGION`, `AUDIT_S3_ACCESS_KEY_ID`, `AUDIT_S3_SECRET_ACCESS_KEY`,
//! `AUDIT_S3_ALLOW_HTTP`, `AUDIT_S3_VIRTUAL_HOSTED`, `AUDIT_HDFS_CONFIG`,
//! `AUDIT_ARCHIVE_SIGNING_KEY_FILE`, `AUDIT_ARCHIVE_PUBLIC_KEYS`.

use std::path::PathBuf;
use std::time::Duration;

pub use auditlog_common::archive_store::{
    ArchiveStoreSettings, ArchiveUrl, ArchiveUrlError, Backend, S3Settings,
};
use auditlog_common::settings::MongoSettings;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::ArchiveError;
use crate::schedule::Schedule;
use crate::window::{due_cutoff, validate_window};

/// Exports aged auditlog events from MongoDB to Parquet files (local directory, S3 or HDFS),
/// in UTC windows, exactly once, before the TTL index expires them.
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
    /// Without --public-key: re-reads the recorded windows' files and compares row counts and
    /// checksums (and MongoDB's count where the events still exist); exits 6 on any mismatch.
    /// With --public-key: checks the signed archive (docs/integrity.md) — every digest's
    /// signature and the chain up to the head MongoDB names, every listed file's size and
    /// SHA-256, no unlisted file, no recorded window left out; exits 1 with one line per
    /// problem (modified, missing, unlisted, chain broken, bad signature, unknown key, gap).
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Public keys (SPKI PEM) the digests may be signed with; a directory stands for its
        /// *.pub and *.pem files. Repeat for several keys (rotation).
        #[arg(
            long = "public-key",
            env = "AUDIT_ARCHIVE_PUBLIC_KEYS",
            value_delimiter = ','
        )]
        public_keys: Vec<PathBuf>,
        /// Check only the files of windows ending after this instant (signatures and the chain
        /// are always checked whole). RFC 3339 or a date.
        #[arg(long, value_parser = parse_instant, requires = "public_keys")]
        from: Option<DateTime<Utc>>,
        /// Check only the files of windows starting before this instant.
        #[arg(long, value_parser = parse_instant, requires = "public_keys")]
        to: Option<DateTime<Utc>>,
    },
    /// Signing keys for the archive's digests (no MongoDB needed).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Writes a new Ed25519 key pair: DIR/archive-signing.key (PKCS#8 PEM, mode 0600) and
    /// DIR/archive-signing.pub (SPKI PEM); prints the key id. Never overwrites.
    New {
        /// Directory to write the pair into (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the public key (SPKI PEM) of a private key file, and its id on stderr.
    Public {
        /// The private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

/// Settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub mongo: MongoSettings,

    /// Where the Parquet files go: a local path or `file:///abs/path`, `s3://bucket/prefix`,
    /// or `hdfs://namenode:port/path`. Files land under `<db>/<collection>/dt=…/hour=…/`.
    #[arg(long, alias = "archive", global = true, env = "AUDIT_ARCHIVE_URL", default_value = "./archive", value_parser = ArchiveUrl::parse)]
    pub archive_url: ArchiveUrl,

    /// Ed25519 private key (PKCS#8 PEM, `auditlog-archiver keys new`) to sign each run's
    /// digest with (docs/integrity.md). Unset: the archive is not signed, and the archiver says
    /// so once at start.
    #[arg(long, env = "AUDIT_ARCHIVE_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Age at which events are archived (e.g. `24h`, `90m`, `2d`, `1h 30m`).
    #[arg(long, env = "AUDIT_ARCHIVE_AFTER", default_value = "24h", value_parser = parse_span)]
    pub archive_after: TimeDelta,

    /// Length of one archive window; must divide a day and be a divisor or multiple of an hour.
    #[arg(long, env = "AUDIT_ARCHIVE_WINDOW", default_value = "1h", value_parser = parse_span)]
    pub archive_window: TimeDelta,

    /// Extra wait after a window ends (beyond AUDIT_ARCHIVE_AFTER) for late writes and clock skew.
    #[arg(long, env = "AUDIT_ARCHIVE_GRACE", default_value = "10m", value_parser = parse_span)]
    pub archive_grace: TimeDelta,

    /// Parquet compression codec.
    #[arg(long, env = "AUDIT_ARCHIVE_COMPRESSION", value_enum, default_value_t = Compression::Snappy)]
    pub archive_compression: Compression,

    /// TTL guard: alert (and raise the TTL) when the oldest unarchived event would expire
    /// less than this long after the next scheduled run is expected to finish.
    #[arg(long, env = "AUDIT_ARCHIVE_SAFETY_MARGIN", default_value = "6h", value_parser = parse_span)]
    pub archive_safety_margin: TimeDelta,

    /// TTL guard: how long a run is expected to take at least; the last run's duration counts
    /// instead when it was longer.
    #[arg(long, env = "AUDIT_ARCHIVE_EXPECTED_RUN_TIME", default_value = "1h", value_parser = parse_span)]
    pub archive_expected_run_time: TimeDelta,

    /// Whether the TTL guard may raise the TTL index's expireAfterSeconds with collMod.
    #[arg(long, env = "AUDIT_ARCHIVE_RAISE_TTL", default_value_t = true, action = clap::ArgAction::Set)]
    pub archive_raise_ttl: bool,

    /// Days events stay in MongoDB; `purge` deletes archived windows older than this, and the
    /// TTL guard uses it where the server has no TTL index. 0 keeps events forever.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Cron schedule of `run` (six fields, seconds first, UTC). `once` reads it too: the TTL
    /// guard needs to know when the next run comes, so give a CronJob the same schedule.
    #[arg(long, env = "AUDIT_ARCHIVE_SCHEDULE", default_value = "0 0 2 * * *", value_parser = Schedule::parse)]
    pub archive_schedule: Schedule,

    /// Address `run` serves /healthz and /metrics on.
    #[arg(
        long,
        env = "AUDIT_ARCHIVER_LISTEN_ADDR",
        default_value = "0.0.0.0:9464"
    )]
    pub listen_addr: String,

    /// Documents per MongoDB cursor batch (and at most per Arrow record batch).
    #[arg(long, env = "AUDIT_ARCHIVE_BATCH_SIZE", default_value_t = 4096)]
    pub batch_size: u32,

    /// An Arrow record batch is cut once its events reach this many bytes, even before
    /// AUDIT_ARCHIVE_BATCH_SIZE rows: bounds memory when events are large.
    #[arg(long, env = "AUDIT_ARCHIVE_BATCH_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub batch_max_bytes: usize,

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
    #[arg(long, env = "AUDIT_ARCHIVE_LEASE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// S3 settings (`AUDIT_S3_*`) and Hadoop client settings (`AUDIT_HDFS_CONFIG`), shared with
    /// the service, which reads the archive back.
    #[command(flatten)]
    pub store: ArchiveStoreSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Snappy,
    Zstd,
}

impl Settings {
    /// Checks what the types alone do not: window tiling, sizes, the lease's minimum.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        validate_window(self.window_seconds())?;
        if self.batch_size == 0
            || self.batch_max_bytes == 0
            || self.row_group_rows == 0
            || self.max_file_rows == 0
        {
            return Err(ArchiveError::Config(
                "batch size, batch max bytes, row group rows and max file rows must be positive"
                    .into(),
            ));
        }

        if self.row_group_bytes < 1024 * 1024 {
            return Err(ArchiveError::Config(
                "AUDIT_ARCHIVE_ROW_GROUP_BYTES must be at least 1 MiB".into(),
            ));
        }
        if self.lease_ttl < Duration::from_secs(5) {
            return Err(ArchiveError::Config(
                "AUDIT_ARCHIVE_LEASE_TTL must be at least 5s".into(),
            ));
        }
        Ok(())
    }

    /// The length of one window in seconds.
    pub fn window_seconds(&self) -> i64 {
        self.archive_window.num_seconds()
    }

    /// Windows ending at or before this instant are due (the one due rule, see
    /// [`crate::window::due_cutoff`]).
    pub fn due_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        due_cutoff(now, self.archive_after, self.archive_grace)
    }

    /// The TTL horizon `purge` uses and the guard falls back to where the server has no TTL.
    pub fn retention_seconds(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| i64::from(self.retention_days) * 86_400)
    }
}

/// A duration setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("{0} (e.g. 90s, 15m, 24h, 30d, 1h30m)")]
    Syntax(#[from] humantime::DurationError),
    #[error("durations are whole seconds")]
    Fraction,
    #[error("too long")]
    TooLong,
}

/// A length of time as users write it — `90s`, `15m`, `24h`, `30d`, `1h30m`, `1h 30m` — in
/// `humantime` syntax (which also knows `w`, `M` and `y`), in whole seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(s.trim())?;
    if d.subsec_nanos() != 0 {
        return Err(DurationError::Fraction);
    }
    // Every duration must also be usable in date arithmetic.
    TimeDelta::from_std(d).map_err(|_| DurationError::TooLong)?;
    Ok(d)
}

/// [`parse_duration`] for settings used in date arithmetic.
pub fn parse_span(s: &str) -> Result<TimeDelta, DurationError> {
    TimeDelta::from_std(parse_duration(s)?).map_err(|_| DurationError::TooLong)
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
    fn durations_parse_what_users_write_and_reject_garbage() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("24h"), 86_400);
        assert_eq!(secs("30d"), 30 * 86_400);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(secs(" 6h "), 6 * 3600);
        assert_eq!(parse_span("2d").unwrap().num_seconds(), 172_800);
        // Accepted by humantime, refused by the parser it replaced: `0`, fractions, `w`/`M`/`y`.
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("1.5h"), 5400);
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1500ms").is_err(), "whole seconds only");
        assert!(parse_duration("-1h").is_err());
    }

    #[test]
    fn defaults_are_what_the_docs_say() {
        let s = Cli::try_parse_from(["auditlog-archiver", "once"])
            .unwrap()
            .settings;
        assert_eq!(s.archive_after.num_seconds(), 86_400);
        assert_eq!(s.window_seconds(), 3600);
        assert_eq!(s.archive_grace.num_seconds(), 600);
        assert_eq!(s.archive_safety_margin.num_seconds(), 6 * 3600);
        assert_eq!(s.archive_expected_run_time.num_seconds(), 3600);
        assert_eq!(s.batch_max_bytes, 64 * 1024 * 1024);
        assert_eq!(s.lease_ttl, Duration::from_secs(60));
        // Unset S3 settings stay unset, so the AWS_* variables can apply.
        assert_eq!(s.store.s3.s3_region, None);
        assert_eq!(s.store.s3.s3_allow_http, None);
        assert_eq!(s.store.s3.s3_virtual_hosted, None);
        assert_eq!(s.archive_schedule.as_str(), "0 0 2 * * *");
        assert_eq!(s.archive_url.as_str(), "./archive");
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
    fn defaults_validate_and_bad_settings_do_not() {
        let cli = Cli::try_parse_from(["auditlog-archiver", "once"]).unwrap();
        cli.settings.validate().unwrap();
        let cli =
            Cli::try_parse_from(["auditlog-archiver", "--archive-window", "7m", "once"]).unwrap();
        assert!(cli.settings.validate().is_err());
        let cli = Cli::try_parse_from(["auditlog-archiver", "--lease-ttl", "4s", "once"]).unwrap();
        assert!(cli.settings.validate().is_err());
        // Typed settings fail while the arguments are read.
        for bad in [
            ["--archive-url", "ftp://x/y"],
            ["--archive-schedule", "0 2 * * *"],
            ["--archive-after", "10"],
        ] {
            let args = ["auditlog-archiver", bad[0], bad[1], "once"];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
