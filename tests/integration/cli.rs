//! The `deskboot` binary: `serve` as a real process, and the admin commands
//! as clients of it.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_deskboot");

/// `deskboot serve` on ephemeral ports; returns the child and its HTTP, TFTP and admin addresses.
async fn spawn_serve(data: &Path) -> (Child, [String; 3]) {
    let (child, addrs, _) = spawn_serve_logged(data, "info").await;
    (child, addrs)
}

/// Everything a server process has written, stdout and stderr.
pub(super) type Log = Arc<Mutex<String>>;

/// Like [`spawn_serve`], at a log level, keeping everything it writes.
async fn spawn_serve_logged(data: &Path, level: &str) -> (Child, [String; 3], Log) {
    start_logged(serve_command(data, level)).await
}

/// The command line of `deskboot serve` on ephemeral loopback ports.
pub(super) fn serve_command(data: &Path, level: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--data"])
        .arg(data)
        .args([
            "--http",
            "127.0.0.1:0",
            "--tftp",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .env_remove("DESKBOOT_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .env("DESKBOOT_LOG", level)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts `command`, a `deskboot serve`, and waits until it listens;
/// returns the child, its HTTP, TFTP and admin addresses, and its log.
pub(super) async fn start_logged(mut command: Command) -> (Child, [String; 3], Log) {
    let mut child = command.spawn().expect("deskboot serve starts");
    let log: Log = Arc::default();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if line.contains("deskboot listening") {
                return line;
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve logs its addresses");
    let addr = |key: &str| {
        listening
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {listening}"))
            .to_string()
    };
    let addrs = [addr("http"), addr("tftp"), addr("admin")];
    // Keep draining both pipes so the server never blocks on a full one.
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let keep = log.clone();
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = errors.next_line().await {
            keep.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    (child, addrs, log)
}

async fn cli(admin: &str, data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--server", &format!("http://{admin}"), "--data"])
        .arg(data)
        .env_remove("DESKBOOT_ADMIN_TOKEN")
        .output()
        .await
        .expect("deskboot runs")
}

pub(super) async fn stop(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}

/// What curl fetches, as text; empty when it fails.
async fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", url])
        .output()
        .await
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The walk-through phone's file over HTTP carries its password, and the
/// provisioning URL the phone learns from the Host it used.
async fn assert_served_over_http(http: &str, password: &str) {
    let over_http = curl(&format!("http://{http}/001565aabbcc.cfg")).await;
    assert!(
        over_http.contains(password) && over_http.contains(&format!("http://{http}")),
        "{over_http}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, [http, tftp, admin]) = spawn_serve(&data).await;
    assert!(
        data.join("admin.token").exists(),
        "a token is generated at first start"
    );

    let site = cli(
        &admin,
        &data,
        &[
            "settings",
            "set",
            "sip_server=pbx.example.com",
            "ntp_server=pool.ntp.org",
            "time_zone=Europe/Paris",
        ],
    )
    .await;
    assert!(
        site.status.success(),
        "{}",
        String::from_utf8_lossy(&site.stderr)
    );

    let added = cli(
        &admin,
        &data,
        &[
            "user",
            "add",
            "--extension",
            "101",
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
        ],
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let user: Value = serde_json::from_slice(&added.stdout).unwrap();
    let id = user["id"].to_string();
    let password = user["sip"]["password"].as_str().unwrap().to_string();

    let device = cli(
        &admin,
        &data,
        &[
            "device",
            "add",
            "00:15:65:AA:BB:CC",
            "--model",
            "yealink-t46s",
            "--user",
            &id,
            "--key",
            "2:speed_dial:*97:Voicemail",
        ],
    )
    .await;
    assert!(
        device.status.success(),
        "{}",
        String::from_utf8_lossy(&device.stderr)
    );

    let listed = cli(&admin, &data, &["device", "list"]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("yealink-t46s"));
    let users = cli(&admin, &data, &["user", "list"]).await;
    assert!(String::from_utf8_lossy(&users.stdout).contains("Ada Lovelace"));

    let rendered = cli(
        &admin,
        &data,
        &["render", "001565aabbcc", "001565aabbcc.cfg"],
    )
    .await;
    assert!(rendered.status.success());
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    assert!(rendered.contains(&password));
    assert!(rendered.contains("pbx.example.com"), "{rendered}");
    assert!(
        rendered.contains("local_time.summer_time = 1"),
        "{rendered}"
    );

    assert_served_over_http(&http, &password).await;
    let over_tftp = Command::new("curl")
        .args(["-sf", &format!("tftp://{tftp}/001565aabbcc.cfg")])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(over_tftp.stdout).unwrap(), rendered);

    // A Poly and a Cisco phone for the same user, as the README shows.
    for (mac, model) in [
        ("0004f2aabbcc", "poly-vvx-450"),
        ("00562b043615", "cisco-mpp-8851"),
    ] {
        let added = cli(
            &admin,
            &data,
            &["device", "add", mac, "--model", model, "--user", &id],
        )
        .await;
        assert!(added.status.success(), "{model}");
    }
    let master = curl(&format!("http://{http}/000000000000.cfg")).await;
    assert!(master.contains("[PHONE_MAC_ADDRESS]-user.cfg"), "{master}");
    let poly = curl(&format!("tftp://{tftp}/0004f2aabbcc-user.cfg")).await;
    assert!(
        poly.contains(&format!("reg.1.auth.password=\"{password}\"")),
        "{poly}"
    );
    let cisco = curl(&format!("http://{http}/00562b043615.xml")).await;
    assert!(cisco.contains(&password), "{cisco}");

    let bad = cli(
        &admin,
        &data,
        &["device", "add", "00:15:65:AA:BB", "--model", "yealink-t46s"],
    )
    .await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("mac"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let no_token = Command::new(BIN)
        .args([
            "user",
            "list",
            "--server",
            &format!("http://{admin}"),
            "--token",
            "wrong",
        ])
        .output()
        .await
        .unwrap();
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("token"));

    stop(server).await;

    // Everything survives a restart, with the same generated token.
    let (server, [http, _, admin]) = spawn_serve(&data).await;
    assert_served_over_http(&http, &password).await;
    let shown = cli(&admin, &data, &["device", "show", "0015.65aa.bbcc"]).await;
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["mac"], "001565aabbcc");
    let removed = cli(&admin, &data, &["device", "rm", "001565aabbcc"]).await;
    assert!(removed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&removed.stdout).trim(),
        "deleted device 001565aabbcc"
    );
    let shown = cli(&admin, &data, &["user", "show", &id]).await;
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["first_name"], "Ada");
    // Her Poly and Cisco phones still use her: the store refuses, and says why.
    let refused = cli(&admin, &data, &["user", "rm", &id]).await;
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("remove the line first"), "{why}");
    let kept = cli(&admin, &data, &["user", "show", &id]).await;
    let kept: Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(kept, shown, "a refused rm changes nothing");
    stop(server).await;
}

async fn identify(args: &[&str]) -> (i32, Value) {
    let output = Command::new(BIN)
        .arg("identify")
        .args(args)
        .output()
        .await
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_uses_the_servers_recognition() {
    let (code, id) = identify(&[
        "--user-agent",
        "Yealink SIP-T46S 66.86.0.15 00:15:65:4a:a9:37",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(id["vendor"], "Yealink");
    assert_eq!(id["model"], "yealink-t46s");
    assert_eq!(id["firmware"], "66.86.0.15");
    assert_eq!(id["mac"], "00:15:65:4a:a9:37");

    // Many vendors ask for <mac>.cfg: the OUI says whose phone it is, but
    // not which model; an OUI nobody owns leaves the vendor unknown.
    let (code, id) = identify(&["--path", "/001565aabbcc.cfg"]).await;
    assert_eq!((code, id["vendor"].as_str()), (0, Some("Yealink")), "{id}");
    assert_eq!(id["model"], Value::Null);
    assert_eq!(id["mac"], "00:15:65:aa:bb:cc");
    let (code, id) = identify(&["--path", "/020000aabbcc.cfg"]).await;
    assert_eq!(code, 1, "{id}");

    let (code, id) = identify(&["--path", "y000000000066.cfg"]).await;
    assert_eq!((code, id["vendor"].as_str()), (0, Some("Yealink")));

    for unknown in ["curl/8.0", "", "\u{1}\u{2}garbage"] {
        let (code, id) = identify(&["--user-agent", unknown]).await;
        assert_eq!(code, 1, "{unknown:?}");
        assert_eq!(id["vendor"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, [http, _, admin]) = spawn_serve(&data).await;
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n101,Ada,Lovelace,ada@example.com,,,001565aabbcc,yealink-t46s\n102,Bob,B,,,,,\n").unwrap();
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n201,X,Y,,,,zz,yealink-t46s\n201,Dup,E,,,,,\n").unwrap();
    let refused = cli(&admin, &data, &["import", bad_csv.to_str().unwrap()]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("line 3"),
        "{stderr}"
    );
    ok(&cli(
        &admin,
        &data,
        &["import", csv.to_str().unwrap(), "--dry-run"],
    )
    .await);
    ok(&cli(&admin, &data, &["import", csv.to_str().unwrap()]).await);

    let template = dir.path().join("t.cfg");
    std::fs::write(&template, "# from the CLI {{ mac.bare }}\n").unwrap();
    ok(&cli(
        &admin,
        &data,
        &[
            "template",
            "put",
            "001565aabbcc",
            "001565aabbcc.cfg",
            template.to_str().unwrap(),
        ],
    )
    .await);
    let broken = dir.path().join("broken.cfg");
    std::fs::write(&broken, "ok\n{% if %}\n").unwrap();
    let refused = cli(
        &admin,
        &data,
        &[
            "template",
            "put",
            "yealink-t46s",
            "{mac}.cfg",
            broken.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let history = cli(
        &admin,
        &data,
        &["template", "history", "001565aabbcc", "001565aabbcc.cfg"],
    )
    .await;
    ok(&history);
    assert!(String::from_utf8_lossy(&history.stdout).contains("\"version\": 1"));

    ok(&cli(
        &admin,
        &data,
        &["clone", "001565aabbcc", "00:15:65:00:00:02", "--replace"],
    )
    .await);
    let old = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{http}/001565aabbcc.cfg"),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&old.stdout), "404");
    // The phone left behind asked, so it is discovered, and can be adopted.
    let discovered = cli(&admin, &data, &["discovered", "list"]).await;
    ok(&discovered);
    assert!(
        String::from_utf8_lossy(&discovered.stdout).contains("\"mac\": \"001565aabbcc\""),
        "{}",
        String::from_utf8_lossy(&discovered.stdout)
    );
    let users = cli(&admin, &data, &["user", "list"]).await;
    let users = String::from_utf8_lossy(&users.stdout);
    let bob = users
        .lines()
        .find(|line| line.contains("Bob"))
        .and_then(|line| line.split_whitespace().next())
        .expect("Bob is listed");
    let adopt = [
        "discovered",
        "adopt",
        "001565aabbcc",
        "--model",
        "yealink-t46s",
        "--user",
        bob,
    ];
    ok(&cli(&admin, &data, &adopt).await);
    let adopted = curl(&format!("http://{http}/001565aabbcc.cfg")).await;
    assert!(
        adopted.contains("account.1.user_name = 102"),
        "Bob's line: {adopted}"
    );
    let bans = cli(&admin, &data, &["ban", "list"]).await;
    ok(&bans);
    assert_eq!(String::from_utf8_lossy(&bans.stdout).trim(), "[]");
    let lifted = cli(&admin, &data, &["ban", "lift", "127.0.0.1"]).await;
    ok(&lifted);
    assert!(String::from_utf8_lossy(&lifted.stdout).contains("\"lifted\": 0"));
    // Bad input is refused with the reason, and adds no device.
    let bad_address = cli(&admin, &data, &["ban", "lift", "not-an-ip"]).await;
    assert!(!bad_address.status.success());
    assert!(String::from_utf8_lossy(&bad_address.stderr).contains("address"));
    let never_seen = cli(&admin, &data, &["discovered", "adopt", "0015650000ff"]).await;
    assert!(!never_seen.status.success());
    assert!(
        String::from_utf8_lossy(&never_seen.stderr).contains("has not been discovered"),
        "{}",
        String::from_utf8_lossy(&never_seen.stderr)
    );
    let devices = cli(&admin, &data, &["device", "list"]).await;
    let devices = String::from_utf8_lossy(&devices.stdout);
    assert!(
        devices.contains("001565aabbcc") && !devices.contains("0015650000ff"),
        "{devices}"
    );
    let new = Command::new("curl")
        .args(["-sf", &format!("http://{http}/001565000002.cfg")])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&new.stdout),
        "# from the CLI 001565000002\n"
    );

    let export = cli(&admin, &data, &["export"]).await;
    ok(&export);
    let backup = dir.path().join("backup.json");
    std::fs::write(&backup, &export.stdout).unwrap();
    stop(server).await;

    let fresh = dir.path().join("fresh");
    let (server, [http, _, admin]) = spawn_serve(&fresh).await;
    ok(&cli(&admin, &fresh, &["restore", backup.to_str().unwrap()]).await);
    let restored = Command::new("curl")
        .args(["-sf", &format!("http://{http}/001565000002.cfg")])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&restored.stdout),
        "# from the CLI 001565000002\n"
    );
    stop(server).await;
}

/// Checks what must hold after any crash: the store opens, the import is
/// there whole or not at all, and every device still renders.
async fn assert_consistent(
    http: &str,
    admin: &str,
    data: &Path,
    base_users: usize,
    batch: usize,
) -> usize {
    let users = cli(admin, data, &["user", "list"]).await;
    assert!(users.status.success());
    let count = String::from_utf8_lossy(&users.stdout).lines().count() - 1;
    assert!(
        (count - base_users).is_multiple_of(batch),
        "{count} users: an import was half-written (base {base_users}, batch {batch})"
    );
    let devices = cli(admin, data, &["device", "list"]).await;
    for line in String::from_utf8_lossy(&devices.stdout).lines().skip(1) {
        let mac = line.split_whitespace().next().unwrap();
        let status = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{http}/{mac}.cfg"),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            "200",
            "{mac} no longer renders"
        );
    }
    count
}

/// `phones` concurrent GETs of provisioned phones' files, answers ignored.
async fn boot_storm(http: String, phones: usize) {
    let mut tasks = Vec::new();
    for n in 0..phones {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&http).await else {
                return;
            };
            let request = format!(
                "GET /0015651{n:05x}.cfg HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(request.as_bytes()).await;
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_imports_clones_uploads_and_a_boot_storm_leaves_a_consistent_store() {
    const BATCH: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, [mut http, _, mut admin]) = spawn_serve(&data).await;
    let mut users = 0;
    for round in 0..4u32 {
        let mut csv = String::from(
            "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n",
        );
        for i in 0..BATCH {
            let n = round as usize * BATCH + i;
            csv.push_str(&format!(
                "{},F,L,,,,0015651{:05x},yealink-t46s\n",
                10_000 + n,
                n
            ));
        }
        let file = dir.path().join(format!("batch{round}.csv"));
        std::fs::write(&file, csv).unwrap();
        let importer = tokio::spawn({
            let (admin, data, file) = (admin.clone(), data.clone(), file.clone());
            async move { cli(&admin, &data, &["import", file.to_str().unwrap()]).await }
        });
        // A template upload and a boot storm are in flight as well.
        let template = dir.path().join(format!("t{round}.cfg"));
        std::fs::write(&template, format!("# round {round} {{{{ mac.bare }}}}\n")).unwrap();
        let uploader = tokio::spawn({
            let (admin, data, template) = (admin.clone(), data.clone(), template.clone());
            async move {
                let file = template.to_str().unwrap();
                cli(
                    &admin,
                    &data,
                    &["template", "put", "yealink-t46s", "{mac}.cfg", file],
                )
                .await
            }
        });
        let storm = tokio::spawn(boot_storm(http.clone(), 200));
        // Kill at a different point of the import each round, clone included.
        tokio::time::sleep(Duration::from_millis(40 + 120 * u64::from(round))).await;
        let _ = cli(
            &admin,
            &data,
            &["clone", "001565100000", "001565f00000", "--overwrite"],
        )
        .await;
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        let _ = importer.await;
        let _ = uploader.await;
        storm.abort();

        let (next, [next_http, _, next_admin]) = spawn_serve(&data).await;
        (server, http, admin) = (next, next_http, next_admin);
        users = assert_consistent(&http, &admin, &data, 0, BATCH).await;
        let in_force = cli(
            &admin,
            &data,
            &["template", "get", "yealink-t46s", "{mac}.cfg"],
        )
        .await;
        assert!(in_force.status.success());
        let in_force = String::from_utf8_lossy(&in_force.stdout);
        assert!(
            in_force.starts_with("# round ") || in_force.contains("deskboot: Yealink"),
            "the template in force is whole: {in_force}"
        );
    }
    assert!(users <= 4 * BATCH);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_the_audit_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, [http, tftp, admin], log) =
        spawn_serve_logged(&data, "trace,hyper=debug,h2=debug").await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim().to_string();
    // No server in this process has installed the TLS provider reqwest needs.
    deskboot::transport::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<&str>| {
        let request = client
            .request(method, format!("http://{admin}{path}"))
            .bearer_auth(&token)
            .header("Content-Type", "application/json");
        let request = match body {
            Some(body) => request.body(body.to_string()),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let mut answers = Vec::new();
    let (status, user) = call(
        reqwest::Method::POST,
        "/api/v1/users",
        Some(r#"{"extension": "101", "first_name": "Ada", "sip": {"password": "Canary-Sip-1"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let id: Value = serde_json::from_str(&user).unwrap();
    let id = id["id"].to_string();
    for (method, path, body) in [
        (reqwest::Method::POST, "/api/v1/users".to_string(), r#"{"extension": "101", "sip": {"password": "Canary-Dup-2"}}"#.to_string()),
        (reqwest::Method::PATCH, format!("/api/v1/users/{id}"), r#"{"sip": {"password": "Canary-Patch-3"}}"#.to_string()),
        (reqwest::Method::PATCH, format!("/api/v1/users/{id}"), r#"{"sip": {"password": "Canary\nBad-4"}}"#.to_string()),
        (reqwest::Method::PUT, "/api/v1/settings".to_string(), r#"{"sip_server": "pbx.example.com", "admin_password": "Canary-Admin-5"}"#.to_string()),
        (reqwest::Method::POST, "/api/v1/devices".to_string(), format!(r#"{{"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{{"user": {id}}}]}}"#)),
        (reqwest::Method::POST, "/api/v1/import".to_string(), "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n102,Bob,B,,,Canary-Csv-6,,\n103,Eve,E,,,Canary-Csv-7,zz,nope\n".to_string()),
        (reqwest::Method::POST, "/api/v1/import".to_string(), "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n104,Joe,J,,,Canary-Csv-8,,\n".to_string()),
        (reqwest::Method::GET, "/api/v1/audit".to_string(), String::new()),
    ] {
        let body = (!body.is_empty()).then_some(body.as_str());
        answers.push(call(method, &path, body).await);
    }
    for url in [
        format!("http://{http}/001565aabbcc.cfg"),
        format!("tftp://{tftp}/001565aabbcc.cfg"),
    ] {
        let out = Command::new("curl")
            .args(["-sf", &url])
            .output()
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Canary-Patch-3"),
            "{url}"
        );
    }
    let unknown = client
        .get(format!("http://{http}/001565ffffff.cfg"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let wrong = client
        .get(format!("http://{admin}/api/v1/users"))
        .bearer_auth("Canary-Token-9")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    stop(server).await;

    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("provision"),
        "the log is really captured:\n{log}"
    );
    // One line per request, naming the MAC even when it is not provisioned.
    assert!(
        log.lines()
            .any(|line| line.contains("mac=001565ffffff") && line.contains("status=\"not-found\"")),
        "{log}"
    );
    let (audit_status, audit) = answers.last().unwrap();
    assert_eq!(*audit_status, 200);
    for secret in [
        "Canary-Sip-1",
        "Canary-Dup-2",
        "Canary-Patch-3",
        "Canary",
        "Canary-Admin-5",
        "Canary-Csv-6",
        "Canary-Csv-7",
        "Canary-Csv-8",
        "Canary-Token-9",
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} is in the log");
        assert!(!audit.contains(secret), "{secret} is in the audit log");
        for (status, answer) in &answers[..answers.len() - 1] {
            assert!(
                *status < 300 || !answer.contains(secret),
                "{secret} is in an error: {answer}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_users_and_phones_are_changed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, [_, _, admin]) = spawn_serve(&data).await;
    let json_of = |out: &std::process::Output| -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let set = [
        "settings",
        "set",
        "sip_server=pbx.example.com",
        "sip_port:=5061",
    ];
    assert_eq!(
        json_of(&cli(&admin, &data, &set).await),
        json!({"sip_server": "pbx.example.com", "sip_port": 5061})
    );
    // A patch: what it does not name stays, null unsets.
    let unset = ["settings", "set", "sip_port:=null", "language=fr"];
    let global = json!({"sip_server": "pbx.example.com", "language": "fr"});
    assert_eq!(json_of(&cli(&admin, &data, &unset).await), global);
    assert_eq!(
        json_of(&cli(&admin, &data, &["settings", "show"]).await),
        global
    );

    let model = ["settings", "set", "--model", "yealink-t46s", "vlan_id:=20"];
    assert_eq!(
        json_of(&cli(&admin, &data, &model).await),
        json!({"vlan_id": 20})
    );
    let shown = cli(
        &admin,
        &data,
        &["settings", "show", "--model", "yealink-t46s"],
    )
    .await;
    assert_eq!(json_of(&shown), json!({"vlan_id": 20}));
    let phone = ["device", "add", "001565aabbcc", "--model", "yealink-t46s"];
    json_of(&cli(&admin, &data, &phone).await);
    let device = [
        "settings",
        "set",
        "--device",
        "00:15:65:AA:BB:CC",
        "language=de",
    ];
    assert_eq!(
        json_of(&cli(&admin, &data, &device).await),
        json!({"language": "de"})
    );

    // The same KEY=TEXT and KEY:=JSON changes for users and phones.
    let ada = json_of(&cli(&admin, &data, &["user", "add", "--extension", "101"]).await);
    let id = ada["id"].to_string();
    let rotated = [
        "user",
        "set",
        &id,
        "sip.password=N3w-secret",
        "mobile=+3360000",
    ];
    let ada = json_of(&cli(&admin, &data, &rotated).await);
    assert_eq!(
        (
            &ada["sip"]["password"],
            &ada["sip"]["username"],
            &ada["mobile"]
        ),
        (&json!("N3w-secret"), &json!("101"), &json!("+3360000"))
    );
    let lobby = ["device", "set", "001565aabbcc", "description=Lobby"];
    assert_eq!(
        json_of(&cli(&admin, &data, &lobby).await)["description"],
        "Lobby"
    );

    // Refused, with the reason, and nothing changes.
    for (bad, reason) in [
        (
            &["device", "set", "001565aabbcc", "model=no-such-phone"][..],
            "model",
        ),
        (&["user", "set", &id, "sip..password=x"], "no empty part"),
        (
            &["settings", "set", "time_zone=Mars/Olympus"],
            "settings.time_zone",
        ),
        (
            &["settings", "set", "sip_port:=five"],
            "after := comes JSON",
        ),
        (
            &["settings", "set", "--model", "no-such-phone", "language=fr"],
            "model no-such-phone",
        ),
    ] {
        let refused = cli(&admin, &data, bad).await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(reason),
            "{bad:?}: {stderr}"
        );
    }
    assert_eq!(
        json_of(&cli(&admin, &data, &["settings", "show"]).await),
        global
    );
    let phone = json_of(&cli(&admin, &data, &["device", "show", "001565aabbcc"]).await);
    assert_eq!(
        (&phone["model"], &phone["description"]),
        (&json!("yealink-t46s"), &json!("Lobby"))
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_import_shows_a_progress_bar_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, [_, _, admin]) = spawn_serve(&data).await;
    let csv = dir.path().join("many.csv");
    let mut text =
        String::from("extension,firstname,lastname,email,sip_username,sip_password,mac,model\n");
    for i in 0..5000 {
        text.push_str(&format!("{},User,N{i},,,,,\n", 10_000 + i));
    }
    std::fs::write(&csv, text).unwrap();
    // `script` gives the command a terminal, as an administrator's shell does.
    let command = format!(
        "{BIN} import {} --server http://{admin} --data {}",
        csv.display(),
        data.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .await
        .expect("script (util-linux) runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("checking") || shown.contains("writing"),
        "a progress bar: {shown}"
    );
    assert!(
        shown.contains("\"users\": 5000"),
        "then the answer: {shown}"
    );
    stop(server).await;
}

/// sled's own background flusher is off (it rewrote pages for ever once a
/// store was reopened): an administrator's change is on disk when the API
/// answers, and a phone's sighting within a flush tick, even if the server
/// is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_and_a_sighting_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, [_, _, admin]) = spawn_serve(&data).await;
    let csv = dir.path().join("one.csv");
    std::fs::write(
        &csv,
        "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
         101,Ada,L,,,,001565000001,yealink-t46s\n",
    )
    .unwrap();
    assert!(
        cli(&admin, &data, &["import", csv.to_str().unwrap()])
            .await
            .status
            .success()
    );
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (mut server, [http, _, admin]) = spawn_serve(&data).await;
    let users = cli(&admin, &data, &["user", "list"]).await;
    assert!(
        String::from_utf8_lossy(&users.stdout).contains("Ada L"),
        "the import survived"
    );
    // No server in this process has installed the TLS provider reqwest needs.
    deskboot::transport::tls::install_crypto_provider();
    let fetched = reqwest::get(format!("http://{http}/001565000001.cfg"))
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    let last_seen = |admin: String, data: std::path::PathBuf| async move {
        let status = cli(&admin, &data, &["device", "status", "001565000001"]).await;
        let status: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        status["last_seen"].as_u64()
    };
    let mut seen = None;
    for _ in 0..50 {
        seen = last_seen(admin.clone(), data.clone()).await;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.is_some(), "the fetch is seen");
    // An action that changes no record is written on its own.
    let lifted = cli(&admin, &data, &["ban", "lift", "192.0.2.7"]).await;
    assert!(lifted.status.success());
    // Two flush ticks: the sighting is in the store and on disk.
    tokio::time::sleep(deskboot::provision::SIGHTING_FLUSH_INTERVAL * 2).await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (server, [_, _, admin]) = spawn_serve(&data).await;
    assert_eq!(
        last_seen(admin.clone(), data.clone()).await,
        seen,
        "the sighting survived"
    );
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let audit = reqwest::Client::new()
        .get(format!("http://{admin}/api/v1/audit"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains("ban.lift"), "the action survived: {audit}");
    stop(server).await;
}

/// `deskboot serve` started with these limits on open files.
async fn serve_with_open_files(data: &Path, soft: u64, hard: u64) -> (Child, [String; 3], Log) {
    use nix::sys::resource::{Resource, setrlimit};
    // More connections from this one address than a NAT's default share.
    let config = data.join("many-connections.toml");
    std::fs::write(&config, "http_max_connections_per_source = 100000\n").unwrap();
    let mut command = serve_command(data, "info");
    command.arg("--config").arg(&config);
    // setrlimit is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(move || Ok(setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?));
    }
    start_logged(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_even_its_hard_open_files_limit_is_low_for_a_storm() {
    let data = tempfile::tempdir().unwrap();
    let (server, _, log) = serve_with_open_files(data.path(), 1024, 1024).await;
    let log = log.lock().unwrap().clone();
    assert!(log.contains("open files limit is low"), "{log}");
    assert!(!log.contains("limit raised"), "{log}");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_a_low_open_files_limit_and_holds_more_connections_than_it() {
    use nix::sys::resource::{Resource, getrlimit};
    const SOFT: u64 = 256;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard > 2 * SOFT,
        "this test needs a hard limit over {}",
        2 * SOFT
    );
    let data = tempfile::tempdir().unwrap();
    // As a shell or systemd starts a service: a low soft limit under a
    // high hard one.
    let (server, [http, _, _], log) = serve_with_open_files(data.path(), SOFT, hard).await;
    let pid = server.id().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a line for open files")
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3],
        hard.to_string(),
        "soft limit raised: {limits}"
    );
    assert!(log.lock().unwrap().contains("open files limit raised"));

    // More connections at once than the old limit allows, each answered
    // and kept open until all are.
    let mut connections = Vec::new();
    for _ in 0..2 * SOFT {
        let mut stream = tokio::net::TcpStream::connect(&http).await.unwrap();
        stream
            .write_all(b"GET /nothing.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        connections.push(stream);
    }
    for stream in &mut connections {
        let mut status = [0; 12];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut status))
            .await
            .expect("answered while the others stay open")
            .unwrap();
        assert_eq!(&status, b"HTTP/1.1 404");
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/deskboot.service"
    ))
    .unwrap();
    assert!(unit.contains("LimitNOFILE="), "the unit raises the limit");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deskboot.service");
    // verify checks that ExecStart's program exists: point it at this build.
    std::fs::write(&path, unit.replace("/usr/local/bin/deskboot", BIN)).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .await
        .expect("systemd-analyze runs (apt-get install systemd)");
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_while_tftp_sends_passwords_to_every_network() {
    let data = tempfile::tempdir().unwrap();
    let warning = "SIP passwords go over TFTP, in clear, to every network";
    let (server, _, log) = start_logged(serve_command(data.path(), "info")).await;
    assert!(log.lock().unwrap().contains(warning), "the default warns");
    stop(server).await;

    // Phones that authenticate over HTTP get no secrets over TFTP, unless
    // a network is named.
    let config = data.path().join("deskboot.toml");
    std::fs::write(&config, "[provisioning]\nhttp_auth = \"device\"\n").unwrap();
    let mut command = serve_command(data.path(), "info");
    command.arg("--config").arg(&config);
    let (server, _, log) = start_logged(command).await;
    assert!(!log.lock().unwrap().contains(warning));
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_a_flood_of_addresses_give_way_to_phones() {
    use nix::sys::resource::{Resource, setrlimit};
    let data = tempfile::tempdir().unwrap();
    // Idle connections would be kept a minute: a phone answered well
    // before that was answered thanks to the caps, not to the timeout.
    let config = data.path().join("deskboot.toml");
    std::fs::write(&config, "http_request_timeout_secs = 60\n").unwrap();
    let mut command = serve_command(data.path(), "info");
    command.arg("--config").arg(&config);
    // A low open-files limit, as a shell or systemd may give.
    unsafe {
        command.pre_exec(|| Ok(setrlimit(Resource::RLIMIT_NOFILE, 1024, 1024)?));
    }
    let (server, [http, _, _], log) = start_logged(command).await;
    assert!(
        log.lock()
            .unwrap()
            .contains("connections per HTTP listener lowered"),
        "the cap fits the limit"
    );
    let http: std::net::SocketAddr = http.parse().unwrap();
    // 2,000 connections that say nothing, from eight addresses.
    let mut idle = Vec::new();
    for n in 0..2000u32 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let source = std::net::Ipv4Addr::new(127, 0, 9, 1 + (n % 8) as u8);
        socket.bind((source, 0).into()).unwrap();
        idle.push(socket.connect(http).await.unwrap());
    }
    deskboot::transport::tls::install_crypto_provider();
    let phone = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let answer = phone
        .get(format!("http://{http}/y000000000066.cfg"))
        .send()
        .await
        .expect("answered while the idle connections are held");
    assert_eq!(answer.status(), 200);
    drop(idle);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_serve_within_seconds_and_leaves_the_store_openable() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, [http, tftp, _], _) = start_logged(serve_command(data.path(), "info")).await;
    // What a drain waits for: a connection kept open and silent, and a
    // TFTP transfer whose client never acknowledges.
    let _idle = tokio::net::TcpStream::connect(&http).await.unwrap();
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    silent
        .send_to(b"\x00\x01y000000000066.cfg\x00octet\x00", &tftp)
        .await
        .unwrap();
    let mut first = [0u8; 600];
    silent.recv_from(&mut first).await.unwrap();

    let pid = server.id().expect("running").to_string();
    let signalled = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
    deskboot::store::Store::open(&data.path().join("store")).expect("the store is closed");
}
