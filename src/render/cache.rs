//! The render cache: a storm of phones asking for unchanged files renders
//! each file once.
//!
//! An entry is valid while nothing an administrator can change has changed:
//! it is stamped with the store's change counter and the template set's
//! (and the quarter hour, since a time zone's current offset moves at its
//! daylight-saving switches), and a stamp that differs from the current one
//! is a miss. That is conservative (any change empties the cache) but never
//! serves a stale file, and administrators change things rarely next to
//! phones' requests.
//! The cache holds at most a byte budget: when full it drops stale entries,
//! then arbitrary ones down to three quarters of the budget, so a scan of
//! many files cannot grow memory and a storm bigger than the cache still
//! mostly hits. A storm is over in minutes, and phones then ask again only
//! hours later: entries nobody asked for between two sweeps (a minute apart
//! on the cache's [`Clock`]) are dropped, so the memory a storm took is given back.
//!
//! A file every phone of a model shares is kept at once. A per-device file
//! is kept only when asked for again within two sweeps: a boot storm asks
//! for most of them once, so keeping them all would hold a storm's worth of
//! bytes for no hit, while a phone that keeps asking (a resync loop, a
//! firmware upgrade's reboot) is served from the cache from its third ask.
//! Which keys were asked for once is a set of their hashes, cleared sweep
//! by sweep and capped, so it costs a few bytes a device.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::domain::clock::Clock;
use crate::render::served::ServedFile;

/// What makes two requests get the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The file name, lower-cased (phones vary the MAC's case).
    pub file: String,
    /// The model a common file is rendered for (the User-Agent picks among
    /// models sharing one); none for a per-device file.
    pub model: Option<String>,
    /// The provisioning URL derived from the request.
    pub origin: Input,
    /// The firmware the phone reports.
    pub firmware: Input,
    /// Whether passwords were left out (TFTP policy).
    pub without_secrets: bool,
}

/// A part of a request that changes a file only where the settings make
/// it: the `Host` only without a `provisioning_url`, the firmware only
/// with a `firmware_url`. A request first looks for a file rendered without
/// it, so random `Host` headers or firmware strings cannot make every
/// request a miss.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// The file was rendered without it: any value gets the same file.
    Unused,
    /// The value the request gave (or none).
    Given(Option<String>),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Given(Some(text)) => text.len(),
            _ => 0,
        }
    }

    /// Whether it holds a value a request chose, which another request
    /// may never give again.
    fn is_chosen(&self) -> bool {
        matches!(self, Input::Given(Some(_)))
    }
}

/// Which request inputs a render looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputsUsed {
    /// The origin (`Host`): no `provisioning_url` was set.
    pub origin: bool,
    /// The reported firmware: a `firmware_url` was set.
    pub firmware: bool,
}

impl CacheKey {
    /// This key with the inputs a render did not use made [`Input::Unused`].
    pub fn keeping(mut self, used: InputsUsed) -> CacheKey {
        if !used.origin {
            self.origin = Input::Unused;
        }
        if !used.firmware {
            self.firmware = Input::Unused;
        }
        self
    }

    /// The keys an entry for this request may be under, those that ignore
    /// the most first; each is made only when the one before missed.
    fn candidates(&self) -> impl Iterator<Item = CacheKey> + '_ {
        [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .map(|(origin, firmware)| self.clone().keeping(InputsUsed { origin, firmware }))
    }
}

/// The state an entry was rendered from: (store changes, template sets,
/// [`RenderCache::quarter_hour`]).
pub type Stamp = (u64, u64, u64);

/// How long apart sweeps are: a storm is over within a few of them, and
/// an entry asked for at least this often is never swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The most per-device keys remembered as asked for once, per sweep: about
/// 2.5 MB at most, and more than a storm of 100,000 phones asks for in a minute.
const MAX_ASKED_ONCE: usize = 1 << 18;

