//! The node's copy of the records phones' requests read, so a file served
//! from the render cache costs no round trip, and a node that lost its
//! database still serves the phones it has seen.
//!
//! Filled on first read, "absent" included; emptied record by record by
//! what changed ([`Stale`]: this node's own changes at once, other nodes'
//! through their notifications), and whole when the notifications may have
//! been missed (the listening connection was lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The most records kept: a phone's render keeps three (its device, its
/// user, its sighting), so a node serving 300,000 phones keeps them all,
/// while MACs nobody provisioned (absent ones count too), asked for by a
/// scanner, cannot grow the cache without end. Beyond it the cache starts
/// again empty.
const MAX_RECORDS: usize = 1_000_000;

/// A kind of record the cache keeps, by the key a phone's read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A user by id.
    User,
    /// A user by a unique field (`field\tvalue`).
    UserBy,
    /// A device by MAC.
    Device,
    /// Settings by scope.
    Settings,
    /// A layout by name.
    Layout,
    /// A template's history by key.
    Template,
    /// A token by name.
    Token,
    /// A last good file by `mac/file`.
    LastGood,
    /// A sighting by MAC.
    Sighting,
    /// That every last good file of a MAC is in the cache, so one not
    /// there has none (kept by a read ahead, never named in notifications).
    LastGoodListed,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::User,
        Kind::UserBy,
        Kind::Device,
        Kind::Settings,
        Kind::Layout,
        Kind::Template,
        Kind::Token,
        Kind::LastGood,
        Kind::Sighting,
        Kind::LastGoodListed,
    ];

    /// The kind's name in a notification.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::UserBy => "user_by",
            Kind::Device => "device",
            Kind::Settings => "settings",
            Kind::Layout => "layout",
            Kind::Template => "template",
            Kind::Token => "token",
            Kind::LastGood => "last_good",
            Kind::Sighting => "sighting",
            Kind::LastGoodListed => "last_good_listed",
        }
    }

    /// The kind of marker that says a MAC's records of this kind are all
    /// in the cache: it goes whenever one of them does.
    fn listing(self) -> Option<Kind> {
        (self == Kind::LastGood).then_some(Kind::LastGoodListed)
    }

    fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// What a change made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stale {
    /// One record.
    One(Kind, String),
    /// Every record of a kind (a user's index entries: which ones moved is
    /// not worth working out for a change that rare).
    Every(Kind),
    /// Everything.
    All,
}

impl Stale {
    /// The line that names it in a notification.
    pub fn line(&self) -> String {
        match self {
            Stale::One(kind, key) => format!("{} {key}", kind.name()),
            Stale::Every(kind) => kind.name().to_string(),
            Stale::All => "*".to_string(),
        }
    }

    /// Reads a notification's line; anything unknown (a newer node's)
    /// makes everything stale, which is always safe.
    pub fn from_line(line: &str) -> Stale {
        let (name, key) = match line.split_once(' ') {
            Some((name, key)) => (name, Some(key)),
            None => (line, None),
        };
        match (Kind::named(name), key) {
            (Some(kind), Some(key)) => Stale::One(kind, key.to_string()),
            (Some(kind), None) => Stale::Every(kind),
            (None, _) => Stale::All,
        }
    }
}

/// A record as stored (its JSON), or its absence.
pub(crate) type Cached = Option<Arc<str>>;

/// The cache. Reads take a shared lock; only changes take it alone.
#[derive(Default)]
pub(crate) struct ReadCache {
    records: RwLock<HashMap<(Kind, String), Cached>>,
    /// Bumped by every invalidation: a fill read from the database before
    /// it may hold what the invalidation removed, so it is not kept.
    epoch: AtomicU64,
}

