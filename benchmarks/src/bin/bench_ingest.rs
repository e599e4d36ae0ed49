//! `auditlog-bench-ingest`: measures ingest on a given store and prints the figures.
//!
//! For group commit on and off it starts `auditlog-service` (the binary next to this one),
//! then drives single-event `POST /v1/event` from 1, 16, 64 and 256 concurrent producers
//! (closed loop: each producer sends its next event when the previous one is answered),
//! batch `POST /v1/events`, and an open-loop run at half the peak rate (latency measured from
//! each request's scheduled start, so queueing is not hidden). Finally it measures the same
//! store's direct `insert_many` rate from this Rust client: at the mean batch size the service
//! produced with 64 producers, and at 1000 (the ceiling).
//!
//! For every figure it also reads, from `/proc`, the CPU time (user + system) the store
//! (`BENCH_STORE_PID`, set by `run.sh` for its FerretDB), the service and this load generator
//! spent, per 1000 events. At the end it prints each target and whether this run met it.
//!
//! Queue mode (when `BENCH_AMQP_URL` names a RabbitMQ): the same single-event closed loop at
//! 16, 64 and 256 producers against a service with `AUDIT_INGEST_MODE=queue`, with the
//! publish-to-visibility time (from each event's `created_at` to its insert acknowledged, read
//! from the service's `auditlog_queue_visibility_seconds` histogram: polling
//! `GET /v1/event/{id}` instead would load the store with `_id` lookups, which FerretDB's SQLite
//! backend answers by scanning, and bias the very figures it sits next to), next to direct
//! mode; then 64 producers through a store outage (the store's process stopped with SIGSTOP
//! for `BENCH_OUTAGE_SECONDS`, when `BENCH_STORE_PID` is known), counting producer errors and the drain's catch-up time. The outage's load is an
//! open loop at `BENCH_OUTAGE_RATE` (default: half the rate 64 producers reached in queue mode
//! just before, as the direct open loop runs at half of peak; at the full rate the loop has no
//! headroom and stalls on any hiccup, outage or not): a closed loop would publish as fast as RabbitMQ confirms, far above what the store
//! takes, and measure only how soon the queue's depth limit (`AUDIT_AMQP_MAX_DEPTH`) answers
//! 429 — which is that limit doing its job, not an outage cost.
//!
//! RabbitMQ's CPU per 1000 events is printed too when `BENCH_BROKER_PID` names its Erlang VM
//! (`run.sh` sets it for its own RabbitMQ), with the confirm latency from the service's
//! histogram: in queue mode the broker is a fourth process on the same cores.
//!
//! Scoped API keys: the 64-producer closed loop against a service with one key
//! (`AUDIT_API_KEY`) and against one that also loads a key file of 1,000 entries, sending with
//! a scoped key (`ingest` over `producer-*`), alternated twice; the target is under 5 %
//! difference. `--only keys` runs just this comparison; `--only queue` runs queue mode alone
//! next to direct mode (direct mode's closed loops at `BENCH_QUEUE_PRODUCERS`, queue mode's,
//! then the outage); `--only pairs` measures direct and queue mode at 64 producers pair after
//! pair (`BENCH_PAIRS`), each on a fresh service, and prints each pair's p99 ratio, how many
//! met the goal and the median: on a noisy machine one pair is one sample.
//!
//! The batching producer (`auditlog-client`'s `Producer`), at the end of the full run or alone with
//! `--only producer`, measures on one service 64 single-event producers, the batch POST (the
//! ceiling an application sending batches of its own reaches), then 64 application tasks calling
//! `Producer::send` in a loop for the same time, counting events delivered per second from the
//! first `send` until `close` returns (the buffer drained). The goals: at least 5x the single-event
//! rate, and at least 80 % of the batch POST's.
//!
//! In queue mode it also prints the events per RabbitMQ message (the service publishes the
//! events that arrive together as one message).
//!
//! The harness's helpers are reused from `testcontainers-tests`: starting the service
//! ([`Spawn`], here on the release binary) and reading a metric. Events are sent with
//! `auditlog-client` (`Client::post_event`, `Client::post_events`), one client per loop, whose
//! connection pool keeps every idle connection, as the loops' own reqwest clients did.
//!
//! Run through `benchmarks/ingest/run.sh`, which builds in release mode and starts a private
//! FerretDB and a private RabbitMQ.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use auditlog_client::{Client, NewEvent, Producer, ProducerConfig, ProducerMetrics};
use clap::Parser;
use mongodb::bson::{doc, Document};
use mongodb::options::WriteConcern;
use testcontainers_tests::binary::{RunningBinary, Spawn};
use testcontainers_tests::metric;

/// Ingest benchmark of auditlog-service.
#[derive(Debug, Parser)]
#[command(name = "auditlog-bench-ingest")]
struct Args {
    /// The store to measure against (a scratch database on it is used and dropped).
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    /// Seconds per measurement.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// Producer counts for single-event POSTs.
    #[arg(
        long,
        env = "BENCH_PRODUCERS",
        value_delimiter = ',',
        default_value = "1,16,64,256"
    )]
    producers: Vec<usize>,
    /// Events per batch POST.
    #[arg(long, env = "BENCH_BATCH_EVENTS", default_value_t = 1000)]
    batch_events: usize,
    /// Profile instead of measuring: record the service with `perf` (into this file) while 64
    /// producers send single events with group commit on, then stop.
    #[arg(long, env = "BENCH_PERF_DATA")]
    perf_data: Option<PathBuf>,
    /// The store's process id, to report its CPU time (omitted when not given).
    #[arg(long, env = "BENCH_STORE_PID")]
    store_pid: Option<u32>,
    /// RabbitMQ's process id (its Erlang VM), to report its CPU time in queue mode.
    #[arg(long, env = "BENCH_BROKER_PID")]
    broker_pid: Option<u32>,
    /// The service binary (default: `auditlog-service` next to this binary).
    #[arg(long, env = "BENCH_SERVICE_BIN")]
    service_bin: Option<PathBuf>,
    /// RabbitMQ for the queue-mode figures (omitted: direct mode only).
    #[arg(long, env = "BENCH_AMQP_URL")]
    amqp_url: Option<String>,
    /// Producer counts for queue mode's single-event POSTs.
    #[arg(
        long,
        env = "BENCH_QUEUE_PRODUCERS",
        value_delimiter = ',',
        default_value = "16,64,256"
    )]
    queue_producers: Vec<usize>,
    /// Seconds the store is stopped during the queue-mode outage run.
    #[arg(long, env = "BENCH_OUTAGE_SECONDS", default_value_t = 60)]
    outage_seconds: u64,
    /// Events per second offered through the outage (default: half what 64 producers sent in
    /// queue mode just before).
    #[arg(long, env = "BENCH_OUTAGE_RATE")]
    outage_rate: Option<f64>,
    /// Write concern the service uses (`majority` or `1`).
    #[arg(long, env = "AUDIT_WRITE_CONCERN", default_value = "majority")]
    write_concern: String,
    /// Run only this part (`keys`: one key against a scoped key of a 1,000-entry key file;
    /// `queue`: queue mode and its store outage; `open`: the open loop at half of peak;
    /// `pairs`: `BENCH_PAIRS` pairs of direct and queue mode at 64 producers, each on a fresh
    /// service and database, with the p99 ratio of each pair; `producer`: 64 single-event
    /// producers, the batch POST and the batching producer of `auditlog-client`).
    #[arg(long, env = "BENCH_ONLY", value_enum)]
    only: Option<Only>,
    /// Pairs that `--only pairs` measures.
    #[arg(long, env = "BENCH_PAIRS", default_value_t = 6)]
    pairs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Keys,
    Queue,
    Open,
    Pairs,
    Producer,
}

