//! The service's settings: one typed struct, read from flags or environment variables.
//!
//! Every setting is also an environment variable; `auditlog-service --help` lists them all
//! with their defaults. Validation that needs more than clap's parsing (the API keys) lives in
//! [`Config::load_keys`] and [`Config::validate`], so `main` can refuse to start with a message
//! naming the variable.

use std::path::Path;
use std::time::Duration;

use auditlog_common::archive_store::{ArchiveStoreSettings, ArchiveUrl};
use auditlog_common::settings::MongoSettings;
use clap::{Parser, Subcommand, ValueEnum};

use crate::keys::command::KeysCommand;
use crate::keys::{Keys, LoadError};

/// auditlog HTTP service: producers POST events, readers find them.
#[derive(Debug, Clone, Parser)]
#[command(name = "auditlog-service", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Run,
    /// Print the OpenAPI document and exit (needs no database and no API key).
    Openapi,
    /// API keys for the key file (AUDIT_API_KEYS_FILE); needs no database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// How `POST /v1/event(s)` takes an event in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestMode {
    /// Written to MongoDB before the producer is answered (201).
    Direct,
    /// Published to a RabbitMQ quorum queue and answered once RabbitMQ confirmed it (202); a
    /// drain task in every replica writes the queue into MongoDB (see [`crate::queue`]).
    Queue,
}

/// How many copies of an event must be written before a producer gets its 201.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteConcernSetting {
    /// A majority of the replica set (durable across a primary failover).
    Majority,
    /// The primary alone.
    #[value(name = "1")]
    One,
}

