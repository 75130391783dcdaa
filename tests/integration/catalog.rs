//! Every model of the catalog, not only each family's golden phone: a
//! device with a line, a BLF and a speed dial (where the model has keys)
//! renders every file the model asks for, through the admin preview, over
//! HTTP and over TFTP, well-formed, with the line's credentials in some
//! file.

use serde_json::{Value, json};

use crate::common::{TestServer, site_settings, user_json};
use crate::golden::check_well_formed;

/// The keys a model's test device gets: a BLF and a speed dial where its
/// phone has keys of those types.
fn keys_for(model: &Value) -> Vec<Value> {
    let line_keys = model["line_keys"].as_u64().unwrap_or(0);
    let allows = |kind: &str| {
        model["key_types"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t == kind))
    };
    let mut keys = Vec::new();
    if line_keys >= 2 && allows("blf") {
        keys.push(json!({"index": 2, "type": "blf", "value": "102", "label": "Bob"}));
    }
    if line_keys >= 3 && allows("speed_dial") {
        keys.push(json!({"index": 3, "type": "speed_dial", "value": "+15551234", "label": "Desk"}));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_renders_every_file_it_asks_for() {
    let server = TestServer::start().await;
    // No provisioning_url: files must render without one (the phone's own
    // request implies it; a preview has none).
    let mut settings = site_settings();
    settings.as_object_mut().unwrap().remove("provisioning_url");
    let (status, _) = server
        .api(reqwest::Method::PUT, "/api/v1/settings", Some(settings))
        .await;
    assert_eq!(status, 200);
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server.add_user(user_json("102", "Bob", "Babbage")).await;
    let (status, models) = server.get("/api/v1/models").await;
    assert_eq!(status, 200);
    let models = models.as_array().expect("a list").clone();
    let mut failures = Vec::new();
    for (n, model) in models.iter().enumerate() {
        let id = model["id"].as_str().expect("id");
        let mac = format!("02aa{n:08x}");
        let (status, device) = server
            .post(
                "/api/v1/devices",
                json!({"mac": mac, "model": id, "lines": [{"user": ada["id"]}], "keys": keys_for(model)}),
            )
            .await;
        if status != 201 {
            failures.push(format!("{id}: device refused: {device}"));
            continue;
        }
        let mut credentials = false;
        for file in model["files"].as_array().expect("files") {
            let name = file["name"].as_str().expect("name").replace("{mac}", &mac);
            match render_everywhere(&server, &mac, &name).await {
                Ok(body) => {
                    check_well_formed(id, &name, &body);
                    credentials |= String::from_utf8_lossy(&body).contains("Pw-101-secret");
                }
                Err(failure) => failures.push(format!("{id}: {name}: {failure}")),
            }
        }
        if !credentials {
            failures.push(format!("{id}: no file carries the line's password"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} models fail:\n{}",
        failures.len(),
        models.len(),
        failures.join("\n")
    );
    server.stop().await;
}

/// A file as the admin preview, HTTP and TFTP give it: the preview's bytes,
/// which TFTP (no `Host` either) must give the same for a per-device file
/// (a common file shared by several models is the first one's over TFTP).
async fn render_everywhere(server: &TestServer, mac: &str, name: &str) -> Result<Vec<u8>, String> {
    let preview = reqwest::Client::new()
        .get(server.admin_url(&format!("/api/v1/devices/{mac}/files/{name}")))
        .bearer_auth(crate::common::TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = preview.status();
    let preview = preview.bytes().await.map_err(|e| e.to_string())?.to_vec();
    if status != 200 {
        return Err(format!(
            "preview {status}: {}",
            String::from_utf8_lossy(&preview)
        ));
    }
    let (status, _) = server.phone_get(&format!("/{name}"), None).await;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let over_tftp = server
        .tftp_curl(name)
        .await
        .map_err(|code| format!("TFTP: curl exit {code}"))?;
    if name.contains(mac) && over_tftp != preview {
        return Err("TFTP differs from the preview".into());
    }
    Ok(preview)
}
