//! Export and restore: everything an administrator configured, as one JSON
//! document.
//!
//! A backup holds users, devices, named key layouts, settings and uploaded
//! templates (with their history), plus the schema version that wrote it. A restore checks
//! the whole document first and then writes it in one transaction, into an
//! empty store or replacing everything; a backup from an older deskboot
//! restores into a newer one.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::domain::clock::unix_now;
use crate::domain::records::{Device, HoldsSecrets, Invalid, Layout, Settings, User};
use crate::store::{Change, SCHEMA_VERSION, Store, StoreError, TemplateHistory};

/// The `format` field of every backup.
pub const FORMAT: &str = "deskboot-backup";

/// A whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Always [`FORMAT`].
    pub format: String,
    /// The store schema of the deskboot that wrote it.
    pub schema_version: u32,
    /// Unix seconds.
    pub exported_at: u64,
    /// Every user.
    pub users: Vec<User>,
    /// Every device.
    pub devices: Vec<Device>,
    /// Every named key layout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layouts: Vec<Layout>,
    /// Settings by scope (`global`, `model:<id>`).
    #[serde(default)]
    pub settings: BTreeMap<String, Settings>,
    /// Uploaded templates by key, with their history.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateHistory>,
}

impl HoldsSecrets for Backup {
    fn masked(mut self) -> Backup {
        self.users = self.users.into_iter().map(User::masked).collect();
        self.devices = self.devices.into_iter().map(Device::masked).collect();
        for settings in self.settings.values_mut() {
            *settings = std::mem::take(settings).masked();
        }
        self
    }
}

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Something in the document is wrong.
    #[error("{0}")]
    Invalid(Invalid),
    /// The store has data and replacing it was not asked for.
    #[error("the store is not empty: restore with replace to overwrite everything")]
    NotEmpty,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Invalid> for RestoreError {
    fn from(i: Invalid) -> Self {
        RestoreError::Invalid(i)
    }
}

/// Everything in the store, as a backup.
pub fn export(store: &Store) -> Result<Backup, StoreError> {
    Ok(Backup {
        format: FORMAT.into(),
        schema_version: SCHEMA_VERSION,
        exported_at: unix_now(),
        users: store.users()?,
        devices: store.devices()?,
        layouts: store.layouts()?,
        settings: store.all_settings()?.into_iter().collect(),
        templates: store.templates()?.into_iter().collect(),
    })
}

/// Checks a backup and plans the changes that restore it. With `replace`,
/// everything now in the store goes first; without it the store must be empty.
pub fn plan_restore(
    backup: Backup,
    store: &Store,
    catalog: &Catalog,
    replace: bool,
) -> Result<Vec<Change>, RestoreError> {
    check(&backup, catalog)?;
    let current = export(store)?;
    let empty = current.users.is_empty()
        && current.devices.is_empty()
        && current.layouts.is_empty()
        && current.templates.is_empty()
        && current.settings.values().all(|s| *s == Settings::default());
    if !empty && !replace {
        return Err(RestoreError::NotEmpty);
    }
    let mut changes = forget(current, &backup);
    changes.extend(put(backup, store)?);
    Ok(changes)
}

