//! Uploaded templates: refused unless they compile and render, in force at
//! once, kept with their history, and rolled back on request.

use reqwest::Method;
use serde_json::json;

use crate::common::{TestServer, user_json};

const MODEL_SLOT: &str = "/api/v1/templates/models/yealink-t46s/%7Bmac%7D.cfg";
const DEVICE_SLOT: &str = "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg";

async fn office() -> TestServer {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server
        .add_device(
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
        )
        .await;
    server
}

async fn phone_file(server: &TestServer) -> String {
    let (status, body) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    let over_tftp = server.tftp_curl("001565aabbcc.cfg").await.expect("tftp");
    assert_eq!(over_tftp, body);
    String::from_utf8(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_and_device_uploads_apply_in_order_and_delete_returns_to_builtin() {
    let server = office().await;
    let builtin = phone_file(&server).await;

    let model_source = "#!version:1.0.0.1\n# model-wide\naccount.1.user_name = {{ lines[0].username | cfg_value }}\n";
    let (status, body) = server.api_text(Method::PUT, MODEL_SLOT, model_source).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(
        phone_file(&server).await,
        "#!version:1.0.0.1\n# model-wide\naccount.1.user_name = sip101\n"
    );
    let (_, shown) = server.get(DEVICE_SLOT).await;
    assert_eq!(shown["origin"], "model");

    let (status, _) = server
        .api_text(
            Method::PUT,
            DEVICE_SLOT,
            "# just this phone {{ mac.bare }}\n",
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        phone_file(&server).await,
        "# just this phone 001565aabbcc\n"
    );
    assert_eq!(server.get(DEVICE_SLOT).await.1["origin"], "device");

    assert_eq!(server.api(Method::DELETE, DEVICE_SLOT, None).await.0, 204);
    assert!(phone_file(&server).await.contains("model-wide"));
    assert_eq!(server.api(Method::DELETE, MODEL_SLOT, None).await.0, 204);
    assert_eq!(phone_file(&server).await, builtin);
    let (_, shown) = server.get(MODEL_SLOT).await;
    assert_eq!(shown["origin"], "builtin");
    assert!(shown["source"].as_str().unwrap().contains("account"));
    assert_eq!(server.api(Method::DELETE, MODEL_SLOT, None).await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_are_refused_with_line_and_reason_and_change_nothing() {
    let server = office().await;
    let builtin = phone_file(&server).await;
    let cases = [
        ("syntax", "line one\n{% if %}\n", Some(2)),
        ("unclosed", "a\nb\n{% for k in keys %}\n", None),
        ("undefined variable", "ok\n{{ no_such_thing }}\n", Some(2)),
        ("environment", "{{ get_env(name=\"HOME\") }}\n", Some(1)),
        ("file include", "{% include \"/etc/passwd\" %}\n", None),
        (
            "line break injection",
            "x = {{ \"a\nb\" | cfg_value }}\n",
            None,
        ),
        (
            "output bomb",
            "{% for i in range(end=100000) %}{% for j in range(end=100) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
            None,
        ),
    ];
    for (what, source, line) in cases {
        for slot in [MODEL_SLOT, DEVICE_SLOT] {
            let (status, error) = server.api_text(Method::PUT, slot, source).await;
            assert_eq!(status, 422, "{what} at {slot}: {error}");
            assert_eq!(error["field"], "template", "{what}: {error}");
            assert!(!error["error"].as_str().unwrap().is_empty());
            if let Some(line) = line {
                assert_eq!(error["line"], line, "{what}: {error}");
            }
        }
    }
    assert_eq!(server.get(&format!("{MODEL_SLOT}/history")).await.0, 404);
    assert_eq!(phone_file(&server).await, builtin);
    let (status, _) = server
        .api_text(Method::PUT, MODEL_SLOT, &"x".repeat(70 * 1024))
        .await;
    assert_eq!(status, 413);
    let (_, audit) = server.get("/api/v1/audit").await;
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "template.put"),
        "a refused upload is not in the audit log: {audit}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_upload_that_breaks_a_real_phone_is_refused() {
    let server = office().await;
    // The sample phone has two lines; Ada's phone has one.
    let (status, error) = server
        .api_text(Method::PUT, MODEL_SLOT, "{{ lines[1].username }}\n")
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("001565aabbcc"),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback() {
    let server = office().await;
    for n in 1..=3 {
        let (status, body) = server
            .api_text(Method::PUT, DEVICE_SLOT, &format!("# version {n}\n"))
            .await;
        assert_eq!((status, body["version"].as_u64()), (201, Some(n)));
    }
    let (status, history) = server.get(&format!("{DEVICE_SLOT}/history")).await;
    assert_eq!(status, 200);
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[2]["current"], true);
    assert_eq!(versions[0]["author"], "admin");
    let (status, one) = server.get(&format!("{DEVICE_SLOT}/history/1")).await;
    assert_eq!(
        (status, one["source"].as_str()),
        (200, Some("# version 1\n"))
    );

    let (status, rolled) = server
        .api(
            Method::POST,
            &format!("{DEVICE_SLOT}/rollback"),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["version"], 4);
    assert_eq!(phone_file(&server).await, "# version 1\n");
    let (_, history) = server.get(&format!("{DEVICE_SLOT}/history")).await;
    assert_eq!(history["versions"][3]["note"], "rollback to 1");
    let (status, _) = server
        .api(
            Method::POST,
            &format!("{DEVICE_SLOT}/rollback"),
            Some(json!({"version": 9})),
        )
        .await;
    assert_eq!(status, 422);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server
        .add_device(
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
        )
        .await;
    let (status, _) = server.api_text(Method::PUT, DEVICE_SLOT, "# kept\n").await;
    assert_eq!(status, 201);
    server.stop().await;
    let server = TestServer::start_in(dir.path()).await;
    assert_eq!(phone_file(&server).await, "# kept\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_slots_are_checked() {
    let server = office().await;
    for (path, status) in [
        ("/api/v1/templates/models/nope/%7Bmac%7D.cfg", 404),
        ("/api/v1/templates/models/yealink-t46s/nothing.bin", 404),
        (
            "/api/v1/templates/devices/001565000000/001565000000.cfg",
            404,
        ),
        ("/api/v1/templates/devices/not-a-mac/x.cfg", 422),
        (
            "/api/v1/templates/devices/001565aabbcc/y000000000066.cfg",
            422,
        ),
        ("/api/v1/templates/other/x/y", 404),
    ] {
        let (got, body) = server.api_text(Method::PUT, path, "x").await;
        assert_eq!(got, status, "{path}: {body}");
    }
    server.stop().await;
}
