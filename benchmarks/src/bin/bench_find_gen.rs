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
use std::path::{Path, PathBuf};

use anyhow::Context;
use auditlog_archiver::config::Compression;
use auditlog_archiver::encode::{self, BatchBuilder, Row};
use auditlog_archiver::state::{window_checksum, FileRecord, State, WindowRecord};
use auditlog_common::archive_layout;
use auditlog_common::settings::MongoSettings;
use auditlog_common::store::Store;
use chrono::{DateTime, Duration, TimeZone, Utc};
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

/// Draws the events in the order the seed fixes: each window's instants first, then per
/// event its consumer, type and payload.
struct Events {
    rng: Rng,
    /// The low bytes of each id, counting across windows so that no two ids are equal.
    counter: u32,
    consumers: u64,
    types: u64,
    /// ln(consumers + 1): `exp` of a uniform draw over it, minus 1, is the Zipf-like rank.
    zipf_span: f64,
}

impl Events {
    /// The generator for `args`' seed, consumers and types.
    fn new(args: &Args) -> Events {
        Events {
            rng: Rng(args.seed.max(1)),
            counter: 0,
            consumers: args.consumers,
            types: args.types,
            zipf_span: ((args.consumers + 1) as f64).ln(),
        }
    }

    /// `rows` instants within an hour, in milliseconds from its start, sorted: the archiver
    /// writes in (created_at, id) order.
    fn offsets(&mut self, rows: u64) -> Vec<i64> {
        let mut offsets: Vec<i64> = (0..rows)
            .map(|_| self.rng.below(3_600_000) as i64)
            .collect();
        offsets.sort_unstable();
        offsets
    }

    /// The next event, created at `at_ms` (milliseconds since the epoch).
    fn row(&mut self, at_ms: i64) -> Row {
        self.counter = self.counter.wrapping_add(1);
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&((at_ms / 1000) as u32).to_be_bytes());
        id[4..9].copy_from_slice(&[0x5e, 0xed, 0xbe, 0x9c, 0x01]);
        id[9..].copy_from_slice(&self.counter.to_be_bytes()[1..]);
        let rank = ((self.rng.unit() * self.zipf_span).exp() as u64)
            .saturating_sub(1)
            .min(self.consumers - 1);
        let kind = self.rng.below(self.types);
        let n = self.rng.next();
        Row {
            id: ObjectId::from_bytes(id).to_hex(),
            created_at_ms: at_ms,
            r#type: format!("type-{kind:02}"),
            consumer: format!("consumer-{rank:05}"),
            payload: Some(payload(n)),
        }
    }
}

/// An event's payload of ~150 bytes of JSON, its values drawn from `n`.
fn payload(n: u64) -> String {
    format!(
        r#"{{"request_id":"{:016x}","path":"/api/v1/orders/{}","status":{},"amount":{}.{:02},"ok":{},"tags":["a","b"]}}"#,
        n,
        n % 100_000,
        [200, 201, 204, 400, 404, 500][(n % 6) as usize],
        n % 10_000,
        n % 100,
        !n.is_multiple_of(7)
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (start, end) = archived_range(&args)?;
    let hours = args.days * 24;
    let store = Store::connect(&args.mongo, "auditlog-bench-find-gen").await?;
    let state = State::new(&store);
    let base = args
        .out
        .join(&args.mongo.db_name)
        .join(&args.mongo.collection);
    let url = args.out.display().to_string();
    let per_hour = args.events / hours as u64;
    let extra = args.events % hours as u64;
    let source = store.namespace();
    let mut events = Events::new(&args);
    let (mut total_rows, mut total_bytes) = (0u64, 0u64);

    for h in 0..hours {
        let w_start = start + Duration::hours(h);
        let rows_here = per_hour + u64::from((h as u64) < extra);
        if rows_here == 0 {
            continue;
        }
        let file = write_window(&base, &source, &mut events, w_start, rows_here)?;
        let bytes = file.bytes as u64;
        record_window(&state, &source, &url, w_start, file).await?;
        total_rows += rows_here;
        total_bytes += bytes;
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

/// The start and end of the archived range: `--days` days ending at `--end`'s midnight (UTC).
fn archived_range(args: &Args) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let end_date = args
        .end
        .unwrap_or_else(|| (Utc::now() - Duration::days(40)).date_naive());
    let end = Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0).context("midnight")?);
    Ok((end - Duration::hours(args.days * 24), end))
}

/// Writes the window's Parquet file of `rows` events under `base` as the archiver lays it out,
/// and returns its record.
fn write_window(
    base: &Path,
    source: &str,
    events: &mut Events,
    w_start: DateTime<Utc>,
    rows: u64,
) -> anyhow::Result<FileRecord> {
    let offsets = events.offsets(rows);
    let partition = archive_layout::partition(w_start);
    let name = archive_layout::file_name(w_start, 0);
    let dir = base.join(&partition);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(&name);
    let props = encode::writer_properties(
        Compression::Snappy,
        128 * 1024,
        file_metadata(w_start, source),
    )?;
    let file = std::fs::File::create(&path)?;
    let mut writer = ArrowWriter::try_new(file, encode::schema(), Some(props))?;
    let mut batch = BatchBuilder::new(4096);
    for off in offsets {
        batch.push(&events.row(w_start.timestamp_millis() + off));
        if batch.len() >= 4096 {
            writer.write(&batch.finish()?)?;
        }
    }
    if !batch.is_empty() {
        writer.write(&batch.finish()?)?;
    }
    writer.close()?;
    let bytes = std::fs::read(&path)?;
    Ok(FileRecord {
        path: format!("{partition}/{name}"),
        rows: rows as i64,
        bytes: bytes.len() as i64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        // Only digests read these, and the generated archive is not signed.
        min_created_at: None,
        max_created_at: None,
    })
}

/// The key-value metadata the archiver writes into the file of the window from `w_start`.
fn file_metadata(w_start: DateTime<Utc>, source: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("auditlog.window_start".into(), w_start.to_rfc3339()),
        KeyValue::new(
            "auditlog.window_end".into(),
            (w_start + Duration::hours(1)).to_rfc3339(),
        ),
        KeyValue::new("auditlog.source".into(), source.to_owned()),
        KeyValue::new(
            "auditlog.archiver_version".into(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]
}

/// Records the window from `w_start` with its one file in `archive_windows`, archived and
/// purged at once, as the archiver leaves it after a purge.
async fn record_window(
    state: &State,
    source: &str,
    url: &str,
    w_start: DateTime<Utc>,
    file: FileRecord,
) -> anyhow::Result<()> {
    let (rows, bytes) = (file.rows, file.bytes);
    let files = vec![file];
    let now = bson::DateTime::now();
    state
        .record(&WindowRecord {
            start: bson::DateTime::from_chrono(w_start),
            end: bson::DateTime::from_chrono(w_start + Duration::hours(1)),
            source: source.to_owned(),
            archive_url: url.to_owned(),
            checksum: window_checksum(&files),
            files,
            rows,
            bytes,
            archived_at: now,
            archiver_version: env!("CARGO_PKG_VERSION").to_owned(),
            verified_at: None,
            purged_at: Some(now),
            purged_rows: Some(rows),
            digest_sequence: None,
        })
        .await?;
    Ok(())
}
