//! The words every layer shares and that depend on nothing else: the
//! [`mac`] address, the [`records`] the store keeps (users, devices, keys,
//! settings), `time_zone` rules, the [`transport`] a request came by,
//! [`progress`] reports of long work, the `clock`, and secrets.

pub mod clock;
pub mod mac;
pub mod progress;
pub mod records;
pub(crate) mod secret;
pub(crate) mod time_zone;
pub mod transport;
