//! HTTP Digest authentication of phones (RFC 7616) for per-device files,
//! when the `[provisioning]` policy asks for it; Basic too, but only over
//! HTTPS.
//!
//! `shared`: one user and password for every phone (set in the config).
//! `device`: each phone has its own: the user name is its MAC (12 hex
//! digits) and the password is derived from a server key and the MAC, so it
//! exists from the device's creation without being stored; the admin API
//! shows it once, when the device is created. The key lives in the store
//! ([`server_key`]), so every node sharing a database derives the same
//! passwords and takes each other's nonces; a new key gives every phone a
//! new password.
//!
//! An answer someone overheard must be worth nothing to them:
//! - its `uri` must be the request's own target, so it fetches no other file;
//! - its nonce names the address it was given to (a timestamp, a salt and
//!   an HMAC of them with that address), so it is refused from any other
//!   address, and
//!   it lasts five minutes, after which the phone is told `stale=true` and
//!   answers the fresh nonce without asking anyone;
//! - each nonce's highest `nc` is remembered while the nonce lives, so the
//!   same answer is taken once (RFC 7616's `qop=auth` is required for it).
//!
//! SHA-256 is offered; MD5 only when `http_auth_md5` is set, for phones that
//! know nothing better. Common files and firmware need no authentication:
//! they carry nothing per device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, KeyInit, Mac as _};
use md5::Md5;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::clock::Clock;
use crate::domain::mac::Mac;
use crate::domain::secret::{hex, random_secret};
use crate::store::{Store, StoreError};

/// How long a nonce stays valid, in seconds.
const NONCE_LIFETIME: u64 = 300;
/// The most nonces whose `nc` is remembered at once. Only a right answer
/// adds one, so this is about phones (times the nonces each is given in
/// [`NONCE_LIFETIME`]), not about what a stranger sends.
const MAX_NONCES_IN_USE: usize = 65_536;
/// The realm phones are told.
pub const REALM: &str = "deskboot";
/// Where a site keeps its key outside the store; taken into the store the
/// first time a server starts on it.
const KEY_FILE: &str = "device-auth.key";
/// The store's meta entry holding the key (a site's copy takes it along).
pub const KEY_META: &str = "device_auth_key";

/// Which phones' requests need credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication.
    #[default]
    None,
    /// One user and password for every phone.
    Shared,
    /// Each phone its own (user = its MAC).
    Device,
}

/// Why phone authentication cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PhoneAuthError {
    /// `shared` without a user and password.
    #[error("http_auth = \"shared\" needs http_auth_user and http_auth_password")]
    MissingShared,
    /// The key file cannot be read.
    #[error("{path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store cannot give or keep the key.
    #[error("the device authentication key: {0}")]
    Store(#[from] StoreError),
}

/// The key device passwords and nonces derive from: the store's, or, the
/// first time, the one in `<data>/device-auth.key` if the site has that
/// file, else a new one. Two nodes starting at once on an empty database
/// keep the same key.
pub fn server_key(store: &Store, data: &Path) -> Result<Vec<u8>, PhoneAuthError> {
    if let Some(key) = store.meta(KEY_META)? {
        return Ok(key);
    }
    let path = data.join(KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => random_secret(43),
        Err(source) => {
            return Err(PhoneAuthError::KeyFile {
                path: path.display().to_string(),
                source,
            });
        }
    };
    Ok(store.claim_meta(KEY_META, key.as_bytes())?)
}

/// A Digest hash algorithm (RFC 7616 section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// MD5, for phones that know nothing better.
    Md5,
}

impl Algorithm {
    /// The name in `WWW-Authenticate` and `Authorization`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    fn hex(self, text: &str) -> String {
        match self {
            Algorithm::Sha256 => digest_hex::<Sha256>(text),
            Algorithm::Md5 => digest_hex::<Md5>(text),
        }
    }
}

/// The fields of a Digest answer that its `response` covers (RFC 7616
/// section 3.4.1, `qop=auth`).
#[derive(Debug, Clone, Copy)]
pub struct DigestFields<'a> {
    /// The hash.
    pub algorithm: Algorithm,
    /// `username`.
    pub user: &'a str,
    /// `realm`.
    pub realm: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// `uri`: the request target.
    pub uri: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
    /// `nc`, as sent (8 hex digits).
    pub nc: &'a str,
    /// `cnonce`.
    pub cnonce: &'a str,
}

