//! Golden files: for each phone family, a fixed phone renders byte-for-byte
//! to the files under `tests/golden/<family>/`, over HTTP and over TFTP.
//!
//! Each family folder holds a `device.json` (`model`, `mac`, optional
//! `modules`, `keys` and `lines` (1 or the default 2), and the `files` to
//! fetch), the expected files, and
//! an `identify.json`: real User-Agents and paths with what they must be
//! recognised as.
//! A template change shows up as a golden diff; after reviewing it,
//! regenerate with `UPDATE_GOLDEN=1 cargo test golden`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{TestServer, user_json};

fn golden_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every family folder, sorted, with its parsed `device.json`.
fn families() -> Vec<(PathBuf, Value)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("device.json").exists())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let spec = std::fs::read_to_string(dir.join("device.json")).expect("device.json");
            let spec: Value =
                serde_json::from_str(&spec).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            (dir, spec)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_renders_its_golden_files_over_http_and_tftp() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let mut bob = user_json("102", "Bob", "O'Brien & <Sons>");
    bob["caller_id"] = json!({"internal_name": "Bob \"The Builder\""});
    bob["mobile"] = json!("+15550102");
    let bob = server.add_user(bob).await;
    let mut hidden = user_json("190", "Hidden", "Fax");
    hidden["in_directory"] = json!(false);
    server.add_user(hidden).await;

    let two_lines = [
        json!({"user": ada["id"]}),
        json!({"user": bob["id"], "label": "Bob"}),
    ];
    let mut failures = Vec::new();
    let families = families();
    assert!(!families.is_empty());
    for (dir, spec) in families {
        let family = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Two lines unless the family's golden phone has a single account.
        let line_count = spec.get("lines").and_then(Value::as_u64).unwrap_or(2) as usize;
        server
            .add_device(json!({
                "mac": spec["mac"],
                "model": spec["model"],
                "lines": two_lines.iter().take(line_count).collect::<Vec<_>>(),
                "keys": spec.get("keys").cloned().unwrap_or(json!([])),
                "modules": spec.get("modules").cloned().unwrap_or(json!([])),
            }))
            .await;
        for file in spec["files"].as_array().expect("files") {
            let file = file.as_str().expect("file name");
            let (status, body) = server.phone_get(&format!("/{file}"), None).await;
            assert_eq!(status, 200, "{family}: {file}");
            let over_tftp = server.tftp_curl(file).await.expect("tftp");
            assert_eq!(over_tftp, body, "{family}: {file} differs over TFTP");
            check_well_formed(&family, file, &body);
            let mac = spec["mac"].as_str().expect("mac");
            if !file.to_ascii_lowercase().contains(mac) {
                let text = String::from_utf8_lossy(&body);
                assert!(
                    !text.contains("-secret") && !text.contains("sip101"),
                    "{family}: the common file {file} carries a line's credentials"
                );
            }
            let path = dir.join(file);
            if update {
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
pub(crate) fn check_well_formed(family: &str, file: &str, body: &[u8]) {
    let text =
        std::str::from_utf8(body).unwrap_or_else(|_| panic!("{family}: {file} is not UTF-8"));
    if text.trim_start().starts_with('<') {
        if let Err(e) = roxmltree::Document::parse_with_options(
            text,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            },
        ) {
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
        // Avaya's `SET NAME value`; a repeatable setting (PHONEKEY) carries
        // its own key up to the first `;` ("Key=3").
        let key = match line.strip_prefix("SET ") {
            Some(_) if line.contains(';') => line.split(';').next().unwrap_or(line),
            Some(rest) => rest.split_whitespace().next().unwrap_or(rest),
            None => match line.split_once(['=', ':']) {
                Some((key, _)) => key,
                None => continue,
            },
        };
        assert!(
            seen.insert(key.trim().to_string()),
            "{family}: {file} sets {} twice",
            key.trim()
        );
    }
}

#[test]
fn golden_files_are_listed_in_their_device_json() {
    // A golden file nobody fetches any more would silently rot.
    for (dir, spec) in families() {
        let listed: Vec<&str> = spec["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name == "device.json" || name == "identify.json" || listed.contains(&name.as_str()),
                "{}: {name} is not in device.json",
                Path::new(&dir).display()
            );
        }
    }
}

#[test]
fn each_familys_user_agents_and_paths_are_recognised() {
    let catalog = deskboot::catalog::Catalog::builtin().expect("catalog");
    let mut checked = 0;
    for (dir, _) in families() {
        let Ok(text) = std::fs::read_to_string(dir.join("identify.json")) else {
            continue;
        };
        let cases: Vec<Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}/identify.json: {e}", dir.display()));
        for case in cases {
            let identity = match (case["user_agent"].as_str(), case["path"].as_str()) {
                (Some(ua), _) => catalog.identify_user_agent(ua),
                (None, Some(path)) => catalog.identify_path(path),
                _ => panic!("{}: a case needs user_agent or path: {case}", dir.display()),
            };
            let got = json!({
                "vendor": identity.vendor,
                "model": identity.model,
                "firmware": identity.firmware,
                "mac": identity.mac.map(|m| m.colon()),
            });
            for field in ["vendor", "model", "firmware", "mac"] {
                if let Some(expected) = case.get(field) {
                    assert_eq!(
                        &got[field],
                        expected,
                        "{}: {field} of {case}",
                        dir.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}
