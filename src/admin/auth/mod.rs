//! Admin authentication: bearer tokens, kept only as hashes.
//!
//! The bootstrap token (actor `admin`, scope write) is `DESKBOOT_ADMIN_TOKEN`
//! when set, and then at least [`MIN_BOOTSTRAP_TOKEN_CHARS`] long.
//! Otherwise one is made at first start: its SHA-256 goes in the store and
//! the token itself in `<data>/admin.token` (mode 0600), where the CLI
//! finds it. Nodes sharing a database share the token the first of them
//! made, whether or not their own data directory has the file. A hash of a 256-bit random token needs no slow password hash,
//! and checking it on every API call costs microseconds.
//!
//! Named tokens (`<name>.<secret>`, a [`Scope`]) are made and
//! revoked through the API; the store keeps an argon2 hash of each secret.
//! A token that passed argon2 once is remembered by its SHA-256, so only
//! the first call of a token pays for argon2; a revoked token is refused at
//! once because the store is asked on every call.
//!
//! argon2 is slow on purpose, so wrong tokens must not cost phones
//! anything: it runs on a few blocking threads, never on the async workers
//! the phones share, and an unknown name costs one verify like a known one,
//! so the time does not tell which names exist. [`lockout`] answers the
//! wrong tokens of an address later, then not at all for a while.
//! [`uses`] remembers when each token was last let in.

mod lockout;
mod uses;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::secret::random_secret;
use crate::store::data_dir::write_private;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::domain::records::{ApiToken, Scope};
use crate::store::{Store, StoreError};
use lockout::{Lockout, Verdict};
pub use uses::{BOOTSTRAP_NAME, TokenUses, last_use_since};

