//! Admin tokens under attack: a short bootstrap token, floods of wrong
//! tokens, and read tokens reaching for passwords.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
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
    // 256 argon2 checks on one blocking thread take seconds: far longer
    // than a phone's request, even on a loaded machine.
    const ATTACKERS: usize = 32;
    const CONNECTIONS_EACH: usize = 8;
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    named_token(&server, "ops", "write").await;

    // 256 connections at once, each a wrong secret of a real name or an
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
            // One client per address, made before any request: making one
            // takes long enough on a loaded machine to hold up the rest.
            let mut clients = std::collections::HashMap::new();
            for (address, _) in &attacks {
                clients
                    .entry(address.clone())
                    .or_insert_with(|| client_from(address));
            }
            let mut requests = JoinSet::new();
            for (address, token) in attacks {
                let (url, answered) = (url.clone(), answered.clone());
                let client = clients[&address].clone();
                requests.spawn(async move {
                    let (status, _, _) = get_as(&client, &url, &token).await;
                    let _ = answered.send(status);
                });
            }
            requests.join_all().await;
        });
    })
}

/// The secrets [`office_with_secrets`] stores, each where it lives.
const SIP_PASSWORD: &str = "Pw-101-secret";
const VOICEMAIL_PIN: &str = "918273";
const GLOBAL_ADMIN_PASSWORD: &str = "Admin-secret-9";
const MODEL_ADMIN_PASSWORD: &str = "Model-secret-8";
const DEVICE_ADMIN_PASSWORD: &str = "Device-secret-7";

