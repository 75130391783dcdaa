//! A phone's request as both transports hand it to the handler, and why
//! one got no file.

use std::net::IpAddr;

use crate::access::client_cert::ClientCert;
use crate::domain::mac::Mac;
use crate::domain::transport::Transport;
use crate::render::RenderError;
use crate::store::StoreError;

/// A phone's request for a file.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The path or TFTP file name, as the phone sent it (percent-decoded for HTTP).
    pub path: &'a str,
    /// The HTTP User-Agent; none over TFTP.
    pub user_agent: Option<&'a str>,
    /// The phone's address.
    pub peer: IpAddr,
    /// How it asked.
    pub transport: Transport,
    /// The HTTP `Host` the phone used: the provisioning URL when none is set.
    pub host: Option<&'a str>,
    /// The phone came over HTTPS: that provisioning URL is then `https://`.
    pub https: bool,
    /// Its verified TLS client certificate, when the HTTPS listener checks
    /// them; [`ClientCert::Unchecked`] over HTTP and TFTP.
    pub client_cert: ClientCert,
    /// The phone gave the right HTTP credentials for the file's MAC.
    pub authenticated: bool,
}

impl<'a> Request<'a> {
    /// A TFTP request: a file name and where it came from, nothing more.
    pub fn tftp(path: &'a str, peer: IpAddr) -> Self {
        Request {
            path,
            user_agent: None,
            // As over HTTP: IPv4 phones on a dual-stack socket as IPv4.
            peer: peer.to_canonical(),
            transport: Transport::Tftp,
            host: None,
            https: false,
            client_cert: ClientCert::Unchecked,
            authenticated: false,
        }
    }

    /// `http://<Host>` (or `https://`) when the phone came over HTTP(S) with
    /// a sane Host header: a phone told to come back over plain HTTP to the
    /// HTTPS port would fail.
    pub(crate) fn origin(&self) -> Option<String> {
        let host = self.host.filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })?;
        let scheme = if self.https { "https" } else { "http" };
        (self.transport == Transport::Http).then(|| format!("{scheme}://{host}"))
    }
}

/// Why a request got no file. Phones see only "not found"; the log sees this.
#[derive(Debug, thiserror::Error)]
pub enum NotServed {
    /// The path is malformed or hostile.
    #[error("refused path: {0}")]
    BadPath(&'static str),
    /// No model asks for a file of this name.
    #[error("no phone model asks for this file")]
    UnknownFile,
    /// A per-device file for a MAC that is not provisioned.
    #[error("MAC {0} is not provisioned")]
    UnknownMac(Mac),
    /// The device exists, but its model does not ask for this file.
    #[error("device {mac} is a {model}, which does not ask for this file")]
    WrongModel {
        /// The device.
        mac: Mac,
        /// Its model id.
        model: String,
    },
    /// The device names a model the catalog no longer has.
    #[error("device {mac} has unknown model {model}")]
    MissingModel {
        /// The device.
        mac: Mac,
        /// Its model id.
        model: String,
    },
    /// The stored device no longer fits its model (e.g. a descriptor changed).
    #[error("device does not fit its model: {0}")]
    Invalid(String),
    /// The template failed for this device.
    #[error("render failed: {0}")]
    Render(#[from] RenderError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The client's network may not fetch over this transport.
    #[error("the client's network is not allowed on this transport")]
    NotAllowed,
    /// The client is banned for scanning.
    #[error("the client is banned for scanning")]
    Banned,
    /// The User-Agent names another MAC than the file.
    #[error("the User-Agent names MAC {0}, not the file's")]
    OtherMac(Mac),
    /// The phone did not authenticate (HTTP Digest).
    #[error("no valid credentials")]
    Unauthorized,
    /// The HTTPS client certificate does not vouch for the file's MAC.
    #[error("client certificate: {0}")]
    ClientCert(ClientCert),
}

impl NotServed {
    /// The provisioned or asked-for MAC the reason is about, if any.
    pub fn mac(&self) -> Option<Mac> {
        match self {
            NotServed::UnknownMac(mac)
            | NotServed::WrongModel { mac, .. }
            | NotServed::MissingModel { mac, .. } => Some(*mac),
            _ => None,
        }
    }

    /// Whether the server cannot answer now but may soon: the store is
    /// unavailable (a lost database), so the phone should ask again.
    pub fn is_busy(&self) -> bool {
        matches!(self, NotServed::Store(StoreError::Unavailable(_)))
    }

    /// Whether the policy refused the request (rather than nothing being there).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            NotServed::NotAllowed
                | NotServed::Banned
                | NotServed::OtherMac(_)
                | NotServed::Unauthorized
                | NotServed::ClientCert(_)
        )
    }
}
