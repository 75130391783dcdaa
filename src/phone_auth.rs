//! HTTP Digest authentication of phones (RFC 7616, SHA-256 and MD5) for
//! per-device files, when the `[provisioning]` policy asks for it; Basic
//! too, but only over HTTPS.
//!
//! `shared`: one user and password for every phone (set in the config).
//! `device`: each phone has its own: the user name is its MAC (12 hex
//! digits) and the password is derived from a server key and the MAC, so it
//! exists from the device's creation without being stored; the admin API
//! shows it once, when the device is created. The key lives in
//! `<data>/device-auth.key` (mode 0600): keep it with your backups, since a
//! new key gives every phone a new password.
//!
//! Nonces are stateless (a timestamp and its HMAC), valid for five minutes;
//! a replayed answer only fetches the same file again. Common files and
//! firmware need no authentication: they carry nothing per device.

use std::path::Path;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, KeyInit, Mac as _};
use md5::Md5;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{random_secret, write_private};
use crate::mac::Mac;
use crate::store::unix_now;

/// How long a nonce stays valid, in seconds.
const NONCE_LIFETIME: u64 = 300;
/// The realm phones are told.
pub const REALM: &str = "deskboot";
const KEY_FILE: &str = "device-auth.key";

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
    /// The key file cannot be read or written.
    #[error("{path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

type HmacSha256 = Hmac<Sha256>;

/// Checks phones' Digest answers and makes the challenges.
pub struct PhoneAuth {
    mode: AuthMode,
    key: Vec<u8>,
    shared: Option<(String, String)>,
}

