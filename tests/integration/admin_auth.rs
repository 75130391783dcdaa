//! Admin tokens under attack: a short bootstrap token, floods of wrong
//! tokens, and read tokens reaching for passwords.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::common::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_deskboot");

/// Wrong tokens that ban an address (README, Security).
const BAN_AFTER: usize = 10;

/// Wrong tokens answered at once (README, Security).
const TYPOS: usize = 3;

/// Makes a named token with the bootstrap one; returns `<name>.<secret>`.
async fn named_token(server: &TestServer, name: &str, scope: &str) -> String {
    let (status, made) = server
        .post("/api/v1/tokens", json!({"name": name, "scope": scope}))
        .await;
    assert_eq!(status, 201, "{made}");
    made["token"].as_str().unwrap().to_string()
}

/// An HTTP client whose connections come from `address` (any of 127/8 is
/// this host), so each test client is an address of its own.
fn client_from(address: &str) -> reqwest::Client {
    let address: IpAddr = address.parse().unwrap();
    reqwest::Client::builder()
        .local_address(address)
        .build()
        .unwrap()
}

/// A GET of the admin API with a bearer token: status and JSON body.
async fn get_as(client: &reqwest::Client, url: &str, token: &str) -> (u16, Value, Option<u64>) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bootstrap_token_under_16_characters() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .env("DESKBOOT_ADMIN_TOKEN", "a")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), serve)
        .await
        .expect("serve exits instead of serving")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("deskboot listening"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_gets_429_after_the_limit_and_other_addresses_still_get_in() {
    let server = TestServer::start().await;
    let ops = named_token(&server, "ops", "write").await;
    let users = server.admin_url("/api/v1/users");
    let attacker = client_from("127.0.0.2");
    let mut guesses = JoinSet::new();
    for n in 0..BAN_AFTER {
        let (attacker, users) = (attacker.clone(), users.clone());
        guesses.spawn(async move { get_as(&attacker, &users, &format!("ops.guess-{n}")).await });
    }
    let statuses: Vec<u16> = guesses.join_all().await.into_iter().map(|a| a.0).collect();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 401).count() >= TYPOS,
        "{statuses:?}"
    );

    // Banned: even the right token is refused, before argon2 could run.
    let (status, error, retry_after) = get_as(&attacker, &users, &ops).await;
    assert_eq!(status, 429, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("too many wrong admin tokens"),
        "{error}"
    );
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After: {retry_after:?}"
    );

    let colleague = client_from("127.0.0.3");
    let (status, _, _) = get_as(&colleague, &users, &ops).await;
    assert_eq!(status, 200, "another address gets in");
    let (status, _) = server.get("/api/v1/users").await;
    assert_eq!(status, 200, "and the bootstrap token from this one");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_and_healthz_answer_while_wrong_tokens_flood_the_admin_api() {
    const ATTACKERS: usize = 8;
    const CONNECTIONS_EACH: usize = 8;
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    named_token(&server, "ops", "write").await;

    // 64 connections at once, each a wrong secret of a real name or an
    // unknown name (both cost argon2); too few per address for a ban, so
    // the flood lasts.
    let attacks = (0..ATTACKERS * CONNECTIONS_EACH)
        .map(|n| {
            let address = format!("127.0.1.{}", n / CONNECTIONS_EACH + 1);
            let name = if n % 2 == 0 { "ops" } else { "nobody" };
            (address, format!("{name}.wrong-{n}"))
        })
        .collect();
    let (answered, mut answers) = mpsc::unbounded_channel();
    let flood = flood(server.admin_url("/api/v1/users"), attacks, answered);
    let first = tokio::time::timeout(Duration::from_secs(30), answers.recv())
        .await
        .expect("the flood is being answered");
    assert_eq!(first, Some(401));

    let (status, file) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&file).contains("Pw-101-secret"));
    let healthz = reqwest::get(server.admin_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    let mut answered_so_far = 1;
    while answers.try_recv().is_ok() {
        answered_so_far += 1;
    }
    assert!(
        answered_so_far < ATTACKERS * CONNECTIONS_EACH,
        "the phone and /healthz waited for the flood to end"
    );

    tokio::task::spawn_blocking(move || flood.join())
        .await
        .unwrap()
        .unwrap();
    while let Some(status) = answers.recv().await {
        assert_eq!(status, 401);
    }
    server.stop().await;
}

/// Sends each `(address, token)` at once, each on a connection from its
/// address, and sends each answer's status to `answered` as it comes.
/// The flood runs on a thread and runtime of its own: its answers are
/// counted when they arrive, not when the workers this test shares with
/// the server are free again.
fn flood(
    url: String,
    attacks: Vec<(String, String)>,
    answered: mpsc::UnboundedSender<u16>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut requests = JoinSet::new();
            for (address, token) in attacks {
                let (url, answered) = (url.clone(), answered.clone());
                requests.spawn(async move {
                    let (status, _, _) = get_as(&client_from(&address), &url, &token).await;
                    let _ = answered.send(status);
                });
            }
            requests.join_all().await;
        });
    })
}
