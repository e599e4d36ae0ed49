//! The command line: one typed clap struct per sub-command. Every option is also an
//! environment variable, so the Helm bootstrap Job and operators configure it the same way.

use std::path::PathBuf;
use std::time::Duration;

use auditlog_common::schema::ShardKey;
use auditlog_common::settings::MongoSettings;
use clap::{Args, Parser, Subcommand};

use crate::topology::ReplSetSpec;

/// Operator tooling for auditlog: bootstraps a sharded MongoDB cluster, prepares the events
/// collection (indexes, TTL, sharding), reports the cluster's state and changes retention.
///
/// Exit codes: 0 done; 2 bad arguments; 3 bad configuration (unreadable keyfile, bad
/// replica-set list); 4 the cluster did not become ready before the deadline or cannot be
/// reached; 5 the server refused a command (authentication, permissions, conflicts);
/// 6 the server lacks the feature asked for (e.g. TTL on FerretDB); 7 a check refused because
/// going on would strand data (`cluster check-shards`).
#[derive(Debug, Parser)]
#[command(name = "auditlog-ops", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub mongo: MongoSettings,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How auditlog-ops authenticates and secures its connections, beyond what `MONGODB_URI` says.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Keyfile of the cluster's internal authentication. When given, auditlog-ops
    /// authenticates to every member and to mongos as the internal `__system` user
    /// (authSource `local`) with the keyfile's contents, whitespace removed, as password.
    /// This works under keyfile auth before any user exists, without the localhost exception.
    #[arg(long, env = "MONGODB_KEYFILE", global = true)]
    pub keyfile: Option<PathBuf>,

    /// CA certificate (PEM) to verify the servers' TLS certificates; turns TLS on.
    #[arg(long, env = "MONGODB_TLS_CA_FILE", global = true)]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate and private key in one PEM file; turns TLS on.
    #[arg(long, env = "MONGODB_TLS_CERT_KEY_FILE", global = true)]
    pub tls_certificate_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster-wide operations.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Operations on the events database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Reports shards, members, primaries, distribution of the events collection, balancer,
    /// indexes, TTL and the archiver's lag.
    Status(StatusArgs),
    /// Event retention (the TTL of the `created_at` index).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Idempotently brings a sharded cluster up: waits for members, initiates the
    /// config-server and shard replica sets with all their members, creates the admin user,
    /// adds missing shards to mongos (`MONGODB_URI`), then runs `db setup`.
    Bootstrap(Box<BootstrapArgs>),
    /// Exits 7 when mongos (`MONGODB_URI`) lists a shard that is not among the given ones: the
    /// chart's `pre-rollback` hook, with the shards of the revision rolled back to, so that
    /// `helm rollback` cannot delete a shard's StatefulSet while MongoDB still routes data to
    /// it. Waits up to `--deadline` for mongos, then fails (exit 4): it never passes blind.
    CheckShards(CheckShardsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckShardsArgs {
    /// A shard the target keeps: its replica-set name, or `NAME/host:port,...` as
    /// `cluster bootstrap` takes it. Repeat for each shard; in the environment variable
    /// separate them with `;`.
    #[arg(
        long = "shard",
        env = "AUDIT_SHARD_REPLSETS",
        value_delimiter = ';',
        required = true
    )]
    pub shards: Vec<String>,

    /// How long to wait for mongos to answer (e.g. `2m`).
    #[arg(long, env = "AUDIT_CHECK_DEADLINE", default_value = "2m", value_parser = humantime::parse_duration)]
    pub deadline: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Enables sharding for the database, shards the events collection, creates the query
    /// indexes and the TTL index. Each step is skipped when already done.
    Setup(SetupArgs),
    /// Creates (or corrects) the custom roles `auditlogService` / `auditlogArchiver` and the
    /// users given, through the router: least privilege on a cluster bootstrap did not set
    /// up (an existing or managed MongoDB). Re-running changes nothing; passwords of existing
    /// users are never rewritten.
    Users(ComponentUsersArgs),
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Changes how long events stay in MongoDB, in place with `collMod`.
    Set(RetentionSetArgs),
}

