//! Anti-scanning: a source that asks for many different unknown MACs in a
//! short time is first slowed down (past half the limit), then banned for
//! a while.
//!
//! A source is counted twice: as a host (an IPv4 address, or an IPv6 /64,
//! since one machine may use a whole /64) and as the network around it (an
//! IPv4 /24, an IPv6 /48), which may ask for [`NETWORK_FACTOR`] times as
//! many before the whole network is banned: a scan spread over many
//! addresses is banned as the network it comes from. The User-Agent counts
//! for nothing: a scanner writes whatever it likes there, the very MAC it
//! guesses included.
//!
//! A ban keeps a source from per-device files unless the request proves
//! itself (HTTP Digest, a client certificate): the provisioner decides
//! that. Each transport has its own guard, so evidence from forged UDP
//! sources never bans anyone on HTTP.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] sources are followed, and as
//! many banned, at once. When a table is full, the least recently active
//! sources make room (for bans, those ending soonest): a flood of new
//! addresses evicts others' counts but cannot switch the defence off, since
//! the flood's own network is counted and banned too.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use crate::domain::clock::Clock;
use crate::domain::mac::Mac;
use crate::domain::transport::Transport;

/// How many times more unknown MACs a network may ask for than one host.
pub const NETWORK_FACTOR: usize = 5;
/// The most sources followed, and the most banned, at once.
const MAX_TRACKED: usize = 10_000;
/// How often full tables are swept of expired entries, at most: a sweep
/// walks them all, under the lock that every request takes.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The share of a full table evicted at once, so that a flood of new
/// sources pays for one walk of the table per this many insertions.
const EVICT_DIVISOR: usize = 8;

/// Thresholds, from the `[provisioning]` policy.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Different unknown MACs a host may ask for within `window`.
    pub unknown_macs: usize,
    /// The counting window.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
}

/// Where requests come from, at the two granularities counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    /// An IPv4 address, or an IPv6 /64.
    Host(IpNet),
    /// An IPv4 /24, or an IPv6 /48.
    Network(IpNet),
}

impl Source {
    /// The host and the network `address` belongs to.
    fn of(address: IpAddr) -> [Source; 2] {
        let (host, network) = match address.to_canonical() {
            IpAddr::V4(_) => (32, 24),
            IpAddr::V6(_) => (64, 48),
        };
        [
            Source::Host(net(address, host)),
            Source::Network(net(address, network)),
        ]
    }

    fn net(self) -> IpNet {
        match self {
            Source::Host(net) | Source::Network(net) => net,
        }
    }
}

/// `address` truncated to `prefix` bits.
fn net(address: IpAddr, prefix: u8) -> IpNet {
    let address = address.to_canonical();
    // The prefix fits the family by construction.
    IpNet::new(address, prefix).map_or(IpNet::from(address), |n| n.trunc())
}

/// The unknown MACs one source asked for within the current window.
#[derive(Debug)]
struct Tracker {
    since: Instant,
    last: Instant,
    macs: HashSet<Mac>,
}

#[derive(Debug)]
struct Ban {
    until: Instant,
    until_unix: u64,
    unknown_macs: usize,
}

impl Ban {
    fn holds(&self, now: Instant) -> bool {
        self.until > now
    }
}

/// A ban, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanView {
    /// The banned address (a host), or network (`192.0.2.0/24`).
    pub address: String,
    /// The transport whose requests gave the evidence, and that it bans.
    pub transport: Transport,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// How many different unknown MACs triggered it.
    pub unknown_macs: usize,
}

#[derive(Debug, Default)]
struct State {
    trackers: HashMap<Source, Tracker>,
    bans: HashMap<Source, Ban>,
    last_sweep: Option<Instant>,
}

impl State {
    fn banned(&self, address: IpAddr, now: Instant) -> bool {
        Source::of(address)
            .iter()
            .any(|source| self.bans.get(source).is_some_and(|ban| ban.holds(now)))
    }

