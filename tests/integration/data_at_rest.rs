//! Data at rest, with `deskboot serve` as a real process: every change an
//! administrator is told of survives a SIGKILL the moment the answer
//! arrives, and the data directory is readable by the server's user alone,
//! whatever umask it was started with.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::cli::{Log, serve_command, start_logged, stop};
use crate::common::{site_settings, user_json};

/// A template slot every T46S shares.
const MODEL_SLOT: &str = "/api/v1/templates/models/yealink-t46s/%7Bmac%7D.cfg";

/// A `deskboot serve` process on a data directory, and a client of its admin API.
struct Served {
    data: PathBuf,
    child: Child,
    http: String,
    admin: String,
    token: String,
    client: reqwest::Client,
}

impl Served {
    async fn start(data: &Path) -> Served {
        Served::start_command(data, serve_command(data, "info"))
            .await
            .0
    }

    /// Starts `command`, a `deskboot serve` on `data`; returns it and its log.
    async fn start_command(data: &Path, command: Command) -> (Served, Log) {
        let (child, [http, _, admin], log) = start_logged(command).await;
        let token = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
        // No server in this process has installed the TLS provider reqwest needs.
        deskboot::transport::tls::install_crypto_provider();
        let served = Served {
            data: data.to_path_buf(),
            child,
            http,
            admin,
            token: token.trim().to_string(),
            client: reqwest::Client::new(),
        };
        (served, log)
    }