/// Refuses a backup that this deskboot cannot restore whole.
fn check(backup: &Backup, catalog: &Catalog) -> Result<(), RestoreError> {
    if backup.format != FORMAT {
        return Err(Invalid::new("format", format!("expected \"{FORMAT}\"")).into());
    }
    if backup.schema_version > SCHEMA_VERSION {
        return Err(Invalid::new(
            "schema_version",
            format!(
                "the backup is from a newer deskboot (schema {}; this one knows {SCHEMA_VERSION})",
                backup.schema_version
            ),
        )
        .into());
    }
    let mut user_ids = HashSet::new();
    for (i, user) in backup.users.iter().enumerate() {
        user.validate()
            .map_err(|e| Invalid::new(format!("users[{i}].{}", e.field), e.message))?;
        if !user_ids.insert(user.id) {
            return Err(Invalid::new(format!("users[{i}].id"), "is used twice").into());
        }
    }
    for (i, layout) in backup.layouts.iter().enumerate() {
        layout
            .validate()
            .map_err(|e| Invalid::new(format!("layouts[{i}].{}", e.field), e.message))?;
        if catalog.model(&layout.model).is_none() {
            return Err(Invalid::new(
                format!("layouts[{i}].model"),
                format!("unknown model '{}'", layout.model),
            )
            .into());
        }
    }
    for (i, device) in backup.devices.iter().enumerate() {
        check_device(i, device, &user_ids, &backup.layouts, catalog)?;
    }
    for (scope, settings) in &backup.settings {
        settings
            .validate()
            .map_err(|e| Invalid::new(format!("settings.{scope}.{}", e.field), e.message))?;
    }
    Ok(())
}

/// Refuses the backup's `i`th device unless it fits its model with its
/// layout's keys, and its users and layout are in the backup.
fn check_device(
    i: usize,
    device: &Device,
    user_ids: &HashSet<u64>,
    layouts: &[Layout],
    catalog: &Catalog,
) -> Result<(), RestoreError> {
    let field = |name: &str| format!("devices[{i}].{name}");
    device
        .validate()
        .map_err(|e| Invalid::new(field(&e.field), e.message))?;
    let model = catalog
        .model(&device.model)
        .ok_or_else(|| Invalid::new(field("model"), format!("unknown model '{}'", device.model)))?;
    let shown = match &device.layout {
        None => device.clone(),
        Some(name) => layouts
            .iter()
            .find(|l| l.name == *name && l.model == device.model)
            .ok_or_else(|| {
                Invalid::new(
                    field("layout"),
                    format!("no layout {name} for its model in the backup"),
                )
            })?
            .laid_under(device),
    };
    model
        .check_device(&shown)
        .map_err(|e| Invalid::new(field(&e.field), e.message))?;
    if let Some(line) = device.lines.iter().find(|l| !user_ids.contains(&l.user)) {
        return Err(Invalid::new(
            field("lines"),
            format!("no user {} in the backup", line.user),
        )
        .into());
    }
    Ok(())
}

/// The changes that remove what the store holds now (settings only where
/// the backup does not set their scope).
fn forget(current: Backup, backup: &Backup) -> Vec<Change> {
    let mut changes = Vec::new();
    changes.extend(current.devices.into_iter().map(Change::DeleteDevice));
    changes.extend(current.users.into_iter().map(Change::DeleteUser));
    changes.extend(current.layouts.into_iter().map(Change::DeleteLayout));
    changes.extend(
        current
            .templates
            .into_iter()
            .map(|(key, old)| Change::DeleteTemplate { key, old }),
    );
    for (scope, old) in current.settings {
        if !backup.settings.contains_key(&scope) {
            changes.push(Change::PutSettings {
                scope,
                new: Settings::default(),
                old,
            });
        }
    }
    changes
}

/// The changes that write the backup.
fn put(backup: Backup, store: &Store) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::new();
    changes.extend(
        backup
            .users
            .into_iter()
            .map(|new| Change::PutUser { new, old: None }),
    );
    changes.extend(
        backup
            .layouts
            .into_iter()
            .map(|new| Change::PutLayout { new, old: None }),
    );
    changes.extend(
        backup
            .devices
            .into_iter()
            .map(|new| Change::PutDevice { new, old: None }),
    );
    for (scope, new) in backup.settings {
        let old = store.settings(&scope)?;
        changes.push(Change::PutSettings { scope, new, old });
    }
    changes.extend(
        backup
            .templates
            .into_iter()
            .map(|(key, new)| Change::PutTemplate {
                key,
                new,
                old: None,
            }),
    );
    Ok(changes)
}
