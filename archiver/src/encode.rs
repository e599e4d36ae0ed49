//! Event documents → Arrow record batches, and the Parquet schema and writer properties of
//! the design in docs/archiver.md:
//!
//! | column         | Parquet type                                   | notes                      |
//! |----------------|------------------------------------------------|----------------------------|
//! | `id`           | BYTE_ARRAY (UTF8)                              | ObjectId as 24 hex digits  |
//! | `type`         | BYTE_ARRAY (UTF8), dictionary-encoded          |                            |
//! | `consumer`     | BYTE_ARRAY (UTF8), dictionary-encoded          |                            |
//! | `created_at`   | INT64 TIMESTAMP(MILLIS, isAdjustedToUTC=true)  | Spark, Trino, Hive 4       |
//! | `created_at_ms`| INT64                                          | the same instant as epoch ms, for Hive 3 (which cannot read INT64 timestamps) |
//! | `payload`      | BYTE_ARRAY (UTF8), nullable                    | relaxed Extended JSON      |
//!
//! `payload` is JSON text because Hive cannot read Parquet VARIANT yet; numbers stay numbers
//! (`1` vs `1.0` is preserved), nested objects and arrays are kept as they are.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use auditlog_common::schema::fields;
use mongodb::bson::{Bson, RawDocument};
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::config::Compression;
use crate::error::{ArchiveError, Result};

pub use auditlog_common::archive_layout::columns::{
    CONSUMER as COL_CONSUMER, CREATED_AT as COL_CREATED_AT, CREATED_AT_MS as COL_CREATED_AT_MS,
    ID as COL_ID, PAYLOAD as COL_PAYLOAD, TYPE as COL_TYPE,
};

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COL_ID, DataType::Utf8, false),
        Field::new(COL_TYPE, DataType::Utf8, false),
        Field::new(COL_CONSUMER, DataType::Utf8, false),
        Field::new(
            COL_CREATED_AT,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(COL_CREATED_AT_MS, DataType::Int64, false),
        Field::new(COL_PAYLOAD, DataType::Utf8, true),
    ]))
}

/// Earliest and latest `created_at` of a batch of [`schema`], epoch milliseconds.
pub fn created_at_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let col = batch
        .column_by_name(COL_CREATED_AT_MS)?
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()?;
    Some((arrow::compute::min(col)?, arrow::compute::max(col)?))
}

/// False-positive rate of the bloom filters on `consumer` and `type`: a reader looking for a
/// value a row group lacks skips it 99 times in 100. The filters are sized for a row group's
/// rows and folded down to the values actually present when the row group is written, so
/// the few distinct names of a row group cost a few hundred bytes.
pub const BLOOM_FILTER_FPP: f64 = 0.01;

/// Target size of a data page before compression.
pub const DATA_PAGE_BYTES: usize = 32 * 1024;
/// Rows handed to a column writer at a time: a page's size is checked after each such batch,
/// so ~256 rows of ~120 bytes keep pages near [`DATA_PAGE_BYTES`].
const WRITE_BATCH_ROWS: usize = 256;