    /// Drops expired trackers and bans, at most once per [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant, window: Duration) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.trackers
            .retain(|_, t| now.duration_since(t.since) < window);
        self.bans.retain(|_, ban| ban.holds(now));
    }

    /// Makes room for a new tracker: expired ones go first, then the least
    /// recently active.
    fn room_for_tracker(&mut self, now: Instant, window: Duration) {
        if self.trackers.len() < MAX_TRACKED {
            return;
        }
        self.sweep(now, window);
        evict_lowest(&mut self.trackers, |t| t.last);
    }

    /// Makes room for a new ban: expired ones go first, then those ending
    /// soonest.
    fn room_for_ban(&mut self, now: Instant, window: Duration) {
        if self.bans.len() < MAX_TRACKED {
            return;
        }
        self.sweep(now, window);
        evict_lowest(&mut self.bans, |b| b.until);
    }
}

/// When `table` is full, removes its [`EVICT_DIVISOR`]th part with the
/// lowest `rank`.
fn evict_lowest<V>(table: &mut HashMap<Source, V>, rank: impl Fn(&V) -> Instant) {
    if table.len() < MAX_TRACKED {
        return;
    }
    let mut ranks: Vec<Instant> = table.values().map(&rank).collect();
    let cut = ranks.len() / EVICT_DIVISOR;
    let (_, &mut threshold, _) = ranks.select_nth_unstable(cut);
    table.retain(|_, v| rank(v) > threshold);
}

/// Follows one transport's unknown-MAC requests and keeps its bans.
#[derive(Debug)]
pub struct ScanGuard {
    transport: Transport,
    limits: ScanLimits,
    clock: Clock,
    state: Mutex<State>,
}

