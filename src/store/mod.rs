//! The store: users, devices, settings, templates, tokens and what phones
//! did, behind one narrow typed interface, with its [`Backend`] beside it
//! ([`sled`], the embedded one, or [`postgres`], one database that many
//! nodes share), chosen by a [`StoreUrl`].
//!
//! Every change goes through [`Store::change`]: under one writer lock, a
//! plan reads the store and returns the record [`Change`]s it makes; the
//! backend applies them in one transaction together with their audit
//! entries, and they are on disk before the call returns, so no answer to
//! an administrator tells of a change a crash can still take back.
//! Administrators write rarely, and serialising them lets a check ("is this
//! user on a device?") and the write that depends on it see the same data.
//! Phones only read; what the server notes about them (sightings,
//! discovered MACs, last good files) is written in batches and reaches the
//! disk with the server's next flush tick.

pub(crate) mod audit;
pub mod copy;
pub(crate) mod data_dir;
pub mod postgres;
pub mod sled;
#[cfg(test)]
mod suite;
mod url;

pub use url::{StoreUrl, UnknownStoreUrl};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::progress::{self, Report};
use crate::domain::records::{
    ApiToken, Device, Discovered, Invalid, LastGood, Layout, Settings, Sighting, User, UserId,
};
use audit::{AuditEntry, Diff};

/// The schema this binary reads and writes. Bump it, and add a migration to
/// each backend, when a stored shape changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;

/// A last good file, by its device's MAC and its name.
pub type LastGoodFile = ((Mac, String), LastGood);

/// Settings scope key of the global settings.
pub const GLOBAL_SCOPE: &str = "global";

/// Records written per batch of what phones did. A sled batch holds sled's
/// process-wide write lock, which stops every read of every tree (a
/// render's device and users), and pins sled's epoch, so nothing it
/// replaces is freed before it ends. In one batch, a storm's 10,000
/// sightings stalled the renders and cost about 20 MiB of RSS for good.
const RECORDS_PER_BATCH: usize = 256;

/// What went wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (disk, lock).
    #[error("store: {0}")]
    Sled(#[from] ::sled::Error),
    /// The store was written by a newer deskboot.
    #[error(
        "the store has schema version {found}, but this deskboot only knows up to {supported}: use a newer deskboot"
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
    /// The store cannot take changes (or answer at all): the disk failed,
    /// or the database cannot be reached.
    #[error("the store is unavailable: {0}; see the server log")]
    Unavailable(String),
    /// The database refused a statement, or its URL cannot be used.
    #[error("database: {0}")]
    Database(String),
}

/// Whether the store can take changes, as `/healthz` and `/metrics` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreState {
    /// Reads and changes work.
    #[default]
    Ok,
    /// The disk is full: reads work, changes are refused until space is back.
    ReadOnly,
    /// The disk failed otherwise, sled would not reopen, or the database
    /// cannot be reached: changes are refused, and reads may fail.
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
                "the data directory's disk failed, or the database cannot be reached: changes are refused and reads may fail; see the server log for the error, check the disk or the database, and the server retries by itself every few seconds"
            }
        }
    }
}

/// The records a backend counts as they change, so metrics need not read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Users.
    Users,
    /// Devices.
    Devices,
}