/// Writer properties: compression, row-group size, dictionary only where values repeat, bloom
/// filters on the two columns readers look up by equality (`consumer`, `type`: the service's
/// `find` skips row groups without the value, without reading their data pages), small data
/// pages, and file metadata saying which window of which source this is.
///
/// Data pages of about [`DATA_PAGE_BYTES`]: a find for one consumer matches a few rows per row
/// group, and every page holding one of them is read and decompressed whole; with the default
/// 1 MiB pages that was the whole `payload` column chunk for ~15 rows of ~14,000. The offset
/// index (always written) lets a reader fetch and decompress only the pages it needs.
pub fn writer_properties(
    compression: Compression,
    row_group_rows: usize,
    metadata: Vec<KeyValue>,
) -> Result<WriterProperties> {
    let codec = match compression {
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(3)?),
    };
    Ok(WriterProperties::builder()
        // Version 1 data pages: the widest reader support (older Hive and Impala).
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(codec)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_write_batch_size(WRITE_BATCH_ROWS)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(COL_TYPE), true)
        .set_column_dictionary_enabled(ColumnPath::from(COL_CONSUMER), true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(COL_PAYLOAD), EnabledStatistics::None)
        .set_column_bloom_filter_enabled(ColumnPath::from(COL_CONSUMER), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(COL_CONSUMER), BLOOM_FILTER_FPP)
        .set_column_bloom_filter_enabled(ColumnPath::from(COL_TYPE), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(COL_TYPE), BLOOM_FILTER_FPP)
        .set_key_value_metadata(Some(metadata))
        .set_created_by(format!("auditlog-archiver {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// One decoded event row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub created_at_ms: i64,
    pub r#type: String,
    pub consumer: String,
    pub payload: Option<String>,
}

/// Decodes one stored event. Missing or mistyped required fields are an error naming the
/// event, never a silently different row.
pub fn decode(raw: &RawDocument) -> Result<Row> {
    let id_value = raw
        .get(fields::ID)
        .map_err(|e| bad("?", &e.to_string()))?
        .ok_or_else(|| bad("?", "no _id"))?;
    let id = match id_value.as_object_id() {
        Some(oid) => oid.to_hex(),
        None => match id_value.as_str() {
            Some(s) => s.to_owned(),
            None => Bson::try_from(id_value)
                .map(|b| b.into_relaxed_extjson().to_string())
                .map_err(|e| bad("?", &e.to_string()))?,
        },
    };
    let str_field = |name: &str| -> Result<String> {
        raw.get_str(name)
            .map(str::to_owned)
            .map_err(|e| bad(&id, &format!("`{name}`: {e}")))
    };
    let created_at_ms = raw
        .get_datetime(fields::CREATED_AT)
        .map_err(|e| bad(&id, &format!("`created_at`: {e}")))?
        .timestamp_millis();
    let payload = match raw
        .get(fields::PAYLOAD)
        .map_err(|e| bad(&id, &e.to_string()))?
    {
        None => None,
        Some(v) if v.as_null().is_some() => None,
        Some(v) => {
            let bson = Bson::try_from(v).map_err(|e| bad(&id, &format!("`payload`: {e}")))?;
            Some(payload_json(bson))
        }
    };
    Ok(Row {
        r#type: str_field(fields::TYPE)?,
        consumer: str_field(fields::CONSUMER)?,
        id,
        created_at_ms,
        payload,
    })
}

/// The JSON text stored in `payload`: relaxed Extended JSON, which is plain JSON for
/// everything the HTTP API accepts.
fn payload_json(payload: Bson) -> String {
    payload.into_relaxed_extjson().to_string()
}

fn bad(id: &str, reason: &str) -> ArchiveError {
    ArchiveError::BadEvent {
        id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

/// When an Arrow record batch is cut: at `rows` rows or once its rows hold `bytes` bytes,
/// whichever comes first. Rows alone do not bound memory — 4096 events of 256 KiB are 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl BatchLimits {
    /// Whether a batch of `rows` rows holding `bytes` bytes is to be cut now.
    pub fn reached(&self, rows: usize, bytes: usize) -> bool {
        rows >= self.rows || bytes >= self.bytes
    }
}

/// Bytes one row adds to a batch: its strings plus the two 8-byte timestamps and the 4-byte
/// offsets of the four string columns. (Arrow's builders round capacities up, so this is a
/// slight underestimate of the allocation, never of the data.)
pub fn row_bytes(row: &Row) -> usize {
    row.id.len()
        + row.r#type.len()
        + row.consumer.len()
        + row.payload.as_deref().map_or(0, str::len)
        + 2 * 8
        + 4 * 4
}

/// Accumulates rows into one Arrow record batch.
pub struct BatchBuilder {
    id: StringBuilder,
    r#type: StringBuilder,
    consumer: StringBuilder,
    created_at: TimestampMillisecondBuilder,
    created_at_ms: Int64Builder,
    payload: StringBuilder,
    rows: usize,
    bytes: usize,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> Self {
        Self {
            id: StringBuilder::with_capacity(capacity, capacity * 24),
            r#type: StringBuilder::with_capacity(capacity, capacity * 16),
            consumer: StringBuilder::with_capacity(capacity, capacity * 16),
            created_at: TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            created_at_ms: Int64Builder::with_capacity(capacity),
            payload: StringBuilder::with_capacity(capacity, capacity * 64),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn push(&mut self, row: &Row) {
        self.id.append_value(&row.id);
        self.r#type.append_value(&row.r#type);
        self.consumer.append_value(&row.consumer);
        self.created_at.append_value(row.created_at_ms);
        self.created_at_ms.append_value(row.created_at_ms);
        self.payload.append_option(row.payload.as_deref());
        self.rows += 1;
        self.bytes += row_bytes(row);
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// The rows' bytes so far (see [`row_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the batch is to be cut now.
    pub fn is_full(&self, limits: BatchLimits) -> bool {
        limits.reached(self.rows, self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Drops the rows so far.
    pub fn clear(&mut self) {
        if !self.is_empty() {
            // The builders have no reset of their own; finishing empties them.
            let _ = self.finish();
        }
    }

    /// The batch so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        self.bytes = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.r#type.finish()),
            Arc::new(self.consumer.finish()),
            Arc::new(self.created_at.finish()),
            Arc::new(self.created_at_ms.finish()),
            Arc::new(self.payload.finish()),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, DateTime, RawDocumentBuf};

    #[test]
    fn decodes_every_field_and_keeps_number_kinds() {
        let oid = ObjectId::new();
        let d = doc! {
            "_id": oid, "type": "login", "consumer": "café ☕",
            "created_at": DateTime::from_millis(1_714_528_800_000),
            "payload": { "i": 1, "big": 9_007_199_254_740_993_i64, "f": 1.0, "n": Bson::Null,
                          "a": [1, "x", { "k": true }], "s": "\u{1F600}\"\\" },
        };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        let row = decode(&raw).unwrap();
        assert_eq!(row.id, oid.to_hex());
        assert_eq!(row.consumer, "café ☕");
        assert_eq!(row.created_at_ms, 1_714_528_800_000);
        let p: serde_json::Value = serde_json::from_str(row.payload.as_deref().unwrap()).unwrap();
        assert_eq!(p["i"], serde_json::json!(1));
        assert_eq!(p["big"], serde_json::json!(9_007_199_254_740_993_i64));
        assert!(p["f"].is_f64());
        assert_eq!(p["a"][2]["k"], serde_json::json!(true));
        assert_eq!(p["s"], serde_json::json!("\u{1F600}\"\\"));
    }

    #[test]
    fn missing_payload_is_null_and_missing_type_is_an_error() {
        let d = doc! { "_id": ObjectId::new(), "type": "t", "consumer": "c",
        "created_at": DateTime::from_millis(0) };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        assert_eq!(decode(&raw).unwrap().payload, None);
        let d = doc! { "_id": ObjectId::new(), "consumer": "c", "created_at": DateTime::from_millis(0) };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        assert!(matches!(decode(&raw), Err(ArchiveError::BadEvent { .. })));
    }

    #[test]
    fn consumer_and_type_have_bloom_filters_that_rule_out_absent_values() {
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::ReaderProperties;
        use parquet::file::reader::FileReader;
        use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

        let props = writer_properties(Compression::Snappy, 1000, vec![]).unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema(), Some(props)).unwrap();
        let mut b = BatchBuilder::new(3000);
        for i in 0..3000 {
            b.push(&Row {
                id: format!("{i:024x}"),
                created_at_ms: i,
                r#type: format!("type-{}", i % 3),
                consumer: format!("consumer-{}", (i / 1000) * 10 + i % 5),
                payload: None,
            });
        }
        w.write(&b.finish().unwrap()).unwrap();
        w.close().unwrap();

        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let file =
            SerializedFileReader::new_with_options(bytes::Bytes::from(buf), options).unwrap();
        assert_eq!(file.num_row_groups(), 3);
        let columns = file.metadata().file_metadata().schema_descr_ptr();
        let index = |name: &str| {
            columns
                .columns()
                .iter()
                .position(|c| c.name() == name)
                .unwrap()
        };
        for rg in 0..3 {
            let reader = file.get_row_group(rg).unwrap();
            let consumer = reader.get_column_bloom_filter(index(COL_CONSUMER)).unwrap();
            let kind = reader.get_column_bloom_filter(index(COL_TYPE)).unwrap();
            // Row group rg holds consumers rg*10 .. rg*10+4 and every type.
            for c in 0..5 {
                assert!(consumer.check(format!("consumer-{}", rg * 10 + c).as_str()));
            }
            let other = (rg + 1) % 3;
            assert!(!consumer.check(format!("consumer-{}", other * 10).as_str()));
            assert!(kind.check("type-2"));
            assert!(!kind.check("type-9"));
            assert!(reader.get_column_bloom_filter(index(COL_PAYLOAD)).is_none());
        }
    }

    #[test]
    fn batches_have_the_documented_schema() {
        let mut b = BatchBuilder::new(2);
        b.push(&Row {
            id: "a".into(),
            created_at_ms: 5,
            r#type: "t".into(),
            consumer: "c".into(),
            payload: None,
        });
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), schema());
        assert!(b.is_empty());
    }

    #[test]
    fn batches_are_cut_by_rows_or_by_bytes_whichever_comes_first() {
        let row = |payload_len: usize| Row {
            id: "0123456789abcdef01234567".into(),
            created_at_ms: 0,
            r#type: "t".into(),
            consumer: "c".into(),
            payload: Some("x".repeat(payload_len)),
        };
        let limits = BatchLimits {
            rows: 4096,
            bytes: 1024 * 1024,
        };
        // Small events: the row bound cuts.
        let mut b = BatchBuilder::new(16);
        let mut cut_at = None;
        for i in 1..=5000 {
            b.push(&row(10));
            if b.is_full(limits) {
                cut_at = Some(i);
                break;
            }
        }
        assert_eq!(cut_at, Some(4096));
        // 256 KiB events: the byte bound cuts at the 4th, long before 4096 rows (1 GiB).
        let mut b = BatchBuilder::new(16);
        let mut cut_at = None;
        for i in 1..=4096 {
            b.push(&row(256 * 1024));
            if b.is_full(limits) {
                cut_at = Some(i);
                break;
            }
        }
        assert_eq!(cut_at, Some(4));
        assert!(
            b.bytes() >= 1024 * 1024 && b.bytes() < 1024 * 1024 + 2 * row_bytes(&row(256 * 1024))
        );
        // A single event larger than the bound still makes a batch (of one).
        let mut b = BatchBuilder::new(1);
        b.push(&row(2 * 1024 * 1024));
        assert!(b.is_full(limits));
        assert_eq!(b.finish().unwrap().num_rows(), 1);
        assert_eq!((b.len(), b.bytes()), (0, 0));
    }
}
