//! One module per command; each takes a [`auditlog_client::Client`] and its parsed arguments,
//! writes its result to standard output, and returns a [`crate::error::CliError`] on failure.

pub mod find;
pub mod post;
pub mod tail;

use std::time::Duration;

use auditlog_client::{Client, Error, FindPage, FindQuery};

/// Attempts for one page of a find before its error is final.
const PAGE_ATTEMPTS: u32 = 4;

/// One page of a find, asked again when the service answers with a transient status (429,
/// 502–504: a `query_timeout` on a loaded store, a restarting replica), honouring
/// `Retry-After`; after 1 s, 2 s, 4 s it gives up. A long find should not be lost to one slow
/// page. Connection failures are retried only once a page was read (`reached`): a service
/// that was never reached is more likely down or mistyped, and saying so at once is better.
pub async fn find_page(
    client: &Client,
    query: &FindQuery,
    cursor: Option<&str>,
    reached: bool,
) -> Result<FindPage, Error> {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match client.find_page(query, cursor).await {
            Err(e) if attempt < PAGE_ATTEMPTS && retryable(&e, reached) => {
                tokio::time::sleep(
                    e.retry_after()
                        .unwrap_or(delay)
                        .min(Duration::from_secs(30)),
                )
                .await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn retryable(e: &Error, reached: bool) -> bool {
    match e {
        Error::Api { .. } => e.is_transient(),
        _ => reached && e.is_transient(),
    }
}
