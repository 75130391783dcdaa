//! Admin authentication: one bearer token, kept only as a hash.
//!
//! The token is `DESKBOOT_ADMIN_TOKEN` when set. Otherwise one is made at
//! first start: its SHA-256 goes in the store and the token itself in
//! `<data>/admin.token` (mode 0600), where the CLI finds it. A hash of a
//! 256-bit random token needs no slow password hash, and checking it on
//! every API call costs microseconds.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError};

/// The file, under the data directory, that holds a generated token.
pub const TOKEN_FILE: &str = "admin.token";
const TOKEN_HASH_KEY: &str = "admin_token_sha256";

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token file could not be written.
    #[error("cannot write {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hash of the token the admin API accepts.
#[derive(Clone)]
pub struct AdminToken {
    sha256: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token from the environment if given, else the stored one, else a
    /// new one written to `<data_dir>/admin.token`.
    pub fn setup(
        store: &Store,
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<AdminToken, AuthError> {
        if let Some(token) = from_env.filter(|t| !t.is_empty()) {
            return Ok(AdminToken::of(token));
        }
        if let Some(hash) = store.meta(TOKEN_HASH_KEY)?
            && let Ok(sha256) = <[u8; 32]>::try_from(hash.as_slice())
            && data_dir.join(TOKEN_FILE).exists()
        {
            return Ok(AdminToken { sha256 });
        }
        let token = random_secret(43);
        let path = data_dir.join(TOKEN_FILE);
        write_private(&path, &format!("{token}\n")).map_err(|source| AuthError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let admin = AdminToken::of(&token);
        store.put_meta(TOKEN_HASH_KEY, &admin.sha256)?;
        tracing::info!(file = %path.display(), "generated an admin token");
        Ok(admin)
    }

    fn of(token: &str) -> AdminToken {
        AdminToken {
            sha256: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `token` is the admin token (constant time).
    pub fn accepts(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        presented.ct_eq(&self.sha256).into()
    }
}

/// A random string of letters and digits: safe in every config format.
pub fn random_secret(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_written_privately_and_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let admin = AdminToken::setup(&store, dir.path(), None).unwrap();
        let file = dir.path().join(TOKEN_FILE);
        let token = std::fs::read_to_string(&file).unwrap();
        assert!(admin.accepts(token.trim()));
        assert!(!admin.accepts("guess"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The next start keeps the same token.
        let again = AdminToken::setup(&store, dir.path(), None).unwrap();
        assert!(again.accepts(token.trim()));
    }
}
