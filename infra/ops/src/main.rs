//! `auditlog-ops`: the operator's command line for auditlog's MongoDB.
//!
//! # Layout
//! - [`cli`]: the typed command line (every option also an environment variable).
//! - [`topology`]: parsing `NAME/host:port,...` replica-set declarations.
//! - [`cluster`]: the trait of server operations the planners use, and command errors.
//! - [`driver`]: that trait over the MongoDB driver (keyfile `__system` auth, TLS).
//! - [`retry`]: waiting with backoff until a deadline.
//! - [`steps`]: the account of what a command did, logged and printed.
//! - [`bootstrap`]: `cluster bootstrap`, a planner over observed state.
//! - [`setup`]: `db setup` (sharding, then the shared `ensure_storage`).
//! - [`status`]: `status` and `status --json`.
//! - [`retention`]: `retention set`.
//! - [`roles`]: the service's and the archiver's custom roles and users (least privilege).
//! - [`shard_guard`]: `cluster check-shards`, the chart's pre-rollback guard.
//! - [`error`]: typed errors and their exit codes.

mod bootstrap;
mod cli;
mod cluster;
mod driver;
mod error;
mod retention;
mod retry;
mod roles;
mod setup;
mod shard_guard;
mod status;
mod steps;
mod topology;

#[cfg(test)]
mod fake;

use std::process::ExitCode;
use std::time::Duration;

use auditlog_common::schema::Retention;
use clap::Parser;

use crate::cli::{Cli, ClusterCommand, Command, DbCommand, RetentionCommand, SetupArgs};
use crate::driver::DriverCluster;
use crate::error::OpsError;
use crate::retry::Deadline;
use crate::setup::SetupPlan;
use crate::steps::Steps;

#[tokio::main]
async fn main() -> ExitCode {
    auditlog_common::telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "auditlog-ops failed");
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), OpsError> {
    let cluster = DriverCluster::connect(&cli.mongo, &cli.auth).await?;
    let result = command(&cli, &cluster).await;
    // Done or failed alike: the clients are shut down before the runtime stops under them.
    cluster.close().await;
    result
}

async fn command(cli: &Cli, cluster: &DriverCluster) -> Result<(), OpsError> {
    let plan = |s: &SetupArgs| SetupPlan {
        db_name: cli.mongo.db_name.clone(),
        collection: cli.mongo.collection.clone(),
        shard_key: s.shard_key,
        retention: Retention::from_days(s.retention_days),
        reshard: s.reshard,
    };
    match &cli.command {
        Command::Cluster {
            command: ClusterCommand::Bootstrap(b),
        } => {
            let bootstrap_plan = bootstrap::BootstrapPlan {
                config_replset: b.config_replset.clone(),
                shard_replsets: b.shard_replsets.clone(),
                admin: b.admin_username.clone().zip(b.admin_password.clone()),
                app_users: app_users(&b.users),
                setup: plan(&b.setup),
            };
            tracing::info!(
                config = %b.config_replset,
                shards = b.shard_replsets.len(),
                deadline_s = b.deadline.as_secs(),
                "bootstrapping the cluster"
            );
            let steps = Steps::default();
            let result = bootstrap::run(
                cluster,
                &bootstrap_plan,
                Deadline::after(b.deadline),
                &steps,
            )
            .await;
            print_steps(&steps);
            result?;
            println!("cluster bootstrap complete");
        }
        Command::Cluster {
            command: ClusterCommand::CheckShards(a),
        } => {
            // `NAME/host,...` or a bare name: only the name identifies a shard in listShards.
            let keep: Vec<String> = a
                .shards
                .iter()
                .map(|s| s.split('/').next().unwrap_or(s).to_owned())
                .collect();
            let steps = Steps::default();
            let result =
                shard_guard::check(cluster, &keep, Deadline::after(a.deadline), &steps).await;
            print_steps(&steps);
            result?;
        }
        Command::Db {
            command: DbCommand::Setup(s),
        } => {
            let steps = Steps::default();
            // One attempt: an operator at a terminal wants the reason now, not after minutes.
            let setup_plan = plan(s);
            let result = Deadline::after(Duration::ZERO)
                .retry("db setup", || setup::run(cluster, &setup_plan, &steps))
                .await;
            print_steps(&steps);
            result?;
        }
        Command::Db {
            command: DbCommand::Users(u),
        } => {
            let users = app_users(u);
            if users.is_empty() {
                return Err(OpsError::Config(
                    "no user given: pass --service-username/--service-password and/or \
                     --archiver-username/--archiver-password"
                        .into(),
                ));
            }
            let steps = Steps::default();
            let (db, coll) = (&cli.mongo.db_name, &cli.mongo.collection);
            let result = Deadline::after(Duration::ZERO)
                .retry("db users", || {
                    roles::ensure(cluster, &users, db, coll, &steps)
                })
                .await;
            print_steps(&steps);
            result?;
        }
        Command::Status(s) => {
            let report = status::gather(cluster).await?;
            if s.json {
                let json = serde_json::to_string_pretty(&report)
                    .map_err(|e| OpsError::Config(format!("cannot encode the report: {e}")))?;
                println!("{json}");
            } else {
                print!("{}", status::render(&report));
            }
        }
        Command::Retention {
            command: RetentionCommand::Set(r),
        } => {
            let change = retention::RetentionChange {
                days: r.days,
                margin: r.margin,
                force: r.force,
            };
            println!("{}", retention::set(cluster.store(), change).await?);
        }
    }
    Ok(())
}

fn print_steps(steps: &Steps) {
    for line in steps.lines() {
        println!("- {line}");
    }
}

/// The component users `cluster bootstrap` was given.
fn app_users(b: &cli::ComponentUsersArgs) -> Vec<roles::AppUser> {
    let given = [
        (
            roles::Component::Service,
            &b.service_username,
            &b.service_password,
        ),
        (
            roles::Component::Archiver,
            &b.archiver_username,
            &b.archiver_password,
        ),
    ];
    given
        .into_iter()
        .filter_map(|(component, user, pwd)| {
            Some(roles::AppUser {
                component,
                username: user.clone()?,
                password: pwd.clone()?,
            })
        })
        .collect()
}
