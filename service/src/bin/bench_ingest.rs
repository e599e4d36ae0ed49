//! `auditlog-bench-ingest`: measures ingest on a given store and prints the figures.
//!
//! For group commit on and off it starts `auditlog-service` (the binary next to this one),
//! then drives single-event `POST /v1/event` from 1, 16, 64 and 256 concurrent producers
//! (closed loop: each producer sends its next event when the previous one is answered),
//! batch `POST /v1/events`, and an open-loop run at half the peak rate (latency measured from
//! each request's scheduled start, so queueing is not hidden). Finally it measures the same
//! store's direct `insert_many` rate (batches of 1000) from this Rust client, the ceiling.
//!
//! Run through `service/bench/run.sh`, which builds in release mode and starts a private
//! FerretDB.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mongodb::bson::{doc, Document};
use mongodb::options::WriteConcern;

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
    #[arg(long, env = "BENCH_BATCH_EVENTS", default_value_t = 100)]
    batch_events: usize,
    /// The service binary (default: `auditlog-service` next to this binary).
    #[arg(long, env = "BENCH_SERVICE_BIN")]
    service_bin: Option<PathBuf>,
    /// Write concern the service uses (`majority` or `1`).
    #[arg(long, env = "AUDIT_WRITE_CONCERN", default_value = "majority")]
    write_concern: String,
}

