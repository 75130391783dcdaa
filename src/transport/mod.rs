//! Transports: each turns its protocol's bytes into a
//! [`provision::Request`](crate::provision::Request), calls the one
//! [`Provisioner`](crate::provision::Provisioner), and writes the answer back.
//! No provisioning logic lives here.

pub mod connections;
pub mod http;
pub mod send_timeout;
pub mod tftp;
