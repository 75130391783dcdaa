//! `deskboot serve`: run the server until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use deskboot::config::Config;
use deskboot::server::Server;
use tracing_subscriber::EnvFilter;

/// Flags of `deskboot serve`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML config file (keys: data, http, tftp, admin, models_dir, templates_dir).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./deskboot-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Phones' HTTP address [default: 0.0.0.0:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Phones' TFTP address [default: 0.0.0.0:6969].
    #[arg(long)]
    tftp: Option<SocketAddr>,
    /// Admin API address [default: 127.0.0.1:8081].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Extra phone-model descriptors.
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Extra templates.
    #[arg(long)]
    templates_dir: Option<PathBuf>,
    /// The admin token; generated into <data>/admin.token when unset.
    #[arg(long, env = "DESKBOOT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("DESKBOOT_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,async_tftp=warn,sled=warn")),
        )
        .init();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let overrides = [
        (args.http, &mut config.http),
        (args.tftp, &mut config.tftp),
        (args.admin, &mut config.admin),
    ];
    for (flag, field) in overrides {
        if let Some(addr) = flag {
            *field = addr;
        }
    }
    if let Some(data) = args.data {
        config.data = data;
    }
    config.models_dir = args.models_dir.or(config.models_dir);
    config.templates_dir = args.templates_dir.or(config.templates_dir);

    let server = Server::bind(&config, args.admin_token.as_deref()).await?;
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
