//! Transports: each turns its protocol's bytes into a
//! [`provision::Request`](crate::provision::request::Request), calls the one
//! [`Provisioner`](crate::provision::Provisioner), and writes the answer back.
//! No provisioning logic lives here.

pub(crate) mod connections;
pub(crate) mod http;
pub(crate) mod send_timeout;
pub(crate) mod tftp;
pub mod tls;
