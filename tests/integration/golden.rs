//! Golden files: a fixed office renders byte-for-byte to `tests/golden/`,
//! over HTTP and over TFTP. A template change shows up as a golden diff;
//! after reviewing it, regenerate with `UPDATE_GOLDEN=1 cargo test golden`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{TestServer, site_settings, user_json};

/// One family's fixed phone: its model, MAC, keys, and the files to check.
struct Family {
    dir: &'static str,
    model: &'static str,
    mac: &'static str,
    keys: Value,
    files: &'static [&'static str],
}

fn families() -> Vec<Family> {
    vec![Family {
        dir: "yealink",
        model: "yealink-t46s",
        mac: "001565aabbcc",
        keys: json!([
            {"index": 1, "type": "line", "label": "Ada"},
            {"index": 2, "type": "line", "line": 2, "label": "Shared 102"},
            {"index": 3, "type": "blf", "value": "103", "label": "Carol"},
            {"index": 4, "type": "speed_dial", "value": "+15551234", "label": "Front desk"},
            {"index": 5, "type": "blf_speed_dial", "value": "104", "label": "Dan"},
            {"index": 6, "type": "voicemail", "label": "Voicemail"},
            {"index": 7, "type": "pickup", "label": "Pickup"},
            {"index": 8, "type": "park", "value": "700", "label": "Park"},
            {"index": 9, "type": "dnd", "label": "DND"},
            {"index": 10, "type": "forward", "value": "+15559999", "label": "Forward"},
            {"index": 11, "type": "transfer", "value": "105", "label": "Transfer"},
            {"index": 12, "type": "intercom", "value": "106", "label": "Intercom"},
            {"index": 13, "type": "url", "value": "http://intranet.example.com/menu.xml", "label": "Menu"},
            {"index": 14, "type": "none"},
        ]),
        files: &["y000000000066.cfg", "001565aabbcc.cfg"],
    }]
}

fn golden_path(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir)
        .join(file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_renders_its_golden_files_over_http_and_tftp() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let server = TestServer::start().await;
    let (status, _) = server
        .api(
            reqwest::Method::PUT,
            "/api/v1/settings",
            Some(site_settings()),
        )
        .await;
    assert_eq!(status, 200);
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let mut shared = user_json("102", "Bob", "O'Brien & <Sons>");
    shared["caller_id"] = json!({"internal_name": "Bob \"The Builder\""});
    let bob = server.add_user(shared).await;

    let mut failures = Vec::new();
    for family in families() {
        server
            .add_device(json!({
                "mac": family.mac,
                "model": family.model,
                "lines": [{"user": ada["id"]}, {"user": bob["id"], "label": "Bob"}],
                "keys": family.keys,
            }))
            .await;
        for file in family.files {
            let (status, body) = server.phone_get(&format!("/{file}"), None).await;
            assert_eq!(status, 200, "{}: {file}", family.dir);
            let over_tftp = server.tftp_curl(file).await.expect("tftp");
            assert_eq!(over_tftp, body, "{}: {file} differs over TFTP", family.dir);
            check_well_formed(family.dir, file, &body);
            let path = golden_path(family.dir, file);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &body).unwrap();
                continue;
            }
            match std::fs::read(&path) {
                Ok(expected) if expected == body => {}
                Ok(_) => failures.push(format!("{} differs from the golden file", path.display())),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (review, then UPDATE_GOLDEN=1):\n{}",
        failures.join("\n")
    );
    server.stop().await;
}

/// XML must parse; a `key = value` file must not set a key twice (the
/// phone would silently keep one of them).
fn check_well_formed(family: &str, file: &str, body: &[u8]) {
    let text = std::str::from_utf8(body).unwrap_or_else(|_| panic!("{family}: {file} is not UTF-8"));
    if text.trim_start().starts_with('<') {
        if let Err(e) = roxmltree::Document::parse(text) {
            panic!("{family}: {file} is not well-formed XML: {e}\n{text}");
        }
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        assert!(seen.insert(key.trim().to_string()), "{family}: {file} sets {} twice", key.trim());
    }
}
