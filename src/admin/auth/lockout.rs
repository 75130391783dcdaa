//! Wrong admin tokens per client address: a delay after a few, then a
//! temporary ban, so tokens are not guessed (nor argon2 run for them) at
//! a client's pace.
//!
//! Not for phones: their bans for scanning MACs are [`crate::access::scan`]'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens answered at once: an administrator's typos.
const FREE_FAILURES: u32 = 3;

/// How long each further wrong token waits for its answer, so that
/// guessing one after another is slow even before the ban.
const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Wrong tokens within [`FAILURE_WINDOW`] that ban the address.
pub(super) const BAN_AFTER: u32 = 10;

/// How long an address's wrong tokens count towards a ban.
const FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How long a ban lasts: ten guesses per ten minutes at most.
const BAN_DURATION: Duration = Duration::from_secs(10 * 60);

/// The most addresses remembered: a record is a few dozen bytes, so the
/// table stays under a megabyte whatever the number of attackers.
const MAX_TRACKED: usize = 8192;

/// How a wrong token is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// At once: one of the first few.
    Now,
    /// After this delay.
    After(Duration),
    /// The address is banned for this long.
    Banned(Duration),
}

/// One address's wrong tokens.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Wrong tokens since `since`.
    failures: u32,
    /// The first of them.
    since: Instant,
    /// When its ban ends, while it has one.
    banned_until: Option<Instant>,
}

impl Record {
    /// Whether the record says nothing any more: no ban, failures forgotten.
    fn spent(&self, now: Instant) -> bool {
        let ban_over = self.banned_until.is_none_or(|until| until <= now);
        ban_over && now.duration_since(self.since) >= FAILURE_WINDOW
    }
}

/// Wrong tokens by address, in a table of at most [`MAX_TRACKED`] records.
#[derive(Debug, Default)]
pub(super) struct Lockout {
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Lockout {
    /// How long `peer` is still banned, if it is.
    pub(super) fn banned(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let until = records.get(&client(peer))?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a wrong token from `peer` and says how to answer it.
    pub(super) fn failed(&self, peer: IpAddr, now: Instant) -> Verdict {
        let key = client(peer);
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_TRACKED && !records.contains_key(&key) {
            make_room(&mut records, now);
        }
        let record = records.entry(key).or_insert(Record {
            failures: 0,
            since: now,
            banned_until: None,
        });
        if record.spent(now) {
            *record = Record {
                failures: 0,
                since: now,
                banned_until: None,
            };
        }
        record.failures += 1;
        if record.failures >= BAN_AFTER {
            record.banned_until = Some(now + BAN_DURATION);
            Verdict::Banned(BAN_DURATION)
        } else if record.failures > FREE_FAILURES {
            Verdict::After(FAILURE_DELAY)
        } else {
            Verdict::Now
        }
    }
}

/// Drops the spent records, else the one whose failures are oldest,
/// sparing bans in force as long as there is anything else.
fn make_room(records: &mut HashMap<IpAddr, Record>, now: Instant) {
    records.retain(|_, record| !record.spent(now));
    if records.len() < MAX_TRACKED {
        return;
    }
    let oldest = records
        .iter()
        .min_by_key(|(_, r)| (r.banned_until.is_some_and(|until| until > now), r.since))
        .map(|(key, _)| *key);
    if let Some(key) = oldest {
        records.remove(&key);
    }
}

/// The key a client is counted under: its IPv4 address (also when it comes
/// IPv4-mapped), or its IPv6 /64, which one host can fill with addresses.
fn client(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn typos_pass_then_guesses_wait_then_the_address_is_banned() {
        let lockout = Lockout::default();
        let (peer, now) = (ip("10.0.0.7"), Instant::now());
        let verdicts: Vec<Verdict> = (0..BAN_AFTER).map(|_| lockout.failed(peer, now)).collect();
        assert_eq!(verdicts[..3], [Verdict::Now; 3]);
        assert_eq!(verdicts[3..9], [Verdict::After(FAILURE_DELAY); 6]);
        assert_eq!(verdicts[9], Verdict::Banned(BAN_DURATION));
        assert_eq!(lockout.banned(peer, now), Some(BAN_DURATION));
        assert_eq!(
            lockout.banned(ip("10.0.0.8"), now),
            None,
            "only that address"
        );
        let later = now + BAN_DURATION;
        assert_eq!(lockout.banned(peer, later), None, "a ban ends");
        assert_eq!(lockout.failed(peer, later), Verdict::Now, "and starts over");
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let lockout = Lockout::default();
        let (peer, now) = (ip("10.0.0.7"), Instant::now());
        for _ in 0..BAN_AFTER - 1 {
            lockout.failed(peer, now);
        }
        assert_eq!(lockout.failed(peer, now + FAILURE_WINDOW), Verdict::Now);
    }

    #[test]
    fn an_ipv6_host_counts_once_for_its_whole_64() {
        let lockout = Lockout::default();
        let now = Instant::now();
        for n in 0..BAN_AFTER {
            lockout.failed(ip(&format!("2001:db8:1:2::{n:x}")), now);
        }
        assert!(lockout.banned(ip("2001:db8:1:2:ffff::1"), now).is_some());
        assert!(lockout.banned(ip("2001:db8:1:3::1"), now).is_none());
        for _ in 0..BAN_AFTER {
            lockout.failed(ip("::ffff:192.0.2.1"), now);
        }
        assert!(lockout.banned(ip("192.0.2.1"), now).is_some());
    }

    #[test]
    fn a_full_table_spares_bans_in_force() {
        let lockout = Lockout::default();
        let now = Instant::now();
        for _ in 0..BAN_AFTER {
            lockout.failed(ip("192.0.2.1"), now);
        }
        let later = now + Duration::from_secs(1);
        for n in 1..MAX_TRACKED as u32 {
            lockout.failed(IpAddr::V4((0x0a00_0000 + n).into()), later);
        }
        lockout.failed(ip("198.51.100.1"), later);
        let records = lockout.records.lock().unwrap();
        assert_eq!(records.len(), MAX_TRACKED, "capped");
        assert!(records.contains_key(&ip("192.0.2.1")), "the ban is kept");
        assert!(records.contains_key(&ip("198.51.100.1")));
    }
}
