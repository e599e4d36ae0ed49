//! The replica's link to RabbitMQ: connecting (and reconnecting with backoff), declaring the
//! topology, and polling the queue's depth while connected.
//!
//! Two connections, because RabbitMQ's memory and disk alarms block *publishing* connections:
//! a blocked connection is not read from at all, so acknowledgements sent on it would wait too.
//! Producers' publishes go on one connection (a few channels in confirm mode, used in turn);
//! the drain's consumer and the depth polls go on the other, so the drain goes on taking
//! messages out — which is what clears a memory alarm — while publishers are blocked.
//!
//! While connected, the current [`Link`] is in a `watch` channel; `None` while disconnected,
//! so publishes fail at once (503) instead of waiting, and the drain waits for the next link.
//! A link is given up — and a new one made — when either connection reports an error or a
//! depth poll fails or goes unanswered.
//!
//! For `complete_until` ([`crate::watermark`]): a poll that finds no message ready is noted,
//! with when it was sent; the drain's connection carries this replica's exclusive liveness
//! queue; and a new link is used only once this replica's record names that queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auditlog_common::retry::Backoff;
use futures::{Stream, StreamExt};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use super::contract::QueueSettings;
use super::topology::{self, Depths};
use crate::metrics::Metrics;
use crate::task::{StopHandle, StopSignal};
use crate::watermark::tracker::now_ms;
use crate::watermark::Watermark;

/// Channels producers' publishes take in turn (each serialises its frames).
const PUBLISH_CHANNELS: usize = 4;
/// How often the queue's depth is read.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// A depth poll unanswered this long means the link is broken.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a connection (TCP, TLS, AMQP handshake) and the topology.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait between connection attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A live link: both connections, the publish channels and the last depths read.
pub struct Link {
    publisher: Connection,
    consumer: Connection,
    publish: Vec<Channel>,
    next: AtomicUsize,
    ready: AtomicU64,
    /// When the depths were last read (the link answers).
    polled: Mutex<Instant>,
}

impl Link {
    /// The next publish channel (confirm mode), in turn.
    pub fn publish_channel(&self) -> Option<&Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.publish.get(i % self.publish.len().max(1))
    }

    /// The connection the drain consumes on.
    pub fn consumer(&self) -> &Connection {
        &self.consumer
    }

    /// RabbitMQ has blocked the publishing connection (memory or disk alarm).
    pub fn blocked(&self) -> bool {
        self.publisher.status().blocked()
    }

    /// Messages ready in the events' queue at the last poll.
    pub fn ready(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the depths were read within `within` (RabbitMQ answers on this link).
    pub fn answered_within(&self, within: Duration) -> bool {
        self.polled
            .lock()
            .map(|at| at.elapsed() <= within)
            .unwrap_or(false)
    }

    fn record(&self, depths: Depths, metrics: &Metrics) {
        self.ready.store(depths.ready, Ordering::Relaxed);
        if let Ok(mut at) = self.polled.lock() {
            *at = Instant::now();
        }
        metrics
            .queue
            .depth
            .set(i64::try_from(depths.ready).unwrap_or(i64::MAX));
        metrics
            .queue
            .dead_depth
            .set(i64::try_from(depths.dead).unwrap_or(i64::MAX));
    }
}

/// Where the current link is found; cheap to clone.
#[derive(Clone)]
pub struct Links {
    rx: watch::Receiver<Option<Arc<Link>>>,
}

impl Links {
    /// The link now, if connected.
    pub fn current(&self) -> Option<Arc<Link>> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every change of link (for the drain).
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Link>>> {
        self.rx.clone()
    }
}

/// The running supervisor.
pub struct LinkTask(StopHandle);

