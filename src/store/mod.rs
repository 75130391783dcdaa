//! The store: users, devices and settings in sled, behind a narrow typed API.
//!
//! Values are JSON (readable, and tolerant of new fields). Every change that
//! touches more than one record (a user and its indexes) is one sled
//! transaction, so a crash leaves either all of it or none. Changes also go
//! through one writer lock: administrators write rarely, and serialising them
//! lets a check ("is this user on a device?") and the write that depends on it
//! see the same data. A change is on disk before [`Store::change`] returns,
//! so no answer to an administrator tells of a change a crash can still take
//! back. Phones only read; what the server notes about them (sightings,
//! discovered MACs, last good files) is written in batches and reaches the
//! disk with the server's next flush tick.
//!
//! A write the disk refuses (full, or failing) is refused to its caller
//! too, and leaves sled refusing everything after it, reads included: the
//! store then reopens the database (with the room it set aside for that,
//! [`SPACE_RESERVE_BYTES`]), takes no more changes ([`StoreState`]), and
//! takes them again once [`Store::recover`] finds room on the disk.

pub(crate) mod audit;
pub(crate) mod data_dir;

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::progress::{self, Report, Stage};
use crate::domain::records::{
    ApiToken, Device, Discovered, Invalid, LastGood, Settings, Sighting, User, UserId,
};
use audit::AuditEntry;

/// The schema this binary reads and writes. Bump it, and add a migration to
/// `Store::migrate`, when a stored shape changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;

const SCHEMA_KEY: &[u8] = b"schema_version";
/// How many users and devices there are, kept with every change that adds
/// or removes one (since schema 2): sled can only count a tree by reading
/// all of it, which for 10,000 of each put 9 MiB into memory on every
/// `/metrics` scrape.
const USER_COUNT_KEY: &[u8] = b"user_count";
const DEVICE_COUNT_KEY: &[u8] = b"device_count";
/// The last user id handed out: users are numbered 1, 2, 3... and an id is never reused.
const USER_COUNTER_KEY: &[u8] = b"last_user_id";
/// Settings scope key of the global settings.
pub const GLOBAL_SCOPE: &str = "global";

/// Records written per sled batch. A batch holds sled's process-wide write
/// lock, which stops every read of every tree (a render's device and users),
/// and pins sled's epoch, so nothing it replaces is freed before it ends.
/// In one batch, a storm's 10,000 sightings stalled the renders and cost
/// about 20 MiB of RSS for good.
const RECORDS_PER_BATCH: usize = 256;

/// Room kept on the disk, in a file beside sled's, for the moment the disk
/// fills: sled reopens only by writing (a snapshot, a fresh log segment of
/// 512 KiB), so the file is deleted to make that room. Creating it again is
/// how [`Store::recover`] learns that space is back.
pub const SPACE_RESERVE_BYTES: usize = 2 << 20;
/// The file holding [`SPACE_RESERVE_BYTES`], in the store's directory.
const SPACE_RESERVE_FILE: &str = "space_reserve";
/// How long a reopen waits for the last requests on the old handles, and
/// sled's own threads, to let go of the database's file lock.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (disk, lock).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// The data directory was written by a newer deskboot.
    #[error(
        "the data directory has schema version {found}, but this deskboot only knows up to {supported}: use a newer deskboot"
    )]
    NewerSchema {
        /// The store's schema version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// A stored value does not decode.
    #[error("store: corrupt record in {tree}: {message}")]
    Corrupt {
        /// The sled tree.
        tree: &'static str,
        /// Why it does not decode.
        message: String,
    },
    /// The record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique field is already taken, or a referenced record is missing.
    #[error("{0}")]
    Conflict(Invalid),
    /// The record is still used by another one.
    #[error("{0}")]
    InUse(String),
    /// The disk holding the data directory is full: the change was not saved.
    #[error(
        "disk full: the data directory's disk has no space left, so the change was not saved; free space there and the server takes changes again by itself"
    )]
    DiskFull,
    /// The store cannot take changes (or answer at all) after a disk failure.
    #[error("the store is unavailable after a disk failure ({0}); see the server log")]
    Unavailable(String),
}

/// Whether the store can take changes, as `/healthz` and `/metrics` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreState {
    /// Reads and changes work.
    #[default]
    Ok,
    /// The disk is full: reads work, changes are refused until space is back.
    ReadOnly,
    /// The disk failed otherwise, or sled would not reopen: changes are
    /// refused, and reads may fail.
    Failed,
}

impl StoreState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [StoreState; 3] = [StoreState::Ok, StoreState::ReadOnly, StoreState::Failed];

    /// The state's name in `/healthz` and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::ReadOnly => "read_only",
            StoreState::Failed => "failed",
        }
    }

    /// What an operator should do about the state.
    pub fn advice(self) -> &'static str {
        match self {
            StoreState::Ok => "the store takes changes",
            StoreState::ReadOnly => {
                "the data directory's disk is full: phones are served and the API reads, but changes are refused; free space on that disk and the server takes changes again by itself within seconds"
            }
            StoreState::Failed => {
                "the data directory's disk failed: changes are refused and reads may fail; see the server log for the error, check the disk, and the server retries by itself every few seconds"
            }
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    /// Where sled keeps its files, for a reopen.
    dir: PathBuf,
    /// The open database; none while it is being reopened, or when a
    /// reopen failed.
    trees: ArcSwapOption<Trees>,
    /// Changed only by [`Store::enter`], which logs each change once.
    state: Mutex<StoreState>,
    /// One reopen at a time: two writes failing together reopen once.
    reopening: Mutex<()>,
    /// How many times the database was opened: which opening a failed
    /// write used, so a reopen after it is not done twice.
    openings: AtomicU64,
    writer: Mutex<()>,
    /// Bumped after every applied change: caches compare it.
    generation: AtomicU64,
}

