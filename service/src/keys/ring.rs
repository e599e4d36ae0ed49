//! The keys in force, and finding the one a request presents.
//!
//! A presented key is hashed (SHA-256) and the hash looked up in a map: the key itself is never
//! compared with anything, so the time an answer takes says nothing about how close a guess
//! was, and the service holds no key, only hashes — `AUDIT_API_KEY`'s keys are hashed at start
//! like the file's. One hash and one map lookup per request, whatever the number of keys.
//!
//! All keys form one immutable [`KeyRing`]; [`Keys`] holds the current one behind a lock taken
//! only to clone an `Arc`. A reload builds a whole new ring and swaps it in, so a request sees
//! the old keys or the new ones, never a mix.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use super::digest::digest;
use super::file::{Entry, KeyFileError};
use super::rate::{retry_after_secs, RateLimit, Refusal};
use super::scope::{Consumers, Right, Rights};
use crate::error::ApiError;

/// What one key may do.
#[derive(Debug)]
pub struct Key {
    /// Shown in logs, metrics and 403 answers; never the key.
    pub name: String,
    pub rights: Rights,
    pub consumers: Consumers,
    rate: Option<Arc<RateLimit>>,
}

impl Key {
    /// A key of `AUDIT_API_KEY`: every right, every consumer, no rate.
    fn full(name: String) -> Key {
        Key {
            name,
            rights: Rights::ALL,
            consumers: Consumers::All,
            rate: None,
        }
    }

    pub fn has(&self, right: Right) -> bool {
        self.rights.has(right)
    }

    /// 403 unless the key holds `right`.
    pub fn require(&self, right: Right) -> Result<(), ApiError> {
        if self.rights.has(right) {
            return Ok(());
        }
        Err(ApiError::MissingRight {
            key: self.name.clone(),
            right: right.as_str(),
        })
    }

    /// 403 unless `consumer` is within the key's consumers.
    pub fn check_consumer(&self, right: Right, consumer: &str) -> Result<(), ApiError> {
        if self.consumers.allows(consumer) {
            return Ok(());
        }
        Err(ApiError::ConsumerNotAllowed {
            key: self.name.clone(),
            verb: right.verb(),
            consumer: consumer.to_owned(),
        })
    }

    /// Takes `events` from the key's rate: 429 with the wait when over it, 413 for more events
    /// at once than its burst (they could never pass). Keys without a rate always pass.
    pub fn spend(&self, events: usize) -> Result<(), ApiError> {
        let Some(limit) = &self.rate else {
            return Ok(());
        };
        limit.take(events).map_err(|refusal| match refusal {
            Refusal::Wait(wait) => ApiError::RateLimited {
                key: self.name.clone(),
                events_per_second: limit.rate().events_per_second,
                retry_after_secs: retry_after_secs(wait),
            },
            Refusal::OverBurst { burst } => ApiError::BatchOverBurst {
                key: self.name.clone(),
                count: events,
                burst,
            },
        })
    }
}

/// Every key in force, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: HashMap<[u8; 32], Arc<Key>>,
    from_env: usize,
    from_file: usize,
}

impl KeyRing {
    /// `env`: the hashes of `AUDIT_API_KEY`'s keys; `file`: the key file's entries. A key of
    /// `previous` whose entry keeps its rate keeps its bucket.
    pub fn new(
        env: &[[u8; 32]],
        file: Vec<Entry>,
        previous: Option<&KeyRing>,
    ) -> Result<KeyRing, KeyFileError> {
        let mut ring = KeyRing::default();
        for (i, d) in env.iter().enumerate() {
            let key = Key::full(format!("AUDIT_API_KEY[{}]", i + 1));
            if ring.by_digest.insert(*d, Arc::new(key)).is_none() {
                ring.from_env += 1;
            }
        }
        for entry in file {
            if ring.by_digest.contains_key(&entry.digest) {
                return Err(KeyFileError::AlsoInEnv { name: entry.name });
            }
            let kept = previous
                .and_then(|p| p.by_digest.get(&entry.digest))
                .and_then(|k| k.rate.as_ref())
                .filter(|r| Some(r.rate()) == entry.rate)
                .cloned();
            let rate = match (kept, entry.rate) {
                (Some(kept), _) => Some(kept),
                (None, Some(rate)) => Some(Arc::new(RateLimit::new(rate).ok_or_else(|| {
                    KeyFileError::Entry {
                        index: 0,
                        name: entry.name.clone(),
                        problem: rate.problem().unwrap_or_default(),
                    }
                })?)),
                (None, None) => None,
            };
            let key = Key {
                name: entry.name,
                rights: entry.rights,
                consumers: entry.consumers,
                rate,
            };
            ring.by_digest.insert(entry.digest, Arc::new(key));
            ring.from_file += 1;
        }
        Ok(ring)
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<&Arc<Key>> {
        self.by_digest.get(digest)
    }

    /// Keys from `AUDIT_API_KEY`, and from the key file.
    pub fn counts(&self) -> (usize, usize) {
        (self.from_env, self.from_file)
    }

    pub fn names(&self) -> BTreeSet<&str> {
        self.by_digest.values().map(|k| k.name.as_str()).collect()
    }
}

/// The keys in force, and where they come from (for reloads).
#[derive(Debug)]
pub struct Keys {
    ring: RwLock<Arc<KeyRing>>,
    env: Vec<[u8; 32]>,
    file: Option<PathBuf>,
}

/// Why the keys could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no API keys: set AUDIT_API_KEY (comma-separated keys with every right) or AUDIT_API_KEYS_FILE (a key file of scoped keys; `auditlog-service keys new` makes entries)")]
    NoKeys,
    #[error("AUDIT_API_KEYS_FILE {path}: {source}")]
    File { path: String, source: KeyFileError },
}

