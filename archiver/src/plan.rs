//! What one pass reads: its scope, the windows to archive as runs — maximal stretches of
//! consecutive unrecorded windows — planned from the archive state alone, so that finding
//! what to archive costs no query of the events. Pure, unit-tested without I/O.
//!
//! `once` reads every unrecorded window that is due: the runs between recorded windows, from
//! the beginning of time (the first run is open towards the past) to the due cutoff. Windows
//! without events belong to the runs too — only reading the events tells which hold any — and
//! cost nothing: the stream passes them by and they are not recorded. `backfill` names its
//! windows instead ([`Scope::of_windows`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use crate::window::{Span, Window};

/// Runs above which `once` first narrows its scope to the oldest unarchived event (one query).
/// Each run is a clause of the stream's filter, and a server that scans (FerretDB) tests every
/// clause against every event it does not match; gaps between recorded windows (quiet hours)
/// accumulate in the state as the archive grows, while events older than the TTL are gone.
pub const MAX_RUNS: usize = 64;

/// The start of a run open towards the past: the earliest instant chrono represents. As a BSON
/// date it still bounds the filter to dates, as every other range does.
pub const OPEN_START: DateTime<Utc> = DateTime::<Utc>::MIN_UTC;
/// The end of a run open towards the future (`status` and the guard look past the cutoff).
pub const OPEN_END: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

/// Consecutive windows `[start, end)`, read as one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Span for Run {
    fn start(&self) -> DateTime<Utc> {
        self.start
    }
    fn end(&self) -> DateTime<Utc> {
        self.end
    }
}

/// The runs one pass reads, oldest first, disjoint, on window boundaries (but for an open
/// start or end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    runs: Vec<Run>,
    window_seconds: i64,
}

impl Scope {
    /// Every window of `window_seconds` not in `recorded` (window starts) that ends at or
    /// before `cutoff` (`None`: no end).
    pub fn unarchived(
        recorded: &BTreeSet<DateTime<Utc>>,
        cutoff: Option<DateTime<Utc>>,
        window_seconds: i64,
    ) -> Self {
        // The last due window ends at the window boundary at or before the cutoff.
        let last_end = cutoff.map_or(OPEN_END, |c| Window::containing(c, window_seconds).start);
        let mut runs = vec![];
        let mut from = OPEN_START;
        for &start in recorded.range(..last_end) {
            // Aligned, so runs stay on window boundaries even if a record is not.
            let w = Window::containing(start, window_seconds);
            if w.start > from {
                runs.push(Run {
                    start: from,
                    end: w.start,
                });
            }
            from = from.max(w.end);
        }
        if from < last_end {
            runs.push(Run {
                start: from,
                end: last_end,
            });
        }
        Scope {
            runs,
            window_seconds,
        }
    }

    /// The given windows (oldest first), consecutive ones merged into runs.
    pub fn of_windows(windows: &[Window], window_seconds: i64) -> Self {
        let mut runs: Vec<Run> = vec![];
        for w in windows {
            match runs.last_mut() {
                Some(last) if last.end == w.start => last.end = w.end,
                _ => runs.push(Run {
                    start: w.start,
                    end: w.end,
                }),
            }
        }
        Scope {
            runs,
            window_seconds,
        }
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Where the scope ends (`None` when empty).
    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.runs.last().map(|r| r.end)
    }

    /// The window an event created at `t` belongs to.
    pub fn window_of(&self, t: DateTime<Utc>) -> Window {
        Window::containing(t, self.window_seconds)
    }

    /// Whether the whole window lies in the scope.
    pub fn contains(&self, w: &Window) -> bool {
        self.runs
            .iter()
            .any(|r| r.start <= w.start && w.end <= r.end)
    }

    /// The part at or after `t`.
    pub fn from(&self, t: DateTime<Utc>) -> Self {
        self.clipped(|r| {
            (r.end > t).then(|| Run {
                start: r.start.max(t),
                end: r.end,
            })
        })
    }

    /// The part before `t`.
    pub fn before(&self, t: DateTime<Utc>) -> Self {
        self.clipped(|r| {
            (r.start < t).then(|| Run {
                start: r.start,
                end: r.end.min(t),
            })
        })
    }

    /// The scope in parts of at most `runs` runs each, oldest first.
    pub fn split(&self, runs: usize) -> Vec<Scope> {
        self.runs
            .chunks(runs.max(1))
            .map(|part| Scope {
                runs: part.to_vec(),
                window_seconds: self.window_seconds,
            })
            .collect()
    }

