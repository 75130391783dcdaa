//! Server configuration: defaults, overridden by a TOML file, overridden by
//! command-line flags.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::access::policy::Policy;
use crate::store::StoreUrl;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Where the server listens and keeps its data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: the store, the generated admin token.
    pub data: PathBuf,
    /// Phones' HTTP listener.
    pub http: SocketAddr,
    /// Phones' TFTP listener.
    pub tftp: SocketAddr,
    /// Admin API listener; keep it on loopback or a management network.
    pub admin: SocketAddr,
    /// Extra phone-model descriptors, replacing built-in ones of the same file name.
    pub models_dir: Option<PathBuf>,
    /// Extra templates, replacing built-in ones of the same name.
    pub templates_dir: Option<PathBuf>,
    /// Who may fetch what (`[provisioning]`).
    pub provisioning: Policy,
    /// Where the store lives (`[store]`); sled in the data directory by default.
    pub store: StoreConfig,
    /// Phones' HTTPS listener (`[https]`); none unless configured.
    pub https: Option<HttpsConfig>,
    /// The admin API over TLS (`[admin_tls]`); plain HTTP unless configured.
    pub admin_tls: Option<TlsFiles>,
    /// Seconds an HTTP, HTTPS or admin client gets to send a request head:
    /// the first after connecting, or the next on a kept-alive connection,
    /// which is closed once idle that long.
    pub http_request_timeout_secs: NonZeroU64,
    /// Seconds an HTTP, HTTPS or admin client may leave its answer unread
    /// before its connection is closed.
    pub http_send_timeout_secs: NonZeroU64,
    /// The most connections each HTTP, HTTPS or admin listener holds at
    /// once; when full, the quietest gives way. Lowered at start to what
    /// the open-files limit allows.
    pub http_max_connections: NonZeroUsize,
    /// The most connections one address holds on a listener (the phones
    /// behind a NAT share theirs); more are closed at once.
    pub http_max_connections_per_source: NonZeroUsize,
    /// The deskboot binary that renders uploaded templates as a child
    /// process; the running one when unset. Not a config-file key: a
    /// program that runs the server as a library (a test) sets it.
    #[serde(skip)]
    pub render_worker: Option<PathBuf>,
}

/// The `[store]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled:<dir>` or `postgres://user@host/database`; none: sled in
    /// `<data>/store`.
    pub url: Option<StoreUrl>,
}

/// A certificate chain (PEM, leaf first) and its private key (PEM).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The `[https]` section: where phones' HTTPS listens and its PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// The address, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM bundle) that phones' client certificates must
    /// chain to, e.g. the vendors' factory CAs; none: no client certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether per-device files need a verified client certificate; only
    /// meaningful with `client_ca`.
    #[serde(default)]
    pub client_cert: ClientCertMode,
}

/// `client_cert` in `[https]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// A phone may present no certificate; one it presents must verify and
    /// name the file's MAC.
    #[default]
    Optional,
    /// Per-device files need a verified certificate naming their MAC;
    /// common files and firmware stay open.
    Required,
}

/// A request head is one packet: 10 s covers a few lost ones, and frees a
/// connection a phone kept alive after its last file soon enough that a
/// storm of such phones does not pile them up (14 KiB each).
const DEFAULT_HTTP_REQUEST_TIMEOUT_SECS: NonZeroU64 = NonZeroU64::new(10).unwrap();

/// A phone may pause reading a firmware image while it writes flash.
const DEFAULT_HTTP_SEND_TIMEOUT_SECS: NonZeroU64 = NonZeroU64::new(60).unwrap();

/// A storm of 1,000 phones at once holds about 1,000 (BENCHMARKS.md).
const DEFAULT_HTTP_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// A phone holds one connection, and a site's phones may all boot at once
/// behind one NAT address (a power cut): a quarter of the listener, so one
/// address alone cannot take it, while a full listener's quietest
/// connection gives way whoever holds it.
const DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("deskboot-data"),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tftp: SocketAddr::from(([0, 0, 0, 0], 6969)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
            models_dir: None,
            templates_dir: None,
            provisioning: Policy::default(),
            store: StoreConfig::default(),
            https: None,
            admin_tls: None,
            http_request_timeout_secs: DEFAULT_HTTP_REQUEST_TIMEOUT_SECS,
            http_send_timeout_secs: DEFAULT_HTTP_SEND_TIMEOUT_SECS,
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            http_max_connections_per_source: DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE,
            render_worker: None,
        }
    }
}

