//! Moving a site from one store to another (`deskboot store copy`): from
//! sled to PostgreSQL when a site grows to more than one node, and back.
//!
//! A site is every record a server keeps: users (with their ids, and the
//! counter that keeps new ids from colliding with deleted ones), devices,
//! layouts, settings, uploaded templates with their history, admin tokens,
//! the audit log, and what phones did (sightings, discovered MACs, last
//! good files), plus the named values of [`Store::meta`] the caller lists.
//! Records and the audit log are written in one transaction, all or
//! nothing; what phones did follows in batches, as a server writes it.
//!
//! Copying checks nothing of what the records say: they come from a store,
//! which checked them when they were made. Whether the copy renders as the
//! source does is the caller's check (the CLI renders both).

use std::fmt;
use std::path::Path;

use super::audit::AuditEntry;
use super::{Change, LastGoodFile, Store, StoreError, StoreUrl, TemplateHistory};
use crate::domain::mac::Mac;
use crate::domain::progress::Report;
use crate::domain::records::{
    ApiToken, Device, Discovered, Layout, Settings, Sighting, User, UserId,
};

/// Why a site was not copied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The source names no store.
    #[error("there is no store at {0}")]
    NoSource(StoreUrl),
    /// The source and the destination are one store.
    #[error("{0} is both the source and the destination")]
    SameStore(StoreUrl),
    /// A sled store is open in another process.
    #[error(
        "{0} is in use: a deskboot server (or another copy) has it open; stop it and copy again"
    )]
    InUse(StoreUrl),
    /// The destination has records and replacing them was not asked for.
    #[error("{url} is not empty (it holds {holds}): copy with --replace to overwrite it")]
    NotEmpty {
        /// The destination.
        url: StoreUrl,
        /// What it holds.
        holds: Counts,
    },
    /// A store could not be opened.
    #[error("{url}: {source}")]
    Open {
        /// The store.
        url: StoreUrl,
        /// Why.
        source: StoreError,
    },
    /// Reading the source failed.
    #[error("reading {url}: {source}")]
    Read {
        /// The source.
        url: StoreUrl,
        /// Why.
        source: StoreError,
    },
    /// The transaction of records failed: the destination is as it was.
    #[error("writing the records failed, nothing was written: {0}")]
    Records(StoreError),
    /// What came after the records' transaction failed: the records are
    /// in the destination, some of what phones did may not be.
    #[error(
        "the records were copied, but copying {what} failed: {source}; copy again with --replace"
    )]
    AfterRecords {
        /// What was being copied.
        what: &'static str,
        /// Why.
        source: StoreError,
    },
}

/// How many records of each kind a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Users.
    pub users: usize,
    /// Devices.
    pub devices: usize,
    /// Named key layouts.
    pub layouts: usize,
    /// Scopes with settings.
    pub settings: usize,
    /// Uploaded templates (with their history).
    pub templates: usize,
    /// Named admin tokens.
    pub tokens: usize,
    /// Audit entries.
    pub audit: usize,
    /// Discovered MACs.
    pub discovered: usize,
    /// Devices' sightings.
    pub sightings: usize,
    /// Last good files.
    pub last_good: usize,
}

impl Counts {
    /// The counts of `store`'s records.
    pub fn of(store: &Store) -> Result<Counts, StoreError> {
        Ok(Site::read(store, &[])?.counts())
    }

    /// Whether there is no record at all.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            (self.users, "users"),
            (self.devices, "devices"),
            (self.layouts, "layouts"),
            (self.settings, "settings scopes"),
            (self.templates, "uploaded templates"),
            (self.tokens, "tokens"),
            (self.audit, "audit entries"),
            (self.discovered, "discovered phones"),
            (self.sightings, "sightings"),
            (self.last_good, "last good files"),
        ];
        let shown: Vec<String> = kinds
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, kind)| format!("{count} {kind}"))
            .collect();
        if shown.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&shown.join(", "))
    }
}

/// Everything a site is, read from one store.
struct Site {
    users: Vec<User>,
    devices: Vec<Device>,
    layouts: Vec<Layout>,
    settings: Vec<(String, Settings)>,
    templates: Vec<(String, TemplateHistory)>,
    tokens: Vec<ApiToken>,
    audit: Vec<AuditEntry>,
    discovered: Vec<Discovered>,
    sightings: Vec<(Mac, Sighting)>,
    last_good: Vec<LastGoodFile>,
    last_user_id: UserId,
    meta: Vec<(String, Vec<u8>)>,
}

