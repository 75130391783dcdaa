//! The sled backend: the store in one embedded database directory.
//!
//! Each kind of record is a sled tree, values are JSON (readable, and
//! tolerant of new fields), and a change is one sled transaction over every
//! tree it touches, so a crash leaves either all of it or none.
//!
//! A write the disk refuses (full, or failing) is refused to its caller
//! too, and leaves sled refusing everything after it, reads included: the
//! backend then reopens the database (with the room it set aside for that,
//! [`SPACE_RESERVE_BYTES`]), takes no more changes ([`StoreState`]), and
//! takes them again once [`Backend::recover`] finds room on the disk.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::audit::AuditEntry;
use super::{
    Backend, Change, Counted, LastGoodFile, SCHEMA_VERSION, StoreError, StoreState, TemplateHistory,
};
use crate::domain::mac::Mac;
use crate::domain::progress::{Report, Stage};
use crate::domain::records::{
    ApiToken, Device, Discovered, Invalid, LastGood, Layout, Settings, Sighting, User, UserId,
};

const SCHEMA_KEY: &[u8] = b"schema_version";
/// How many users and devices there are, kept with every change that adds
/// or removes one (since schema 2): sled can only count a tree by reading
/// all of it, which for 10,000 of each put 9 MiB into memory on every
/// `/metrics` scrape.
const USER_COUNT_KEY: &[u8] = b"user_count";
const DEVICE_COUNT_KEY: &[u8] = b"device_count";
/// The last user id handed out: users are numbered 1, 2, 3... and an id is never reused.
const USER_COUNTER_KEY: &[u8] = b"last_user_id";

/// Room kept on the disk, in a file beside sled's, for the moment the disk
/// fills: sled reopens only by writing (a snapshot, a fresh log segment of
/// 512 KiB), so the file is deleted to make that room. Creating it again is
/// how [`Backend::recover`] learns that space is back.
pub const SPACE_RESERVE_BYTES: usize = 2 << 20;
/// The file holding [`SPACE_RESERVE_BYTES`], in the store's directory.
const SPACE_RESERVE_FILE: &str = "space_reserve";
/// How long an opening waits for the last requests on the old handles, and
/// sled's own threads, to let go of the database's file lock: sled returns
/// from dropping its last handle before its I/O threads have closed the
/// file, so a store closed in this process (a server stopped and started
/// again) may still be locked for a moment.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The store in a sled directory.
pub struct SledBackend {
    /// Where sled keeps its files, for a reopen.
    dir: PathBuf,
    /// The open database; none while it is being reopened, or when a
    /// reopen failed.
    trees: ArcSwapOption<Trees>,
    /// Changed only by [`SledBackend::enter`], which logs each change once.
    state: Mutex<StoreState>,
    /// One reopen at a time: two writes failing together reopen once.
    reopening: Mutex<()>,
    /// How many times the database was opened: which opening a failed
    /// write used, so a reopen after it is not done twice.
    openings: AtomicU64,
    /// Bumped by every reopen: what the old handles held and the disk did
    /// not is gone, so every cache starts again.
    reopened: AtomicU64,
}