impl DigestFields<'_> {
    /// The `response` a client knowing `password` computes.
    pub fn response(&self, password: &str) -> String {
        let h = |text: String| self.algorithm.hex(&text);
        let ha1 = h(format!("{}:{}:{password}", self.user, self.realm));
        let ha2 = h(format!("{}:{}", self.method, self.uri));
        h(format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            self.nonce, self.nc, self.cnonce
        ))
    }
}

/// What a request for a per-device file asked, for its credentials.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target as sent (path and query, not decoded).
    pub target: &'a str,
    /// The address it came from.
    pub peer: IpAddr,
    /// It came over TLS.
    pub over_tls: bool,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
}

/// What a request's credentials are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right, for this file, once.
    Accepted,
    /// Right, but for a nonce that expired or was used up: the phone is
    /// to answer a fresh one (`stale=true`).
    Stale,
    /// Missing or wrong.
    Refused,
}

type HmacSha256 = Hmac<Sha256>;

/// Checks phones' Digest answers and makes the challenges.
pub struct PhoneAuth {
    mode: AuthMode,
    key: Vec<u8>,
    shared: Option<(String, String)>,
    algorithms: Vec<Algorithm>,
    nonces: Mutex<NoncesInUse>,
    /// Dates nonces, and tells when one is spent.
    clock: Clock,
}

impl std::fmt::Debug for PhoneAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneAuth")
            .field("mode", &self.mode)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The settings phone authentication is made from.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthSettings<'a> {
    /// Who needs credentials.
    pub mode: AuthMode,
    /// The shared user, in `shared` mode.
    pub shared_user: Option<&'a str>,
    /// The shared password, in `shared` mode.
    pub shared_password: Option<&'a str>,
    /// Offer and accept MD5 besides SHA-256.
    pub md5: bool,
}

impl PhoneAuth {
    /// Sets up authentication with the server `key` ([`server_key`]);
    /// nonces are dated by `clock`.
    pub fn load(
        key: Vec<u8>,
        settings: AuthSettings<'_>,
        clock: Clock,
    ) -> Result<PhoneAuth, PhoneAuthError> {
        let shared = match (
            settings.mode,
            settings.shared_user,
            settings.shared_password,
        ) {
            (AuthMode::Shared, Some(user), Some(password)) => {
                Some((user.to_string(), password.to_string()))
            }
            (AuthMode::Shared, _, _) => return Err(PhoneAuthError::MissingShared),
            _ => None,
        };
        let mut algorithms = vec![Algorithm::Sha256];
        if settings.md5 {
            algorithms.push(Algorithm::Md5);
        }
        Ok(PhoneAuth {
            mode: settings.mode,
            key,
            shared,
            algorithms,
            nonces: Mutex::new(NoncesInUse::default()),
            clock,
        })
    }

    /// Whether per-device files need credentials.
    pub fn required(&self) -> bool {
        self.mode != AuthMode::None
    }

    /// A device's own HTTP password (for `device` mode).
    pub fn device_password(&self, mac: Mac) -> String {
        let tag = self.hmac(&[b"device:", mac.lower().as_bytes()]);
        // 120 bits in a form every phone's web page accepts.
        hex(&tag[..15])
    }

