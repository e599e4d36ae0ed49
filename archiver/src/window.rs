//! UTC-aligned archive windows `[start, end)`, when a window is due, and where its files go
//! (Hive-style `dt=YYYY-MM-DD/hour=HH` partitions, deterministic file names). Pure functions
//! only, so every rule here is unit-tested without I/O.

use auditlog_common::archive_layout;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};

use crate::error::ArchiveError;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Window lengths must tile days and hours exactly, so that windows never straddle a partition
/// boundary in a way that two windows write the same partition ambiguously.
pub fn validate_window(seconds: i64) -> Result<(), ArchiveError> {
    let ok = seconds > 0
        && DAY % seconds == 0
        && (HOUR % seconds == 0 || seconds % HOUR == 0)
        && seconds % 60 == 0;
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::Config(format!(
            "AUDIT_ARCHIVE_WINDOW of {seconds}s must be whole minutes, divide a day, and divide or \
             be a multiple of an hour (e.g. 15m, 1h, 6h, 1d)"
        )))
    }
}

/// A half-open time range `[start, end)`: a window, or a run of consecutive windows
/// ([`crate::plan::Run`]). Queries are built from spans, so one filter serves both.
pub trait Span {
    fn start(&self) -> DateTime<Utc>;
    fn end(&self) -> DateTime<Utc>;
}

/// One archive window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window of `length_seconds` that contains `t`.
    pub fn containing(t: DateTime<Utc>, length_seconds: i64) -> Self {
        let secs = t.timestamp();
        let start = secs - secs.rem_euclid(length_seconds);
        Self::starting_at(start, length_seconds)
    }

    fn starting_at(start_secs: i64, length_seconds: i64) -> Self {
        let start = Utc
            .timestamp_opt(start_secs, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Window {
            start,
            end: start + Duration::seconds(length_seconds),
        }
    }

    /// The next window of the same length.
    pub fn next(&self) -> Self {
        Window {
            start: self.end,
            end: self.end + (self.end - self.start),
        }
    }

    /// `20240501T020000Z`: sortable, file-name safe, unique per window start.
    pub fn id(&self) -> String {
        archive_layout::window_id(self.start)
    }

    /// Due when it ends at or before `cutoff` (see [`due_cutoff`]).
    pub fn is_due(&self, cutoff: DateTime<Utc>) -> bool {
        self.end <= cutoff
    }

    /// The start of every hour that overlaps the window.
    pub fn hours(&self) -> Vec<DateTime<Utc>> {
        let mut hours = vec![];
        let mut h = hour_of(self.start);
        while h < self.end {
            hours.push(h);
            h += Duration::seconds(HOUR);
        }
        hours
    }

    /// The file name of this window's `n`-th file (numbered across the window's partitions).
    pub fn file_name(&self, n: u32) -> String {
        archive_layout::file_name(self.start, n)
    }

    /// Prefix every file of this window starts with, published or temporary.
    pub fn file_prefix(&self) -> String {
        archive_layout::file_prefix(self.start)
    }

    /// Hidden name the file is written under before it is published by rename: the leading
    /// `.` makes Hive, Spark, pyarrow and DuckDB's Hive reader skip it.
    pub fn temp_name(&self, n: u32) -> String {
        archive_layout::temp_name(self.start, n)
    }
}

impl Span for Window {
    fn start(&self) -> DateTime<Utc> {
        self.start
    }
    fn end(&self) -> DateTime<Utc> {
        self.end
    }
}

/// The hour containing `t`.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// `dt=YYYY-MM-DD/hour=HH` for the hour containing `t`.
pub fn partition_of(t: DateTime<Utc>) -> String {
    archive_layout::partition(t)
}

/// All windows of `length_seconds` overlapping `[from, to)`.
pub fn windows_covering(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    length_seconds: i64,
) -> Vec<Window> {
    let mut out = vec![];
    let mut w = Window::containing(from, length_seconds);
    while w.start < to {
        out.push(w);
        w = w.next();
    }
    out
}

/// The windows sharing the partition of `hour` (one window when windows are ≥ 1 h).
pub fn windows_in_hour(hour: DateTime<Utc>, length_seconds: i64) -> Vec<Window> {
    if length_seconds >= HOUR {
        return vec![Window::containing(hour, length_seconds)];
    }
    windows_covering(hour, hour + Duration::seconds(HOUR), length_seconds)
}

/// The due rule, the one every command uses: a window is due when `end + grace ≤ now −
/// archive_after`, i.e. when it ends at or before this instant ([`Window::is_due`]).
pub fn due_cutoff(now: DateTime<Utc>, after: Duration, grace: Duration) -> DateTime<Utc> {
    now - after - grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_are_utc_aligned_and_half_open() {
        let w = Window::containing(t("2024-05-01T02:59:59.999Z"), 3600);
        assert_eq!(w.start, t("2024-05-01T02:00:00Z"));
        assert_eq!(w.end, t("2024-05-01T03:00:00Z"));
        // An event exactly on a boundary belongs to the window that starts there.
        let w = Window::containing(t("2024-05-01T03:00:00Z"), 3600);
        assert_eq!(w.start, t("2024-05-01T03:00:00Z"));
        assert_eq!(w.id(), "20240501T030000Z");
        // Before 1970 still aligns downward.
        let w = Window::containing(t("1969-12-31T23:30:00Z"), 3600);
        assert_eq!(w.start, t("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn due_means_end_plus_grace_before_now_minus_age() {
        let w = Window::containing(t("2024-05-01T02:00:00Z"), 3600);
        let after = Duration::hours(24);
        let grace = Duration::minutes(10);
        assert!(!w.is_due(due_cutoff(t("2024-05-02T03:09:59Z"), after, grace)));
        assert!(w.is_due(due_cutoff(t("2024-05-02T03:10:00Z"), after, grace)));
        // The window ending exactly at the cutoff is due; the next one is not.
        let cutoff = due_cutoff(t("2024-05-02T03:10:00Z"), after, grace);
        assert_eq!(cutoff, w.end);
        assert!(!w.next().is_due(cutoff));
    }

    #[test]
    fn names_are_deterministic_and_temporaries_hidden() {
        let w = Window::containing(t("2024-05-01T02:00:00Z"), 3600);
        assert_eq!(w.file_name(0), "part-20240501T020000Z-0000.parquet");
        assert!(w.temp_name(0).starts_with('.'));
        assert!(w.temp_name(0).contains(&w.file_prefix()));
        assert_eq!(partition_of(w.start), "dt=2024-05-01/hour=02");
    }

    #[test]
    fn window_lengths_must_tile_hours_and_days() {
        for ok in [60, 900, 3600, 7200, 21_600, 86_400] {
            validate_window(ok).unwrap();
        }
        for bad in [0, 7, 420, 5400, 25_200, 172_800] {
            assert!(validate_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hours_and_sub_hour_windows() {
        let day = Window::containing(t("2024-05-01T10:00:00Z"), 86_400);
        assert_eq!(day.hours().len(), 24);
        let quarter = Window::containing(t("2024-05-01T10:20:00Z"), 900);
        assert_eq!(quarter.hours(), vec![t("2024-05-01T10:00:00Z")]);
        assert_eq!(windows_in_hour(t("2024-05-01T10:00:00Z"), 900).len(), 4);
        assert_eq!(
            windows_covering(t("2024-05-01T10:30:00Z"), t("2024-05-01T12:00:00Z"), 3600).len(),
            2
        );
    }
}