/// The key the scoped-keys figure sends with, and how many entries its key file has.
const SCOPED_KEY: &str = "bench-scoped-key";
const KEY_FILE_ENTRIES: usize = 1000;

struct Figures {
    events: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

/// CPU seconds (user + system) of a process so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc reports clock ticks of USER_HZ, which is part of the kernel's ABI: 100.
    Some(ticks / 100.0)
}

/// CPU time of the store, the service and the load generator over one measurement.
#[derive(Clone, Copy)]
struct Cpu {
    store: Option<f64>,
    service: Option<f64>,
    load: Option<f64>,
}

impl Cpu {
    fn now(store: Option<u32>, service: Option<u32>) -> Cpu {
        Cpu {
            store: store.and_then(|p| cpu_seconds(Some(p))),
            service: service.and_then(|p| cpu_seconds(Some(p))),
            load: cpu_seconds(None),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Cpu {
            store: d(self.store, before.store),
            service: d(self.service, before.service),
            load: d(self.load, before.load),
        }
    }

    /// Seconds per 1000 events, as `store / service / load` (`-` when unknown).
    fn per_1000(self, events: u64) -> String {
        let f = |x: Option<f64>| match x {
            Some(x) if events > 0 => format!("{:.3}", x * 1000.0 / events as f64),
            _ => "-".to_owned(),
        };
        format!("{} / {} / {}", f(self.store), f(self.service), f(self.load))
    }
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// A running `auditlog-service` (the harness's [`RunningBinary`]: killed on drop, its log
/// printed when the benchmark fails).
struct Service {
    running: RunningBinary,
    base: String,
}

impl Service {
    fn pid(&self) -> Option<u32> {
        Some(self.running.pid())
    }

    /// The service's `/metrics` text (`None` when it does not answer).
    async fn metrics(&self) -> Option<String> {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Queue mode: `(events, messages)` RabbitMQ confirmed so far.
    async fn published_groups(&self) -> Option<(f64, f64)> {
        let text = self.metrics().await?;
        Some((
            metric(&text, "auditlog_queue_published_total")?,
            metric(&text, "auditlog_queue_published_messages_total")?,
        ))
    }

    /// `(sum, count)` of the service's `insert_many` batch sizes so far.
    async fn mean_batch_counts(&self) -> Option<(f64, f64)> {
        let text = self.metrics().await?;
        Some((
            metric(&text, "auditlog_write_batch_size_sum")?,
            metric(&text, "auditlog_write_batch_size_count")?,
        ))
    }

    /// Mean events per `insert_many` since `before` (from [`Service::mean_batch_counts`]).
    async fn mean_batch_since(&self, before: Option<(f64, f64)>) -> Option<f64> {
        let (sum, count) = self.mean_batch_counts().await?;
        let (sum0, count0) = before.unwrap_or((0.0, 0.0));
        (count > count0).then(|| (sum - sum0) / (count - count0))
    }
}

/// Starts the service binary `bin` on the benchmark's store, in database `db`, with the
/// harness's [`Spawn`], and waits until it is ready.
async fn start_service(
    args: &Args,
    bin: &PathBuf,
    db: &str,
    group_commit: bool,
    extra: &[(&str, &str)],
) -> anyhow::Result<Service> {
    let mut spawn = Spawn::new("auditlog-service")
        .binary(bin)
        .health_path("/readyz")
        .arg("run");
    for (k, v) in extra {
        spawn = spawn.env(*k, *v);
    }
    let running = spawn
        .env("MONGODB_URI", &args.mongodb_uri)
        .env("AUDIT_DB_NAME", db)
        .env("AUDIT_API_KEY", "bench")
        .env("AUDIT_GROUP_COMMIT", group_commit.to_string())
        .env("AUDIT_WRITE_CONCERN", &args.write_concern)
        .env("AUDIT_QUEUE_CAPACITY", "100000")
        // The archive watch reads the oldest event, which FerretDB answers by scanning and
        // sorting the collection (16 s of its CPU at 300,000 events): a read that fell inside
        // a measurement measured that scan, not ingest.
        .env("AUDIT_ARCHIVE_WATCH_SECS", "0")
        .start()
        .await;
    let base = running.base_url.clone();
    Ok(Service { running, base })
}

fn event(producer: usize, n: u64) -> NewEvent {
    NewEvent::new("bench", format!("producer-{producer}")).payload(serde_json::json!(
        {"n": n, "user": "someone@example.com", "action": "login", "ok": true}
    ))
}

/// How long the load's requests may take: without an end, as the benchmark's own HTTP code
/// had (`auditlog-client`'s default is 30 s; a request slower than that is a figure here, not
/// an error).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `auditlog-client` the load sends with: one per loop, its connections shared by the
/// loop's tasks. Its reqwest pool keeps every idle connection (no per-host limit): a closed
/// loop of N producers keeps N, an open loop as many as it had in flight.
fn bench_client(base: &str, key: &str) -> Client {
    Client::builder(base, key)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("the service's base URL and the benchmark's key make a client")
}

/// Closed loop: `producers` tasks, each posting its next request when the last is answered.
async fn closed_loop(base: &str, producers: usize, seconds: u64, batch: Option<usize>) -> Figures {
    closed_loop_with_key(base, "bench", producers, seconds, batch).await
}

/// [`closed_loop`] sending `key`.
async fn closed_loop_with_key(
    base: &str,
    key: &str,
    producers: usize,
    seconds: u64,
    batch: Option<usize>,
) -> Figures {
    let client = bench_client(base, key);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = vec![];
    for p in 0..producers {
        let (client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(producer(client, p, batch, stop)));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut figures = Figures {
        events: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: vec![],
    };
    for t in tasks {
        if let Ok((e, x, l)) = t.await {
            figures.events += e;
            figures.errors += x;
            figures.latencies_us.extend(l);
        }
    }
    figures.elapsed = started.elapsed();
    figures
}

/// One producer of [`closed_loop_with_key`]: posts a request, waits for its answer, and again
/// until `stop`; returns the events accepted, the events refused and each request's latency.
async fn producer(
    client: Client,
    p: usize,
    batch: Option<usize>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<u64>) {
    let (mut events, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = batch.unwrap_or(1) as u64;
        let body: Vec<NewEvent> = match batch {
            None => vec![event(p, n)],
            // A batch carries many consumers' events (a gateway's, say), spread
            // over 64 like the direct inserts it is compared with.
            Some(_) => (0..k)
                .map(|i| event(((n + i) % 64) as usize, n + i))
                .collect(),
        };
        let sent = Instant::now();
        // Events accepted: 201, 200 or 202 for a single event; for a batch, those of its
        // results (a refused batch accepts none).
        let accepted = match batch {
            None => u64::from(client.post_event(&body[0]).await.is_ok()),
            Some(_) => match client.post_events(&body).await {
                Ok(answer) => answer.results.iter().filter(|r| r.is_accepted()).count() as u64,
                Err(_) => 0,
            },
        };
        lat.push(sent.elapsed().as_micros() as u64);
        events += accepted;
        errors += k - accepted;
        n += k;
    }
    (events, errors, lat)
}

/// How long an open loop runs at its rate before its requests count.
const OPEN_LOOP_WARM_UP: Duration = Duration::from_secs(2);
/// Requests an open loop has in flight at most (and connections it keeps).
const OPEN_LOOP_IN_FLIGHT: usize = 1024;

/// Open loop at a fixed rate: request i starts at `i / rate`; latency counts from then. The
/// first [`OPEN_LOOP_WARM_UP`] of requests are sent but not counted.
async fn open_loop(base: &str, rate: f64, seconds: u64) -> Figures {
    // Every idle connection kept ([`bench_client`]), so as many as requests may be in flight:
    // with fewer, a burst past the idle limit opens connections that are closed again right
    // after (hundreds within a second were seen), load that the service under test pays for too.
    let client = bench_client(base, "bench");
    let begun = Instant::now();
    // The first requests of a new client each open a connection, all at once: without a
    // warm-up at the same rate, that start-up burst is what the p99 measures.
    let warm_up = (rate * OPEN_LOOP_WARM_UP.as_secs_f64()) as u64;
    let started = begun + OPEN_LOOP_WARM_UP;
    let total = warm_up + (rate * seconds as f64) as u64;
    let limit = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = begun + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // 201 in direct mode, 202 in queue mode.
            let ok = client
                .post_event(&event((i % 64) as usize, i))
                .await
                .is_ok();
            drop(permit);
            (ok, due.elapsed().as_micros() as u64)
        }));
    }
    let mut figures = Figures {
        events: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: vec![],
    };
    for t in tasks.into_iter().skip(warm_up as usize) {
        if let Ok((ok, l)) = t.await {
            if ok {
                figures.events += 1;
            } else {
                figures.errors += 1;
            }
            figures.latencies_us.push(l);
        }
    }
    figures.elapsed = started.elapsed();
    figures
}