/// What a store backend keeps and how. [`Store`] above it holds the writer
/// lock, the generation caches compare, the audit descriptions and the
/// batching; a backend stores records and applies a list of changes
/// atomically. Reads of one record are on every phone's path: they must
/// not take a lock that writes hold for long.
pub trait Backend: Send + Sync {
    /// Whether the backend takes changes now.
    fn state(&self) -> StoreState;
    /// Tries to take changes again after a failure; the state it leaves.
    fn recover(&self) -> StoreState;
    /// How many times the backend lost what it held in memory (a reopen):
    /// every cache starts again.
    fn reopens(&self) -> u64;
    /// How many changes other nodes sharing the database made, as this
    /// node heard of them (and times it may have missed some): every cache
    /// renders again. None for a store only this process opens.
    fn outside_changes(&self) -> u64 {
        0
    }
    /// Whether other processes (nodes) share this store.
    fn is_shared(&self) -> bool {
        false
    }
    /// Fetches ahead, without blocking the caller's thread, what rendering
    /// `mac`'s files reads one by one (its device, its lines' users, its
    /// last good files, and its sighting when `sighting`: a render reads
    /// it only when the request did not say the firmware), where each read
    /// would otherwise cross the network. Nothing to do for a store in
    /// this process.
    fn read_ahead(&self, _mac: Mac, _sighting: bool) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// Makes what was applied durable; refused if the backend stopped
    /// taking changes since.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// [`Backend::flush`], for a blocking thread.
    fn flush_blocking(&self) -> Result<(), StoreError>;
    /// Applies `changes` and their audit `entries` all or nothing, telling
    /// `report` of each change. A unique field taken by another user is
    /// [`StoreError::Conflict`].
    fn apply(
        &self,
        changes: &[Change],
        entries: &[AuditEntry],
        report: Report<'_>,
    ) -> Result<(), StoreError>;
    /// Lets go of everything it holds in memory and opens again, durably
    /// first: what bulk work left scattered among the allocator's pages
    /// goes back to the system. Reads meanwhile wait for it; nothing fails.
    fn start_afresh(&self) -> Result<(), StoreError>;
    /// Adds an audit entry that goes with no record change.
    fn record_action(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// `count` fresh audit entry ids, increasing, each greater than
    /// every one before.
    fn new_audit_ids(&self, count: usize) -> Result<Vec<u64>, StoreError>;
    /// A fresh user id, never handed out before and not in use.
    fn next_user_id(&self) -> Result<UserId, StoreError>;
    /// `count` fresh user ids at once, for a bulk import: one round trip
    /// where [`Backend::next_user_id`] is one each.
    fn next_user_ids(&self, count: usize) -> Result<Vec<UserId>, StoreError> {
        (0..count).map(|_| self.next_user_id()).collect()
    }
    /// How many records of a kind there are (0 if it cannot tell).
    fn count(&self, counted: Counted) -> usize;
    /// The space the store takes, in bytes (0 if it cannot tell).
    fn size_on_disk(&self) -> u64;
    /// All users, by id.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// One user.
    fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The user holding a unique value of `field` (`extension`,
    /// `sip.username`, `email`); none for another field.
    fn user_by(&self, field: &str, value: &str) -> Result<Option<User>, StoreError>;
    /// The users holding any of `values` of `field`, as
    /// [`Backend::user_by`] finds each: one round trip for a bulk import.
    fn users_by(&self, field: &str, values: &[String]) -> Result<Vec<User>, StoreError> {
        let found = values.iter().map(|value| self.user_by(field, value));
        found.filter_map(Result::transpose).collect()
    }
    /// All devices, by MAC.
    fn devices(&self) -> Result<Vec<Device>, StoreError>;
    /// One device.
    fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError>;
    /// Those of `macs` that are devices: one round trip for a bulk import.
    fn devices_of(&self, macs: &[Mac]) -> Result<Vec<Device>, StoreError> {
        let found = macs.iter().map(|mac| self.device(*mac));
        found.filter_map(Result::transpose).collect()
    }
    /// The settings of a scope, if set.
    fn settings(&self, scope: &str) -> Result<Option<Settings>, StoreError>;
    /// Every scope that has settings, by scope.
    fn all_settings(&self) -> Result<Vec<(String, Settings)>, StoreError>;
    /// A named key layout.
    fn layout(&self, name: &str) -> Result<Option<Layout>, StoreError>;
    /// Every named key layout, by name.
    fn layouts(&self) -> Result<Vec<Layout>, StoreError>;
    /// An uploaded template's history.
    fn template(&self, key: &str) -> Result<Option<TemplateHistory>, StoreError>;
    /// Every uploaded template, by key.
    fn templates(&self) -> Result<Vec<(String, TemplateHistory)>, StoreError>;
    /// Every audit entry, oldest first.
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// The last `count` audit entries, newest first, without reading the
    /// others.
    fn recent_audit(&self, count: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// What the server last served a device.
    fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError>;
    /// Records sightings, one batch.
    fn record_sightings(&self, sightings: &[(Mac, Sighting)]) -> Result<(), StoreError>;
    /// A named admin token.
    fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError>;
    /// Every named admin token, by name.
    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// The last good render of a device's file.
    fn last_good(&self, mac: Mac, file: &str) -> Result<Option<LastGood>, StoreError>;
    /// Keeps last good renders, one batch, of devices that still exist.
    fn record_last_good(&self, files: &[((Mac, String), LastGood)]) -> Result<(), StoreError>;
    /// Merges requests from unknown MACs into what is known, one batch,
    /// skipping MACs that are devices now.
    fn record_discovered(&self, found: &[Discovered]) -> Result<(), StoreError>;
    /// Every discovered MAC, by MAC.
    fn discovered(&self) -> Result<Vec<Discovered>, StoreError>;
    /// One discovered MAC.
    fn discovered_mac(&self, mac: Mac) -> Result<Option<Discovered>, StoreError>;
    /// Forgets discovered MACs, one batch.
    fn forget_discovered(&self, macs: &[Mac]) -> Result<(), StoreError>;
    /// A value kept under a name.
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a named value, durably before it returns.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Sets a named value unless one is set, durably before it returns;
    /// the value kept. Two nodes claiming at once keep the same one.
    fn claim_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Every device's sighting, by MAC.
    fn sightings(&self) -> Result<Vec<(Mac, Sighting)>, StoreError>;
    /// Every last good file, by MAC and file.
    fn all_last_good(&self) -> Result<Vec<LastGoodFile>, StoreError>;
    /// The last user id handed out (0 if none was).
    fn last_user_id(&self) -> Result<UserId, StoreError>;
    /// Hands out no user id up to `last` from now on.
    fn skip_user_ids_to(&self, last: UserId) -> Result<(), StoreError>;
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Box<dyn Backend>,
    writer: Mutex<()>,
    /// Bumped after every applied change: caches compare it.
    generation: AtomicU64,
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
    /// Create (no `old`) or replace a named key layout.
    PutLayout {
        /// The record as it will be.
        new: Layout,
        /// The record as it was (none for a new one).
        old: Option<Layout>,
    },
    /// Delete a named key layout (no device names it).
    DeleteLayout(Layout),
    /// Forget a discovered MAC (it was adopted).
    DeleteDiscovered(Mac),
    /// Create a named admin token.
    PutToken(ApiToken),
    /// Revoke a named admin token.
    DeleteToken(ApiToken),
}

impl Change {
    /// The audit description: action, target, and what changed with what
    /// it replaced.
    fn describe(&self) -> (String, String, Diff) {
        let json = |v: &dyn erased::Json| v.to_json();
        let fields = |old: Option<Value>, new: &dyn erased::Json| {
            audit::diff(&old.unwrap_or_else(|| json!({})), &json(new))
        };
        match self {
            Change::PutUser { new, old } => (
                verb("user", old.is_some()),
                format!("user/{}", new.id),
                fields(old.as_ref().map(|o| json(o)), new),
            ),
            Change::DeleteUser(user) => (
                "user.delete".into(),
                format!("user/{}", user.id),
                Diff {
                    changes: json!({"extension": user.extension}),
                    before: json!({
                        "extension": user.extension,
                        "first_name": user.first_name,
                        "last_name": user.last_name,
                    }),
                },
            ),
            Change::PutDevice { new, old } => (
                verb("device", old.is_some()),
                format!("device/{}", new.mac),
                fields(old.as_ref().map(|o| json(o)), new),
            ),
            Change::DeleteDevice(device) => (
                "device.delete".into(),
                format!("device/{}", device.mac),
                Diff {
                    changes: json!({"model": device.model}),
                    before: json!({"model": device.model, "description": device.description}),
                },
            ),
            Change::PutSettings { scope, new, old } => (
                "settings.update".into(),
                format!("settings/{scope}"),
                fields(Some(json(old)), new),
            ),
            Change::PutTemplate { key, new, old } => (
                "template.put".into(),
                format!("template/{key}"),
                Diff::of_fields(old.as_ref().map(summary).as_ref(), summary(new)),
            ),
            Change::DeleteTemplate { key, old } => (
                "template.delete".into(),
                format!("template/{key}"),
                Diff {
                    changes: Value::Null,
                    before: summary(old),
                },
            ),
            Change::PutLayout { new, old } => (
                verb("layout", old.is_some()),
                format!("layout/{}", new.name),
                fields(old.as_ref().map(|o| json(o)), new),
            ),
            Change::DeleteLayout(layout) => (
                "layout.delete".into(),
                format!("layout/{}", layout.name),
                Diff {
                    changes: json!({"model": layout.model}),
                    before: json!({"model": layout.model, "description": layout.description}),
                },
            ),
            Change::DeleteDiscovered(mac) => (
                "discovered.delete".into(),
                format!("discovered/{mac}"),
                Diff::default(),
            ),
            Change::PutToken(token) => (
                "token.create".into(),
                format!("token/{}", token.name),
                Diff::of_fields(None, json!({"scope": token.scope})),
            ),
            Change::DeleteToken(token) => (
                "token.delete".into(),
                format!("token/{}", token.name),
                Diff {
                    changes: Value::Null,
                    before: json!({"scope": token.scope, "created": token.created}),
                },
            ),
        }
    }
}

/// What the audit log says of an uploaded template: its newest version, not
/// its source.
fn summary(history: &TemplateHistory) -> Value {
    history.current().map_or(
        json!({"active": false}),
        |v| json!({"active": history.active, "version": v.version, "bytes": v.source.len()}),
    )
}

/// An audit entry numbered `id`, stamped now.
fn audit_entry(
    id: u64,
    actor: &str,
    action: String,
    target: String,
    Diff { changes, before }: Diff,
) -> AuditEntry {
    AuditEntry {
        id,
        at: unix_now(),
        actor: actor.to_string(),
        action,
        target,
        changes,
        before,
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
    /// Opens (or creates) the embedded store in `dir`, and migrates it if needed.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::on(Box::new(sled::SledBackend::open(dir)?)))
    }

    /// Opens (or creates) the store `url` names, and migrates it if needed.
    pub fn open_url(url: &StoreUrl) -> Result<Store, StoreError> {
        match url {
            StoreUrl::Sled(dir) => Store::open(dir),
            StoreUrl::Postgres(url) => {
                Ok(Store::on(Box::new(postgres::PostgresBackend::open(url)?)))
            }
        }
    }

    /// The store on `backend`.
    pub fn on(backend: Box<dyn Backend>) -> Store {
        Store {
            backend,
            writer: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether the store takes changes now.
    pub fn state(&self) -> StoreState {
        self.backend.state()
    }

    /// Takes changes again once the backend can (for sled: once the disk
    /// has room). Called every few seconds by the server; returns the
    /// state it leaves the store in.
    pub fn recover(&self) -> StoreState {
        self.backend.recover()
    }

    /// Makes everything applied durable: the server's tick, for what phones
    /// did. Nothing is pending while the store takes no changes: the writes
    /// were refused.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.state() != StoreState::Ok {
            return Ok(());
        }
        self.backend.flush().await
    }

    /// [`Store::flush`], for a blocking thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        if self.state() != StoreState::Ok {
            return Ok(());
        }
        self.backend.flush_blocking()
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
            self.backend.flush().await?;
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
            self.backend.flush_blocking()?;
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
            let entries = self.audit_entries(actor, &changes)?;
            self.backend.apply(&changes, &entries, report)?;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Planned { result, applied })
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave a change half-written
        // (backends apply a change and a batch atomically), so a poisoned
        // lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `records` [`RECORDS_PER_BATCH`] at a time, each chunk one
    /// batch under the writer lock, so a device deleted meanwhile is gone
    /// before a chunk looks at it or waits for the chunk to end.
    fn in_batches<T>(
        &self,
        records: &[T],
        write: impl Fn(&dyn Backend, &[T]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for chunk in records.chunks(RECORDS_PER_BATCH) {
            let _guard = self.lock_writer();
            write(self.backend.as_ref(), chunk)?;
        }
        Ok(())
    }

    /// How many changes have been applied since the store was opened (by
    /// this node, and by others sharing its database), and how many times
    /// the backend lost what it held.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
            + self.backend.reopens()
            + self.backend.outside_changes()
    }

    /// How many changes other nodes sharing the store's database made, as
    /// this node heard of them (0 for a store of this process alone).
    pub fn outside_changes(&self) -> u64 {
        self.backend.outside_changes()
    }

    /// After an administrator's bulk work (an import, an export, a
    /// restore): the backend starts afresh, with no change in between, so
    /// the memory the work scattered comes back (BENCHMARKS.md, "Memory
    /// after an administrator's bulk work").
    pub fn start_afresh(&self) -> Result<(), StoreError> {
        let _guard = self.lock_writer();
        self.backend.start_afresh()
    }

    /// A fresh id for a new user.
    pub fn next_user_id(&self) -> Result<UserId, StoreError> {
        self.backend.next_user_id()
    }

    /// `count` fresh ids for new users, in increasing order.
    pub fn next_user_ids(&self, count: usize) -> Result<Vec<UserId>, StoreError> {
        self.backend.next_user_ids(count)
    }

    /// Audit entries for `changes`, stamped now.
    fn audit_entries(
        &self,
        actor: &str,
        changes: &[Change],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let ids = self.backend.new_audit_ids(changes.len())?;
        Ok(changes
            .iter()
            .zip(ids)
            .map(|(change, id)| {
                let (action, target, diff) = change.describe();
                audit_entry(id, actor, action, target, diff)
            })
            .collect())
    }
}

impl Store {
    // ---- users ----

