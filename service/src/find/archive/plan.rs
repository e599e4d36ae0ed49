//! The query plan of a find: which parts of its time range are read from the Parquet archive
//! and which from MongoDB. Pure — no I/O — so the seam rule and the pruning are unit-tested.
//!
//! # The seam rule
//!
//! A window the archiver recorded in `archive_windows` is read **from the archive** when
//! - it was purged (`purged_at` is set: `auditlog-archiver purge` deleted its events), or
//! - its start lies before the *horizon*, `now − expire + margin`,
//!
//! and everything else — unrecorded windows, and recorded ones after the horizon — is read
//! **from MongoDB**. `expire` is the earlier of what may delete events: the TTL index's
//! `expireAfterSeconds` and `AUDIT_RETENTION_DAYS` (the horizon of `purge` on servers without
//! TTL); with neither, only purged windows are read from the archive. `margin`
//! (`AUDIT_ARCHIVE_FIND_MARGIN_SECS`, 1 h) is at least the find's time limit plus the clock
//! skew, so no event of a window read from MongoDB can expire while the query runs.
//!
//! Why this is exact: a record is written only after the window's files were read back and
//! their row count equalled MongoDB's count for the window, so an archived window holds
//! exactly the events MongoDB held, and an unrecorded window is still complete in MongoDB
//! (the archiver's TTL guard keeps TTL off unarchived events; `purge` only deletes recorded
//! windows). The cursor is a keyset on `(created_at, id)`, so a page boundary may fall on
//! either side of the seam, and a window may move from MongoDB to the archive between two
//! pages (TTL deleting it meanwhile), without an event being doubled or skipped.
//!
//! # Segments
//!
//! The range is cut into [`Segment`]s in reading order (ascending or descending): runs of
//! adjacent archive windows, and the MongoDB ranges between them. Each archive segment lists
//! its files in reading order, without those whose `dt=`/`hour=` partition lies outside it.

use crate::find::query::{Order, Span, Tier};
use auditlog_common::archive_layout;

/// The longest window the archiver writes (`AUDIT_ARCHIVE_WINDOW` must divide a day), so a
/// window overlapping `[lo, …)` starts after `lo − MAX_WINDOW_MS`.
pub const MAX_WINDOW_MS: i64 = 86_400_000;

const HOUR_MS: i64 = 3_600_000;

/// One file of an archived window, as its record lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Relative to `<db>/<collection>/`: `dt=YYYY-MM-DD/hour=HH/part-<windowstart>-<nnnn>.parquet`.
    pub path: String,
    /// Size in bytes, as recorded (so reading its footer needs no HEAD request).
    pub bytes: u64,
    /// Start of the hour its partition holds; `None` when the path has another layout (the
    /// file is then never pruned by partition).
    pub hour_ms: Option<i64>,
    /// Its number within the window: the archiver writes a window's files in
    /// `(created_at, id)` order and numbers them as it goes.
    pub seq: u32,
}

impl ArchivedFile {
    pub fn new(path: String, bytes: u64, position: usize) -> Self {
        let hour_ms = hour_of_path(&path);
        let seq =
            archive_layout::file_seq(&path).unwrap_or(u32::try_from(position).unwrap_or(u32::MAX));
        ArchivedFile {
            path,
            bytes,
            hour_ms,
            seq,
        }
    }

    /// Whether the file's partition may hold events of `span`.
    fn may_hold(&self, span: &Span) -> bool {
        self.hour_ms
            .is_none_or(|h| span.overlaps(h, h.saturating_add(HOUR_MS)))
    }
}

/// `dt=2024-05-01/hour=02/…` → the instant 2024-05-01T02:00:00Z in ms.
fn hour_of_path(path: &str) -> Option<i64> {
    archive_layout::partition_hour(path).map(|h| h.timestamp_millis())
}

