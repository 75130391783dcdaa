//! The admin API: token, validation up front, and nothing stored on a refusal.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, user_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_needs_the_token() {
    let server = TestServer::start().await;
    let before = server.snapshot().await;
    let client = reqwest::Client::new();
    let url = server.admin_url("/api/v1/users");
    let body = user_json("101", "Ada", "Lovelace");
    for request in [
        client.post(&url).json(&body),
        client.post(&url).json(&body).bearer_auth("wrong"),
        client
            .post(&url)
            .json(&body)
            .header("Authorization", "Basic dGVzdDp0ZXN0"),
        client.get(&url),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains("token"));
    }
    assert_eq!(server.snapshot().await, before);
    // Health needs no token.
    let health = client
        .get(server.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_gets_a_strong_generated_password_and_sip_defaults() {
    let server = TestServer::start().await;
    let user = server
        .add_user(json!({"extension": "200", "first_name": "Grace"}))
        .await;
    assert_eq!(user["sip"]["username"], "200");
    assert_eq!(user["sip"]["auth_name"], "200");
    let password = user["sip"]["password"].as_str().unwrap();
    assert!(password.len() >= 16, "{password}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    let other = server.add_user(json!({"extension": "201"})).await;
    assert_ne!(other["sip"]["password"], user["sip"]["password"]);

    let id = user["id"].as_u64().unwrap();
    let (status, shown) = server.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!((status, &shown), (200, &user));
    server.stop().await;
}

/// Asserts a refusal: its status, the field it names, and an unchanged store.
async fn assert_refused(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Value,
    status: u16,
    field: &str,
) {
    let before = server.snapshot().await;
    let (got, error) = server.api(method, path, Some(body)).await;
    assert_eq!(got, status, "{error}");
    assert_eq!(error["field"], field, "{error}");
    assert!(!error["error"].as_str().unwrap_or_default().is_empty());
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused request changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_users_are_refused_with_the_field_and_change_nothing() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let users = "/api/v1/users";
    assert_refused(
        &server,
        Method::POST,
        users,
        user_json("101", "Eve", "Dup"),
        409,
        "extension",
    )
    .await;
    let mut same_sip = user_json("102", "Eve", "Sip");
    same_sip["sip"]["username"] = json!("sip101");
    assert_refused(&server, Method::POST, users, same_sip, 409, "sip.username").await;
    let mut same_email = user_json("103", "Eve", "Mail");
    same_email["email"] = json!("ada@example.com");
    assert_refused(&server, Method::POST, users, same_email, 409, "email").await;
    assert_refused(
        &server,
        Method::POST,
        users,
        json!({"first_name": "No extension"}),
        422,
        "extension",
    )
    .await;
    assert_refused(
        &server,
        Method::POST,
        users,
        json!({"extension": "104", "shoe_size": 9}),
        422,
        "shoe_size",
    )
    .await;
    let injected =
        json!({"extension": "105", "first_name": "Bob\nsecurity.user_password = admin:pwned"});
    assert_refused(&server, Method::POST, users, injected, 422, "first_name").await;

    let ada_path = format!("/api/v1/users/{}", ada["id"]);
    assert_refused(
        &server,
        Method::PATCH,
        &ada_path,
        json!({"last_name": "L\r\nx"}),
        422,
        "last_name",
    )
    .await;
    assert_refused(
        &server,
        Method::PATCH,
        &ada_path,
        json!({"id": 999}),
        422,
        "id",
    )
    .await;
    assert_refused(
        &server,
        Method::PATCH,
        "/api/v1/users/abc",
        json!({}),
        422,
        "id",
    )
    .await;

    let (status, patched) = server
        .api(
            Method::PATCH,
            &ada_path,
            Some(json!({"mobile": "+33600000000"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(patched["mobile"], "+33600000000");
    assert_eq!(
        patched["sip"], ada["sip"],
        "a patch keeps what it does not name"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_devices_are_refused_with_the_field_and_change_nothing() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let device = |patch: Value| {
        let mut d =
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]});
        for (k, v) in patch.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    let devices = "/api/v1/devices";
    let too_many_lines: Vec<Value> = (0..17).map(|_| json!({"user": ada["id"]})).collect();
    // Each patch to a valid device, the status and the field it is refused with.
    let refusals = [
        (json!({"mac": "00:15:65:AA:BB"}), 422, "mac"),
        (json!({"mac": "zz1565aabbcc"}), 422, "mac"),
        (json!({"model": "yealink-t99"}), 422, "model"),
        (json!({"lines": [{"user": 4242}]}), 409, "lines[0].user"),
        (
            json!({"keys": [{"index": 28, "type": "blf", "value": "102"}]}),
            422,
            "keys[0].index",
        ),
        (
            json!({"keys": [{"index": 1, "type": "teleport", "value": "x"}]}),
            422,
            "keys[0].type",
        ),
        (
            json!({"keys": [{"index": 1, "type": "blf"}]}),
            422,
            "keys[0].value",
        ),
        (
            json!({"keys": [{"index": 1, "type": "line", "line": 2}]}),
            422,
            "keys[0].line",
        ),
        (
            json!({"keys": [{"index": 1, "module": 1, "type": "blf", "value": "1"}]}),
            422,
            "keys[0].module",
        ),
        (json!({"lines": too_many_lines}), 422, "lines"),
        (
            json!({"settings": {"sip_port": 0}}),
            422,
            "settings.sip_port",
        ),
    ];
    for (patch, status, field) in refusals {
        assert_refused(&server, Method::POST, devices, device(patch), status, field).await;
    }

    server.add_device(device(json!({}))).await;
    assert_refused(
        &server,
        Method::POST,
        devices,
        device(json!({"mac": "00-15-65-aa-bb-cc"})),
        409,
        "mac",
    )
    .await;
    assert_refused(
        &server,
        Method::PATCH,
        "/api/v1/devices/0015.65aa.bbcc",
        json!({"mac": "001565000000"}),
        422,
        "mac",
    )
    .await;
    assert_refused(
        &server,
        Method::PATCH,
        "/api/v1/devices/001565aabbcc",
        json!({"model": "nope"}),
        422,
        "model",
    )
    .await;

    // Any MAC form reaches the same device.
    for form in [
        "001565aabbcc",
        "00:15:65:AA:BB:CC",
        "00-15-65-aa-bb-cc",
        "0015.65aa.bbcc",
    ] {
        let (status, shown) = server.get(&format!("/api/v1/devices/{form}")).await;
        assert_eq!(status, 200, "{form}");
        assert_eq!(shown["mac"], "001565aabbcc");
    }
    let (status, _) = server.get("/api/v1/devices/001565000000").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_a_device_cannot_be_deleted_until_the_device_goes() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server
        .add_device(
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
        )
        .await;
    let path = format!("/api/v1/users/{}", ada["id"]);
    let (status, error) = server.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 409, "{error}");
    assert!(error["error"].as_str().unwrap().contains("001565aabbcc"));
    let (status, _) = server
        .api(Method::DELETE, "/api/v1/devices/001565aabbcc", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = server.get(&path).await;
    assert_eq!(status, 404);
    // The extension is free again.
    server.add_user(user_json("101", "Ada", "Again")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_layer_global_model_device() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let put = |path: &str, body: Value| {
        let path = path.to_string();
        let server = &server;
        async move { server.api(Method::PUT, &path, Some(body)).await }
    };
    assert_eq!(
        put(
            "/api/v1/settings",
            json!({"sip_server": "global.example.com", "ntp_server": "ntp-global"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        put(
            "/api/v1/models/yealink-t46s/settings",
            json!({"ntp_server": "ntp-model"})
        )
        .await
        .0,
        200
    );
    server
        .add_device(json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}], "settings": {"sip_server": "device.example.com"}}))
        .await;
    let (status, body) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    let config = String::from_utf8(body).unwrap();
    assert!(config.contains("device.example.com"), "{config}");
    assert!(config.contains("ntp-model"), "{config}");
    assert!(!config.contains("global.example.com"), "{config}");

    let before = server.snapshot().await;
    let (status, error) = put("/api/v1/settings", json!({"utc_offset": "1 hour"})).await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("settings.utc_offset"))
    );
    let (status, error) = put(
        "/api/v1/settings",
        json!({"firmware_url": "file:///etc/passwd"}),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("settings.firmware_url"))
    );
    let (status, _) = put("/api/v1/models/nope/settings", json!({})).await;
    assert_eq!(status, 404);
    // PATCH is refused alike: a wrong type, a bad value, a body that is no
    // object, an unknown model.
    for (path, patch, field) in [
        (
            "/api/v1/settings",
            json!({"sip_port": "x"}),
            Some("sip_port"),
        ),
        (
            "/api/v1/settings",
            json!({"vlan_id": 5000}),
            Some("settings.vlan_id"),
        ),
        ("/api/v1/settings", json!(["sip_server"]), None),
        ("/api/v1/models/nope/settings", json!({}), None),
    ] {
        let (status, error) = server.api(Method::PATCH, path, Some(patch.clone())).await;
        assert!((400..500).contains(&status), "{patch}: {status}");
        assert_eq!(error["field"].as_str(), field, "{patch}: {error}");
    }
    assert_eq!(server.snapshot().await, before);

    // A good PATCH merges: what it does not name stays, null unsets.
    let patch = json!({"ntp_server": null, "language": "de"});
    let (status, global) = server
        .api(Method::PATCH, "/api/v1/settings", Some(patch))
        .await;
    assert_eq!(
        (status, global),
        (
            200,
            json!({"sip_server": "global.example.com", "language": "de"})
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_file_previews() {
    let server = TestServer::start().await;
    let (status, models) = server.get("/api/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "yealink-t46s",
        "yealink-t54w",
        "poly-vvx-450",
        "cisco-mpp-8845",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, t46s) = server.get("/api/v1/models/yealink-t46s").await;
    assert_eq!(status, 200);
    assert_eq!(t46s["line_keys"], 27);
    assert_eq!(t46s["accounts"], 16);
    assert_eq!(server.get("/api/v1/models/nope").await.0, 404);

    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server
        .add_device(
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
        )
        .await;
    let preview = reqwest::Client::new()
        .get(server.admin_url("/api/v1/devices/00:15:65:aa:bb:cc/files/001565aabbcc.cfg"))
        .bearer_auth(crate::common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), 200);
    assert!(preview.text().await.unwrap().contains("Pw-101-secret"));
    let (status, _) = server
        .get("/api/v1/devices/001565aabbcc/files/nothing.bin")
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get("/api/v1/devices/001565aabbcc/files/001565000000.cfg")
        .await;
    assert_eq!(status, 422);
    // A preview is not a phone's request: nothing is discovered or recorded.
    let (_, discovered) = server.get("/api/v1/discovered").await;
    assert_eq!(discovered, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tokens_have_scopes_and_are_revoked_at_once() {
    let server = TestServer::start().await;
    let (status, made) = server
        .post(
            "/api/v1/tokens",
            json!({"name": "monitoring", "scope": "read"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let reader = made["token"].as_str().unwrap().to_string();
    assert!(reader.starts_with("monitoring."));
    let (_, made) = server
        .post(
            "/api/v1/tokens",
            json!({"name": "ops-script", "scope": "write"}),
        )
        .await;
    let writer = made["token"].as_str().unwrap().to_string();
    for (body, field) in [
        (json!({"name": "Bad Name", "scope": "read"}), "name"),
        (json!({"name": "admin", "scope": "write"}), "name"),
        (json!({"name": "x", "scope": "root"}), "scope"),
    ] {
        let (status, error) = server.post("/api/v1/tokens", body).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some(field)),
            "{error}"
        );
    }
    let (status, _) = server
        .post(
            "/api/v1/tokens",
            json!({"name": "monitoring", "scope": "write"}),
        )
        .await;
    assert_eq!(status, 409);

    let client = reqwest::Client::new();
    let users = server.admin_url("/api/v1/users");
    let read = client
        .get(&users)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = client
        .post(&users)
        .bearer_auth(&reader)
        .json(&user_json("101", "Ada", "Lovelace"))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403, "a read token cannot write");
    let write = client
        .post(&users)
        .bearer_auth(&writer)
        .json(&user_json("101", "Ada", "Lovelace"))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201);
    let forged = format!("{}x", &writer);
    let refused = client
        .get(&users)
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (_, listed) = server.get("/api/v1/tokens").await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains("argon2"),
        "no hashes: {listed}"
    );
    let (_, audit) = server.get("/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ops-script" && e["action"] == "user.create"),
        "the token's name is the actor: {audit}"
    );
    assert!(!audit.to_string().contains(&writer));

    let (status, _) = server
        .api(Method::DELETE, "/api/v1/tokens/ops-script", None)
        .await;
    assert_eq!(status, 204);
    let revoked = client
        .get(&users)
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401, "revoked at once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dial_plan_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let before = server.get("/api/v1/settings").await.1;
    for bad in ["1xx||2xx", "1xxT", "x.;reboot", "[2-9xx"] {
        let mut settings = crate::common::site_settings();
        settings["dial_plan"] = json!(bad);
        let (status, error) = server
            .api(Method::PUT, "/api/v1/settings", Some(settings))
            .await;
        assert_eq!(status, 422, "{bad}: {error}");
        assert_eq!(error["field"], "settings.dial_plan", "{error}");
        assert_eq!(server.get("/api/v1/settings").await.1, before, "{bad}");
    }
    server.stop().await;
}
