//! The archive's layout, written by the archiver and read by the service's find: the Parquet
//! column names, the Hive-style hour partition `dt=YYYY-MM-DD/hour=HH` (formatted and parsed),
//! and the file names `part-<window start>-<nnnn>.parquet` (formatted and parsed). Paths here
//! are relative to `<db>/<collection>/` under the archive's root. Writer and reader keep in
//! step because there is one copy of it.

use chrono::{DateTime, NaiveDate, Utc};

/// The Parquet columns of an archive file.
pub mod columns {
    /// The event's `_id`, as 24 hexadecimal characters (or the producer's own id, as text).
    pub const ID: &str = "id";
    pub const TYPE: &str = "type";
    pub const CONSUMER: &str = "consumer";
    /// `TIMESTAMP(MILLIS, UTC)`.
    pub const CREATED_AT: &str = "created_at";
    /// The same instant as milliseconds (INT64), for readers without timestamp support.
    pub const CREATED_AT_MS: &str = "created_at_ms";
    /// The payload as canonical extended JSON text; absent when the event had none.
    pub const PAYLOAD: &str = "payload";
}

/// `dt=2024-05-01/hour=02` for the hour containing `t`.
pub fn partition(t: DateTime<Utc>) -> String {
    t.format("dt=%Y-%m-%d/hour=%H").to_string()
}

/// The hour a path's partition names: `dt=2024-05-01/hour=02/…` → 2024-05-01T02:00:00Z;
/// `None` for a path that does not start with a partition.
pub fn partition_hour(path: &str) -> Option<DateTime<Utc>> {
    let mut parts = path.split('/');
    let date = parts.next()?.strip_prefix("dt=")?;
    let hour: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(hour, 0, 0)?.and_utc())
}

/// `20240501T020000Z`: a window's id, from its start — sortable, file-name safe, unique.
pub fn window_id(start: DateTime<Utc>) -> String {
    start.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The prefix of every file of the window starting at `start`, published or temporary.
pub fn file_prefix(start: DateTime<Utc>) -> String {
    format!("part-{}-", window_id(start))
}

/// The name of the `n`-th file of the window starting at `start` (numbered across the
/// window's partitions, in the order they were written).
pub fn file_name(start: DateTime<Utc>, n: u32) -> String {
    format!("{}{n:04}.parquet", file_prefix(start))
}

/// The hidden name a file is written under before it is published by rename: the leading
/// `.` makes Hive, Spark, pyarrow and DuckDB's Hive reader skip it.
pub fn temp_name(start: DateTime<Utc>, n: u32) -> String {
    format!(".{}.inprogress", file_name(start, n))
}

/// `dt=…/hour=…/part-<window>-<nnnn>.parquet`: the `n`-th file of the window starting at
/// `start`, in the partition of `hour`.
pub fn file_path(hour: DateTime<Utc>, start: DateTime<Utc>, n: u32) -> String {
    format!("{}/{}", partition(hour), file_name(start, n))
}

/// The number of a file, from its path: `…/part-20240501T020000Z-0003.parquet` → 3.
pub fn file_seq(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    stem.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_path_formatted_here_parses_back_here() {
        let (hour, start) = (t("2024-05-01T02:00:00Z"), t("2024-05-01T00:00:00Z"));
        let path = file_path(hour, start, 3);
        assert_eq!(
            path,
            "dt=2024-05-01/hour=02/part-20240501T000000Z-0003.parquet"
        );
        assert_eq!(partition_hour(&path), Some(hour));
        assert_eq!(file_seq(&path), Some(3));
        assert_eq!(
            partition(t("2024-05-01T02:59:59Z")),
            "dt=2024-05-01/hour=02"
        );
        assert!(temp_name(start, 3).starts_with(".part-20240501T000000Z-0003"));
        assert!(file_name(start, 3).starts_with(&file_prefix(start)));
    }

    #[test]
    fn paths_of_another_layout_are_not_taken_for_ours() {
        assert_eq!(partition_hour("year=2024/x.parquet"), None);
        assert_eq!(partition_hour("dt=2024-05-01/hour=xx/x.parquet"), None);
        assert_eq!(file_seq("dt=2024-05-01/hour=02/data.parquet"), None);
        assert_eq!(file_seq("dt=2024-05-01/hour=02/part-x-0001.csv"), None);
    }
}