/// Rendered files by request.
#[derive(Debug)]
pub struct RenderCache {
    budget: usize,
    templates: AtomicU64,
    /// Hashes keys for the asked-once sets (keyed at random, so requests
    /// cannot be crafted to collide).
    hasher: RandomState,
    /// Times the sweeps and the quarter hours.
    clock: Clock,
    inner: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    files: HashMap<CacheKey, Entry>,
    bytes: usize,
    /// How many sweeps have run; an entry remembers the last one it was used in.
    sweeps: u64,
    /// When the last sweep ran, or the cache was made.
    swept_at: Instant,
    /// Hashes of the per-device keys rendered once, not kept, since the last sweep.
    asked_once: HashSet<u64>,
    /// The same, between the two sweeps before.
    asked_once_before: HashSet<u64>,
}

#[derive(Debug)]
struct Entry {
    stamp: Stamp,
    file: ServedFile,
    /// What the entry costs ([`entry_size`]), kept so dropping it needs no key.
    size: usize,
    used_in_sweep: u64,
}

/// What an entry costs, roughly: its bytes, its strings, and the map's own
/// share (a guess that errs high, so the budget holds).
fn entry_size(key: &CacheKey, file: &ServedFile) -> usize {
    let strings = key.model.as_ref().map_or(0, String::len) + key.origin.len() + key.firmware.len();
    const OVERHEAD: usize = 256;
    file.body.len()
        + key.file.len()
        + strings
        + file.etag.len()
        + file.content_type.len()
        + file.model.len()
        + OVERHEAD
}

impl Entries {
    /// Frees room for `needed` bytes: stale entries first (they can never
    /// be served again), then arbitrary ones down to three quarters of the
    /// budget, so a storm larger than the cache keeps most of its hits
    /// instead of starting over each time it fills.
    fn make_room(&mut self, needed: usize, current: Stamp, budget: usize) {
        self.drop_where(|entry| entry.stamp != current);
        let target = (budget / 4 * 3).saturating_sub(needed);
        let mut bytes = self.bytes;
        self.drop_where(|entry| {
            if bytes <= target {
                return false;
            }
            bytes -= entry.size;
            true
        });
    }

    /// Whether a file that only some requests get is asked for the first
    /// time lately (and is not worth keeping yet), noting that it was.
    fn first_ask(&mut self, hash: u64) -> bool {
        if self.asked_once.contains(&hash) || self.asked_once_before.contains(&hash) {
            return false;
        }
        if self.asked_once.len() < MAX_ASKED_ONCE {
            self.asked_once.insert(hash);
        }
        true
    }

    /// Drops the entries nobody asked for since the previous sweep, and
    /// forgets the first asks of the sweep before; the bytes it dropped.
    fn sweep_idle(&mut self) -> usize {
        let previous = self.sweeps;
        let before = self.bytes;
        self.drop_where(|entry| entry.used_in_sweep < previous);
        self.sweeps += 1;
        self.asked_once_before = std::mem::take(&mut self.asked_once);
        // A map keeps its table when emptied; this gives it back.
        self.files.shrink_to_fit();
        before - self.bytes
    }

    /// Drops the entries `doomed` picks, keeping the byte count true.
    fn drop_where(&mut self, mut doomed: impl FnMut(&Entry) -> bool) {
        let mut bytes = self.bytes;
        self.files.retain(|_, entry| {
            if doomed(entry) {
                bytes -= entry.size;
                return false;
            }
            true
        });
        self.bytes = bytes;
    }
}

impl RenderCache {
    /// A cache that holds at most `budget` bytes of rendered files, on
    /// `clock`'s time.
    pub fn new(budget: usize, clock: Clock) -> Self {
        let entries = Entries {
            files: HashMap::new(),
            bytes: 0,
            sweeps: 0,
            swept_at: clock.now(),
            asked_once: HashSet::new(),
            asked_once_before: HashSet::new(),
        };
        RenderCache {
            budget,
            templates: AtomicU64::new(0),
            hasher: RandomState::new(),
            clock,
            inner: Mutex::new(entries),
        }
    }

    /// Quarter hours since 1970, the time part of the current stamp: every
    /// daylight-saving switch in the world falls on one of their boundaries.
    pub fn quarter_hour(&self) -> u64 {
        self.clock.unix_secs() / 900
    }

