//! The command line: every command, flag and environment variable `auditlog` takes (clap
//! derive). Values are checked here as far as clap can; `main` turns the result into calls.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::time_range::{parse_duration, parse_time};

/// Post, find and tail the events of an auditlog service.
#[derive(Debug, Parser)]
#[command(name = "auditlog", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the service is and how to authenticate. Precedence: flag, environment variable,
/// profile of the configuration file, default.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// Base URL of the service [default: the profile's, else http://127.0.0.1:8080]
    #[arg(long, env = "AUDIT_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API key (sent as X-Api-Key) [default: the profile's]
    #[arg(
        long,
        env = "AUDIT_API_KEY",
        global = true,
        value_name = "KEY",
        // The environment's key must not end up in `--help` output pasted into a ticket.
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Profile of the configuration file to use [default: its default_profile]
    #[arg(long, env = "AUDIT_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Configuration file [default: $XDG_CONFIG_HOME/auditlog/config.toml, else ~/.config/auditlog/config.toml]
    #[arg(long, env = "AUDIT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Time allowed for each request to the service
    #[arg(long, global = true, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one event, or a file of events (--ndjson)
    Post(PostArgs),
    /// Find events by type, consumer and time, through every page
    Find(FindArgs),
    /// Print the latest complete events; with -f, follow new ones until Ctrl-C
    Tail(TailArgs),
    /// Print a shell completion script (e.g. `auditlog completions bash > /etc/bash_completion.d/auditlog`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct PostArgs {
    /// The event's type
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "ndjson",
        conflicts_with = "ndjson"
    )]
    pub kind: Option<String>,
    /// The event's consumer
    #[arg(long, required_unless_present = "ndjson", conflicts_with = "ndjson")]
    pub consumer: Option<String>,
    /// The payload: a JSON object, @FILE to read it from a file, or - for standard input
    #[arg(long, value_name = "JSON|@FILE|-", conflicts_with = "ndjson")]
    pub payload: Option<String>,
    /// The event's own id (24 hex characters), which makes a retry safe
    #[arg(long, conflicts_with = "ndjson")]
    pub id: Option<String>,
    /// Send every line of FILE (- for standard input) as an event, in batches
    #[arg(long, value_name = "FILE|-")]
    pub ndjson: Option<PathBuf>,
    /// Events per request with --ndjson (the service takes at most 1000 by default) [default: 500]
    #[arg(long, value_name = "N", conflicts_with = "kind",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: Option<u32>,
    /// Requests in flight at once with --ndjson [default: 4]
    #[arg(long, value_name = "N", conflicts_with = "kind",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: Option<u32>,
}

/// The filters shared by `find` and `tail`.
#[derive(Debug, Args)]
pub struct Filters {
    /// Only events of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only events of this consumer
    #[arg(long)]
    pub consumer: Option<String>,
    /// Also events newer than the service's complete_until (the newest at once, but a
    /// later find may show events between them that were still being written)
    #[arg(long)]
    pub include_incomplete: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Only events of the last DUR (30m, 1h, 7d)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with_all = ["from", "to"])]
    pub since: Option<Duration>,
    /// Only events created at or after TIME (2026-11-27T04:05:00Z, 2026-11-27, or 2h for two hours ago)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only events created before TIME
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Stop after N events
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_total: Option<u64>,
    /// Oldest first (asc) or newest first (desc)
    #[arg(long, value_enum, default_value_t = OrderArg::Asc)]
    pub order: OrderArg,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = FindFormat::Table)]
    pub output: FindFormat,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep following: print events as they become complete, until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// Start with the events of the last DUR
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10m")]
    pub since: Duration,
    /// How often to ask for new events with -f
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    pub poll: Duration,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = TailFormat::Ndjson)]
    pub output: TailFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindFormat {
    /// Aligned columns for a terminal: time, type, consumer, id, payload (shortened)
    Table,
    /// One JSON array of events
    Json,
    /// One event (JSON object) per line
    Ndjson,
    /// A header line, then id,type,consumer,created_at,payload (compact JSON)
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One event (JSON object) per line
    Ndjson,
    /// Columns of fixed widths, one line per event
    Table,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("auditlog").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn post_needs_type_and_consumer_or_ndjson() {
        let cli = parse(&["post", "--type", "t", "--consumer", "c", "--payload", "{}"]).unwrap();
        let Command::Post(p) = cli.command else {
            panic!("not post")
        };
        assert_eq!(
            (p.kind.as_deref(), p.consumer.as_deref()),
            (Some("t"), Some("c"))
        );
        assert!(parse(&["post", "--type", "t"]).is_err());
        assert!(parse(&["post", "--ndjson", "-"]).is_ok());
        assert!(parse(&["post", "--ndjson", "-", "--type", "t"]).is_err());
        assert!(parse(&[
            "post",
            "--type",
            "t",
            "--consumer",
            "c",
            "--batch-size",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn find_flags() {
        let cli = parse(&[
            "find",
            "--type",
            "t",
            "--since",
            "1h",
            "-o",
            "csv",
            "--order",
            "desc",
            "--limit-total",
            "5",
        ])
        .unwrap();
        let Command::Find(f) = cli.command else {
            panic!("not find")
        };
        assert_eq!(f.since, Some(Duration::from_secs(3600)));
        assert_eq!(f.output, FindFormat::Csv);
        assert_eq!(f.order, OrderArg::Desc);
        assert_eq!(f.limit_total, Some(5));
        assert!(parse(&["find", "--since", "1h", "--from", "2026-01-01"]).is_err());
        assert!(parse(&["find", "--since", "soon"]).is_err());
        assert!(parse(&["find", "--limit-total", "0"]).is_err());
        assert!(parse(&["find", "--output", "xml"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["find", "--url", "http://x:1", "--key", "k"]).unwrap();
        assert_eq!(cli.connection.url.as_deref(), Some("http://x:1"));
        let cli = parse(&["--profile", "prod", "tail", "-f"]).unwrap();
        assert_eq!(cli.connection.profile.as_deref(), Some("prod"));
    }
}