/// The file, under the data directory, that holds a generated token.
pub const TOKEN_FILE: &str = "admin.token";
/// The store's named value holding the admin token's hash.
pub const TOKEN_HASH_KEY: &str = "admin_token_sha256";

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
        let path = data_dir.join(TOKEN_FILE);
        // On a store only this node opens, a missing file was the token's
        // only copy: a new one loses nothing. Nodes sharing a database
        // share the token the first of them made.
        if let Some(stored) = Self::stored(store)?
            && (path.exists() || store.is_shared())
        {
            if !path.exists() {
                tracing::info!(
                    file = %path.display(),
                    "the admin token is the one another node made: copy its admin.token here for the CLI, or set DESKBOOT_ADMIN_TOKEN"
                );
            }
            return Ok(stored);
        }
        let token = random_secret(43);
        write_private(&path, &format!("{token}\n")).map_err(|source| AuthError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let admin = AdminToken::of(&token);
        if !store.is_shared() {
            store.put_meta(TOKEN_HASH_KEY, &admin.sha256)?;
            tracing::info!(file = %path.display(), "generated an admin token");
            return Ok(admin);
        }
        // Two nodes starting at once on a new database: one token wins.
        let kept = store.claim_meta(TOKEN_HASH_KEY, &admin.sha256)?;
        if kept == admin.sha256 {
            tracing::info!(file = %path.display(), "generated an admin token");
            return Ok(admin);
        }
        let _ = std::fs::remove_file(&path);
        Self::stored(store)?.ok_or(AuthError::Store(StoreError::NotFound(
            "the admin token another node made".into(),
        )))
    }

    /// The token whose hash the store holds, if any.
    fn stored(store: &Store) -> Result<Option<AdminToken>, AuthError> {
        let hash = store.meta(TOKEN_HASH_KEY)?;
        Ok(hash
            .and_then(|hash| <[u8; 32]>::try_from(hash.as_slice()).ok())
            .map(|sha256| AdminToken { sha256 }))
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

/// Why an API call was not let in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// It presented no token.
    #[error("no admin token")]
    Missing,
    /// Its token is not one.
    #[error("wrong admin token")]
    Wrong,
    /// Its address sent too many wrong tokens; it may try again after the
    /// given time.
    #[error("too many wrong admin tokens from this address")]
    Banned(Duration),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks presented tokens: the bootstrap one and the named ones.
#[derive(Debug)]
pub struct Authenticator {
    admin: AdminToken,
    /// SHA-256 of named tokens that passed argon2, with their name.
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// The hash of a random secret, made with the parameters of every
    /// named token's: an unknown name's secret is checked against it.
    decoy_hash: String,
    /// One permit per argon2 check allowed at once.
    argon2_turns: Arc<Semaphore>,
    lockout: Lockout,
    uses: TokenUses,
}

impl Authenticator {
    /// Checks the bootstrap `admin` token and the store's named tokens.
    pub fn new(admin: AdminToken) -> Result<Self, AuthError> {
        Ok(Authenticator {
            admin,
            verified: Mutex::new(HashMap::new()),
            decoy_hash: hash_secret(&random_secret(43))?,
            argon2_turns: Arc::new(Semaphore::new(argon2_threads())),
            lockout: Lockout::default(),
            uses: TokenUses::default(),
        })
    }

    /// When each token was last let in.
    pub fn uses(&self) -> &TokenUses {
        &self.uses
    }

    /// Who presented `presented` from `peer`. A wrong token is counted
    /// against the address and, after a few, answered late; a banned
    /// address is refused before its token is looked at.
    pub async fn identify(
        &self,
        store: &Store,
        peer: IpAddr,
        presented: Option<&str>,
    ) -> Result<Caller, Refusal> {
        if let Some(left) = self.lockout.banned(peer, Instant::now()) {
            return Err(Refusal::Banned(left));
        }
        let presented = presented.ok_or(Refusal::Missing)?;
        if let Some(caller) = self.check(store, peer, presented).await? {
            self.uses
                .note(&caller.name, crate::domain::clock::unix_now());
            return Ok(caller);
        }
        match self.lockout.failed(peer, Instant::now()) {
            Verdict::Now => Err(Refusal::Wrong),
            Verdict::After(delay) => {
                tokio::time::sleep(delay).await;
                Err(Refusal::Wrong)
            }
            Verdict::Banned(left) => Err(Refusal::Banned(left)),
        }
    }

    /// Who `presented` is, if it is a valid token.
    async fn check(
        &self,
        store: &Store,
        peer: IpAddr,
        presented: &str,
    ) -> Result<Option<Caller>, Refusal> {
        if self.admin.accepts(presented) {
            return Ok(Some(Caller {
                name: BOOTSTRAP_NAME.into(),
                scope: Scope::Write,
            }));
        }
        let Some((name, secret)) = presented.split_once('.') else {
            return Ok(None);
        };
        // Asked every time, so a revoked token stops working at once.
        let token = store.token(name)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(token) = &token
            && self.remembers(&digest, name)
        {
            return Ok(Some(Caller::of(token)));
        }
        let hash = token.as_ref().map_or(&self.decoy_hash, |t| &t.hash);
        let matches = self.verify(peer, secret, hash).await?;
        match token {
            Some(token) if matches => {
                self.remember(digest, name);
                Ok(Some(Caller::of(&token)))
            }
            _ => Ok(None),
        }
    }

    /// Whether `secret` matches the argon2 `hash`, checked on a blocking
    /// thread once one of the few is free.
    async fn verify(&self, peer: IpAddr, secret: &str, hash: &str) -> Result<bool, Refusal> {
        let Ok(turn) = self.argon2_turns.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return Ok(false);
        };
        // A ban may have come while this call waited its turn.
        if let Some(left) = self.lockout.banned(peer, Instant::now()) {
            return Err(Refusal::Banned(left));
        }
        let (secret, hash) = (secret.to_string(), hash.to_string());
        let checked = tokio::task::spawn_blocking(move || {
            // Held until argon2 is done, even if the caller has gone.
            let _turn = turn;
            Argon2::default()
                .verify_password(secret.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await;
        Ok(checked.unwrap_or(false))
    }

    fn remembers(&self, digest: &[u8; 32], name: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(digest).is_some_and(|n| n == name)
    }

    fn remember(&self, digest: [u8; 32], name: &str) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(digest, name.to_string());
    }
}

impl Caller {
    fn of(token: &ApiToken) -> Caller {
        Caller {
            name: token.name.clone(),
            scope: token.scope,
        }
    }
}

/// How many argon2 checks run at once: half the cores, at least one, so
/// that a flood of wrong tokens leaves the other half to the phones (each
/// check also holds argon2's 19 MiB while it runs).
fn argon2_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Makes a named token: the record to store and the token to show once.
pub fn new_named_token(name: &str, scope: Scope) -> Result<(ApiToken, String), AuthError> {
    let secret = random_secret(43);
    let token = ApiToken {
        name: name.to_string(),
        scope,
        created: crate::domain::clock::unix_now(),
        hash: hash_secret(&secret)?,
    };
    Ok((token, format!("{name}.{secret}")))
}

/// The argon2 PHC string of `secret`, with argon2's default parameters.
fn hash_secret(secret: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;
    use futures_util::FutureExt;

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
        // Without its file nobody holds it: a new one is made.
        std::fs::remove_file(&file).unwrap();
        let new = AdminToken::setup(&store, dir.path(), None).unwrap();
        assert!(!new.accepts(token.trim()));
        assert!(new.accepts(std::fs::read_to_string(&file).unwrap().trim()));
    }

    #[test]
    fn nodes_sharing_a_database_share_the_first_nodes_token() {
        use crate::store::postgres::{PostgresBackend, test_cluster::TestCluster};
        let url = TestCluster::shared().database();
        let node = || Store::on(Box::new(PostgresBackend::open(&url).unwrap()));
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = AdminToken::setup(&node(), dir_a.path(), None).unwrap();
        let token = std::fs::read_to_string(dir_a.path().join(TOKEN_FILE)).unwrap();
        let b = AdminToken::setup(&node(), dir_b.path(), None).unwrap();
        assert!(a.accepts(token.trim()) && b.accepts(token.trim()));
        assert!(!dir_b.path().join(TOKEN_FILE).exists());
        // Each node's restart keeps it, whichever data directory has the file.
        for dir in [&dir_a, &dir_b] {
            let again = AdminToken::setup(&node(), dir.path(), None).unwrap();
            assert!(again.accepts(token.trim()));
        }
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

    /// The PHC string up to its salt: algorithm, version and parameters.
    fn parameters(hash: &str) -> Vec<&str> {
        hash.split('$').take(4).collect()
    }

    #[tokio::test]
    async fn an_unknown_name_waits_for_argon2_as_a_wrong_secret_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (record, _) = new_named_token("ops", Scope::Write).unwrap();
        let put = vec![Change::PutToken(record.clone())];
        store
            .change("test", |_| Ok::<_, StoreError>((put, ())))
            .await
            .unwrap();
        let auth = Authenticator::new(AdminToken::of("bootstrap-token-for-tests")).unwrap();
        assert_eq!(parameters(&auth.decoy_hash), parameters(&record.hash));

        // With every argon2 thread taken, both wait for one; the bootstrap
        // token, which needs none, does not.
        let threads = u32::try_from(argon2_threads()).unwrap();
        let taken = auth.argon2_turns.clone().acquire_many_owned(threads).await;
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let mut unknown = Box::pin(auth.identify(&store, peer, Some("nobody.wrong-secret")));
        let mut wrong = Box::pin(auth.identify(&store, peer, Some("ops.wrong-secret")));
        assert!((&mut unknown).now_or_never().is_none());
        assert!((&mut wrong).now_or_never().is_none());
        let admin = auth.identify(&store, peer, Some("bootstrap-token-for-tests"));
        assert!(matches!(admin.now_or_never(), Some(Ok(_))));
        drop(taken);
        assert!(matches!(unknown.await, Err(Refusal::Wrong)));
        assert!(matches!(wrong.await, Err(Refusal::Wrong)));
    }
}
