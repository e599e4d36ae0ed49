//! Delivering one batch: send it, sort out each event's result, and send again — with the same
//! ids, so the service stores each event once — what failed for a transient reason, with
//! backoff, until every event is delivered or failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::error::{is_transient_status, Error};
use crate::types::{BatchResponse, ErrorDetail};

use super::batch::{body, Item};
use super::shared::Shared;

/// Delivers `items` (one batch) and returns once each is delivered or failed; the counters and
/// the metrics hooks are updated on the way.
pub(crate) async fn deliver(shared: Arc<Shared>, mut items: Vec<Item>) {
    let cfg = &shared.config;
    let mut backoff = Backoff::new(cfg.retry_initial_backoff, cfg.retry_max_backoff);
    loop {
        items = expire(&shared, items);
        if items.is_empty() {
            return;
        }
        let payload = match body(&items, cfg.compress) {
            Ok(b) => b,
            Err(e) => {
                fail_all(&shared, items, &e.detail());
                return;
            }
        };
        let sent_bytes = payload.len();
        let started = Instant::now();
        shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        let answer = shared.client.post_events_body(payload, cfg.compress).await;
        if let Some(m) = &cfg.metrics {
            m.batch_sent(items.len(), sent_bytes, started.elapsed());
        }
        let (again, error) = match answer {
            Ok(resp) => match settle(&shared, items, resp) {
                Settled::Done => return,
                Settled::Retry(again, error) => (again, error),
            },
            Err(e) if e.is_transient() => (items, e),
            Err(e) => {
                // Refused as a whole for good (401, 403, 413, …): every event of the batch
                // would get the same answer again.
                fail_all(&shared, items, &e.detail());
                return;
            }
        };
        items = again;
        let delay = backoff.next_delay(error.retry_after());
        tracing::debug!(events = items.len(), error = %error, ?delay, "auditlog producer: retrying");
        shared
            .counters
            .retries
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        if let Some(m) = &cfg.metrics {
            m.retried(items.len(), &error);
        }
        tokio::time::sleep(delay).await;
    }
}

enum Settled {
    Done,
    /// The events to send again, and why.
    Retry(Vec<Item>, Error),
}

/// Counts each event of an answered batch delivered, failed or to be retried.
fn settle(shared: &Shared, items: Vec<Item>, resp: BatchResponse) -> Settled {
    if resp.results.len() != items.len() {
        // Not the answer the API promises; the same ids make sending them again safe.
        let error = Error::Decode(format!(
            "{} results for {} events",
            resp.results.len(),
            items.len()
        ));
        return Settled::Retry(items, error);
    }
    let mut again = Vec::new();
    let mut why = None;
    let mut delivered = 0u64;
    for (item, result) in items.into_iter().zip(resp.results) {
        if result.is_accepted() {
            delivered += 1;
        } else if is_transient_status(result.status) {
            why.get_or_insert_with(|| {
                let detail = result
                    .error
                    .clone()
                    .unwrap_or_else(|| ErrorDetail::new("unknown", "no error given"));
                Error::Api {
                    status: result.status,
                    code: detail.code,
                    message: detail.message,
                    retry_after: None,
                }
            });
            again.push(item);
        } else {
            let detail = result.error.unwrap_or_else(|| {
                ErrorDetail::new("unknown", format!("status {}", result.status))
            });
            fail(shared, &item, &detail);
        }
    }
    shared
        .counters
        .delivered
        .fetch_add(delivered, Ordering::Relaxed);
    match why {
        Some(error) if !again.is_empty() => Settled::Retry(again, error),
        _ => Settled::Done,
    }
}

/// Fails the events older than `delivery_timeout`, keeps the others.
fn expire(shared: &Shared, items: Vec<Item>) -> Vec<Item> {
    let Some(limit) = shared.config.delivery_timeout else {
        return items;
    };
    let (keep, late): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| i.taken.elapsed() < limit);
    if !late.is_empty() {
        let detail = ErrorDetail::new(
            "delivery_timeout",
            format!("not delivered within {}", fmt_duration(limit)),
        );
        fail_all(shared, late, &detail);
    }
    keep
}

fn fail_all(shared: &Shared, items: Vec<Item>, detail: &ErrorDetail) {
    for item in &items {
        fail(shared, item, detail);
    }
}

fn fail(shared: &Shared, item: &Item, detail: &ErrorDetail) {
    shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(id = ?item.event.id, code = %detail.code, "auditlog producer: event failed");
    if let Some(m) = &shared.config.metrics {
        m.failed(&item.event, detail);
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