/// Ada and her T46S, with a secret at every place one can be: her SIP
/// password and voicemail PIN, and a phone admin password in the global,
/// the model's and the device's settings.
async fn office_with_secrets() -> (TestServer, u64) {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let ada = server.ada_with_a_t46s().await["lines"][0]["user"]
        .as_u64()
        .unwrap();
    let changes = [
        (
            "/api/v1/settings",
            json!({"admin_password": GLOBAL_ADMIN_PASSWORD}),
        ),
        (
            "/api/v1/models/yealink-t46s/settings",
            json!({"admin_password": MODEL_ADMIN_PASSWORD}),
        ),
        (
            "/api/v1/devices/001565aabbcc",
            json!({"settings": {"admin_password": DEVICE_ADMIN_PASSWORD}}),
        ),
        (
            &format!("/api/v1/users/{ada}"),
            json!({"voicemail": {"mailbox": "101", "pin": VOICEMAIL_PIN}}),
        ),
    ];
    for (path, patch) in changes {
        let (status, body) = server.api(Method::PATCH, path, Some(patch)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    (server, ada)
}

/// Every GET that answers with a secret, and the secrets it holds.
fn endpoints_with_secrets(ada: u64) -> Vec<(String, Vec<&'static str>)> {
    let device_file = vec![SIP_PASSWORD, DEVICE_ADMIN_PASSWORD];
    vec![
        ("/api/v1/users".into(), vec![SIP_PASSWORD, VOICEMAIL_PIN]),
        (
            format!("/api/v1/users/{ada}"),
            vec![SIP_PASSWORD, VOICEMAIL_PIN],
        ),
        ("/api/v1/devices".into(), vec![DEVICE_ADMIN_PASSWORD]),
        (
            "/api/v1/devices/001565aabbcc".into(),
            vec![DEVICE_ADMIN_PASSWORD],
        ),
        (
            "/api/v1/devices/001565aabbcc/files/001565aabbcc.cfg".into(),
            device_file,
        ),
        ("/api/v1/settings".into(), vec![GLOBAL_ADMIN_PASSWORD]),
        (
            "/api/v1/models/yealink-t46s/settings".into(),
            vec![MODEL_ADMIN_PASSWORD],
        ),
        (
            "/api/v1/export".into(),
            vec![
                SIP_PASSWORD,
                VOICEMAIL_PIN,
                GLOBAL_ADMIN_PASSWORD,
                MODEL_ADMIN_PASSWORD,
                DEVICE_ADMIN_PASSWORD,
            ],
        ),
    ]
}

/// GETs that answer with no secret to anyone, swept all the same.
const OTHER_ENDPOINTS: [&str; 9] = [
    "/api/v1/audit",
    "/api/v1/status",
    "/api/v1/devices/001565aabbcc/status",
    "/api/v1/discovered",
    "/api/v1/tokens",
    "/api/v1/bans",
    "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg",
    "/api/v1/templates/models/yealink-t46s/y000000000066.cfg",
    // A common file carries no admin password, whoever asks.
    "/api/v1/devices/001565aabbcc/files/y000000000066.cfg",
];

/// The body of a GET with `token`, as text; panics unless it is a 200.
async fn text_as(server: &TestServer, path: &str, token: &str) -> String {
    let response = reqwest::Client::new()
        .get(server.admin_url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_gets_no_secret_from_any_endpoint() {
    let (server, ada) = office_with_secrets().await;
    let reader = named_token(&server, "monitoring", "read").await;
    let all_secrets = [
        SIP_PASSWORD,
        VOICEMAIL_PIN,
        GLOBAL_ADMIN_PASSWORD,
        MODEL_ADMIN_PASSWORD,
        DEVICE_ADMIN_PASSWORD,
    ];
    for (path, _) in endpoints_with_secrets(ada) {
        let body = text_as(&server, &path, &reader).await;
        for secret in all_secrets {
            assert!(!body.contains(secret), "{path} shows {secret}:\n{body}");
        }
        assert!(body.contains("(hidden)"), "{path} shows where:\n{body}");
    }
    for path in OTHER_ENDPOINTS {
        let body = text_as(&server, path, &reader).await;
        for secret in all_secrets {
            assert!(!body.contains(secret), "{path} shows {secret}:\n{body}");
        }
    }

    let user: Value =
        serde_json::from_str(&text_as(&server, &format!("/api/v1/users/{ada}"), &reader).await)
            .unwrap();
    assert_eq!(user["sip"]["password"], "(hidden)");
    assert_eq!(user["voicemail"]["pin"], "(hidden)");
    let file = text_as(
        &server,
        "/api/v1/devices/001565aabbcc/files/001565aabbcc.cfg",
        &reader,
    )
    .await;
    assert!(file.contains("account.1.password = (hidden)"), "{file}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_write_tokens_see_the_secrets_and_only_write_changes() {
    let (server, ada) = office_with_secrets().await;
    let auditor = named_token(&server, "auditor", "secrets").await;
    let writer = named_token(&server, "ops", "write").await;
    for token in [&auditor, &writer] {
        for (path, secrets) in endpoints_with_secrets(ada) {
            let body = text_as(&server, &path, token).await;
            for secret in secrets {
                assert!(body.contains(secret), "{path} hides {secret}:\n{body}");
            }
            assert!(!body.contains("(hidden)"), "{path}:\n{body}");
        }
    }
    let client = reqwest::Client::new();
    let patch = client
        .patch(server.admin_url(&format!("/api/v1/users/{ada}")))
        .bearer_auth(&auditor)
        .json(&json!({"first_name": "Augusta"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 403, "secrets is a read scope");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_record_sent_back_keeps_the_real_secrets() {
    let (server, ada) = office_with_secrets().await;
    let reader = named_token(&server, "monitoring", "read").await;
    let masked = |path: String| {
        let (server, reader) = (&server, &reader);
        async move { serde_json::from_str::<Value>(&text_as(server, &path, reader).await).unwrap() }
    };

    // A careless admin edits what a read token showed and sends it all back.
    let user_path = format!("/api/v1/users/{ada}");
    let mut user = masked(user_path.clone()).await;
    user["first_name"] = json!("Augusta");
    let (status, saved) = server.api(Method::PATCH, &user_path, Some(user)).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["sip"]["password"], SIP_PASSWORD);
    assert_eq!(saved["voicemail"]["pin"], VOICEMAIL_PIN);
    let device_path = "/api/v1/devices/001565aabbcc".to_string();
    let device = masked(device_path.clone()).await;
    let (status, saved) = server.api(Method::PATCH, &device_path, Some(device)).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["settings"]["admin_password"], DEVICE_ADMIN_PASSWORD);
    let settings = masked("/api/v1/settings".into()).await;
    let (status, saved) = server
        .api(Method::PUT, "/api/v1/settings", Some(settings))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["admin_password"], GLOBAL_ADMIN_PASSWORD);
    let (_, file) = server.phone_get("/001565aabbcc.cfg", None).await;
    let file = String::from_utf8(file).unwrap();
    assert!(
        file.contains(SIP_PASSWORD) && file.contains(DEVICE_ADMIN_PASSWORD),
        "{file}"
    );

    // Where there is no secret to keep, the mask is refused as one.
    let mut newcomer = crate::common::user_json("102", "Grace", "Hopper");
    newcomer["sip"]["password"] = json!("(hidden)");
    let (status, error) = server.post("/api/v1/users", newcomer).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("sip.password")),
        "{error}"
    );
    let export = masked("/api/v1/export".into()).await;
    let (status, error) = server
        .api(Method::POST, "/api/v1/restore?replace=true", Some(export))
        .await;
    assert_eq!(status, 422, "a masked backup does not restore: {error}");
    let (_, stored) = server.get(&user_path).await;
    assert_eq!(stored["sip"]["password"], SIP_PASSWORD);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_a_secrets_token() {
    let (server, ada) = office_with_secrets().await;
    let out = server
        .cli(&["token", "add", "auditor", "--scope", "secrets"])
        .await;
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["scope"], "secrets");
    let token = made["token"].as_str().unwrap();
    let user = text_as(&server, &format!("/api/v1/users/{ada}"), token).await;
    assert!(user.contains(SIP_PASSWORD), "{user}");
    server.stop().await;
}
