//! Phones' HTTPS: the same files as HTTP over rustls, TLS 1.2 at the
//! oldest, and a certificate replaced on SIGHUP while the server runs.
//! Certificates come from `deskboot::transport::tls::write_self_signed`, the code
//! behind `deskboot cert self-signed`. Phones' client certificates, and the
//! CAs that sign them, are made here with rcgen, like vendors' factory ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use deskboot::config::{ClientCertMode, HttpsConfig};
use rcgen::{CertifiedIssuer, KeyPair};

use crate::common::{TestServer, run, user_json};

const FILE: &str = "/001565aabbcc.cfg";
const PASSWORD: &str = "Pw-101-secret";

/// A fresh self-signed certificate for localhost and 127.0.0.1 in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    deskboot::transport::tls::write_self_signed(dir, &names).expect("certificate written")
}

/// A client that trusts only `cert` (PEM file) and reaches `localhost` at `addr`.
fn client_trusting(cert: &Path, addr: SocketAddr) -> reqwest::Client {
    deskboot::transport::tls::install_crypto_provider();
    let pem = std::fs::read(cert).expect("certificate readable");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM certificate")])
        .resolve("localhost", addr)
        .build()
        .expect("client")
}

/// A client that trusts only `cert` and presents the phone certificate
/// `identity` (PEM certificate and key).
fn client_presenting(cert: &Path, addr: SocketAddr, identity: &PhoneCert) -> reqwest::Client {
    deskboot::transport::tls::install_crypto_provider();
    let pem = std::fs::read(cert).expect("certificate readable");
    let identity = format!("{}{}", identity.key_pem, identity.cert_pem);
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM certificate")])
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("PEM identity"))
        .resolve("localhost", addr)
        .build()
        .expect("client")
}

/// A CA that signs phones' client certificates, like a vendor's factory CA.
fn phone_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A phone's client certificate and key, as PEM.
struct PhoneCert {
    cert_pem: String,
    key_pem: String,
}

/// A client certificate signed by `ca` whose subject CN is `cn`.
fn phone_cert(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> PhoneCert {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("signed");
    PhoneCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// GET `path` over HTTPS by name: status and body, or the error.
async fn fetch(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let url = format!("https://localhost:{}{path}", addr.port());
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_vec()))
}

async fn provision_ada(server: &TestServer) {
    server.ada_with_a_t46s().await;
}

fn served_over_http(metrics: &str) -> u64 {
    http_requests(metrics, "served")
}

fn http_requests(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!(r#"deskboot_requests_total{{transport="http",outcome="{outcome}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .expect("requests counter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_get_the_same_file_over_https_as_over_http() {
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(tls.path());
    let server = TestServer::start_with_https(&cert, &key).await;
    provision_ada(&server).await;
    let https = server.addrs.https.expect("HTTPS listens");

    let (status, over_http) = server.phone_get(FILE, None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&over_http).contains(PASSWORD));
    let metrics = |s: &TestServer| {
        let url = s.admin_url("/metrics");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let before = served_over_http(&metrics(&server).await);

    let client = client_trusting(&cert, https);
    let (status, over_https) = fetch(&client, https, FILE).await.expect("HTTPS answers");
    assert_eq!(status, 200);
    // The same file; only the URL it sends the phone back to (taken from
    // the Host header when no provisioning_url is set) keeps the scheme.
    let http_origin = format!("http://{}", server.addrs.http);
    let https_origin = format!("https://localhost:{}", https.port());
    let over_https = String::from_utf8(over_https).unwrap();
    assert!(over_https.contains(&https_origin), "{over_https}");
    assert_eq!(
        over_https,
        String::from_utf8_lossy(&over_http).replace(&http_origin, &https_origin),
        "HTTPS serves what HTTP serves"
    );
    assert_eq!(fetch(&client, https, "/nothing.cfg").await.unwrap().0, 404);
    assert_eq!(
        served_over_http(&metrics(&server).await),
        before + 1,
        "an HTTPS request counts as HTTP"
    );

    // curl, by IP address (the certificate names 127.0.0.1 too).
    let cert_arg = cert.display().to_string();
    let url = server.https_url(FILE);
    let curl = run(
        "curl",
        &["-sS", "--max-time", "10", "--cacert", &cert_arg, &url],
    )
    .await;
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        over_https.replace(&https_origin, &format!("https://{https}"))
    );

    // TLS 1.2 is the oldest version spoken. SECLEVEL=0 lets OpenSSL 3 offer
    // TLS 1.0/1.1 at all, so the refusal is the server's alert, not curl's.
    let tls12 = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--cacert",
            &cert_arg,
            &url,
        ],
    )
    .await;
    assert!(
        tls12.status.success(),
        "{}",
        String::from_utf8_lossy(&tls12.stderr)
    );
    let tls11 = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "--tlsv1",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
            "--cacert",
            &cert_arg,
            &url,
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&tls11.stderr);
    assert_eq!(
        tls11.status.code(),
        Some(35),
        "TLS 1.1 must be refused: {stderr}"
    );
    assert!(
        stderr.contains("alert"),
        "the server refused the handshake: {stderr}"
    );

    // A client that does not trust the certificate gets no answer.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = certificate(other.path());
    assert!(
        fetch(&client_trusting(&other_cert, https), https, FILE)
            .await
            .is_err()
    );

    // Shutdown drains HTTPS too, even with a kept-alive connection open.
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("the server stops with an HTTPS connection open");
    assert!(
        tokio::net::TcpStream::connect(https).await.is_err(),
        "HTTPS closed"
    );
}

