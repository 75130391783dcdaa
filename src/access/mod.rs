//! Who may fetch what, decided before anything is rendered: the
//! [`policy`] (allow-lists per transport, which files carry secrets),
//! `scan` (bans for MAC scanners, by address and by network),
//! [`phone_auth`] (HTTP Digest and Basic credentials per device) and
//! [`client_cert`] (the MAC a verified TLS client certificate names).

pub mod client_cert;
pub mod phone_auth;
pub mod policy;
pub(crate) mod scan;
