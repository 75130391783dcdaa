//! Command-line parsing and dispatch; one file per command group.

mod admin;
mod cert;
mod client;
mod device;
mod identify;
mod log_buffer;
mod patch;
mod serve;
mod settings;
mod store;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::AdminClient;

/// deskboot: phone auto-provisioning server.
#[derive(Debug, Parser)]
#[command(name = "deskboot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (phones' HTTP and TFTP, and the admin API).
    Serve(serve::ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage devices (phones).
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Show or change settings: global, a model's or one phone's.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Print the file a phone would get, e.g. `deskboot render 001565aabbcc 001565aabbcc.cfg`.
    Render {
        #[command(flatten)]
        connection: Connection,
        /// The phone's MAC.
        mac: String,
        /// The file name the phone asks for.
        file: String,
    },
    /// Say which vendor, model, firmware and MAC a User-Agent or path means.
    Identify(identify::IdentifyArgs),
    /// Copy (or with --replace, move) a phone's configuration to a new MAC.
    Clone(admin::CloneArgs),
    /// Make a phone, or all of them, fetch their files again or reboot (a
    /// SIP NOTIFY with each vendor's event).
    Resync(admin::ResyncArgs),
    /// Import users and phones from CSV, all or nothing.
    Import(admin::ImportArgs),
    /// Print everything as a JSON backup.
    Export {
        #[command(flatten)]
        connection: Connection,
    },
    /// Restore a JSON backup.
    Restore(admin::RestoreArgs),
    /// Manage uploaded templates.
    #[command(subcommand)]
    Template(admin::TemplateCommand),
    /// Manage named admin tokens (scope read, secrets or write).
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// List phones that asked for their files unprovisioned, and adopt them.
    #[command(subcommand)]
    Discovered(admin::DiscoveredCommand),
    /// List and lift the bans of clients caught scanning for MACs.
    #[command(subcommand)]
    Ban(admin::BanCommand),
    /// Make TLS certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Work on stores directly (no server may run on them): copy a site between sled and PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Render uploaded templates for the server that started it (never by hand).
    #[command(name = deskboot::render::sandbox::WORKER_COMMAND, hide = true)]
    RenderWorker,
}

/// How admin commands reach the server.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The admin API's base URL.
    #[arg(long, env = "DESKBOOT_SERVER", default_value = "http://127.0.0.1:8081")]
    server: String,
    /// The admin token (default: DESKBOOT_ADMIN_TOKEN, else <data>/admin.token).
    #[arg(long, env = "DESKBOOT_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's data directory, to find admin.token.
    #[arg(long, default_value = "deskboot-data")]
    data: PathBuf,
    /// For an https:// --server: trust only this certificate (PEM), e.g. a self-signed one.
    #[arg(long, env = "DESKBOOT_CA")]
    ca: Option<PathBuf>,
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // A render worker needs no runtime: it renders on its main thread.
    if let Command::RenderWorker = cli.command {
        return Ok(deskboot::render::sandbox::serve_worker());
    }
    // Before any reqwest client exists: whenever reqwest is built with
    // rustls (as in the test build), it needs a provider installed.
    deskboot::transport::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // An async worker gives back what a storm freed when it next idles.
        .on_thread_park(deskboot::render::memory::release_if_asked)
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::User(command) => user::run(command).await,
            Command::Device(command) => device::run(command).await,
            Command::Settings(command) => settings::run(command).await,
            Command::Render {
                connection,
                mac,
                file,
            } => {
                let client = AdminClient::new(&connection)?;
                let body = client
                    .get_text(&format!("/api/v1/devices/{mac}/files/{file}"))
                    .await?;
                print!("{body}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Identify(args) => identify::run(args),
            Command::Clone(args) => admin::clone(args).await,
            Command::Resync(args) => admin::resync(args).await,
            Command::Import(args) => admin::import(args).await,
            Command::Export { connection } => admin::export(connection).await,
            Command::Restore(args) => admin::restore(args).await,
            Command::Template(command) => admin::template(command).await,
            Command::Token(command) => admin::token(command).await,
            Command::Discovered(command) => admin::discovered(command).await,
            Command::Ban(command) => admin::ban(command).await,
            Command::Cert(command) => cert::run(command),
            Command::Store(command) => store::run(command).await,
            Command::RenderWorker => Ok(deskboot::render::sandbox::serve_worker()),
        }
    })
}