/// The quarter-seconds of an open loop (latencies in the order the requests were due, at
/// `rate` a second) whose slowest request was slowest: where its p99 comes from.
fn print_worst_quarters(by_start: &[u64], rate: f64, over_ms: f64) {
    let per_slot = (rate / 4.0).max(1.0) as usize;
    let mut slots: Vec<(usize, u64, usize)> = by_start
        .chunks(per_slot)
        .enumerate()
        .map(|(i, c)| {
            let over = c.iter().filter(|&&l| l as f64 > over_ms * 1000.0).count();
            (i, c.iter().copied().max().unwrap_or(0), over)
        })
        .collect();
    slots.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (i, max, over) in slots.iter().take(6) {
        println!(
            "  at {:>6.2} s: slowest {:>8.1} ms, {over} requests over {over_ms} ms",
            *i as f64 / 4.0,
            *max as f64 / 1000.0
        );
    }
}

/// `--only open`: the 64-producer closed loop for the peak, then the open loop at half of it,
/// with the quarter-seconds whose latencies were worst (where the p99 comes from).
async fn open_loop_alone(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let service = start_service(args, bin, "bench_open", true, &[]).await?;
    let mut peak = measure(
        args,
        &service,
        closed_loop(&service.base, 64, args.seconds, None),
    )
    .await;
    peak.print("single POST, group commit", "64");
    let half = peak.figures.rate() / 2.0;
    let writes = histogram_buckets(&service, WRITE_DURATION).await;
    let mut m = measure(args, &service, open_loop(&service.base, half, args.seconds)).await;
    let by_start = m.figures.latencies_us.clone();
    m.print(&format!("open loop at {half:.0}/s"), "-");
    print_store_writes(&service, &writes).await;
    print_worst_quarters(&by_start, half, 20.0);
    drop(service);
    drop_database(args, "bench_open").await?;
    Ok(())
}

