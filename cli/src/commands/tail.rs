//! `auditlog tail [-f]`: the events of the last `--since`, oldest first; with `-f`, then every
//! new one as it becomes complete, until Ctrl-C.
//!
//! Catching up is done page by page here rather than with the client's endless `tail`
//! stream, for two reasons: a wrong key or an unreachable service must fail at once (the
//! stream retries transient errors forever), and with `--include-incomplete` the pages may
//! show events newer than `complete_until`, which the stream would end on. Following then
//! starts at the last `complete_until` seen: everything before it was printed and is final.

use std::collections::HashSet;
use std::io::Write;
use std::pin::pin;

use auditlog_client::{Client, Event, FindQuery, Order};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::args::{TailArgs, TailFormat};
use crate::error::CliError;
use crate::output::{EventWriter, Format};
use crate::time_range::before;

const PAGE_SIZE: u32 = 1000;

pub async fn run(client: &Client, args: &TailArgs, out: impl Write) -> Result<(), CliError> {
    let from =
        before(Utc::now(), args.since).map_err(|e| CliError::Usage(format!("--since: {e}")))?;
    let query = FindQuery {
        kind: args.filters.kind.clone(),
        consumer: args.filters.consumer.clone(),
        created_from: Some(from),
        created_to: None,
        limit: Some(PAGE_SIZE),
        order: Some(Order::Asc),
        include_incomplete: args.filters.include_incomplete,
    };
    let format = match args.output {
        TailFormat::Ndjson => Format::Ndjson,
        TailFormat::Table => Format::Table,
    };
    let mut writer = if args.follow {
        EventWriter::following(out, format)
    } else {
        EventWriter::new(out, format)
    };
    let caught_up = catch_up(client, &query, &mut writer).await?;
    if !args.follow {
        return writer.finish().map_err(CliError::Output);
    }
    follow(client, query, caught_up, args, &mut writer).await?;
    writer.finish().map_err(CliError::Output)
}

/// Where following starts after catching up, and what was already printed past that point.
struct CaughtUp {
    follow_from: DateTime<Utc>,
    /// Ids printed early (`--include-incomplete`) that following will meet again.
    shown: HashSet<String>,
}

async fn catch_up<W: Write>(
    client: &Client,
    query: &FindQuery,
    writer: &mut EventWriter<W>,
) -> Result<CaughtUp, CliError> {
    let mut cursor: Option<String> = None;
    // Set at the first event newer than its page's complete_until (`--include-incomplete`):
    // an event still unseen then may land anywhere after that page's complete_until, so
    // following must start there, skipping what was printed since.
    let mut early_from: Option<DateTime<Utc>> = None;
    let mut shown = HashSet::new();
    loop {
        let page = super::find_page(client, query, cursor.as_deref(), cursor.is_some()).await?;
        let complete_until = parse_time(&page.complete_until)?;
        for event in &page.events {
            let created = parse_time(&event.created_at)?;
            if early_from.is_none() && created >= complete_until {
                early_from = Some(complete_until);
            }
            if early_from.is_some_and(|f| created >= f) {
                shown.insert(event.id.clone());
            }
            writer.write(event).map_err(CliError::Output)?;
        }
        let full = page.events.len() >= PAGE_SIZE as usize;
        cursor = page.next_cursor;
        if cursor.is_none() || !full {
            let follow_from = early_from
                .unwrap_or(complete_until)
                .max(query.created_from.unwrap_or(complete_until));
            return Ok(CaughtUp { follow_from, shown });
        }
    }
}

async fn follow<W: Write>(
    client: &Client,
    mut query: FindQuery,
    caught_up: CaughtUp,
    args: &TailArgs,
    writer: &mut EventWriter<W>,
) -> Result<(), CliError> {
    let CaughtUp {
        follow_from,
        mut shown,
    } = caught_up;
    query.created_from = Some(follow_from);
    // Following reads complete events only: that is what makes each appear exactly once.
    query.include_incomplete = false;
    let mut events = client.tail(query, args.poll);
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    loop {
        let event: Event = tokio::select! {
            // Ctrl-C is how `tail -f` is meant to end: not an error.
            _ = &mut ctrl_c => return Ok(()),
            next = events.next() => match next {
                Some(event) => event?,
                None => return Ok(()),
            },
        };
        if shown.remove(&event.id) {
            continue;
        }
        writer.write(&event).map_err(CliError::Output)?;
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            CliError::Client(auditlog_client::Error::Decode(format!(
                "the service sent the time {text:?}: {e}"
            )))
        })
}
