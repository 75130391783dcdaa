//! Admin authentication: bearer tokens, kept only as hashes.
//!
//! The bootstrap token (actor `admin`, scope write) is `DESKBOOT_ADMIN_TOKEN`
//! when set, and then at least [`MIN_BOOTSTRAP_TOKEN_CHARS`] long. Otherwise one is made at first start: its SHA-256 goes in the
//! store and the token itself in `<data>/admin.token` (mode 0600), where the
//! CLI finds it. A hash of a 256-bit random token needs no slow password
//! hash, and checking it on every API call costs microseconds.
//!
//! Named tokens (`<name>.<secret>`, scope read or write) are made and
//! revoked through the API; the store keeps an argon2 hash of each secret.
//! A token that passed argon2 once is remembered by its SHA-256, so only
//! the first call of a token pays for argon2; a revoked token is refused at
//! once because the store is asked on every call.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::model::{ApiToken, Scope};
use crate::store::{Store, StoreError};

/// The file, under the data directory, that holds a generated token.
pub const TOKEN_FILE: &str = "admin.token";
const TOKEN_HASH_KEY: &str = "admin_token_sha256";

/// The shortest bootstrap token accepted from the environment: it is
/// checked as a plain SHA-256, so its length is all that keeps it from
/// being guessed.
pub const MIN_BOOTSTRAP_TOKEN_CHARS: usize = 16;

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bootstrap token given is too short to resist guessing.
    #[error(
        "the admin token (DESKBOOT_ADMIN_TOKEN or --admin-token) is too short \
         ({chars} characters): it needs at least {MIN_BOOTSTRAP_TOKEN_CHARS}; leave it unset to have one generated \
         into <data>/admin.token"
    )]
    ShortToken {
        /// How many characters it has.
        chars: usize,
    },
    /// Hashing a new token's secret failed.
    #[error("cannot hash a token: {0}")]
    Hash(String),
    /// The token file could not be written.
    #[error("cannot write {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
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
    /// The token from the environment if given (refused when shorter than
    /// [`MIN_BOOTSTRAP_TOKEN_CHARS`]), else the stored one, else a new one
    /// written to `<data_dir>/admin.token`.
    pub fn setup(
        store: &Store,
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<AdminToken, AuthError> {
        // Presented tokens are trimmed, so the stored one must be too.
        if let Some(token) = from_env.map(str::trim).filter(|t| !t.is_empty()) {
            let chars = token.chars().count();
            if chars < MIN_BOOTSTRAP_TOKEN_CHARS {
                return Err(AuthError::ShortToken { chars });
            }
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

/// Who made an API call: the token's name (the audit log's actor) and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin` for the bootstrap token, else the named token's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// The most verified named tokens remembered (each is 32 bytes and a name).
const MAX_REMEMBERED: usize = 1024;

/// Checks presented tokens: the bootstrap one and the named ones.
#[derive(Debug)]
pub struct Authenticator {
    admin: AdminToken,
    /// SHA-256 of named tokens that passed argon2, with their name.
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl Authenticator {
    /// Checks the bootstrap `admin` token and the store's named tokens.
    pub fn new(admin: AdminToken) -> Self {
        Authenticator {
            admin,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Who `presented` is, if it is a valid token.
    pub fn identify(&self, store: &Store, presented: &str) -> Result<Option<Caller>, StoreError> {
        if self.admin.accepts(presented) {
            return Ok(Some(Caller {
                name: "admin".into(),
                scope: Scope::Write,
            }));
        }
        let Some((name, secret)) = presented.split_once('.') else {
            return Ok(None);
        };
        // Asked every time, so a revoked token stops working at once.
        let Some(token) = store.token(name)? else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let known = verified.get(&digest).is_some_and(|n| n == name);
        if !known {
            if Argon2::default()
                .verify_password(secret.as_bytes(), token.hash.as_str())
                .is_err()
            {
                return Ok(None);
            }
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(digest, name.to_string());
        }
        Ok(Some(Caller {
            name: token.name,
            scope: token.scope,
        }))
    }
}

/// Makes a named token: the record to store and the token to show once.
pub fn new_named_token(name: &str, scope: Scope) -> Result<(ApiToken, String), AuthError> {
    let secret = random_secret(43);
    let hash = Argon2::default()
        .hash_password(secret.as_bytes())
        .map_err(|e| AuthError::Hash(e.to_string()))?
        .to_string();
    let token = ApiToken {
        name: name.to_string(),
        scope,
        created: crate::store::unix_now(),
        hash,
    };
    Ok((token, format!("{name}.{secret}")))
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

    #[test]
    fn a_bootstrap_token_from_the_environment_has_at_least_16_characters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        for short in ["a", "fifteen-chars-x", " padded-to-16  "] {
            let refused = AdminToken::setup(&store, dir.path(), Some(short));
            assert!(
                matches!(refused, Err(AuthError::ShortToken { .. })),
                "{short:?}"
            );
        }
        let admin = AdminToken::setup(&store, dir.path(), Some("sixteen-chars-xy")).unwrap();
        assert!(admin.accepts("sixteen-chars-xy"));
    }
}
