//! The counts of one histogram while they are gathered — per bucket, and per key and bucket
//! with a breakdown — and their shape in the answer: the `top` keys as series, the rest summed
//! as `other`. A leaf: the MongoDB and archive counters add to it, the histogram reads it out.

use std::collections::{BTreeMap, HashMap};

use poem_openapi::{Enum, Object};

use auditlog_common::schema::fields;

use super::buckets::Grid;
use crate::error::ApiError;
use crate::event::format_created_at;

/// What a histogram is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "HistogramBy", rename_all = "lowercase")]
pub enum HistogramBy {
    Type,
    Consumer,
}

impl HistogramBy {
    /// The stored field.
    pub fn field(self) -> &'static str {
        match self {
            HistogramBy::Type => fields::TYPE,
            HistogramBy::Consumer => fields::CONSUMER,
        }
    }

    pub(super) fn parse(s: &str) -> Result<Option<HistogramBy>, ApiError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "type" => Ok(Some(HistogramBy::Type)),
            "consumer" => Ok(Some(HistogramBy::Consumer)),
            _ => Err(ApiError::BadQuery(format!(
                "`by` must be type or consumer, got {s:?}"
            ))),
        }
    }
}

/// One bucket of a histogram.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "HistogramBucket")]
pub struct HistogramBucket {
    /// The bucket's start (RFC 3339, UTC, milliseconds); it ends where the next one starts.
    pub start: String,
    /// Events in the bucket (within `[created_from, created_to)` for the first and last).
    pub count: u64,
    /// With `by`: the events of each kept series (every one of `series`, zeros included).
    #[oai(skip_serializing_if_is_none)]
    pub counts: Option<BTreeMap<String, u64>>,
    /// With `by`: the events of every other key.
    #[oai(skip_serializing_if_is_none)]
    pub other: Option<u64>,
}

/// The counts being gathered: per bucket, and per key and bucket when there is a breakdown
/// (sparse: a key with events in few buckets costs few entries).
#[derive(Debug)]
pub struct Tally {
    grid: Grid,
    totals: Vec<u64>,
    keyed: Option<HashMap<String, HashMap<usize, u64>>>,
    /// Counts whose instant lies outside the grid: none should, as every count is of the
    /// range; kept to say so in the log rather than fold them into a wrong bucket.
    stray: u64,
}

impl Tally {
    pub fn new(grid: Grid, by: Option<HistogramBy>) -> Self {
        Tally {
            grid,
            totals: vec![0; grid.len],
            keyed: by.map(|_| HashMap::new()),
            stray: 0,
        }
    }

    /// Every event counted in the grid.
    pub fn total(&self) -> u64 {
        self.totals.iter().sum()
    }

    /// Adds `n` events of the bucket holding `at_ms`, of key `key` (with a breakdown).
    pub fn add(&mut self, at_ms: i64, key: Option<&str>, n: u64) {
        if n == 0 {
            return;
        }
        let Some(i) = self.grid.index(at_ms) else {
            self.stray += n;
            return;
        };
        self.totals[i] += n;
        if let Some(keyed) = &mut self.keyed {
            let key = key.unwrap_or_default();
            let per_bucket = match keyed.get_mut(key) {
                Some(m) => m,
                None => keyed.entry(key.to_owned()).or_default(),
            };
            *per_bucket.entry(i).or_default() += n;
        }
    }

    /// The answer's series and buckets: the `top` keys by total (ties by key), the rest
    /// summed into `other`.
    pub(super) fn finish(self, top: usize) -> (Vec<String>, Vec<HistogramBucket>) {
        if self.stray > 0 {
            tracing::warn!(
                events = self.stray,
                "histogram: counts outside the range's buckets were left out"
            );
        }
        let g = self.grid;
        let start = |i: usize| format_created_at(mongodb::bson::DateTime::from_millis(g.start(i)));
        let Some(keyed) = self.keyed else {
            let buckets = self
                .totals
                .iter()
                .enumerate()
                .map(|(i, &count)| HistogramBucket {
                    start: start(i),
                    count,
                    counts: None,
                    other: None,
                })
                .collect();
            return (vec![], buckets);
        };
        let mut ranked: Vec<(String, u64)> = keyed
            .iter()
            .map(|(k, m)| (k.clone(), m.values().sum()))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let series: Vec<String> = ranked.into_iter().take(top).map(|(k, _)| k).collect();
        let buckets = self
            .totals
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let counts: BTreeMap<String, u64> = series
                    .iter()
                    .map(|k| {
                        let n = keyed.get(k).and_then(|m| m.get(&i)).copied();
                        (k.clone(), n.unwrap_or(0))
                    })
                    .collect();
                let kept: u64 = counts.values().sum();
                HistogramBucket {
                    start: start(i),
                    count,
                    counts: Some(counts),
                    other: Some(count.saturating_sub(kept)),
                }
            })
            .collect();
        (series, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::super::buckets::BucketSpec;
    use super::*;

    /// 2026-12-06T10:00:00Z.
    const T: i64 = 1_796_551_200_000;
    const H: i64 = 3_600_000;

    #[test]
    fn the_largest_keys_are_kept_and_the_rest_summed_as_other() {
        let grid = Grid::new(BucketSpec::Fixed(H), T, T + 3 * H).unwrap();
        let mut t = Tally::new(grid, Some(HistogramBy::Type));
        t.add(T, Some("b"), 5);
        t.add(T + 10, Some("a"), 5);
        t.add(T + H, Some("c"), 7);
        t.add(T + 2 * H + 5, Some("d"), 1);
        t.add(T + 2 * H + 6, Some("a"), 0);
        t.add(T + 3 * H, Some("a"), 9);
        assert_eq!(t.stray, 9, "outside the grid: not counted");
        let total: u64 = t.totals.iter().sum();
        assert_eq!(total, 18);
        let (series, buckets) = t.finish(2);
        assert_eq!(series, ["c", "a"], "7, then 5 and 5 tied: a before b");
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0].count, 10);
        assert_eq!(
            buckets[0].counts,
            Some(BTreeMap::from([("a".to_owned(), 5), ("c".to_owned(), 0)]))
        );
        assert_eq!(buckets[0].other, Some(5));
        assert_eq!((buckets[1].count, buckets[1].other), (7, Some(0)));
        assert_eq!((buckets[2].count, buckets[2].other), (1, Some(1)));
        assert_eq!(buckets[2].start, "2026-12-06T12:00:00.000Z");
        // Without a breakdown: counts only.
        let mut t = Tally::new(grid, None);
        t.add(T + H + 1, None, 3);
        let (series, buckets) = t.finish(10);
        assert!(series.is_empty());
        assert_eq!(
            buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
            [0, 3, 0]
        );
        assert!(buckets
            .iter()
            .all(|b| b.counts.is_none() && b.other.is_none()));
    }
}