/// What `db setup` needs (also part of `cluster bootstrap`).
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Shard key of the events collection.
    #[arg(long, env = "AUDIT_SHARD_KEY", value_enum, default_value_t = ShardKey::default())]
    pub shard_key: ShardKey,

    /// Days an event stays in MongoDB before the TTL index removes it; 0 keeps events forever.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// When the collection is already sharded on another key, reshard it to the configured key
    /// (`reshardCollection`, MongoDB ≥ 5.0; copies the whole collection). Without it the
    /// difference is reported with the command to run.
    #[arg(long, env = "AUDIT_RESHARD")]
    pub reshard: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// The config-server replica set: `NAME/host:port,host:port,...`, every member.
    #[arg(long, env = "AUDIT_CONFIG_REPLSET")]
    pub config_replset: ReplSetSpec,

    /// A shard's replica set: `NAME/host:port,...`, every member. Repeat for each shard; in
    /// the environment variable separate the shards with `;`.
    #[arg(
        long = "shard-replset",
        env = "AUDIT_SHARD_REPLSETS",
        value_delimiter = ';',
        required = true
    )]
    pub shard_replsets: Vec<ReplSetSpec>,

    /// Administrative user to create (role `root`) through mongos and on every shard replica
    /// set, if missing. Without it no user is created.
    #[arg(long, env = "MONGODB_ADMIN_USERNAME", requires = "admin_password")]
    pub admin_username: Option<String>,

    /// Password of the administrative user.
    #[arg(long, env = "MONGODB_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    #[command(flatten)]
    pub users: ComponentUsersArgs,

    /// How long to keep waiting and retrying before giving up (e.g. `90s`, `10m`).
    #[arg(long, env = "AUDIT_BOOTSTRAP_DEADLINE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub deadline: Duration,

    #[command(flatten)]
    pub setup: SetupArgs,
}

/// The service's and the archiver's own users (least privilege), for `cluster bootstrap` and
/// `db users`.
#[derive(Debug, Clone, Args)]
pub struct ComponentUsersArgs {
    /// The service's own user (custom role `auditlogService`: insert and find on the events
    /// collection, its indexes, read the archive state), created if missing.
    #[arg(
        long,
        env = "AUDIT_SERVICE_MONGODB_USERNAME",
        requires = "service_password"
    )]
    pub service_username: Option<String>,

    /// Password of the service's user (set when the user is created, never rewritten).
    #[arg(long, env = "AUDIT_SERVICE_MONGODB_PASSWORD", hide_env_values = true)]
    pub service_password: Option<String>,

    /// The archiver's own user (custom role `auditlogArchiver`: find on events, `collMod` for
    /// the TTL guard, read-write on its state collections), created if missing.
    #[arg(
        long,
        env = "AUDIT_ARCHIVER_MONGODB_USERNAME",
        requires = "archiver_password"
    )]
    pub archiver_username: Option<String>,

    /// Password of the archiver's user (set when the user is created, never rewritten).
    #[arg(long, env = "AUDIT_ARCHIVER_MONGODB_PASSWORD", hide_env_values = true)]
    pub archiver_password: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RetentionSetArgs {
    /// New retention in days (at least 1: MongoDB cannot turn a TTL index back into a plain one).
    /// This is the only command that lowers retention; `db setup` and the service only raise it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,

    /// Refuse when the oldest event that is not archived yet would expire within this margin
    /// from now under the new retention (e.g. `1d`, `6h`).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub margin: Duration,

    /// Change retention even when unarchived events would expire (they are lost from MongoDB
    /// without a Parquet copy).
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bootstrap_takes_the_helm_jobs_arguments() {
        let cli = Cli::try_parse_from([
            "auditlog-ops",
            "cluster",
            "bootstrap",
            "--config-replset=cfg/c-0.hl:27017,c-1.hl:27017,c-2.hl:27017",
            "--shard-replset=shard0/s0-0.hl:27017,s0-1.hl:27017",
            "--shard-replset=shard1/s1-0.hl:27017",
            "--keyfile=/etc/mongodb/auth/mongodb-keyfile",
            "--shard-key=hashed-consumer",
            "--retention-days=7",
            "--deadline=90s",
        ])
        .expect("the Helm Job's command line parses");
        let Command::Cluster {
            command: ClusterCommand::Bootstrap(b),
        } = cli.command
        else {
            panic!("not a bootstrap command");
        };
        assert_eq!(b.config_replset.name, "cfg");
        assert_eq!(b.config_replset.members.len(), 3);
        assert_eq!(b.shard_replsets.len(), 2);
        assert_eq!(b.shard_replsets[1].members, vec!["s1-0.hl:27017"]);
        assert_eq!(b.deadline, Duration::from_secs(90));
        assert_eq!(b.setup.shard_key, ShardKey::HashedConsumer);
        assert_eq!(b.setup.retention_days, 7);
        assert!(cli.auth.keyfile.is_some());
    }

    #[test]
    fn retention_of_zero_days_is_refused() {
        let r = Cli::try_parse_from(["auditlog-ops", "retention", "set", "--days", "0"]);
        assert!(r.is_err());
    }
}
