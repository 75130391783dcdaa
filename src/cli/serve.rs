//! `deskboot serve`: run the server until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use deskboot::config::{ClientCertMode, Config, HttpsConfig, TlsFiles};
use deskboot::server::Server;
use deskboot::store::StoreUrl;
use tracing_subscriber::EnvFilter;

use super::log_buffer::LogBuffer;

/// Flags of `deskboot serve`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML config file (keys: data, http, tftp, admin, models_dir, templates_dir, [store], [https], [admin_tls]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./deskboot-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The store: sled:<dir> or postgres://user@host/database [default: sled:<data>/store].
    #[arg(long, env = "DESKBOOT_STORE", hide_env_values = true)]
    store: Option<StoreUrl>,
    /// Phones' HTTP address [default: 0.0.0.0:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Phones' HTTPS address, e.g. 0.0.0.0:8443 [default: none]; needs --cert and --key.
    #[arg(long)]
    https: Option<SocketAddr>,
    /// HTTPS certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// HTTPS private key (PEM); reloaded on SIGHUP.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Serve the admin API over TLS with the HTTPS certificate (unless [admin_tls] names one).
    #[arg(long)]
    admin_tls: bool,
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
    #[cfg(unix)]
    keep_new_files_private();
    let log = LogBuffer::start();
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("DESKBOOT_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sled=warn")),
        )
        .with_writer(Arc::clone(&log))
        .init();
    let served = serve(args).await;
    log.flush();
    served
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
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
    config.store.url = args.store.or(config.store.url);
    config.models_dir = args.models_dir.or(config.models_dir);
    config.templates_dir = args.templates_dir.or(config.templates_dir);
    config.https = https_config(config.https, args.https, args.cert, args.key)?;
    if args.admin_tls && config.admin_tls.is_none() {
        let Some(https) = &config.https else {
            bail!(
                "--admin-tls reuses the HTTPS certificate: give --https, --cert and --key, or an [admin_tls] section"
            );
        };
        config.admin_tls = Some(TlsFiles {
            cert: https.cert.clone(),
            key: https.key.clone(),
        });
    }

    #[cfg(unix)]
    raise_open_files_limit(&mut config);
    let server = Server::bind(&config, args.admin_token.as_deref()).await?;
    #[cfg(unix)]
    for cert in [server.https_cert(), server.admin_cert()]
        .into_iter()
        .flatten()
    {
        tokio::spawn(deskboot::transport::tls::reload_on_sighup(cert));
    }
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Has every file and directory the server creates readable by its user
/// alone, whatever umask it was started with (under 022 the store's files
/// would be 0644, and they hold SIP passwords). sled creates files long
/// after start (its snapshots), which no chmod at start would reach.
#[cfg(unix)]
fn keep_new_files_private() {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::S_IRWXG | Mode::S_IRWXO);
}

/// Lets the server hold as many sockets as the system allows. Each TFTP
/// transfer and each HTTP connection is a file descriptor, and the soft
/// limit a process starts with is often 1,024 (a shell's, systemd's
/// default), the hard one far higher: a storm of more phones than that at
/// once would have its transfers refused. Go's runtime does the same.
#[cfg(unix)]
fn raise_open_files_limit(config: &mut Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "open files limit raised");
                hard
            }
            Err(e) => {
                tracing::warn!(limit = soft, error = %e, "cannot raise the open files limit");
                soft
            }
        }
    } else {
        soft
    };
    fit_connections_in(config, limit);
    // A transfer socket each, and as many HTTP connections again.
    let storm = 2 * config.provisioning.tftp_max_transfers as u64;
    if limit < storm {
        tracing::warn!(
            limit,
            tftp_max_transfers = config.provisioning.tftp_max_transfers,
            "the open files limit is low for a boot storm: raise it (LimitNOFILE= in a systemd unit, ulimit -n)"
        );
    }
}

/// Lowers each HTTP listener's connection cap so that, all full, they hold
/// at most half of `open_files`: the rest stays for TFTP transfers and the
/// store, and a flood of idle connections meets the cap, not the limit.
#[cfg(unix)]
fn fit_connections_in(config: &mut Config, open_files: u64) {
    let listeners = 2 + u64::from(config.https.is_some());
    let fits = usize::try_from(open_files / 2 / listeners).unwrap_or(usize::MAX);
    let Some(fits) = std::num::NonZeroUsize::new(fits) else {
        return;
    };
    if fits < config.http_max_connections {
        tracing::info!(
            from = config.http_max_connections,
            to = fits,
            open_files,
            "connections per HTTP listener lowered to fit the open files limit"
        );
        config.http_max_connections = fits;
    }
}

/// The `[https]` section with the flags applied: each flag overrides its key,
/// and flags alone must name all three.
fn https_config(
    file: Option<HttpsConfig>,
    listen: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<HttpsConfig>> {
    match (file, listen, cert, key) {
        (None, None, None, None) => Ok(None),
        (Some(file), listen, cert, key) => Ok(Some(HttpsConfig {
            listen: listen.unwrap_or(file.listen),
            cert: cert.unwrap_or(file.cert),
            key: key.unwrap_or(file.key),
            ..file
        })),
        // Client certificates are set in the config file only.
        (None, Some(listen), Some(cert), Some(key)) => Ok(Some(HttpsConfig {
            listen,
            cert,
            key,
            client_ca: None,
            client_cert: ClientCertMode::Optional,
        })),
        (None, None, _, _) => bail!("--cert and --key need --https ADDR (or an [https] section)"),
        (None, Some(_), _, _) => bail!("--https needs both --cert FILE and --key FILE"),
    }
}

/// Completes at the first SIGINT or SIGTERM.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed here, before the server says it listens:
    // a SIGTERM right after that line must stop it gracefully, not kill it.
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Ok(mut terminate) = terminate {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = interrupt.await;
    }
}