/// One opening of the database: its handles, swapped whole for fresh ones
/// when a failed write has left sled refusing them.
struct Trees {
    /// Which opening this is ([`SledBackend::openings`]).
    opening: u64,
    db: sled::Db,
    users: sled::Tree,
    devices: sled::Tree,
    settings: sled::Tree,
    by_extension: sled::Tree,
    by_sip_username: sled::Tree,
    by_email: sled::Tree,
    templates: sled::Tree,
    layouts: sled::Tree,
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
            layouts: db.open_tree("layouts")?,
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
pub(crate) fn is_locked(e: &sled::Error) -> bool {
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

impl SledBackend {
    /// Opens (or creates) the database in `dir`, and migrates it if needed.
    /// A database another process holds is refused after [`REOPEN_TIMEOUT`].
    pub fn open(dir: &Path) -> Result<SledBackend, StoreError> {
        let backend = SledBackend {
            dir: dir.to_path_buf(),
            trees: ArcSwapOption::from_pointee(Trees::reopen(dir, 0)?),
            state: Mutex::new(StoreState::Ok),
            reopening: Mutex::new(()),
            openings: AtomicU64::new(0),
            reopened: AtomicU64::new(0),
        };
        backend.migrate()?;
        if let Err(e) = backend.keep_space_reserve() {
            backend.enter(state_after(&e), &e.to_string());
        }
        Ok(backend)
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
        self.trees
            .load_full()
            .or_else(|| self.trees_once_reopened())
            .ok_or_else(not_open)
    }

    /// The database once a reopen in progress has ended (none if it failed):
    /// an operation that meets one waits for it rather than fail.
    fn trees_once_reopened(&self) -> Option<Arc<Trees>> {
        drop(self.reopening.lock().unwrap_or_else(|p| p.into_inner()));
        self.trees.load_full()
    }

    /// Runs a read on the open database. Phones' renders read through
    /// here: a borrowed guard, not a counted handle, so they do not all
    /// bump one shared reference count.
    fn read<T>(&self, op: impl FnOnce(&Trees) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(trees) = self.trees.load().as_deref() {
            return op(trees);
        }
        let trees = self.trees_once_reopened().ok_or_else(not_open)?;
        op(&trees)
    }

    fn current_state(&self) -> StoreState {
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
            StoreError::Unavailable(format!("the disk failed: {e}"))
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
        self.reopened.fetch_add(1, Ordering::SeqCst);
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
    fn recover_room(&self) -> StoreState {
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

    fn flush_change_blocking(&self) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.db.flush()?;
            Ok(())
        })
    }

    /// Writes `records` to `tree` as one batch. `write` adds one record's
    /// writes to it.
    fn write_batch<T>(
        &self,
        tree: fn(&Trees) -> &sled::Tree,
        records: &[T],
        mut write: impl FnMut(&Trees, &T, &mut sled::Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.write(|trees| {
            let mut batch = sled::Batch::default();
            for record in records {
                write(trees, record, &mut batch)?;
            }
            tree(trees).apply_batch(batch)?;
            Ok(())
        })
    }
}

impl Backend for SledBackend {
    fn state(&self) -> StoreState {
        self.current_state()
    }

    fn recover(&self) -> StoreState {
        self.recover_room()
    }

    fn reopens(&self) -> u64 {
        self.reopened.load(Ordering::SeqCst)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.flush_change())
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.flush_change_blocking()
    }

    fn apply(
        &self,
        changes: &[Change],
        entries: &[AuditEntry],
        report: Report<'_>,
    ) -> Result<(), StoreError> {
        self.write(|trees| apply(trees, changes, entries, report))
    }

    fn start_afresh(&self) -> Result<(), StoreError> {
        self.flush_change_blocking()?;
        // Opened on a thread of its own: what the new database keeps lands
        // in that thread's fresh allocator pages, not among the freed ones
        // of the thread that did the bulk work, which can then go back whole.
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.reopen(None))
                .join()
                .unwrap_or_else(|_| Err(not_open()))
        })
    }

    fn record_action(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.audit.insert(entry.id.to_be_bytes(), encode(entry))?;
            Ok(())
        })
    }

    fn new_audit_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        self.read(|trees| (0..count).map(|_| Ok(trees.db.generate_id()?)).collect())
    }

    fn next_user_id(&self) -> Result<UserId, StoreError> {
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

    fn count(&self, counted: Counted) -> usize {
        let key = match counted {
            Counted::Users => USER_COUNT_KEY,
            Counted::Devices => DEVICE_COUNT_KEY,
        };
        let stored = self
            .trees()
            .ok()
            .and_then(|trees| trees.meta.get(key).ok().flatten());
        decode_count(stored.as_deref()) as usize
    }

    fn size_on_disk(&self) -> u64 {
        self.trees()
            .ok()
            .and_then(|trees| trees.db.size_on_disk().ok())
            .unwrap_or(0)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|trees| scan(&trees.users, "users"))
    }

    fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|trees| get(&trees.users, "users", &id.to_be_bytes()))
    }

    fn user_by(&self, field: &str, value: &str) -> Result<Option<User>, StoreError> {
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

    fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.read(|trees| scan(&trees.devices, "devices"))
    }

    fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError> {
        self.read(|trees| get(&trees.devices, "devices", &mac.bytes()))
    }

    fn settings(&self, scope: &str) -> Result<Option<Settings>, StoreError> {
        self.read(|trees| get(&trees.settings, "settings", scope.as_bytes()))
    }

    fn all_settings(&self) -> Result<Vec<(String, Settings)>, StoreError> {
        self.read(|trees| scan_keyed(&trees.settings, "settings"))
    }

    fn layout(&self, name: &str) -> Result<Option<Layout>, StoreError> {
        self.read(|trees| get(&trees.layouts, "layouts", name.as_bytes()))
    }

    fn layouts(&self) -> Result<Vec<Layout>, StoreError> {
        self.read(|trees| scan(&trees.layouts, "layouts"))
    }

    fn template(&self, key: &str) -> Result<Option<TemplateHistory>, StoreError> {
        self.read(|trees| get(&trees.templates, "templates", key.as_bytes()))
    }

    fn templates(&self) -> Result<Vec<(String, TemplateHistory)>, StoreError> {
        self.read(|trees| scan_keyed(&trees.templates, "templates"))
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|trees| scan(&trees.audit, "audit"))
    }

    fn recent_audit(&self, count: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|trees| {
            let newest = trees.audit.iter().values().rev().take(count);
            newest.map(|v| decode("audit", &v?)).collect()
        })
    }

    fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError> {
        self.read(|trees| get(&trees.sightings, "sightings", &mac.bytes()))
    }

    fn record_sightings(&self, sightings: &[(Mac, Sighting)]) -> Result<(), StoreError> {
        self.write_batch(
            |trees| &trees.sightings,
            sightings,
            |_, (mac, sighting), batch| {
                batch.insert(&mac.bytes(), encode(sighting));
                Ok(())
            },
        )
    }

    fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError> {
        self.read(|trees| get(&trees.tokens, "tokens", name.as_bytes()))
    }

    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read(|trees| scan(&trees.tokens, "tokens"))
    }

    fn last_good(&self, mac: Mac, file: &str) -> Result<Option<LastGood>, StoreError> {
        let key = last_good_key(mac, file);
        self.read(|trees| get(&trees.last_good, "last_good", &key))
    }

    fn record_last_good(&self, files: &[((Mac, String), LastGood)]) -> Result<(), StoreError> {
        self.write_batch(
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

    fn record_discovered(&self, found: &[Discovered]) -> Result<(), StoreError> {
        self.write_batch(
            |trees| &trees.discovered,
            found,
            |trees, found, batch| {
                let key = found.mac.bytes();
                // Adopted since it knocked: it is a device now.
                if trees.devices.contains_key(key)? {
                    return Ok(());
                }
                let old = get::<Discovered>(&trees.discovered, "discovered", &key)?;
                batch.insert(&key, encode(&found.merged_with(old)));
                Ok(())
            },
        )
    }

    fn discovered(&self) -> Result<Vec<Discovered>, StoreError> {
        self.read(|trees| scan(&trees.discovered, "discovered"))
    }

    fn discovered_mac(&self, mac: Mac) -> Result<Option<Discovered>, StoreError> {
        self.read(|trees| get(&trees.discovered, "discovered", &mac.bytes()))
    }

    fn forget_discovered(&self, macs: &[Mac]) -> Result<(), StoreError> {
        self.write_batch(
            |trees| &trees.discovered,
            macs,
            |_, mac, batch| {
                batch.remove(&mac.bytes());
                Ok(())
            },
        )
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|trees| Ok(trees.meta.get(name.as_bytes())?.map(|v| v.to_vec())))
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.meta.insert(name.as_bytes(), value)?;
            trees.db.flush()?;
            Ok(())
        })
    }

    fn claim_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.write(|trees| {
            let kept = match trees
                .meta
                .compare_and_swap(name, None::<&[u8]>, Some(value))?
            {
                Ok(()) => value.to_vec(),
                Err(taken) => taken.current.map(|v| v.to_vec()).unwrap_or_default(),
            };
            trees.db.flush()?;
            Ok(kept)
        })
    }

    fn sightings(&self) -> Result<Vec<(Mac, Sighting)>, StoreError> {
        self.read(|trees| {
            trees
                .sightings
                .iter()
                .map(|entry| {
                    let (key, value) = entry?;
                    let (mac, _) = split_mac_key("sightings", &key)?;
                    Ok((mac, decode("sightings", &value)?))
                })
                .collect()
        })
    }

    fn all_last_good(&self) -> Result<Vec<LastGoodFile>, StoreError> {
        self.read(|trees| {
            trees
                .last_good
                .iter()
                .map(|entry| {
                    let (key, value) = entry?;
                    let (mac, file) = split_mac_key("last_good", &key)?;
                    let file = String::from_utf8_lossy(file).into_owned();
                    Ok(((mac, file), decode("last_good", &value)?))
                })
                .collect()
        })
    }

    fn last_user_id(&self) -> Result<UserId, StoreError> {
        self.read(|trees| Ok(decode_count(trees.meta.get(USER_COUNTER_KEY)?.as_deref())))
    }

    fn skip_user_ids_to(&self, last: UserId) -> Result<(), StoreError> {
        self.write(|trees| {
            trees.meta.update_and_fetch(USER_COUNTER_KEY, |old| {
                Some(decode_count(old).max(last).to_be_bytes().to_vec())
            })?;
            trees.db.flush()?;
            Ok(())
        })
    }
}

