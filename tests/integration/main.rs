//! Integration tests: the real server on ephemeral ports, a real sled store
//! in a temporary directory, and real HTTP and TFTP clients.

mod common;

mod admin_api;
mod cli;
mod connections;
mod data_at_rest;
mod firmware;
mod golden;
mod https;
mod operations;
mod provisioning;
mod readme;
mod resync;
mod security;
mod templates;
mod tftp;
