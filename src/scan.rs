//! Anti-scanning: a client that asks for many different unknown MACs in a
//! short time is first slowed down (past half the limit), then banned for
//! a while.
//!
//! A client is an address with a User-Agent, so a scanner behind a NAT is
//! banned without its neighbours; an address as a whole is banned when it
//! asks for [`ADDRESS_FACTOR`] times as many, however it names itself (a
//! scanner that changes its User-Agent). A banned client's requests for
//! per-device files get the same not-found as an unknown MAC, except a
//! phone whose User-Agent carries the very MAC it asks for. Everything is
//! kept per address, and memory is bounded: at most `MAX_TRACKED`
//! addresses are followed, and as many banned, at once.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mac::Mac;
use crate::store::unix_now;

/// How many times more unknown MACs a whole address may ask for than one
/// of its clients.
pub const ADDRESS_FACTOR: usize = 5;
/// The most addresses followed, and the most banned, at once.
const MAX_TRACKED: usize = 10_000;
/// The most User-Agents of one address followed apart. Past them a client
/// counts only towards its address: a scanner that names itself anew with
/// every request is banned as an address, and cannot crowd others out of
/// the tables.
const MAX_AGENTS_PER_ADDRESS: usize = 16;
/// How often full tables are swept of expired entries, at most: a sweep
/// walks them all, under the lock that every request takes.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Thresholds, from the `[provisioning]` policy.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Different unknown MACs a client may ask for within `window`.
    pub unknown_macs: usize,
    /// The counting window.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
}

/// The unknown MACs one address asked for within the current window.
#[derive(Debug)]
struct Tracker {
    since: Instant,
    /// Whatever the address called itself.
    macs: HashSet<Mac>,
    /// Per User-Agent, for the first [`MAX_AGENTS_PER_ADDRESS`] of them.
    agents: HashMap<String, HashSet<Mac>>,
}

/// The bans of one address: of the whole address (which includes clients
/// without a User-Agent, as over TFTP), and of some of its User-Agents.
#[derive(Debug, Default)]
struct Bans {
    whole: Option<Ban>,
    agents: HashMap<String, Ban>,
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

impl Bans {
    fn holds(&self, user_agent: Option<&str>, now: Instant) -> bool {
        let agent = user_agent.and_then(|ua| self.agents.get(agent_key(ua)));
        [self.whole.as_ref(), agent]
            .into_iter()
            .flatten()
            .any(|ban| ban.holds(now))
    }

    fn retain_holding(&mut self, now: Instant) -> bool {
        self.whole = self.whole.take().filter(|ban| ban.holds(now));
        self.agents.retain(|_, ban| ban.holds(now));
        self.whole.is_some() || !self.agents.is_empty()
    }

    /// Each ban with the User-Agent it is for (None: the whole address).
    fn each(&self) -> impl Iterator<Item = (Option<&str>, &Ban)> {
        let whole = self.whole.iter().map(|ban| (None, ban));
        whole.chain(self.agents.iter().map(|(ua, ban)| (Some(ua.as_str()), ban)))
    }
}

/// A ban, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanView {
    /// The banned address.
    pub address: IpAddr,
    /// The User-Agent it is banned with; null when the whole address is.
    pub user_agent: Option<String>,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// How many different unknown MACs triggered it.
    pub unknown_macs: usize,
}

#[derive(Debug, Default)]
struct State {
    trackers: HashMap<IpAddr, Tracker>,
    bans: HashMap<IpAddr, Bans>,
    last_sweep: Option<Instant>,
}

impl State {
    fn banned(&self, address: IpAddr, user_agent: Option<&str>, now: Instant) -> bool {
        self.bans
            .get(&address)
            .is_some_and(|bans| bans.holds(user_agent, now))
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
        self.bans.retain(|_, bans| bans.retain_holding(now));
    }
}

/// Follows unknown-MAC requests and keeps the bans.
#[derive(Debug)]
pub struct ScanGuard {
    limits: ScanLimits,
    state: Mutex<State>,
}

