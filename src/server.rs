//! Starting and stopping the server: the store, the catalog, the three
//! listeners (four with HTTPS), and the background writer of sightings.
//!
//! [`Server::bind`] binds everything (port 0 works: tests read the real
//! addresses back) and [`Server::run`] serves until the shutdown future
//! completes, then stops in order: no new TFTP transfers, running ones and
//! HTTP and HTTPS connections drain (a few seconds at most), buffered
//! sightings and the store are flushed, and it returns once the store is
//! closed, so another process (or test) can open it at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum_server::tls_rustls::RustlsAcceptor;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::access::phone_auth::{self, AuthSettings, PhoneAuth, PhoneAuthError};
use crate::admin::api::{self, AdminState};
use crate::admin::auth::{AdminToken, AuthError, Authenticator};
use crate::catalog::{Catalog, CatalogError};
use crate::config::{ClientCertMode, Config};
use crate::domain::clock::Clock;
use crate::provision::firmware::FirmwareDir;
use crate::provision::{Provisioner, SIGHTING_FLUSH_INTERVAL};
use crate::render::pool::RenderPool;
use crate::render::sandbox::Sandbox;
use crate::render::{RenderError, Renderer};
use crate::store::data_dir::{self, DataDirError};
use crate::store::{Store, StoreError, StoreState};
use crate::transport::connections::{ConnectionGate, ConnectionLimits};
use crate::transport::send_timeout::SendTimeout;
use crate::transport::tls::{self, HttpsCert, TlsError};
use crate::transport::{http, tftp};

