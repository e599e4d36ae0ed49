//! What a key may do: its rights (`ingest`, `read`) and the consumers they apply to — exact
//! names, prefix patterns such as `billing-*`, or `*` for every consumer — and the MongoDB
//! condition on `consumer` that keeps a find within them.
//!
//! Checking a consumer against a scope allocates nothing (a set lookup and a few prefix
//! comparisons), because `POST /v1/event` does it for every event.

use std::collections::BTreeSet;
use std::fmt;

use mongodb::bson::{Bson, Document, Regex};
use serde::{Deserialize, Serialize};

use crate::event::MAX_NAME_BYTES;

/// One right a key can hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// `POST /v1/event`, `POST /v1/events` (and `GET /v1/event/{id}` for its status).
    Ingest,
    /// `GET`/`POST /v1/find` and `GET /v1/event/{id}` with the event's content.
    Read,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Ingest => "ingest",
            Right::Read => "read",
        }
    }

    /// What a key without this right for a consumer may not do with its events ("may not
    /// send events of consumer \"c\"").
    pub fn verb(self) -> &'static str {
        match self {
            Right::Ingest => "send events of",
            Right::Read => "read events of",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rights of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    ingest: bool,
    read: bool,
}

impl Rights {
    /// What `AUDIT_API_KEY`'s keys hold.
    pub const ALL: Rights = Rights {
        ingest: true,
        read: true,
    };

    pub fn of(rights: &[Right]) -> Rights {
        Rights {
            ingest: rights.contains(&Right::Ingest),
            read: rights.contains(&Right::Read),
        }
    }

    pub fn has(self, right: Right) -> bool {
        match right {
            Right::Ingest => self.ingest,
            Right::Read => self.read,
        }
    }

    pub fn is_empty(self) -> bool {
        !self.ingest && !self.read
    }
}

/// The consumers a key's rights apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumers {
    /// `*`: every consumer.
    All,
    /// Exact names, and prefixes from patterns like `billing-*` (stored without the `*`).
    Only {
        exact: BTreeSet<String>,
        prefixes: Vec<String>,
    },
}

/// Why a list of consumer patterns is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("`consumers` is empty: name consumers, prefix patterns such as \"billing-*\", or \"*\" for all")]
    Empty,
    #[error(
        "consumer pattern {0:?}: `*` may only end a pattern (\"billing-*\") or stand alone (\"*\")"
    )]
    Star(String),
    #[error("consumer pattern \"\" names no consumer")]
    Blank,
    #[error(
        "consumer pattern {0:?} is longer than a consumer name can be ({MAX_NAME_BYTES} bytes)"
    )]
    TooLong(String),
}

impl Consumers {
    /// Reads the patterns of a key entry. `*` anywhere in the list makes it [`Consumers::All`].
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Consumers, PatternError> {
        if patterns.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut exact = BTreeSet::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut all = false;
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern.is_empty() {
                return Err(PatternError::Blank);
            }
            if pattern.len() > MAX_NAME_BYTES {
                return Err(PatternError::TooLong(pattern.to_owned()));
            }
            match pattern.find('*') {
                None => {
                    exact.insert(pattern.to_owned());
                }
                Some(_) if pattern == "*" => all = true,
                Some(at) if at == pattern.len() - 1 => prefixes.push(pattern[..at].to_owned()),
                Some(_) => return Err(PatternError::Star(pattern.to_owned())),
            }
        }
        if all {
            return Ok(Consumers::All);
        }
        prefixes.sort();
        prefixes.dedup();
        Ok(Consumers::Only { exact, prefixes })
    }

    /// Whether `consumer` is within the scope.
    pub fn allows(&self, consumer: &str) -> bool {
        match self {
            Consumers::All => true,
            Consumers::Only { exact, prefixes } => {
                exact.contains(consumer)
                    || prefixes.iter().any(|p| consumer.starts_with(p.as_str()))
            }
        }
    }

    /// The condition on `consumer` that limits a find to the scope, `None` for every consumer:
    /// `{$in: [exact names…, /^prefix/…]}`. Exact names and anchored prefix regexes are both
    /// served by the `{consumer: 1, created_at: 1, _id: 1}` index (as index bounds), so a
    /// scoped find costs what a find naming those consumers would.
    pub fn find_condition(&self) -> Option<Bson> {
        let Consumers::Only { exact, prefixes } = self else {
            return None;
        };
        let mut any: Vec<Bson> = exact.iter().map(|c| Bson::String(c.clone())).collect();
        any.extend(prefixes.iter().map(|p| {
            Bson::RegularExpression(Regex {
                pattern: format!("^{}", escape_regex(p)),
                options: String::new(),
            })
        }));
        let mut condition = Document::new();
        condition.insert("$in", any);
        Some(Bson::Document(condition))
    }

    /// The patterns, as the key file writes them.
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Consumers::All => vec!["*".to_owned()],
            Consumers::Only { exact, prefixes } => exact
                .iter()
                .cloned()
                .chain(prefixes.iter().map(|p| format!("{p}*")))
                .collect(),
        }
    }
}