    /// An admin API request with the token.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token)
    }

    /// Sends a change, SIGKILLs the server as soon as the answer's status
    /// is in, and starts a new one on the same directory. (The API reads
    /// JSON bodies whatever their content type.)
    async fn change_then_kill(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
        status: u16,
    ) {
        let answer = self.request(method.clone(), path).body(body).send().await;
        let answer = answer.expect("admin API answers");
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("killed");
        let answered = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        assert_eq!(answered, status, "{method} {path}: {text}");
        *self = Served::start(&self.data).await;
    }

    /// Creates Ada (extension 101): a user, with a SIP password.
    async fn add_ada(&self) {
        let ada = user_json("101", "Ada", "Lovelace");
        let created = self.request(Method::POST, "/api/v1/users").json(&ada);
        assert_eq!(created.send().await.unwrap().status(), 201);
    }

    /// What `GET path` answers, at a JSON pointer (null when absent).
    async fn shows(&self, path: &str, pointer: &str) -> Value {
        let answer = self.request(Method::GET, path).send().await.expect("GET");
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        body.pointer(pointer).cloned().unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_a_sigkill_right_after_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(&dir.path().join("data")).await;

    let ada = user_json("101", "Ada", "Lovelace").to_string();
    server
        .change_then_kill(Method::POST, "/api/v1/users", ada, 201)
        .await;
    assert_eq!(server.shows("/api/v1/users/1", "/extension").await, "101");
    let renamed = json!({"first_name": "Augusta"}).to_string();
    server
        .change_then_kill(Method::PATCH, "/api/v1/users/1", renamed, 200)
        .await;
    assert_eq!(
        server.shows("/api/v1/users/1", "/first_name").await,
        "Augusta"
    );

    let site = site_settings().to_string();
    server
        .change_then_kill(Method::PUT, "/api/v1/settings", site, 200)
        .await;
    let sip_server = server.shows("/api/v1/settings", "/sip_server").await;
    assert_eq!(sip_server, "pbx.example.com");
    let model = "/api/v1/models/yealink-t46s/settings";
    let ntp = json!({"ntp_server": "ntp.t46s.example.com"}).to_string();
    server
        .change_then_kill(Method::PATCH, model, ntp, 200)
        .await;
    assert_eq!(
        server.shows(model, "/ntp_server").await,
        "ntp.t46s.example.com"
    );

    let phone = json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": 1}]});
    server
        .change_then_kill(Method::POST, "/api/v1/devices", phone.to_string(), 201)
        .await;
    let device = "/api/v1/devices/001565aabbcc";
    assert_eq!(server.shows(device, "/lines/0/user").await, 1);
    let lobby = json!({"description": "Lobby"}).to_string();
    server
        .change_then_kill(Method::PATCH, device, lobby, 200)
        .await;
    assert_eq!(server.shows(device, "/description").await, "Lobby");

    let first = "# first {{ mac.bare }}\n";
    for (version, source) in [(1, first), (2, "# second\n")] {
        server
            .change_then_kill(Method::PUT, MODEL_SLOT, source, 201)
            .await;
        assert_eq!(server.shows(MODEL_SLOT, "/version").await, version);
        assert_eq!(server.shows(MODEL_SLOT, "/source").await, source);
    }
    let rollback = format!("{MODEL_SLOT}/rollback");
    server
        .change_then_kill(Method::POST, &rollback, r#"{"version": 1}"#, 200)
        .await;
    assert_eq!(server.shows(MODEL_SLOT, "/version").await, 3);
    assert_eq!(server.shows(MODEL_SLOT, "/source").await, first);
    server
        .change_then_kill(Method::DELETE, MODEL_SLOT, "", 204)
        .await;
    assert_eq!(server.shows(MODEL_SLOT, "/origin").await, "builtin");

    let ops = r#"{"name": "ops", "scope": "read"}"#;
    server
        .change_then_kill(Method::POST, "/api/v1/tokens", ops, 201)
        .await;
    assert_eq!(server.shows("/api/v1/tokens", "/0/name").await, "ops");
    server
        .change_then_kill(Method::DELETE, "/api/v1/tokens/ops", "", 204)
        .await;
    assert_eq!(server.shows("/api/v1/tokens", "/0").await, Value::Null);

    let clone = format!("{device}/clone");
    let replace = r#"{"to": "001565aabbcd", "mode": "replace"}"#;
    server
        .change_then_kill(Method::POST, &clone, replace, 201)
        .await;
    let devices = "/api/v1/devices";
    assert_eq!(server.shows(devices, "/0/mac").await, "001565aabbcd");
    assert_eq!(server.shows(devices, "/1").await, Value::Null);
    server
        .change_then_kill(Method::DELETE, "/api/v1/devices/001565aabbcd", "", 204)
        .await;
    assert_eq!(server.shows(devices, "/0").await, Value::Null);
    server
        .change_then_kill(Method::DELETE, "/api/v1/users/1", "", 204)
        .await;
    assert_eq!(server.shows("/api/v1/users", "/0").await, Value::Null);

    let csv = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
               102,Bob,Babbage,,,,001565000102,yealink-t46s\n";
    server
        .change_then_kill(Method::POST, "/api/v1/import", csv, 201)
        .await;
    assert_eq!(server.shows("/api/v1/users", "/0/first_name").await, "Bob");
    let mut backup = server.shows("/api/v1/export", "").await;
    backup["users"][0]["first_name"] = json!("Robert");
    let restore = "/api/v1/restore?replace=true";
    server
        .change_then_kill(Method::POST, restore, backup.to_string(), 200)
        .await;
    assert_eq!(
        server.shows("/api/v1/users", "/0/first_name").await,
        "Robert"
    );

    // A phone nobody provisioned asks for its file, and is adopted.
    let unknown = format!("http://{}/001565000099.cfg", server.http);
    let asked = server.client.get(unknown).send().await.unwrap();
    assert_eq!(asked.status(), 404);
    let adopt = "/api/v1/discovered/001565000099/adopt";
    server
        .change_then_kill(Method::POST, adopt, r#"{"model": "yealink-t46s"}"#, 201)
        .await;
    let adopted = server.shows("/api/v1/devices/001565000099", "/model").await;
    assert_eq!(adopted, "yealink-t46s");

    server
        .change_then_kill(Method::DELETE, "/api/v1/bans/192.0.2.7", "", 200)
        .await;
    let lifts = "/api/v1/audit?target=ban/192.0.2.7";
    assert_eq!(server.shows(lifts, "/0/action").await, "ban.lift");
    stop(server.child).await;
}

/// `dir` and every file and directory under it.
fn everything_in(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        found.push(path);
    }
    found
}

/// The paths in [`everything_in`] `dir` that group or others may use, with their modes.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    everything_in(dir)
        .into_iter()
        .map(|path| {
            let mode = std::fs::symlink_metadata(&path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            (path, mode)
        })
        .filter(|(_, mode)| mode & 0o077 != 0)
        .collect()
}

/// The data directory's own mode.
fn mode_of(dir: &Path) -> u32 {
    std::fs::metadata(dir).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_umask_022_the_data_directory_is_still_private() {
    use nix::sys::stat::{Mode, umask};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = serve_command(&data, "info");
    // umask is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            umask(Mode::S_IWGRP | Mode::S_IWOTH);
            Ok(())
        });
    }
    let (server, _) = Served::start_command(&data, command).await;
    server.add_ada().await;
    stop(server.child).await;

    assert_eq!(mode_of(&data), 0o700);
    assert!(data.join("store").is_dir(), "the store is in the walk");
    assert_eq!(open_to_others(&data), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_open_to_others_is_closed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Served::start(&data).await;
    server.add_ada().await;
    stop(server.child).await;
    // As an older deskboot left it, started under umask 022.
    for path in everything_in(&data) {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    assert!(!open_to_others(&data).is_empty());

    let (server, log) = Served::start_command(&data, serve_command(&data, "info")).await;
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("the data directory was open to other users"),
        "{log}"
    );
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(open_to_others(&data), Vec::new());
    stop(server.child).await;
}
