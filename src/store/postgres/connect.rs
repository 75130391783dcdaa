//! From a `postgres://` URL to what a connection needs: the driver's
//! config and, unless the database is on this machine, TLS.
//!
//! TLS always verifies the server's certificate and name, against the
//! `sslrootcert=<PEM file>` the URL names or the system's roots: a
//! `sslmode=require` that accepted any certificate would hand the
//! password to whoever sits between deskboot and its database. Without an
//! `sslmode`, a database on loopback or a unix socket is reached in plain,
//! any other over TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take: a database that does not
/// answer must not hold a phone's request for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle time after which TCP asks whether the database is still there, so
/// a connection to a vanished host is noticed without a request on it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// A URL that does not open a database.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The driver refused the URL.
    #[error("the store URL {url}: {message}")]
    Url {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The CA file the URL names cannot be used.
    #[error("sslrootcert {path}: {message}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
    /// TLS cannot be set up.
    #[error("TLS to the database: {0}")]
    Tls(#[from] rustls::Error),
}

/// What connecting to the database takes.
#[derive(Clone)]
pub(crate) struct Target {
    /// The driver's config (its `Debug` masks the password).
    pub config: tokio_postgres::Config,
    /// TLS, or none for plain.
    pub tls: Option<MakeRustlsConnect>,
}

impl Target {
    /// Reads a `postgres://` URL, with deskboot's `sslmode` values
    /// (`disable`, `require`, `verify-full`) and `sslrootcert`.
    pub fn from_url(url: &str) -> Result<Target, ConnectError> {
        let refused = |message: String| ConnectError::Url {
            url: super::super::url::redact(url),
            message,
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("sslmode", value)) => mode = Some(value.to_string()),
                Some(("sslrootcert", value)) => {
                    let path = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                    root_cert = Some(PathBuf::from(path.as_ref()));
                }
                _ => kept.push(param),
            }
        }
        let driver_url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config =
            driver_url.parse().map_err(|e| refused(format!("{e}")))?;
        let tls = match mode.as_deref() {
            Some("disable") => false,
            Some("require" | "verify-ca" | "verify-full") => true,
            Some(other) => {
                return Err(refused(format!(
                    "sslmode {other}: give disable, require or verify-full"
                )));
            }
            None => !config.get_hosts().iter().all(is_local),
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.application_name("deskboot");
        config.ssl_mode(if tls {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        let tls = tls.then(|| rustls_connector(root_cert)).transpose()?;
        Ok(Target { config, tls })
    }
}

/// Whether a host is this machine: loopback or a unix socket.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    }
}

/// A verifying TLS connector: roots from `root_cert`, or the system's.
fn rustls_connector(root_cert: Option<PathBuf>) -> Result<MakeRustlsConnect, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let refused = |message: String| ConnectError::RootCert {
                path: path.clone(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| refused(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(refused("no usable CA certificate in it".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_asked_for_unless_the_database_is_local() {
        let local = Target::from_url("postgres://deskboot@127.0.0.1:5432/deskboot").unwrap();
        assert!(local.tls.is_none());
        let remote = Target::from_url("postgres://deskboot@db.example.com/deskboot").unwrap();
        assert!(remote.tls.is_some());
        let plain = Target::from_url("postgres://deskboot@db.example.com/deskboot?sslmode=disable")
            .unwrap();
        assert!(plain.tls.is_none());
        let verified =
            Target::from_url("postgres://u@localhost/d?sslmode=verify-full&connect_timeout=5")
                .unwrap();
        assert!(verified.tls.is_some());
        assert_eq!(
            verified.config.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
    }

    #[test]
    fn a_refused_url_does_not_show_its_password() {
        let Err(err) = Target::from_url("postgres://u:hunter2@db/d?sslmode=sometimes") else {
            panic!("an unknown sslmode is refused");
        };
        let shown = err.to_string();
        assert!(
            shown.contains("sometimes") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