impl std::fmt::Debug for PhoneAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneAuth")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PhoneAuth {
    /// Sets up authentication for `mode`, creating the server key in
    /// `data` the first time.
    pub fn load(
        data: &Path,
        mode: AuthMode,
        shared_user: Option<&str>,
        shared_password: Option<&str>,
    ) -> Result<PhoneAuth, PhoneAuthError> {
        let shared = match (mode, shared_user, shared_password) {
            (AuthMode::Shared, Some(user), Some(password)) => {
                Some((user.to_string(), password.to_string()))
            }
            (AuthMode::Shared, _, _) => return Err(PhoneAuthError::MissingShared),
            _ => None,
        };
        let path = data.join(KEY_FILE);
        let io = |source| PhoneAuthError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_secret(43);
                write_private(&path, &key).map_err(io)?;
                key
            }
            Err(e) => return Err(io(e)),
        };
        Ok(PhoneAuth {
            mode,
            key: key.into_bytes(),
            shared,
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
        tag[..15].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `WWW-Authenticate` values to send: SHA-256 first, then MD5 for
    /// phones that know only MD5.
    pub fn challenges(&self) -> [String; 2] {
        let nonce = self.nonce(unix_now());
        ["SHA-256", "MD5"].map(|algorithm| {
            format!(
                "Digest realm=\"{REALM}\", qop=\"auth\", algorithm={algorithm}, nonce=\"{nonce}\""
            )
        })
    }

    /// Whether an `Authorization` header is a right answer for `method` on
    /// a file of `mac`. Basic is accepted only over TLS, where the password
    /// does not travel in clear.
    pub fn check(
        &self,
        method: &str,
        authorization: Option<&str>,
        mac: Mac,
        over_tls: bool,
    ) -> bool {
        let Some(header) = authorization else {
            return false;
        };
        if let Some(basic) = header.strip_prefix("Basic ") {
            return over_tls && self.check_basic(basic.trim(), mac);
        }
        let Some(answer) = header.strip_prefix("Digest ") else {
            return false;
        };
        let fields = parse_params(answer);
        let field = |name: &str| {
            fields
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
            return false;
        };
        if realm != REALM || !self.nonce_is_fresh(nonce, unix_now()) {
            return false;
        }
        let Some(password) = self.password_for(user, mac) else {
            return false;
        };
        let hash: fn(&str) -> String = match field("algorithm").unwrap_or("MD5") {
            a if a.eq_ignore_ascii_case("SHA-256") => hex::<Sha256>,
            a if a.eq_ignore_ascii_case("MD5") => hex::<Md5>,
            _ => return false,
        };
        let ha1 = hash(&format!("{user}:{realm}:{password}"));
        let ha2 = hash(&format!("{method}:{uri}"));
        let expected = match field("qop") {
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (field("nc"), field("cnonce")) else {
                    return false;
                };
                hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            Some(_) => return false,
            None => hash(&format!("{ha1}:{nonce}:{ha2}")),
        };
        expected.as_bytes().ct_eq(response.as_bytes()).into()
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

    fn nonce(&self, now: u64) -> String {
        let stamp = format!("{now:x}");
        let tag = self.hmac(&[b"nonce:", stamp.as_bytes()]);
        let tag: String = tag[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{stamp}.{tag}")
    }

    fn nonce_is_fresh(&self, nonce: &str, now: u64) -> bool {
        let Some((stamp, _)) = nonce.split_once('.') else {
            return false;
        };
        let Ok(issued) = u64::from_str_radix(stamp, 16) else {
            return false;
        };
        let genuine: bool = self.nonce(issued).as_bytes().ct_eq(nonce.as_bytes()).into();
        genuine && issued <= now && now - issued <= NONCE_LIFETIME
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

fn hex<D: Digest>(text: &str) -> String {
    D::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    fn answer(auth: &PhoneAuth, user: &str, password: &str, algorithm: &str) -> String {
        let nonce = auth.nonce(unix_now());
        let h = |t: &str| match algorithm {
            "SHA-256" => hex::<Sha256>(t),
            _ => hex::<Md5>(t),
        };
        let ha1 = h(&format!("{user}:{REALM}:{password}"));
        let ha2 = h("GET:/001565aabbcc.cfg");
        let response = h(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"/001565aabbcc.cfg\", algorithm={algorithm}, qop=auth, nc=00000001, cnonce=\"abc\", response=\"{response}\""
        )
    }

    #[test]
    fn each_device_answers_with_its_own_password() {
        let dir = tempfile::tempdir().unwrap();
        let auth = PhoneAuth::load(dir.path(), AuthMode::Device, None, None).unwrap();
        let mac: Mac = "001565aabbcc".parse().unwrap();
        let other: Mac = "001565aabbcd".parse().unwrap();
        let password = auth.device_password(mac);
        assert_ne!(password, auth.device_password(other));
        for algorithm in ["SHA-256", "MD5"] {
            let good = answer(&auth, "001565aabbcc", &password, algorithm);
            assert!(auth.check("GET", Some(&good), mac, false), "{algorithm}");
            assert!(
                !auth.check("GET", Some(&good), other, false),
                "another MAC's file"
            );
            let wrong = answer(&auth, "001565aabbcc", "guess", algorithm);
            assert!(!auth.check("GET", Some(&wrong), mac, false));
        }
        assert!(!auth.check("GET", None, mac, false));
        let basic = format!(
            "Basic {}",
            BASE64_STANDARD.encode(format!("001565aabbcc:{password}"))
        );
        assert!(
            !auth.check("GET", Some(&basic), mac, false),
            "Basic in clear"
        );
        assert!(auth.check("GET", Some(&basic), mac, true), "Basic over TLS");
        assert!(!auth.check("GET", Some("Basic YTpi"), mac, true));
        assert!(!auth.check("GET", Some("Digest garbage"), mac, false));
        let reloaded = PhoneAuth::load(dir.path(), AuthMode::Device, None, None).unwrap();
        assert_eq!(reloaded.device_password(mac), password, "the key is kept");
    }

    #[test]
    fn stale_or_forged_nonces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = PhoneAuth::load(dir.path(), AuthMode::Device, None, None).unwrap();
        let now = unix_now();
        assert!(auth.nonce_is_fresh(&auth.nonce(now), now));
        assert!(!auth.nonce_is_fresh(&auth.nonce(now - 301), now));
        assert!(!auth.nonce_is_fresh(&format!("{now:x}.000000000000000000000000"), now));
        assert!(!auth.nonce_is_fresh("zz.yy", now));
    }

    #[test]
    fn shared_mode_needs_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PhoneAuth::load(dir.path(), AuthMode::Shared, Some("prov"), None).is_err());
        let auth =
            PhoneAuth::load(dir.path(), AuthMode::Shared, Some("prov"), Some("s3cret")).unwrap();
        let mac: Mac = "001565aabbcc".parse().unwrap();
        let right = answer(&auth, "prov", "s3cret", "MD5");
        assert!(auth.check("GET", Some(&right), mac, false));
        let wrong_user = answer(&auth, "001565aabbcc", "s3cret", "MD5");
        assert!(!auth.check("GET", Some(&wrong_user), mac, false));
    }
}
