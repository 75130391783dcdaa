//! Integration tests: the real server on ephemeral ports, a real sled store
//! in a temporary directory, and real HTTP and TFTP clients.

mod common;

mod admin_api;
mod cli;
mod connections;
mod firmware;
mod golden;
mod https;
mod operations;
mod provisioning;
mod readme;
mod render_budget;
mod resync;
mod security;
mod templates;
mod tftp;
