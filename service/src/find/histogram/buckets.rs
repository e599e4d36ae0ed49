//! The bucket arithmetic of a histogram, pure so it is unit-tested: parsing `bucket`
//! (`auto` or `<n><s|m|h|d>`), the automatic choice, and the grid of buckets over a range.
//!
//! Buckets are aligned to multiples of their length since the Unix epoch (UTC), not to the
//! range's start: the same instant falls in the same bucket whatever range a client asks for,
//! so a chart that pans or refreshes keeps its bars where they were, and a row group of the
//! archive can be placed in its bucket from its statistics alone.

use crate::error::ApiError;

/// Most buckets one answer holds: beyond it, `400 bad_query`.
pub const MAX_BUCKETS: i64 = 1000;
/// `bucket=auto` picks the smallest step giving at most this many buckets.
pub const AUTO_BUCKETS: i64 = 120;

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The steps `bucket=auto` chooses from, shortest first.
const AUTO_STEPS: [i64; 14] = [
    SECOND,
    5 * SECOND,
    10 * SECOND,
    30 * SECOND,
    MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    30 * MINUTE,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    7 * DAY,
];

/// What `bucket` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketSpec {
    Auto,
    /// A length in milliseconds (at least one second).
    Fixed(i64),
}

impl BucketSpec {
    /// `auto` (or absent, or empty) or `<n><unit>`: `n` ≥ 1 decimal digits, `unit` one of
    /// `s`, `m`, `h`, `d`.
    pub fn parse(s: Option<&str>) -> Result<BucketSpec, ApiError> {
        let s = s.map(str::trim).unwrap_or_default();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            return Ok(BucketSpec::Auto);
        }
        let bad = || {
            ApiError::BadQuery(format!(
                "`bucket` must be auto or a duration <n><unit> with n ≥ 1 and unit s, m, h or d \
                 (e.g. 30s, 5m, 1h, 1d), got {s:?}"
            ))
        };
        let unit = match s.as_bytes().last() {
            Some(b's') => SECOND,
            Some(b'm') => MINUTE,
            Some(b'h') => HOUR,
            Some(b'd') => DAY,
            _ => return Err(bad()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        if n < 1 {
            return Err(bad());
        }
        let ms = n.checked_mul(unit).ok_or_else(bad)?;
        Ok(BucketSpec::Fixed(ms))
    }
}

/// The shortest spelling of a bucket length: the largest unit that divides it (`60m` → `1h`).
pub fn label(ms: i64) -> String {
    for (unit, name) in [(DAY, 'd'), (HOUR, 'h'), (MINUTE, 'm'), (SECOND, 's')] {
        if ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

/// The buckets of a range `[from, to)` (epoch milliseconds, `from < to`): every bucket that
/// holds an instant of it, first to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub bucket_ms: i64,
    /// Start of the first bucket: `from` rounded down to a multiple of `bucket_ms`.
    pub first_ms: i64,
    pub len: usize,
}

impl Grid {
    /// The grid of `spec` over `[from, to)`; more than [`MAX_BUCKETS`] buckets is a
    /// `bad_query`.
    pub fn new(spec: BucketSpec, from: i64, to: i64) -> Result<Grid, ApiError> {
        if from >= to {
            return Err(ApiError::BadQuery(
                "`created_from` must be before `created_to`".into(),
            ));
        }
        let bucket_ms = match spec {
            BucketSpec::Fixed(ms) => ms,
            BucketSpec::Auto => AUTO_STEPS
                .into_iter()
                .find(|&step| count(step, from, to) <= AUTO_BUCKETS)
                .unwrap_or(AUTO_STEPS[AUTO_STEPS.len() - 1]),
        };
        let n = count(bucket_ms, from, to);
        if n > MAX_BUCKETS {
            return Err(ApiError::BadQuery(format!(
                "bucket {} over this range makes {n} buckets; at most {MAX_BUCKETS} are \
                 answered: ask for a longer bucket or a shorter range",
                label(bucket_ms)
            )));
        }
        Ok(Grid {
            bucket_ms,
            first_ms: floor(from, bucket_ms),
            len: usize::try_from(n).unwrap_or(0),
        })
    }

    /// The start of bucket `i`.
    pub fn start(&self, i: usize) -> i64 {
        self.first_ms + i as i64 * self.bucket_ms
    }

    /// The bucket holding instant `ms`, if it is one of the grid's.
    pub fn index(&self, ms: i64) -> Option<usize> {
        let i = (floor(ms, self.bucket_ms) - self.first_ms).checked_div(self.bucket_ms)?;
        usize::try_from(i).ok().filter(|&i| i < self.len)
    }

    /// Whether two instants fall in the same bucket (of this length, on the epoch's grid).
    pub fn same_bucket(bucket_ms: i64, a: i64, b: i64) -> bool {
        a.div_euclid(bucket_ms) == b.div_euclid(bucket_ms)
    }
}

/// `ms` rounded down to a multiple of `bucket_ms` (towards the past, also before 1970).
pub fn floor(ms: i64, bucket_ms: i64) -> i64 {
    ms.div_euclid(bucket_ms) * bucket_ms
}

/// How many buckets of `bucket_ms` hold an instant of `[from, to)`: from the one holding
/// `from` to the one holding `to − 1 ms`. In i128: a long range of short buckets must not wrap.
fn count(bucket_ms: i64, from: i64, to: i64) -> i64 {
    let first = i128::from(from.div_euclid(bucket_ms));
    let last = i128::from((to - 1).div_euclid(bucket_ms));
    i64::try_from(last - first + 1).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T10:00:00Z.
    const T: i64 = 1_796_551_200_000;

    #[test]
    fn bucket_lengths_parse_and_bad_ones_are_refused() {
        assert_eq!(BucketSpec::parse(None).unwrap(), BucketSpec::Auto);
        assert_eq!(BucketSpec::parse(Some("")).unwrap(), BucketSpec::Auto);
        assert_eq!(BucketSpec::parse(Some("AUTO")).unwrap(), BucketSpec::Auto);
        for (s, ms) in [
            ("30s", 30 * SECOND),
            ("5m", 5 * MINUTE),
            ("1h", HOUR),
            ("1d", DAY),
            ("90m", 90 * MINUTE),
        ] {
            assert_eq!(
                BucketSpec::parse(Some(s)).unwrap(),
                BucketSpec::Fixed(ms),
                "{s}"
            );
        }
        for bad in [
            "0s",
            "h",
            "1",
            "1w",
            "1.5h",
            "-1h",
            "+1h",
            "1 h",
            "1H",
            "99999999999999999999d",
            "9999999999999999d",
            "1ms",
        ] {
            let err = BucketSpec::parse(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "bad_query", "{bad}");
            assert!(err.to_string().contains("`bucket`"), "{bad}: {err}");
        }
    }

    #[test]
    fn labels_use_the_largest_unit_that_divides() {
        assert_eq!(label(HOUR), "1h");
        assert_eq!(label(60 * MINUTE), "1h");
        assert_eq!(label(90 * MINUTE), "90m");
        assert_eq!(label(7 * DAY), "7d");
        assert_eq!(label(45 * SECOND), "45s");
    }

    #[test]
    fn auto_picks_the_smallest_step_with_at_most_120_buckets() {
        let auto = |range: i64| Grid::new(BucketSpec::Auto, T, T + range).unwrap();
        assert_eq!(auto(2 * MINUTE).bucket_ms, SECOND, "120 buckets of 1 s");
        assert_eq!(auto(2 * MINUTE + 1).bucket_ms, 5 * SECOND);
        assert_eq!(
            auto(DAY).bucket_ms,
            30 * MINUTE,
            "the default range: 48 buckets"
        );
        assert_eq!(auto(5 * HOUR).bucket_ms, 5 * MINUTE);
        // 6 h would make 121: 10:00 is not on the 6 h grid, so the range touches one more.
        assert_eq!(auto(30 * DAY).bucket_ms, 12 * HOUR);
        assert_eq!(auto(30 * DAY - 4 * HOUR).bucket_ms, 6 * HOUR);
        assert_eq!(auto(365 * DAY).bucket_ms, 7 * DAY);
        assert!(auto(365 * DAY).len <= AUTO_BUCKETS as usize);
        // Beyond 120 weeks auto stays at a week, up to the limit of 1000.
        assert_eq!(auto(5 * 365 * DAY).bucket_ms, 7 * DAY);
        let err = Grid::new(BucketSpec::Auto, T, T + 30 * 365 * DAY).unwrap_err();
        assert!(err.to_string().contains("at most 1000"), "{err}");
    }

    #[test]
    fn buckets_are_aligned_to_the_epoch_and_cover_the_range_exactly() {
        // 10:20 to 13:05 by the hour: 10:00, 11:00, 12:00, 13:00.
        let g = Grid::new(
            BucketSpec::Fixed(HOUR),
            T + 20 * MINUTE,
            T + 3 * HOUR + 5 * MINUTE,
        )
        .unwrap();
        assert_eq!((g.first_ms, g.len), (T, 4));
        assert_eq!(g.start(3), T + 3 * HOUR);
        assert_eq!(g.index(T + 20 * MINUTE), Some(0));
        assert_eq!(g.index(T + HOUR - 1), Some(0));
        assert_eq!(g.index(T + HOUR), Some(1));
        assert_eq!(g.index(T + 4 * HOUR), None);
        assert_eq!(g.index(T - 1), None);
        // A range ending on a bucket boundary does not open the next bucket.
        let g = Grid::new(BucketSpec::Fixed(HOUR), T, T + 2 * HOUR).unwrap();
        assert_eq!(g.len, 2);
        // A 7 d bucket starts on a Thursday, as the epoch did.
        let g = Grid::new(BucketSpec::Fixed(7 * DAY), T, T + 1).unwrap();
        assert_eq!(g.first_ms % (7 * DAY), 0);
        assert!(g.first_ms <= T && T < g.first_ms + 7 * DAY);
        // Before 1970 the grid still rounds towards the past.
        let g = Grid::new(BucketSpec::Fixed(HOUR), -HOUR - 1, -HOUR + 1).unwrap();
        assert_eq!((g.first_ms, g.len), (-2 * HOUR, 2));
        assert!(Grid::same_bucket(HOUR, -1, -HOUR));
        assert!(!Grid::same_bucket(HOUR, -1, 0));
    }

    #[test]
    fn too_many_buckets_or_an_empty_range_are_bad_queries() {
        assert_eq!(
            Grid::new(BucketSpec::Fixed(SECOND), T, T + 1000 * SECOND)
                .unwrap()
                .len,
            1000
        );
        let err = Grid::new(BucketSpec::Fixed(SECOND), T, T + 1000 * SECOND + 1).unwrap_err();
        assert_eq!(err.code(), "bad_query");
        assert!(err.to_string().contains("1001 buckets"), "{err}");
        // Any range, however long, with 1 s buckets: counted without overflow.
        assert!(Grid::new(BucketSpec::Fixed(SECOND), i64::MIN / 2, i64::MAX / 2).is_err());
        for (from, to) in [(T, T), (T + 1, T)] {
            let err = Grid::new(BucketSpec::Auto, from, to).unwrap_err();
            assert!(err.to_string().contains("before `created_to`"), "{err}");
        }
    }
}
