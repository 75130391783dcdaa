//! TLS for the phones' HTTPS listener: the certificate and key from PEM
//! files, the CA bundle phones' client certificates are verified against,
//! their reload (on SIGHUP) without dropping a connection, and a
//! self-signed pair for labs (`deskboot cert self-signed`).
//!
//! rustls only, on the ring provider, so TLS 1.2 and 1.3 and nothing older.
//! This module knows nothing about HTTP: the listener itself lives in
//! [`server`](crate::server) and serves the same router as plain HTTP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientCertMode, HttpsConfig};

/// File name of the certificate `deskboot cert self-signed` writes.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key `deskboot cert self-signed` writes.
pub const KEY_FILE: &str = "key.pem";

/// A certificate or key that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{}: no PEM certificate ({reason})", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The key file holds no usable PEM private key.
    #[error("{}: no PEM private key, PKCS#8, PKCS#1 or SEC1 ({reason})", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// rustls refused the pair (e.g. the key is not the certificate's).
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// The underlying error.
        source: rustls::Error,
    },
    /// The client CA bundle cannot be used to verify client certificates.
    #[error("{}: no usable CA certificate for client certificates ({reason})", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// `client_cert = "required"` with nothing to verify certificates against.
    #[error("client_cert = \"required\" needs a client_ca bundle in [https]")]
    RequiredWithoutCa,
    /// A certificate cannot be generated.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Makes ring the process's rustls provider. Every rustls user in the
/// process (axum-server, a reqwest client) then finds the same one instead
/// of panicking or pulling in aws-lc; calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a PEM certificate chain and key and builds the rustls server
/// configuration (TLS 1.2 and 1.3, ALPN http/1.1). With `client_ca`
/// (a PEM bundle), clients may present a certificate, which must chain to
/// one of the bundle's: a bad one fails the handshake, while none at all is
/// let through, so that phones without one still get common files and
/// firmware (whether per-device files need one is decided per request).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: pem_reason(&e),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: pem_reason(&pem::Error::NoItemsFound),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: pem_reason(&e),
    })?;
    let refused = |source| TlsError::Refused {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    // An explicit provider, so the configuration never depends on what
    // another crate installed process-wide.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(refused)?;
    let builder = match client_ca {
        Some(bundle) => {
            let roots = client_roots(bundle, &read(bundle)?)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: bundle.to_path_buf(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(refused)?;
    // HTTP/1.1 only, as the listeners serve it: phones speak nothing newer,
    // and an HTTP/2 connection may sit idle with no request for ever, which
    // hyper has no timer against.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CA certificates of a PEM bundle; every one must be usable, so a
/// typo in the bundle is an error rather than a vendor silently left out.
fn client_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let refused = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(pem_reason(&e).to_string()))?;
    if certificates.is_empty() {
        return Err(refused(pem_reason(&pem::Error::NoItemsFound).to_string()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|e| refused(e.to_string()))?;
    }
    Ok(roots)
}

/// Why a PEM file was refused, in fixed words: the parser's own message can
/// quote a line of the file, and a key file's lines are secret.
fn pem_reason(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::NoItemsFound => "none found",
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::Base64Decode(_) => "bad base64",
        _ => "not valid PEM",
    }
}

/// A certificate in use (phones' HTTPS, or the admin listener's), with the
/// CA bundle client certificates are verified against if any, reloadable
/// from its files while the listener runs; clones share it.
#[derive(Clone)]
pub struct HttpsCert {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_cert_required: bool,
    config: RustlsConfig,
}

impl std::fmt::Debug for HttpsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("client_cert_required", &self.client_cert_required)
            .finish_non_exhaustive()
    }
}