impl LinkTask {
    /// Closes the connections (RabbitMQ requeues whatever was delivered and not acknowledged).
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

/// Starts the supervisor, which connects in the background: the service starts (and answers
/// 503 in queue mode) while RabbitMQ is unreachable.
pub fn start(
    settings: QueueSettings,
    metrics: Arc<Metrics>,
    watermark: Arc<Watermark>,
) -> (Links, LinkTask) {
    let (tx, rx) = watch::channel(None);
    let task = StopHandle::spawn("the RabbitMQ link", |stop| {
        supervise(settings, metrics, watermark, tx, stop)
    });
    (Links { rx }, LinkTask(task))
}

async fn supervise(
    settings: QueueSettings,
    metrics: Arc<Metrics>,
    watermark: Arc<Watermark>,
    tx: watch::Sender<Option<Arc<Link>>>,
    mut stop: StopSignal,
) {
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    let liveness = watermark.liveness_queue(settings.queue.as_str());
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&settings, &watermark, &liveness)) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Nothing is published or consumed on a new connection before this replica's record
        // names its liveness queue: until then another replica may find it dead and stop
        // waiting for what it holds (see crate::watermark::heartbeat).
        let attempt = match attempt {
            Ok(Ok((link, control))) => {
                // Decided in the select, awaited after it: the stop watch's guard is not Send.
                let recorded = tokio::select! {
                    r = watermark.link_up(liveness.clone(), CONNECT_TIMEOUT) => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(recorded) = recorded else {
                    close(&link).await;
                    break;
                };
                match recorded {
                    Ok(()) => Ok(Ok((link, control))),
                    Err(why) => {
                        close(&link).await;
                        Ok(Err(why))
                    }
                }
            }
            Ok(Err(e)) => Ok(Err(e.to_string())),
            Err(elapsed) => Err(elapsed),
        };
        match attempt {
            Ok(Ok((link, control))) => {
                backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
                let link = Arc::new(link);
                let events = futures::stream::select(
                    link.publisher.events_listener(),
                    link.consumer.events_listener(),
                );
                tx.send_replace(Some(link.clone()));
                metrics.queue.connected.set(1);
                tracing::info!(queue = %settings.queue, "connected to RabbitMQ; queues declared");
                let lost = watch_link(
                    &link, &control, events, &settings, &metrics, &watermark, &mut stop,
                )
                .await;
                tx.send_replace(None);
                metrics.queue.connected.set(0);
                metrics.queue.blocked.set(0);
                close(&link).await;
                match lost {
                    None => break,
                    Some(why) => {
                        tracing::warn!(error = %why, "lost the RabbitMQ link; reconnecting")
                    }
                }
            }
            // One line per attempt: the backoff rate-limits them.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.next_delay().as_millis() as u64,
                "cannot connect to RabbitMQ")
            }
            Err(_) => tracing::warn!(
                timeout_s = CONNECT_TIMEOUT.as_secs(),
                "no answer from RabbitMQ while connecting"
            ),
        }
        let wait = backoff.next_wait().unwrap_or(RECONNECT_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    tracing::info!("RabbitMQ link closed");
}

/// Both connections, the publish channels in confirm mode, and the topology declared; the
/// control channel (for depth polls) is returned beside the link.
async fn connect(
    settings: &QueueSettings,
    watermark: &Watermark,
    liveness: &str,
) -> Result<(Link, Channel), lapin::Error> {
    let props = |role: &str| {
        ConnectionProperties::default()
            .with_connection_name(format!("auditlog-service {role}").into())
    };
    let publisher = Connection::connect(&settings.url, props("publish")).await?;
    let consumer = match Connection::connect(&settings.url, props("drain")).await {
        Ok(c) => c,
        Err(e) => {
            let _ = publisher.close(200, "".into()).await;
            return Err(e);
        }
    };
    let setup = async {
        let control = consumer.create_channel().await?;
        let sent = now_ms();
        let depths = topology::declare(&control, settings).await?;
        if depths.ready == 0 {
            watermark.tracker().empty(sent);
        }
        // Lives as long as the drain's connection: other replicas find this one dead by it.
        control
            .queue_declare(
                liveness.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut publish = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let channel = publisher.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publish.push(channel);
        }
        Ok::<_, lapin::Error>((control, depths, publish))
    };
    match setup.await {
        Ok((control, depths, publish)) => {
            let link = Link {
                publisher,
                consumer,
                publish,
                next: AtomicUsize::new(0),
                ready: AtomicU64::new(depths.ready),
                polled: Mutex::new(Instant::now()),
            };
            Ok((link, control))
        }
        Err(e) => {
            let _ = publisher.close(200, "".into()).await;
            let _ = consumer.close(200, "".into()).await;
            Err(e)
        }
    }
}

/// Polls the depths until the link breaks (`Some(reason)`) or the service stops (`None`).
async fn watch_link(
    link: &Link,
    control: &Channel,
    events: impl Stream<Item = Event> + Unpin,
    settings: &QueueSettings,
    metrics: &Metrics,
    watermark: &Watermark,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut events = events;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Awaiting inside a branch would hold the stop watch's guard across it: decide here,
        // poll below.
        let poll = tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(e)) => return Some(e.to_string()),
                Some(Event::ConnectionBlocked(reason)) => {
                    metrics.queue.blocked.set(1);
                    tracing::warn!(%reason, "RabbitMQ blocks publishers: producers get 503 until it lifts the alarm");
                    false
                }
                Some(Event::ConnectionUnblocked) => {
                    metrics.queue.blocked.set(0);
                    tracing::info!("RabbitMQ accepts publishes again");
                    false
                }
                Some(_) => false,
                None => return Some("the connection's events ended".into()),
            },
            _ = tick.tick() => true,
            _ = stop.wait_for(|s| *s) => return None,
        };
        if !poll {
            continue;
        }
        if !link.publisher.status().connected() || !link.consumer.status().connected() {
            return Some("a connection to RabbitMQ closed".into());
        }
        let sent = now_ms();
        match tokio::time::timeout(POLL_TIMEOUT, topology::depths(control, settings)).await {
            Ok(Ok(depths)) => {
                if depths.ready == 0 {
                    watermark.tracker().empty(sent);
                }
                link.record(depths, metrics)
            }
            Ok(Err(e)) => return Some(format!("reading the queue's depth failed: {e}")),
            Err(_) => {
                return Some(format!(
                    "no answer to a depth poll within {} s",
                    POLL_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

async fn close(link: &Link) {
    for conn in [&link.publisher, &link.consumer] {
        if conn.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                conn.close(200, "auditlog-service closing".into()),
            )
            .await;
        }
    }
}
