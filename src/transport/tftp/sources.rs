//! How much of the TFTP server one source address holds: a flood of
//! requests from one address must leave transfers for the phones at the
//! others.
//!
//! Not who may fetch what (the policy and the scan guard decide that), only
//! how much of the server an address may take at once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

/// The transfers in flight of each source address.
#[derive(Debug)]
pub struct Sources {
    /// The most one address may hold.
    max_transfers: usize,
    /// Each address with a transfer in flight, and how many it holds.
    transfers: HashMap<IpAddr, usize>,
}

impl Sources {
    /// At most `max_transfers` transfers per address.
    pub fn new(max_transfers: usize) -> Sources {
        Sources {
            max_transfers,
            transfers: HashMap::new(),
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

    /// Gives back a transfer `source` took.
    pub fn give_back(&mut self, source: IpAddr) {
        // An address holding nothing has no entry, so the table stays as
        // small as the transfers in flight.
        if let Entry::Occupied(mut held) = self.transfers.entry(source) {
            if *held.get() > 1 {
                *held.get_mut() -= 1;
            } else {
                held.remove();
            }
        }
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
        sources.give_back(flood);
        assert!(
            sources.take(flood),
            "a transfer given back can be taken again"
        );
        for _ in 0..2 {
            sources.give_back(flood);
        }
        sources.give_back(phone);
        assert!(sources.transfers.is_empty(), "nothing kept once idle");
    }
}
