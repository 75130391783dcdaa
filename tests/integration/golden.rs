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

/// The golden site: its settings, and the users its phones name.
struct GoldenSite {
    server: TestServer,
    lines: [Value; 2],
}

impl GoldenSite {
    async fn start() -> GoldenSite {
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
        let lines = [
            json!({"user": ada["id"]}),
            json!({"user": bob["id"], "label": "Bob"}),
        ];
        GoldenSite { server, lines }
    }

    /// Adds a family's golden phone, as its `device.json` describes it.
    async fn add_device(&self, spec: &Value) {
        // Two lines unless the family's golden phone has a single account.
        let line_count = spec.get("lines").and_then(Value::as_u64).unwrap_or(2) as usize;
        self.server
            .add_device(json!({
                "mac": spec["mac"],
                "model": spec["model"],
                "lines": self.lines.iter().take(line_count).collect::<Vec<_>>(),
                "keys": spec.get("keys").cloned().unwrap_or(json!([])),
                "modules": spec.get("modules").cloned().unwrap_or(json!([])),
            }))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_renders_its_golden_files_over_http_and_tftp() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let site = GoldenSite::start().await;
    let server = &site.server;
    let mut failures = Vec::new();
    let families = families();
    assert!(!families.is_empty());
    for (dir, spec) in families {
        let family = dir.file_name().unwrap().to_string_lossy().into_owned();
        site.add_device(&spec).await;
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
                // A file may sit in folders (Grandstream's gs-phonebook/<mac>/).
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
    site.server.stop().await;
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
                name == "device.json"
                    || name == "identify.json"
                    || listed.contains(&name.as_str())
                    || listed.iter().any(|f| f.starts_with(&format!("{name}/"))),
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

/// What every family's reference table checks, or says does not apply to
/// its phones (and why).
const FEATURES: &[&str] = &[
    "registration server",
    "registration port",
    "transport",
    "outbound proxy",
    "registration expiry",
    "blf",
    "speed dial",
    "blf speed dial",
    "directed pickup",
    "group pickup",
    "park",
    "voicemail",
    "dnd",
    "forward",
    "intercom",
    "ntp",
    "time zone",
    "daylight saving",
    "half-hour zone",
    "southern hemisphere",
    "dial plan",
    "language",
    "phonebook",
    "provisioning url",
    "provisioning polling",
    "firmware url",
];

/// A family's reference table, `tests/reference/<name>.toml`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceTable {
    #[serde(default)]
    check: Vec<Check>,
    /// Features its phones do not have, with why.
    #[serde(default)]
    not_applicable: std::collections::BTreeMap<String, String>,
}

/// One parameter in the form a phone acts on.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    /// Which of [`FEATURES`].
    feature: String,
    /// The golden file it is in (`{mac}` for the device's MAC).
    file: String,
    /// A regular expression (multi-line: `^` and `$` are a line's ends).
    pattern: String,
    /// Where the form comes from: two independent references.
    sources: Vec<String>,
    /// Site settings laid over the golden site's for this check.
    #[serde(default)]
    settings: serde_json::Map<String, Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_familys_files_meet_its_reference_table() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let site = GoldenSite::start().await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (dir, spec) in families() {
        let Some(name) = spec.get("reference").and_then(Value::as_str) else {
            continue;
        };
        let path = root.join(format!("{name}.toml"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let table: ReferenceTable =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        failures.extend(coverage_gaps(name, &table));
        site.add_device(&spec).await;
        let mac = spec["mac"].as_str().expect("mac");
        let family = dir.file_name().unwrap().to_string_lossy().into_owned();
        for check in &table.check {
            let file = check.file.replace("{mac}", mac);
            let body = site.preview(mac, &file, &check.settings).await;
            let found = regex::RegexBuilder::new(&check.pattern)
                .multi_line(true)
                .build()
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", check.feature))
                .is_match(&body);
            if !found {
                failures.push(format!(
                    "{family} ({name}): {}: /{}/ not in {file}",
                    check.feature, check.pattern
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "reference checks fail:\n{}",
        failures.join("\n")
    );
    assert!(checked > 0, "no family has a reference table");
    site.server.stop().await;
}

/// Features a table neither checks nor excludes, checks with fewer than two
/// sources, and names that are no feature.
fn coverage_gaps(name: &str, table: &ReferenceTable) -> Vec<String> {
    let mut gaps = Vec::new();
    for feature in FEATURES {
        let checked = table.check.iter().any(|c| c.feature == *feature);
        if !checked && !table.not_applicable.contains_key(*feature) {
            gaps.push(format!("{name}: nothing checks \"{feature}\""));
        }
    }
    let named = table
        .check
        .iter()
        .map(|c| &c.feature)
        .chain(table.not_applicable.keys());
    for feature in named {
        if !FEATURES.contains(&feature.as_str()) {
            gaps.push(format!("{name}: \"{feature}\" is not a feature"));
        }
    }
    for check in &table.check {
        if check.sources.len() < 2 {
            gaps.push(format!(
                "{name}: {} has {} source(s), not two",
                check.feature,
                check.sources.len()
            ));
        }
    }
    gaps
}

impl GoldenSite {
    /// A file of the device as the admin preview renders it, with
    /// `settings` laid over the site's for the while.
    async fn preview(
        &self,
        mac: &str,
        file: &str,
        settings: &serde_json::Map<String, Value>,
    ) -> String {
        let server = &self.server;
        if !settings.is_empty() {
            let mut laid = crate::common::site_settings();
            laid.as_object_mut().unwrap().extend(settings.clone());
            let (status, body) = server
                .api(reqwest::Method::PUT, "/api/v1/settings", Some(laid))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = server
            .admin_text(&format!("/api/v1/devices/{mac}/files/{file}"))
            .await;
        if !settings.is_empty() {
            server.put_site_settings().await;
        }
        assert_eq!(status, 200, "{file}: {body}");
        body
    }
}