impl Config {
    /// Reads a TOML config file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Where sled keeps its files by default.
    pub fn store_dir(&self) -> PathBuf {
        self.data.join("store")
    }

    /// Where the store lives: `[store] url`, or sled in the data directory.
    pub fn store_url(&self) -> StoreUrl {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| StoreUrl::Sled(self.store_dir()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `toml` read as a config file from disk, as `serve --config` reads it.
    fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskboot.toml");
        std::fs::write(&path, toml).unwrap();
        Config::from_file(&path)
    }

    fn refusal(toml: &str) -> String {
        from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let config = from_toml("http = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(config.http.port(), 9000);
        assert_eq!(config.tftp, Config::default().tftp);
    }

    #[test]
    fn https_is_off_unless_its_section_is_there() {
        let config = from_toml("http = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(config.https, None);
        let https = from_toml(
            "[https]\nlisten = \"0.0.0.0:8443\"\ncert = \"tls/fullchain.pem\"\nkey = \"tls/key.pem\"\n",
        )
        .unwrap()
        .https
        .unwrap();
        assert_eq!(https.listen.port(), 8443);
        assert_eq!(https.key, PathBuf::from("tls/key.pem"));
        assert_eq!(https.client_ca, None);
        assert_eq!(https.client_cert, ClientCertMode::Optional);
    }

    #[test]
    fn client_certificates_are_configured_in_the_https_section() {
        let section = "[https]\nlisten = \"0.0.0.0:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"phones-ca.pem\"\n";
        let https = from_toml(section).unwrap().https.unwrap();
        assert_eq!(https.client_ca, Some(PathBuf::from("phones-ca.pem")));
        assert_eq!(https.client_cert, ClientCertMode::Optional);
        let required = format!("{section}client_cert = \"required\"\n");
        let https = from_toml(&required).unwrap().https.unwrap();
        assert_eq!(https.client_cert, ClientCertMode::Required);
        let err = refusal(&format!("{section}client_cert = \"always\"\n"));
        assert!(err.contains("always"), "{err}");
    }

    #[test]
    fn an_http_timeout_of_zero_is_refused() {
        let config = from_toml("http_send_timeout_secs = 5\n").unwrap();
        assert_eq!(config.http_send_timeout_secs.get(), 5);
        assert_eq!(config.http_request_timeout_secs.get(), 10);
        for key in ["http_request_timeout_secs", "http_send_timeout_secs"] {
            let err = refusal(&format!("{key} = 0\n"));
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_admin_listener_is_tls_only_with_its_section() {
        let config = from_toml("[admin_tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\n").unwrap();
        assert_eq!(config.admin_tls.unwrap().cert, PathBuf::from("a.pem"));
        assert_eq!(Config::default().admin_tls, None);
    }

    #[test]
    fn the_store_is_sled_in_the_data_directory_unless_a_url_names_another() {
        let config = from_toml("data = \"/var/lib/deskboot\"\n").unwrap();
        assert_eq!(
            config.store_url(),
            StoreUrl::Sled("/var/lib/deskboot/store".into())
        );
        let url = "postgres://deskboot:pw@db.example.com/deskboot";
        let config = from_toml(&format!("[store]\nurl = \"{url}\"\n")).unwrap();
        assert_eq!(config.store_url(), StoreUrl::Postgres(url.into()));
        assert!(!format!("{config:?}").contains(":pw@"));
        let err = refusal("[store]\nurl = \"mysql://db/deskboot\"\n");
        assert!(err.contains("mysql"), "{err}");
    }

    #[test]
    fn a_misspelt_key_is_named() {
        let err = refusal("htp = \"127.0.0.1:9000\"\n");
        assert!(err.contains("htp"), "{err}");
    }
}
