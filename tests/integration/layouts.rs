//! Named key layouts: one set of keys for many phones of a model, label
//! variables that follow the users they name, a device's own keys over the
//! layout's, and no layout change that would break a phone.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, user_json};

const T46S_A: &str = "001565aabb01";
const T46S_B: &str = "001565aabb02";

/// The keys of a rendered Yealink file: `linekey.N.<field> = value` lines.
fn key_line(file: &[u8], index: u16, field: &str) -> Option<String> {
    let text = String::from_utf8_lossy(file);
    let prefix = format!("linekey.{index}.{field} = ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}

fn reception() -> Value {
    json!({
        "name": "reception",
        "model": "yealink-t46s",
        "keys": [
            {"index": 3, "type": "blf", "value": "201", "label": "{name}"},
            {"index": 4, "type": "speed_dial", "value": "+15551234", "label": "Taxi"},
        ],
    })
}

/// Two T46S phones following "reception", and Grace at extension 201.
async fn office() -> (TestServer, Value) {
    let server = TestServer::start().await;
    let grace = server.add_user(user_json("201", "Grace", "Hopper")).await;
    let (status, layout) = server.post("/api/v1/layouts", reception()).await;
    assert_eq!(status, 201, "{layout}");
    for (mac, extension) in [(T46S_A, "101"), (T46S_B, "102")] {
        let user = server
            .add_user(user_json(extension, &format!("desk{extension}"), "Desk"))
            .await;
        server
            .add_device(
                json!({"mac": mac, "model": "yealink-t46s", "layout": "reception",
                               "lines": [{"user": user["id"]}]}),
            )
            .await;
    }
    (server, grace)
}

async fn file_of(server: &TestServer, mac: &str) -> Vec<u8> {
    let (status, file) = server.phone_get(&format!("/{mac}.cfg"), None).await;
    assert_eq!(status, 200);
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phone_of_a_layout_gets_its_keys_with_labels_that_follow_renames() {
    let (server, grace) = office().await;
    for mac in [T46S_A, T46S_B] {
        let file = file_of(&server, mac).await;
        assert_eq!(key_line(&file, 3, "value").as_deref(), Some("201"));
        assert_eq!(key_line(&file, 3, "label").as_deref(), Some("Grace Hopper"));
        assert_eq!(key_line(&file, 4, "label").as_deref(), Some("Taxi"));
    }
    // Grace marries: every phone's label follows, through the cache.
    let id = grace["id"].as_u64().unwrap();
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({"last_name": "Murray"})),
        )
        .await;
    assert_eq!(status, 200);
    for mac in [T46S_A, T46S_B] {
        let file = file_of(&server, mac).await;
        assert_eq!(key_line(&file, 3, "label").as_deref(), Some("Grace Murray"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_change_reaches_every_phone_and_a_device_key_overrides_one() {
    let (server, _) = office().await;
    // Phone B keeps its own key 4.
    let (status, device) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{T46S_B}"),
            Some(json!({"keys": [{"index": 4, "type": "speed_dial", "value": "+15559999", "label": "Home"}]})),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    // Both files cached first, so the change must invalidate them.
    let (before_a, before_b) = (
        file_of(&server, T46S_A).await,
        file_of(&server, T46S_B).await,
    );
    assert_eq!(key_line(&before_b, 4, "label").as_deref(), Some("Home"));
    let mut changed = reception();
    changed["keys"][0]["label"] = json!("Grace {extension}");
    changed["keys"][1]["value"] = json!("+15550000");
    let (status, layout) = server
        .api(Method::PUT, "/api/v1/layouts/reception", Some(changed))
        .await;
    assert_eq!(status, 200, "{layout}");
    let (after_a, after_b) = (
        file_of(&server, T46S_A).await,
        file_of(&server, T46S_B).await,
    );
    assert_ne!(before_a, after_a);
    assert_eq!(key_line(&after_a, 3, "label").as_deref(), Some("Grace 201"));
    assert_eq!(key_line(&after_b, 3, "label").as_deref(), Some("Grace 201"));
    assert_eq!(key_line(&after_a, 4, "value").as_deref(), Some("+15550000"));
    assert_eq!(key_line(&after_b, 4, "value").as_deref(), Some("+15559999"));
    // The audit log names the layout and what changed.
    let (_, audit) = server.get("/api/v1/audit?target=layout/reception").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["layout.create", "layout.update"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_that_would_break_a_phone_is_refused_and_changes_nothing() {
    let (server, _) = office().await;
    let (_, before) = server.get("/api/v1/layouts/reception").await;
    let phone_before = file_of(&server, T46S_A).await;
    // A module key: neither phone has a module.
    let mut on_module = reception();
    on_module["keys"][1] = json!({"module": 1, "index": 1, "type": "blf", "value": "201"});
    // A key the T46S does not have, a key type it lacks, a bad name.
    let mut beyond = reception();
    beyond["keys"][1]["index"] = json!(99);
    for (method, path, body, field) in [
        (
            Method::PUT,
            "/api/v1/layouts/reception",
            on_module,
            "keys[1].module",
        ),
        (
            Method::PUT,
            "/api/v1/layouts/reception",
            beyond,
            "keys[1].index",
        ),
        (
            Method::POST,
            "/api/v1/layouts",
            json!({"name": "Bad Name", "model": "yealink-t46s"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/layouts",
            json!({"name": "x", "model": "no-such-phone"}),
            "model",
        ),
    ] {
        let (status, error) = server.api(method, path, Some(body)).await;
        assert!(status == 422 || status == 409, "{status} {error}");
        assert_eq!(error["field"], field, "{error}");
    }
    assert_eq!(server.get("/api/v1/layouts/reception").await.1, before);
    assert_eq!(
        server
            .get("/api/v1/layouts")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(file_of(&server, T46S_A).await, phone_before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_needs_a_layout_of_its_model_and_a_followed_layout_stays() {
    let (server, _) = office().await;
    let before = server.snapshot().await;
    for (body, status, field) in [
        (json!({"layout": "nope"}), 409, "layout"),
        (json!({"layout": "Not A Name"}), 422, "layout"),
    ] {
        let (got, error) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{T46S_A}"),
                Some(body),
            )
            .await;
        assert_eq!(
            (got, error["field"].as_str()),
            (status, Some(field)),
            "{error}"
        );
    }
    let (status, other) = server
        .post(
            "/api/v1/layouts",
            json!({"name": "sales", "model": "yealink-t48s"}),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let (status, error) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/devices/{T46S_A}"),
            Some(json!({"layout": "sales"})),
        )
        .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("layout")),
        "{error}"
    );
    let (status, error) = server
        .api(Method::DELETE, "/api/v1/layouts/reception", None)
        .await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("2 device(s)"),
        "{error}"
    );
    assert_eq!(server.snapshot().await, before);
    // Once no phone follows it, it goes.
    for mac in [T46S_A, T46S_B] {
        let (status, _) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{mac}"),
                Some(json!({"layout": null})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = server
        .api(Method::DELETE, "/api/v1/layouts/reception", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(key_line(&file_of(&server, T46S_A).await, 3, "value"), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_names_a_layout_per_phone_and_a_bad_one_refuses_the_file() {
    let server = TestServer::start().await;
    server.add_user(user_json("201", "Grace", "Hopper")).await;
    let (status, _) = server.post("/api/v1/layouts", reception()).await;
    assert_eq!(status, 201);
    let before = server.snapshot().await;
    let bad = "extension,firstname,mac,model,layout\n\
               301,Alan,001565aabb31,yealink-t46s,reception\n\
               302,Edsger,001565aabb32,yealink-t46s,nope\n\
               303,Barbara,001565aabb33,yealink-t48s,reception\n";
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", bad).await;
    assert_eq!(status, 422, "{answer}");
    let lines: Vec<(u64, &str)> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(lines, [(3, "layout"), (4, "layout")], "{answer}");
    assert_eq!(server.snapshot().await, before);

    let good =
        "extension,firstname,mac,model,layout\n301,Alan,001565aabb31,yealink-t46s,reception\n";
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", good).await;
    assert_eq!(status, 201, "{answer}");
    let file = file_of(&server, "001565aabb31").await;
    assert_eq!(key_line(&file, 3, "label").as_deref(), Some("Grace Hopper"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_restore_carry_layouts() {
    let (server, _) = office().await;
    let (status, backup) = server.get("/api/v1/export").await;
    assert_eq!(status, 200);
    assert_eq!(backup["layouts"][0]["name"], "reception", "{backup}");
    let file = file_of(&server, T46S_A).await;

    let (status, answer) = server
        .api(
            Method::POST,
            "/api/v1/restore?replace=true",
            Some(backup.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.get("/api/v1/layouts").await.1, backup["layouts"]);
    assert_eq!(file_of(&server, T46S_A).await, file);

    // A device whose layout is not in the backup refuses the whole restore.
    let mut broken = backup;
    broken["layouts"] = json!([]);
    let before = server.snapshot().await;
    let (status, answer) = server
        .api(Method::POST, "/api/v1/restore?replace=true", Some(broken))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "devices[0].layout", "{answer}");
    assert_eq!(server.snapshot().await, before);
    server.stop().await;
}
