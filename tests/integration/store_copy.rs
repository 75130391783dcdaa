//! `deskboot store copy` as a real process: a site moved from sled to
//! PostgreSQL and back renders the same everywhere, a destination with
//! records is left alone without --replace, and a store a running server
//! holds is refused.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use deskboot::domain::records::{Device, User};
use deskboot::store::copy::Counts;
use deskboot::store::postgres::test_cluster::TestCluster;
use deskboot::store::{Change, Store, StoreError, StoreUrl};
use reqwest::Method;
use serde_json::json;

use crate::common::{TestServer, user_json};

const BIN: &str = env!("CARGO_BIN_EXE_deskboot");

/// Phones added straight into the store, beside the one made through the API.
const GENERATED_PHONES: usize = 10_000;

/// The generated phones' model: its file holds no company directory. A
/// Yealink's holds every user, so checking 10,000 of them renders 10,000
/// directories of 10,000 entries, which a debug build takes many minutes
/// over; one Yealink phone keeps the directory in the check.
const GENERATED_MODEL: &str = "akuvox-sp-r50";

/// Runs `deskboot store copy` with `args` to completion.
async fn store_copy(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(["store", "copy"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("deskboot store copy runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Opens a store just closed: sled's threads may hold its lock a moment.
fn open(url: &str) -> Store {
    let url = StoreUrl::parse(url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_url(&url) {
            Err(e) if Instant::now() < deadline => {
                eprintln!("store not open yet: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            opened => return opened.unwrap(),
        }
    }
}

/// A site made through a server (settings, Ada's phone, an upload, a
/// token, a sighting, a last good file, a discovered phone), then
/// [`GENERATED_PHONES`] more phones written straight into its sled store;
/// the file Ada's phone got.
async fn site_in(data: &Path) -> Vec<u8> {
    let server = TestServer::start_in(data).await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    let upload =
        "#!version:1.0.0.1\n# copied\naccount.1.user_name = {{ lines[0].username | cfg_value }}\n";
    let (status, body) = server
        .api_text(
            Method::PUT,
            "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg",
            upload,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, served) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    server.phone_get("/001565ffffff.cfg", None).await;
    server.stop().await;

    let store = open(&format!("sled:{}", data.join("store").display()));
    store
        .change_blocking(
            "generator",
            |store| {
                let mut changes = Vec::new();
                for n in 0..GENERATED_PHONES {
                    let mut user: User = serde_json::from_value(user_json(
                        &format!("{}", 1000 + n),
                        &format!("Gen{n}"),
                        "Erated",
                    ))
                    .unwrap();
                    user.id = store.next_user_id()?;
                    let device: Device = serde_json::from_value(json!({
                        "mac": format!("0015650a{n:04x}"),
                        "model": GENERATED_MODEL,
                        "lines": [{"user": user.id}],
                    }))
                    .unwrap();
                    changes.push(Change::PutUser {
                        new: user,
                        old: None,
                    });
                    changes.push(Change::PutDevice {
                        new: device,
                        old: None,
                    });
                }
                Ok::<_, StoreError>((changes, ()))
            },
            &deskboot::domain::progress::silent,
        )
        .unwrap();
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_copied_to_postgres_and_back_renders_the_same_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let served = site_in(dir.path()).await;
    let sled = format!("sled:{}", dir.path().join("store").display());
    let postgres = TestCluster::shared().database();
    let back = format!("sled:{}", dir.path().join("back").display());

    let phones = GENERATED_PHONES + 1;
    for (from, to) in [(&sled, &postgres), (&postgres, &back)] {
        let copied = store_copy(&["--from", from, "--to", to]).await;
        let shown = text(&copied);
        assert!(copied.status.success(), "{shown}");
        assert!(
            shown.contains(&format!("checked: {phones} devices"))
                && shown.contains("all identical"),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    let counts: Vec<Counts> = [&sled, &postgres, &back]
        .iter()
        .map(|url| Counts::of(&open(url)).unwrap())
        .collect();
    assert_eq!(counts[0].devices, phones);
    assert!(
        counts[0].sightings == 1 && counts[0].last_good == 1 && counts[0].discovered == 1,
        "{}",
        counts[0]
    );
    assert_eq!(counts[0], counts[1]);
    assert_eq!(counts[0], counts[2]);
    // A user added to a copy gets an id no user of the source had.
    let copy = open(&back);
    assert_eq!(copy.next_user_id().unwrap(), phones as u64 + 1);
    drop(copy);

    let node = TestServer::start_on_store(&postgres).await;
    assert_eq!(
        node.phone_get("/001565aabbcc.cfg", None).await,
        (200, served)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_with_records_is_left_alone_without_replace() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for data in [from.path(), to.path()] {
        let server = TestServer::start_in(data).await;
        server.put_site_settings().await;
        server.add_user(user_json("101", "Ada", "Lovelace")).await;
        server.stop().await;
    }
    let to_url = format!("sled:{}", to.path().join("store").display());
    let before = Counts::of(&open(&to_url)).unwrap();
    let from_url = format!("sled:{}", from.path().join("store").display());

    let refused = store_copy(&["--from", &from_url, "--to", &to_url]).await;
    let shown = text(&refused);
    assert!(!refused.status.success(), "{shown}");
    assert!(
        shown.contains("is not empty") && shown.contains("--replace"),
        "{shown}"
    );
    assert_eq!(Counts::of(&open(&to_url)).unwrap(), before);

    let replaced = store_copy(&["--from", &from_url, "--to", &to_url, "--replace"]).await;
    assert!(replaced.status.success(), "{}", text(&replaced));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_a_running_server_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    server.ada_with_a_t46s().await;
    let from = format!("sled:{}", dir.path().join("store").display());
    let to = format!("sled:{}", dir.path().join("copy").display());

    let refused = store_copy(&["--from", &from, "--to", &to]).await;
    let shown = text(&refused);
    assert!(!refused.status.success(), "{shown}");
    assert!(
        shown.contains("is in use") && shown.contains("stop it"),
        "{shown}"
    );
    server.stop().await;
}