/// `s` as a regular expression that matches exactly `s`: every character that means something
/// to MongoDB's PCRE or FerretDB's RE2 is escaped (`-` too, which only matters inside a class
/// but costs nothing), so a consumer named `a.b` does not match `axb`.
pub fn escape_regex(s: &str) -> String {
    const META: &str = r"\^$.|?*+()[]{}-";
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if META.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn scope(patterns: &[&str]) -> Consumers {
        Consumers::parse(patterns).unwrap()
    }

    #[test]
    fn exact_names_prefix_patterns_and_star() {
        let s = scope(&["invoices", "billing-*"]);
        assert!(s.allows("invoices"));
        assert!(s.allows("billing-"));
        assert!(s.allows("billing-eu"));
        assert!(
            !s.allows("billing"),
            "a prefix pattern needs the whole prefix"
        );
        assert!(!s.allows("invoices-2"), "an exact name is not a prefix");
        assert!(!s.allows("Invoices"), "names are case-sensitive");
        assert!(!s.allows("shipping"));
        assert!(!s.allows(""));
        let all = scope(&["billing-*", "*"]);
        assert_eq!(all, Consumers::All);
        assert!(all.allows("anything at all"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        assert_eq!(
            Consumers::parse::<&str>(&[]).unwrap_err(),
            PatternError::Empty
        );
        assert_eq!(
            Consumers::parse(&["a*b"]).unwrap_err(),
            PatternError::Star("a*b".into())
        );
        assert_eq!(
            Consumers::parse(&["**"]).unwrap_err(),
            PatternError::Star("**".into())
        );
        assert_eq!(
            Consumers::parse(&["*billing"]).unwrap_err(),
            PatternError::Star("*billing".into())
        );
        assert_eq!(Consumers::parse(&[""]).unwrap_err(), PatternError::Blank);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            Consumers::parse(&[long.as_str()]).unwrap_err(),
            PatternError::TooLong(_)
        ));
    }

    #[test]
    fn the_find_condition_is_an_in_of_names_and_anchored_escaped_prefixes() {
        assert_eq!(scope(&["*"]).find_condition(), None);
        let condition = scope(&["invoices", "billing-*", "a.b*", "audit"]).find_condition();
        let regex = |p: &str| {
            Bson::RegularExpression(Regex {
                pattern: p.to_owned(),
                options: String::new(),
            })
        };
        assert_eq!(
            condition,
            Some(Bson::Document(doc! {
                "$in": [
                    "audit",
                    "invoices",
                    regex(r"^a\.b"),
                    regex(r"^billing\-"),
                ]
            }))
        );
    }

    #[test]
    fn regex_metacharacters_are_escaped_and_others_kept() {
        assert_eq!(escape_regex("billing-"), r"billing\-");
        assert_eq!(
            escape_regex(r"a.b*c+d?e(f)g[h]i{j}k|l^m$n\o#p/q"),
            r"a\.b\*c\+d\?e\(f\)g\[h\]i\{j\}k\|l\^m\$n\\o#p/q"
        );
        assert_eq!(escape_regex("é_ü 1"), "é_ü 1");
    }

    #[test]
    fn patterns_round_trip() {
        let s = scope(&["invoices", "billing-*"]);
        assert_eq!(s.patterns(), vec!["invoices", "billing-*"]);
        assert_eq!(Consumers::parse(&s.patterns()).unwrap(), s);
        assert_eq!(scope(&["*"]).patterns(), vec!["*"]);
    }

    #[test]
    fn rights() {
        let r = Rights::of(&[Right::Read]);
        assert!(r.has(Right::Read) && !r.has(Right::Ingest));
        assert!(Rights::of(&[]).is_empty());
        assert!(Rights::ALL.has(Right::Ingest) && Rights::ALL.has(Right::Read));
    }
}