    /// The template part of the current stamp.
    pub fn template_generation(&self) -> u64 {
        self.templates.load(Ordering::SeqCst)
    }

    /// Marks every entry stale after a change of templates.
    pub fn templates_changed(&self) {
        self.templates.fetch_add(1, Ordering::SeqCst);
    }

    /// The file for a request's `key` (every input [`Input::Given`]), if
    /// it was rendered from the state `stamp` names, with or without
    /// looking at those inputs.
    pub fn get(&self, key: &CacheKey, stamp: Stamp) -> Option<ServedFile> {
        let mut entries = self.lock();
        let sweeps = entries.sweeps;
        let found = key.candidates().find(|candidate| {
            entries
                .files
                .get(candidate)
                .is_some_and(|e| e.stamp == stamp)
        })?;
        let entry = entries.files.get_mut(&found)?;
        entry.used_in_sweep = sweeps;
        Some(entry.file.clone())
    }

    /// Keeps a file rendered from the state `stamp` (taken before rendering,
    /// so a change that landed meanwhile makes the entry stale at once),
    /// under a key whose unused inputs are [`Input::Unused`]. A per-device
    /// file, or one that depends on a `Host` or firmware the request chose,
    /// is kept only once it is asked for again: a flood of made-up values
    /// then takes no memory.
    pub fn put(&self, key: CacheKey, stamp: Stamp, file: &ServedFile) {
        let size = entry_size(&key, file);
        if size > self.budget {
            return;
        }
        let mut entries = self.lock();
        let one_of_many = file.mac.is_some() || key.origin.is_chosen() || key.firmware.is_chosen();
        if one_of_many
            && !entries.files.contains_key(&key)
            && entries.first_ask(self.hasher.hash_one(&key))
        {
            return;
        }
        if entries.bytes + size > self.budget {
            entries.make_room(size, stamp, self.budget);
        }
        let entry = Entry {
            stamp,
            file: file.clone(),
            size,
            used_in_sweep: entries.sweeps,
        };
        if let Some(old) = entries.files.insert(key, entry) {
            entries.bytes -= old.size;
        }
        entries.bytes += size;
    }

    /// Drops the entries nobody asked for since the previous sweep, now,
    /// whatever the clock says; returns how many bytes it dropped.
    #[cfg(test)]
    fn sweep_idle(&self) -> usize {
        self.lock().sweep_idle()
    }

    /// Drops the entries nobody asked for since the previous sweep, when
    /// [`SWEEP_INTERVAL`] has passed since it, so what a storm took is given
    /// back once the storm is over; the bytes it dropped, or `None` when no
    /// sweep was due.
    pub fn sweep_if_due(&self) -> Option<usize> {
        let now = self.clock.now();
        let mut entries = self.lock();
        if now.duration_since(entries.swept_at) < SWEEP_INTERVAL {
            return None;
        }
        entries.swept_at = now;
        Some(entries.sweep_idle())
    }

    /// The bytes the cache holds: its files, their keys, and an overhead per entry.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;

    fn file(len: usize) -> ServedFile {
        ServedFile {
            body: bytes::Bytes::from(vec![b'x'; len]),
            content_type: "text/plain".into(),
            etag: "\"e\"".into(),
            model: "m".into(),
            mac: None,
        }
    }

    fn device_file(len: usize) -> ServedFile {
        ServedFile {
            mac: Some(crate::domain::mac::Mac::from_bytes([
                0, 0x15, 0x65, 0, 0, 1,
            ])),
            ..file(len)
        }
    }

    fn key(name: &str) -> CacheKey {
        CacheKey {
            file: name.into(),
            model: None,
            origin: Input::Given(None),
            firmware: Input::Given(None),
            without_secrets: false,
        }
    }

    fn asked_with(name: &str, host: &str, firmware: &str) -> CacheKey {
        CacheKey {
            origin: Input::Given(Some(host.into())),
            firmware: Input::Given(Some(firmware.into())),
            ..key(name)
        }
    }