impl ScanGuard {
    /// A guard of `transport`'s requests with these thresholds, on `clock`'s time.
    pub fn new(transport: Transport, limits: ScanLimits, clock: Clock) -> Self {
        ScanGuard {
            transport,
            limits,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether an address is banned, as a host or as part of its network.
    pub fn is_banned(&self, address: IpAddr) -> bool {
        // Asked on every per-device request: two lookups, no sweep.
        self.lock().banned(address, self.clock.now())
    }

    /// Whether an address is halfway to a ban, or banned: its answers for
    /// per-device files are slowed, so a scan crawls long before the ban.
    pub fn is_suspect(&self, address: IpAddr) -> bool {
        let now = self.clock.now();
        let state = self.lock();
        if state.banned(address, now) {
            return true;
        }
        Source::of(address).into_iter().any(|source| {
            state.trackers.get(&source).is_some_and(|tracker| {
                now.duration_since(tracker.since) < self.limits.window
                    && tracker.macs.len() * 2 > self.limit(source)
            })
        })
    }

    /// Notes a request for a MAC that is not provisioned; bans the host or
    /// its network when it has asked for too many.
    pub fn note_unknown(&self, address: IpAddr, mac: Mac) {
        let now = self.clock.now();
        let window = self.limits.window;
        let mut state = self.lock();
        if state.banned(address, now) {
            return;
        }
        for source in Source::of(address) {
            if !state.trackers.contains_key(&source) {
                state.room_for_tracker(now, window);
            }
            let tracker = state.trackers.entry(source).or_insert_with(|| Tracker {
                since: now,
                last: now,
                macs: HashSet::new(),
            });
            if now.duration_since(tracker.since) >= window {
                tracker.since = now;
                tracker.macs.clear();
            }
            tracker.last = now;
            tracker.macs.insert(mac);
            let count = tracker.macs.len();
            if count > self.limit(source) {
                state.trackers.remove(&source);
                tracing::warn!(
                    source = %show(source),
                    transport = self.transport.name(),
                    unknown_macs = count,
                    ban_secs = self.limits.ban.as_secs(),
                    "banned a source scanning for MACs"
                );
                self.ban(&mut state, source, count, now);
            }
        }
    }

    /// How many unknown MACs a source may ask for within the window.
    fn limit(&self, source: Source) -> usize {
        match source {
            Source::Host(_) => self.limits.unknown_macs,
            Source::Network(_) => self.limits.unknown_macs.saturating_mul(NETWORK_FACTOR),
        }
    }

    fn ban(&self, state: &mut State, source: Source, unknown_macs: usize, now: Instant) {
        state.room_for_ban(now, self.limits.window);
        let ban = Ban {
            until: now + self.limits.ban,
            until_unix: self.clock.unix_secs() + self.limits.ban.as_secs(),
            unknown_macs,
        };
        state.bans.insert(source, ban);
    }

    /// Bans an address as a host for the policy's ban time, on an
    /// administrator's word: no count of unknown MACs behind it.
    pub fn ban_host(&self, address: IpAddr) {
        let now = self.clock.now();
        let mut state = self.lock();
        let [host, _] = Source::of(address);
        state.trackers.remove(&host);
        tracing::warn!(
            source = %show(host),
            transport = self.transport.name(),
            ban_secs = self.limits.ban.as_secs(),
            "banned by an administrator"
        );
        self.ban(&mut state, host, 0, now);
    }

    /// The bans in force.
    pub fn bans(&self) -> Vec<BanView> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.bans.retain(|_, ban| ban.holds(now));
        let mut bans: Vec<(Source, &Ban)> = state.bans.iter().map(|(s, b)| (*s, b)).collect();
        bans.sort_by_key(|(source, _)| source.net());
        bans.into_iter()
            .map(|(source, ban)| BanView {
                address: show(source),
                transport: self.transport,
                until: ban.until_unix,
                unknown_macs: ban.unknown_macs,
            })
            .collect()
    }

    /// Lifts every ban that covers an address (its host's and its
    /// network's), and forgets their counts; says how many bans there were.
    pub fn lift(&self, address: IpAddr) -> usize {
        let mut state = self.lock();
        Source::of(address)
            .iter()
            .filter(|source| {
                state.trackers.remove(source);
                state.bans.remove(source).is_some()
            })
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not broken data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source as people write it: a bare address for an IPv4 host, a
/// network with its prefix otherwise.
fn show(source: Source) -> String {
    match source {
        Source::Host(IpNet::V4(net)) => net.addr().to_string(),
        other => other.net().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;

    const LIMITS: ScanLimits = ScanLimits {
        unknown_macs: 3,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(60),
    };
    /// Where the manual clocks of these tests start, in Unix seconds.
    const START: u64 = 1_700_000_000;

    fn guard() -> ScanGuard {
        ScanGuard::new(Transport::Http, LIMITS, Clock::System)
    }

    fn guard_on(manual: &ManualClock) -> ScanGuard {
        ScanGuard::new(Transport::Http, LIMITS, manual.clock())
    }

    fn mac(n: u64) -> Mac {
        format!("0015650{n:05x}").parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_host_past_the_limit_is_banned_alone() {
        let guard = guard();
        let scanner = ip("192.0.2.7");
        for n in 0..3 {
            guard.note_unknown(scanner, mac(n));
            guard.note_unknown(scanner, mac(n));
        }
        assert!(!guard.is_banned(scanner), "three MACs, asked twice");
        assert!(guard.is_suspect(scanner), "halfway: slowed down");
        let neighbour = ip("192.0.2.8");
        assert!(!guard.is_suspect(neighbour));
        guard.note_unknown(scanner, mac(3));
        assert!(guard.is_banned(scanner));
        assert!(!guard.is_banned(neighbour), "its neighbours");
        let bans = guard.bans();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].address, "192.0.2.7");
        assert_eq!(guard.lift(scanner), 1);
        assert!(!guard.is_banned(scanner));
    }

    #[test]
    fn an_administrator_bans_a_host_until_lifted() {
        let guard = guard();
        let phone = ip("192.0.2.9");
        guard.ban_host(phone);
        assert!(guard.is_banned(phone));
        assert!(!guard.is_banned(ip("192.0.2.10")), "its neighbours");
        let bans = guard.bans();
        assert_eq!(
            (bans[0].address.as_str(), bans[0].unknown_macs),
            ("192.0.2.9", 0)
        );
        assert_eq!(guard.lift(phone), 1);
        assert!(!guard.is_banned(phone));
    }

    #[test]
    fn a_scan_spread_over_a_network_bans_the_network() {
        let guard = guard();
        // Three MACs from each of five hosts: none past its own limit.
        for host in 0..5 {
            for n in 0..3 {
                guard.note_unknown(ip(&format!("198.51.100.{host}")), mac(host * 3 + n));
            }
        }
        assert!(!guard.is_banned(ip("198.51.100.0")));
        guard.note_unknown(ip("198.51.100.200"), mac(99));
        assert!(guard.is_banned(ip("198.51.100.77")), "the whole /24");
        assert!(!guard.is_banned(ip("198.51.101.1")), "not the next one");
        let bans = guard.bans();
        assert_eq!(bans[0].address, "198.51.100.0/24", "{bans:?}");
        assert_eq!(guard.lift(ip("198.51.100.3")), 1);
        assert!(!guard.is_banned(ip("198.51.100.77")));
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let guard = guard();
        for n in 0..4 {
            guard.note_unknown(ip(&format!("2001:db8:0:1::{n:x}")), mac(n));
        }
        assert!(guard.is_banned(ip("2001:db8:0:1::ffff")));
        assert!(!guard.is_banned(ip("2001:db8:0:2::1")));
        assert_eq!(guard.bans()[0].address, "2001:db8:0:1::/64");
    }

    #[test]
    fn a_flood_of_new_addresses_cannot_switch_the_tables_off() {
        let guard = ScanGuard::new(
            Transport::Tftp,
            ScanLimits {
                unknown_macs: 3,
                window: Duration::from_secs(60),
                // Bans that would each stand for a network of the flood.
                ban: Duration::from_secs(60),
            },
            Clock::System,
        );
        // One guess from each of more addresses than the tables hold, one
        // per /24, so that no network reaches its limit.
        for n in 0..(MAX_TRACKED as u32 + 50) {
            let [a, b, c, _] = (0x0a00_0000 + (n << 8)).to_be_bytes();
            guard.note_unknown(ip(&format!("{a}.{b}.{c}.1")), mac(u64::from(n)));
        }
        assert!(guard.lock().trackers.len() <= MAX_TRACKED);
        let scanner = ip("203.0.113.9");
        for n in 0..4 {
            guard.note_unknown(scanner, mac(n));
        }
        assert!(guard.is_banned(scanner), "still followed");
    }

    #[test]
    fn the_count_starts_over_when_the_window_ends() {
        let manual = ManualClock::starting_at(START);
        let guard = guard_on(&manual);
        let host = ip("192.0.2.7");
        for n in 0..3 {
            guard.note_unknown(host, mac(n));
        }
        assert!(guard.is_suspect(host));
        manual.advance(LIMITS.window);
        assert!(!guard.is_suspect(host), "the window ended");
        for n in 3..6 {
            guard.note_unknown(host, mac(n));
        }
        assert!(!guard.is_banned(host), "three in each window");
        manual.advance(LIMITS.window - Duration::from_secs(1));
        guard.note_unknown(host, mac(6));
        assert!(guard.is_banned(host), "the fourth within one window");
    }

    #[test]
    fn a_ban_lasts_its_time_and_no_longer() {
        let manual = ManualClock::starting_at(START);
        let guard = guard_on(&manual);
        let host = ip("192.0.2.7");
        for n in 0..4 {
            guard.note_unknown(host, mac(n));
        }
        assert_eq!(guard.bans()[0].until, START + LIMITS.ban.as_secs());
        manual.advance(LIMITS.ban - Duration::from_millis(1));
        assert!(guard.is_banned(host), "not over yet");
        assert_eq!(guard.bans().len(), 1);
        manual.advance(Duration::from_millis(1));
        assert!(!guard.is_banned(host), "over");
        assert!(guard.bans().is_empty());
        guard.note_unknown(host, mac(9));
        assert!(!guard.is_banned(host), "and its count starts over");
    }

    #[test]
    fn a_full_table_evicts_the_sources_least_recently_active() {
        let manual = ManualClock::starting_at(START);
        let guard = guard_on(&manual);
        // Each host in its own /24, so that hosts and their networks fill
        // the table together.
        let host = |n: u32| {
            let [a, b, c, _] = (0x0a00_0000 + (n << 8)).to_be_bytes();
            ip(&format!("{a}.{b}.{c}.1"))
        };
        let hosts = MAX_TRACKED as u32 / 2;
        for n in 0..hosts {
            guard.note_unknown(host(n), mac(n.into()));
            manual.advance(Duration::from_millis(1));
        }
        assert_eq!(guard.lock().trackers.len(), MAX_TRACKED);
        guard.note_unknown(host(0), mac(0));
        let newcomer = ip("203.0.113.9");
        guard.note_unknown(newcomer, mac(1));
        let state = guard.lock();
        let tracked = |address| {
            Source::of(address)
                .iter()
                .all(|source| state.trackers.contains_key(source))
        };
        assert!(tracked(host(0)), "the first host, active again, stays");
        assert!(!tracked(host(1)), "the least recently active went");
        assert!(tracked(host(hosts - 1)), "the most recent stays");
        assert!(tracked(newcomer));
        assert!(state.trackers.len() < MAX_TRACKED);
    }
}
