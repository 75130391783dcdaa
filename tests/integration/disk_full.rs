//! A full disk (issue 26): the data directory on a small tmpfs, filled by
//! an import and by a filler file. A change that cannot be saved is refused
//! with 507 and "disk full", nothing acknowledged is lost, reads and phones
//! go on, `/healthz` and `/metrics` tell the store's state, and the server
//! takes changes again by itself once space is back.
//!
//! Mounting needs root (CI runs as root); elsewhere each test says it is
//! skipped and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{TOKEN, TestServer, run, user_json};

/// Small enough that an import fills it in seconds.
const TMPFS_SIZE: &str = "size=12m";
/// Room enough for every store in these tests once space is back.
const GROWN_SIZE: &str = "size=200m";
/// How long the server gets to notice that space is back (it checks every
/// sighting flush tick, 2 s).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);
/// The CSV header every import here uses.
const CSV_HEADER: &str = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n";

/// A tmpfs mounted on a temporary directory, unmounted when dropped (a
/// failed assertion included).
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a 12 MiB tmpfs, or says why not (not root) and returns none.
    fn mount(test: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = dir.path().to_path_buf();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS_SIZE, "tmpfs"])
            .arg(&mount)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { mount, _dir: dir }),
            Ok(out) => {
                eprintln!(
                    "skipping {test}: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping {test}: cannot run mount: {e}");
                None
            }
        }
    }

    /// The server's data directory on it.
    fn data(&self) -> PathBuf {
        self.mount.join("data")
    }

    /// Grows the tmpfs: space is back, the files stay.
    fn grow(&self) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{GROWN_SIZE}")])
            .arg(&self.mount)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server a failed test left running still holds files there.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}

/// Writes a new file in `dir` until the disk refuses more.
fn fill(dir: &Path) {
    std::fs::create_dir_all(dir).expect("filler directory");
    let count = std::fs::read_dir(dir).expect("filler directory").count();
    let mut file = std::fs::File::create(dir.join(format!("filler{count}"))).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

/// Adds users until one is refused for a full disk, filling what room the
/// refusal gave back (the store's reserve, the refused change's log),
/// until `/healthz` says read-only and nothing is left to recover with.
/// Returns the extensions of the users acknowledged on the way: sled may
/// still fit a few in the room its log already holds.
///
/// Call it on a store that takes changes, so that the refusal it ends on
/// comes from the disk: the store reopens the database, which waits for
/// the threads of the opening before it to close its file, room they give
/// back included. All sled can give back later is the refused change's own
/// log, far less than the reserve the server needs to recover.
async fn fill_until_read_only(server: &TestServer, fillers: &Path) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for _ in 0..2_000 {
        fill(fillers);
        let extension = (2_000 + acknowledged.len()).to_string();
        let user = user_json(&extension, &format!("Bea{extension}"), "Full");
        let (status, answer) = server.post("/api/v1/users", user).await;
        match status {
            201 => acknowledged.push(extension),
            507 => {
                assert!(
                    answer["error"].as_str().unwrap().contains("disk full"),
                    "{answer}"
                );
                fill(fillers);
                if health(server).await.1["status"] == "read_only" {
                    return acknowledged;
                }
            }
            _ => panic!("{status}: {answer}"),
        }
    }
    panic!("the full disk took every change");
}

/// Users imported at once, each with a device.
const IMPORT_ROWS: usize = 2_000;

/// Imports [`IMPORT_ROWS`] users, each with a device, after the `done`
/// imported before; the status and answer.
async fn import(server: &TestServer, done: usize) -> (u16, Value) {
    let mut csv = String::from(CSV_HEADER);
    for n in 10_000 + done..10_000 + done + IMPORT_ROWS {
        csv.push_str(&format!(
            "{n},First{n},Last{n},user{n}@example.com,,,0015652{n:05x},yealink-t46s\n"
        ));
    }
    server.api_text(Method::POST, "/api/v1/import", &csv).await
}