/// One recorded window, as far as a find needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub purged: bool,
    /// In the order they were written (see [`ArchivedFile::seq`]).
    pub files: Vec<ArchivedFile>,
}

/// The seam rule (see the module docs), fixed at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeamRule {
    /// Recorded windows starting before this instant (ms) are read from the archive; `None`:
    /// nothing expires, only purged windows are.
    pub horizon_ms: Option<i64>,
}

impl SeamRule {
    /// `ttl`: the `created_at` index's `expireAfterSeconds` when it is a TTL index;
    /// `retention`: `AUDIT_RETENTION_DAYS` in seconds (`None` for 0, keep forever).
    pub fn new(now_ms: i64, ttl: Option<i64>, retention: Option<i64>, margin_ms: i64) -> Self {
        let expire_s = match (ttl, retention) {
            (Some(t), Some(r)) => Some(t.min(r)),
            (t, r) => t.or(r),
        };
        SeamRule {
            horizon_ms: expire_s.map(|s| now_ms.saturating_sub(s.saturating_mul(1000)) + margin_ms),
        }
    }

    /// Whether a recorded window is read from the archive.
    pub fn reads_archive(&self, w: &ArchivedWindow) -> bool {
        w.purged || self.horizon_ms.is_some_and(|h| w.start_ms < h)
    }
}

/// A part of the range and the tier it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub tier: Tier,
    pub span: Span,
    /// Archive segments: the files to read, in reading order.
    pub files: Vec<ArchivedFile>,
    /// Archive segments: files of its windows skipped because their partition lies outside.
    pub pruned_by_partition: usize,
}

impl Segment {
    fn mongodb(span: Span) -> Segment {
        Segment {
            tier: Tier::Mongodb,
            span,
            files: vec![],
            pruned_by_partition: 0,
        }
    }
}

/// Files after which a run of adjacent archived windows is cut into another segment.
pub const SEGMENT_FILES: usize = 32;

/// Cuts a find's range into segments as the archive windows arrive in reading order (sorted by
/// start, ascending or descending); each call returns the segments completed so far, so the
/// reader can start on them before every record is read.
#[derive(Debug)]
pub struct SegmentPlanner {
    order: Order,
    span: Span,
    /// How far the segments returned or pending reach: in ascending order their end (`None`:
    /// nothing yet, from the range's start), in descending order their start.
    reached: Option<i64>,
    /// An archive segment that the next window may extend.
    pending: Option<Segment>,
}

impl SegmentPlanner {
    pub fn new(span: Span, order: Order) -> Self {
        let reached = match order {
            Order::Asc => span.lo,
            Order::Desc => span.hi,
        };
        SegmentPlanner {
            order,
            span,
            reached,
            pending: None,
        }
    }

