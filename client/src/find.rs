//! The find and tail streams: events one by one across pages, following `next_cursor`.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::http::Client;
use crate::types::{Event, FindQuery, Order};

/// The service's page size when the query sets none.
const DEFAULT_LIMIT: u32 = 100;

struct Pager {
    client: Client,
    query: FindQuery,
    cursor: Option<String>,
    events: VecDeque<Event>,
    /// No more pages to ask for (find: cursor absent, empty page or an error).
    done: bool,
}

impl Pager {
    fn new(client: Client, query: FindQuery) -> Self {
        Pager {
            client,
            query,
            cursor: None,
            events: VecDeque::new(),
            done: false,
        }
    }
}

/// Tries of one page of `find` before a transient error is yielded: a reader paging through
/// a long answer should not lose its place to one 503, nor wait forever on a service that
/// stays down (`tail`, which follows forever, retries without end).
const FIND_PAGE_TRIES: u32 = 5;

/// Every event of `query`, page after page, until a page comes without `next_cursor` or with
/// no events. An ascending query open at the end (no `created_to` in the past) always gets a
/// cursor — new events may still come — so the stream ends at the first empty page: the
/// events visible now. A transient error (429, 502–504, no answer) is retried with the same
/// cursor, honouring `Retry-After`, up to [`FIND_PAGE_TRIES`] times; an error is then yielded
/// once and ends the stream.
pub(crate) fn find(client: Client, query: FindQuery) -> impl Stream<Item = Result<Event, Error>> {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let state = (Pager::new(client, query), backoff);
    futures::stream::unfold(state, |(mut p, mut backoff)| async move {
        let mut tries = 0;
        loop {
            if let Some(ev) = p.events.pop_front() {
                return Some((Ok(ev), (p, backoff)));
            }
            if p.done {
                return None;
            }
            match p.client.find_page(&p.query, p.cursor.as_deref()).await {
                Ok(page) => {
                    backoff.reset();
                    tries = 0;
                    p.done = page.next_cursor.is_none() || page.events.is_empty();
                    p.cursor = page.next_cursor;
                    p.events.extend(page.events);
                }
                Err(e) if e.is_transient() && tries + 1 < FIND_PAGE_TRIES => {
                    tries += 1;
                    let delay = backoff.next_delay(e.retry_after());
                    tracing::debug!(error = %e, ?delay, "find: retrying the page");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    p.done = true;
                    return Some((Err(e), (p, backoff)));
                }
            }
        }
    })
}

/// Follows the log forever in ascending order (`query.order` is ignored): after a page shorter
/// than the limit, waits `poll` and asks again with the last cursor, which the service keeps
/// just before `complete_until` — so every event is yielded exactly once, late writes
/// included. Transient errors (429, 502–504, no answer) are retried with backoff, honouring
/// `Retry-After`; other errors are yielded and end the stream, as does a page without
/// `next_cursor` (a `created_to` in the past, all returned; or `include_incomplete`).
pub(crate) fn tail(
    client: Client,
    mut query: FindQuery,
    poll: Duration,
) -> impl Stream<Item = Result<Event, Error>> {
    query.order = Some(Order::Asc);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).max(1);
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let state = (Pager::new(client, query), backoff, false);
    futures::stream::unfold(state, move |(mut p, mut backoff, mut wait)| async move {
        loop {
            if let Some(ev) = p.events.pop_front() {
                return Some((Ok(ev), (p, backoff, wait)));
            }
            if p.done {
                return None;
            }
            if wait {
                tokio::time::sleep(poll).await;
            }
            match p.client.find_page(&p.query, p.cursor.as_deref()).await {
                Ok(page) => {
                    backoff.reset();
                    wait = (page.events.len() as u64) < u64::from(limit);
                    match page.next_cursor {
                        Some(c) => p.cursor = Some(c),
                        None => p.done = true,
                    }
                    p.events.extend(page.events);
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay(e.retry_after());
                    tracing::debug!(error = %e, ?delay, "tail: retrying");
                    tokio::time::sleep(delay).await;
                    wait = false;
                }
                Err(e) => {
                    p.done = true;
                    return Some((Err(e), (p, backoff, wait)));
                }
            }
        }
    })
}

impl Client {
    /// Every event of `query`, across pages (see the module's `find`): ends at a page without
    /// `next_cursor`, or at the first empty page; a page that meets a transient error is asked
    /// again (5 tries in all, honouring `Retry-After`).
    pub fn find(
        &self,
        query: FindQuery,
    ) -> impl Stream<Item = Result<Event, Error>> + Send + Unpin + 'static {
        Box::pin(find(self.clone(), query))
    }

    /// Follows the log from `query`'s start forever, in ascending order, waiting `poll` when
    /// caught up; transient errors are retried, not ended.
    pub fn tail(
        &self,
        query: FindQuery,
        poll: Duration,
    ) -> impl Stream<Item = Result<Event, Error>> + Send + Unpin + 'static {
        Box::pin(tail(self.clone(), query, poll))
    }
}