/// What the server says about its health: the status and the JSON body.
async fn health(server: &TestServer) -> (u16, Value) {
    let response = reqwest::get(server.admin_url("/healthz"))
        .await
        .expect("/healthz answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("/healthz is JSON"))
}

/// Waits (bounded) until `/healthz` says ok again.
async fn until_healthy(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + RECOVERY_DEADLINE;
    loop {
        let (status, body) = health(server).await;
        if status == 200 {
            assert_eq!(body["status"], "ok", "{body}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store did not recover once space was back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks everything that must hold while the disk is full: the refusal
/// of a change (API and CLI), reads, `/healthz`, `/metrics`, and a phone
/// still served the file it got before.
async fn check_full_disk(server: &TestServer, users_before: usize, phone_file: &[u8]) {
    let (status, refused) = server
        .post("/api/v1/users", user_json("999", "Refused", "User"))
        .await;
    assert_eq!(status, 507, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("disk full"),
        "{refused}"
    );

    let admin = server.admin_url("");
    let cli = run(
        env!("CARGO_BIN_EXE_deskboot"),
        &[
            "user",
            "add",
            "--extension",
            "998",
            "--first-name",
            "Cli",
            "--last-name",
            "User",
            "--server",
            &admin,
            "--token",
            TOKEN,
        ],
    )
    .await;
    assert!(!cli.status.success());
    let said = String::from_utf8_lossy(&cli.stderr);
    assert!(said.contains("disk full"), "{said}");

    let (status, users) = server.get("/api/v1/users").await;
    assert_eq!(status, 200, "reads fail after a refused write: {users}");
    assert_eq!(users.as_array().unwrap().len(), users_before, "{users}");

    let (status, body) = health(server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "read_only", "{body}");
    assert!(
        body["store"].as_str().unwrap().contains("free space"),
        "{body}"
    );
    assert_eq!(
        server
            .metric("deskboot_store_state{state=\"read_only\"}")
            .await,
        1
    );
    assert_eq!(server.metric("deskboot_store_state{state=\"ok\"}").await, 0);

    let (status, served) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        served, phone_file,
        "the phone got another file on a full disk"
    );
}

/// Starts a server on the small disk with Ada's phone, which fetches its
/// file once; returns the server and that file.
async fn server_with_a_phone(disk: &SmallDisk) -> (TestServer, Vec<u8>) {
    let server = TestServer::start_in(&disk.data()).await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    let (status, file) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    (server, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_fills_the_disk_is_refused_whole_and_the_server_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("an_import_that_fills_the_disk") else {
        return;
    };
    let (server, phone_file) = server_with_a_phone(&disk).await;

    // Imports until one no longer fits: each is all or nothing.
    let mut imported = 0;
    let refusal = loop {
        let (status, answer) = import(&server, imported).await;
        if status != 201 {
            break (status, answer);
        }
        imported += IMPORT_ROWS;
        assert!(imported < 40_000, "12 MiB never filled");
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert!(
        refusal.1["error"].as_str().unwrap().contains("disk full"),
        "{}",
        refusal.1
    );
    // The refused import's log is room again, given back by sled's threads
    // whenever they run: the server takes changes again by itself, and
    // only then is the disk filled, so that room cannot come back later.
    until_healthy(&server).await;
    let acknowledged = fill_until_read_only(&server, &disk.mount.join("fillers")).await;
    let users = 1 + imported + acknowledged.len();
    check_full_disk(&server, users, &phone_file).await;

    disk.grow();
    until_healthy(&server).await;
    let (status, answer) = import(&server, imported).await;
    assert_eq!(status, 201, "{answer}");
    let (status, listed) = server.get("/api/v1/users").await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), users + IMPORT_ROWS);
    assert_eq!(server.metric("deskboot_store_state{state=\"ok\"}").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_disk_loses_no_acknowledged_change_and_takes_changes_once_freed() {
    let Some(disk) = SmallDisk::mount("a_filled_disk_loses_no_acknowledged_change") else {
        return;
    };
    let (server, phone_file) = server_with_a_phone(&disk).await;
    let fillers = disk.mount.join("fillers");
    let mut acknowledged = fill_until_read_only(&server, &fillers).await;
    check_full_disk(&server, 1 + acknowledged.len(), &phone_file).await;

    std::fs::remove_dir_all(&fillers).expect("fillers removed");
    until_healthy(&server).await;
    let (status, user) = server
        .post("/api/v1/users", user_json("999", "Refused", "User"))
        .await;
    assert_eq!(status, 201, "{user}");
    acknowledged.push("999".into());
    server.stop().await;

    // After a restart, every acknowledged change is on the disk.
    let server = TestServer::start_in(&disk.data()).await;
    let (status, users) = server.get("/api/v1/users").await;
    assert_eq!(status, 200);
    let extensions: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["extension"].as_str())
        .collect();
    for extension in &acknowledged {
        assert!(
            extensions.contains(&extension.as_str()),
            "user {extension} was lost"
        );
    }
    assert_eq!(extensions.len(), 1 + acknowledged.len(), "{extensions:?}");
    let (status, _) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    server.stop().await;
}