/// What a reload changed, by key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub in_force: usize,
}

impl Keys {
    /// The keys of `AUDIT_API_KEY` (comma-separated; blanks ignored) and of the key file.
    /// Either is enough; neither is an error. Returns the file content's hash too, so a
    /// reload can tell when the file changed.
    pub fn load(
        env_keys: Option<&str>,
        file: Option<&Path>,
    ) -> Result<(Keys, Option<[u8; 32]>), LoadError> {
        let env: Vec<[u8; 32]> = env_keys
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()))
            .collect();
        let file = file.filter(|p| !p.as_os_str().is_empty());
        if env.is_empty() && file.is_none() {
            return Err(LoadError::NoKeys);
        }
        let file_error = |source| LoadError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            source,
        };
        let (entries, content) = match file {
            Some(path) => {
                let (text, content) = super::file::read(path).map_err(file_error)?;
                (
                    super::file::parse(&text).map_err(file_error)?,
                    Some(content),
                )
            }
            None => (Vec::new(), None),
        };
        let ring = KeyRing::new(&env, entries, None).map_err(file_error)?;
        let keys = Keys {
            ring: RwLock::new(Arc::new(ring)),
            env,
            file: file.map(Path::to_path_buf),
        };
        Ok((keys, content))
    }

    /// The key `presented` is, if it is one in force.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Arc<Key>> {
        let d = digest(presented);
        self.current().get(&d).cloned()
    }

    pub fn current(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Replaces the file's keys with those of `text` (a new version of the key file), keeping
    /// `AUDIT_API_KEY`'s. A file that is not valid changes nothing.
    pub fn reload(&self, text: &str) -> Result<Change, KeyFileError> {
        let entries = super::file::parse(text)?;
        let old = self.current();
        let new = KeyRing::new(&self.env, entries, Some(&old))?;
        let (old_names, new_names) = (old.names(), new.names());
        let change = Change {
            added: new_names
                .difference(&old_names)
                .map(|s| (*s).to_owned())
                .collect(),
            removed: old_names
                .difference(&new_names)
                .map(|s| (*s).to_owned())
                .collect(),
            in_force: new.by_digest.len(),
        };
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::file::parse;

    fn file_with(name: &str, key: &str, rights: &str, consumers: &str, rate: &str) -> String {
        format!(
            "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\nrights = {rights}\nconsumers = {consumers}\n{rate}\n",
            hex::encode(digest(key.as_bytes()))
        )
    }

    fn keys(env: &str, file_text: &str) -> Keys {
        let env: Vec<[u8; 32]> = env
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()))
            .collect();
        let entries = if file_text.is_empty() {
            vec![]
        } else {
            parse(file_text).unwrap()
        };
        Keys {
            ring: RwLock::new(Arc::new(KeyRing::new(&env, entries, None).unwrap())),
            env,
            file: None,
        }
    }

    #[test]
    fn the_hash_is_sha256() {
        // What `printf %s test | sha256sum` prints: operators may hash keys themselves.
        assert_eq!(
            hex::encode(digest(b"test")),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn keys_are_found_by_their_hash_and_nothing_else_is() {
        let k = keys(
            "old-key,new-key",
            &file_with("billing", "b-key", "[\"ingest\"]", "[\"billing-*\"]", ""),
        );
        let old = k.authenticate(b"old-key").unwrap();
        assert_eq!(old.name, "AUDIT_API_KEY[1]");
        assert_eq!(old.rights, Rights::ALL);
        assert_eq!(old.consumers, Consumers::All);
        assert_eq!(k.authenticate(b"new-key").unwrap().name, "AUDIT_API_KEY[2]");
        let billing = k.authenticate(b"b-key").unwrap();
        assert_eq!(billing.name, "billing");
        assert!(!billing.has(Right::Read));
        for wrong in [&b"old-ke"[..], b"", b"B-KEY", b"b-key ", b"billing"] {
            assert!(k.authenticate(wrong).is_none(), "{wrong:?}");
        }
        let hash_as_key = hex::encode(digest(b"b-key"));
        assert!(
            k.authenticate(hash_as_key.as_bytes()).is_none(),
            "the hash in the file is not a key"
        );
    }

    #[test]
    fn refusals_name_the_right_the_consumer_and_the_key() {
        let k = keys(
            "",
            &file_with("billing", "b-key", "[\"ingest\"]", "[\"billing-*\"]", ""),
        );
        let billing = k.authenticate(b"b-key").unwrap();
        assert!(billing.require(Right::Ingest).is_ok());
        let err = billing.require(Right::Read).unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert_eq!(err.code(), "missing_right");
        assert!(err.to_string().contains("`read`"), "{err}");
        assert!(err.to_string().contains("\"billing\""), "{err}");
        assert!(billing.check_consumer(Right::Ingest, "billing-eu").is_ok());
        let err = billing
            .check_consumer(Right::Ingest, "shipping")
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert_eq!(err.code(), "consumer_not_allowed");
        assert!(err.to_string().contains("\"shipping\""), "{err}");
    }

    #[test]
    fn a_reload_swaps_the_file_keys_keeps_env_keys_and_reports_names() {
        let k = keys(
            "env-key",
            &file_with("a", "a-key", "[\"read\"]", "[\"*\"]", ""),
        );
        let change = k
            .reload(&file_with("b", "b-key", "[\"read\"]", "[\"*\"]", ""))
            .unwrap();
        assert_eq!(
            change,
            Change {
                added: vec!["b".into()],
                removed: vec!["a".into()],
                in_force: 2
            }
        );
        assert!(k.authenticate(b"a-key").is_none());
        assert!(k.authenticate(b"b-key").is_some());
        assert!(k.authenticate(b"env-key").is_some());
        let err = k.reload("[[key]]\nname = 3\n").unwrap_err();
        assert!(matches!(err, KeyFileError::Syntax { .. }), "{err}");
        assert!(
            k.authenticate(b"b-key").is_some(),
            "a bad file changes nothing"
        );
        let err = k
            .reload(&file_with("c", "env-key", "[\"read\"]", "[\"*\"]", ""))
            .unwrap_err();
        assert_eq!(err, KeyFileError::AlsoInEnv { name: "c".into() });
    }

    #[test]
    fn a_reload_keeps_a_bucket_whose_rate_is_unchanged() {
        let rate = "rate = { events_per_second = 0.001, burst = 2 }";
        let text = file_with("p", "p-key", "[\"ingest\"]", "[\"*\"]", rate);
        let k = keys("", &text);
        let p = k.authenticate(b"p-key").unwrap();
        assert!(p.spend(2).is_ok());
        let err = p.spend(1).unwrap_err();
        assert_eq!(err.status().as_u16(), 429);
        assert!(err.retry_after_secs().unwrap() > 1, "{err}");
        k.reload(&format!("# touched\n{text}")).unwrap();
        let err = k.authenticate(b"p-key").unwrap().spend(1).unwrap_err();
        assert_eq!(err.status().as_u16(), 429, "a reload is not a fresh burst");
        k.reload(&text.replace("burst = 2", "burst = 3")).unwrap();
        assert!(
            k.authenticate(b"p-key").unwrap().spend(3).is_ok(),
            "a new rate starts a new bucket"
        );
        let err = k.authenticate(b"p-key").unwrap().spend(4).unwrap_err();
        assert_eq!(err.status().as_u16(), 413, "more than the burst at once");
    }

    #[test]
    fn load_needs_one_source_at_least() {
        let err = Keys::load(None, None).unwrap_err();
        assert!(matches!(err, LoadError::NoKeys));
        assert!(err.to_string().contains("AUDIT_API_KEY"));
        assert!(err.to_string().contains("AUDIT_API_KEYS_FILE"));
        assert!(matches!(
            Keys::load(Some(" , "), Some(Path::new(""))).unwrap_err(),
            LoadError::NoKeys
        ));
        let (k, content) = Keys::load(Some("a, b"), None).unwrap();
        assert_eq!(content, None);
        assert_eq!(k.current().counts(), (2, 0));
        let err = Keys::load(None, Some(Path::new("/nonexistent/keys.toml"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("AUDIT_API_KEYS_FILE /nonexistent/keys.toml: cannot read it"),
            "{err}"
        );
    }
}
