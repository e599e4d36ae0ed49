//! `auditlog-archiver` entry point: parse settings, run the command, shut the MongoDB client
//! down, map the outcome to an exit code (see `error.rs` for the table).

use std::process::ExitCode;
use std::sync::Arc;

use auditlog_archiver::archive::Archiver;
use auditlog_archiver::config::{Cli, Command, KeysCommand};
use auditlog_archiver::error::ArchiveError;
use auditlog_archiver::integrity;
use auditlog_archiver::keys::{self, PublicKeys, Signer25519};
use auditlog_archiver::metrics::Metrics;
use auditlog_archiver::{daemon, status};
use clap::Parser;

fn main() -> ExitCode {
    auditlog_common::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .downcast_ref::<ArchiveError>()
                .map_or(1, ArchiveError::exit_code);
            tracing::error!(error = %format!("{e:#}"), exit_code = code, "auditlog-archiver failed");
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    // Key handling needs neither MongoDB nor the archive.
    if let Command::Keys { command } = &cli.command {
        return keys_command(command);
    }
    let metrics = Metrics::new().map_err(ArchiveError::from)?;
    let archiver = Arc::new(Archiver::connect(cli.settings, metrics).await?);
    let result = command(&archiver, cli.command).await;
    // Success, error or signal alike: the client is shut down before the runtime stops.
    archiver.close().await;
    result
}

async fn command(archiver: &Arc<Archiver>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run => daemon::run(archiver.clone()).await?,
        Command::Once => {
            let r = archiver.once().await?;
            tracing::info!(
                archived = r.archived,
                rows = r.rows,
                bytes = r.bytes,
                "archive run finished"
            );
        }
        Command::Backfill { from, to } => {
            let r = archiver.backfill(from, to).await?;
            tracing::info!(
                archived = r.archived,
                already_archived = r.skipped_already_archived,
                rows = r.rows,
                bytes = r.bytes,
                "backfill finished"
            );
        }
        Command::Status { json } => {
            let r = archiver.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", status::render(&r));
            }
        }
        Command::Keys { command } => keys_command(&command)?,
        Command::Verify {
            json,
            public_keys,
            from,
            to,
        } if !public_keys.is_empty() => {
            let keys = PublicKeys::load(&public_keys)?;
            let r = archiver
                .integrity(&keys, integrity::Range { from, to })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.ok {
                println!("{}", r.summary());
            } else {
                for p in &r.problems {
                    println!("{p}");
                }
            }
            if !r.ok {
                return Err(ArchiveError::IntegrityFailed(r.problems.len()).into());
            }
        }
        Command::Verify { json, .. } => {
            let r = archiver.verify().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{} windows checked, {} ok", r.windows, r.ok);
                for m in &r.mismatches {
                    println!("MISMATCH {}: {}", m.window, m.problem);
                }
            }
            if !r.mismatches.is_empty() {
                return Err(ArchiveError::VerifyFailed(r.mismatches.len()).into());
            }
        }
        Command::Purge { dry_run } => {
            let r = archiver.purge(dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
    }
    Ok(())
}

fn keys_command(command: &KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { out } => {
            let (id, private, public) = keys::write_new(out)?;
            println!("private key: {}", private.display());
            println!("public key:  {}", public.display());
            println!("key id: {id}");
        }
        KeysCommand::Public { key } => {
            let signer = Signer25519::load(key)?;
            print!("{}", signer.public_pem()?);
            eprintln!("key id: {}", signer.id());
        }
    }
    Ok(())
}