impl ScanGuard {
    /// A guard with these thresholds.
    pub fn new(limits: ScanLimits) -> Self {
        ScanGuard {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a client is banned, as itself or as its whole address.
    pub fn is_banned(&self, address: IpAddr, user_agent: Option<&str>) -> bool {
        // Asked on every per-device request: one lookup, no sweep.
        self.lock().banned(address, user_agent, Instant::now())
    }

    /// Whether a client is halfway to a ban, or banned: its answers for
    /// per-device files are slowed, so a scan crawls long before the ban.
    pub fn is_suspect(&self, address: IpAddr, user_agent: Option<&str>) -> bool {
        let now = Instant::now();
        let state = self.lock();
        if state.banned(address, user_agent, now) {
            return true;
        }
        let Some(tracker) = state.trackers.get(&address) else {
            return false;
        };
        if now.duration_since(tracker.since) >= self.limits.window {
            return false;
        }
        let limit = self.limits.unknown_macs;
        let own = user_agent
            .and_then(|ua| tracker.agents.get(agent_key(ua)))
            .map_or(0, HashSet::len);
        own * 2 > limit || tracker.macs.len() * 2 > self.address_limit(user_agent)
    }

    /// Notes a request for a MAC that is not provisioned; bans the client
    /// (or its address) when it has asked for too many.
    pub fn note_unknown(&self, address: IpAddr, user_agent: Option<&str>, mac: Mac) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut state = self.lock();
        // Without a User-Agent, only the whole address's ban counts.
        if state.banned(address, None, now) {
            return;
        }
        // A banned client's requests still count towards its address.
        let agent = user_agent.filter(|&ua| !state.banned(address, Some(ua), now));
        if !state.trackers.contains_key(&address) && state.trackers.len() >= MAX_TRACKED {
            state.sweep(now, window);
            if state.trackers.len() >= MAX_TRACKED {
                return;
            }
        }
        let tracker = state.trackers.entry(address).or_insert_with(|| Tracker {
            since: now,
            macs: HashSet::new(),
            agents: HashMap::new(),
        });
        if now.duration_since(tracker.since) >= window {
            tracker.since = now;
            tracker.macs.clear();
            tracker.agents.clear();
        }
        tracker.macs.insert(mac);
        let by_address = tracker.macs.len();
        let by_agent = agent.and_then(|ua| {
            let key = agent_key(ua);
            if !tracker.agents.contains_key(key) && tracker.agents.len() >= MAX_AGENTS_PER_ADDRESS {
                return None;
            }
            let macs = tracker.agents.entry(key.to_string()).or_default();
            macs.insert(mac);
            Some(macs.len())
        });
        if by_address > self.address_limit(user_agent) {
            state.trackers.remove(&address);
            self.ban(&mut state, address, None, by_address, now);
        } else if let (Some(ua), Some(count)) = (agent, by_agent)
            && count > self.limits.unknown_macs
        {
            if let Some(tracker) = state.trackers.get_mut(&address) {
                tracker.agents.remove(agent_key(ua));
            }
            self.ban(&mut state, address, Some(ua), count, now);
        }
    }

    /// How many unknown MACs an address may ask for: a client without a
    /// User-Agent is taken for the address itself.
    fn address_limit(&self, user_agent: Option<&str>) -> usize {
        match user_agent {
            Some(_) => self.limits.unknown_macs.saturating_mul(ADDRESS_FACTOR),
            None => self.limits.unknown_macs,
        }
    }

    /// Bans `address`, as a whole or with one User-Agent.
    fn ban(
        &self,
        state: &mut State,
        address: IpAddr,
        user_agent: Option<&str>,
        unknown_macs: usize,
        now: Instant,
    ) {
        if !state.bans.contains_key(&address) && state.bans.len() >= MAX_TRACKED {
            state.sweep(now, self.limits.window);
            if state.bans.len() >= MAX_TRACKED {
                return;
            }
        }
        tracing::warn!(
            address = %address,
            user_agent = user_agent.unwrap_or("*"),
            unknown_macs,
            ban_secs = self.limits.ban.as_secs(),
            "banned a client scanning for MACs"
        );
        let ban = Ban {
            until: now + self.limits.ban,
            until_unix: unix_now() + self.limits.ban.as_secs(),
            unknown_macs,
        };
        let bans = state.bans.entry(address).or_default();
        match user_agent {
            None => bans.whole = Some(ban),
            // Bounded: each of these took more unknown MACs than one
            // ADDRESS_FACTOR-th of what bans the whole address.
            Some(ua) => {
                bans.agents.insert(agent_key(ua).to_string(), ban);
            }
        }
    }

    /// The bans in force.
    pub fn bans(&self) -> Vec<BanView> {
        let now = Instant::now();
        let mut state = self.lock();
        state.bans.retain(|_, bans| bans.retain_holding(now));
        let mut views: Vec<BanView> = state
            .bans
            .iter()
            .flat_map(|(&address, bans)| {
                bans.each().map(move |(user_agent, ban)| BanView {
                    address,
                    user_agent: user_agent.map(str::to_string),
                    until: ban.until_unix,
                    unknown_macs: ban.unknown_macs,
                })
            })
            .collect();
        views.sort_by(|a, b| (a.address, &a.user_agent).cmp(&(b.address, &b.user_agent)));
        views
    }

    /// Lifts every ban of an address; says how many there were.
    pub fn lift(&self, address: IpAddr) -> usize {
        let mut state = self.lock();
        state.trackers.remove(&address);
        state
            .bans
            .remove(&address)
            .map_or(0, |bans| bans.each().count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not broken data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A User-Agent as it is kept: a scanner cannot grow our memory with
/// endless ones.
fn agent_key(user_agent: &str) -> &str {
    match user_agent.char_indices().nth(128) {
        Some((end, _)) => &user_agent[..end],
        None => user_agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> ScanGuard {
        ScanGuard::new(ScanLimits {
            unknown_macs: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
        })
    }

    fn mac(n: u64) -> Mac {
        format!("0015650{n:05x}").parse().unwrap()
    }

    #[test]
    fn a_client_past_the_limit_is_banned_alone() {
        let guard = guard();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 0..3 {
            guard.note_unknown(ip, Some("scanner"), mac(n));
            guard.note_unknown(ip, Some("scanner"), mac(n));
        }
        assert!(
            !guard.is_banned(ip, Some("scanner")),
            "three MACs, asked twice"
        );
        assert!(
            guard.is_suspect(ip, Some("scanner")),
            "halfway: slowed down"
        );
        assert!(!guard.is_suspect(ip, Some("Yealink SIP-T46S")));
        guard.note_unknown(ip, Some("scanner"), mac(3));
        assert!(guard.is_banned(ip, Some("scanner")));
        assert!(
            !guard.is_banned(ip, Some("Yealink SIP-T46S")),
            "its neighbours"
        );
        assert_eq!(guard.bans().len(), 1);
        assert_eq!(guard.lift(ip), 1);
        assert!(!guard.is_banned(ip, Some("scanner")));
    }

    #[test]
    fn an_address_changing_user_agents_is_banned_whole() {
        let guard = guard();
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        for n in 0..16 {
            guard.note_unknown(ip, Some(&format!("ua{n}")), mac(n));
        }
        assert!(guard.is_banned(ip, Some("anything")));
        assert!(guard.is_banned(ip, None));
    }

    #[test]
    fn a_new_user_agent_per_request_neither_escapes_nor_crowds_others_out() {
        let guard = guard();
        let scanner: IpAddr = "192.0.2.9".parse().unwrap();
        // More User-Agents than the tables hold, each asking for one MAC.
        for n in 0..(MAX_TRACKED as u64 + 10) {
            guard.note_unknown(scanner, Some(&format!("Yealink {n}")), mac(n));
        }
        assert!(guard.is_banned(scanner, Some("Yealink 0")));
        let state = guard.lock();
        assert!(state.trackers.is_empty(), "the ban ended its tracking");
        assert_eq!(state.bans.len(), 1);
        drop(state);

        let other: IpAddr = "192.0.2.10".parse().unwrap();
        for n in 0..4 {
            guard.note_unknown(other, Some("curl/8"), mac(n));
        }
        assert!(guard.is_banned(other, Some("curl/8")), "still followed");
    }

    #[test]
    fn a_banned_client_still_counts_towards_its_address() {
        let guard = guard();
        let ip: IpAddr = "192.0.2.11".parse().unwrap();
        for n in 0..15 {
            guard.note_unknown(ip, Some("scanner"), mac(n));
        }
        assert!(guard.is_banned(ip, Some("scanner")));
        assert!(!guard.is_banned(ip, Some("other")), "not yet");
        guard.note_unknown(ip, Some("scanner"), mac(15));
        assert!(guard.is_banned(ip, Some("other")), "the address, at 16");
        let bans = guard.bans();
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[0].unknown_macs, 16, "{bans:?}");
        assert_eq!(bans[1].unknown_macs, 4, "banned once, not again");
    }
}
