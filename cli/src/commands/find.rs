//! `auditlog find`: every event matching the filters, page after page, in one of four formats.

use std::io::Write;

use auditlog_client::{Client, FindQuery, Order};
use chrono::Utc;

use crate::args::{FindArgs, FindFormat, OrderArg};
use crate::error::CliError;
use crate::output::{EventWriter, Format};
use crate::time_range::TimeRange;

/// The service's largest page: fewer round trips for long answers.
pub const PAGE_SIZE: u32 = 1000;

/// The query `args` ask for (pages of [`PAGE_SIZE`], or fewer when `--limit-total` is
/// smaller, so a `--limit-total 5` reads 5 events, not 1000).
pub fn query(args: &FindArgs) -> Result<FindQuery, CliError> {
    let range =
        TimeRange::resolve(args.since, args.from, args.to, Utc::now()).map_err(CliError::Usage)?;
    let limit = args.limit_total.map_or(PAGE_SIZE, |n| {
        u32::try_from(n.min(u64::from(PAGE_SIZE))).unwrap_or(PAGE_SIZE)
    });
    Ok(FindQuery {
        kind: args.filters.kind.clone(),
        consumer: args.filters.consumer.clone(),
        created_from: range.from,
        created_to: range.to,
        limit: Some(limit),
        order: Some(match args.order {
            OrderArg::Asc => Order::Asc,
            OrderArg::Desc => Order::Desc,
        }),
        include_incomplete: args.filters.include_incomplete,
    })
}

pub async fn run(client: &Client, args: &FindArgs, out: impl Write) -> Result<(), CliError> {
    let query = query(args)?;
    let format = match args.output {
        FindFormat::Table => Format::Table,
        FindFormat::Json => Format::Json,
        FindFormat::Ndjson => Format::Ndjson,
        FindFormat::Csv => Format::Csv,
    };
    let mut writer = EventWriter::new(out, format);
    // Paged here rather than with the client's `find` stream, which ends at the first error:
    // a transient one (a slow page's 503 query_timeout) is retried instead.
    let mut cursor: Option<String> = None;
    let mut count: u64 = 0;
    loop {
        let page = super::find_page(client, &query, cursor.as_deref(), count > 0).await?;
        let last = page.events.is_empty() || page.next_cursor.is_none();
        for event in &page.events {
            if args.limit_total.is_some_and(|max| count >= max) {
                return writer.finish().map_err(CliError::Output);
            }
            writer.write(event).map_err(CliError::Output)?;
            count += 1;
        }
        if last || args.limit_total.is_some_and(|max| count >= max) {
            break;
        }
        cursor = page.next_cursor;
    }
    writer.finish().map_err(CliError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn find_args(args: &[&str]) -> FindArgs {
        match Cli::parse_from(["auditlog", "find"].iter().chain(args)).command {
            Command::Find(f) => f,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_query_follows_the_flags() {
        let q = query(&find_args(&[
            "--type",
            "t",
            "--consumer",
            "c",
            "--order",
            "desc",
        ]))
        .unwrap();
        assert_eq!(q.kind.as_deref(), Some("t"));
        assert_eq!(q.consumer.as_deref(), Some("c"));
        assert_eq!(q.order, Some(Order::Desc));
        assert_eq!(q.limit, Some(PAGE_SIZE));
        assert_eq!((q.created_from, q.created_to), (None, None));

        let q = query(&find_args(&["--limit-total", "5", "--since", "1h"])).unwrap();
        assert_eq!(q.limit, Some(5));
        let from = q.created_from.unwrap();
        let ago = Utc::now() - from;
        assert!((3599..=3601).contains(&ago.num_seconds()), "{ago}");

        let e = query(&find_args(&["--from", "2026-02-01", "--to", "2026-01-01"])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
