//! Integration tests: the real server on ephemeral ports, a real sled store
//! in a temporary directory, and real HTTP and TFTP clients.

mod common;

mod admin_api;
mod admin_auth;
mod audit_before;
mod browser;
mod browser_admin;
mod browser_device;
mod browser_finish;
mod browser_import;
mod browser_phone;
mod browser_templates;
mod catalog;
mod cli;
mod connections;
mod data_at_rest;
mod digest;
mod disk_full;
mod firmware;
mod golden;
mod https;
mod import_update;
mod layouts;
mod operations;
mod postgres;
mod provisioning;
mod readme;
mod render_budget;
mod resync;
mod scanning;
mod security;
mod store_copy;
mod templates;
mod tftp;
mod tftp_abuse;
mod unknown_models;
mod webui;
mod webui_admin;
mod webui_device;
mod webui_finish;
mod webui_import;
mod webui_links;
mod webui_templates;