/// One opening of the database: its handles, swapped whole for fresh ones
/// when a failed write has left sled refusing them.
struct Trees {
    /// Which opening this is ([`Store::openings`]).
    opening: u64,
    db: sled::Db,
    users: sled::Tree,
    devices: sled::Tree,
    settings: sled::Tree,
    by_extension: sled::Tree,
    by_sip_username: sled::Tree,
    by_email: sled::Tree,
    templates: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    sightings: sled::Tree,
    discovered: sled::Tree,
    last_good: sled::Tree,
    tokens: sled::Tree,
}

impl Trees {
    fn open(dir: &Path, opening: u64) -> Result<Trees, sled::Error> {
        // Hot files are served from the render cache, so sled's page cache
        // only speeds up renders: 8 MiB renders a cold 10,000-phone storm as
        // fast as 32 MiB did, and keeps 24 MiB less after it (BENCHMARKS.md).
        //
        // No background flusher: once a store of thousands of devices has
        // been reopened, sled's flusher spends every idle moment after the
        // first write rewriting pages, about 1.2 MB/s for as long as the
        // server runs, without making the file any smaller. We flush instead:
        // the store each change as it is made (`Store::change`), the server
        // the sightings every tick (BENCHMARKS.md, "sled's flusher").
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 << 20)
            .flush_every_ms(None)
            .open()?;
        Ok(Trees {
            opening,
            users: db.open_tree("users")?,
            devices: db.open_tree("devices")?,
            settings: db.open_tree("settings")?,
            by_extension: db.open_tree("idx_extension")?,
            by_sip_username: db.open_tree("idx_sip_username")?,
            by_email: db.open_tree("idx_email")?,
            templates: db.open_tree("templates")?,
            audit: db.open_tree("audit")?,
            meta: db.open_tree("meta")?,
            sightings: db.open_tree("sightings")?,
            discovered: db.open_tree("discovered")?,
            last_good: db.open_tree("last_good")?,
            tokens: db.open_tree("tokens")?,
            db,
        })
    }

    /// Opens the database, waiting up to [`REOPEN_TIMEOUT`] for handles
    /// just dropped to let go of its file lock.
    fn reopen(dir: &Path, opening: u64) -> Result<Trees, sled::Error> {
        let deadline = Instant::now() + REOPEN_TIMEOUT;
        loop {
            match Trees::open(dir, opening) {
                Err(e) if is_locked(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => return opened,
            }
        }
    }
}

/// The error of an operation while the database is closed (being reopened,
/// or after a reopen failed).
fn not_open() -> StoreError {
    StoreError::Unavailable("the database is not open".into())
}