/// Every setting of the service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub mongo: MongoSettings,

    /// API keys accepted in `X-Api-Key`, comma-separated (several allow rotation), each with
    /// every right over every consumer. This or AUDIT_API_KEYS_FILE (or both) is required.
    #[arg(long = "api-key", env = "AUDIT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Key file of scoped API keys (TOML, one `[[key]]` per key: name, sha256 of the key,
    /// rights ingest/read, consumers, optional rate); `auditlog-service keys new` makes
    /// entries. Re-read when its content changes and on SIGHUP; a bad file is refused and the
    /// keys in force stay.
    // A string, not a path: an empty variable (a template's unset value) means no file.
    #[arg(long = "api-keys-file", env = "AUDIT_API_KEYS_FILE")]
    pub api_keys_file: Option<String>,

    /// How often the key file is checked for changes, in milliseconds; 0: only on SIGHUP.
    #[arg(long, env = "AUDIT_API_KEYS_POLL_MS", default_value_t = 1000)]
    pub api_keys_poll_ms: u64,

    /// Serve `GET /metrics` on this address (e.g. `0.0.0.0:9091`) instead of on the API's, so
    /// that an Ingress in front of the API port never exposes it. Unset: on the API's port.
    #[arg(long, env = "AUDIT_METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<String>,

    /// Address to listen on.
    #[arg(
        long = "listen-addr",
        env = "AUDIT_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: String,

    /// Serve the events explorer at `/ui`: a web page to find, chart, read and export events
    /// (docs/ui.md). `false`: `/ui` answers 404.
    #[arg(long, env = "AUDIT_UI_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub ui_enabled: bool,

    /// How often, at most, the archive's state for `/metrics` (oldest unarchived event, TTL
    /// headroom, the archiver's last run) is read from MongoDB, in seconds; 0: never. A slow
    /// read spaces the next ones out so that they take at most 1 % of the time.
    #[arg(long, env = "AUDIT_ARCHIVE_WATCH_SECS", default_value_t = 60)]
    pub archive_watch_secs: u64,

    /// Days MongoDB keeps an event before the TTL index removes it; 0 keeps events forever.
    #[arg(
        long = "retention-days",
        env = "AUDIT_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub retention_days: u32,

    /// Largest request body accepted, in bytes, counted after gzip/deflate decompression.
    #[arg(long, env = "AUDIT_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Request body bytes being read or parsed at once, across all connections. A request that
    /// would go beyond it is answered 503 with Retry-After instead of taking more memory. A
    /// body is counted by its buffer: its Content-Length when plain; when compressed or
    /// chunked, 8 KiB at first, doubling as it fills (up to AUDIT_MAX_BODY_BYTES). It is given
    /// back once the body is parsed into events.
    #[arg(long, env = "AUDIT_MAX_INFLIGHT_BODY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,

    /// Largest single event accepted, in bytes of its stored (BSON) form.
    #[arg(long, env = "AUDIT_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,

    /// Deepest nesting of objects and arrays accepted inside `payload` (`{}` at top is depth 1).
    #[arg(long, env = "AUDIT_MAX_PAYLOAD_DEPTH", default_value_t = 16)]
    pub max_payload_depth: usize,

    /// Most events accepted in one `POST /v1/events` request.
    #[arg(long, env = "AUDIT_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// Largest `limit` of `find`; bigger requested limits are lowered to this.
    #[arg(long, env = "AUDIT_FIND_MAX_LIMIT", default_value_t = 1000)]
    pub find_max_limit: u32,

    /// Server-side time limit of one `find` query, in milliseconds (`maxTimeMS`).
    #[arg(long, env = "AUDIT_FIND_TIMEOUT_MS", default_value_t = 5000)]
    pub find_timeout_ms: u64,

    /// Write concern of inserts: `majority` or `1`.
    #[arg(
        long,
        env = "AUDIT_WRITE_CONCERN",
        value_enum,
        default_value = "majority"
    )]
    pub write_concern: WriteConcernSetting,

    /// Group commit: gather concurrent events into one `insert_many`. `false` writes every
    /// event with its own insert (to measure what group commit buys).
    #[arg(long, env = "AUDIT_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub group_commit: bool,

    /// Events waiting to be written, at most; beyond this producers get 429 + Retry-After.
    #[arg(long, env = "AUDIT_QUEUE_CAPACITY", default_value_t = 20_000)]
    pub queue_capacity: usize,

    /// Bytes of events queued or being written, at most; beyond this producers get 429. Keeps
    /// memory bounded whatever the event sizes.
    #[arg(long, env = "AUDIT_QUEUE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub queue_max_bytes: usize,

    /// Most events in one group-commit `insert_many`.
    #[arg(long, env = "AUDIT_BATCH_MAX_EVENTS", default_value_t = 1000)]
    pub batch_max_events: usize,

    /// Most bytes in one group-commit `insert_many`.
    #[arg(long, env = "AUDIT_BATCH_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub batch_max_bytes: usize,

    /// Most group-commit batches in flight at once. One is in flight while the store keeps up
    /// (events gather meanwhile into the next batch); more only while full batches wait. With
    /// group commit off, up to 64 single inserts run at once regardless (the driver's
    /// connection pool bounds them further).
    #[arg(long, env = "AUDIT_WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// How long a write is retried (with backoff) while the store is unreachable before the
    /// producer gets 503, in seconds.
    #[arg(long, env = "AUDIT_WRITE_DEADLINE_SECS", default_value_t = 15)]
    pub write_deadline_secs: u64,

    /// How far apart the clocks of the service replicas may be, in seconds. With the write
    /// deadline and the driver's server-selection timeout it sets how far behind now a find's
    /// `complete_until` lies (see docs/api.md).
    #[arg(long, env = "AUDIT_CLOCK_SKEW_SECS", default_value_t = 2)]
    pub clock_skew_secs: u64,

    /// `direct` (default): answer 201 once the event is in MongoDB. `queue`: answer 202 once
    /// RabbitMQ (AUDIT_AMQP_URL) confirmed it; the service drains the queue into MongoDB, so a
    /// MongoDB outage does not reach producers.
    #[arg(long, env = "AUDIT_INGEST_MODE", value_enum, default_value = "direct")]
    pub ingest_mode: IngestMode,

    /// Queue mode: the RabbitMQ URL, e.g. `amqp://user:password@rabbitmq:5672/%2f` (`amqps://`
    /// for TLS). Required with AUDIT_INGEST_MODE=queue.
    #[arg(long, env = "AUDIT_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// Queue mode: the durable quorum queue events go through (declared at start if missing);
    /// events the store refuses for good go to `<queue>.dead`.
    #[arg(long, env = "AUDIT_AMQP_QUEUE", default_value = "auditlog.events")]
    pub amqp_queue: String,

    /// Queue mode: messages ready in the queue past which producers get 429 with Retry-After.
    #[arg(long, env = "AUDIT_AMQP_MAX_DEPTH", default_value_t = 1_000_000)]
    pub amqp_max_depth: u64,

    /// Queue mode: messages each replica's drain holds unacknowledged at once (AMQP prefetch);
    /// they are what its group commits are made of.
    #[arg(long, env = "AUDIT_AMQP_PREFETCH", default_value_t = 1000)]
    pub amqp_prefetch: u16,

    /// The Parquet archive auditlog-archiver writes (the archiver's AUDIT_ARCHIVE_URL: a path,
    /// `file:///abs/path`, `s3://bucket/prefix` or `hdfs://namenode:port/path`). When set, find
    /// also reads it, for the windows TTL or `purge` may have removed from MongoDB; unset, find
    /// reads MongoDB only. The S3 and HDFS settings are the archiver's too.
    #[arg(long, env = "AUDIT_ARCHIVE_URL", value_parser = ArchiveUrl::parse)]
    pub archive_url: Option<ArchiveUrl>,

    /// S3 settings (`AUDIT_S3_*`) and Hadoop client settings (`AUDIT_HDFS_CONFIG`) of the
    /// archive, as the archiver takes them.
    #[command(flatten)]
    pub archive_store: ArchiveStoreSettings,

    /// With an archive: find reads a recorded window from the archive once TTL (or `purge`)
    /// could delete its events within this many seconds, so none expires while a query reads
    /// MongoDB. At least AUDIT_FIND_TIMEOUT_MS plus AUDIT_CLOCK_SKEW_SECS.
    #[arg(long, env = "AUDIT_ARCHIVE_FIND_MARGIN_SECS", default_value_t = 3600)]
    pub archive_find_margin_secs: u64,

    /// After SIGTERM/SIGINT, how long open connections may take to finish, in seconds, and
    /// then how long queue mode's drain may take to finish the messages it is writing (past
    /// that RabbitMQ delivers them again). Queued events are written regardless.
    #[arg(long, env = "AUDIT_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// The API keys of `AUDIT_API_KEY` and of `AUDIT_API_KEYS_FILE`, with the SHA-256 of the
    /// file's content; an error naming the variable when neither gives a key, or the file is
    /// not valid.
    pub fn load_keys(&self) -> Result<(Keys, Option<[u8; 32]>), ConfigError> {
        Ok(Keys::load(
            self.api_key.as_deref(),
            self.api_keys_file.as_deref().map(Path::new),
        )?)
    }

    /// How often the key file is polled; `None`: only on SIGHUP.
    pub fn api_keys_poll(&self) -> Option<Duration> {
        (self.api_keys_poll_ms > 0).then(|| Duration::from_millis(self.api_keys_poll_ms))
    }

    /// The shortest period of the archive state's reads; `None`: not read.
    pub fn archive_watch_every(&self) -> Option<Duration> {
        (self.archive_watch_secs > 0).then(|| Duration::from_secs(self.archive_watch_secs))
    }

    /// The separate metrics address, when one is set.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.metrics_listen_addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }

    /// Settings that make no sense, reported before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("AUDIT_MAX_BODY_BYTES", self.max_body_bytes),
            (
                "AUDIT_MAX_INFLIGHT_BODY_BYTES",
                self.max_inflight_body_bytes,
            ),
            ("AUDIT_MAX_EVENT_BYTES", self.max_event_bytes),
            ("AUDIT_MAX_PAYLOAD_DEPTH", self.max_payload_depth),
            ("AUDIT_MAX_BATCH_EVENTS", self.max_batch_events),
            ("AUDIT_FIND_MAX_LIMIT", self.find_max_limit as usize),
            ("AUDIT_QUEUE_CAPACITY", self.queue_capacity),
            ("AUDIT_QUEUE_MAX_BYTES", self.queue_max_bytes),
            ("AUDIT_BATCH_MAX_EVENTS", self.batch_max_events),
            ("AUDIT_BATCH_MAX_BYTES", self.batch_max_bytes),
            ("AUDIT_WRITERS", self.writers),
            ("AUDIT_AMQP_PREFETCH", usize::from(self.amqp_prefetch)),
            (
                "AUDIT_AMQP_MAX_DEPTH",
                usize::try_from(self.amqp_max_depth).unwrap_or(usize::MAX),
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_inflight_body_bytes < self.max_body_bytes {
            return Err(ConfigError::BudgetBelowBody {
                budget: self.max_inflight_body_bytes,
                body: self.max_body_bytes,
            });
        }
        let margin_floor_ms = self
            .find_timeout_ms
            .saturating_add(self.clock_skew_secs.saturating_mul(1000));
        if self.archive_url.is_some()
            && self.archive_find_margin_secs.saturating_mul(1000) < margin_floor_ms
        {
            return Err(ConfigError::ArchiveMarginTooShort {
                margin_secs: self.archive_find_margin_secs,
                floor_ms: margin_floor_ms,
            });
        }
        if self.ingest_mode == IngestMode::Queue {
            if self.amqp_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
                return Err(ConfigError::MissingAmqpUrl);
            }
            let queue = self.amqp_queue.trim();
            // AMQP queue names are short strings; `<queue>.dead` must fit too.
            if queue.is_empty() || queue.len() + ".dead".len() > 255 {
                return Err(ConfigError::BadQueueName(self.amqp_queue.clone()));
            }
        }
        Ok(())
    }

    pub fn write_deadline(&self) -> Duration {
        Duration::from_secs(self.write_deadline_secs)
    }

    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Keys(#[from] LoadError),
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    #[error("AUDIT_INGEST_MODE=queue needs AUDIT_AMQP_URL: set it to the RabbitMQ URL, e.g. amqp://user:password@rabbitmq:5672/%2f")]
    MissingAmqpUrl,
    #[error("AUDIT_AMQP_QUEUE {0:?} is not a queue name: 1 to 250 bytes")]
    BadQueueName(String),
    #[error("AUDIT_MAX_INFLIGHT_BODY_BYTES ({budget}) is below AUDIT_MAX_BODY_BYTES ({body}): a body of the largest accepted size could never be read")]
    BudgetBelowBody { budget: usize, body: usize },
    #[error("AUDIT_ARCHIVE_FIND_MARGIN_SECS ({margin_secs}) must cover AUDIT_FIND_TIMEOUT_MS plus AUDIT_CLOCK_SKEW_SECS ({floor_ms} ms): an event could expire while a find reads MongoDB")]
    ArchiveMarginTooShort { margin_secs: u64, floor_ms: u64 },
    #[error("AUDIT_ARCHIVE_URL: {0}")]
    Archive(#[from] auditlog_common::archive_store::ArchiveStoreError),
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
    fn keys_are_split_on_commas_and_blank_ones_dropped() {
        let cli = Cli::parse_from(["auditlog-service", "--api-key", " a, ,b "]);
        let (keys, _) = cli.config.load_keys().unwrap();
        assert!(keys.authenticate(b"a").is_some() && keys.authenticate(b"b").is_some());
        assert!(keys.authenticate(b" a").is_none());
        assert_eq!(keys.current().counts(), (2, 0));
        let cli = Cli::parse_from(["auditlog-service", "--api-key", " , "]);
        assert!(matches!(
            cli.config.load_keys(),
            Err(ConfigError::Keys(LoadError::NoKeys))
        ));
    }

    #[test]
    fn the_keys_command_and_the_key_file_settings() {
        let cli = Cli::parse_from([
            "auditlog-service",
            "keys",
            "new",
            "--name",
            "p",
            "--rights",
            "ingest,read",
            "--consumers",
            "a,b-*",
        ]);
        let Some(Command::Keys {
            command: KeysCommand::New(args),
        }) = cli.command
        else {
            panic!("keys new not parsed");
        };
        assert_eq!(args.consumers, vec!["a", "b-*"]);
        let cli = Cli::parse_from([
            "auditlog-service",
            "--api-keys-poll-ms",
            "0",
            "--api-keys-file",
            "",
            "--metrics-listen-addr",
            " ",
            "--api-key",
            "k",
        ]);
        assert!(
            cli.config.load_keys().is_ok(),
            "an empty AUDIT_API_KEYS_FILE is no file"
        );
        assert_eq!(cli.config.api_keys_poll(), None);
        assert_eq!(cli.config.metrics_addr(), None);
        let cli = Cli::parse_from(["auditlog-service"]);
        assert_eq!(
            cli.config.api_keys_poll(),
            Some(Duration::from_millis(1000))
        );
    }

    #[test]
    fn queue_mode_is_opt_in_and_needs_an_amqp_url() {
        let cli = Cli::parse_from(["auditlog-service", "--api-key", "k"]);
        assert_eq!(cli.config.ingest_mode, IngestMode::Direct);
        assert_eq!(cli.config.amqp_queue, "auditlog.events");
        assert!(cli.config.validate().is_ok());
        let cli = Cli::parse_from(["auditlog-service", "--ingest-mode", "queue"]);
        let err = cli.config.validate().unwrap_err();
        assert!(matches!(err, ConfigError::MissingAmqpUrl));
        assert!(err.to_string().contains("AUDIT_AMQP_URL"), "{err}");
        let cli = Cli::parse_from([
            "auditlog-service",
            "--ingest-mode",
            "queue",
            "--amqp-url",
            "amqp://127.0.0.1:5672/%2f",
        ]);
        assert!(cli.config.validate().is_ok());
    }

    #[test]
    fn the_archive_is_optional_and_its_margin_covers_a_find() {
        let cli = Cli::parse_from(["auditlog-service", "--api-key", "k"]);
        assert!(cli.config.archive_url.is_none());
        assert_eq!(cli.config.archive_find_margin_secs, 3600);
        assert!(cli.config.validate().is_ok());
        let cli = Cli::parse_from([
            "auditlog-service",
            "--archive-url",
            "s3://bucket/prefix",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--archive-find-margin-secs",
            "6",
        ]);
        assert_eq!(
            cli.config.archive_store.s3.s3_endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        let err = cli.config.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::ArchiveMarginTooShort { .. }),
            "{err}"
        );
        assert!(Cli::try_parse_from(["auditlog-service", "--archive-url", "ftp://x/y"]).is_err());
    }

    #[test]
    fn the_events_explorer_is_on_unless_switched_off() {
        let cli = Cli::parse_from(["auditlog-service"]);
        assert!(cli.config.ui_enabled);
        let cli = Cli::parse_from(["auditlog-service", "--ui-enabled", "false"]);
        assert!(!cli.config.ui_enabled);
    }

    #[test]
    fn group_commit_can_be_switched_off() {
        let cli = Cli::parse_from(["auditlog-service", "--group-commit", "false", "run"]);
        assert!(!cli.config.group_commit);
        assert!(matches!(cli.command, Some(Command::Run)));
    }
}
