//! Starting a server for a test, and talking to it as an administrator and
//! as a phone.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use deskboot::access::policy::Policy;
use deskboot::config::{ClientCertMode, Config, HttpsConfig};
use deskboot::server::{Addresses, Server};
use deskboot::transport::tls::HttpsCert;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token every test server uses.
pub const TOKEN: &str = "test-admin-token";

/// A running server with its own data directory.
pub struct TestServer {
    pub addrs: Addresses,
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dir: Option<TempDir>,
    http: reqwest::Client,
    /// The HTTPS certificate, when the server has HTTPS: what SIGHUP reloads.
    pub https_cert: Option<HttpsCert>,
}

impl TestServer {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_path_buf();
        let mut server = TestServer::start_in(&data).await;
        server.dir = Some(dir);
        server
    }

    /// Starts a server on an existing data directory (kept by the caller).
    pub async fn start_in(data: &Path) -> TestServer {
        TestServer::start_configured(data, |_| {}).await
    }

    /// Starts a server on a fresh data directory with a provisioning policy.
    pub async fn start_with(policy: Policy) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_path_buf();
        let mut server = TestServer::start_configured(&data, |c| c.provisioning = policy).await;
        server.dir = Some(dir);
        server
    }

    /// Starts a server on a fresh data directory with its store at `url`
    /// (e.g. a PostgreSQL database other test servers share).
    pub async fn start_on_store(url: &str) -> TestServer {
        TestServer::start_on_store_with(url, Policy::default()).await
    }

    /// [`TestServer::start_on_store`], with a provisioning policy.
    pub async fn start_on_store_with(url: &str, policy: Policy) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = deskboot::store::StoreUrl::parse(url).expect("a store URL");
        let mut server = TestServer::start_configured(dir.path(), |c| {
            c.store.url = Some(store);
            c.provisioning = policy;
        })
        .await;
        server.dir = Some(dir);
        server
    }

    /// Starts a server on a fresh data directory with phones' HTTPS on an
    /// ephemeral port, serving the given PEM files.
    pub async fn start_with_https(cert: &Path, key: &Path) -> TestServer {
        TestServer::start_with_https_config(HttpsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: None,
            client_cert: ClientCertMode::Optional,
        })
        .await
    }

    /// Starts a server on a fresh data directory with phones' HTTPS as
    /// `https` says (give it port 0).
    pub async fn start_with_https_config(https: HttpsConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer::start_configured(dir.path(), |c| c.https = Some(https)).await;
        server.dir = Some(dir);
        server
    }

    /// Starts a server on `data` (kept by the caller) with a config
    /// adjusted by `adjust`; the listeners are on loopback ephemeral ports
    /// unless `adjust` says otherwise.
    pub async fn start_configured(data: &Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config {
            data: data.to_path_buf(),
            http: loopback,
            tftp: loopback,
            admin: loopback,
            // Uploads render in deskboot's own binary, not in this harness.
            render_worker: Some(env!("CARGO_BIN_EXE_deskboot").into()),
            ..Config::default()
        };
        adjust(&mut config);
        let server = Server::bind(&config, Some(TOKEN))
            .await
            .expect("server binds");
        let addrs = server.addresses();
        let https_cert = server.https_cert();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addrs,
            data: data.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
            dir: None,
            http: reqwest::Client::new(),
            https_cert,
        }
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin)
    }

    /// Runs the `deskboot` CLI against this server's admin API; panics
    /// with its stderr unless it succeeds.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let admin = self.admin_url("");
        let connection = ["--server", admin.as_str(), "--token", TOKEN];
        let args: Vec<&str> = args.iter().copied().chain(connection).collect();
        let out = run(env!("CARGO_BIN_EXE_deskboot"), &args).await;
        assert!(
            out.status.success(),
            "deskboot {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.http)
    }

    /// A URL on the HTTPS listener, by IP address (panics without HTTPS).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addrs.https.expect("HTTPS is on"))
    }

    /// An admin API call with the token; returns status and JSON body (null if empty).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.admin_url(path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// An admin API call with a text body (a template upload).
    pub async fn api_text(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .request(method, self.admin_url(path))
            .bearer_auth(TOKEN)
            .body(body.to_string())
            .send()
            .await
            .expect("admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An admin GET whose answer is a file, not JSON: status and text.
    pub async fn admin_text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(self.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("admin API answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// A long admin operation asking for its progress: the NDJSON lines.
    pub async fn api_streamed(&self, path: &str, body: &str) -> Vec<Value> {
        let response = self
            .http
            .post(self.admin_url(path))
            .bearer_auth(TOKEN)
            .header("Accept", "application/x-ndjson")
            .body(body.to_string())
            .send()
            .await
            .expect("admin API answers");
        assert_eq!(
            response.headers()["content-type"],
            "application/x-ndjson",
            "a streamed answer"
        );
        let text = response.text().await.expect("body");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }

    /// Puts [`site_settings`]; panics if refused.
    pub async fn put_site_settings(&self) {
        let (status, body) = self
            .api(
                reqwest::Method::PUT,
                "/api/v1/settings",
                Some(site_settings()),
            )
            .await;
        assert_eq!(status, 200, "settings refused: {body}");
    }

    /// Creates a user and returns it; panics if refused.
    pub async fn add_user(&self, user: Value) -> Value {
        let (status, body) = self.post("/api/v1/users", user).await;
        assert_eq!(status, 201, "user refused: {body}");
        body
    }

    /// Creates a device; panics if refused.
    pub async fn add_device(&self, device: Value) -> Value {
        let (status, body) = self.post("/api/v1/devices", device).await;
        assert_eq!(status, 201, "device refused: {body}");
        body
    }

    /// Everything in the store, to show that a refused request changed nothing.
    pub async fn snapshot(&self) -> Value {
        json!({
            "users": self.get("/api/v1/users").await.1,
            "devices": self.get("/api/v1/devices").await.1,
            "settings": self.get("/api/v1/settings").await.1,
        })
    }

    /// A phone's HTTP GET: status and body.
    pub async fn phone_get(&self, path: &str, user_agent: Option<&str>) -> (u16, Vec<u8>) {
        let mut request = self.http.get(self.http_url(path));
        if let Some(ua) = user_agent {
            request = request.header("User-Agent", ua);
        }
        let response = request.send().await.expect("HTTP answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// A phone's TFTP read with curl: the bytes, or curl's exit code.
    pub async fn tftp_curl(&self, file: &str) -> Result<Vec<u8>, i32> {
        let url = format!("tftp://{}/{file}", self.addrs.tftp);
        let output = run("curl", &["-sS", "--max-time", "10", &url]).await;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(output.status.code().unwrap_or(-1))
        }
    }

    /// A TFTP read with atftp's client proposing `options` (`"windowsize 8"`...).
    pub async fn tftp_atftp(&self, file: &str, options: &[&str]) -> Result<Vec<u8>, String> {
        let out_dir = tempfile::tempdir().expect("temp dir");
        let out = out_dir.path().join("got");
        let port = self.addrs.tftp.port().to_string();
        let out_path = out.display().to_string();
        let mut args: Vec<&str> = options.iter().flat_map(|o| ["--option", *o]).collect();
        args.extend(["-g", "-r", file, "-l", &out_path, "127.0.0.1", &port]);
        let output = run("atftp", &args).await;
        match std::fs::read(&out) {
            Ok(bytes) if output.status.success() => Ok(bytes),
            _ => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }

    /// A phone's TFTP read with tftp-hpa's client (plain RFC 1350, no options).
    pub async fn tftp_hpa(&self, file: &str) -> Result<Vec<u8>, String> {
        let out_dir = tempfile::tempdir().expect("temp dir");
        let out = out_dir.path().join("got");
        let port = self.addrs.tftp.port().to_string();
        let out_path = out.display().to_string();
        let output = run(
            "tftp",
            &[
                "-m",
                "octet",
                "127.0.0.1",
                &port,
                "-c",
                "get",
                file,
                &out_path,
            ],
        )
        .await;
        // tftp-hpa exits 0 even on errors; an error message and no file tell.
        match std::fs::read(&out) {
            Ok(bytes) if output.stderr.is_empty() && output.stdout.is_empty() => Ok(bytes),
            _ => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }
}

impl TestServer {
    /// A raw TFTP read request, exactly as given (no client-side path
    /// clean-up): the first answer's opcode, DATA (3) or ERROR (5), and the
    /// error code for an ERROR.
    pub async fn tftp_raw_rrq(&self, file: &[u8]) -> (u16, u16) {
        self.tftp_raw_rrq_from(Ipv4Addr::LOCALHOST.into(), file, Duration::from_secs(5))
            .await
    }

    /// A raw TFTP read request from `source` (any 127.0.0.0/8 address is
    /// this machine), waiting `patience` for the first answer: its opcode
    /// and error code, or (0, 0) for none.
    pub async fn tftp_raw_rrq_from(
        &self,
        source: IpAddr,
        file: &[u8],
        patience: Duration,
    ) -> (u16, u16) {
        let socket = tokio::net::UdpSocket::bind((source, 0)).await.expect("udp");
        socket
            .send_to(&rrq(file), self.addrs.tftp)
            .await
            .expect("send");
        let mut answer = [0u8; 1600];
        let received = tokio::time::timeout(patience, socket.recv_from(&mut answer)).await;
        match received {
            Ok(Ok((n, _))) if n >= 4 => (
                u16::from_be_bytes([answer[0], answer[1]]),
                u16::from_be_bytes([answer[2], answer[3]]),
            ),
            _ => (0, 0),
        }
    }

    /// A TFTP read request sent "from" `source` and never read: all a
    /// forged UDP packet does.
    pub async fn tftp_forged_rrq(&self, source: IpAddr, file: &[u8]) {
        let socket = tokio::net::UdpSocket::bind((source, 0)).await.expect("udp");
        socket
            .send_to(&rrq(file), self.addrs.tftp)
            .await
            .expect("send");
    }

    /// A phone's HTTP GET from `source`: status and body.
    pub async fn phone_get_from(
        &self,
        source: IpAddr,
        path: &str,
        user_agent: Option<&str>,
    ) -> (u16, Vec<u8>) {
        let client = reqwest::Client::builder()
            .local_address(source)
            .build()
            .expect("client");
        let mut request = client.get(self.http_url(path));
        if let Some(ua) = user_agent {
            request = request.header("User-Agent", ua);
        }
        let response = request.send().await.expect("HTTP answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }
}

/// An octet-mode TFTP read request for `file`.
fn rrq(file: &[u8]) -> Vec<u8> {
    let mut packet = vec![0, 1];
    packet.extend_from_slice(file);
    packet.push(0);
    packet.extend_from_slice(b"octet\0");
    packet
}

impl TestServer {
    /// Ada (extension 101) and her Yealink T46S at 001565aabbcc; the answer
    /// that created the device.
    pub async fn ada_with_a_t46s(&self) -> Value {
        let ada = self.add_user(user_json("101", "Ada", "Lovelace")).await;
        let (status, device) = self
            .post(
                "/api/v1/devices",
                json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        device
    }

    /// One sample of `/metrics`, e.g. `deskboot_tftp_transfers` or
    /// `deskboot_requests_total{transport="http",outcome="served"}`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a program to completion.
pub async fn run(program: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"))
}

/// A user with fixed credentials, so rendered files are reproducible.
pub fn user_json(extension: &str, first: &str, last: &str) -> Value {
    json!({
        "extension": extension,
        "first_name": first,
        "last_name": last,
        "email": format!("{}@example.com", first.to_lowercase()),
        "sip": {"username": format!("sip{extension}"), "auth_name": format!("auth{extension}"), "password": format!("Pw-{extension}-secret")},
        "voicemail": {"mailbox": extension},
    })
}

/// Site settings used by most tests.
pub fn site_settings() -> Value {
    json!({
        "sip_server": "pbx.example.com",
        "ntp_server": "ntp.example.com",
        "time_zone": "Europe/Paris",
        "utc_offset": "+01:00",
        "provisioning_url": "http://prov.example.com:8080",
    })
}
