//! The producer's background task: takes events from the buffer into batches (by count, bytes
//! and linger), starts up to `max_in_flight` deliveries, and answers `flush` once everything
//! that came before it is settled.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use super::batch::{Batch, Item};
use super::retry::deliver;
use super::shared::Shared;

/// What goes through the buffer: events, and `flush` markers, which are ordered after every
/// event sent before them.
pub(crate) enum Msg {
    Event(Item),
    Flush(oneshot::Sender<()>),
}

pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>, close: Arc<Notify>) {
    let cfg = shared.config.clone();
    let mut current = Batch::default();
    // An event that did not fit the current batch: it starts the next one.
    let mut overflow: Option<Item> = None;
    let mut next_seq: u64 = 0;
    let mut inflight: JoinSet<()> = JoinSet::new();
    // The first seq of each batch being delivered, by task, to know what is still unsettled
    // (a batch's seqs are consecutive and batches are made in order).
    let mut starts: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut unsettled: BTreeSet<u64> = BTreeSet::new();
    let mut flushes: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let mut input_done = false;
    let mut closing = false;

    loop {
        if current.is_empty() {
            if let Some(item) = overflow.take() {
                start_batch(&mut current, item, &cfg);
            }
        }
        let full = current.items.len() >= cfg.max_batch_events || overflow.is_some();
        let due = current
            .deadline
            .is_some_and(|d| d <= tokio::time::Instant::now());
        // Past the linger, or nothing more to wait for: closing, or someone flushing.
        let go = full || due || input_done || closing || !flushes.is_empty();
        if !current.is_empty() && go && inflight.len() < cfg.max_in_flight {
            let batch = std::mem::take(&mut current);
            if let Some(first) = batch.first_seq() {
                unsettled.insert(first);
                let handle = inflight.spawn(deliver(shared.clone(), batch.items));
                starts.insert(handle.id(), first);
            }
            continue;
        }

        // Everything before the least unsettled seq is delivered or failed.
        let least = unsettled
            .first()
            .copied()
            .into_iter()
            .chain(current.first_seq())
            .chain(overflow.as_ref().map(|i| i.seq))
            .chain(std::iter::once(next_seq))
            .min()
            .unwrap_or(next_seq);
        let mut i = 0;
        while i < flushes.len() {
            if flushes[i].0 <= least {
                let (_, tx) = flushes.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }

        if input_done && current.is_empty() && overflow.is_none() && inflight.is_empty() {
            break;
        }

        let linger = current.deadline;
        tokio::select! {
            Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => {
                        tracing::error!(error = %e, "auditlog producer: a delivery task ended abnormally");
                        e.id()
                    }
                };
                if let Some(first) = starts.remove(&id) {
                    unsettled.remove(&first);
                }
            }
            msg = rx.recv(), if !input_done && !full => match msg {
                Some(Msg::Event(mut item)) => {
                    item.seq = next_seq;
                    next_seq += 1;
                    if current.is_empty() {
                        start_batch(&mut current, item, &cfg);
                    } else if current.fits(&item, cfg.max_batch_events, cfg.max_batch_bytes) {
                        current.push(item);
                    } else {
                        overflow = Some(item);
                    }
                }
                Some(Msg::Flush(tx)) => flushes.push((next_seq, tx)),
                None => input_done = true,
            },
            _ = close.notified(), if !closing => {
                // Stop taking new events (waiting senders get `Closed`); what the buffer holds
                // is still received, then `recv` answers `None`.
                closing = true;
                rx.close();
            }
            _ = sleep_until(linger), if linger.is_some() && !current.is_empty() && inflight.len() < cfg.max_in_flight => {}
        }
    }
    // Nothing is left: whoever still waits on a flush is done.
    for (_, tx) in flushes {
        let _ = tx.send(());
    }
}

fn start_batch(current: &mut Batch, item: Item, cfg: &super::config::ProducerConfig) {
    current.deadline = Some(tokio::time::Instant::now() + cfg.linger);
    current.push(item);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