/// Applies `changes` in one transaction, with their audit `entries`.
fn apply(
    trees: &Trees,
    changes: &[Change],
    entries: &[AuditEntry],
    report: Report<'_>,
) -> Result<(), StoreError> {
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
        &trees.layouts,
    ];
    trees.as_slice().transaction(|t| {
        let tx = InTransaction::of(t);
        // What was really there, not what the plan thought: the counts
        // cannot drift.
        let (mut users_added, mut devices_added) = (0i64, 0i64);
        for (applied, change) in changes.iter().enumerate() {
            report(Stage::Writing, applied + 1, changes.len());
            let (users, devices) = tx.write(change)?;
            users_added += users;
            devices_added += devices;
        }
        for key in &forgotten_files {
            tx.last_good.remove(key)?;
        }
        add_to_count(tx.meta, USER_COUNT_KEY, users_added)?;
        add_to_count(tx.meta, DEVICE_COUNT_KEY, devices_added)?;
        for entry in entries {
            tx.audit.insert(&entry.id.to_be_bytes(), encode(entry))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The trees of one change's transaction, by name (in [`apply`]'s order).
struct InTransaction<'t> {
    users: &'t TransactionalTree,
    indexes: &'t [TransactionalTree],
    devices: &'t TransactionalTree,
    sightings: &'t TransactionalTree,
    settings: &'t TransactionalTree,
    templates: &'t TransactionalTree,
    audit: &'t TransactionalTree,
    discovered: &'t TransactionalTree,
    tokens: &'t TransactionalTree,
    last_good: &'t TransactionalTree,
    meta: &'t TransactionalTree,
    layouts: &'t TransactionalTree,
}

impl<'t> InTransaction<'t> {
    fn of(t: &'t [TransactionalTree]) -> Self {
        InTransaction {
            users: &t[0],
            indexes: &t[1..4],
            devices: &t[4],
            sightings: &t[5],
            settings: &t[6],
            templates: &t[7],
            audit: &t[8],
            discovered: &t[9],
            tokens: &t[10],
            last_good: &t[11],
            meta: &t[12],
            layouts: &t[13],
        }
    }

    /// Writes one change; how many users and devices it added (or, below
    /// zero, removed).
    fn write(&self, change: &Change) -> TxResult<(i64, i64)> {
        let added = |existed: bool| i64::from(!existed);
        let removed = |existed: bool| -i64::from(existed);
        Ok(match change {
            Change::PutUser { new, old } => {
                write_user_indexes(self.indexes, new, old.as_ref())?;
                let existed = self.users.insert(&new.id.to_be_bytes(), encode(new))?;
                (added(existed.is_some()), 0)
            }
            Change::DeleteUser(user) => {
                for (index, key) in self.indexes.iter().zip(unique_keys(user)) {
                    if let Some(key) = key {
                        index.remove(key.as_bytes())?;
                    }
                }
                let existed = self.users.remove(&user.id.to_be_bytes())?;
                (removed(existed.is_some()), 0)
            }
            Change::PutDevice { new, .. } => {
                let existed = self.devices.insert(&new.mac.bytes(), encode(new))?;
                (0, added(existed.is_some()))
            }
            Change::DeleteDevice(device) => {
                let existed = self.devices.remove(&device.mac.bytes())?;
                self.sightings.remove(&device.mac.bytes())?;
                (0, removed(existed.is_some()))
            }
            Change::PutSettings { scope, new, .. } => {
                self.settings.insert(scope.as_bytes(), encode(new))?;
                (0, 0)
            }
            Change::PutTemplate { key, new, .. } => {
                self.templates.insert(key.as_bytes(), encode(new))?;
                (0, 0)
            }
            Change::DeleteTemplate { key, .. } => {
                self.templates.remove(key.as_bytes())?;
                (0, 0)
            }
            Change::PutLayout { new, .. } => {
                self.layouts.insert(new.name.as_bytes(), encode(new))?;
                (0, 0)
            }
            Change::DeleteLayout(layout) => {
                self.layouts.remove(layout.name.as_bytes())?;
                (0, 0)
            }
            Change::DeleteDiscovered(mac) => {
                self.discovered.remove(&mac.bytes())?;
                (0, 0)
            }
            Change::PutToken(token) => {
                self.tokens.insert(token.name.as_bytes(), encode(token))?;
                (0, 0)
            }
            Change::DeleteToken(token) => {
                self.tokens.remove(token.name.as_bytes())?;
                (0, 0)
            }
        })
    }
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
    indexes: &[TransactionalTree],
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

/// A stored count (0 if there is none yet).
fn decode_count(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Adds `delta` to the count under `key`, in a transaction.
fn add_to_count(meta: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let count = decode_count(meta.get(key)?.as_deref());
    meta.insert(key, &count.saturating_add_signed(delta).to_be_bytes())?;
    Ok(())
}

/// A key that starts with a MAC: the MAC, and what follows it.
fn split_mac_key<'k>(tree: &'static str, key: &'k [u8]) -> Result<(Mac, &'k [u8]), StoreError> {
    match key.split_first_chunk::<6>() {
        Some((mac, rest)) => Ok((Mac::from_bytes(*mac), rest)),
        None => Err(StoreError::Corrupt {
            tree,
            message: "a key shorter than a MAC".into(),
        }),
    }
}

/// The MAC, then the file name: a device's entries sit together.
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
    use crate::store::Store;
    use crate::store::suite::{self, change, create, device, user};

    #[test]
    fn the_store_suite_passes_on_sled() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = std::sync::atomic::AtomicUsize::new(0);
        suite::run(|| {
            let n = fresh.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Store::open(&dir.path().join(n.to_string())).unwrap()
        });
    }

    /// Writes `meta` straight into the database in `dir`, as an older or
    /// newer deskboot would have left it.
    fn tamper(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
        let backend = open_again(dir).unwrap();
        let trees = backend.trees().unwrap();
        edit(&trees.meta);
        trees.db.flush().unwrap();
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
        }
        tamper(dir.path(), |meta| {
            for key in [USER_COUNT_KEY, DEVICE_COUNT_KEY] {
                meta.remove(key).unwrap();
            }
            meta.insert(SCHEMA_KEY, encode(&1u32)).unwrap();
        });
        let store = Store::on(Box::new(open_again(dir.path()).unwrap()));
        assert_eq!((store.user_count(), store.device_count()), (1, 1));
    }

    /// Opens a database just dropped: sled's threads may hold its file lock a moment.
    fn open_again(dir: &Path) -> Result<SledBackend, StoreError> {
        let mut opened = SledBackend::open(dir);
        for _ in 0..100 {
            match &opened {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    opened = SledBackend::open(dir);
                }
                _ => break,
            }
        }
        opened
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        tamper(dir.path(), |meta| {
            meta.insert(SCHEMA_KEY, encode(&99u32)).unwrap();
        });
        let err = open_again(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }
}