/// The file of a second phone, which the first one's certificate must not get.
const OTHER_FILE: &str = "/001565aabbdd.cfg";
/// A Yealink common file: no MAC, so no certificate is needed.
const COMMON: &str = "/y000000000066.cfg";

async fn provision_ada_and_bob(server: &TestServer) {
    provision_ada(server).await;
    let bob = server.add_user(user_json("102", "Bob", "Noyce")).await;
    server
        .add_device(
            json!({"mac": "001565aabbdd", "model": "yealink-t46s", "lines": [{"user": bob["id"]}]}),
        )
        .await;
}

/// A server whose HTTPS verifies client certificates against `bundle`.
async fn start_verifying(
    cert: &Path,
    key: &Path,
    bundle: &Path,
    mode: ClientCertMode,
) -> TestServer {
    TestServer::start_with_https_config(HttpsConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: Some(bundle.to_path_buf()),
        client_cert: mode,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_gets_only_the_file_of_its_own_mac() {
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(tls.path());
    let factory = phone_ca("Yealink Factory CA");
    let bundle = tls.path().join("phones-ca.pem");
    std::fs::write(&bundle, factory.pem()).unwrap();
    let server = start_verifying(&cert, &key, &bundle, ClientCertMode::Optional).await;
    provision_ada_and_bob(&server).await;
    let https = server.addrs.https.expect("HTTPS listens");
    let metrics = || async {
        let text = reqwest::get(server.admin_url("/metrics")).await.unwrap();
        text.text().await.unwrap()
    };

    // Ada's phone: its factory certificate names its MAC, with a prefix.
    let ada = phone_cert(&factory, "SEP001565AABBCC");
    let phone = client_presenting(&cert, https, &ada);
    let (status, body) = fetch(&phone, https, FILE).await.expect("HTTPS answers");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(PASSWORD));
    assert_eq!(fetch(&phone, https, COMMON).await.unwrap().0, 200);
    // Bob's file is refused to it, with the 404 any refusal gets, and the
    // refusal is counted.
    let refused = http_requests(&metrics().await, "refused");
    assert_eq!(fetch(&phone, https, OTHER_FILE).await.unwrap().0, 404);
    assert_eq!(http_requests(&metrics().await, "refused"), refused + 1);
    // The colon form, in a CN with other words, binds as well.
    let bob = phone_cert(&factory, "Yealink T46S 00:15:65:AA:BB:DD");
    let bob_phone = client_presenting(&cert, https, &bob);
    assert_eq!(fetch(&bob_phone, https, OTHER_FILE).await.unwrap().0, 200);
    assert_eq!(fetch(&bob_phone, https, FILE).await.unwrap().0, 404);
    // A verified certificate that names no MAC vouches for no file.
    let nameless = client_presenting(&cert, https, &phone_cert(&factory, "Yealink phone"));
    assert_eq!(fetch(&nameless, https, FILE).await.unwrap().0, 404);
    assert_eq!(fetch(&nameless, https, COMMON).await.unwrap().0, 200);

    // Optional: a phone without a certificate is served as before, and so
    // is plain HTTP.
    let anonymous = client_trusting(&cert, https);
    assert_eq!(fetch(&anonymous, https, FILE).await.unwrap().0, 200);
    assert_eq!(server.phone_get(OTHER_FILE, None).await.0, 200);

    // A certificate from another CA is refused at the handshake.
    let foreign_ca = phone_ca("Someone Else CA");
    let forged = phone_cert(&foreign_ca, "001565AABBCC");
    let err = fetch(&client_presenting(&cert, https, &forged), https, FILE)
        .await
        .expect_err("no answer to a certificate of another CA");
    assert!(!err.is_empty());

    // curl, with --cert and --key, by IP address.
    let (ada_cert, ada_key) = (tls.path().join("ada.pem"), tls.path().join("ada-key.pem"));
    std::fs::write(&ada_cert, &ada.cert_pem).unwrap();
    std::fs::write(&ada_key, &ada.key_pem).unwrap();
    let curl = |path: &str| {
        let args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--cacert".into(),
            cert.display().to_string(),
            "--cert".into(),
            ada_cert.display().to_string(),
            "--key".into(),
            ada_key.display().to_string(),
            server.https_url(path),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run("curl", &args).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(curl(FILE).await, "200");
    assert_eq!(curl(OTHER_FILE).await, "404");

    // The bundle is reread with the certificate: once it holds the other
    // CA, that CA's phones get in and the first CA's no longer do.
    std::fs::write(&bundle, foreign_ca.pem()).unwrap();
    let reloadable = server.https_cert.clone().expect("HTTPS certificate");
    reloadable.reload().await.expect("the new bundle loads");
    let forged_phone = client_presenting(&cert, https, &forged);
    assert_eq!(fetch(&forged_phone, https, FILE).await.unwrap().0, 200);
    let fresh = client_presenting(&cert, https, &ada);
    assert!(fetch(&fresh, https, FILE).await.is_err());
    server.stop().await;
}

/// Secure zero-touch, as the README's steps set it up: phones' factory
/// certificates are the only way to a per-device file's passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_are_a_secure_zero_touch() {
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(tls.path());
    let factory = phone_ca("Poly Factory CA");
    let bundle = tls.path().join("phones-ca.pem");
    std::fs::write(&bundle, factory.pem()).unwrap();
    let server = start_verifying(&cert, &key, &bundle, ClientCertMode::Required).await;
    provision_ada_and_bob(&server).await;
    let https = server.addrs.https.expect("HTTPS listens");

    // Without a certificate: per-device files are refused, common files
    // (and firmware) stay open.
    let anonymous = client_trusting(&cert, https);
    assert_eq!(fetch(&anonymous, https, FILE).await.unwrap().0, 404);
    assert_eq!(fetch(&anonymous, https, COMMON).await.unwrap().0, 200);
    // With one, the phone gets its own file and only that.
    let phone = client_presenting(&cert, https, &phone_cert(&factory, "001565aabbcc"));
    let (status, body) = fetch(&phone, https, FILE).await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(PASSWORD));
    assert_eq!(fetch(&phone, https, OTHER_FILE).await.unwrap().0, 404);
    // Plain HTTP has no certificate to check: no per-device file there,
    // and TFTP leaves the passwords out.
    assert_eq!(server.phone_get(FILE, None).await.0, 404);
    assert_eq!(server.phone_get(COMMON, None).await.0, 200);
    let over_tftp = server.tftp_curl(&FILE[1..]).await.expect("TFTP answers");
    let over_tftp = String::from_utf8_lossy(&over_tftp);
    assert!(!over_tftp.contains(PASSWORD), "{over_tftp}");
    assert!(over_tftp.contains("sip101"), "the rest is there");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_https_configured_there_is_no_https_listener() {
    let server = TestServer::start().await;
    assert_eq!(server.addrs.https, None);
    assert!(server.https_cert.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_and_keeps_connections() {
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(tls.path());
    let old_cert = tls.path().join("old.pem");
    std::fs::copy(&cert, &old_cert).unwrap();
    let server = TestServer::start_with_https(&cert, &key).await;
    provision_ada(&server).await;
    let https = server.addrs.https.unwrap();
    let reloadable = server.https_cert.clone().expect("HTTPS certificate");

    // A kept-alive connection opened under the old certificate.
    let old_client = client_trusting(&old_cert, https);
    assert_eq!(fetch(&old_client, https, FILE).await.unwrap().0, 200);

    certificate(tls.path()); // new files in place of the old ones
    let new_client = client_trusting(&cert, https);
    assert!(
        fetch(&new_client, https, FILE).await.is_err(),
        "not reloaded yet"
    );
    reloadable.reload().await.expect("the new pair loads");
    assert_eq!(fetch(&new_client, https, FILE).await.unwrap().0, 200);
    assert!(
        fetch(&client_trusting(&old_cert, https), https, FILE)
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    // The old connection was not dropped: the client trusts only the old
    // certificate, so this answer can only come over that connection.
    assert_eq!(fetch(&old_client, https, FILE).await.unwrap().0, 200);

    // A broken key is refused and the certificate in use stays.
    std::fs::write(&key, "not a key\n").unwrap();
    let err = reloadable.reload().await.unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    let fresh = client_trusting(&cert, https);
    assert_eq!(fetch(&fresh, https, FILE).await.unwrap().0, 200);
    assert_eq!(server.phone_get(FILE, None).await.0, 200);
    server.stop().await;
}

/// The real binary: `cert self-signed`, `serve --https --admin-tls`, the CLI
/// over TLS, SIGHUP, SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deskboot_serve_reloads_its_certificate_on_sighup() {
    const BIN: &str = env!("CARGO_BIN_EXE_deskboot");
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let self_signed = |force: bool| {
        let mut command = Command::new(BIN);
        command
            .args(["cert", "self-signed", "--out"])
            .arg(&tls)
            .args(["--name", "localhost"]);
        if force {
            command.arg("--force");
        }
        command.output()
    };
    let made = self_signed(false).await.unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let again = self_signed(false).await.unwrap();
    assert!(
        !again.status.success(),
        "an existing pair is not replaced without --force"
    );
    let old_cert = dir.path().join("old.pem");
    std::fs::copy(&cert, &old_cert).unwrap();

    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path().join("data"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--tftp",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--https", "127.0.0.1:0", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--admin-tls")
        .env_remove("DESKBOOT_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("deskboot serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("deskboot listening") {
                return line;
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve logs its addresses");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = |key: &str| -> SocketAddr {
        listening
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {listening}"))
            .parse()
            .unwrap()
    };
    let (https, admin) = (addr("https"), addr("admin"));

    // Common files need no provisioning; 200 proves the handshake.
    const COMMON: &str = "/y000000000066.cfg";
    assert_eq!(
        fetch(&client_trusting(&old_cert, https), https, COMMON)
            .await
            .unwrap()
            .0,
        200
    );

    // The admin API is TLS too, with the same certificate; the CLI trusts
    // it through --ca, and plain HTTP gets no answer.
    let cli = |ca: &Path| {
        Command::new(BIN)
            .args([
                "user",
                "list",
                "--server",
                &format!("https://localhost:{}", admin.port()),
            ])
            .arg("--ca")
            .arg(ca)
            .arg("--data")
            .arg(dir.path().join("data"))
            .env_remove("DESKBOOT_ADMIN_TOKEN")
            .output()
    };
    let listed = cli(&old_cert).await.unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let plain = run(
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{admin}/healthz")],
    )
    .await;
    assert!(
        !plain.status.success(),
        "the admin listener speaks only TLS"
    );

    let replaced = self_signed(true).await.unwrap();
    assert!(replaced.status.success());
    let pid = child.id().expect("running").to_string();
    assert!(run("kill", &["-HUP", &pid]).await.status.success());
    // The reload is asynchronous: wait for the new certificate.
    let new_client = client_trusting(&cert, https);
    let mut served = false;
    for _ in 0..100 {
        if let Ok((200, _)) = fetch(&new_client, https, COMMON).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the new certificate is served after SIGHUP");
    let listed = cli(&cert).await.unwrap();
    assert!(
        listed.status.success(),
        "admin reloaded too: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server keeps running"
    );

    assert!(run("kill", &["-TERM", &pid]).await.status.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_count_over_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let https = deskboot::config::HttpsConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: cert.clone(),
        key,
        client_ca: None,
        client_cert: Default::default(),
    };
    let server = TestServer::start_configured(&dir.path().join("data"), |c| {
        c.https = Some(https);
        c.provisioning.http_auth = deskboot::access::phone_auth::AuthMode::Device;
    })
    .await;
    let device = server.ada_with_a_t46s().await;
    let password = device["http_auth"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = server.addrs.https.expect("HTTPS is on");
    let secure = client_trusting(&cert, addr);
    let over_tls = secure
        .get(format!("https://localhost:{}{FILE}", addr.port()))
        .basic_auth("001565aabbcc", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(over_tls.status(), 200);
    assert!(over_tls.text().await.unwrap().contains(PASSWORD));
    let in_clear = reqwest::Client::new()
        .get(server.http_url(FILE))
        .basic_auth("001565aabbcc", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(in_clear.status(), 401, "Basic never counts in clear");
    server.stop().await;
}