    #[test]
    fn a_file_that_ignores_host_and_firmware_is_one_entry_for_all() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        let unused = InputsUsed {
            origin: false,
            firmware: false,
        };
        let first = asked_with("a", "http://x", "1.0");
        cache.put(first.keeping(unused), (0, 0, 0), &file(10));
        for n in 0..100 {
            let forged = asked_with("a", &format!("http://{n}"), &format!("{n}.0"));
            assert!(cache.get(&forged, (0, 0, 0)).is_some(), "{n}");
        }
        assert_eq!(cache.lock().files.len(), 1);
    }

    #[test]
    fn made_up_hosts_a_file_depends_on_are_not_kept() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        let by_host = InputsUsed {
            origin: true,
            firmware: false,
        };
        for n in 0..100 {
            let forged = asked_with("a", &format!("http://{n}"), "1.0").keeping(by_host);
            cache.put(forged, (0, 0, 0), &file(10));
        }
        assert!(cache.lock().files.is_empty(), "each asked once");
        let phones = asked_with("a", "http://prov", "1.0");
        cache.put(phones.clone().keeping(by_host), (0, 0, 0), &file(10));
        cache.put(phones.clone().keeping(by_host), (0, 0, 0), &file(10));
        assert!(cache.get(&phones, (0, 0, 0)).is_some(), "asked again: kept");
        let other_host = asked_with("a", "http://other", "1.0");
        assert!(cache.get(&other_host, (0, 0, 0)).is_none());
    }

    #[test]
    fn a_new_stamp_is_a_miss() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        cache.put(key("a"), (1, 0, 0), &file(10));
        assert!(cache.get(&key("a"), (1, 0, 0)).is_some());
        assert!(cache.get(&key("a"), (2, 0, 0)).is_none());
        assert!(cache.get(&key("b"), (1, 0, 0)).is_none());
    }

    #[test]
    fn the_budget_bounds_memory_and_a_full_cache_keeps_most_entries() {
        let one = entry_size(&key("00"), &file(30));
        let cache = RenderCache::new(one * 20, Clock::System);
        for i in 0..100 {
            cache.put(key(&format!("{i:02}")), (0, 0, 0), &file(30));
            let entries = cache.lock();
            assert!(entries.bytes <= one * 20);
            let counted: usize = entries
                .files
                .iter()
                .map(|(k, e)| entry_size(k, &e.file))
                .sum();
            assert_eq!(entries.bytes, counted, "the count stays exact");
        }
        let kept = (0..100)
            .filter(|i| cache.get(&key(&format!("{i:02}")), (0, 0, 0)).is_some())
            .count();
        assert!(kept >= 15, "a full cache evicts a quarter, not all: {kept}");
        cache.put(key("big"), (0, 0, 0), &file(one * 21));
        assert!(cache.get(&key("big"), (0, 0, 0)).is_none());
    }

    #[test]
    fn stale_entries_go_first() {
        let one = entry_size(&key("00"), &file(30));
        let cache = RenderCache::new(one * 10, Clock::System);
        for i in 0..5 {
            cache.put(key(&format!("old{i}")), (0, 0, 0), &file(30));
        }
        for i in 0..10 {
            cache.put(key(&format!("{i:02}")), (1, 0, 0), &file(30));
        }
        let current = (0..10)
            .filter(|i| cache.get(&key(&format!("{i:02}")), (1, 0, 0)).is_some())
            .count();
        assert!(current >= 8, "the stale ones made the room: {current}");
    }

    #[test]
    fn a_sweep_drops_what_was_not_asked_for_since_the_previous_one() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        cache.put(key("asked"), (0, 0, 0), &file(10));
        cache.put(key("forgotten"), (0, 0, 0), &file(10));
        assert_eq!(cache.sweep_idle(), 0, "one sweep is not enough");
        assert!(cache.get(&key("forgotten"), (0, 0, 0)).is_some());
        cache.put(key("forgotten"), (0, 0, 0), &file(10));
        cache.sweep_idle();
        assert!(cache.get(&key("asked"), (0, 0, 0)).is_none());
        assert!(
            cache.get(&key("forgotten"), (0, 0, 0)).is_some(),
            "a put counts as use"
        );
        let one = cache.bytes();
        cache.sweep_idle();
        assert_eq!(cache.sweep_idle(), one, "it tells what it dropped");
        assert_eq!(cache.bytes(), 0);
        assert!(cache.lock().files.is_empty());
        assert_eq!(cache.lock().files.capacity(), 0, "the table is given back");
    }

    #[test]
    fn a_per_device_file_is_kept_when_asked_for_again() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        cache.put(key("mac.cfg"), (0, 0, 0), &device_file(10));
        assert!(cache.get(&key("mac.cfg"), (0, 0, 0)).is_none(), "once");
        assert_eq!(cache.bytes(), 0, "a storm's one-off files take no room");
        cache.put(key("mac.cfg"), (0, 0, 0), &device_file(10));
        assert!(cache.get(&key("mac.cfg"), (0, 0, 0)).is_some(), "twice");

        cache.put(key("late.cfg"), (0, 0, 0), &device_file(10));
        cache.sweep_idle();
        cache.put(key("late.cfg"), (0, 0, 0), &device_file(10));
        assert!(
            cache.get(&key("late.cfg"), (0, 0, 0)).is_some(),
            "asked again after a sweep"
        );

        cache.put(key("rare.cfg"), (0, 0, 0), &device_file(10));
        cache.sweep_idle();
        cache.sweep_idle();
        cache.put(key("rare.cfg"), (0, 0, 0), &device_file(10));
        assert!(
            cache.get(&key("rare.cfg"), (0, 0, 0)).is_none(),
            "two sweeps forget a first ask"
        );
        assert!(cache.lock().asked_once.len() <= 1);
        assert!(cache.lock().asked_once_before.is_empty());
    }

    #[test]
    fn the_first_asks_remembered_are_capped() {
        let cache = RenderCache::new(1 << 20, Clock::System);
        let mut entries = cache.lock();
        for hash in 0..MAX_ASKED_ONCE as u64 + 10 {
            assert!(entries.first_ask(hash));
        }
        assert_eq!(entries.asked_once.len(), MAX_ASKED_ONCE);
        assert!(!entries.first_ask(0), "remembered");
        assert!(
            entries.first_ask(MAX_ASKED_ONCE as u64),
            "past the cap: never kept"
        );
    }

    #[test]
    fn an_entry_nobody_asks_for_is_swept_after_its_idle_time() {
        let manual = ManualClock::starting_at(1_700_000_000);
        let cache = RenderCache::new(1 << 20, manual.clock());
        cache.put(key("asked"), (0, 0, 0), &file(10));
        cache.put(key("idle"), (0, 0, 0), &file(10));
        manual.advance(SWEEP_INTERVAL - Duration::from_millis(1));
        assert_eq!(cache.sweep_if_due(), None, "no sweep before its time");
        manual.advance(Duration::from_millis(1));
        assert_eq!(cache.sweep_if_due(), Some(0), "both were used meanwhile");
        manual.advance(SWEEP_INTERVAL / 2);
        assert!(cache.get(&key("asked"), (0, 0, 0)).is_some());
        manual.advance(SWEEP_INTERVAL / 2);
        let one = entry_size(&key("idle"), &file(10));
        assert_eq!(cache.sweep_if_due(), Some(one), "a whole interval idle");
        assert!(cache.get(&key("idle"), (0, 0, 0)).is_none());
        assert!(cache.get(&key("asked"), (0, 0, 0)).is_some());
    }

    #[test]
    fn the_stamp_moves_with_the_quarter_hour() {
        // 1,699,999,200 s since 1970 is a quarter hour's first second.
        let manual = ManualClock::starting_at(1_699_999_200);
        let cache = RenderCache::new(1 << 20, manual.clock());
        let now = cache.quarter_hour();
        cache.put(key("a"), (0, 0, now), &file(10));
        manual.advance(Duration::from_secs(899));
        assert_eq!(cache.quarter_hour(), now);
        manual.advance(Duration::from_secs(1));
        assert_eq!(cache.quarter_hour(), now + 1);
        assert!(cache.get(&key("a"), (0, 0, cache.quarter_hour())).is_none());
    }
}
