//! deskboot: a phone auto-provisioning server.
//!
//! A desk phone boots, learns our address from DHCP option 66, and asks for
//! its files over TFTP or HTTP. The folders are the layers; each uses only
//! the ones below it (docs/ARCHITECTURE.md draws them):
//!
//! - [`transport`]: `http` and `tftp` turn bytes into a
//!   [`provision::request::Request`], hand it to the one handler and write
//!   the answer back (`connections` caps what a listener and one address
//!   hold; `tls` holds the HTTPS listener's certificate).
//! - [`provision`]: the one request handler. It asks [`access`] whether the
//!   requester may have the file, the [`catalog`] which phone model and file
//!   the path means, loads the device and its users from the [`store`],
//!   and has [`render`] produce the bytes. Unknown MACs are recorded as
//!   discovered; firmware images are served as they are. `metrics` counts
//!   it all for `/metrics`.
//! - [`access`]: who may fetch what: the policy's allow-lists, anti-scanning
//!   bans per transport, HTTP Digest per device, client certificates.
//! - [`render`]: Tera templates (`templates/`) and the view they see, the
//!   render threads and their cache, uploaded templates (rendered in
//!   sandboxed worker processes), and giving a storm's memory back.
//! - [`catalog`]: phone models as data (`phone-models/*.toml`), path and
//!   User-Agent recognition.
//! - [`store`]: the records behind one narrow interface, its backend, the
//!   audit log and the private data directory.
//! - [`domain`]: what every layer shares: MAC addresses, the stored records,
//!   time zones, the transport a request came by, progress reports, clock
//!   and secrets.
//!
//! Beside the phones' path, [`admin`] serves administrators (the JSON API
//! under `/api/v1/` behind tokens, a web UI at `/` over the same logic, CSV
//! import, export and restore, resync by SIP NOTIFY) on a separate
//! listener; the `deskboot` CLI is the API's client.
//! [`server`] wires everything together from a [`config`].

// Every public item says what it is; CI's clippy -D warnings keeps it so.
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod catalog;
pub mod config;
pub mod domain;
pub(crate) mod metrics;
pub mod provision;
pub mod render;
pub mod server;
pub mod store;
pub mod transport;
