//! `auditlog`: post, find and tail the events of an auditlog service from a terminal.
//!
//! `main` parses the command line, resolves the URL and key, runs one command, and turns any
//! failure into one line on standard error (`auditlog: error: …`) and an exit code
//! ([`error`] has the table). Nothing here panics on bad input or a failed request.

mod args;
mod commands;
mod config;
mod error;
mod output;
mod time_range;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use auditlog_client::Client;
use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::error::{is_broken_pipe, CliError, EXIT_FAILURE, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let cli_error = e.downcast_ref::<CliError>();
            // `auditlog find | head`: the reader has what it wanted; not an error.
            if let Some(CliError::Output(io)) = cli_error {
                if is_broken_pipe(io) {
                    return ExitCode::SUCCESS;
                }
            }
            let code = cli_error.map_or(EXIT_FAILURE, CliError::exit_code);
            eprintln!("auditlog: error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        // Rendered into memory first: clap_complete panics on a failed write (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "auditlog", &mut script);
        return write_stdout(&script).map_err(Into::into);
    }
    let connection = config::resolve(&cli.connection, &config::Env::from_process())?;
    let client = Client::builder(&connection.url, &connection.key)
        .timeout(cli.connection.timeout)
        .build()
        .map_err(CliError::from)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    runtime.block_on(async {
        match &cli.command {
            Command::Post(args) => commands::post::run(&client, args, out).await,
            Command::Find(args) => commands::find::run(&client, args, out).await,
            Command::Tail(args) => commands::tail::run(&client, args, out).await,
            Command::Completions { .. } => Ok(()),
        }
    })?;
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Help and version go out as clap renders them (exit 0); a usage error becomes one line
/// like every other error, with clap's exit code 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        // `auditlog` alone: the help is the useful answer (on stderr, as clap does), but
        // nothing was done, so a script still sees a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            eprintln!("auditlog: error: {}", clap_message(&e.render().to_string()));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// clap's rendered error without its `error: ` prefix, tips and usage block, on one line:
/// `unexpected argument '--bogus' found (see --help)`.
fn clap_message(rendered: &str) -> String {
    let body = rendered
        .split("\nUsage:")
        .next()
        .unwrap_or(rendered)
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("tip:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let body = body.strip_prefix("error: ").unwrap_or(&body);
    format!("{} (see --help)", one_line(body.trim_end_matches(':')))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let e = Cli::try_parse_from(std::iter::once("auditlog").chain(args.iter().copied()))
            .unwrap_err();
        clap_message(&e.render().to_string())
    }

    #[test]
    fn clap_errors_become_one_line() {
        let m = usage_error(&["find", "--bogus"]);
        assert_eq!(m, "unexpected argument '--bogus' found (see --help)");
        let m = usage_error(&["post", "--type", "t"]);
        assert!(
            m.starts_with("the following required arguments were not provided"),
            "{m}"
        );
        assert!(m.contains("--consumer"), "{m}");
        let m = usage_error(&["find", "--since", "soon"]);
        assert!(m.contains("invalid duration"), "{m}");
        for args in [&["find", "--bogus"][..], &["tail", "--output", "csv"]] {
            let m = usage_error(args);
            assert!(!m.contains('\n') && !m.is_empty(), "{m:?}");
        }
    }
}
