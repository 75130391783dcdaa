//! What a phone's TLS client certificate says about it: whether one was
//! verified and which MAC it names.
//!
//! rustls verifies the certificate against the `[https]` section's
//! `client_ca` bundle during the handshake (see [`tls`](crate::transport::tls)); a
//! certificate that does not verify never gets this far. This module only
//! reads the verified leaf and finds the MAC a vendor put in it, so that
//! [`provision`](crate::provision) can refuse a per-device file for another
//! MAC. It is not for authenticating anything on its own.
//!
//! Where the MAC is looked for, in order: every subject common name (CN),
//! then the subjectAltName DNS names, URIs and e-mail addresses; the first
//! MAC found wins. A MAC is 12 hex digits in any case, bare (`001565AABBCC`),
//! in pairs with `:` or `-` (`00:15:65:aa:bb:cc`), or Cisco-dotted
//! (`0015.65aa.bbcc`), anywhere in the text as long as no other hex digit
//! (or the same separator) touches it: `SEP001565AABBCC`,
//! `CP-7975G-SEP001565AABBCC`, `yealink 00:15:65:aa:bb:cc` and
//! `001565aabbcc.phones.example.com` all name `001565aabbcc`, while
//! `MAC001565AABBCC` (13 hex digits in a row) names none, since it is
//! ambiguous.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::domain::mac::Mac;

/// A phone's client certificate, as far as provisioning is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCert {
    /// Nothing to check: plain HTTP, TFTP, HTTPS without `client_ca`, or
    /// `client_cert = "optional"` and the phone presented none.
    #[default]
    Unchecked,
    /// `client_cert = "required"` and the phone presented none.
    Missing,
    /// A certificate the CA bundle verified, and the MAC found in it (none
    /// when it names no MAC).
    Verified(Option<Mac>),
}

impl ClientCert {
    /// What a TLS connection's peer certificates (DER, leaf first, already
    /// verified by rustls) say; `required` when per-device files need one.
    pub fn from_peer(certificates: &[impl AsRef<[u8]>], required: bool) -> ClientCert {
        match certificates.first() {
            Some(leaf) => ClientCert::Verified(mac_in_certificate(leaf.as_ref())),
            None if required => ClientCert::Missing,
            None => ClientCert::Unchecked,
        }
    }

    /// Whether a per-device file for `mac` may go to this client: a
    /// verified certificate must name that very MAC, and a required one
    /// must be there.
    pub fn vouches_for(self, mac: Mac) -> bool {
        match self {
            ClientCert::Unchecked => true,
            ClientCert::Verified(Some(own)) => own == mac,
            ClientCert::Missing | ClientCert::Verified(None) => false,
        }
    }
}

impl fmt::Display for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCert::Unchecked => f.write_str("not checked"),
            ClientCert::Missing => f.write_str("none presented, and one is required"),
            ClientCert::Verified(Some(mac)) => write!(f, "it names MAC {mac}"),
            ClientCert::Verified(None) => f.write_str("it names no MAC"),
        }
    }
}

/// The MAC a DER certificate names in its subject CN, else in its
/// subjectAltName; none when it names none or does not parse.
pub fn mac_in_certificate(der: &[u8]) -> Option<Mac> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let from_cn = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .find_map(mac_in_text);
    from_cn.or_else(|| {
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(text) | GeneralName::URI(text) | GeneralName::RFC822Name(text) => {
                mac_in_text(text)
            }
            _ => None,
        })
    })
}

/// The first MAC written in `text` in one of [`Mac`]'s four forms, with no
/// hex digit (or the form's own separator) right before or after it.
pub fn mac_in_text(text: &str) -> Option<Mac> {
    let bytes = text.as_bytes();
    // Longest form first, so `00:15:...` is not read as a shorter form.
    const LENGTHS: [usize; 3] = [17, 14, 12];
    (0..bytes.len()).find_map(|start| {
        LENGTHS.iter().find_map(|&len| {
            let candidate = text.get(start..start + len)?;
            let mac: Mac = candidate.parse().ok()?;
            let separator = match len {
                17 => Some(bytes[start + 2]),
                14 => Some(b'.'),
                _ => None,
            };
            let touches =
                |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_hexdigit() || Some(b) == separator);
            let before = start.checked_sub(1).and_then(|i| bytes.get(i));
            let after = bytes.get(start + len);
            (!touches(before) && !touches(after)).then_some(mac)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "001565aabbcc".parse().unwrap()
    }

    #[test]
    fn vendors_forms_of_the_mac_are_found() {
        for text in [
            "001565AABBCC",
            "001565aabbcc",
            "SEP001565AABBCC",
            "CP-7975G-SEP001565AABBCC",
            "yealink 00:15:65:aa:bb:cc",
            "00-15-65-AA-BB-CC",
            "0015.65aa.bbcc",
            "001565aabbcc.phones.example.com",
            "urn:dev:mac:001565aabbcc",
            "Polycom-001565AABBCC-VVX",
        ] {
            assert_eq!(mac_in_text(text), Some(mac()), "{text}");
        }
    }

    #[test]
    fn ambiguous_or_partial_hex_names_no_mac() {
        for text in [
            "",
            "phone",
            "MAC001565AABBCC",
            "001565AABBCC0",
            "001565aabbc",
            "00:15:65:aa:bb:cc:dd",
            "ff:00:15:65:aa:bb:cc",
            "0015.65aa.bbcc.dd00",
            "00:15-65:aa:bb:cc",
            "ünïcödé001565aabbcé",
        ] {
            assert_eq!(mac_in_text(text), None, "{text}");
        }
    }

    fn certificate(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_comes_before_the_alt_names() {
        let other: Mac = "001565000001".parse().unwrap();
        let both = certificate(Some("SEP001565AABBCC"), &["001565000001.example.com"]);
        assert_eq!(mac_in_certificate(&both), Some(mac()));
        let san_only = certificate(Some("Yealink phone"), &["001565000001.example.com"]);
        assert_eq!(mac_in_certificate(&san_only), Some(other));
        assert_eq!(
            mac_in_certificate(&certificate(None, &["phone.example.com"])),
            None
        );
        assert_eq!(mac_in_certificate(b"not DER"), None);
    }

    #[test]
    fn a_verified_certificate_must_name_the_files_mac() {
        let cert = certificate(Some("001565aabbcc"), &[]);
        let verified = ClientCert::from_peer(&[cert], false);
        assert_eq!(verified, ClientCert::Verified(Some(mac())));
        assert!(verified.vouches_for(mac()));
        assert!(!verified.vouches_for("001565aabbcd".parse().unwrap()));
        assert!(!ClientCert::Verified(None).vouches_for(mac()));

        let none: [Vec<u8>; 0] = [];
        assert_eq!(ClientCert::from_peer(&none, false), ClientCert::Unchecked);
        assert!(ClientCert::Unchecked.vouches_for(mac()));
        assert_eq!(ClientCert::from_peer(&none, true), ClientCert::Missing);
        assert!(!ClientCert::Missing.vouches_for(mac()));
    }
}
