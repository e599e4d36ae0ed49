//! Durations (`30m`, `1h30m`, `7d`) and times (`2026-11-27T04:05:58Z`, `2026-11-27`, `2h`
//! meaning two hours ago) as the command line gives them, turned into the UTC bounds of a find.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

/// A duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`, `d`, `w`
/// (`90s`, `1h30m`, `7d`). Used by clap as a value parser, so the error is its message.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d, w), e.g. 30m, 1h30m, 7d")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_secs: u64 = match &rest[..unit_len] {
            "ms" => {
                total = total.saturating_add(Duration::from_millis(n));
                rest = &rest[unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
        total = total.saturating_add(Duration::from_secs(secs));
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A point in time: RFC 3339 (`2026-11-27T04:05:58Z`, `…+02:00`), a date and time without an
/// offset (taken as UTC, as the service does), a bare date (its midnight UTC), or a duration
/// meaning that long before now (`2h`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time_at(text, Utc::now())
}

/// [`parse_time`] with "now" given, for tests.
pub fn parse_time_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    if let Ok(ago) = parse_duration(t) {
        return before(now, ago);
    }
    Err(format!(
        "invalid time {text:?}: expected e.g. 2026-11-27T04:05:58Z, 2026-11-27 or a duration ago such as 2h"
    ))
}

/// `now - ago`, refusing durations that leave chrono's range instead of wrapping.
pub fn before(now: DateTime<Utc>, ago: Duration) -> Result<DateTime<Utc>, String> {
    TimeDelta::from_std(ago)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("{}s ago is out of range", ago.as_secs()))
}

/// The `[from, to)` bounds of a find, both optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// From `--since` (a duration back from `now`) or `--from`/`--to`; clap already refuses
    /// `--since` together with either. An empty range is refused here rather than sent: the
    /// service would only answer "nothing", which reads like "no events".
    pub fn resolve(
        since: Option<Duration>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<TimeRange, String> {
        let from = match since {
            Some(ago) => Some(before(now, ago).map_err(|e| format!("--since: {e}"))?),
            None => from,
        };
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(format!(
                    "--from ({}) must be before --to ({})",
                    f.to_rfc3339(),
                    t.to_rfc3339()
                ));
            }
        }
        Ok(TimeRange { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "h",
            "10",
            "10x",
            "1.5h",
            "-1h",
            "1h 30m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("10x").unwrap_err().contains("\"10x\""));
    }

    #[test]
    fn times() {
        let now = at("2026-11-27T12:00:00Z");
        assert_eq!(
            parse_time_at("2026-11-27T04:05:58.196Z", now),
            Ok(at("2026-11-27T04:05:58.196Z"))
        );
        assert_eq!(
            parse_time_at("2026-11-27T06:00:00+02:00", now),
            Ok(at("2026-11-27T04:00:00Z"))
        );
        assert_eq!(
            parse_time_at("2026-11-27T04:05:58", now),
            Ok(at("2026-11-27T04:05:58Z"))
        );
        assert!(
            parse_time_at("2026-11-27 04:05", now).is_err(),
            "a space and no seconds is not a format we document"
        );
        assert_eq!(
            parse_time_at("2026-11-27", now),
            Ok(at("2026-11-27T00:00:00Z"))
        );
        assert_eq!(parse_time_at("2h", now), Ok(at("2026-11-27T10:00:00Z")));
        assert!(parse_time_at("yesterday", now).is_err());
        assert!(parse_time_at("2026-13-01", now).is_err());
    }

    #[test]
    fn ranges() {
        let now = at("2026-11-27T12:00:00Z");
        let r = TimeRange::resolve(Some(Duration::from_secs(3600)), None, None, now).unwrap();
        assert_eq!(
            r,
            TimeRange {
                from: Some(at("2026-11-27T11:00:00Z")),
                to: None
            }
        );
        let r = TimeRange::resolve(None, Some(at("2026-01-01T00:00:00Z")), None, now).unwrap();
        assert_eq!(r.from, Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(
            TimeRange::resolve(None, None, None, now),
            Ok(TimeRange::default())
        );
        let err = TimeRange::resolve(
            None,
            Some(at("2026-02-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:00Z")),
            now,
        )
        .unwrap_err();
        assert!(err.contains("must be before"), "{err}");
    }
}