/// Whether sled refused to open because another handle holds its files.
fn is_locked(e: &sled::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Whether an I/O error means the disk (or the user's quota) is full.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// The state a store is in after the disk refused a write with `e`.
fn state_after(e: &std::io::Error) -> StoreState {
    if is_disk_full(e) {
        StoreState::ReadOnly
    } else {
        StoreState::Failed
    }
}

/// One record-level change; a list of them is applied atomically by
/// [`Store::change`], each with its audit entry.
// Changes live only between planning and applying; boxing the big variants
// would add noise for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    /// Create (no `old`) or replace a user.
    PutUser {
        /// The record as it will be.
        new: User,
        /// The record as it was (none for a new one).
        old: Option<User>,
    },
    /// Delete a user.
    DeleteUser(User),
    /// Create (no `old`) or replace a device.
    PutDevice {
        /// The record as it will be.
        new: Device,
        /// The record as it was (none for a new one).
        old: Option<Device>,
    },
    /// Delete a device and what the server saw of it.
    DeleteDevice(Device),
    /// Replace the settings of a scope.
    PutSettings {
        /// `global` or `model:<id>`.
        scope: String,
        /// The record as it will be.
        new: Settings,
        /// The record as it was (none for a new one).
        old: Settings,
    },
    /// Store an uploaded template's history.
    PutTemplate {
        /// The template's key.
        key: String,
        /// The record as it will be.
        new: TemplateHistory,
        /// The record as it was (none for a new one).
        old: Option<TemplateHistory>,
    },
    /// Forget an uploaded template and its history.
    DeleteTemplate {
        /// The template's key.
        key: String,
        /// The record as it was (none for a new one).
        old: TemplateHistory,
    },
    /// Forget a discovered MAC (it was adopted).
    DeleteDiscovered(Mac),
    /// Create a named admin token.
    PutToken(ApiToken),
    /// Revoke a named admin token.
    DeleteToken(ApiToken),
}

impl Change {
    /// The audit description: action, target and what changed.
    fn describe(&self) -> (String, String, Value) {
        let json = |v: &dyn erased::Json| v.to_json();
        match self {
            Change::PutUser { new, old } => (
                verb("user", old.is_some()),
                format!("user/{}", new.id),
                audit::diff(&old.as_ref().map_or(json!({}), |o| json(o)), &json(new)),
            ),
            Change::DeleteUser(user) => (
                "user.delete".into(),
                format!("user/{}", user.id),
                json!({"extension": user.extension}),
            ),
            Change::PutDevice { new, old } => (
                verb("device", old.is_some()),
                format!("device/{}", new.mac),
                audit::diff(&old.as_ref().map_or(json!({}), |o| json(o)), &json(new)),
            ),
            Change::DeleteDevice(device) => (
                "device.delete".into(),
                format!("device/{}", device.mac),
                json!({"model": device.model}),
            ),
            Change::PutSettings { scope, new, old } => (
                "settings.update".into(),
                format!("settings/{scope}"),
                audit::diff(&json(old), &json(new)),
            ),
            Change::PutTemplate { key, new, .. } => (
                "template.put".into(),
                format!("template/{key}"),
                new.current().map_or(json!({"active": false}), |v| {
                    json!({"active": new.active, "version": v.version, "bytes": v.source.len()})
                }),
            ),
            Change::DeleteTemplate { key, .. } => {
                ("template.delete".into(), format!("template/{key}"), Value::Null)
            }
            Change::DeleteDiscovered(mac) => (
                "discovered.delete".into(),
                format!("discovered/{mac}"),
                Value::Null,
            ),
            Change::PutToken(token) => (
                "token.create".into(),
                format!("token/{}", token.name),
                json!({"scope": token.scope}),
            ),
            Change::DeleteToken(token) => {
                ("token.delete".into(), format!("token/{}", token.name), Value::Null)
            }
        }
    }
}

/// `kind.create` or `kind.update`.
fn verb(kind: &str, existed: bool) -> String {
    format!("{kind}.{}", if existed { "update" } else { "create" })
}

/// A change applied by [`Store::apply_plan`]: the plan's result, and whether
/// any record changed (a plan may find nothing to do: a dry run).
struct Planned<T> {
    result: T,
    applied: bool,
}

/// Serialising for audit diffs without naming every type.
mod erased {
    pub trait Json {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// An uploaded template: every accepted version, newest last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateHistory {
    /// Whether the newest version is in force (false after a delete: the
    /// built-in template is back, the history is kept for a rollback).
    pub active: bool,
    /// Every accepted version.
    pub versions: Vec<TemplateVersion>,
}

impl TemplateHistory {
    /// The version in force, if any.
    pub fn current(&self) -> Option<&TemplateVersion> {
        self.versions.last().filter(|_| self.active)
    }
}

/// One accepted upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// From 1.
    pub version: u32,
    /// The Tera source.
    pub source: String,
    /// Who uploaded it.
    pub author: String,
    /// Unix time, seconds.
    pub at: u64,
    /// Why it exists, e.g. "rollback to 2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, and migrates it if needed.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            dir: dir.to_path_buf(),
            trees: ArcSwapOption::from_pointee(Trees::open(dir, 0)?),
            state: Mutex::new(StoreState::Ok),
            reopening: Mutex::new(()),
            openings: AtomicU64::new(0),
            writer: Mutex::new(()),
            generation: AtomicU64::new(0),
        };
        store.migrate()?;
        if let Err(e) = store.keep_space_reserve() {
            store.enter(state_after(&e), &e.to_string());
        }
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found = match self.trees()?.meta.get(SCHEMA_KEY)? {
            None => 0,
            Some(bytes) => decode::<u32>("meta", &bytes)?,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Version 0 is an empty, new store; version 1 kept no counts.
        if found < SCHEMA_VERSION {
            self.write(|trees| {
                let mut batch = sled::Batch::default();
                let count = |tree: &sled::Tree| (tree.len() as u64).to_be_bytes().to_vec();
                batch.insert(USER_COUNT_KEY, count(&trees.users));
                batch.insert(DEVICE_COUNT_KEY, count(&trees.devices));
                batch.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION));
                trees.meta.apply_batch(batch)?;
                trees.db.flush()?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The open database, for one operation. Callers drop it before they
    /// return: a reopen waits for every handle on the old one.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees.load_full().ok_or_else(not_open)
    }

    /// Runs a read on the open database. Phones' renders read through
    /// here: a borrowed guard, not a counted handle, so they do not all
    /// bump one shared reference count.
    fn read<T>(&self, op: impl FnOnce(&Trees) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self.trees.load().as_deref() {
            Some(trees) => op(trees),
            None => Err(not_open()),
        }
    }

    /// Whether the store takes changes now.
    pub fn state(&self) -> StoreState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves to `state`, logging the move (once: a state entered again says nothing).
    fn enter(&self, state: StoreState, cause: &str) {
        let mut current = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *current == state {
            return;
        }
        *current = state;
        let advice = state.advice();
        match state {
            StoreState::Ok => tracing::info!(state = state.name(), "{advice}"),
            StoreState::ReadOnly => tracing::warn!(state = state.name(), cause, "{advice}"),
            StoreState::Failed => tracing::error!(state = state.name(), cause, "{advice}"),
        }
    }

    /// Runs a write on the open database, if the store takes changes. A
    /// write the disk refuses leaves sled refusing everything after it: the
    /// database is reopened before the refusal is returned, so reads go on.
    fn write<T>(&self, op: impl FnOnce(&Trees) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.refuse_unless_ok()?;
        let trees = self.trees()?;
        let opening = trees.opening;
        let result = op(&trees);
        drop(trees);
        match result {
            Err(StoreError::Sled(sled::Error::Io(e))) => Err(self.disk_refused(&e, opening)),
            other => other,
        }
    }

    /// The refusal a change gets when the store does not take changes.
    fn refuse_unless_ok(&self) -> Result<(), StoreError> {
        match self.state() {
            StoreState::Ok => Ok(()),
            StoreState::ReadOnly => Err(StoreError::DiskFull),
            StoreState::Failed => Err(StoreError::Unavailable(
                "changes are refused until the disk works again".into(),
            )),
        }
    }

    /// After the disk refused a write: reopens the database, on the room
    /// the reserve held, and says why the write was refused.
    fn disk_refused(&self, e: &std::io::Error, opening: u64) -> StoreError {
        self.enter(state_after(e), &e.to_string());
        let _ = std::fs::remove_file(self.dir.join(SPACE_RESERVE_FILE));
        if let Err(reopen) = self.reopen(Some(opening)) {
            self.enter(StoreState::Failed, &format!("{e}; reopening: {reopen}"));
        }
        if is_disk_full(e) {
            StoreError::DiskFull
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }

    /// Swaps the database's handles for fresh ones, unless the opening a
    /// write `failed` on was swapped already. What the old handles held and
    /// the disk did not is gone, so every cache starts again. Changes need
    /// not stop meanwhile: the store's state already refuses them.
    fn reopen(&self, failed: Option<u64>) -> Result<(), StoreError> {
        let _reopening = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(failed), Some(current)) = (failed, self.trees.load().as_ref())
            && current.opening != failed
        {
            return Ok(());
        }
        self.trees.store(None);
        let opening = self.openings.fetch_add(1, Ordering::SeqCst) + 1;
        let trees = Trees::reopen(&self.dir, opening)?;
        self.trees.store(Some(Arc::new(trees)));
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Creates the space reserve if it is missing, written through to the
    /// disk: it fails when the disk is full.
    fn keep_space_reserve(&self) -> std::io::Result<()> {
        let path = self.dir.join(SPACE_RESERVE_FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == SPACE_RESERVE_BYTES as u64) {
            return Ok(());
        }
        let written = std::fs::File::create(&path).and_then(|mut file| {
            file.write_all(&vec![0; SPACE_RESERVE_BYTES])?;
            file.sync_all()
        });
        if written.is_err() {
            // A part of the reserve would only take room sled needs.
            let _ = std::fs::remove_file(&path);
        }
        written
    }

    /// Takes changes again once the disk has room (the space reserve can be
    /// created again) and the database is open (reopening it if a reopen
    /// failed). Called every few seconds by the server; returns the state
    /// it leaves the store in.
    pub fn recover(&self) -> StoreState {
        let state = self.state();
        if state == StoreState::Ok {
            return state;
        }
        if let Err(e) = self.keep_space_reserve() {
            let still = if is_disk_full(&e) {
                state
            } else {
                StoreState::Failed
            };
            self.enter(still, &e.to_string());
            return still;
        }
        if self.trees.load().is_none()
            && let Err(e) = self.reopen(None)
        {
            self.enter(StoreState::Failed, &format!("reopening: {e}"));
            return StoreState::Failed;
        }
        self.enter(StoreState::Ok, "space is back");
        StoreState::Ok
    }

    /// Writes everything to disk, on sled's own threads: an async worker
    /// does not wait on the disk. Nothing is pending while the store takes
    /// no changes: the writes were refused, and the database reopened.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.state() != StoreState::Ok {
            return Ok(());
        }
        self.flush_change().await
    }

    /// Writes an applied change to disk; refused if the store stopped
    /// taking changes since it was applied (it may not be on the disk).
    async fn flush_change(&self) -> Result<(), StoreError> {
        self.refuse_unless_ok()?;
        let trees = self.trees()?;
        let opening = trees.opening;
        let flushed = trees.db.flush_async().await;
        drop(trees);
        match flushed {
            Ok(_) => Ok(()),
            Err(sled::Error::Io(e)) => Err(self.disk_refused(&e, opening)),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Store::flush`], for a blocking thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        if self.state() != StoreState::Ok {
            return Ok(());
        }
        self.flush_change_blocking()
    }

    /// [`Store::flush_change`], for a blocking thread.
    fn flush_change_blocking(&self) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.db.flush()?;
            Ok(())
        })
    }

    /// Makes a change and writes it to disk: `plan` reads the store (no
    /// other change can run meanwhile) and returns the record changes plus
    /// a result; they are applied in one transaction together with their
    /// audit entries, and flushed ([`Store::flush`]) before the result is
    /// returned.
    pub async fn change<T, E: From<StoreError>>(
        &self,
        actor: &str,
        plan: impl FnOnce(&Store) -> Result<(Vec<Change>, T), E>,
    ) -> Result<T, E> {
        let Planned { result, applied } = self.apply_plan(actor, plan, &progress::silent)?;
        if applied {
            self.flush_change().await?;
        }
        Ok(result)
    }

    /// [`Store::change`] on a blocking thread (an import, a restore),
    /// reporting each record change as it is applied.
    pub fn change_blocking<T, E: From<StoreError>>(
        &self,
        actor: &str,
        plan: impl FnOnce(&Store) -> Result<(Vec<Change>, T), E>,
        report: Report<'_>,
    ) -> Result<T, E> {
        let Planned { result, applied } = self.apply_plan(actor, plan, report)?;
        if applied {
            self.flush_change_blocking()?;
        }
        Ok(result)
    }

    /// Plans and applies a change under the writer lock, not yet flushed:
    /// the flush waits on the disk, and another change need not wait for it.
    fn apply_plan<T, E: From<StoreError>>(
        &self,
        actor: &str,
        plan: impl FnOnce(&Store) -> Result<(Vec<Change>, T), E>,
        report: Report<'_>,
    ) -> Result<Planned<T>, E> {
        let _guard = self.lock_writer();
        let (changes, result) = plan(self)?;
        let applied = !changes.is_empty();
        if applied {
            self.write(|trees| apply(trees, actor, &changes, report))
                .map_err(E::from)?;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Planned { result, applied })
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave sled half-written
        // (transactions and batches are atomic), so a poisoned lock is
        // still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `records` to `tree` [`RECORDS_PER_BATCH`] at a time, each
    /// chunk one batch under the writer lock, so a device deleted meanwhile
    /// is gone before a chunk looks at it or waits for the chunk to end.
    /// `write` adds one record's writes to its chunk's batch.
    fn write_in_batches<T>(
        &self,
        tree: fn(&Trees) -> &sled::Tree,
        records: &[T],
        mut write: impl FnMut(&Trees, &T, &mut sled::Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for chunk in records.chunks(RECORDS_PER_BATCH) {
            let _guard = self.lock_writer();
            self.write(|trees| {
                let mut batch = sled::Batch::default();
                for record in chunk {
                    write(trees, record, &mut batch)?;
                }
                tree(trees).apply_batch(batch)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// How many changes have been applied since the store was opened.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A fresh id for a new user. Restored users keep their ids, so the
    /// counter may trail them: skip ids in use.
    pub fn next_user_id(&self) -> Result<UserId, StoreError> {
        self.write(|trees| {
            loop {
                let counter = trees.meta.update_and_fetch(USER_COUNTER_KEY, |old| {
                    let last = decode_count(old);
                    Some((last + 1).to_be_bytes().to_vec())
                })?;
                let id = counter
                    .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                    .map_or(1, u64::from_be_bytes);
                if !trees.users.contains_key(id.to_be_bytes())? {
                    return Ok(id);
                }
            }
        })
    }
}

/// Applies `changes` in one transaction, with their audit entries.
fn apply(
    trees: &Trees,
    actor: &str,
    changes: &[Change],
    report: Report<'_>,
) -> Result<(), StoreError> {
    let entries = changes
        .iter()
        .map(|change| {
            let (action, target, changes) = change.describe();
            audit_entry(&trees.db, actor, action, target, changes)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // A deleted phone's last good files hold its SIP passwords: they go
    // with it. Transactions cannot scan, so the keys are listed first
    // (under the writer lock, so no other transaction runs meanwhile).
    let forgotten_files = changes
        .iter()
        .filter_map(|change| match change {
            Change::DeleteDevice(device) => Some(device.mac),
            _ => None,
        })
        .flat_map(|mac| trees.last_good.scan_prefix(mac.bytes()).keys())
        .collect::<Result<Vec<_>, _>>()?;
    let trees = [
        &trees.users,
        &trees.by_extension,
        &trees.by_sip_username,
        &trees.by_email,
        &trees.devices,
        &trees.sightings,
        &trees.settings,
        &trees.templates,
        &trees.audit,
        &trees.discovered,
        &trees.tokens,
        &trees.last_good,
        &trees.meta,
    ];
    trees.as_slice().transaction(|t| {
        let (users, indexes, devices, sightings) = (&t[0], &t[1..4], &t[4], &t[5]);
        let (settings, templates, audit, discovered) = (&t[6], &t[7], &t[8], &t[9]);
        let (tokens, last_good, meta) = (&t[10], &t[11], &t[12]);
        // What was really there, not what the plan thought: the counts
        // cannot drift.
        let (mut users_added, mut devices_added) = (0i64, 0i64);
        for (applied, change) in changes.iter().enumerate() {
            report(Stage::Writing, applied + 1, changes.len());
            match change {
                Change::PutUser { new, old } => {
                    write_user_indexes(indexes, new, old.as_ref())?;
                    if users.insert(&new.id.to_be_bytes(), encode(new))?.is_none() {
                        users_added += 1;
                    }
                }
                Change::DeleteUser(user) => {
                    for (index, key) in indexes.iter().zip(unique_keys(user)) {
                        if let Some(key) = key {
                            index.remove(key.as_bytes())?;
                        }
                    }
                    if users.remove(&user.id.to_be_bytes())?.is_some() {
                        users_added -= 1;
                    }
                }
                Change::PutDevice { new, .. } => {
                    if devices.insert(&new.mac.bytes(), encode(new))?.is_none() {
                        devices_added += 1;
                    }
                }
                Change::DeleteDevice(device) => {
                    if devices.remove(&device.mac.bytes())?.is_some() {
                        devices_added -= 1;
                    }
                    sightings.remove(&device.mac.bytes())?;
                }
                Change::PutSettings { scope, new, .. } => {
                    settings.insert(scope.as_bytes(), encode(new))?;
                }
                Change::PutTemplate { key, new, .. } => {
                    templates.insert(key.as_bytes(), encode(new))?;
                }
                Change::DeleteTemplate { key, .. } => {
                    templates.remove(key.as_bytes())?;
                }
                Change::DeleteDiscovered(mac) => {
                    discovered.remove(&mac.bytes())?;
                }
                Change::PutToken(token) => {
                    tokens.insert(token.name.as_bytes(), encode(token))?;
                }
                Change::DeleteToken(token) => {
                    tokens.remove(token.name.as_bytes())?;
                }
            }
        }
        for key in &forgotten_files {
            last_good.remove(key)?;
        }
        add_to_count(meta, USER_COUNT_KEY, users_added)?;
        add_to_count(meta, DEVICE_COUNT_KEY, devices_added)?;
        for entry in &entries {
            audit.insert(&entry.id.to_be_bytes(), encode(entry))?;
        }
        Ok(())
    })?;
    Ok(())
}

impl Store {
    // ---- users ----

    /// How many users there are, without reading them.
    pub fn user_count(&self) -> usize {
        self.count(USER_COUNT_KEY)
    }

    /// The store's files on disk, in bytes (0 if sled cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.trees()
            .ok()
            .and_then(|trees| trees.db.size_on_disk().ok())
            .unwrap_or(0)
    }

    /// How many devices there are, without reading them.
    pub fn device_count(&self) -> usize {
        self.count(DEVICE_COUNT_KEY)
    }

    /// A count kept in the meta tree (0 if it cannot be read: it only feeds metrics).
    fn count(&self, key: &[u8]) -> usize {
        let stored = self
            .trees()
            .ok()
            .and_then(|trees| trees.meta.get(key).ok().flatten());
        decode_count(stored.as_deref()) as usize
    }

    /// All users, by id.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|trees| scan(&trees.users, "users"))
    }

    /// One user.
    pub fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|trees| get(&trees.users, "users", &id.to_be_bytes()))
    }

    /// The user with this extension.
    pub fn user_by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        self.user_by("extension", extension)
    }

    /// The user holding a unique value: `field` is `extension`,
    /// `sip.username` or `email`.
    pub fn user_by(&self, field: &str, value: &str) -> Result<Option<User>, StoreError> {
        self.read(|trees| {
            let index = match field {
                "extension" => &trees.by_extension,
                "sip.username" => &trees.by_sip_username,
                "email" => &trees.by_email,
                _ => return Ok(None),
            };
            match index.get(value.as_bytes())? {
                None => Ok(None),
                Some(id) => get(&trees.users, "users", &id),
            }
        })
    }

    /// The first device with a line for this user.
    pub fn device_of_user(&self, id: UserId) -> Result<Option<Device>, StoreError> {
        Ok(self
            .devices()?
            .into_iter()
            .find(|d| d.lines.iter().any(|l| l.user == id)))
    }

    // ---- devices ----

    /// All devices, by MAC.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.read(|trees| scan(&trees.devices, "devices"))
    }

    /// One device.
    pub fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError> {
        self.read(|trees| get(&trees.devices, "devices", &mac.bytes()))
    }

    // ---- settings ----

    /// The settings of a scope (`global`, or `model:<id>`); empty when unset.
    pub fn settings(&self, scope: &str) -> Result<Settings, StoreError> {
        let stored = self.read(|trees| get(&trees.settings, "settings", scope.as_bytes()))?;
        Ok(stored.unwrap_or_default())
    }

    /// Every scope that has settings.
    pub fn all_settings(&self) -> Result<Vec<(String, Settings)>, StoreError> {
        self.read(|trees| scan_keyed(&trees.settings, "settings"))
    }

    // ---- templates ----

    /// An uploaded template's history, by key (`model/<id>/<file>`, `device/<mac>/<file>`).
    pub fn template(&self, key: &str) -> Result<Option<TemplateHistory>, StoreError> {
        self.read(|trees| get(&trees.templates, "templates", key.as_bytes()))
    }

    /// Every uploaded template.
    pub fn templates(&self) -> Result<Vec<(String, TemplateHistory)>, StoreError> {
        self.read(|trees| scan_keyed(&trees.templates, "templates"))
    }

    // ---- audit ----

    /// Records an admin action that changes no record (lifting a ban), on
    /// disk before it returns, as a [`Store::change`] is.
    pub async fn record_action(
        &self,
        actor: &str,
        action: &str,
        target: String,
        changes: Value,
    ) -> Result<(), StoreError> {
        self.write(|trees| {
            let entry = audit_entry(&trees.db, actor, action.to_string(), target, changes)?;
            trees.audit.insert(entry.id.to_be_bytes(), encode(&entry))?;
            Ok(())
        })?;
        self.flush_change().await
    }

    /// Audit entries from `since` (unix seconds) on, optionally for one target, oldest first.
    pub fn audit(&self, since: u64, target: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let entries: Vec<AuditEntry> = self.read(|trees| scan(&trees.audit, "audit"))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.at >= since && target.is_none_or(|t| e.target == t))
            .collect())
    }

    // ---- what phones did ----

    /// What the server last served a device.
    pub fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError> {
        self.read(|trees| get(&trees.sightings, "sightings", &mac.bytes()))
    }

    /// Records sightings of provisioned devices.
    pub fn record_sightings(&self, sightings: &[(Mac, Sighting)]) -> Result<(), StoreError> {
        self.write_in_batches(
            |trees| &trees.sightings,
            sightings,
            |_, (mac, sighting), batch| {
                batch.insert(&mac.bytes(), encode(sighting));
                Ok(())
            },
        )
    }

    /// A named admin token.
    pub fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError> {
        self.read(|trees| get(&trees.tokens, "tokens", name.as_bytes()))
    }

    /// Every named admin token, by name.
    pub fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read(|trees| scan(&trees.tokens, "tokens"))
    }

    /// The last good render of a device's file (`file` lower-cased).
    pub fn last_good(&self, mac: Mac, file: &str) -> Result<Option<LastGood>, StoreError> {
        let key = last_good_key(mac, file);
        self.read(|trees| get(&trees.last_good, "last_good", &key))
    }

    /// Keeps last good renders of phones that are still devices.
    pub fn record_last_good(&self, files: &[((Mac, String), LastGood)]) -> Result<(), StoreError> {
        self.write_in_batches(
            |trees| &trees.last_good,
            files,
            |trees, ((mac, file), good), batch| {
                // Deleted since it was rendered: its passwords are not kept.
                if trees.devices.contains_key(mac.bytes())? {
                    batch.insert(last_good_key(*mac, file), encode(good));
                }
                Ok(())
            },
        )
    }

    /// Records requests from unknown MACs, merging with what is known.
    pub fn record_discovered(&self, found: &[Discovered]) -> Result<(), StoreError> {
        self.write_in_batches(
            |trees| &trees.discovered,
            found,
            |trees, found, batch| {
                let key = found.mac.bytes();
                // Adopted since it knocked: it is a device now.
                if trees.devices.contains_key(key)? {
                    return Ok(());
                }
                let merged = match get::<Discovered>(&trees.discovered, "discovered", &key)? {
                    Some(old) => Discovered {
                        first_seen: old.first_seen,
                        count: old.count + found.count,
                        vendor: found.vendor.clone().or(old.vendor),
                        model: found.model.clone().or(old.model),
                        reported_model: found.reported_model.clone().or(old.reported_model),
                        ..found.clone()
                    },
                    None => found.clone(),
                };
                batch.insert(&key, encode(&merged));
                Ok(())
            },
        )
    }

    /// The unknown MACs seen so far.
    pub fn discovered(&self) -> Result<Vec<Discovered>, StoreError> {
        self.read(|trees| scan(&trees.discovered, "discovered"))
    }

    /// One discovered MAC.
    pub fn discovered_mac(&self, mac: Mac) -> Result<Option<Discovered>, StoreError> {
        self.read(|trees| get(&trees.discovered, "discovered", &mac.bytes()))
    }

    /// Forgets discovered MACs last seen before `cutoff` (unix seconds), and
    /// the oldest beyond `keep`: a scanner cannot fill the disk.
    pub fn prune_discovered(&self, cutoff: u64, keep: usize) -> Result<usize, StoreError> {
        let mut all = self.discovered()?;
        all.sort_by_key(|d| std::cmp::Reverse(d.last.at));
        let forgotten: Vec<Mac> = all
            .iter()
            .enumerate()
            .filter(|(rank, found)| found.last.at < cutoff || *rank >= keep)
            .map(|(_, found)| found.mac)
            .collect();
        self.write_in_batches(
            |trees| &trees.discovered,
            &forgotten,
            |_, mac, batch| {
                batch.remove(&mac.bytes());
                Ok(())
            },
        )?;
        Ok(forgotten.len())
    }

    // ---- meta ----

    /// A value kept under a name in the meta tree (e.g. the admin token hash).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|trees| Ok(trees.meta.get(name.as_bytes())?.map(|v| v.to_vec())))
    }

    /// Sets a meta value.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.meta.insert(name.as_bytes(), value)?;
            trees.db.flush()?;
            Ok(())
        })
    }
}

/// A new audit entry, stamped now.
fn audit_entry(
    db: &sled::Db,
    actor: &str,
    action: String,
    target: String,
    changes: Value,
) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: db.generate_id()?,
        at: unix_now(),
        actor: actor.to_string(),
        action,
        target,
        changes,
    })
}

/// The unique keys of a user, in index order: extension, SIP username, e-mail.
fn unique_keys(user: &User) -> [Option<&String>; 3] {
    [
        Some(&user.extension),
        Some(&user.sip.username),
        user.email.as_ref(),
    ]
}

const UNIQUE_FIELDS: [&str; 3] = ["extension", "sip.username", "email"];

/// Moves a user's index entries from its old keys to its new ones, refusing
/// a key another user holds.
fn write_user_indexes(
    indexes: &[sled::transaction::TransactionalTree],
    user: &User,
    old: Option<&User>,
) -> TxResult<()> {
    let id = user.id.to_be_bytes();
    let old_keys = old.map(unique_keys).unwrap_or([None; 3]);
    for (((index, field), new_key), old_key) in indexes
        .iter()
        .zip(UNIQUE_FIELDS)
        .zip(unique_keys(user))
        .zip(old_keys)
    {
        if let Some(key) = new_key
            && let Some(owner) = index.get(key.as_bytes())?
            && owner.as_ref() != id
        {
            return abort(StoreError::Conflict(Invalid::new(
                field,
                format!("{key} is already used by another user"),
            )));
        }
        if let Some(old_key) = old_key {
            index.remove(old_key.as_bytes())?;
        }
        if let Some(key) = new_key {
            index.insert(key.as_bytes(), &id)?;
        }
    }
    Ok(())
}

/// The MAC, then the file name: a device's entries sit together.
/// A stored count (0 if there is none yet).
fn decode_count(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Adds `delta` to the count under `key`, in a transaction.
fn add_to_count(
    meta: &sled::transaction::TransactionalTree,
    key: &[u8],
    delta: i64,
) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let count = decode_count(meta.get(key)?.as_deref());
    meta.insert(key, &count.saturating_add_signed(delta).to_be_bytes())?;
    Ok(())
}

fn last_good_key(mac: Mac, file: &str) -> Vec<u8> {
    let mut key = mac.bytes().to_vec();
    key.extend_from_slice(file.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs with string keys: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        message: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|v| decode(name, &v)).transpose()
}

fn scan_keyed<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<Vec<(String, T)>, StoreError> {
    tree.iter()
        .map(|entry| {
            let (key, value) = entry?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                decode(name, &value)?,
            ))
        })
        .collect()
}

fn scan<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str) -> Result<Vec<T>, StoreError> {
    tree.iter().values().map(|v| decode(name, &v?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::{CallerId, SipAccount};

    fn user(ext: &str) -> User {
        User {
            id: 0,
            extension: ext.into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: Some(format!("{ext}@example.com")),
            sip: SipAccount {
                username: format!("u{ext}"),
                auth_name: format!("u{ext}"),
                password: "secret".into(),
            },
            caller_id: CallerId::default(),
            voicemail: None,
            language: None,
            mobile: None,
            dnd: false,
            call_waiting: true,
            in_directory: true,
        }
    }

    fn device(mac: &str) -> Device {
        Device {
            mac: mac.parse().unwrap(),
            model: "yealink-t46s".into(),
            description: None,
            lines: Vec::new(),
            keys: Vec::new(),
            modules: Vec::new(),
            settings: Settings::default(),
        }
    }

    /// [`Store::change_blocking`], unwatched: a unit test has no runtime.
    fn change<T>(
        store: &Store,
        plan: impl FnOnce(&Store) -> Result<(Vec<Change>, T), StoreError>,
    ) -> Result<T, StoreError> {
        store.change_blocking("test", plan, &progress::silent)
    }

    fn create(store: &Store, mut user: User) -> Result<User, StoreError> {
        change(store, |store| {
            user.id = store.next_user_id()?;
            Ok::<_, StoreError>((
                vec![Change::PutUser {
                    new: user.clone(),
                    old: None,
                }],
                user,
            ))
        })
    }

    #[test]
    fn indexes_follow_the_user_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ada = create(&store, user("100")).unwrap();
        let err = create(&store, user("100")).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref i) if i.field == "extension"),
            "{err}"
        );
        assert_eq!(store.users().unwrap().len(), 1);

        let mut moved = ada.clone();
        moved.extension = "101".into();
        moved.sip.username = "u101".into();
        moved.email = None;
        change(&store, |_| {
            Ok::<_, StoreError>((
                vec![Change::PutUser {
                    new: moved.clone(),
                    old: Some(ada),
                }],
                (),
            ))
        })
        .unwrap();
        assert!(store.user_by_extension("100").unwrap().is_none());
        assert_eq!(
            store.user_by_extension("101").unwrap().unwrap().id,
            moved.id
        );
        create(&store, user("100")).unwrap();

        let log = store.audit(0, Some(&format!("user/{}", moved.id))).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].action, "user.update");
        assert_eq!(log[1].changes["extension"], "101");
        assert!(!serde_json::to_string(&log).unwrap().contains("secret"));
    }

    #[test]
    fn a_refused_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let result = change(&store, |store| {
            let mut a = user("200");
            a.id = store.next_user_id()?;
            let mut b = user("200");
            b.id = store.next_user_id()?;
            b.sip.username = "other".into();
            b.email = None;
            Ok::<_, StoreError>((
                vec![
                    Change::PutUser { new: a, old: None },
                    Change::PutUser { new: b, old: None },
                ],
                (),
            ))
        });
        assert!(matches!(result, Err(StoreError::Conflict(_))));
        assert!(store.users().unwrap().is_empty());
        assert!(store.audit(0, None).unwrap().is_empty());
    }

    #[test]
    fn a_deleted_device_takes_its_last_good_files_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (gone, kept) = (device("001565aabbcc"), device("001565aabbcd"));
        for device in [&gone, &kept] {
            let put = Change::PutDevice {
                new: device.clone(),
                old: None,
            };
            change(&store, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
        }
        let good = LastGood {
            users: vec![1],
            body: "account.1.password = secret".into(),
        };
        let files = |mac: Mac| {
            ["001565aabbcc.cfg", "y000000000066.cfg"]
                .map(|file| ((mac, file.to_string()), good.clone()))
        };
        store.record_last_good(&files(gone.mac)).unwrap();
        store.record_last_good(&files(kept.mac)).unwrap();

        let delete = Change::DeleteDevice(gone.clone());
        change(&store, |_| Ok::<_, StoreError>((vec![delete], ()))).unwrap();
        assert_eq!(store.last_good(gone.mac, "001565aabbcc.cfg").unwrap(), None);
        assert_eq!(
            store.last_good(gone.mac, "y000000000066.cfg").unwrap(),
            None
        );
        assert_eq!(
            store.last_good(kept.mac, "001565aabbcc.cfg").unwrap(),
            Some(good.clone())
        );

        // A render that finished before the delete is flushed after it.
        store.record_last_good(&files(gone.mac)).unwrap();
        assert_eq!(store.last_good(gone.mac, "001565aabbcc.cfg").unwrap(), None);
    }

    #[test]
    fn more_records_than_one_batch_holds_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let count = RECORDS_PER_BATCH * 2 + 1;
        let sightings: Vec<(Mac, Sighting)> = (0..count)
            .map(|n| {
                let mac = Mac::from_bytes([0, 0x15, 0x65, 0, (n >> 8) as u8, n as u8]);
                let sighting = Sighting {
                    at: n as u64,
                    ip: std::net::Ipv4Addr::LOCALHOST.into(),
                    user_agent: None,
                    firmware: None,
                    file: format!("{mac}.cfg"),
                    transport: "tftp".into(),
                    etag: None,
                    origin: None,
                    without_secrets: false,
                };
                (mac, sighting)
            })
            .collect();
        store.record_sightings(&sightings).unwrap();
        for (mac, sighting) in [&sightings[0], &sightings[count / 2], &sightings[count - 1]] {
            assert_eq!(store.sighting(*mac).unwrap().as_ref(), Some(sighting));
        }
        assert_eq!(store.trees().unwrap().sightings.len(), count);
    }

    #[test]
    fn counts_follow_what_is_really_added_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let apply =
            |changes: Vec<Change>| change(&store, |_| Ok::<_, StoreError>((changes, ()))).unwrap();
        let ada = create(&store, user("101")).unwrap();
        create(&store, user("102")).unwrap();
        let put = |mac: &str| Change::PutDevice {
            new: device(mac),
            old: None,
        };
        apply(vec![put("001565aabbcc"), put("001565aabbcd")]);
        assert_eq!((store.user_count(), store.device_count()), (2, 2));
        // A plan that takes a replacement for a new record does not count it twice.
        apply(vec![put("001565aabbcc")]);
        apply(vec![Change::PutUser {
            new: ada.clone(),
            old: None,
        }]);
        assert_eq!((store.user_count(), store.device_count()), (2, 2));
        apply(vec![
            Change::DeleteUser(ada.clone()),
            Change::DeleteDevice(device("001565aabbcc")),
        ]);
        apply(vec![Change::DeleteUser(ada)]);
        assert_eq!((store.user_count(), store.device_count()), (1, 1));
    }

    #[test]
    fn a_store_from_schema_1_gets_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            create(&store, user("101")).unwrap();
            let put = Change::PutDevice {
                new: device("001565aabbcc"),
                old: None,
            };
            change(&store, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
            let trees = store.trees().unwrap();
            for key in [USER_COUNT_KEY, DEVICE_COUNT_KEY] {
                trees.meta.remove(key).unwrap();
            }
            trees.meta.insert(SCHEMA_KEY, encode(&1u32)).unwrap();
            trees.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!((store.user_count(), store.device_count()), (1, 1));
    }

    /// Opens a store just dropped: sled's threads may hold its file lock a moment.
    fn reopen(dir: &Path) -> Result<Store, StoreError> {
        let mut opened = Store::open(dir);
        for _ in 0..100 {
            match &opened {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    opened = Store::open(dir);
                }
                _ => break,
            }
        }
        opened
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let trees = store.trees().unwrap();
            trees.meta.insert(SCHEMA_KEY, encode(&99u32)).unwrap();
            trees.db.flush().unwrap();
        }
        let err = reopen(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }
}