    fn clipped(&self, f: impl Fn(&Run) -> Option<Run>) -> Self {
        Scope {
            runs: self.runs.iter().filter_map(f).collect(),
            window_seconds: self.window_seconds,
        }
    }

    /// Windows of the scope in `[from, to)`, both window boundaries (for the progress bar;
    /// open ends count from `from` / up to `to`).
    pub fn windows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
        let len = Duration::seconds(self.window_seconds);
        self.runs
            .iter()
            .map(|r| {
                let (a, b) = (r.start.max(from), r.end.min(to));
                if a < b {
                    ((b - a).num_seconds() / len.num_seconds()).max(1) as u64
                } else {
                    0
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const H: i64 = 3600;

    #[test]
    fn without_records_one_run_open_to_the_past_ends_at_the_last_due_window() {
        let s = Scope::unarchived(&BTreeSet::new(), Some(t("2024-05-02T03:10:00Z")), H);
        assert_eq!(
            s.runs(),
            &[Run {
                start: OPEN_START,
                end: t("2024-05-02T03:00:00Z")
            }]
        );
        // A cutoff on a boundary: the window ending there is due.
        let s = Scope::unarchived(&BTreeSet::new(), Some(t("2024-05-02T03:00:00Z")), H);
        assert_eq!(s.end(), Some(t("2024-05-02T03:00:00Z")));
        let s = Scope::unarchived(&BTreeSet::new(), None, H);
        assert_eq!(s.end(), Some(OPEN_END));
    }

    #[test]
    fn recorded_windows_split_the_scope_into_runs() {
        let recorded: BTreeSet<_> = [
            t("2024-05-01T00:00:00Z"),
            t("2024-05-01T01:00:00Z"),
            t("2024-05-01T05:00:00Z"),
            t("2024-05-01T09:00:00Z"), // after the cutoff: ignored
        ]
        .into();
        let s = Scope::unarchived(&recorded, Some(t("2024-05-01T08:30:00Z")), H);
        assert_eq!(
            s.runs(),
            &[
                Run {
                    start: OPEN_START,
                    end: t("2024-05-01T00:00:00Z")
                },
                Run {
                    start: t("2024-05-01T02:00:00Z"),
                    end: t("2024-05-01T05:00:00Z")
                },
                Run {
                    start: t("2024-05-01T06:00:00Z"),
                    end: t("2024-05-01T08:00:00Z")
                },
            ]
        );
        assert!(s.contains(&Window::containing(t("2024-05-01T03:00:00Z"), H)));
        assert!(!s.contains(&Window::containing(t("2024-05-01T05:00:00Z"), H)));
        // Everything recorded up to the cutoff: only the open run before the first record.
        let s = Scope::unarchived(&recorded, Some(t("2024-05-01T02:00:00Z")), H);
        assert_eq!(s.runs().len(), 1);
        assert_eq!(s.end(), Some(t("2024-05-01T00:00:00Z")));
    }

    #[test]
    fn named_windows_merge_into_runs_and_scopes_clip() {
        let w = |s: &str| Window::containing(t(s), H);
        let s = Scope::of_windows(
            &[
                w("2024-05-01T01:00:00Z"),
                w("2024-05-01T02:00:00Z"),
                w("2024-05-01T04:00:00Z"),
            ],
            H,
        );
        assert_eq!(s.runs().len(), 2);
        assert_eq!(
            s.windows_between(OPEN_START, OPEN_END),
            3,
            "three windows in two runs"
        );
        let later = s.from(t("2024-05-01T02:00:00Z"));
        assert_eq!(later.runs()[0].start, t("2024-05-01T02:00:00Z"));
        assert_eq!(later.windows_between(OPEN_START, OPEN_END), 2);
        let earlier = s.before(t("2024-05-01T02:00:00Z"));
        assert_eq!(
            earlier.runs(),
            &[s.runs()[0].clone_with_end(t("2024-05-01T02:00:00Z"))]
        );
        assert!(s.from(t("2024-05-01T05:00:00Z")).is_empty());
        assert!(s.before(t("2024-05-01T01:00:00Z")).is_empty());
        // An open run counts its windows from where the events start.
        let open = Scope::unarchived(&BTreeSet::new(), Some(t("2024-05-01T05:00:00Z")), H);
        assert_eq!(open.windows_between(t("2024-05-01T01:00:00Z"), OPEN_END), 4);
    }

    impl Run {
        fn clone_with_end(self, end: DateTime<Utc>) -> Run {
            Run { end, ..self }
        }
    }
}
