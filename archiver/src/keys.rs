//! The archive's signing keys: Ed25519, the private key as PKCS#8 PEM and the public key as SPKI
//! PEM — the forms `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write, so an
//! auditor checks signatures with openssl alone. A key is named by its id, `sha256:` and the
//! hex SHA-256 of its SPKI DER (`openssl pkey -pubin -outform DER | sha256sum`): digests carry
//! it, so `verify` picks the right key from a set, and a rotated key starts a new link.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{ArchiveError, Result};

/// File names `keys new` writes.
pub const PRIVATE_FILE: &str = "archive-signing.key";
pub const PUBLIC_FILE: &str = "archive-signing.pub";

/// The key a run signs its digest with.
#[derive(Clone)]
pub struct Signer25519 {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for Signer25519 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself, not even in a debug log.
        f.debug_struct("Signer25519").field("id", &self.id).finish()
    }
}

impl Signer25519 {
    /// Reads a PKCS#8 PEM private key (`AUDIT_ARCHIVE_SIGNING_KEY_FILE`).
    pub fn load(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ArchiveError::Config(format!("signing key {}: {e}", path.display())))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            ArchiveError::Config(format!(
                "signing key {}: not an Ed25519 PKCS#8 PEM private key ({e})",
                path.display()
            ))
        })?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Signer25519 { key, id }
    }

    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| ArchiveError::Config(format!("no randomness for a new key: {e}")))?;
        Ok(Self::from_key(SigningKey::from_bytes(&seed)))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        self.key.sign(bytes).to_bytes()
    }

    /// PKCS#8 v1 (the private key alone), as `openssl genpkey` writes it: OpenSSL 3.0 cannot
    /// read the v2 form (with the public key inside) that the key type writes by default.
    pub fn private_pem(&self) -> Result<String> {
        let v1 = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = v1
            .to_pkcs8_pem(Default::default())
            .map_err(|e| ArchiveError::Config(format!("cannot encode the private key: {e}")))?;
        Ok(pem.to_string())
    }

    pub fn public_pem(&self) -> Result<String> {
        public_pem(&self.key.verifying_key())
    }
}

fn public_pem(key: &VerifyingKey) -> Result<String> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| ArchiveError::Config(format!("cannot encode the public key: {e}")))
}

/// `sha256:<hex>` of the key's SPKI DER.
pub fn key_id(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        // SPKI of an Ed25519 key cannot fail to encode; the raw key still names it uniquely.
        .unwrap_or_else(|_| key.as_bytes().to_vec());
    format!("sha256:{}", hex::encode(Sha256::digest(&der)))
}

/// The public keys `verify` accepts, by id.
#[derive(Debug, Default)]
pub struct PublicKeys {
    by_id: BTreeMap<String, VerifyingKey>,
}

impl PublicKeys {
    /// Reads SPKI PEM files; a directory stands for its `*.pub` and `*.pem` files (a
    /// Kubernetes ConfigMap mounted as a directory).
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let mut keys = PublicKeys::default();
        for p in paths {
            if p.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| ArchiveError::Config(format!("{}: {e}", p.display())))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.is_file()
                            && matches!(f.extension().and_then(|x| x.to_str()), Some("pub" | "pem"))
                    })
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(ArchiveError::Config(format!(
                        "{}: no *.pub or *.pem public key in this directory",
                        p.display()
                    )));
                }
                for f in files {
                    keys.add_file(&f)?;
                }
            } else {
                keys.add_file(p)?;
            }
        }
        Ok(keys)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ArchiveError::Config(format!("public key {}: {e}", path.display())))?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
            ArchiveError::Config(format!(
                "public key {}: not an Ed25519 SPKI PEM public key ({e})",
                path.display()
            ))
        })?;
        self.by_id.insert(key_id(&key), key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    /// Whether `signature` is the key `id`'s over `bytes`: `None` when no such key is given.
    pub fn verify(&self, id: &str, bytes: &[u8], signature: &[u8]) -> Option<bool> {
        let key = self.by_id.get(id)?;
        let Ok(sig) = Signature::from_slice(signature) else {
            return Some(false);
        };
        Some(key.verify(bytes, &sig).is_ok())
    }
}

/// `keys new --out DIR`: writes the pair (the private key readable by its owner only) and
/// returns the key id. Existing files are never overwritten: a lost signing key cannot be
/// replaced by accident, and a rotation is a new directory.
pub fn write_new(dir: &Path) -> Result<(String, PathBuf, PathBuf)> {
    let signer = Signer25519::generate()?;
    std::fs::create_dir_all(dir)
        .map_err(|e| ArchiveError::Config(format!("{}: {e}", dir.display())))?;
    let private = dir.join(PRIVATE_FILE);
    let public = dir.join(PUBLIC_FILE);
    for f in [&private, &public] {
        if f.exists() {
            return Err(ArchiveError::Config(format!(
                "{} exists; keys are never overwritten (use another --out directory)",
                f.display()
            )));
        }
    }
    write_file(&private, signer.private_pem()?.as_bytes(), 0o600)?;
    write_file(&public, signer.public_pem()?.as_bytes(), 0o644)?;
    Ok((signer.id().to_owned(), private, public))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| ArchiveError::Config(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| ArchiveError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pair_signs_and_verifies_and_is_named_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let (id, private, public) = write_new(dir.path()).unwrap();
        assert!(id.starts_with("sha256:") && id.len() == 7 + 64);
        let signer = Signer25519::load(&private).unwrap();
        assert_eq!(signer.id(), id);
        let keys = PublicKeys::load(std::slice::from_ref(&public)).unwrap();
        assert_eq!(keys.ids(), vec![id.clone()]);
        let sig = signer.sign(b"digest");
        assert_eq!(keys.verify(&id, b"digest", &sig), Some(true));
        assert_eq!(keys.verify(&id, b"digest!", &sig), Some(false));
        assert_eq!(keys.verify("sha256:00", b"digest", &sig), None);
        // The directory form reads the same key; writing again is refused.
        assert_eq!(
            PublicKeys::load(&[dir.path().to_owned()]).unwrap().ids(),
            vec![id]
        );
        assert!(write_new(dir.path()).is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // openssl reads it and derives the same public key.
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, std::fs::read(&public).unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_key_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, "not a key").unwrap();
        assert!(matches!(
            Signer25519::load(&f),
            Err(ArchiveError::Config(_))
        ));
        assert!(matches!(
            PublicKeys::load(&[f]),
            Err(ArchiveError::Config(_))
        ));
    }
}