impl ReadCache {
    /// The epoch to give [`ReadCache::fill`] for a read starting now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The record, if the cache holds it (present or absent).
    pub fn get(&self, kind: Kind, key: &str) -> Option<Cached> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.get(&(kind, key.to_string())).cloned()
    }

    /// Takes a record out of the cache, if it holds it (present or
    /// absent), with any marker that vouched for it: the next read of it
    /// goes to the database.
    pub fn take(&self, kind: Kind, key: &str) -> Option<Cached> {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        let taken = records.get(&(kind, key.to_string())).cloned()?;
        Self::forget(&mut records, &Stale::One(kind, key.to_string()));
        Some(taken)
    }

    /// Keeps what a read found, unless something was invalidated since
    /// the read began (`epoch`).
    pub fn fill(&self, epoch: u64, kind: Kind, key: String, found: Cached) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch {
            Self::keep(&mut records, kind, key, found);
        }
    }

    /// Keeps what one read found of several records, unless something
    /// was invalidated since the read began (`epoch`).
    pub fn fill_all(&self, epoch: u64, found: Vec<(Kind, String, Cached)>) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch {
            for (kind, key, found) in found {
                Self::keep(&mut records, kind, key, found);
            }
        }
    }

    /// Replaces a record this node just wrote, if the cache holds it: it
    /// is what the database holds. One the cache does not hold stays out,
    /// so what phones did fills the cache only where it is read.
    pub fn update(&self, kind: Kind, key: String, written: Cached) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = records.get_mut(&(kind, key)) {
            *held = written;
        }
    }

    fn keep(records: &mut HashMap<(Kind, String), Cached>, kind: Kind, key: String, found: Cached) {
        if records.len() >= MAX_RECORDS {
            records.clear();
        }
        records.insert((kind, key), found);
    }

    /// Forgets what changed.
    pub fn invalidate(&self, stale: &[Stale]) {
        if stale.is_empty() {
            return;
        }
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for stale in stale {
            Self::forget(&mut records, stale);
        }
    }

    fn forget(records: &mut HashMap<(Kind, String), Cached>, stale: &Stale) {
        match stale {
            Stale::One(kind, key) => {
                records.remove(&(*kind, key.clone()));
                if let (Some(listing), Some((mac, _))) = (kind.listing(), key.split_once('/')) {
                    records.remove(&(listing, mac.to_string()));
                }
            }
            Stale::Every(every) => {
                records.retain(|(kind, _), _| kind != every && Some(*kind) != every.listing())
            }
            Stale::All => records.clear(),
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.invalidate(&[Stale::All]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_raced_a_change_is_not_kept() {
        let cache = ReadCache::default();
        let before = cache.epoch();
        cache.invalidate(&[Stale::One(Kind::Device, "001565aabbcc".into())]);
        cache.fill(
            before,
            Kind::Device,
            "001565aabbcc".into(),
            Some("{}".into()),
        );
        assert_eq!(cache.get(Kind::Device, "001565aabbcc"), None);
        cache.fill(cache.epoch(), Kind::Device, "001565aabbcc".into(), None);
        assert_eq!(cache.get(Kind::Device, "001565aabbcc"), Some(None));
    }

    #[test]
    fn a_listing_vouches_for_absence_only_while_its_files_are_all_there() {
        let cache = ReadCache::default();
        let (mac, file) = ("001565aabbcc", "001565aabbcc/001565aabbcc.cfg");
        let listed = || cache.get(Kind::LastGoodListed, mac).is_some();
        cache.fill_all(
            cache.epoch(),
            vec![
                (Kind::LastGood, file.into(), Some("{}".into())),
                (Kind::LastGoodListed, mac.into(), Some("".into())),
            ],
        );
        assert!(listed());
        assert_eq!(cache.take(Kind::LastGood, "001565aabbcc/other.cfg"), None);
        assert!(listed(), "a file the cache does not hold takes nothing");
        assert_eq!(cache.take(Kind::LastGood, file), Some(Some("{}".into())));
        assert!(!listed(), "a taken file leaves the listing incomplete");

        cache.fill_all(
            cache.epoch(),
            vec![(Kind::LastGoodListed, mac.into(), Some("".into()))],
        );
        cache.invalidate(&[Stale::One(Kind::LastGood, file.into())]);
        assert!(!listed(), "a changed file leaves the listing incomplete");
        cache.fill_all(
            cache.epoch(),
            vec![(Kind::LastGoodListed, mac.into(), Some("".into()))],
        );
        cache.invalidate(&[Stale::Every(Kind::LastGood)]);
        assert!(!listed());
    }

    #[test]
    fn notification_lines_name_what_changed() {
        for stale in [
            Stale::One(Kind::Template, "model/yealink-t46s/mac.cfg".into()),
            Stale::Every(Kind::UserBy),
            Stale::All,
        ] {
            assert_eq!(Stale::from_line(&stale.line()), stale);
        }
        assert_eq!(Stale::from_line("gadget 7"), Stale::All);
    }
}
