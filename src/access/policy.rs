//! Who may fetch what: the provisioning access policy from the config
//! file's `[provisioning]` section.
//!
//! A refusal is always the same plain not-found an unknown file gets, so a
//! scanner learns nothing from it. The defaults serve everyone (a lab works
//! out of the box); the README's Security section says how to harden them.

use std::net::IpAddr;
use std::num::NonZeroU64;

use ipnet::IpNet;
use serde::Deserialize;

use crate::access::phone_auth::AuthMode;
use crate::domain::transport::Transport;

/// The `[provisioning]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Networks that may fetch over HTTP; empty means everyone.
    pub http_allow: Vec<IpNet>,
    /// Networks that may fetch over TFTP; empty means everyone.
    pub tftp_allow: Vec<IpNet>,
    /// Networks whose TFTP requests get SIP and admin passwords in their
    /// files (TFTP is clear text). Others get the file without secrets, and
    /// should be pointed at HTTPS with the `provisioning_url` setting.
    /// Unset: every network, unless phones must prove who they are over
    /// HTTP(S) (`http_auth`, required client certificates), where TFTP
    /// would hand anyone what HTTP guards: then none.
    pub tftp_secrets_allow: Option<Vec<IpNet>>,
    /// Refuse a per-device file when the User-Agent names another MAC.
    pub match_user_agent_mac: bool,
    /// The most TFTP transfers at once; more get a "busy" error.
    pub tftp_max_transfers: usize,
    /// Anti-scanning: how many different unknown MACs a client may ask for
    /// within `scan_window_secs` before it is banned.
    pub scan_unknown_macs: usize,
    /// The window `scan_unknown_macs` is counted over, in seconds.
    pub scan_window_secs: u64,
    /// How long a ban lasts, in seconds.
    pub ban_secs: u64,
    /// HTTP Digest authentication for per-device files: `none`, `shared`
    /// or `device`.
    pub http_auth: AuthMode,
    /// The user every phone presents in `shared` mode.
    pub http_auth_user: Option<String>,
    /// The password every phone presents in `shared` mode.
    pub http_auth_password: Option<String>,
    /// Offer and accept MD5 Digest besides SHA-256, for phones that know
    /// nothing better.
    pub http_auth_md5: bool,
    /// HTTPS requires client certificates for per-device files (from the
    /// `[https]` section, by [`Policy::resolved`]): plain HTTP, which has
    /// none to check, then serves them only to phones with credentials.
    #[serde(skip)]
    pub client_certs_required: bool,
    /// The most TFTP transfers at once from one address (the phones behind
    /// a NAT share theirs); more get a "busy" error.
    pub tftp_max_transfers_per_source: usize,
    /// Seconds a TFTP transfer may last from its request, however steadily
    /// its client acknowledges; then it is ended with an error.
    pub tftp_transfer_lifetime_secs: NonZeroU64,
}

/// Ten times what a 100 MB firmware image takes in 512-byte blocks on a
/// LAN, yet a client that acknowledges just before every timeout frees its
/// transfer within minutes, not the hours its file would let it crawl.
const DEFAULT_TFTP_TRANSFER_LIFETIME_SECS: NonZeroU64 = NonZeroU64::new(600).unwrap();

impl Default for Policy {
    fn default() -> Self {
        Policy {
            http_allow: Vec::new(),
            tftp_allow: Vec::new(),
            tftp_secrets_allow: None,
            match_user_agent_mac: true,
            tftp_max_transfers: 2000,
            scan_unknown_macs: 20,
            scan_window_secs: 60,
            ban_secs: 600,
            http_auth: AuthMode::None,
            http_auth_user: None,
            http_auth_password: None,
            http_auth_md5: false,
            client_certs_required: false,
            // A phone fetches one file at a time, two while a firmware
            // image downloads; 100 lets a branch office's phones behind one
            // NAT boot together, and leaves one address a twentieth of the
            // default 2000 transfers.
            tftp_max_transfers_per_source: 100,
            tftp_transfer_lifetime_secs: DEFAULT_TFTP_TRANSFER_LIFETIME_SECS,
        }
    }
}

impl Policy {
    /// Whether a client may fetch anything over a transport.
    pub fn allows(&self, transport: Transport, peer: IpAddr) -> bool {
        let networks = match transport {
            Transport::Http => &self.http_allow,
            Transport::Tftp => &self.tftp_allow,
        };
        networks.is_empty() || contains(networks, peer)
    }

