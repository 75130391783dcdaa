//! What administrators do: the JSON `api` behind [`auth`]'s tokens, its
//! web `ui` for browsers, CSV [`import`], `backup` (export and restore),
//! and `resync` (the SIP NOTIFY that makes a phone fetch its files again).

pub(crate) mod api;
pub mod auth;
pub(crate) mod backup;
pub mod import;
pub(crate) mod resync;
pub(crate) mod ui;