    /// Takes the next window read from the archive (in reading order); returns the segments it
    /// completes.
    pub fn push(&mut self, w: &ArchivedWindow) -> Vec<Segment> {
        // Clip to the range and to what earlier windows covered (windows do not overlap unless
        // the window length was changed between runs; the earlier one then answers).
        let mut clip = self.span.clip(w.start_ms, w.end_ms);
        match (self.order, self.reached) {
            (Order::Asc, Some(r)) => clip.lo = clip.lo.map(|l| l.max(r)),
            (Order::Desc, Some(r)) => clip.hi = clip.hi.map(|h| h.min(r)),
            _ => {}
        }
        if clip.is_empty() {
            return vec![];
        }
        let (near, far) = match self.order {
            Order::Asc => (clip.lo, clip.hi),
            Order::Desc => (clip.hi, clip.lo),
        };
        let mut files: Vec<ArchivedFile> = w.files.clone();
        files.sort_by_key(|f| f.seq);
        if self.order == Order::Desc {
            files.reverse();
        }
        let before = files.len();
        files.retain(|f| f.may_hold(&clip));
        let pruned = before - files.len();

        let mut done = vec![];
        let adjacent = self.pending.is_some() && self.reached == near;
        if adjacent {
            if let Some(p) = self.pending.as_mut() {
                match self.order {
                    Order::Asc => p.span.hi = clip.hi,
                    Order::Desc => p.span.lo = clip.lo,
                }
                p.files.extend(files);
                p.pruned_by_partition += pruned;
            }
        } else {
            done.extend(self.pending.take());
            let gap = match self.order {
                Order::Asc => Span::new(self.reached, clip.lo),
                Order::Desc => Span::new(clip.hi, self.reached),
            };
            if !gap.is_empty() {
                done.push(Segment::mongodb(gap));
            }
            self.pending = Some(Segment {
                tier: Tier::Archive,
                span: clip,
                files,
                pruned_by_partition: pruned,
            });
        }
        self.reached = far;
        // A long run of adjacent windows is handed over in parts, so that the reader starts on
        // the first files while later records are still unread — and a page that fills early
        // never reads the rest of the range's records.
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.files.len() >= SEGMENT_FILES)
        {
            done.extend(self.pending.take());
        }
        done
    }

    /// No more windows: the pending archive segment and the MongoDB range after it.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut done: Vec<Segment> = self.pending.take().into_iter().collect();
        let tail = match self.order {
            Order::Asc => Span::new(self.reached, self.span.hi),
            Order::Desc => Span::new(self.span.lo, self.reached),
        };
        if !tail.is_empty() {
            done.push(Segment::mongodb(tail));
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;
    /// 2024-05-01T00:00:00Z.
    const DAY0: i64 = 1_714_521_600_000;

    fn window(start_hour: i64, hours: i64, purged: bool) -> ArchivedWindow {
        let start_ms = DAY0 + start_hour * H;
        let files = (0..hours)
            .map(|h| {
                let t = chrono::DateTime::from_timestamp_millis(start_ms + h * H).unwrap();
                let start = chrono::DateTime::from_timestamp_millis(start_ms).unwrap();
                let path = archive_layout::file_path(t, start, h as u32);
                ArchivedFile::new(path, 1000, h as usize)
            })
            .collect();
        ArchivedWindow {
            start_ms,
            end_ms: start_ms + hours * H,
            purged,
            files,
        }
    }

    fn at(hour: i64) -> Option<i64> {
        Some(DAY0 + hour * H)
    }

    fn plan(span: Span, order: Order, windows: &[ArchivedWindow]) -> Vec<Segment> {
        let mut p = SegmentPlanner::new(span, order);
        let mut out = vec![];
        for w in windows {
            out.extend(p.push(w));
        }
        out.extend(p.finish());
        out
    }

    fn shape(segments: &[Segment]) -> Vec<(Tier, Span, usize)> {
        segments
            .iter()
            .map(|s| (s.tier, s.span, s.files.len()))
            .collect()
    }

    #[test]
    fn file_paths_give_their_hour_and_number() {
        let f = ArchivedFile::new(
            "dt=2024-05-01/hour=02/part-20240501T000000Z-0003.parquet".into(),
            5,
            0,
        );
        assert_eq!(f.hour_ms, at(2));
        assert_eq!(f.seq, 3);
        let odd = ArchivedFile::new("elsewhere/file.parquet".into(), 5, 7);
        assert_eq!((odd.hour_ms, odd.seq), (None, 7));
        assert!(odd.may_hold(&Span::new(at(0), at(1))), "never pruned");
    }

    #[test]
    fn recorded_windows_go_to_the_archive_once_purged_or_past_the_horizon() {
        let now = DAY0 + 40 * 24 * H;
        let margin = H;
        // TTL 30 days: horizon = now − 30 d + 1 h.
        let rule = SeamRule::new(now, Some(30 * 86_400), None, margin);
        let horizon = now - 30 * 24 * H + H;
        assert_eq!(rule.horizon_ms, Some(horizon));
        let starting = |ms: i64, purged: bool| ArchivedWindow {
            start_ms: ms,
            end_ms: ms + H,
            purged,
            files: vec![],
        };
        assert!(rule.reads_archive(&starting(horizon - 1, false)));
        assert!(
            !rule.reads_archive(&starting(horizon, false)),
            "archived, not about to expire: MongoDB"
        );
        assert!(
            rule.reads_archive(&starting(now - H, true)),
            "purged: whatever its age"
        );
        // The earlier of TTL and retention counts: a TTL the guard raised above the retention
        // does not keep `purge`'s windows in MongoDB's tier.
        let rule = SeamRule::new(now, Some(40 * 86_400), Some(30 * 86_400), margin);
        assert_eq!(rule.horizon_ms, Some(horizon));
        let rule = SeamRule::new(now, None, Some(30 * 86_400), margin);
        assert_eq!(
            rule.horizon_ms,
            Some(horizon),
            "no TTL (FerretDB): purge's horizon"
        );
        let rule = SeamRule::new(now, Some(10 * 86_400), Some(30 * 86_400), margin);
        assert_eq!(rule.horizon_ms, Some(now - 10 * 24 * H + H));
        // Nothing expires: only purged windows are read from the archive.
        let rule = SeamRule::new(now, None, None, margin);
        assert_eq!(rule.horizon_ms, None);
        assert!(!rule.reads_archive(&starting(DAY0, false)));
        assert!(rule.reads_archive(&starting(DAY0, true)));
    }

    #[test]
    fn a_long_run_of_adjacent_windows_is_cut_every_segment_files_files() {
        let ws: Vec<ArchivedWindow> = (0..70).map(|h| window(h, 1, true)).collect();
        let n = SEGMENT_FILES as i64;
        let asc = plan(Span::new(at(0), at(70)), Order::Asc, &ws);
        assert_eq!(
            shape(&asc),
            vec![
                (Tier::Archive, Span::new(at(0), at(n)), SEGMENT_FILES),
                (Tier::Archive, Span::new(at(n), at(2 * n)), SEGMENT_FILES),
                (
                    Tier::Archive,
                    Span::new(at(2 * n), at(70)),
                    70 - 2 * SEGMENT_FILES
                ),
            ],
            "contiguous parts, no MongoDB gap between them"
        );
        let rev: Vec<ArchivedWindow> = ws.into_iter().rev().collect();
        let desc = plan(Span::new(at(0), at(70)), Order::Desc, &rev);
        assert_eq!(
            shape(&desc),
            vec![
                (Tier::Archive, Span::new(at(70 - n), at(70)), SEGMENT_FILES),
                (
                    Tier::Archive,
                    Span::new(at(70 - 2 * n), at(70 - n)),
                    SEGMENT_FILES
                ),
                (
                    Tier::Archive,
                    Span::new(at(0), at(70 - 2 * n)),
                    70 - 2 * SEGMENT_FILES
                ),
            ]
        );
    }

    #[test]
    fn a_range_across_the_seam_is_archive_then_mongodb_and_reversed_for_desc() {
        // Archive windows at hours 0..3 (three 1 h windows), MongoDB from hour 3 on.
        let ws = [window(0, 1, true), window(1, 1, true), window(2, 1, false)];
        let span = Span::new(at(0), at(10));
        let asc = plan(span, Order::Asc, &ws);
        assert_eq!(
            shape(&asc),
            vec![
                (Tier::Archive, Span::new(at(0), at(3)), 3),
                (Tier::Mongodb, Span::new(at(3), at(10)), 0),
            ]
        );
        assert_eq!(
            asc[0].files.iter().map(|f| f.hour_ms).collect::<Vec<_>>(),
            vec![at(0), at(1), at(2)]
        );
        let rev: Vec<ArchivedWindow> = ws.iter().rev().cloned().collect();
        let desc = plan(span, Order::Desc, &rev);
        assert_eq!(
            shape(&desc),
            vec![
                (Tier::Mongodb, Span::new(at(3), at(10)), 0),
                (Tier::Archive, Span::new(at(0), at(3)), 3),
            ]
        );
        assert_eq!(
            desc[1].files.iter().map(|f| f.hour_ms).collect::<Vec<_>>(),
            vec![at(2), at(1), at(0)]
        );
    }

    #[test]
    fn gaps_between_archive_windows_and_unbounded_ends_are_read_from_mongodb() {
        // Hour 1 has no record (no events, or not archived): MongoDB answers for it.
        let ws = [window(0, 1, true), window(2, 2, true)];
        let asc = plan(Span::default(), Order::Asc, &ws);
        assert_eq!(
            shape(&asc),
            vec![
                (Tier::Mongodb, Span::new(None, at(0)), 0),
                (Tier::Archive, Span::new(at(0), at(1)), 1),
                (Tier::Mongodb, Span::new(at(1), at(2)), 0),
                (Tier::Archive, Span::new(at(2), at(4)), 2),
                (Tier::Mongodb, Span::new(at(4), None), 0),
            ]
        );
        let rev: Vec<ArchivedWindow> = ws.iter().rev().cloned().collect();
        let desc = plan(Span::default(), Order::Desc, &rev);
        assert_eq!(
            shape(&desc),
            vec![
                (Tier::Mongodb, Span::new(at(4), None), 0),
                (Tier::Archive, Span::new(at(2), at(4)), 2),
                (Tier::Mongodb, Span::new(at(1), at(2)), 0),
                (Tier::Archive, Span::new(at(0), at(1)), 1),
                (Tier::Mongodb, Span::new(None, at(0)), 0),
            ]
        );
        // No archive window at all: one MongoDB segment, the whole range (what find did
        // before there was an archive).
        assert_eq!(
            shape(&plan(Span::new(at(0), None), Order::Asc, &[])),
            vec![(Tier::Mongodb, Span::new(at(0), None), 0)]
        );
    }

    #[test]
    fn partitions_outside_the_range_are_pruned_by_their_hour() {
        // One daily window (24 hourly partitions); the range covers 05:30 to 07:10.
        let ws = [window(0, 24, true)];
        let span = Span::new(Some(DAY0 + 5 * H + H / 2), Some(DAY0 + 7 * H + H / 6));
        let segs = plan(span, Order::Asc, &ws);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].span, span);
        assert_eq!(
            segs[0].files.iter().map(|f| f.hour_ms).collect::<Vec<_>>(),
            vec![at(5), at(6), at(7)]
        );
        assert_eq!(segs[0].pruned_by_partition, 21);
        // A range ending exactly on an hour does not read that hour's partition.
        let segs = plan(Span::new(at(5), at(7)), Order::Desc, &ws);
        assert_eq!(
            segs[0].files.iter().map(|f| f.hour_ms).collect::<Vec<_>>(),
            vec![at(6), at(5)]
        );
    }

    #[test]
    fn windows_outside_or_overlapping_what_was_planned_are_clipped() {
        // A 2 h window, then a 1 h window inside it (the window length changed between runs):
        // the first answers for its range, the second only for what it adds.
        let ws = [window(0, 2, true), window(1, 2, true)];
        let segs = plan(Span::new(at(0), at(3)), Order::Asc, &ws);
        assert_eq!(
            shape(&segs),
            vec![(Tier::Archive, Span::new(at(0), at(3)), 3)]
        );
        // Windows wholly outside the range add nothing.
        let segs = plan(Span::new(at(5), at(6)), Order::Asc, &[window(0, 1, true)]);
        assert_eq!(
            shape(&segs),
            vec![(Tier::Mongodb, Span::new(at(5), at(6)), 0)]
        );
        // An empty range plans nothing.
        assert!(plan(Span::new(at(5), at(5)), Order::Asc, &[]).is_empty());
    }
}
