//! How keys are compared and key files told apart: by their SHA-256, never by the text (a
//! key is held only as its digest once loaded).

use sha2::{Digest, Sha256};

/// SHA-256 of a key (or of a file's content).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