    /// Whether a request's per-device files may carry passwords.
    pub fn secrets_for(&self, transport: Transport, peer: IpAddr) -> bool {
        match transport {
            Transport::Http => true,
            Transport::Tftp => contains(&self.tftp_secrets_networks(false), peer),
        }
    }

    /// The networks TFTP sends passwords to: `tftp_secrets_allow`, or when
    /// unset, every network unless phones prove themselves over HTTP(S)
    /// (`http_auth`, or `client_certs_required` on HTTPS).
    pub fn tftp_secrets_networks(&self, client_certs_required: bool) -> Vec<IpNet> {
        match &self.tftp_secrets_allow {
            Some(networks) => networks.clone(),
            None if self.http_auth != AuthMode::None || client_certs_required => Vec::new(),
            // 0.0.0.0/0 and ::/0.
            None => vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
        }
    }

    /// This policy on a server whose HTTPS does or does not require client
    /// certificates, with `tftp_secrets_allow` set to what it then means.
    pub fn resolved(mut self, client_certs_required: bool) -> Policy {
        self.tftp_secrets_allow = Some(self.tftp_secrets_networks(client_certs_required));
        self.client_certs_required = client_certs_required;
        self
    }

    /// Whether TFTP sends passwords, in clear, to any network at all.
    pub fn tftp_secrets_everywhere(&self) -> bool {
        self.tftp_secrets_networks(false)
            .iter()
            .any(|net| net.prefix_len() == 0)
    }
}

/// Whether any of `networks` holds `ip` (an IPv4-mapped IPv6 address counts
/// as its IPv4 address, as dual-stack sockets report them).
fn contains(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_serve_everyone_with_secrets() {
        let policy = Policy::default();
        for peer in ["10.1.2.3", "::1", "::ffff:192.0.2.1"] {
            assert!(policy.allows(Transport::Http, ip(peer)));
            assert!(policy.allows(Transport::Tftp, ip(peer)));
            assert!(policy.secrets_for(Transport::Tftp, ip(peer)));
        }
    }

    #[test]
    fn phones_that_prove_themselves_over_http_get_no_secrets_over_tftp() {
        let device: Policy = toml::from_str(r#"http_auth = "device""#).unwrap();
        assert!(!device.secrets_for(Transport::Tftp, ip("10.1.2.3")));
        assert!(!device.tftp_secrets_everywhere());
        let certs = Policy::default().resolved(true);
        assert!(!certs.secrets_for(Transport::Tftp, ip("10.1.2.3")));
        let named: Policy = toml::from_str::<Policy>(
            r#"
            http_auth = "device"
            tftp_secrets_allow = ["10.0.0.0/8"]
            "#,
        )
        .unwrap()
        .resolved(true);
        assert!(named.secrets_for(Transport::Tftp, ip("10.1.2.3")), "named");
        assert!(!named.secrets_for(Transport::Tftp, ip("192.0.2.1")));
        assert!(Policy::default().tftp_secrets_everywhere());
    }

    #[test]
    fn allow_lists_are_per_transport() {
        let policy: Policy = toml::from_str(
            r#"
            http_allow = ["10.0.0.0/8"]
            tftp_allow = ["192.168.1.0/24"]
            tftp_secrets_allow = []
            "#,
        )
        .unwrap();
        assert!(policy.allows(Transport::Http, ip("10.9.9.9")));
        assert!(policy.allows(Transport::Http, ip("::ffff:10.9.9.9")));
        assert!(!policy.allows(Transport::Http, ip("192.168.1.5")));
        assert!(policy.allows(Transport::Tftp, ip("192.168.1.5")));
        assert!(!policy.allows(Transport::Tftp, ip("10.9.9.9")));
        assert!(!policy.secrets_for(Transport::Tftp, ip("192.168.1.5")));
        assert!(policy.secrets_for(Transport::Http, ip("10.9.9.9")));
        assert!(toml::from_str::<Policy>("http_allow = [\"10.0.0.0/33\"]").is_err());
    }

    #[test]
    fn a_tftp_transfer_lifetime_of_zero_is_refused() {
        let policy: Policy = toml::from_str("tftp_transfer_lifetime_secs = 30").unwrap();
        assert_eq!(policy.tftp_transfer_lifetime_secs.get(), 30);
        assert!(toml::from_str::<Policy>("tftp_transfer_lifetime_secs = 0").is_err());
    }
}
