//! What the phones' path decides before it handles a request: whether a
//! client suspected of scanning is held back, whether its credentials
//! prove the file's MAC, whether a banned scanner gets any answer. The
//! transports ask and carry the answer out; the parts that decide live in
//! [`access`](crate::access).

use std::net::IpAddr;
use std::time::Duration;

use super::request::Request;
use super::{Provisioner, lock};
use crate::access::client_cert::ClientCert;
use crate::access::phone_auth::{Attempt, Verdict};
use crate::domain::mac::Mac;
use crate::domain::transport::Transport;
use crate::metrics::Outcome;

/// How long a client suspected of scanning waits for each per-device answer.
const THROTTLE_DELAY: Duration = Duration::from_millis(500);

/// What the transport does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Hand it to the handler; `authenticated` when its credentials proved
    /// the file's MAC.
    Handle {
        /// The credentials proved the MAC.
        authenticated: bool,
    },
    /// Ask for credentials (HTTP 401); `stale` when only the nonce was old.
    Challenge {
        /// The answer was right but its nonce expired.
        stale: bool,
    },
    /// Say nothing: a banned scanner then waits out its timeout before
    /// every next guess, instead of taking CPU that known phones need.
    Ignore,
}

impl Provisioner {
    /// An HTTP request, whose credentials are `attempt`. Every per-device
    /// answer to a client suspected of scanning waits, found or not, banned
    /// or not, whatever its User-Agent says: the timing tells nothing.
    pub async fn admit_http(&self, request: &Request<'_>, attempt: &Attempt<'_>) -> Admission {
        // Which MAC the file is for matters only to authentication and to a
        // client suspected of scanning: most requests skip the lookup.
        let suspect = self.scan_guard(Transport::Http).is_suspect(request.peer);
        let device_mac = if suspect || self.phone_auth().required() {
            self.device_file_mac(request.path)
        } else {
            None
        };
        let Some(mac) = device_mac else {
            return Admission::Handle {
                authenticated: false,
            };
        };
        if suspect {
            self.metrics().http_throttled();
            tokio::time::sleep(THROTTLE_DELAY).await;
        }
        match self.credentials(attempt, mac) {
            Some(Verdict::Accepted) => Admission::Handle {
                authenticated: true,
            },
            Some(verdict) => Admission::Challenge {
                stale: verdict == Verdict::Stale,
            },
            None => Admission::Handle {
                authenticated: false,
            },
        }
    }

    /// A TFTP read request: a per-device file asked by a client banned for
    /// scanning gets no answer at all.
    pub fn admit_tftp(&self, request: &Request<'_>) -> Admission {
        let banned = self
            .device_file_mac(request.path)
            .is_some_and(|mac| self.is_banned_from(request, mac));
        if !banned {
            return Admission::Handle {
                authenticated: false,
            };
        }
        self.metrics().request(Transport::Tftp, Outcome::Refused);
        tracing::debug!(peer = %request.peer, "TFTP request from a banned scanner, not answered");
        Admission::Ignore
    }

    /// What a per-device request's credentials are worth; None when phones
    /// need none, or the client's network is refused anyway (it then gets
    /// the same not-found as everything else).
    fn credentials(&self, attempt: &Attempt<'_>, mac: Mac) -> Option<Verdict> {
        let auth = self.phone_auth();
        let allowed = self.policy().allows(Transport::Http, attempt.peer);
        (allowed && auth.required()).then(|| auth.check(attempt, mac))
    }

    /// Whether a ban for scanning keeps `request` from `mac`'s file.
    ///
    /// A User-Agent proves nothing (a scanner puts the MAC it guesses
    /// there), so only a request that proved itself gets past a ban: HTTP
    /// credentials, or a verified client certificate naming the MAC. Over
    /// TFTP, whose sources anyone can forge, a ban must not lock a known
    /// phone out of its own file: the phone last served from the very
    /// address asking still gets it.
    pub(crate) fn is_banned_from(&self, request: &Request<'_>, mac: Mac) -> bool {
        if request.authenticated || request.client_cert == ClientCert::Verified(Some(mac)) {
            return false;
        }
        if !self.scan_guard(request.transport).is_banned(request.peer) {
            return false;
        }
        request.transport == Transport::Http || self.last_seen_at(mac) != Some(request.peer)
    }

    /// The address a device was last served from, if it ever was.
    fn last_seen_at(&self, mac: Mac) -> Option<IpAddr> {
        if let Some(pending) = lock(&self.pending_sightings).get(&mac) {
            return Some(pending.ip);
        }
        match self.store.sighting(mac) {
            Ok(sighting) => sighting.map(|s| s.ip),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a sighting");
                None
            }
        }
    }
}