    /// The `WWW-Authenticate` values to send to `peer`, strongest first;
    /// `stale` when its last answer was right but for a spent nonce.
    pub fn challenges(&self, peer: IpAddr, stale: bool) -> Vec<String> {
        let nonce = self.nonce(self.clock.unix_secs(), peer);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|algorithm| {
                format!(
                    "Digest realm=\"{REALM}\", qop=\"auth\", algorithm={}, nonce=\"{nonce}\"{stale}",
                    algorithm.name()
                )
            })
            .collect()
    }

    /// What an attempt's credentials are worth for a file of `mac`. Basic
    /// is accepted only over TLS, where the password does not travel in
    /// clear.
    pub fn check(&self, attempt: &Attempt<'_>, mac: Mac) -> Verdict {
        let Some(header) = attempt.authorization else {
            return Verdict::Refused;
        };
        if let Some(basic) = header.strip_prefix("Basic ") {
            return match attempt.over_tls && self.check_basic(basic.trim(), mac) {
                true => Verdict::Accepted,
                false => Verdict::Refused,
            };
        }
        match header.strip_prefix("Digest ") {
            Some(answer) => self.check_digest(attempt, answer, mac),
            None => Verdict::Refused,
        }
    }

    fn check_digest(&self, attempt: &Attempt<'_>, answer: &str, mac: Mac) -> Verdict {
        let params = parse_params(answer);
        let field = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            field("username"),
            field("realm"),
            field("nonce"),
            field("uri"),
            field("response"),
        ) else {
            return Verdict::Refused;
        };
        // Without qop=auth there is no nc, and nothing tells a replay.
        let (Some("auth"), Some(nc), Some(cnonce)) = (field("qop"), field("nc"), field("cnonce"))
        else {
            return Verdict::Refused;
        };
        let Some(count) = parse_nc(nc) else {
            return Verdict::Refused;
        };
        // An absent algorithm means MD5 (RFC 7616 section 3.3).
        let named = field("algorithm").unwrap_or("MD5");
        let Some(&algorithm) = self
            .algorithms
            .iter()
            .find(|a| a.name().eq_ignore_ascii_case(named))
        else {
            return Verdict::Refused;
        };
        let Some(issued) = self.genuine_nonce(nonce, attempt.peer) else {
            return Verdict::Refused;
        };
        if realm != REALM || uri != attempt.target {
            return Verdict::Refused;
        }
        let Some(password) = self.password_for(user, mac) else {
            return Verdict::Refused;
        };
        let fields = DigestFields {
            algorithm,
            user,
            realm,
            method: attempt.method,
            uri,
            nonce,
            nc,
            cnonce,
        };
        let right: bool = fields
            .response(&password)
            .as_bytes()
            .ct_eq(response.as_bytes())
            .into();
        if !right {
            return Verdict::Refused;
        }
        let now = self.clock.unix_secs();
        if now.saturating_sub(issued) > NONCE_LIFETIME || issued > now {
            return Verdict::Stale;
        }
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        match nonces.take(nonce, issued, count, now) {
            true => Verdict::Accepted,
            false => Verdict::Stale,
        }
    }

    fn check_basic(&self, encoded: &str, mac: Mac) -> bool {
        let Ok(decoded) = BASE64_STANDARD.decode(encoded) else {
            return false;
        };
        let Some((user, password)) = std::str::from_utf8(&decoded)
            .ok()
            .and_then(|text| text.split_once(':'))
        else {
            return false;
        };
        match self.password_for(user, mac) {
            Some(expected) => expected.as_bytes().ct_eq(password.as_bytes()).into(),
            None => false,
        }
    }

    /// The password `user` must present for a file of `mac`, if the user fits.
    fn password_for(&self, user: &str, mac: Mac) -> Option<String> {
        match (&self.mode, &self.shared) {
            (AuthMode::Shared, Some((shared_user, password))) if user == shared_user => {
                Some(password.clone())
            }
            (AuthMode::Device, _) if user.parse::<Mac>().is_ok_and(|u| u == mac) => {
                Some(self.device_password(mac))
            }
            _ => None,
        }
    }

    /// A nonce for `peer`, issued at `now`: `<time>.<salt>.<HMAC of time,
    /// salt and peer>`. The salt makes every challenge's nonce its own, so
    /// two phones behind one address never share one and its counts.
    fn nonce(&self, now: u64, peer: IpAddr) -> String {
        self.signed_nonce(&format!("{now:x}"), &random_secret(16), peer)
    }

    fn signed_nonce(&self, stamp: &str, salt: &str, peer: IpAddr) -> String {
        let peer = peer.to_canonical().to_string();
        let tag = self.hmac(&[
            b"nonce:",
            stamp.as_bytes(),
            b".",
            salt.as_bytes(),
            b"@",
            peer.as_bytes(),
        ]);
        let tag = hex(&tag[..12]);
        format!("{stamp}.{salt}.{tag}")
    }

    /// When a nonce was issued, if this server issued it to `peer`.
    fn genuine_nonce(&self, nonce: &str, peer: IpAddr) -> Option<u64> {
        let mut parts = nonce.splitn(3, '.');
        let (stamp, salt) = (parts.next()?, parts.next()?);
        let issued = u64::from_str_radix(stamp, 16).ok()?;
        let genuine: bool = self
            .signed_nonce(stamp, salt, peer)
            .as_bytes()
            .ct_eq(nonce.as_bytes())
            .into();
        genuine.then_some(issued)
    }

    fn hmac(&self, parts: &[&[u8]]) -> Vec<u8> {
        // HMAC takes keys of any length.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return Vec::new();
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// The nonces answered rightly while they live, with the highest `nc` each
/// was used with.
#[derive(Debug, Default)]
struct NoncesInUse {
    counts: HashMap<String, (u64, u32)>,
    /// Nonces issued at or before this time were forgotten to make room:
    /// they count as spent.
    forgotten_up_to: u64,
}

impl NoncesInUse {
    /// Takes one use of a nonce with count `nc`: false when that count (or
    /// a later one) was already used.
    fn take(&mut self, nonce: &str, issued: u64, nc: u32, now: u64) -> bool {
        if let Some((_, highest)) = self.counts.get_mut(nonce) {
            if nc <= *highest {
                return false;
            }
            *highest = nc;
            return true;
        }
        if issued <= self.forgotten_up_to {
            return false;
        }
        if self.counts.len() >= MAX_NONCES_IN_USE {
            self.make_room(now);
        }
        self.counts.insert(nonce.to_string(), (issued, nc));
        true
    }

    /// Drops expired nonces, then, if still full, the oldest eighth.
    fn make_room(&mut self, now: u64) {
        self.counts
            .retain(|_, (issued, _)| now.saturating_sub(*issued) <= NONCE_LIFETIME);
        if self.counts.len() < MAX_NONCES_IN_USE {
            return;
        }
        let mut issued: Vec<u64> = self.counts.values().map(|(at, _)| *at).collect();
        let cut = issued.len() / 8;
        let (_, &mut threshold, _) = issued.select_nth_unstable(cut);
        self.forgotten_up_to = self.forgotten_up_to.max(threshold);
        self.counts.retain(|_, (at, _)| *at > threshold);
    }
}

/// `nc`: exactly 8 hex digits (RFC 7616 section 3.4).
fn parse_nc(nc: &str) -> Option<u32> {
    (nc.len() == 8)
        .then(|| u32::from_str_radix(nc, 16).ok())
        .flatten()
}

fn digest_hex<D: Digest>(text: &str) -> String {
    hex(&D::digest(text.as_bytes()))
}

/// `name=value, name="quoted, value"` pairs of an auth header.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = text.trim();
    while let Some((name, after)) = rest.split_once('=') {
        let name = name.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            },
            None => match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            },
        };
        fields.push((name, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::domain::clock::unix_now;

    const MAC: &str = "001565aabbcc";
    const TARGET: &str = "/001565aabbcc.cfg";

    fn peer() -> IpAddr {
        "192.0.2.10".parse().unwrap()
    }

    fn load(dir: &Path, mode: AuthMode, md5: bool) -> PhoneAuth {
        load_on(dir, mode, md5, Clock::System)
    }

    fn load_on(dir: &Path, mode: AuthMode, md5: bool, clock: Clock) -> PhoneAuth {
        let settings = AuthSettings {
            mode,
            shared_user: Some("prov"),
            shared_password: Some("s3cret"),
            md5,
        };
        let store = Store::open(&dir.join("store")).unwrap();
        PhoneAuth::load(server_key(&store, dir).unwrap(), settings, clock).unwrap()
    }

    /// A phone's answer to a nonce, for `uri`, with count `nc`.
    fn answer(user: &str, password: &str, algorithm: Algorithm, nonce: &str, nc: u32) -> String {
        let nc = format!("{nc:08x}");
        let fields = DigestFields {
            algorithm,
            user,
            realm: REALM,
            method: "GET",
            uri: TARGET,
            nonce,
            nc: &nc,
            cnonce: "abc",
        };
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{TARGET}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc\", response=\"{}\"",
            algorithm.name(),
            fields.response(password)
        )
    }

    fn attempt(authorization: &str) -> Attempt<'_> {
        Attempt {
            method: "GET",
            target: TARGET,
            peer: peer(),
            over_tls: false,
            authorization: Some(authorization),
        }
    }

    #[test]
    fn rfc_7616_example_responses() {
        // RFC 7616 section 3.9.1: Mufasa, "Circle of Life".
        let fields = DigestFields {
            algorithm: Algorithm::Md5,
            user: "Mufasa",
            realm: "http-auth@example.org",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc: "00000001",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        };
        assert_eq!(
            fields.response("Circle of Life"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        let sha256 = DigestFields {
            algorithm: Algorithm::Sha256,
            ..fields
        };
        assert_eq!(
            sha256.response("Circle of Life"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn each_device_answers_with_its_own_password_once_per_count() {
        let dir = tempfile::tempdir().unwrap();
        let auth = load(dir.path(), AuthMode::Device, true);
        let mac: Mac = MAC.parse().unwrap();
        let other: Mac = "001565aabbcd".parse().unwrap();
        let password = auth.device_password(mac);
        assert_ne!(password, auth.device_password(other));
        let nonce = auth.nonce(unix_now(), peer());
        for (n, algorithm) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
            let nc = n as u32 * 2 + 1;
            let good = answer(MAC, &password, algorithm, &nonce, nc);
            assert_eq!(auth.check(&attempt(&good), other), Verdict::Refused);
            assert_eq!(auth.check(&attempt(&good), mac), Verdict::Accepted);
            assert_eq!(
                auth.check(&attempt(&good), mac),
                Verdict::Stale,
                "{algorithm:?}: the same answer again"
            );
            let next = answer(MAC, &password, algorithm, &nonce, nc + 1);
            assert_eq!(auth.check(&attempt(&next), mac), Verdict::Accepted);
            let wrong = answer(MAC, "guess", algorithm, &nonce, nc + 5);
            assert_eq!(auth.check(&attempt(&wrong), mac), Verdict::Refused);
        }
        let reloaded = load(dir.path(), AuthMode::Device, false);
        assert_eq!(reloaded.device_password(mac), password, "the key is kept");
    }

    #[test]
    fn a_sites_key_file_is_taken_into_the_store_and_kept_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "the site's key\n").unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        assert_eq!(server_key(&store, dir.path()).unwrap(), b"the site's key");
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(server_key(&store, dir.path()).unwrap(), b"the site's key");
        // Another node on the same store, with no file, derives the same.
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(
            server_key(&store, elsewhere.path()).unwrap(),
            b"the site's key"
        );
    }

    #[test]
    fn an_answer_is_bound_to_its_target_and_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let auth = load(dir.path(), AuthMode::Shared, false);
        let mac: Mac = MAC.parse().unwrap();
        let nonce = auth.nonce(unix_now(), peer());
        let good = answer("prov", "s3cret", Algorithm::Sha256, &nonce, 1);
        let elsewhere = Attempt {
            target: "/001565aabbcd.cfg",
            ..attempt(&good)
        };
        assert_eq!(
            auth.check(&elsewhere, mac),
            Verdict::Refused,
            "another file"
        );
        let other_address = Attempt {
            peer: "192.0.2.11".parse().unwrap(),
            ..attempt(&good)
        };
        assert_eq!(auth.check(&other_address, mac), Verdict::Refused);
        assert_eq!(auth.check(&attempt(&good), mac), Verdict::Accepted);
    }

    #[test]
    fn md5_and_answers_without_qop_are_refused_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let auth = load(dir.path(), AuthMode::Shared, false);
        let mac: Mac = MAC.parse().unwrap();
        let nonce = auth.nonce(unix_now(), peer());
        let md5 = answer("prov", "s3cret", Algorithm::Md5, &nonce, 1);
        assert_eq!(auth.check(&attempt(&md5), mac), Verdict::Refused);
        assert_eq!(auth.challenges(peer(), false).len(), 1, "SHA-256 only");
        let without_qop =
            answer("prov", "s3cret", Algorithm::Sha256, &nonce, 1).replace("qop=auth, ", "");
        assert_eq!(auth.check(&attempt(&without_qop), mac), Verdict::Refused);
        let with_md5 = load(dir.path(), AuthMode::Shared, true);
        let nonce = with_md5.nonce(unix_now(), peer());
        let md5 = answer("prov", "s3cret", Algorithm::Md5, &nonce, 1);
        assert_eq!(with_md5.check(&attempt(&md5), mac), Verdict::Accepted);
    }

    #[test]
    fn expired_nonces_are_stale_and_forged_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = load(dir.path(), AuthMode::Shared, false);
        let mac: Mac = MAC.parse().unwrap();
        let old = auth.nonce(unix_now() - NONCE_LIFETIME - 1, peer());
        let late = answer("prov", "s3cret", Algorithm::Sha256, &old, 1);
        assert_eq!(auth.check(&attempt(&late), mac), Verdict::Stale);
        let challenge = auth.challenges(peer(), true);
        assert!(challenge[0].ends_with("stale=true"), "{challenge:?}");
        let forged = format!("{:x}.0000000000000000.000000000000000000000000", unix_now());
        let forged = answer("prov", "s3cret", Algorithm::Sha256, &forged, 1);
        assert_eq!(auth.check(&attempt(&forged), mac), Verdict::Refused);
        let wrong_late = answer("prov", "guess", Algorithm::Sha256, &old, 1);
        assert_eq!(
            auth.check(&attempt(&wrong_late), mac),
            Verdict::Refused,
            "stale only for a right answer"
        );
    }

    #[test]
    fn a_nonce_lives_its_lifetime_then_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let manual = ManualClock::starting_at(1_700_000_000);
        let auth = load_on(dir.path(), AuthMode::Shared, false, manual.clock());
        let mac: Mac = MAC.parse().unwrap();
        let challenge = &auth.challenges(peer(), false)[0];
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a nonce in the challenge");
        manual.advance(std::time::Duration::from_secs(NONCE_LIFETIME));
        let last_second = answer("prov", "s3cret", Algorithm::Sha256, nonce, 1);
        assert_eq!(auth.check(&attempt(&last_second), mac), Verdict::Accepted);
        manual.advance(std::time::Duration::from_secs(1));
        let too_late = answer("prov", "s3cret", Algorithm::Sha256, nonce, 2);
        assert_eq!(auth.check(&attempt(&too_late), mac), Verdict::Stale);
    }

    #[test]
    fn basic_only_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let auth = load(dir.path(), AuthMode::Device, false);
        let mac: Mac = MAC.parse().unwrap();
        let basic = format!(
            "Basic {}",
            BASE64_STANDARD.encode(format!("{MAC}:{}", auth.device_password(mac)))
        );
        assert_eq!(auth.check(&attempt(&basic), mac), Verdict::Refused);
        let over_tls = Attempt {
            over_tls: true,
            ..attempt(&basic)
        };
        assert_eq!(auth.check(&over_tls, mac), Verdict::Accepted);
        assert_eq!(
            auth.check(&attempt("Digest garbage"), mac),
            Verdict::Refused
        );
    }

    #[test]
    fn shared_mode_needs_its_credentials() {
        let missing = AuthSettings {
            mode: AuthMode::Shared,
            shared_user: Some("prov"),
            ..AuthSettings::default()
        };
        assert!(PhoneAuth::load(b"key".to_vec(), missing, Clock::System).is_err());
    }

    #[test]
    fn forgotten_nonces_count_as_spent() {
        let mut nonces = NoncesInUse::default();
        // As many nonces as are remembered, issued over 256 s.
        let base = 10_000;
        for n in 0..MAX_NONCES_IN_USE as u64 {
            let issued = base + n / 256;
            assert!(nonces.take(&format!("n{n}"), issued, 1, issued));
        }
        let now = base + 256;
        assert!(nonces.take("newest", now, 1, now), "room was made");
        assert!(!nonces.take("n0", base, 2, now), "forgotten: spent");
        assert!(nonces.counts.len() < MAX_NONCES_IN_USE);
    }
}
