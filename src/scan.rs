//! Anti-scanning: a client that asks for many different unknown MACs in a
//! short time is first slowed down (past half the limit), then banned for
//! a while.
//!
//! A client is an address with a User-Agent, so a scanner behind a NAT is
//! banned without its neighbours; an address as a whole is banned when it
//! asks for [`ADDRESS_FACTOR`] times as many, however it names itself (a
//! scanner that changes its User-Agent). A banned client's requests for
//! per-device files get the same not-found as an unknown MAC, except a
//! phone whose User-Agent carries the very MAC it asks for. Memory is
//! bounded: at most `MAX_TRACKED` clients are followed at once.

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
/// The most clients followed (or banned) at once.
const MAX_TRACKED: usize = 10_000;

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

/// Who asked: an address, with the User-Agent it gave (None: the address
/// as a whole, or a TFTP client, which sends none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Client {
    address: IpAddr,
    user_agent: Option<String>,
}

#[derive(Debug)]
struct Tracker {
    since: Instant,
    macs: HashSet<Mac>,
}

#[derive(Debug)]
struct Ban {
    until: Instant,
    until_unix: u64,
    unknown_macs: usize,
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
    trackers: HashMap<Client, Tracker>,
    bans: HashMap<Client, Ban>,
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
        // Asked on every per-device request: two lookups, no sweep (expired
        // bans are swept when a new one is added or the list is read).
        let now = Instant::now();
        let state = self.lock();
        [user_agent, None].into_iter().any(|ua| {
            state
                .bans
                .get(&client(address, ua))
                .is_some_and(|ban| ban.until > now)
        })
    }

    /// Whether a client is halfway to a ban, or banned: its answers for
    /// per-device files are slowed, so a scan crawls long before the ban.
    pub fn is_suspect(&self, address: IpAddr, user_agent: Option<&str>) -> bool {
        if self.is_banned(address, user_agent) {
            return true;
        }
        let now = Instant::now();
        let state = self.lock();
        let halfway = |who: Client, limit: usize| {
            state.trackers.get(&who).is_some_and(|t| {
                now.duration_since(t.since) < self.limits.window && t.macs.len() * 2 > limit
            })
        };
        let limit = self.limits.unknown_macs;
        halfway(client(address, user_agent), limit)
            || halfway(client(address, None), limit.saturating_mul(ADDRESS_FACTOR))
    }

    /// Notes a request for a MAC that is not provisioned; bans the client
    /// (or its address) when it has asked for too many.
    pub fn note_unknown(&self, address: IpAddr, user_agent: Option<&str>, mac: Mac) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut watched = vec![(client(address, user_agent), self.limits.unknown_macs)];
        if user_agent.is_some() {
            let whole = self.limits.unknown_macs.saturating_mul(ADDRESS_FACTOR);
            watched.push((client(address, None), whole));
        }
        for (who, limit) in watched {
            if state.bans.contains_key(&who) {
                continue;
            }
            if !state.trackers.contains_key(&who) && state.trackers.len() >= MAX_TRACKED {
                let window = self.limits.window;
                state
                    .trackers
                    .retain(|_, t| now.duration_since(t.since) < window);
                if state.trackers.len() >= MAX_TRACKED {
                    continue;
                }
            }
            let tracker = state.trackers.entry(who.clone()).or_insert(Tracker {
                since: now,
                macs: HashSet::new(),
            });
            if now.duration_since(tracker.since) >= self.limits.window {
                tracker.since = now;
                tracker.macs.clear();
            }
            tracker.macs.insert(mac);
            let count = tracker.macs.len();
            if count > limit {
                state.bans.retain(|_, ban| ban.until > now);
            }
            if count > limit && state.bans.len() < MAX_TRACKED {
                state.trackers.remove(&who);
                tracing::warn!(
                    address = %who.address,
                    user_agent = who.user_agent.as_deref().unwrap_or("*"),
                    unknown_macs = count,
                    ban_secs = self.limits.ban.as_secs(),
                    "banned a client scanning for MACs"
                );
                state.bans.insert(
                    who,
                    Ban {
                        until: now + self.limits.ban,
                        until_unix: unix_now() + self.limits.ban.as_secs(),
                        unknown_macs: count,
                    },
                );
            }
        }
    }

    /// The bans in force.
    pub fn bans(&self) -> Vec<BanView> {
        let now = Instant::now();
        let mut state = self.lock();
        state.bans.retain(|_, ban| ban.until > now);
        let mut bans: Vec<BanView> = state
            .bans
            .iter()
            .map(|(who, ban)| BanView {
                address: who.address,
                user_agent: who.user_agent.clone(),
                until: ban.until_unix,
                unknown_macs: ban.unknown_macs,
            })
            .collect();
        bans.sort_by(|a, b| (a.address, &a.user_agent).cmp(&(b.address, &b.user_agent)));
        bans
    }

    /// Lifts every ban of an address; says how many there were.
    pub fn lift(&self, address: IpAddr) -> usize {
        let mut state = self.lock();
        let before = state.bans.len();
        state.bans.retain(|who, _| who.address != address);
        state.trackers.retain(|who, _| who.address != address);
        before - state.bans.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not broken data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn client(address: IpAddr, user_agent: Option<&str>) -> Client {
    Client {
        address,
        // A scanner cannot grow our memory with endless User-Agents.
        user_agent: user_agent.map(|ua| ua.chars().take(128).collect()),
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
}
