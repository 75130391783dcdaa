//! The store: users, devices and settings in sled, behind a narrow typed API.
//!
//! Values are JSON (readable, and tolerant of new fields). Every change that
//! touches more than one record (a user and its indexes) is one sled
//! transaction, so a crash leaves either all of it or none. Changes also go
//! through one writer lock: administrators write rarely, and serialising them
//! lets a check ("is this user on a device?") and the write that depends on it
//! see the same data. Phones only read.

use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::mac::Mac;
use crate::model::{Device, Discovered, Invalid, Settings, Sighting, User, UserId};

/// The schema this binary reads and writes. Bump it, and add a migration to
/// [`Store::migrate`], when a stored shape changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";
/// Settings scope key of the global settings.
pub const GLOBAL_SCOPE: &str = "global";

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
    NewerSchema { found: u32, supported: u32 },
    /// A stored value does not decode.
    #[error("store: corrupt record in {tree}: {message}")]
    Corrupt { tree: &'static str, message: String },
    /// The record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique field is already taken, or a referenced record is missing.
    #[error("{0}")]
    Conflict(Invalid),
    /// The record is still used by another one.
    #[error("{0}")]
    InUse(String),
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
    db: sled::Db,
    users: sled::Tree,
    devices: sled::Tree,
    settings: sled::Tree,
    by_extension: sled::Tree,
    by_sip_username: sled::Tree,
    by_email: sled::Tree,
    meta: sled::Tree,
    sightings: sled::Tree,
    discovered: sled::Tree,
    writer: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, and migrates it if needed.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()?;
        let store = Store {
            users: db.open_tree("users")?,
            devices: db.open_tree("devices")?,
            settings: db.open_tree("settings")?,
            by_extension: db.open_tree("idx_extension")?,
            by_sip_username: db.open_tree("idx_sip_username")?,
            by_email: db.open_tree("idx_email")?,
            meta: db.open_tree("meta")?,
            sightings: db.open_tree("sightings")?,
            discovered: db.open_tree("discovered")?,
            db,
            writer: Mutex::new(()),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found = match self.meta.get(SCHEMA_KEY)? {
            None => 0,
            Some(bytes) => decode::<u32>("meta", &bytes)?,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Version 0 is an empty, new store; there is nothing older to convert yet.
        if found < SCHEMA_VERSION {
            self.meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION))?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Writes everything to disk; call after an administrator's change.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave sled half-written
        // (transactions are atomic), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- users ----

    /// All users, by id.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        scan(&self.users, "users")
    }

    /// One user.
    pub fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        get(&self.users, "users", &id.to_be_bytes())
    }

    /// The user with this extension.
    pub fn user_by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        match self.by_extension.get(extension.as_bytes())? {
            None => Ok(None),
            Some(id) => get(&self.users, "users", &id),
        }
    }

    /// Stores a new user and returns it with its id. Extension, SIP
    /// username and e-mail must be free.
    pub fn create_user(&self, mut user: User) -> Result<User, StoreError> {
        let _guard = self.lock();
        user.id = self.db.generate_id()? + 1;
        self.write_user(&user, None)?;
        Ok(user)
    }

    /// Replaces a user, keeping its indexes right.
    pub fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let _guard = self.lock();
        let old = self
            .user(user.id)?
            .ok_or_else(|| StoreError::NotFound(format!("user {}", user.id)))?;
        self.write_user(user, Some(&old))
    }

    fn write_user(&self, user: &User, old: Option<&User>) -> Result<(), StoreError> {
        let id = user.id.to_be_bytes();
        let value = encode(user);
        let trees = (
            &self.users,
            &self.by_extension,
            &self.by_sip_username,
            &self.by_email,
        );
        trees.transaction(|(users, by_ext, by_sip, by_email)| {
            let unique = [
                (
                    by_ext,
                    "extension",
                    Some(&user.extension),
                    old.map(|o| &o.extension),
                ),
                (
                    by_sip,
                    "sip.username",
                    Some(&user.sip.username),
                    old.map(|o| &o.sip.username),
                ),
                (
                    by_email,
                    "email",
                    user.email.as_ref(),
                    old.and_then(|o| o.email.as_ref()),
                ),
            ];
            for (index, field, new_key, old_key) in unique {
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
            users.insert(&id, value.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Deletes a user who is on no device.
    pub fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let _guard = self.lock();
        let user = self
            .user(id)?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        if let Some(device) = self
            .devices()?
            .into_iter()
            .find(|d| d.lines.iter().any(|l| l.user == id))
        {
            return Err(StoreError::InUse(format!(
                "user {id} is on device {}; remove the line first",
                device.mac
            )));
        }
        let trees = (
            &self.users,
            &self.by_extension,
            &self.by_sip_username,
            &self.by_email,
        );
        trees.transaction(|(users, by_ext, by_sip, by_email)| {
            users.remove(&id.to_be_bytes())?;
            by_ext.remove(user.extension.as_bytes())?;
            by_sip.remove(user.sip.username.as_bytes())?;
            if let Some(email) = &user.email {
                by_email.remove(email.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    // ---- devices ----

    /// All devices, by MAC.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        scan(&self.devices, "devices")
    }

    /// One device.
    pub fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError> {
        get(&self.devices, "devices", &mac.bytes())
    }

    /// Creates (`create` true: the MAC must be new) or replaces a device.
    /// Every user on its lines must exist.
    pub fn put_device(&self, device: &Device, create: bool) -> Result<(), StoreError> {
        let _guard = self.lock();
        let key = device.mac.bytes();
        let exists = self.devices.contains_key(key)?;
        if create && exists {
            return Err(StoreError::Conflict(Invalid::new(
                "mac",
                format!("device {} already exists", device.mac),
            )));
        }
        if !create && !exists {
            return Err(StoreError::NotFound(format!("device {}", device.mac)));
        }
        for (i, line) in device.lines.iter().enumerate() {
            if !self.users.contains_key(line.user.to_be_bytes())? {
                return Err(StoreError::Conflict(Invalid::new(
                    format!("lines[{i}].user"),
                    format!("there is no user {}", line.user),
                )));
            }
        }
        self.devices.insert(key, encode(device))?;
        Ok(())
    }

    /// Deletes a device; what the server saw of it goes too.
    pub fn delete_device(&self, mac: Mac) -> Result<(), StoreError> {
        let _guard = self.lock();
        let key = mac.bytes();
        (&self.devices, &self.sightings).transaction(|(devices, sightings)| {
            if devices.remove(&key)?.is_none() {
                return abort(StoreError::NotFound(format!("device {mac}")));
            }
            sightings.remove(&key)?;
            Ok(())
        })?;
        Ok(())
    }

    // ---- settings ----

    /// The settings of a scope (`global`, or `model:<id>`); empty when unset.
    pub fn settings(&self, scope: &str) -> Result<Settings, StoreError> {
        Ok(get(&self.settings, "settings", scope.as_bytes())?.unwrap_or_default())
    }

    /// Replaces the settings of a scope.
    pub fn put_settings(&self, scope: &str, settings: &Settings) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.settings.insert(scope.as_bytes(), encode(settings))?;
        Ok(())
    }

    // ---- what phones did ----

    /// What the server last served a device.
    pub fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError> {
        get(&self.sightings, "sightings", &mac.bytes())
    }

    /// Records sightings of provisioned devices, in one batch.
    pub fn record_sightings(&self, batch: &[(Mac, Sighting)]) -> Result<(), StoreError> {
        let mut writes = sled::Batch::default();
        for (mac, sighting) in batch {
            writes.insert(&mac.bytes(), encode(sighting));
        }
        self.sightings.apply_batch(writes)?;
        Ok(())
    }

    /// Records requests from unknown MACs, merging with what is known.
    pub fn record_discovered(&self, batch: &[Discovered]) -> Result<(), StoreError> {
        let mut writes = sled::Batch::default();
        for found in batch {
            let key = found.mac.bytes();
            let merged = match get::<Discovered>(&self.discovered, "discovered", &key)? {
                Some(old) => Discovered {
                    first_seen: old.first_seen,
                    count: old.count + found.count,
                    vendor: found.vendor.clone().or(old.vendor),
                    model: found.model.clone().or(old.model),
                    ..found.clone()
                },
                None => found.clone(),
            };
            writes.insert(&key, encode(&merged));
        }
        self.discovered.apply_batch(writes)?;
        Ok(())
    }

    /// The unknown MACs seen so far.
    pub fn discovered(&self) -> Result<Vec<Discovered>, StoreError> {
        scan(&self.discovered, "discovered")
    }

    // ---- meta ----

    /// A value kept under a name in the meta tree (e.g. the admin token hash).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Sets a meta value.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.meta.insert(name.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }
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

fn scan<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str) -> Result<Vec<T>, StoreError> {
    tree.iter().values().map(|v| decode(name, &v?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallerId, SipAccount};

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

    #[test]
    fn indexes_follow_the_user_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut ada = store.create_user(user("100")).unwrap();
        let err = store.create_user(user("100")).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref i) if i.field == "extension"),
            "{err}"
        );
        assert_eq!(store.users().unwrap().len(), 1);

        ada.extension = "101".into();
        ada.sip.username = "u101".into();
        ada.email = None;
        store.update_user(&ada).unwrap();
        assert!(store.user_by_extension("100").unwrap().is_none());
        assert_eq!(store.user_by_extension("101").unwrap().unwrap().id, ada.id);
        store.create_user(user("100")).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.meta.insert(SCHEMA_KEY, encode(&99u32)).unwrap();
            store.db.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }
}