impl HttpsCert {
    /// Loads the certificate and key; an error here keeps the server from starting.
    pub fn load(cert: &Path, key: &Path) -> Result<HttpsCert, TlsError> {
        let config = server_config(cert, key, None)?;
        Ok(HttpsCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: None,
            client_cert_required: false,
            config: RustlsConfig::from_config(Arc::new(config)),
        })
    }

    /// Loads what the phones' `[https]` section names: the certificate, its
    /// key and, if set, the client CA bundle.
    pub fn load_for_phones(https: &HttpsConfig) -> Result<HttpsCert, TlsError> {
        let required = https.client_cert == ClientCertMode::Required;
        if required && https.client_ca.is_none() {
            return Err(TlsError::RequiredWithoutCa);
        }
        let config = server_config(&https.cert, &https.key, https.client_ca.as_deref())?;
        Ok(HttpsCert {
            cert: https.cert.clone(),
            key: https.key.clone(),
            client_ca: https.client_ca.clone(),
            client_cert_required: required,
            config: RustlsConfig::from_config(Arc::new(config)),
        })
    }

    /// Whether per-device files need a verified client certificate
    /// (`client_cert = "required"` with a `client_ca`).
    pub fn client_cert_required(&self) -> bool {
        self.client_cert_required
    }

    /// What axum-server's acceptor reads at every handshake.
    pub fn rustls_config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Reads the files (the client CA bundle too) again and, if they are
    /// good, uses them for every new handshake; open connections keep
    /// theirs. On an error the certificate in use stays.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let (cert, key, client_ca) = (self.cert.clone(), self.key.clone(), self.client_ca.clone());
        let config =
            tokio::task::spawn_blocking(move || server_config(&cert, &key, client_ca.as_deref()))
                .await
                .map_err(|e| TlsError::Read {
                    path: self.cert.clone(),
                    source: std::io::Error::other(e),
                })??;
        self.config.reload_from_config(Arc::new(config));
        Ok(())
    }
}

/// Reloads `cert` at every SIGHUP, forever; a failed reload is logged and
/// the certificate in use stays.
#[cfg(unix)]
pub async fn reload_on_sighup(cert: HttpsCert) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; TLS certificates will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match cert.reload().await {
            Ok(()) => tracing::info!(cert = %cert.cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays")
            }
        }
    }
}

/// A self-signed certificate and its key, as PEM.
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (ECDSA P-256); secret.
    pub key_pem: String,
}

/// Generates a self-signed server certificate for `names` (host names or IP
/// addresses; the first is also the common name).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes a self-signed certificate for `names` to `dir`/[`CERT_FILE`] and
/// `dir`/[`KEY_FILE`] (mode 0600), replacing them; returns both paths.
pub fn write_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let pair = self_signed(names)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    write_atomically(&key, pair.key_pem.as_bytes(), 0o600)?;
    write_atomically(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Writes to a temporary file created with `mode` and renames it over
/// `path`: the key is never readable by others, not even for a moment, and a
/// reload racing the write sees the old file or the new one, never half.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let failed = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    // A temporary file left by an interrupted run would make create_new fail.
    let _ = std::fs::remove_file(&temporary);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    }

    #[test]
    fn a_generated_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_self_signed(dir.path(), &names()).unwrap();
        server_config(&cert, &key, None).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert, _) = write_self_signed(one.path(), &names()).unwrap();
        let (_, other_key) = write_self_signed(two.path(), &names()).unwrap();
        let err = server_config(&cert, &other_key, None).unwrap_err();
        assert!(matches!(err, TlsError::Refused { .. }), "{err}");
    }

    #[test]
    fn a_broken_key_file_is_named_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_self_signed(dir.path(), &names()).unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        let err = server_config(&cert, &key, None).unwrap_err().to_string();
        assert!(err.contains("key.pem"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = server_config(
            &dir.path().join("none.pem"),
            &dir.path().join("k.pem"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("none.pem"), "{err}");
    }

    #[test]
    fn a_client_ca_bundle_must_hold_usable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_self_signed(dir.path(), &names()).unwrap();
        // Any certificate can serve as a trust anchor; this one will do.
        server_config(&cert, &key, Some(&cert)).unwrap();
        let bundle = dir.path().join("phones-ca.pem");
        std::fs::write(&bundle, "no certificate here\n").unwrap();
        let err = server_config(&cert, &key, Some(&bundle)).unwrap_err();
        assert!(matches!(err, TlsError::ClientCa { .. }), "{err}");
        assert!(err.to_string().contains("phones-ca.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = server_config(&cert, &key, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn required_client_certificates_need_a_ca_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_self_signed(dir.path(), &names()).unwrap();
        let mut https = HttpsConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: cert.clone(),
            key,
            client_ca: None,
            client_cert: ClientCertMode::Required,
        };
        let err = HttpsCert::load_for_phones(&https).unwrap_err();
        assert!(matches!(err, TlsError::RequiredWithoutCa), "{err}");
        https.client_ca = Some(cert);
        assert!(
            HttpsCert::load_for_phones(&https)
                .unwrap()
                .client_cert_required()
        );
    }
}