/// How long running TFTP transfers and open HTTP, HTTPS and admin
/// connections get to finish at shutdown: a service manager waits a few
/// seconds before it kills, and a phone cut off retries (and resumes a
/// firmware download with `Range`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long, after the drain, renders still in flight get to let go of the
/// store, so that the next process can open it.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a TLS handshake may take: a client that never finishes one
/// must not hold a socket (boot storms, slowloris).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created or made private.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A phone-model descriptor is wrong.
    #[error("phone models: {0}")]
    Catalog(#[from] CatalogError),
    /// A template does not compile.
    #[error("templates: {0}")]
    Templates(#[from] RenderError),
    /// Phone authentication cannot be set up.
    #[error("phone authentication: {0}")]
    PhoneAuth(#[from] PhoneAuthError),
    /// The admin token cannot be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A TLS certificate or key (HTTPS, admin) cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The render threads cannot be started.
    #[error("cannot start the render threads: {0}")]
    RenderThreads(std::io::Error),
    /// A listener cannot bind.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener (HTTP, TFTP, ...).
        what: &'static str,
        /// The address it was to listen on.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A listener failed while serving.
    #[error("{what} listener failed: {message}")]
    Serve {
        /// Which listener (HTTP, TFTP, ...).
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// A bound, not yet running, server.
pub struct Server {
    store: Arc<Store>,
    provisioner: Arc<Provisioner>,
    admin_state: Arc<AdminState>,
    listeners: Listeners,
    http_limits: HttpLimits,
}

/// The bound sockets, and the certificates the TLS ones present.
struct Listeners {
    http: TcpListener,
    https: Option<(TcpListener, HttpsCert)>,
    admin: TcpListener,
    admin_cert: Option<HttpsCert>,
    tftp: tftp::TftpServer,
    tftp_state: Arc<tftp::TftpState>,
    addrs: Addresses,
}

/// The addresses the listeners really bound.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Phones' HTTP.
    pub http: SocketAddr,
    /// Phones' HTTPS, when configured.
    pub https: Option<SocketAddr>,
    /// Phones' TFTP.
    pub tftp: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
}

/// The running listeners' tasks.
struct Serving {
    http: JoinHandle<std::io::Result<()>>,
    https: Option<JoinHandle<std::io::Result<()>>>,
    admin: JoinHandle<std::io::Result<()>>,
    tftp: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Makes the data directory private, opens the store, loads models and
    /// templates, and binds the listeners.
    /// `admin_token` is the token from the environment, if any.
    pub async fn bind(config: &Config, admin_token: Option<&str>) -> Result<Server, ServerError> {
        tls::install_crypto_provider();
        data_dir::make_private(&config.data)?;
        let store_url = config.store_url();
        tracing::info!(store = %store_url, "opening the store");
        let store = Arc::new(Store::open_url(&store_url)?);
        let catalog = Arc::new(Catalog::load(config.models_dir.as_deref())?);
        let token = AdminToken::setup(&store, &config.data, admin_token)?;
        let provisioner = Arc::new(provisioner(config, &store, &catalog)?);
        let listeners = Listeners::bind(config, &provisioner).await?;
        let admin_state = Arc::new(AdminState {
            store: store.clone(),
            catalog,
            provisioner: provisioner.clone(),
            auth: Authenticator::new(token)?,
            tftp: listeners.tftp_state.clone(),
            tls: listeners.admin_cert.is_some(),
        });
        let refused = provisioner.metrics().http_connections_refused();
        Ok(Server {
            store,
            provisioner,
            admin_state,
            listeners,
            http_limits: HttpLimits {
                request: Duration::from_secs(config.http_request_timeout_secs.get()),
                send: Duration::from_secs(config.http_send_timeout_secs.get()),
                connections: ConnectionLimits {
                    max: config.http_max_connections.get(),
                    per_source: config.http_max_connections_per_source.get(),
                },
                refused,
            },
        })
    }

    /// The addresses the listeners bound.
    pub fn addresses(&self) -> Addresses {
        self.listeners.addrs
    }

    /// The HTTPS certificate in use, to reload it (on SIGHUP); none without HTTPS.
    pub fn https_cert(&self) -> Option<HttpsCert> {
        self.listeners.https.as_ref().map(|(_, cert)| cert.clone())
    }

    /// The admin listener's certificate, to reload it; none when it is plain HTTP.
    pub fn admin_cert(&self) -> Option<HttpsCert> {
        self.listeners.admin_cert.clone()
    }

    /// Serves until `shutdown` completes, then stops gracefully: both
    /// transports drain within one deadline, what phones did is saved, and
    /// the store is closed before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        log_listening(self.listeners.addrs);
        let Server {
            store,
            provisioner,
            admin_state,
            listeners,
            http_limits,
        } = self;
        let tftp_state = listeners.tftp_state.clone();
        // One control drains every HTTP listener at shutdown.
        let control = axum_server::Control::new();
        let serving = listeners.serve(&provisioner, &admin_state, http_limits, &control);
        let (stop_flusher, flusher_stopped) = oneshot::channel::<()>();
        let flusher = tokio::spawn(flush_sightings_until(
            provisioner.clone(),
            store.clone(),
            admin_state.clone(),
            async move {
                let _ = flusher_stopped.await;
            },
        ));

        shutdown.await;
        tracing::info!("shutting down");
        let results = serving.drain(&tftp_state, &control).await;
        let _ = stop_flusher.send(());
        let _ = flusher.await;
        if let Err(e) = provisioner.flush_sightings() {
            tracing::error!(error = %e, "could not save the last sightings");
        }
        if let Err(e) = admin_state.auth.uses().persist(&store) {
            tracing::error!(error = %e, "could not save when tokens were last used");
        }
        store.flush().await?;
        drop((provisioner, admin_state, tftp_state));
        close_store(store).await;
        tracing::info!("stopped");
        first_failure(results)
    }
}

/// The provisioner a server with `config` would build over `store`, to
/// render files without serving them (`deskboot store copy` compares the
/// renders of two stores so).
pub fn provisioner_over(config: &Config, store: Arc<Store>) -> Result<Provisioner, ServerError> {
    let catalog = Arc::new(Catalog::load(config.models_dir.as_deref())?);
    provisioner(config, &store, &catalog)
}

/// The provisioner for `config`: the policy it resolves, phones' HTTP
/// authentication, the templates with the uploads in the store.
fn provisioner(
    config: &Config,
    store: &Arc<Store>,
    catalog: &Arc<Catalog>,
) -> Result<Provisioner, ServerError> {
    let sandbox = match &config.render_worker {
        Some(program) => Sandbox::new(program),
        None => Sandbox::this_binary(),
    };
    let renderer = with_stored_uploads(
        store,
        &Renderer::load(catalog, config.templates_dir.as_deref(), sandbox)?,
    )?;
    let policy = config.provisioning.clone().resolved(
        config
            .https
            .as_ref()
            .is_some_and(|https| https.client_cert == ClientCertMode::Required),
    );
    if policy.tftp_secrets_everywhere() {
        tracing::warn!(
            "SIP passwords go over TFTP, in clear, to every network: set tftp_secrets_allow \
             to the phones' networks, or to [] and give phones HTTPS"
        );
    }
    // The machine's time; unit tests hand these parts a manual clock.
    let clock = Clock::System;
    let phone_auth = PhoneAuth::load(
        phone_auth::server_key(store, &config.data)?,
        AuthSettings {
            mode: policy.http_auth,
            shared_user: policy.http_auth_user.as_deref(),
            shared_password: policy.http_auth_password.as_deref(),
            md5: policy.http_auth_md5,
        },
        clock.clone(),
    )?;
    Ok(Provisioner::new(
        store.clone(),
        catalog.clone(),
        renderer,
        FirmwareDir::new(config.data.join("firmware")),
        policy,
        phone_auth,
        RenderPool::per_core().map_err(ServerError::RenderThreads)?,
        clock,
    ))
}

impl Listeners {
    /// Binds every listener `config` names, with their certificates.
    async fn bind(
        config: &Config,
        provisioner: &Arc<Provisioner>,
    ) -> Result<Listeners, ServerError> {
        let bind_tcp = |what, addr| async move {
            listen(addr).map_err(|source| ServerError::Bind { what, addr, source })
        };
        let http = bind_tcp("HTTP", config.http).await?;
        let https = match &config.https {
            Some(https) => {
                let cert = HttpsCert::load_for_phones(https)?;
                Some((bind_tcp("HTTPS", https.listen).await?, cert))
            }
            None => None,
        };
        let admin = bind_tcp("admin", config.admin).await?;
        let admin_cert = match &config.admin_tls {
            Some(files) => Some(HttpsCert::load(&files.cert, &files.key)?),
            None => None,
        };
        let tftp_state = Arc::new(tftp::TftpState::new(config.provisioning.tftp_max_transfers));
        let tftp = tftp::bind(config.tftp, provisioner.clone(), tftp_state.clone())
            .await
            .map_err(|source| ServerError::Bind {
                what: "TFTP",
                addr: config.tftp,
                source,
            })?;
        let local = |r: std::io::Result<SocketAddr>, what, addr| {
            r.map_err(|source| ServerError::Bind { what, addr, source })
        };
        let addrs = Addresses {
            http: local(http.local_addr(), "HTTP", config.http)?,
            https: match (&https, &config.https) {
                (Some((listener, _)), Some(c)) => {
                    Some(local(listener.local_addr(), "HTTPS", c.listen)?)
                }
                _ => None,
            },
            admin: local(admin.local_addr(), "admin", config.admin)?,
            tftp: local(tftp.listen_addr(), "TFTP", config.tftp)?,
        };
        Ok(Listeners {
            http,
            https,
            admin,
            admin_cert,
            tftp,
            tftp_state,
            addrs,
        })
    }

    /// Starts serving on every listener.
    fn serve(
        self,
        provisioner: &Arc<Provisioner>,
        admin_state: &Arc<AdminState>,
        timeouts: HttpLimits,
        control: &axum_server::Control,
    ) -> Serving {
        let http_app =
            http::router(provisioner.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let http = tokio::spawn(http_server(self.http, &timeouts, control).serve(http_app));
        // HTTPS serves the very router HTTP does: same provisioner, same
        // policy, and its requests count as HTTP; only client certificates
        // add a check.
        let https = self.https.map(|(listener, cert)| {
            let app = http::https_router(provisioner.clone(), cert.client_cert_required())
                .into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(tls_server(listener, &cert, &timeouts, control).serve(app))
        });
        // Wrong admin tokens are counted by address.
        let admin_app =
            api::router(admin_state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let admin = match &self.admin_cert {
            Some(cert) => {
                tokio::spawn(tls_server(self.admin, cert, &timeouts, control).serve(admin_app))
            }
            None => tokio::spawn(http_server(self.admin, &timeouts, control).serve(admin_app)),
        };
        let tftp = tokio::spawn(self.tftp.serve());
        Serving {
            http,
            https,
            admin,
            tftp,
        }
    }
}

impl Serving {
    /// Stops taking requests and lets those in flight finish, both
    /// transports within one deadline; each HTTP listener's outcome.
    async fn drain(
        self,
        tftp_state: &tftp::TftpState,
        control: &axum_server::Control,
    ) -> [(&'static str, ServeResult); 3] {
        tftp_state.close();
        control.graceful_shutdown(Some(DRAIN_TIMEOUT));
        let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while tftp_state.active() > 0 && tokio::time::Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.tftp.abort();
        // An aborted task lets go of what it holds once it is dropped.
        let _ = self.tftp.await;
        let http = self.http.await;
        let https = match self.https {
            Some(task) => task.await,
            None => Ok(Ok(())),
        };
        let admin = self.admin.await;
        [("HTTP", http), ("HTTPS", https), ("admin", admin)]
    }
}

/// How an HTTP listener's task ended.
type ServeResult = Result<std::io::Result<()>, tokio::task::JoinError>;

/// The first listener that failed, as the server's error.
fn first_failure(results: [(&'static str, ServeResult); 3]) -> Result<(), ServerError> {
    for (what, result) in results {
        let message = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        return Err(ServerError::Serve { what, message });
    }
    Ok(())
}

/// Says where the server listens.
fn log_listening(addrs: Addresses) {
    match addrs.https {
        Some(https) => {
            tracing::info!(http = %addrs.http, https = %https, tftp = %addrs.tftp, admin = %addrs.admin, "deskboot listening")
        }
        None => {
            tracing::info!(http = %addrs.http, tftp = %addrs.tftp, admin = %addrs.admin, "deskboot listening")
        }
    }
}

/// How long HTTP clients get (to send a request head, to read on), how
/// many connections each listener holds, and where it counts those it
/// refuses.
#[derive(Debug, Clone)]
struct HttpLimits {
    request: Duration,
    send: Duration,
    connections: ConnectionLimits,
    refused: Arc<AtomicU64>,
}

/// Waits until `store` is the last handle on the store, then drops it,
/// which unlocks its files for the next process; gives up (and says so)
/// after [`STORE_CLOSE_TIMEOUT`].
async fn close_store(store: Arc<Store>) {
    let deadline = tokio::time::Instant::now() + STORE_CLOSE_TIMEOUT;
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let others = Arc::strong_count(&store) - 1;
    if others > 0 {
        tracing::warn!(
            handles = others,
            "the store is still in use at exit: it is flushed, but stays locked until they end"
        );
    }
}

/// An axum-server on a bound listener, stopped through `control`, speaking
/// HTTP/1.1 only (see [`tls::server_config`]). A connection is closed when
/// it sends no complete request head in time (the first, or the next on a
/// kept-alive connection: hyper's header timeout), or when its answer
/// cannot be written for too long ([`SendTimeout`]); it holds as many
/// connections as its [`ConnectionGate`] lets in.
fn http_server(
    listener: TcpListener,
    timeouts: &HttpLimits,
    control: &axum_server::Control,
) -> axum_server::Server<SocketAddr, ConnectionGate<SendTimeout>> {
    let mut server = axum_server::Server::from_listener(listener)
        .http1_only()
        .acceptor(ConnectionGate::new(
            timeouts.connections,
            timeouts.refused.clone(),
            SendTimeout(timeouts.send),
        ))
        .handle(axum_server::Handle::with_control(control.clone()));
    server
        .http_builder()
        .http1()
        .header_read_timeout(timeouts.request);
    server
}

/// [`http_server`] over rustls; a handshake gets no longer than a request head.
fn tls_server(
    listener: TcpListener,
    cert: &HttpsCert,
    timeouts: &HttpLimits,
    control: &axum_server::Control,
) -> axum_server::Server<SocketAddr, RustlsAcceptor<ConnectionGate<SendTimeout>>> {
    http_server(listener, timeouts, control).map(|gate| {
        RustlsAcceptor::new(cert.rustls_config())
            .handshake_timeout(timeouts.request.min(TLS_HANDSHAKE_TIMEOUT))
            .acceptor(gate)
    })
}

/// The built-in templates plus every active upload that still compiles. An
/// upload that no longer does (a built-in template it includes changed) is
/// left out and logged: it must not keep every other phone from booting.
fn with_stored_uploads(store: &Store, renderer: &Renderer) -> Result<Renderer, ServerError> {
    let stored = store.templates()?;
    let uploads: Vec<(&str, &str)> = stored
        .iter()
        .filter_map(|(key, h)| h.current().map(|v| (key.as_str(), v.source.as_str())))
        .collect();
    if let Ok(all) = renderer.with_uploads(uploads.iter().copied()) {
        return Ok(all);
    }
    let mut good: Vec<(&str, &str)> = Vec::new();
    for upload in uploads {
        let mut trial = good.clone();
        trial.push(upload);
        match renderer.with_uploads(trial) {
            Ok(_) => good.push(upload),
            Err(e) => {
                tracing::error!(template = upload.0, error = %e, "uploaded template left out")
            }
        }
    }
    Ok(renderer.with_uploads(good)?)
}

/// Loads the uploaded templates again once another node sharing the
/// store changed anything (its uploads reach this node's renderer so), and
/// notes after which change they were loaded.
fn reload_uploads_after_outside_changes(
    provisioner: &Provisioner,
    store: &Store,
    loaded: &AtomicU64,
) {
    let outside = store.outside_changes();
    if outside == loaded.load(Ordering::SeqCst) {
        return;
    }
    match with_stored_uploads(store, &provisioner.renderer()) {
        Ok(renderer) => {
            provisioner.set_renderer(renderer);
            loaded.store(outside, Ordering::SeqCst);
        }
        Err(e) => tracing::error!(error = %e, "cannot load other nodes' uploaded templates"),
    }
}

/// How many connections may wait to be accepted: a boot storm opens a
/// thousand at once, more than tokio's default backlog of 1,024 leaves room
/// for (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// A TCP listener with a backlog sized for boot storms.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Every [`SIGHTING_FLUSH_INTERVAL`]: writes the buffered sightings and
/// admin tokens' uses ([`crate::admin::auth::TokenUses`]), and flushes the store to disk, which sled no longer does on its own
/// ([`Store::open`]); administrators' changes are flushed by the store as
/// they are made ([`Store::change`]). While the store takes no changes (a
/// full disk), each tick asks it to recover instead ([`Store::recover`]).
async fn flush_sightings_until(
    provisioner: Arc<Provisioner>,
    store: Arc<Store>,
    admin: Arc<AdminState>,
    stop: impl Future<Output = ()>,
) {
    /// Prune discovered MACs once every this many flushes (about a minute).
    /// The render cache is asked at every flush: it sweeps when a sweep is
    /// due by its clock.
    const PRUNE_EVERY: u32 = 30;
    let mut tick = tokio::time::interval(SIGHTING_FLUSH_INTERVAL);
    let mut ticks = 0u32;
    // Other nodes' changes the uploaded templates were last loaded after.
    let templates_loaded = Arc::new(AtomicU64::new(store.outside_changes()));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                let provisioner = provisioner.clone();
                let store = store.clone();
                let templates_loaded = templates_loaded.clone();
                let admin = admin.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let prune = ticks.is_multiple_of(PRUNE_EVERY);
                    provisioner.sweep_render_cache();
                    reload_uploads_after_outside_changes(&provisioner, &store, &templates_loaded);
                    // While the store takes no changes, sightings wait in
                    // memory (one per phone) for the disk to have room.
                    if store.recover() != StoreState::Ok {
                        return Ok(());
                    }
                    provisioner.flush_sightings()?;
                    admin.auth.uses().persist(&store)?;
                    if prune {
                        provisioner.prune_discovered()?;
                    }
                    store.flush_blocking()
                })
                .await;
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "could not save sightings");
                }
            }
        }
    }
}
