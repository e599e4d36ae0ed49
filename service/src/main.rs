//! `auditlog-service` binary: takes SIGHUP over, parses the settings, refuses to start without
//! an API key, and serves until SIGTERM or SIGINT; `openapi` and `keys new` print and exit.

use anyhow::Context;
use auditlog_service::config::{Cli, Command};
use clap::Parser;

// Every request allocates a few small, short-lived buffers (headers, body, BSON, the answer)
// across two worker threads; glibc's malloc spent about 15% of the service's CPU on them under
// load (`make profile-ingest`), mimalloc's thread-local free lists a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    auditlog_common::telemetry::init();
    // Before anything that can wait (MongoDB at start): SIGHUP's default action ends the
    // process, and an operator's reload must not.
    auditlog_service::keys::reload::catch_hangups();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Openapi) => {
            println!("{}", auditlog_service::http::api::api_service().spec());
            return Ok(());
        }
        Some(Command::Keys { command }) => {
            println!("{}", auditlog_service::keys::command::run(command)?);
            return Ok(());
        }
        Some(Command::Run) | None => {}
    }
    let config = cli.config;
    // Checked before anything else so a missing key or a bad key file is the one message the
    // operator sees.
    config.load_keys()?;
    config.validate()?;

    let listener = std::net::TcpListener::bind(&config.listen_addr)
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let addr = listener.local_addr()?;
    if config.ui_enabled {
        tracing::info!(
            %addr,
            ui = %format!("http://{addr}/ui"),
            "listening; events explorer at /ui, Swagger UI at /docs"
        );
    } else {
        tracing::info!(%addr, "listening; Swagger UI at /docs");
        tracing::info!("events explorer off (AUDIT_UI_ENABLED=false): /ui answers 404");
    }
    auditlog_service::http::server::run(
        listener,
        config,
        auditlog_common::shutdown::shutdown_signal(),
    )
    .await?;
    Ok(())
}
