//! Event ids made on the client, so that a retry carries the id of its first attempt and the
//! service stores the event once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new ObjectId as 24 lowercase hex characters: 4 bytes of Unix seconds (big-endian), 5
/// random bytes drawn once per process, and a 3-byte counter that starts at a random value.
/// Ids from one process never repeat within 16 million per second; ids from two processes
/// differ by their random bytes.
pub fn new_event_id() -> String {
    static PROCESS: OnceLock<[u8; 5]> = OnceLock::new();
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let process = PROCESS.get_or_init(rand::random::<[u8; 5]>);
    let counter = COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>()))
        .fetch_add(1, Ordering::Relaxed)
        & 0x00ff_ffff;
    // An ObjectId's seconds are 32 bits; truncation after 2106 is what MongoDB does too.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    bytes[4..9].copy_from_slice(process);
    bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
    let mut out = String::with_capacity(24);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_24_lowercase_hex_and_unique() {
        let ids: Vec<String> = (0..10_000).map(|_| new_event_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 24);
            assert!(
                id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "{id}"
            );
        }
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // Same process: the random middle is the same.
        assert_eq!(ids[0][8..18], ids[1][8..18]);
    }
}
