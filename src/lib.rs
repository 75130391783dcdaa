//! deskboot: a phone auto-provisioning server.
//!
//! A desk phone boots, learns our address from DHCP option 66, and asks for
//! its files over TFTP or HTTP. A request meets these modules in order:
//!
//! - [`transport`]: `http` and `tftp` turn bytes into a [`provision::Request`]
//!   and write the answer back; nothing else (`send_timeout` gives up on
//!   HTTP clients that stop reading, `connections` caps what a listener
//!   and one address hold).
//! - [`provision`]: the one request handler. It asks the [`catalog`] which
//!   phone model and file the path means (and for which [`mac`]), loads the
//!   device and its users from the [`store`], and has [`render`] produce the
//!   bytes on the [`render_pool`]'s threads, kept in the [`cache`] (a
//!   phone's own file once it is asked for again) until something it
//!   depends on changes; once a storm is over and the cache
//!   swept, [`memory`] has each thread give back what the storm took.
//!   Unknown MACs are recorded as discovered. Before any of that, the
//!   [`policy`] decides who may fetch what: allow-lists, [`phone_auth`]
//!   (HTTP Digest), and [`scan`] (anti-scanning bans, one guard per
//!   transport, by address and by network). Firmware images
//!   ([`firmware`]) are served as they are, never rendered. [`metrics`]
//!   counts it all for `/metrics`. Whatever expires (bans, nonces, cache
//!   entries) reads the time from a [`clock`], which tests move by hand.
//! - [`catalog`]: phone models as data (`phone-models/*.toml`), path and
//!   User-Agent recognition.
//! - [`render`]: Tera templates (`templates/`) and the view they see;
//!   [`time_zone`] puts the site's daylight-saving rule in that view.
//!   Uploaded templates render in [`sandbox`] workers, child processes
//!   stopped past their render budget.
//! - [`store`]: sled, behind a narrow typed API; [`model`] holds the domain
//!   types it stores (users, devices, keys, settings). It lives in the
//!   [`data_dir`], which only the server's user may read.
//!
//! Administrators use the [`api`] (JSON under `/api/v1/`, guarded by
//! [`auth`]) on a separate listener; the `deskboot` CLI is a client of it.
//! Their weekly operations live in [`templates`] (uploads with history),
//! [`import`] (CSV), [`backup`] (export and restore) and [`audit`]; the
//! long ones tell their [`progress`].
//! [`resync`] sends the SIP NOTIFY that makes a phone fetch its files again.
//! [`server`] wires everything together from a [`config`]; [`tls`] holds
//! the certificate of the optional HTTPS listener, which serves the same
//! router as HTTP; [`client_cert`] reads the MAC a phone's verified client
//! certificate names, which must be its file's.

// Every public item says what it is; CI's clippy -D warnings keeps it so.
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod catalog;
pub mod client_cert;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod firmware;
pub mod import;
pub mod mac;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod phone_auth;
pub mod policy;
pub mod progress;
pub mod provision;
pub mod render;
pub mod render_pool;
pub mod resync;
pub mod sandbox;
pub mod scan;
pub mod server;
pub mod store;
pub mod templates;
pub mod time_zone;
pub mod tls;
pub mod transport;
