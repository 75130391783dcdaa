//! Admin tokens under attack: a short bootstrap token, floods of wrong
//! tokens, and read tokens reaching for passwords.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_deskboot");

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