struct Figures {
    events: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
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

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_service(
    args: &Args,
    bin: &PathBuf,
    db: &str,
    group_commit: bool,
) -> anyhow::Result<Service> {
    let port = free_port()?;
    let child = Command::new(bin)
        .arg("run")
        .env("MONGODB_URI", &args.mongodb_uri)
        .env("AUDIT_DB_NAME", db)
        .env("AUDIT_API_KEY", "bench")
        .env("AUDIT_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("AUDIT_GROUP_COMMIT", group_commit.to_string())
        .env("AUDIT_WRITE_CONCERN", &args.write_concern)
        .env("AUDIT_QUEUE_CAPACITY", "100000")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let service = Service {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", service.base)).send().await {
            if r.status().is_success() {
                return Ok(service);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the service did not become ready")
}

fn event(producer: usize, n: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "bench",
        "consumer": format!("producer-{producer}"),
        "payload": {"n": n, "user": "someone@example.com", "action": "login", "ok": true}
    })
}

/// Closed loop: `producers` tasks, each posting its next request when the last is answered.
async fn closed_loop(base: &str, producers: usize, seconds: u64, batch: Option<usize>) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(producers)
        .build()
        .unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = vec![];
    for p in 0..producers {
        let (client, stop) = (client.clone(), stop.clone());
        let url = match batch {
            None => format!("{base}/v1/event"),
            Some(_) => format!("{base}/v1/events"),
        };
        tasks.push(tokio::spawn(async move {
            let (mut events, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = match batch {
                    None => event(p, n),
                    Some(k) => {
                        serde_json::Value::Array((0..k as u64).map(|i| event(p, n + i)).collect())
                    }
                };
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("X-Api-Key", "bench")
                    .json(&body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        status == 201 || status == 200
                    }
                    Err(_) => false,
                };
                lat.push(sent.elapsed().as_micros() as u64);
                let k = batch.unwrap_or(1) as u64;
                if ok {
                    events += k;
                } else {
                    errors += k;
                }
                n += k;
            }
            (events, errors, lat)
        }));
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

/// Open loop at a fixed rate: request i starts at `i / rate`; latency counts from then.
async fn open_loop(base: &str, rate: f64, seconds: u64) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap_or_default();
    let url = format!("{base}/v1/event");
    let started = Instant::now();
    let total = (rate * seconds as f64) as u64;
    let limit = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("X-Api-Key", "bench")
                .json(&event((i % 64) as usize, i))
                .send()
                .await;
            let ok = match r {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s == 201
                }
                Err(_) => false,
            };
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
    for t in tasks {
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

/// The store's own rate: `insert_many` of 1000 documents, `tasks` at a time.
async fn direct_insert_many(args: &Args, tasks: usize) -> anyhow::Result<f64> {
    let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
    let coll = client
        .database("bench_direct")
        .collection::<Document>("events");
    let wc = if args.write_concern == "1" {
        WriteConcern::nodes(1)
    } else {
        WriteConcern::majority()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = vec![];
    for t in 0..tasks {
        let (coll, stop, wc) = (coll.clone(), stop.clone(), wc.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let docs: Vec<Document> = (0..1000u64)
                    .map(|i| {
                        doc! {
                            "_id": mongodb::bson::oid::ObjectId::new(),
                            "type": "bench", "consumer": format!("producer-{t}"),
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
                    n += 1000;
                }
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap_or(0);
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    client.database("bench_direct").drop().await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.service_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("auditlog-service"),
    };
    println!(
        "auditlog ingest benchmark — store {}, write concern {}, {} s per figure",
        args.mongodb_uri, args.write_concern, args.seconds
    );
    println!();
    println!(
        "{:<28} {:>10} {:>12} {:>9} {:>9} {:>7}",
        "scenario", "producers", "events/s", "p50 ms", "p99 ms", "errors"
    );
    let mut peak_on = 0.0f64;
    let mut at_64 = [0.0f64; 2];
    for (i, group_commit) in [true, false].into_iter().enumerate() {
        let db = if group_commit {
            "bench_gc_on"
        } else {
            "bench_gc_off"
        };
        let service = start_service(&args, &bin, db, group_commit).await?;
        let label = if group_commit {
            "single POST, group commit"
        } else {
            "single POST, no group commit"
        };
        for &p in &args.producers {
            let mut f = closed_loop(&service.base, p, args.seconds, None).await;
            let (p50, p99) = (f.percentile_ms(0.50), f.percentile_ms(0.99));
            println!(
                "{label:<28} {p:>10} {:>12.0} {p50:>9.2} {p99:>9.2} {:>7}",
                f.rate(),
                f.errors
            );
            if p == 64 {
                at_64[i] = f.rate();
            }
            if group_commit {
                peak_on = peak_on.max(f.rate());
            }
        }
        if group_commit {
            for p in [4, 16] {
                let mut f =
                    closed_loop(&service.base, p, args.seconds, Some(args.batch_events)).await;
                let (p50, p99) = (f.percentile_ms(0.50), f.percentile_ms(0.99));
                println!(
                    "{:<28} {p:>10} {:>12.0} {p50:>9.2} {p99:>9.2} {:>7}",
                    format!("batch POST x{}", args.batch_events),
                    f.rate(),
                    f.errors
                );
            }
            let half = peak_on / 2.0;
            let mut f = open_loop(&service.base, half, args.seconds).await;
            let (p50, p99) = (f.percentile_ms(0.50), f.percentile_ms(0.99));
            println!(
                "{:<28} {:>10} {:>12.0} {p50:>9.2} {p99:>9.2} {:>7}",
                "open loop at half peak",
                "-",
                f.rate(),
                f.errors
            );
        }
        drop(service);
        let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
        client.database(db).drop().await?;
    }
    let mut ceiling = 0.0f64;
    for tasks in [1, 4] {
        let rate = direct_insert_many(&args, tasks).await?;
        println!(
            "{:<28} {tasks:>10} {rate:>12.0} {:>9} {:>9} {:>7}",
            "direct insert_many x1000", "-", "-", "-"
        );
        ceiling = ceiling.max(rate);
    }
    println!();
    println!(
        "64 producers: group commit {:.0}/s vs off {:.0}/s = {:.1}x (target >= 10x); {:.0}% of the insert_many ceiling {:.0}/s (target >= 70%)",
        at_64[0],
        at_64[1],
        at_64[0] / at_64[1].max(1.0),
        100.0 * at_64[0] / ceiling.max(1.0),
        ceiling
    );
    Ok(())
}