/// The store's own rate: `insert_many` of `size` documents, `tasks` at a time, and the CPU
/// time it cost.
/// `indexed`: into a collection with the service's indexes (as `auditlog-service` creates
/// them), so the store does the same work per event as on the service path; otherwise into a
/// bare collection.
async fn direct_insert_many(
    args: &Args,
    tasks: usize,
    size: u64,
    indexed: bool,
) -> anyhow::Result<Measured> {
    let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
    client.database("bench_direct").drop().await?;
    if indexed {
        create_service_indexes(args).await?;
    }
    let coll = client
        .database("bench_direct")
        .collection::<Document>("events");
    let wc = if args.write_concern == "1" {
        WriteConcern::nodes(1)
    } else {
        WriteConcern::majority()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = Cpu::now(args.store_pid, None);
    let started = Instant::now();
    let mut handles = vec![];
    for _ in 0..tasks {
        let (coll, stop, wc) = (coll.clone(), stop.clone(), wc.clone());
        handles.push(tokio::spawn(insert_many_task(coll, wc, size, stop)));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let cpu = Cpu::now(args.store_pid, None).since(cpu);
    client.database("bench_direct").drop().await?;
    Ok(Measured {
        figures: Figures {
            events: total,
            errors: 0,
            elapsed,
            latencies_us: vec![],
        },
        cpu,
    })
}

/// Creates the service's indexes on `bench_direct.events`, as `auditlog-service` creates them.
async fn create_service_indexes(args: &Args) -> anyhow::Result<()> {
    let store = auditlog_common::store::Store::connect(
        &auditlog_common::settings::MongoSettings {
            mongodb_uri: args.mongodb_uri.clone(),
            db_name: "bench_direct".into(),
            collection: "events".into(),
        },
        "auditlog-bench-ingest",
    )
    .await?;
    let server = store.server_info().await?;
    auditlog_common::schema::ensure_storage(
        &store,
        &server,
        auditlog_common::schema::Retention::from_days(30),
    )
    .await?;
    Ok(())
}

/// One task of [`direct_insert_many`]: `insert_many` of `size` documents, again until `stop`;
/// returns the events inserted.
async fn insert_many_task(
    coll: mongodb::Collection<Document>,
    wc: WriteConcern,
    size: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let docs: Vec<Document> = (0..size)
            .map(|i| {
                doc! {
                    "_id": mongodb::bson::oid::ObjectId::new(),
                    // Spread over 64 consumers like the service's producers: where
                    // new keys land in the consumer index changes the store's cost.
                    "type": "bench", "consumer": format!("producer-{}", (n + i) % 64),
                    "created_at": mongodb::bson::DateTime::now(),
                    "payload": {"n": (n + i) as i64, "user": "someone@example.com", "action": "login", "ok": true},
                }
            })
            .collect();
        if coll
            .insert_many(docs)
            .ordered(false)
            .write_concern(wc.clone())
            .await
            .is_ok()
        {
            n += size;
        }
    }
    n
}

/// One figure: what the load achieved and the CPU it cost.
struct Measured {
    figures: Figures,
    cpu: Cpu,
}

impl Measured {
    fn print(&mut self, label: &str, producers: &str) {
        let (p50, p99) = (
            self.figures.percentile_ms(0.50),
            self.figures.percentile_ms(0.99),
        );
        println!(
            "{label:<30} {producers:>9} {:>10.0} {p50:>8.2} {p99:>8.2} {:>6}   {}",
            self.figures.rate(),
            self.figures.errors,
            self.cpu.per_1000(self.figures.events)
        );
    }

    fn per_event(&self, who: fn(&Cpu) -> Option<f64>) -> Option<f64> {
        Some(who(&self.cpu)? / self.figures.events.max(1) as f64)
    }
}

/// Runs `load` against `service`, measuring the CPU of the store, the service and this process.
async fn measure<F: std::future::Future<Output = Figures>>(
    args: &Args,
    service: &Service,
    load: F,
) -> Measured {
    let before = Cpu::now(args.store_pid, service.pid());
    let figures = load.await;
    let cpu = Cpu::now(args.store_pid, service.pid()).since(before);
    Measured { figures, cpu }
}

/// `perf record` of the service (call graphs from DWARF) while 64 producers load it.
async fn profile(args: &Args, bin: &PathBuf, out: &PathBuf) -> anyhow::Result<()> {
    let service = start_service(args, bin, "bench_profile", true, &[]).await?;
    let pid = service.pid().context("the service has no pid")?;
    // Warm up the connections and the store before recording.
    closed_loop(&service.base, 64, 1, None).await;
    let mut perf = Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
        .arg(out)
        .args([
            "-p",
            &pid.to_string(),
            "--",
            "sleep",
            &args.seconds.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start perf (Debian: apt-get install linux-perf)")?;
    let mut m = measure(
        args,
        &service,
        closed_loop(&service.base, 64, args.seconds, None),
    )
    .await;
    let status = perf.wait()?;
    if !status.success() {
        bail!("perf record failed: {status}");
    }
    m.print("single POST, group commit", "64");
    drop(service);
    drop_database(args, "bench_profile").await?;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Interrupted (Ctrl-C, or run.sh's caller stopping it), the benchmark's future is dropped
    // and with it every `Service`, whose Drop stops its child: no service outlives the run.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        done = bench(args) => done,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

/// Runs what the arguments ask for: the profile, one `--only` part, or the full run.
async fn bench(args: Args) -> anyhow::Result<()> {
    let bin = service_bin(&args)?;
    if let Some(out) = &args.perf_data {
        return profile(&args, &bin, out).await;
    }
    match args.only {
        Some(Only::Keys) => {
            print_header();
            scoped_keys(&args, &bin).await
        }
        Some(Only::Open) => {
            print_header();
            open_loop_alone(&args, &bin).await
        }
        Some(Only::Pairs) => {
            let url = amqp_url(&args, "pairs")?;
            print_header();
            queue_pairs(&args, &bin, &url).await
        }
        Some(Only::Queue) => {
            let url = amqp_url(&args, "queue")?;
            print_header();
            queue_alone(&args, &bin, &url).await
        }
        Some(Only::Producer) => producer_alone(&args, &bin).await,
        None => full_run(&args, &bin).await,
    }
}

/// The service binary: `BENCH_SERVICE_BIN`, or `auditlog-service` next to this binary.
fn service_bin(args: &Args) -> anyhow::Result<PathBuf> {
    Ok(match &args.service_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("auditlog-service"),
    })
}

/// Application tasks of the producer scenario, as many as the single-event producers it is
/// compared with.
const PRODUCER_TASKS: usize = 64;

/// `--only producer`: on one service (group commit on), 64 single-event producers, the batch
/// POST, then the batching producer; each goal and whether it was met.
async fn producer_alone(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let config = ProducerConfig::default();
    println!(
        "auditlog ingest benchmark, batching producer — store {}, write concern {}, {} s per figure",
        args.mongodb_uri, args.write_concern, args.seconds
    );
    println!(
        "producer: ProducerConfig::default(): batches of up to {} events, {} in flight, \
         linger {:?}, gzip {}, buffer {} events",
        config.max_batch_events,
        config.max_in_flight,
        config.linger,
        config.compress,
        config.buffer_events
    );
    println!("cpu: CPU seconds per 1000 events of the store / the service / the load generator");
    println!("(the producer's p50/p99 are of its POST /v1/events requests, as the batch POST's)");
    println!();
    print_header();
    let db = "bench_producer";
    let service = start_service(args, bin, db, true, &[]).await?;
    let mut single = measure(
        args,
        &service,
        closed_loop(&service.base, 64, args.seconds, None),
    )
    .await;
    single.print("single POST, group commit", "64");
    let batch = batch_post(args, &service).await;
    let mut produced = measure(
        args,
        &service,
        producer_loop(&service.base, config, PRODUCER_TASKS, args.seconds),
    )
    .await;
    produced.print("producer, default config", &PRODUCER_TASKS.to_string());
    drop(service);
    drop_database(args, db).await?;

    let (p, s, b) = (
        produced.figures.rate(),
        single.figures.rate(),
        batch.figures.rate(),
    );
    let over_single = p / s.max(f64::EPSILON);
    let of_batch = 100.0 * p / b.max(f64::EPSILON);
    println!();
    println!(
        "producer against 64 single-event producers: {p:.0} vs {s:.0} events/s = {over_single:.2}x (target >= 5x: {})",
        verdict(over_single >= 5.0)
    );
    println!(
        "producer against the batch POST x{}: {p:.0} vs {b:.0} events/s = {of_batch:.1}% (target >= 80%: {})",
        args.batch_events,
        verdict(of_batch >= 80.0)
    );
    if produced.figures.errors > 0 {
        println!(
            "producer: {} events failed or refused (the figure counts delivered events only)",
            produced.figures.errors
        );
    }
    Ok(())
}

/// The latency of each of the producer's requests, from its `batch_sent` hook.
#[derive(Default)]
struct RequestLatencies(Mutex<Vec<u64>>);

impl ProducerMetrics for RequestLatencies {
    fn batch_sent(&self, _events: usize, _bytes: usize, elapsed: Duration) {
        if let Ok(mut l) = self.0.lock() {
            l.push(elapsed.as_micros() as u64);
        }
    }
}

/// The producer scenario: `tasks` application tasks, each calling `send` in a loop for
/// `seconds`, through one `Producer` with `config`; then `close`. The figure is the events
/// delivered over the time from the first `send` until `close` returned: what the buffer still
/// held when the senders stopped counts once it is delivered, and its time with it.
async fn producer_loop(base: &str, config: ProducerConfig, tasks: usize, seconds: u64) -> Figures {
    let latencies = Arc::new(RequestLatencies::default());
    let producer = bench_client(base, "bench").producer(ProducerConfig {
        metrics: Some(latencies.clone()),
        ..config
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut senders = Vec::with_capacity(tasks);
    for p in 0..tasks {
        let (producer, stop) = (producer.clone(), stop.clone());
        senders.push(tokio::spawn(send_until(producer, p, stop)));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0u64;
    for s in senders {
        refused += s.await.unwrap_or(0);
    }
    let stats = producer.close().await;
    let elapsed = started.elapsed();
    let (events, errors) = match stats {
        Ok(stats) => {
            println!(
                "  producer: {} events sent, {} delivered, {} failed, {} retried, {} requests; \
                 senders stopped after {seconds} s, close returned at {:.1} s",
                stats.sent,
                stats.delivered,
                stats.failed,
                stats.retries,
                stats.batches,
                elapsed.as_secs_f64()
            );
            (stats.delivered, stats.failed + refused)
        }
        Err(e) => {
            println!("  producer: close failed: {e}");
            (0, refused)
        }
    };
    let latencies_us = latencies.0.lock().map(|l| l.clone()).unwrap_or_default();
    Figures {
        events,
        errors,
        elapsed,
        latencies_us,
    }
}

/// One application task of [`producer_loop`]: `send` until `stop`; returns the events `send`
/// refused (`Full` after `Block`'s wait, which a run that keeps up never sees).
async fn send_until(producer: Producer, p: usize, stop: Arc<AtomicBool>) -> u64 {
    let (mut n, mut refused) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if producer.send(event(p, n)).await.is_err() {
            refused += 1;
        }
        n += 1;
    }
    refused
}

/// `--only queue`: direct mode's closed loops at `BENCH_QUEUE_PRODUCERS`, then queue mode, then
/// whether queue mode's p99 at 64 producers was no worse than direct mode's.
async fn queue_alone(args: &Args, bin: &PathBuf, url: &str) -> anyhow::Result<()> {
    // Direct mode at the same producer counts first: the goals compare the two in one run.
    let direct_64 = direct_at_queue_producers(args, bin).await?;
    let queue = queue_mode(args, bin, url).await?;
    if let (Some(direct), Some(mut queued)) = (direct_64, queue.at_64) {
        let queued = queued.figures.percentile_ms(0.99);
        println!();
        println!(
            "queue mode: p99 at 64 producers no worse than direct: {queued:.1} ms vs {direct:.1} ms: {}",
            if queued <= direct { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// Direct mode with group commit, closed loops at `BENCH_QUEUE_PRODUCERS`; returns the p99 (ms)
/// at 64 producers.
async fn direct_at_queue_producers(args: &Args, bin: &PathBuf) -> anyhow::Result<Option<f64>> {
    let service = start_service(args, bin, "bench_gc_on", true, &[]).await?;
    let mut direct_64 = None;
    for &p in &args.queue_producers {
        let mut m = measure(
            args,
            &service,
            closed_loop(&service.base, p, args.seconds, None),
        )
        .await;
        m.print("single POST, group commit", &p.to_string());
        if p == 64 {
            direct_64 = Some(m.figures.percentile_ms(0.99));
        }
    }
    drop(service);
    drop_database(args, "bench_gc_on").await?;
    Ok(direct_64)
}

/// The full run: direct mode with group commit on and off, scoped keys, queue mode, the store
/// alone, then each target and whether it was met.
async fn full_run(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    println!(
        "auditlog ingest benchmark — store {}, write concern {}, {} s per figure",
        args.mongodb_uri, args.write_concern, args.seconds
    );
    println!("cpu: CPU seconds per 1000 events of the store / the service / the load generator");
    println!();
    print_header();
    let mut direct = direct_mode(args, bin).await?;
    scoped_keys(args, bin).await?;
    let queue = match &args.amqp_url {
        Some(url) => Some(queue_mode(args, bin, url).await?),
        None => {
            println!("(queue mode skipped: BENCH_AMQP_URL is not set)");
            None
        }
    };
    let store = store_alone(args, direct.mean_batch_64).await?;
    println!();
    print_targets(args, &mut direct, &store, queue)?;
    // The batching producer last, on a service of its own, with its goals: one run gives
    // every figure the docs quote.
    println!();
    producer_alone(args, bin).await
}

/// Direct mode's figures that the targets compare.
struct DirectFigures {
    /// At 64 producers, with group commit on and off.
    at_64: [Option<Measured>; 2],
    /// Mean events per `insert_many` at 64 producers with group commit on.
    mean_batch_64: Option<f64>,
    batch_post: Option<Measured>,
    open: Option<Measured>,
}

/// Direct mode with group commit on, then off, each on its own service and database: the
/// closed loops, and with group commit on the batch POST and the open loop at half of peak.
async fn direct_mode(args: &Args, bin: &PathBuf) -> anyhow::Result<DirectFigures> {
    let mut figures = DirectFigures {
        at_64: [None, None],
        mean_batch_64: None,
        batch_post: None,
        open: None,
    };
    for (i, group_commit) in [true, false].into_iter().enumerate() {
        let db = if group_commit {
            "bench_gc_on"
        } else {
            "bench_gc_off"
        };
        let service = start_service(args, bin, db, group_commit, &[]).await?;
        let label = if group_commit {
            "single POST, group commit"
        } else {
            "single POST, no group commit"
        };
        let loops = single_event_loops(args, &service, label, group_commit).await;
        figures.at_64[i] = loops.at_64;
        if group_commit {
            figures.mean_batch_64 = loops.mean_batch_64;
            other_queue_producers(args, &service, label).await;
            figures.batch_post = Some(batch_post(args, &service).await);
            figures.open = Some(open_loop_at_half(args, &service, loops.peak).await);
        }
        drop(service);
        drop_database(args, db).await?;
    }
    Ok(figures)
}

/// What [`single_event_loops`] keeps of its closed loops.
struct SingleEventLoops {
    /// The highest rate (with group commit; 0 without).
    peak: f64,
    at_64: Option<Measured>,
    /// Mean events per `insert_many` at 64 producers (with group commit; `None` without).
    mean_batch_64: Option<f64>,
}

/// The single-event closed loops at `BENCH_PRODUCERS` against `service`.
async fn single_event_loops(
    args: &Args,
    service: &Service,
    label: &str,
    group_commit: bool,
) -> SingleEventLoops {
    let mut loops = SingleEventLoops {
        peak: 0.0,
        at_64: None,
        mean_batch_64: None,
    };
    for &p in &args.producers {
        let batches_before = service.mean_batch_counts().await;
        let mut m = measure(
            args,
            service,
            closed_loop(&service.base, p, args.seconds, None),
        )
        .await;
        m.print(label, &p.to_string());
        if group_commit {
            loops.peak = loops.peak.max(m.figures.rate());
            if p == 64 {
                loops.mean_batch_64 = service.mean_batch_since(batches_before).await;
            }
        }
        if p == 64 {
            loops.at_64 = Some(m);
        }
    }
    loops
}

/// The closed loops at the `BENCH_QUEUE_PRODUCERS` counts that `BENCH_PRODUCERS` lacks, so that
/// queue mode has direct mode beside it at each.
async fn other_queue_producers(args: &Args, service: &Service, label: &str) {
    for &p in &args.queue_producers {
        if args.producers.contains(&p) {
            continue;
        }
        let mut m = measure(
            args,
            service,
            closed_loop(&service.base, p, args.seconds, None),
        )
        .await;
        m.print(label, &p.to_string());
    }
}

/// Batch POSTs of `BENCH_BATCH_EVENTS` events from 2 producers.
async fn batch_post(args: &Args, service: &Service) -> Measured {
    let mut m = measure(
        args,
        service,
        closed_loop(&service.base, 2, args.seconds, Some(args.batch_events)),
    )
    .await;
    m.print(&format!("batch POST x{}", args.batch_events), "2");
    m
}

/// The open loop at half of `peak`, with what the store's writes took meanwhile.
async fn open_loop_at_half(args: &Args, service: &Service, peak: f64) -> Measured {
    let half = peak / 2.0;
    let writes = histogram_buckets(service, WRITE_DURATION).await;
    let mut m = measure(args, service, open_loop(&service.base, half, args.seconds)).await;
    m.print(&format!("open loop at {half:.0}/s"), "-");
    print_store_writes(service, &writes).await;
    m
}

/// The store's own `insert_many` figures that the targets compare.
struct StoreFigures {
    /// The service's mean batch at 64 producers, rounded: the size `same_size` inserted.
    mean: u64,
    same_size: Measured,
    /// The faster of 1 and 2 tasks inserting 1000 at a time into the service's indexes.
    ceiling: Option<Measured>,
    bare: Measured,
}

/// The store alone: `insert_many` at the service's mean batch size (`mean_batch_64`), at 1000
/// from 1 and 2 tasks, and at 1000 into a bare collection.
async fn store_alone(args: &Args, mean_batch_64: Option<f64>) -> anyhow::Result<StoreFigures> {
    let mean = mean_batch_64.unwrap_or(1.0).round().max(1.0) as u64;
    let mut same_size = direct_insert_many(args, 1, mean, true).await?;
    same_size.print(&format!("direct x{mean}, indexed"), "1");
    let mut ceiling: Option<Measured> = None;
    for tasks in [1, 2] {
        let mut m = direct_insert_many(args, tasks, 1000, true).await?;
        m.print("direct x1000, indexed", &tasks.to_string());
        if ceiling
            .as_ref()
            .is_none_or(|c| m.figures.rate() > c.figures.rate())
        {
            ceiling = Some(m);
        }
    }
    let mut bare = direct_insert_many(args, 2, 1000, false).await?;
    bare.print("direct x1000, bare collection", "2");
    Ok(StoreFigures {
        mean,
        same_size,
        ceiling,
        bare,
    })
}

/// Each target of the full run and whether it was met.
fn print_targets(
    args: &Args,
    direct: &mut DirectFigures,
    store: &StoreFigures,
    queue: Option<QueueFigures>,
) -> anyhow::Result<()> {
    let ceiling_rate = store
        .ceiling
        .as_ref()
        .map_or(1.0, |c| c.figures.rate())
        .max(1.0);
    let [Some(on), Some(off)] = &mut direct.at_64 else {
        bail!("the 64-producer figures are missing (BENCH_PRODUCERS must include 64)");
    };
    println!(
        "mean insert_many batch with 64 producers: {}",
        direct
            .mean_batch_64
            .map_or("-".into(), |m| format!("{m:.1} events"))
    );
    let bare_rate = store.bare.figures.rate().max(1.0);
    println!(
        "ceiling: direct insert_many x1000 into the service's indexes {ceiling_rate:.0}/s \
         (into a bare collection {bare_rate:.0}/s: the indexes cost the store {:.0}%)",
        100.0 * (1.0 - ceiling_rate / bare_rate)
    );
    print_single_event_targets(on, off, ceiling_rate, bare_rate);
    if let Some(open) = direct.open.as_mut() {
        let p99 = open.figures.percentile_ms(0.99);
        println!(
            "p99 in the open loop at half of peak: {p99:.1} ms (target <= 20 ms: {})",
            verdict(p99 <= 20.0)
        );
    }
    if let Some(b) = &direct.batch_post {
        let share = b.figures.rate() / ceiling_rate;
        println!(
            "batch POST x{} vs the ceiling: {:.0}% (target >= 80%: {}); vs the bare collection: {:.0}%",
            args.batch_events,
            100.0 * share,
            verdict(share >= 0.8),
            100.0 * b.figures.rate() / bare_rate
        );
    }
    if let Some(q) = queue {
        print_queue_targets(on, q);
    }
    print_store_cpu_target(on, store);
    Ok(())
}

/// The targets of single-event POSTs at 64 producers with group commit `on` (and `off`):
/// against the ceiling, group commit's gain, and the service's CPU per request.
fn print_single_event_targets(on: &Measured, off: &Measured, ceiling_rate: f64, bare_rate: f64) {
    let share = on.figures.rate() / ceiling_rate;
    println!(
        "64 producers vs the ceiling: {:.0}% (target >= 50%: {}); vs the bare collection: {:.0}%",
        100.0 * share,
        verdict(share >= 0.5),
        100.0 * on.figures.rate() / bare_rate
    );
    let gain = on.figures.rate() / off.figures.rate().max(1.0);
    println!(
        "group commit on vs off at 64 producers: {gain:.1}x (target >= 10x: {})",
        verdict(gain >= 10.0)
    );
    if let Some(us) = on.per_event(|c| c.service) {
        let us = us * 1e6;
        println!(
            "service CPU per single-event request at 64 producers: {us:.1} us (target <= 20 us: {})",
            verdict(us <= 20.0)
        );
    }
}

/// Queue mode's targets: p99 and throughput at 64 producers against direct mode's (`on`), and
/// no producer error through the store outage.
fn print_queue_targets(on: &mut Measured, mut q: QueueFigures) {
    let direct_p99 = on.figures.percentile_ms(0.99);
    if let Some(m) = q.at_64.as_mut() {
        let p99 = m.figures.percentile_ms(0.99);
        println!(
            "queue mode p99 at 64 producers: {p99:.2} ms vs direct {direct_p99:.2} ms (target: no worse: {})",
            verdict(p99 <= direct_p99)
        );
        let share = m.figures.rate() / on.figures.rate().max(1.0);
        println!(
            "queue mode throughput at 64 producers: {:.0}% of direct (target >= 80%: {})",
            100.0 * share,
            verdict(share >= 0.8)
        );
    }
    if let Some((errors, seconds)) = q.outage_errors {
        println!(
            "producer errors through a {seconds} s store outage in queue mode: {errors} (target 0: {})",
            verdict(errors == 0)
        );
    }
}

/// The store's CPU per event on the service path (`on`) against direct batches of the same size.
fn print_store_cpu_target(on: &Measured, store: &StoreFigures) {
    if let (Some(ours), Some(direct)) = (
        on.per_event(|c| c.store),
        store.same_size.per_event(|c| c.store),
    ) {
        let (ratio, mean) = (ours / direct, store.mean);
        println!(
            "store CPU per event, service path vs direct x{mean} (same indexes): {:.1} us vs {:.1} us = {ratio:.2}x (target <= 1.2x: {})",
            ours * 1e6,
            direct * 1e6,
            verdict(ratio <= 1.2)
        );
    }
}

/// A key file of [`KEY_FILE_ENTRIES`] entries, the last granting [`SCOPED_KEY`] `ingest` over
/// the producers' consumers (`producer-*`), the others other tenants' keys.
fn write_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    use auditlog_service::keys::digest::digest;
    let hex = |key: &str| -> String {
        digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut text = String::new();
    for i in 1..KEY_FILE_ENTRIES {
        text.push_str(&format!(
            "[[key]]\nname = \"tenant-{i}\"\nsha256 = \"{}\"\nrights = [\"ingest\", \"read\"]\nconsumers = [\"tenant-{i}-*\", \"shared-{i}\"]\nrate = {{ events_per_second = 1000, burst = 1000 }}\n\n",
            hex(&format!("unused-key-{i}"))
        ));
    }
    text.push_str(&format!(
        "[[key]]\nname = \"bench-scoped\"\nsha256 = \"{}\"\nrights = [\"ingest\"]\nconsumers = [\"producer-*\"]\n",
        hex(SCOPED_KEY)
    ));
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// One key against a scoped key of a 1,000-entry key file, 64 producers, measured in A-B-B-A
/// order so that the machine's drift hits both alike; prints each run and the difference.
async fn scoped_keys(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let path =
        std::env::temp_dir().join(format!("auditlog-bench-keys-{}.toml", std::process::id()));
    write_key_file(&path)?;
    let file = path.to_string_lossy().into_owned();
    let single = start_service(args, bin, "bench_keys_single", true, &[]).await?;
    let scoped = start_service(
        args,
        bin,
        "bench_keys_scoped",
        true,
        &[("AUDIT_API_KEYS_FILE", file.as_str())],
    )
    .await?;
    let (mut one, mut many) = (Vec::new(), Vec::new());
    // A-B-B-A: a drift that is linear in time (the collections grow, other work on the machine
    // comes and goes) then weighs on both alike instead of always on the second one measured.
    for scoped_turn in [false, true, true, false] {
        let mut m = if scoped_turn {
            measure(
                args,
                &scoped,
                closed_loop_with_key(&scoped.base, SCOPED_KEY, 64, args.seconds, None),
            )
            .await
        } else {
            measure(
                args,
                &single,
                closed_loop_with_key(&single.base, "bench", 64, args.seconds, None),
            )
            .await
        };
        if scoped_turn {
            m.print("single POST, scoped of 1,000", "64");
            many.push(m);
        } else {
            m.print("single POST, one key", "64");
            one.push(m);
        }
    }
    drop((single, scoped));
    let _ = std::fs::remove_file(&path);
    let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
    for db in ["bench_keys_single", "bench_keys_scoped"] {
        client.database(db).drop().await?;
    }
    let rate = |ms: &[Measured]| {
        let events: u64 = ms.iter().map(|m| m.figures.events).sum();
        let secs: f64 = ms.iter().map(|m| m.figures.elapsed.as_secs_f64()).sum();
        events as f64 / secs.max(f64::EPSILON)
    };
    let (r1, rn) = (rate(&one), rate(&many));
    let change = 100.0 * (rn - r1) / r1.max(1.0);
    println!(
        "scoped key of a {KEY_FILE_ENTRIES}-entry key file vs one key at 64 producers: {rn:.0} vs {r1:.0} events/s, {change:+.1}% (target: at most 5% slower: {})",
        verdict(change > -5.0)
    );
    let cpu = |ms: &[Measured]| -> Option<f64> {
        let secs: f64 = ms.iter().map(|m| m.cpu.service).sum::<Option<f64>>()?;
        let events: u64 = ms.iter().map(|m| m.figures.events).sum();
        Some(secs * 1e6 / events.max(1) as f64)
    };
    if let (Some(c1), Some(cn)) = (cpu(&one), cpu(&many)) {
        println!("  service CPU per request: {cn:.1} us scoped vs {c1:.1} us one key");
    }
    Ok(())
}

/// The service's histograms of queue mode that the benchmark reads.
const VISIBILITY: &str = "auditlog_queue_visibility_seconds";
const CONFIRM: &str = "auditlog_queue_publish_confirm_seconds";

/// Queue mode's figures that the targets compare.
struct QueueFigures {
    at_64: Option<Measured>,
    /// Producer errors, and the outage's length in seconds.
    outage_errors: Option<(u64, u64)>,
}

/// The RabbitMQ that `--only <only>` needs.
fn amqp_url(args: &Args, only: &str) -> anyhow::Result<String> {
    args.amqp_url
        .clone()
        .with_context(|| format!("--only {only} needs BENCH_AMQP_URL"))
}

/// `--only pairs`: direct then queue mode at 64 producers, `BENCH_PAIRS` times, each on a
/// fresh service and database; the p99 ratio of each pair, then how many pairs met the goal
/// and the median ratio. One pair is one sample of a noisy machine; the series shows where
/// the ratio sits.
async fn queue_pairs(args: &Args, bin: &PathBuf, url: &str) -> anyhow::Result<()> {
    let queue_name = format!("bench.pairs.{}", std::process::id());
    let env = [
        ("AUDIT_INGEST_MODE", "queue"),
        ("AUDIT_AMQP_URL", url),
        ("AUDIT_AMQP_QUEUE", queue_name.as_str()),
    ];
    let mut ratios = vec![];
    for _ in 0..args.pairs {
        let mut p99 = [0.0; 2];
        for (i, (db, label, extra)) in [
            ("bench_pair_direct", "single POST, group commit", &[][..]),
            ("bench_pair_queue", "single POST, queue mode", &env[..]),
        ]
        .into_iter()
        .enumerate()
        {
            let service = start_service(args, bin, db, true, extra).await?;
            let mut m = measure(
                args,
                &service,
                closed_loop(&service.base, 64, args.seconds, None),
            )
            .await;
            m.print(label, "64");
            p99[i] = m.figures.percentile_ms(0.99);
            if i == 1 {
                wait_drained(&service, Duration::from_secs(300)).await;
            }
            drop(service);
            drop_database(args, db).await?;
        }
        let ratio = p99[1] / p99[0];
        println!("  queue p99 / direct p99: {ratio:.2}");
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let met = ratios.iter().filter(|r| **r <= 1.0).count();
    let median = match ratios.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    };
    println!();
    println!(
        "queue mode p99 no worse than direct at 64 producers: {met} of {} pairs; median ratio {median:.2}; all: {}",
        ratios.len(),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Queue mode: closed loops at `BENCH_QUEUE_PRODUCERS` with the publish-to-visibility time,
/// then the outage run.
async fn queue_mode(args: &Args, bin: &PathBuf, url: &str) -> anyhow::Result<QueueFigures> {
    let db = "bench_queue";
    let queue_name = format!("bench.events.{}", std::process::id());
    let env = [
        ("AUDIT_INGEST_MODE", "queue"),
        ("AUDIT_AMQP_URL", url),
        ("AUDIT_AMQP_QUEUE", queue_name.as_str()),
    ];
    let service = start_service(args, bin, db, true, &env).await?;
    let mut figures = QueueFigures {
        at_64: None,
        outage_errors: None,
    };
    for &p in &args.queue_producers {
        let m = queue_closed_loop(args, &service, p).await;
        if p == 64 {
            figures.at_64 = Some(m);
        }
    }
    if let Some(pid) = args.store_pid {
        let errors = store_outage(args, &service, pid, figures.at_64.as_ref()).await?;
        figures.outage_errors = Some((errors, args.outage_seconds));
    } else {
        println!("(queue-mode outage skipped: BENCH_STORE_PID is not set)");
    }
    drop(service);
    drop_database(args, db).await?;
    Ok(figures)
}

/// One closed loop of `p` producers in queue mode, then its events per RabbitMQ message,
/// RabbitMQ's CPU, the publish-confirm time and, once the queue is drained, the
/// publish-to-visibility time.
async fn queue_closed_loop(args: &Args, service: &Service, p: usize) -> Measured {
    let before = histogram_buckets(service, VISIBILITY).await;
    let confirms_before = histogram_buckets(service, CONFIRM).await;
    let broker_before = args.broker_pid.and_then(|p| cpu_seconds(Some(p)));
    let groups_before = service.published_groups().await;
    let mut m = measure(
        args,
        service,
        closed_loop(&service.base, p, args.seconds, None),
    )
    .await;
    m.print("single POST, queue mode", &p.to_string());
    print_events_per_message(service, p, groups_before).await;
    print_broker_cpu(args, p, broker_before, m.figures.events);
    let confirms = buckets_since(&histogram_buckets(service, CONFIRM).await, &confirms_before);
    print_quantiles(
        "  publish to confirm",
        &p.to_string(),
        &confirms,
        "RabbitMQ's publish confirm",
    );
    // What this load published is stored once the queue is drained.
    wait_drained(service, Duration::from_secs(300)).await;
    let after = histogram_buckets(service, VISIBILITY).await;
    let delta = buckets_since(&after, &before);
    let count = delta.last().map_or(0.0, |b| b.1);
    print_quantiles(
        "  publish to visibility",
        &p.to_string(),
        &delta,
        &format!("{count:.0} events"),
    );
    m
}

/// The events per RabbitMQ message since `before` (from [`Service::published_groups`]).
async fn print_events_per_message(service: &Service, p: usize, before: Option<(f64, f64)>) {
    if let (Some((e0, m0)), Some((e1, m1))) = (before, service.published_groups().await) {
        println!(
            "{:<30} {:>9} {:>10} {:>8} {:>8} {:>6}   {:.1} (RabbitMQ messages: {:.0})",
            "  events per message",
            p,
            "",
            "",
            "",
            "",
            (e1 - e0) / (m1 - m0).max(1.0),
            m1 - m0
        );
    }
}

/// RabbitMQ's CPU seconds per 1000 of `events` since `before` (when `BENCH_BROKER_PID` is set).
fn print_broker_cpu(args: &Args, p: usize, before: Option<f64>, events: u64) {
    let broker = args.broker_pid.and_then(|p| cpu_seconds(Some(p)));
    if let (Some(b0), Some(b1)) = (before, broker) {
        // The drain's share is in it too: it drains while producers publish.
        println!(
            "{:<30} {:>9} {:>10} {:>8} {:>8} {:>6}   RabbitMQ: {:.3}",
            "  RabbitMQ's CPU",
            p,
            "",
            "",
            "",
            "",
            (b1 - b0) * 1000.0 / events.max(1) as f64
        );
    }
}

/// The outage run: an open loop while the store (`pid`) is stopped for `BENCH_OUTAGE_SECONDS`,
/// then where its latencies were worst and when the drain caught up; returns the producer
/// errors.
async fn store_outage(
    args: &Args,
    service: &Service,
    pid: u32,
    at_64: Option<&Measured>,
) -> anyhow::Result<u64> {
    let control = tokio::spawn(stop_store(pid, Duration::from_secs(args.outage_seconds)));
    let rate = outage_rate(args, at_64);
    let confirms_before = histogram_buckets(service, CONFIRM).await;
    let mut m = measure(
        args,
        service,
        open_loop(&service.base, rate, args.outage_seconds + 10),
    )
    .await;
    let returned = control.await??;
    let confirms = buckets_since(&histogram_buckets(service, CONFIRM).await, &confirms_before);
    let by_start = m.figures.latencies_us.clone();
    m.print(
        &format!("queue, {} s outage, {rate:.0}/s", args.outage_seconds),
        "-",
    );
    print_quantiles(
        "  publish to confirm",
        "-",
        &confirms,
        "RabbitMQ's publish confirm",
    );
    print_worst_quarters(&by_start, rate, 50.0);
    wait_drained(service, Duration::from_secs(600)).await;
    println!(
        "  the drain caught up {:.1} s after the store returned",
        returned.elapsed().as_secs_f64()
    );
    Ok(m.figures.errors)
}

/// Stops the store (`pid`) once the outage's open loop is warm, for `outage`; returns when it
/// was let go again.
async fn stop_store(pid: u32, outage: Duration) -> anyhow::Result<Instant> {
    // SIGSTOP: the store keeps its connections open and answers nothing, like a hung
    // primary; SIGCONT brings it back with everything it had.
    tokio::time::sleep(OPEN_LOOP_WARM_UP + Duration::from_secs(5)).await;
    signal(pid, "STOP")?;
    tokio::time::sleep(outage).await;
    signal(pid, "CONT")?;
    Ok(Instant::now())
}

/// Events per second offered through the outage: `BENCH_OUTAGE_RATE`, or half the rate of
/// queue mode's 64-producer closed loop (`at_64`).
fn outage_rate(args: &Args, at_64: Option<&Measured>) -> f64 {
    // Half the peak, as the direct open loop: at the full closed-loop rate an open loop
    // runs with no headroom, and its queue grows on any hiccup, outage or not.
    args.outage_rate
        .unwrap_or_else(|| (at_64.map_or(10_000.0, |m| m.figures.rate()) / 2.0).round())
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// One of the service's histograms (`name` without `_bucket`): (upper bound, cumulative
/// count) per bucket, `+Inf` last.
async fn histogram_buckets(service: &Service, name: &str) -> Vec<(f64, f64)> {
    let Some(text) = service.metrics().await else {
        return vec![];
    };
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix("_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

/// The service's histogram of each `insert_many`'s time in the store.
const WRITE_DURATION: &str = "auditlog_write_duration_seconds";

/// What the store's writes took since `before` (buckets of [`WRITE_DURATION`]): p50/p99 and
/// the slowest bucket, to tell the store's share of a tail from the service's.
async fn print_store_writes(service: &Service, before: &[(f64, f64)]) {
    let after = histogram_buckets(service, WRITE_DURATION).await;
    let delta = buckets_since(&after, before);
    let writes = delta.last().map_or(0.0, |b| b.1);
    // The bound of the first bucket that holds every write: the slowest took at most that.
    let slowest = delta
        .iter()
        .find(|b| b.1 >= writes)
        .map_or(f64::NAN, |b| b.0 * 1000.0);
    let over_20ms = writes - delta.iter().find(|b| b.0 >= 0.02).map_or(writes, |b| b.1);
    print_quantiles(
        "  the store's insert_many",
        "-",
        &delta,
        &format!("{writes:.0} writes, {over_20ms:.0} over 20 ms, the slowest <= {slowest:.0} ms"),
    );
}

/// The header of the figures' table.
fn print_header() {
    println!(
        "{:<30} {:>9} {:>10} {:>8} {:>8} {:>6}   cpu s/1000 events",
        "scenario", "producers", "events/s", "p50 ms", "p99 ms", "errors"
    );
}

/// Drops a scratch database of the benchmark on the store.
async fn drop_database(args: &Args, name: &str) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
    client.database(name).drop().await?;
    Ok(())
}

/// One row of p50 and p99 (ms) from a histogram's buckets, in the table's columns.
fn print_quantiles(label: &str, producers: &str, buckets: &[(f64, f64)], what: &str) {
    println!(
        "{label:<30} {producers:>9} {:>10} {:>8.2} {:>8.2} {:>6}   ({what}, from the histogram's buckets)",
        "",
        bucket_quantile(buckets, 0.5) * 1000.0,
        bucket_quantile(buckets, 0.99) * 1000.0,
        "",
    );
}

/// `after` minus `before`, bucket by bucket.
fn buckets_since(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let n0 = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - n0)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does); NaN when empty.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return lower;
            }
            let inside = n - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return lower + (le - lower) * frac;
        }
        (lower, below) = (le, n);
    }
    lower
}

/// Waits until the service's queue holds no ready message and its drain is idle.
async fn wait_drained(service: &Service, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last_drained = -1.0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(text) = service.metrics().await else {
            continue;
        };
        let depth = metric(&text, "auditlog_queue_depth").unwrap_or(1.0);
        let drained: f64 = text
            .lines()
            .filter(|l| l.starts_with("auditlog_queue_drained_total{"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum();
        if depth == 0.0 && drained == last_drained {
            return;
        }
        last_drained = drained;
    }
}