impl Site {
    /// Every record of `store`, and the values of `meta` it has.
    fn read(store: &Store, meta: &[&str]) -> Result<Site, StoreError> {
        let mut kept = Vec::new();
        for name in meta {
            if let Some(value) = store.meta(name)? {
                kept.push((name.to_string(), value));
            }
        }
        Ok(Site {
            users: store.users()?,
            devices: store.devices()?,
            layouts: store.layouts()?,
            // An unset scope reads as empty settings: only set ones count.
            settings: store
                .all_settings()?
                .into_iter()
                .filter(|(_, settings)| *settings != Settings::default())
                .collect(),
            templates: store.templates()?,
            tokens: store.tokens()?,
            audit: store.audit(0, None)?,
            discovered: store.discovered()?,
            sightings: store.sightings()?,
            last_good: store.all_last_good()?,
            last_user_id: store.last_user_id()?,
            meta: kept,
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            users: self.users.len(),
            devices: self.devices.len(),
            layouts: self.layouts.len(),
            settings: self.settings.len(),
            templates: self.templates.len(),
            tokens: self.tokens.len(),
            audit: self.audit.len(),
            discovered: self.discovered.len(),
            sightings: self.sightings.len(),
            last_good: self.last_good.len(),
        }
    }

    /// The changes that remove every record of this site (the
    /// destination's, replaced); settings are emptied, as they cannot go.
    /// A device's sighting and last good files go with it.
    fn forgotten(self) -> Vec<Change> {
        let mut changes = Vec::new();
        changes.extend(self.devices.into_iter().map(Change::DeleteDevice));
        changes.extend(self.users.into_iter().map(Change::DeleteUser));
        changes.extend(self.layouts.into_iter().map(Change::DeleteLayout));
        changes.extend(
            self.templates
                .into_iter()
                .map(|(key, old)| Change::DeleteTemplate { key, old }),
        );
        changes.extend(self.tokens.into_iter().map(Change::DeleteToken));
        changes.extend(
            self.discovered
                .into_iter()
                .map(|found| Change::DeleteDiscovered(found.mac)),
        );
        changes.extend(
            self.settings
                .into_iter()
                .map(|(scope, old)| Change::PutSettings {
                    scope,
                    new: Settings::default(),
                    old,
                }),
        );
        changes
    }

    /// The changes that write this site's records: users before the
    /// devices that name them, layouts before the devices that follow them.
    fn written(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        changes.extend(
            self.users
                .drain(..)
                .map(|new| Change::PutUser { new, old: None }),
        );
        changes.extend(
            self.layouts
                .drain(..)
                .map(|new| Change::PutLayout { new, old: None }),
        );
        changes.extend(
            self.devices
                .drain(..)
                .map(|new| Change::PutDevice { new, old: None }),
        );
        changes.extend(
            self.settings
                .drain(..)
                .map(|(scope, new)| Change::PutSettings {
                    scope,
                    new,
                    old: Settings::default(),
                }),
        );
        changes.extend(
            self.templates
                .drain(..)
                .map(|(key, new)| Change::PutTemplate {
                    key,
                    new,
                    old: None,
                }),
        );
        changes.extend(self.tokens.drain(..).map(Change::PutToken));
        changes
    }
}

/// Opens the store `url` names for a copy: a sled source must exist, and
/// a sled store another process holds is [`CopyError::InUse`].
pub fn open(url: &StoreUrl, must_exist: bool) -> Result<Store, CopyError> {
    if let StoreUrl::Sled(dir) = url
        && must_exist
        && !holds_sled(dir)
    {
        return Err(CopyError::NoSource(url.clone()));
    }
    Store::open_url(url).map_err(|source| match source {
        StoreError::Sled(e) if super::sled::is_locked(&e) => CopyError::InUse(url.clone()),
        source => CopyError::Open {
            url: url.clone(),
            source,
        },
    })
}

/// Whether `dir` holds a sled database (its `conf` file).
fn holds_sled(dir: &Path) -> bool {
    dir.join("conf").is_file()
}

/// Copies the site in `from` into `to`, with the values of `meta`:
/// refused if `to` holds anything, unless `replace` (then everything in it
/// goes first, in the same transaction; its own audit log stays, before
/// the copied one). Reports the records' transaction as it is written;
/// says what was copied.
pub fn copy(
    (from, from_url): (&Store, &StoreUrl),
    (to, to_url): (&Store, &StoreUrl),
    meta: &[&str],
    replace: bool,
    report: Report<'_>,
) -> Result<Counts, CopyError> {
    if from_url == to_url {
        return Err(CopyError::SameStore(from_url.clone()));
    }
    let mut site = Site::read(from, meta).map_err(|source| CopyError::Read {
        url: from_url.clone(),
        source,
    })?;
    let copied = site.counts();
    let present = Site::read(to, &[]).map_err(|source| CopyError::Read {
        url: to_url.clone(),
        source,
    })?;
    let holds = present.counts();
    // The destination's own audit log stays whatever happens: it is no
    // record a copy replaces.
    let records = Counts { audit: 0, ..holds };
    if !records.is_empty() && !replace {
        return Err(CopyError::NotEmpty {
            url: to_url.clone(),
            holds,
        });
    }
    let highest_user = site
        .users
        .iter()
        .map(|user| user.id)
        .fold(site.last_user_id, UserId::max);
    let mut changes = present.forgotten();
    changes.extend(site.written());
    to.copy_in(&changes, std::mem::take(&mut site.audit), report)
        .map_err(CopyError::Records)?;
    drop(changes);
    let after = |what| move |source| CopyError::AfterRecords { what, source };
    to.skip_user_ids_to(highest_user)
        .map_err(after("the user id counter"))?;
    to.record_discovered(&site.discovered)
        .map_err(after("the discovered phones"))?;
    to.record_sightings(&site.sightings)
        .map_err(after("the sightings"))?;
    to.record_last_good(&site.last_good)
        .map_err(after("the last good files"))?;
    for (name, value) in &site.meta {
        to.put_meta(name, value)
            .map_err(after("the named values"))?;
    }
    to.flush_blocking().map_err(after("what phones did"))?;
    Ok(copied)
}
