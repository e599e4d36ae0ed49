//! `auditlog-bench-find-gen`: writes a large archive for `make bench-find-archive` without
//! pushing every event through MongoDB and the archiver (10 M events would take hours on a
//! small machine with FerretDB). It uses the archiver's own encoding — the same schema, writer
//! properties (row groups, dictionary, statistics, bloom filters) and file layout — and records
//! each hourly window in `archive_windows` the way the archiver does after a purge, so the
//! service sees exactly what it would see after `once` and `purge`.
//!
//! Events: spread evenly over `--days` days of hourly windows ending at `--end`; consumers drawn
//! from a Zipf-like distribution over `--consumers` names (`consumer-00000` is the busiest; the
//! share of rank r is about 1/r), types uniform over `--types` names, payloads of ~150 bytes of
//! JSON. Deterministic for a given seed. Prints a JSON summary on stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use auditlog_archiver::config::Compression;
use auditlog_archiver::encode::{self, BatchBuilder, Row};
use auditlog_archiver::state::{window_checksum, FileRecord, State, WindowRecord};
use auditlog_common::archive_layout;
use auditlog_common::settings::MongoSettings;
use auditlog_common::store::Store;
use chrono::{Duration, TimeZone, Utc};
use clap::Parser;
use mongodb::bson::{self, oid::ObjectId};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(name = "auditlog-bench-find-gen")]
struct Args {
    #[command(flatten)]
    mongo: MongoSettings,
    /// Archive root (a local directory): files go under `<root>/<db>/<collection>/dt=…/hour=…/`.
    #[arg(long)]
    out: PathBuf,
    /// Events in all.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 10_000_000)]
    events: u64,
    /// Days of hourly windows.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// End of the archived range (a UTC date); default: the start of today minus 40 days, so
    /// every window lies past a 30-day retention.
    #[arg(long)]
    end: Option<chrono::NaiveDate>,
    #[arg(long, default_value_t = 10_000)]
    consumers: u64,
    #[arg(long, default_value_t = 20)]
    types: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// xorshift64*: deterministic, fast, good enough to spread benchmark data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let end_date = args
        .end
        .unwrap_or_else(|| (Utc::now() - Duration::days(40)).date_naive());
    let end = Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0).context("midnight")?);
    let hours = args.days * 24;
    let start = end - Duration::hours(hours);
    let store = Store::connect(&args.mongo, "auditlog-bench-find-gen").await?;
    let state = State::new(&store);
    let base = args
        .out
        .join(&args.mongo.db_name)
        .join(&args.mongo.collection);
    let url = args.out.display().to_string();
    let per_hour = args.events / hours as u64;
    let extra = args.events % hours as u64;
    let mut rng = Rng(args.seed.max(1));
    let mut counter: u32 = 0;
    let (mut total_rows, mut total_bytes) = (0u64, 0u64);
    let zipf_span = ((args.consumers + 1) as f64).ln();

    for h in 0..hours {
        let w_start = start + Duration::hours(h);
        let rows_here = per_hour + u64::from((h as u64) < extra);
        if rows_here == 0 {
            continue;
        }
        // Sorted instants within the hour: the archiver writes in (created_at, id) order.
        let mut offsets: Vec<i64> = (0..rows_here)
            .map(|_| rng.below(3_600_000) as i64)
            .collect();
        offsets.sort_unstable();
        let partition = archive_layout::partition(w_start);
        let name = archive_layout::file_name(w_start, 0);
        let dir = base.join(&partition);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(&name);
        let meta = vec![
            KeyValue::new("auditlog.window_start".into(), w_start.to_rfc3339()),
            KeyValue::new(
                "auditlog.window_end".into(),
                (w_start + Duration::hours(1)).to_rfc3339(),
            ),
            KeyValue::new("auditlog.source".into(), store.namespace()),
            KeyValue::new(
                "auditlog.archiver_version".into(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        let props = encode::writer_properties(Compression::Snappy, 128 * 1024, meta)?;
        let file = std::fs::File::create(&path)?;
        let mut writer = ArrowWriter::try_new(file, encode::schema(), Some(props))?;
        let mut batch = BatchBuilder::new(4096);
        for off in offsets {
            let at_ms = w_start.timestamp_millis() + off;
            counter = counter.wrapping_add(1);
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&((at_ms / 1000) as u32).to_be_bytes());
            id[4..9].copy_from_slice(&[0x5e, 0xed, 0xbe, 0x9c, 0x01]);
            id[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
            let rank = ((rng.unit() * zipf_span).exp() as u64)
                .saturating_sub(1)
                .min(args.consumers - 1);
            let kind = rng.below(args.types);
            let n = rng.next();
            batch.push(&Row {
                id: ObjectId::from_bytes(id).to_hex(),
                created_at_ms: at_ms,
                r#type: format!("type-{kind:02}"),
                consumer: format!("consumer-{rank:05}"),
                payload: Some(format!(
                    r#"{{"request_id":"{:016x}","path":"/api/v1/orders/{}","status":{},"amount":{}.{:02},"ok":{},"tags":["a","b"]}}"#,
                    n,
                    n % 100_000,
                    [200, 201, 204, 400, 404, 500][(n % 6) as usize],
                    n % 10_000,
                    n % 100,
                    !n.is_multiple_of(7)
                )),
            });
            if batch.len() >= 4096 {
                writer.write(&batch.finish()?)?;
            }
        }
        if !batch.is_empty() {
            writer.write(&batch.finish()?)?;
        }
        writer.close()?;
        let bytes = std::fs::read(&path)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let files = vec![FileRecord {
            path: format!("{partition}/{name}"),
            rows: rows_here as i64,
            bytes: bytes.len() as i64,
            sha256: sha,
        }];
        let now = bson::DateTime::now();
        state
            .record(&WindowRecord {
                start: bson::DateTime::from_chrono(w_start),
                end: bson::DateTime::from_chrono(w_start + Duration::hours(1)),
                source: store.namespace(),
                archive_url: url.clone(),
                checksum: window_checksum(&files),
                files,
                rows: rows_here as i64,
                bytes: bytes.len() as i64,
                archived_at: now,
                archiver_version: env!("CARGO_PKG_VERSION").to_owned(),
                verified_at: None,
                purged_at: Some(now),
                purged_rows: Some(rows_here as i64),
            })
            .await?;
        total_rows += rows_here;
        total_bytes += bytes.len() as u64;
        if h % 24 == 23 {
            eprint!(".");
            std::io::stderr().flush().ok();
        }
    }
    eprintln!();
    let summary = serde_json::json!({
        "start": start.to_rfc3339(),
        "end": end.to_rfc3339(),
        "events": total_rows,
        "files": hours,
        "bytes": total_bytes,
        "archive": base.display().to_string(),
    });
    println!("{summary}");
    Ok(())
}