    /// How many users there are, without reading them.
    pub fn user_count(&self) -> usize {
        self.backend.count(Counted::Users)
    }

    /// The store's size, in bytes (0 if the backend cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    /// How many devices there are, without reading them.
    pub fn device_count(&self) -> usize {
        self.backend.count(Counted::Devices)
    }

    /// All users, by id.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.backend.users()
    }

    /// One user.
    pub fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.backend.user(id)
    }

    /// The user with this extension.
    pub fn user_by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        self.user_by("extension", extension)
    }

    /// The user holding a unique value: `field` is `extension`,
    /// `sip.username` or `email`.
    pub fn user_by(&self, field: &str, value: &str) -> Result<Option<User>, StoreError> {
        self.backend.user_by(field, value)
    }

    /// The users holding any of `values` of `field` (`extension`,
    /// `sip.username` or `email`), in no order.
    pub fn users_by(&self, field: &str, values: &[String]) -> Result<Vec<User>, StoreError> {
        self.backend.users_by(field, values)
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
        self.backend.devices()
    }

    /// One device.
    pub fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError> {
        self.backend.device(mac)
    }

    /// Those of `macs` that are devices, in no order.
    pub fn devices_of(&self, macs: &[Mac]) -> Result<Vec<Device>, StoreError> {
        self.backend.devices_of(macs)
    }

    // ---- settings ----

    /// The settings of a scope (`global`, or `model:<id>`); empty when unset.
    pub fn settings(&self, scope: &str) -> Result<Settings, StoreError> {
        Ok(self.backend.settings(scope)?.unwrap_or_default())
    }

    /// Every scope that has settings.
    pub fn all_settings(&self) -> Result<Vec<(String, Settings)>, StoreError> {
        self.backend.all_settings()
    }

    // ---- layouts ----

    /// A named key layout.
    pub fn layout(&self, name: &str) -> Result<Option<Layout>, StoreError> {
        self.backend.layout(name)
    }

    /// Every named key layout, by name.
    pub fn layouts(&self) -> Result<Vec<Layout>, StoreError> {
        self.backend.layouts()
    }

    /// The devices that follow a layout.
    pub fn devices_with_layout(&self, name: &str) -> Result<Vec<Device>, StoreError> {
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| d.layout.as_deref() == Some(name))
            .collect())
    }

    // ---- templates ----

    /// An uploaded template's history, by key (`model/<id>/<file>`, `device/<mac>/<file>`).
    pub fn template(&self, key: &str) -> Result<Option<TemplateHistory>, StoreError> {
        self.backend.template(key)
    }

    /// Every uploaded template.
    pub fn templates(&self) -> Result<Vec<(String, TemplateHistory)>, StoreError> {
        self.backend.templates()
    }

    // ---- audit ----

    /// Records an admin action that changes no record (lifting a ban),
    /// durably before it returns, as a [`Store::change`] is. What it
    /// records is the action's outcome, so nothing stood there before.
    pub async fn record_action(
        &self,
        actor: &str,
        action: &str,
        target: String,
        changes: Value,
    ) -> Result<(), StoreError> {
        let diff = Diff::of_fields(None, changes);
        let id = self.backend.new_audit_ids(1)?.into_iter().next();
        let id = id.ok_or_else(|| StoreError::Database("no audit id was handed out".into()))?;
        let entry = audit_entry(id, actor, action.to_string(), target, diff);
        self.backend.record_action(&entry)?;
        self.backend.flush().await
    }

    /// Audit entries from `since` (unix seconds) on, optionally for one target, oldest first.
    pub fn audit(&self, since: u64, target: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .backend
            .audit()?
            .into_iter()
            .filter(|e| e.at >= since && target.is_none_or(|t| e.target == t))
            .collect())
    }

    /// The last `count` audit entries, newest first (the dashboard's).
    pub fn recent_audit(&self, count: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.backend.recent_audit(count)
    }

    // ---- what phones did ----

    /// Whether other nodes share this store: what one node keeps there,
    /// every node sees.
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Fetches ahead what rendering `mac`'s files will read (its sighting
    /// only when `sighting`), in one round trip where reads cross the
    /// network; a failure is left for the reads themselves to report.
    pub async fn read_ahead(&self, mac: Mac, sighting: bool) {
        self.backend.read_ahead(mac, sighting).await
    }

    /// What the server last served a device.
    pub fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError> {
        self.backend.sighting(mac)
    }

    /// Records sightings of provisioned devices.
    pub fn record_sightings(&self, sightings: &[(Mac, Sighting)]) -> Result<(), StoreError> {
        self.in_batches(sightings, |backend, chunk| backend.record_sightings(chunk))
    }

    /// A named admin token.
    pub fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError> {
        self.backend.token(name)
    }

    /// Every named admin token, by name.
    pub fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.backend.tokens()
    }

    /// The last good render of a device's file (`file` lower-cased).
    pub fn last_good(&self, mac: Mac, file: &str) -> Result<Option<LastGood>, StoreError> {
        self.backend.last_good(mac, file)
    }

    /// Keeps last good renders of phones that are still devices.
    pub fn record_last_good(&self, files: &[((Mac, String), LastGood)]) -> Result<(), StoreError> {
        self.in_batches(files, |backend, chunk| backend.record_last_good(chunk))
    }

    /// Records requests from unknown MACs, merging with what is known.
    pub fn record_discovered(&self, found: &[Discovered]) -> Result<(), StoreError> {
        self.in_batches(found, |backend, chunk| backend.record_discovered(chunk))
    }

    /// The unknown MACs seen so far.
    pub fn discovered(&self) -> Result<Vec<Discovered>, StoreError> {
        self.backend.discovered()
    }

    /// One discovered MAC.
    pub fn discovered_mac(&self, mac: Mac) -> Result<Option<Discovered>, StoreError> {
        self.backend.discovered_mac(mac)
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
        self.in_batches(&forgotten, |backend, chunk| {
            backend.forget_discovered(chunk)
        })?;
        Ok(forgotten.len())
    }

    // ---- meta ----

    /// A value kept under a name (e.g. the admin token hash).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.meta(name)
    }

    /// Sets a meta value.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.backend.put_meta(name, value)
    }

    /// Sets a meta value unless one is set; the value kept.
    pub fn claim_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.backend.claim_meta(name, value)
    }

    // ---- moving a site ----

    /// Every device's sighting, by MAC.
    pub fn sightings(&self) -> Result<Vec<(Mac, Sighting)>, StoreError> {
        self.backend.sightings()
    }

    /// Every last good file, by MAC and file.
    pub fn all_last_good(&self) -> Result<Vec<LastGoodFile>, StoreError> {
        self.backend.all_last_good()
    }

    /// The last user id handed out (0 if none was).
    pub fn last_user_id(&self) -> Result<UserId, StoreError> {
        self.backend.last_user_id()
    }

    /// Hands out no user id up to `last` from now on: ids deleted in
    /// another store a site came from are never reused here.
    pub fn skip_user_ids_to(&self, last: UserId) -> Result<(), StoreError> {
        self.backend.skip_user_ids_to(last)
    }

    /// Writes `changes` in one transaction with `audit`, another store's
    /// log, instead of entries of their own: the log says what
    /// administrators did, not how the site moved. The entries get fresh
    /// ids of this store, in their order, after its own.
    pub fn copy_in(
        &self,
        changes: &[Change],
        mut audit: Vec<AuditEntry>,
        report: Report<'_>,
    ) -> Result<(), StoreError> {
        let _guard = self.lock_writer();
        let ids = self.backend.new_audit_ids(audit.len())?;
        for (entry, id) in audit.iter_mut().zip(ids) {
            entry.id = id;
        }
        self.backend.apply(changes, &audit, report)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.backend.flush_blocking()
    }
}
