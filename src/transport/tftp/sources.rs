//! How much of the TFTP server one source address holds: a flood of
//! requests from one address must leave transfers for the phones at the
//! others. And which addresses acknowledged a transfer lately: a request's
//! source address can be forged, so until an address has shown it asked,
//! the server sends it little (fewer resends), lest a spoofed request turn
//! the server into an amplifier aimed at that address.
//!
//! Not who may fetch what (the policy and the scan guard decide that), only
//! how much of the server an address may take at once.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Addresses remembered per generation of [`Acknowledged`]: two
/// generations of them stay under 1 MB however many addresses acknowledge,
/// and hold a large site's phones.
const REMEMBERED_PER_GENERATION: usize = 8192;
/// How long a generation lasts: an address that acknowledged is known for
/// one to two of them, so a phone's daily resync still finds it known.
const GENERATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The transfers in flight of each source address, and the addresses that
/// acknowledged one lately.
#[derive(Debug)]
pub struct Sources {
    /// The most one address may hold.
    max_transfers: usize,
    /// Each address with a transfer in flight, and how many it holds.
    transfers: HashMap<IpAddr, usize>,
    /// Addresses whose clients acknowledged a transfer lately.
    acknowledged: Acknowledged,
}

/// A bounded memory of addresses, in two generations: when the current one
/// is full or old, it becomes the previous one and the previous one is
/// forgotten.
#[derive(Debug)]
struct Acknowledged {
    current: HashSet<IpAddr>,
    previous: HashSet<IpAddr>,
    /// When `current` began.
    since: Instant,
}

impl Sources {
    /// At most `max_transfers` transfers per address.
    pub fn new(max_transfers: usize) -> Sources {
        Sources {
            max_transfers,
            transfers: HashMap::new(),
            acknowledged: Acknowledged {
                current: HashSet::new(),
                previous: HashSet::new(),
                since: Instant::now(),
            },
        }
    }

    /// Takes a transfer for `source`, unless it holds its most already.
    #[must_use]
    pub fn take(&mut self, source: IpAddr) -> bool {
        let held = self.transfers.get(&source).copied().unwrap_or(0);
        if held >= self.max_transfers {
            return false;
        }
        self.transfers.insert(source, held + 1);
        true
    }

    /// Gives back a transfer `source` took, whose client `acknowledged`
    /// something or not.
    pub fn give_back(&mut self, source: IpAddr, acknowledged: bool) {
        // An address holding nothing has no entry, so the table stays as
        // small as the transfers in flight.
        if let Entry::Occupied(mut held) = self.transfers.entry(source) {
            if *held.get() > 1 {
                *held.get_mut() -= 1;
            } else {
                held.remove();
            }
        }
        if acknowledged {
            self.acknowledged.remember(source);
        }
    }

    /// Whether a client at `source` acknowledged a transfer lately.
    pub fn has_acknowledged(&mut self, source: IpAddr) -> bool {
        self.acknowledged.age();
        self.acknowledged.current.contains(&source) || self.acknowledged.previous.contains(&source)
    }
}

impl Acknowledged {
    fn remember(&mut self, source: IpAddr) {
        self.age();
        if self.current.len() >= REMEMBERED_PER_GENERATION {
            self.next_generation();
        }
        self.current.insert(source);
    }

    /// Forgets the generations that are over.
    fn age(&mut self) {
        let age = self.since.elapsed();
        if age >= GENERATION {
            self.next_generation();
        }
        if age >= 2 * GENERATION {
            self.previous.clear();
        }
    }

    fn next_generation(&mut self) {
        self.previous = std::mem::take(&mut self.current);
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let flood = IpAddr::from([10, 0, 0, 66]);
        let phone = IpAddr::from([10, 0, 0, 7]);
        let mut sources = Sources::new(2);
        assert!(sources.take(flood));
        assert!(sources.take(flood));
        assert!(!sources.take(flood), "a third at once");
        assert!(sources.take(phone), "another address is not affected");
        sources.give_back(flood, false);
        assert!(
            sources.take(flood),
            "a transfer given back can be taken again"
        );
        for _ in 0..2 {
            sources.give_back(flood, false);
        }
        sources.give_back(phone, true);
        assert!(sources.transfers.is_empty(), "nothing kept once idle");
        assert!(sources.has_acknowledged(phone));
        assert!(!sources.has_acknowledged(flood));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_acknowledged_is_remembered_for_a_while() {
        let phone = IpAddr::from([10, 0, 0, 7]);
        let mut sources = Sources::new(1);
        assert!(sources.take(phone));
        sources.give_back(phone, true);
        tokio::time::advance(GENERATION + Duration::from_secs(1)).await;
        assert!(
            sources.has_acknowledged(phone),
            "in the previous generation"
        );
        tokio::time::advance(GENERATION).await;
        assert!(!sources.has_acknowledged(phone), "forgotten");
    }

    #[test]
    fn the_memory_of_addresses_is_bounded() {
        let mut sources = Sources::new(1);
        let first = u32::from_be_bytes([10, 0, 0, 0]);
        let count = 3 * REMEMBERED_PER_GENERATION as u32;
        let addresses = (first..first + count).map(|n| IpAddr::V4(n.into()));
        for address in addresses {
            assert!(sources.take(address));
            sources.give_back(address, true);
        }
        let held = &sources.acknowledged;
        assert!(held.current.len() + held.previous.len() <= 2 * REMEMBERED_PER_GENERATION);
        assert!(
            !sources.has_acknowledged(IpAddr::V4(first.into())),
            "the oldest forgotten"
        );
        let last = IpAddr::V4((first + count - 1).into());
        assert!(sources.has_acknowledged(last), "the latest known");
    }
}
