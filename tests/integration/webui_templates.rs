//! The web UI's template editor and clone/replace wizard without a
//! browser: the list and its "used by" counts, a broken template shown at
//! its line and refused on save while the phone keeps its file, the diff,
//! rollback and removal; read-only tokens; the wizard's preview of keys
//! that do not fit, a stale confirm refused, and a replace after which the
//! old MAC gets no credentials.

use reqwest::Method;
use reqwest::header::LOCATION;
use serde_json::json;

use crate::common::{TOKEN, TestServer, user_json};
use crate::webui::{Page, sign_in};

const MODEL_API: &str = "/api/v1/templates/models/yealink-t46s/%7Bmac%7D.cfg";
const EDITOR: &str = "/templates/models/yealink-t46s/%7Bmac%7D.cfg";

/// Ada's T46S at 001565aabbcc and Grace's at 001565aabbcd, which has a
/// template of its own; the T46S's model-wide template at version 1.
async fn office_with_uploads() -> TestServer {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    let grace = server.add_user(user_json("102", "Grace", "Hopper")).await;
    server
        .add_device(json!({"mac": "001565aabbcd", "model": "yealink-t46s",
                           "lines": [{"user": grace["id"]}]}))
        .await;
    let model_v1 = "# v1\naccount.1.user_name = {{ lines[0].username | cfg_value }}\n";
    let (status, body) = server.api_text(Method::PUT, MODEL_API, model_v1).await;
    assert_eq!(status, 201, "{body}");
    let own = "# only Grace's phone\n";
    let device_api = "/api/v1/templates/devices/001565aabbcd/001565aabbcd.cfg";
    let (status, body) = server.api_text(Method::PUT, device_api, own).await;
    assert_eq!(status, 201, "{body}");
    server
}

async fn ada_file(server: &TestServer) -> String {
    let (status, body) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

fn location(page: &Page) -> String {
    page.headers[LOCATION].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_validated_at_its_line_saved_only_when_it_renders_diffed_and_rolled_back() {
    let server = office_with_uploads().await;
    let browser = sign_in(&server, TOKEN).await;

    // The list: the model's upload serves Ada's phone only (Grace's has
    // its own), the device upload its phone.
    let list = browser.get("/templates").await;
    assert_eq!(list.status, 200);
    let rows: Vec<String> = list
        .all("#uploads tbody tr")
        .iter()
        .map(|r| r.text().collect::<String>())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let model_row = rows
        .iter()
        .find(|r| r.contains("Every Yealink T46S"))
        .unwrap();
    assert!(model_row.contains("1 phone(s)"), "{model_row}");
    assert!(model_row.contains("{mac}.cfg"), "{model_row}");
    let device_row = rows
        .iter()
        .find(|r| r.contains("00:15:65:aa:bb:cd"))
        .unwrap();
    assert!(device_row.contains("1 phone(s)"), "{device_row}");

    // The editor: the source in force, its masked render for Ada's phone.
    let editor = browser.get(EDITOR).await;
    assert_eq!(editor.status, 200, "{}", editor.body());
    assert_eq!(editor.text("h1"), "Template {mac}.cfg");
    assert!(editor.text("textarea#source").contains("# v1"));
    assert_eq!(editor.text("#used-by"), "1 phone(s)");
    assert!(
        editor
            .text("#preview")
            .contains("account.1.user_name = sip101")
    );
    assert_eq!(editor.all(".gutter li").len(), 3);

    // Validate: the error at line 2, that line marked, the caret's place.
    let broken = "# v2\nok {{ no_such_thing }}\n";
    let fields = [("source", broken), ("device", "001565aabbcc")];
    let validated = browser
        .post(EDITOR, &[fields[0], fields[1], ("action", "validate")])
        .await;
    assert_eq!(validated.status, 422);
    let error = validated.text("#template-error");
    assert!(error.starts_with("line 2, column "), "{error}");
    assert!(error.contains("no_such_thing"), "{error}");
    assert_eq!(validated.text(".gutter li.marked"), "2");
    let textarea = &validated.all("textarea#source")[0];
    assert_eq!(textarea.attr("data-error-line"), Some("2"));
    assert!(validated.text("textarea#source").contains("no_such_thing"));

    // Save is refused while it fails, and the phone keeps its file.
    let before = ada_file(&server).await;
    let refused = browser
        .post(EDITOR, &[fields[0], fields[1], ("action", "save")])
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused
            .text("#template-error")
            .starts_with("line 2, column ")
    );
    assert_eq!(ada_file(&server).await, before);
    let (_, history) = server.get(&format!("{MODEL_API}/history")).await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 1);

    // A source that renders is saved (CRLF as a browser posts it) and served.
    let fixed = "# v2\r\naccount.1.user_name = {{ lines[0].username | cfg_value }}\r\n";
    let saved = browser
        .post(EDITOR, &[("source", fixed), fields[1], ("action", "save")])
        .await;
    assert_eq!(saved.status, 303);
    assert!(location(&saved).contains("done=saved&version=2"));
    let after = browser.get(&location(&saved)).await;
    assert!(after.text("#notice").contains("Saved as version 2"));
    assert_eq!(
        ada_file(&server).await,
        "# v2\naccount.1.user_name = sip101\n"
    );

    // The diff against the previous version, and against the built-in.
    let diff = browser.get(&format!("{EDITOR}?diff=previous")).await;
    assert_eq!(diff.text("#diff del"), "- # v1");
    assert_eq!(diff.text("#diff ins"), "+ # v2");
    let builtin = browser.get(&format!("{EDITOR}?diff=builtin")).await;
    assert!(!builtin.all("#diff del").is_empty());
    assert!(builtin.text("#diff ins").contains("+ # v2"));

    // Rollback to version 1 makes version 3; removing brings back the
    // built-in file.
    let rolled = browser
        .post(EDITOR, &[("action", "rollback"), ("version", "1")])
        .await;
    assert_eq!(rolled.status, 303, "{}", rolled.body());
    assert!(ada_file(&server).await.starts_with("# v1\n"));
    let history = browser.get(EDITOR).await;
    assert_eq!(history.all("#history tbody tr").len(), 3);
    assert!(history.text("#history").contains("rollback to 1"));
    let removed = browser.post(EDITOR, &[("action", "remove")]).await;
    assert_eq!(removed.status, 303);
    assert!(ada_file(&server).await.contains("account.1.password"));
    let list = browser.get("/templates").await;
    assert!(list.text("#uploads").contains("removed"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_templates_without_write_controls_and_cannot_save() {
    let server = office_with_uploads().await;
    let (status, token) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    assert_eq!(status, 201, "{token}");
    let browser = sign_in(&server, token["token"].as_str().unwrap()).await;
    for path in [
        "/templates",
        "/templates?device=001565aabbcc",
        EDITOR,
        "/devices/001565aabbcc/replace?to=001565000002&preview=1",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body());
        let forms = page.all("form[method=post]");
        assert_eq!(forms.len(), 1, "{path}: only sign-out");
        assert!(page.all("textarea").is_empty(), "{path}");
    }
    let before = ada_file(&server).await;
    let forged = browser
        .post(EDITOR, &[("source", "# mine\n"), ("action", "save")])
        .await;
    assert_eq!(forged.status, 403);
    let forged = browser
        .post(
            "/devices/001565aabbcc/replace",
            &[
                ("to", "001565000002"),
                ("mode", "replace"),
                ("model", "yealink-t46s"),
                ("generation", "0"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(ada_file(&server).await, before);
    assert_eq!(server.get("/api/v1/devices/001565000002").await.0, 404);
    server.stop().await;
}

/// The confirm form's fields, as the preview wrote them.
fn confirm_fields(preview: &Page) -> Vec<(String, String)> {
    preview
        .all("#wizard-confirm input[type=hidden]")
        .iter()
        .filter(|i| i.attr("name") != Some("csrf"))
        .map(|i| {
            let field = |name| i.attr(name).unwrap_or_default().to_string();
            (field("name"), field("value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_previews_unfit_keys_refuses_a_stale_confirm_and_replaces_the_phone() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server.add_user(user_json("102", "Grace", "Hopper")).await;
    server
        .add_device(json!({
            "mac": "001565aabbcc", "model": "yealink-t46s", "modules": ["yealink-exp40"],
            "lines": [{"user": ada["id"]}],
            "keys": [
                {"index": 3, "type": "blf", "value": "102", "label": "Grace"},
                {"module": 1, "index": 4, "type": "speed_dial", "value": "*97", "label": "VM"},
            ],
        }))
        .await;
    let old_file = ada_file(&server).await;
    assert!(old_file.contains("account.1.password = "), "{old_file}");

    // The new phone asks for its file and is discovered as a T46U.
    let t46u = "Yealink SIP-T46U 108.86.0.15 00:15:65:00:00:02";
    let (status, _) = server.phone_get("/001565000002.cfg", Some(t46u)).await;
    assert_eq!(status, 404);

    let browser = sign_in(&server, TOKEN).await;
    // From Ada's user page to her phone's wizard.
    let id = ada["id"].as_u64().unwrap();
    let from_user = browser.get(&format!("/users/{id}/replace")).await;
    assert_eq!(from_user.status, 303);
    assert_eq!(location(&from_user), "/devices/001565aabbcc/replace");

    // Step 1, as the discovered page links it: the MAC and the model it
    // reported are filled in.
    let start = browser
        .get("/devices/001565aabbcc/replace?to=001565000002")
        .await;
    assert_eq!(start.status, 200, "{}", start.body());
    assert_eq!(
        start.all("#discovered option[value='001565000002']").len(),
        1
    );
    assert_eq!(start.all("#to")[0].attr("value"), Some("001565000002"));
    assert_eq!(
        start.all("#model option[selected]")[0].attr("value"),
        Some("yealink-t46u")
    );

    // Step 2: key 3 keeps its place; the EXP40's key has none on a T46U.
    let preview_path = "/devices/001565aabbcc/replace?preview=1&to=001565000002\
                        &mode=replace&model=yealink-t46u";
    let preview = browser.get(preview_path).await;
    assert_eq!(preview.status, 200, "{}", preview.body());
    assert_eq!(preview.all("#key-map tbody tr").len(), 2);
    let unfit = preview.text("#key-map tr.unfit");
    assert!(unfit.contains("Module 1 key 4"), "{unfit}");
    assert!(unfit.contains("Does not fit"), "{unfit}");
    assert!(preview.text("#key-map").contains("Key 3 of the T46U"));
    assert!(preview.text("#preview").contains("yealink-exp40"));
    assert_eq!(
        preview.text("#unfit"),
        "1 key(s) do not fit: confirming leaves them behind."
    );

    // A change after the preview makes its confirm stale: nothing happens.
    let stale = confirm_fields(&preview);
    server.add_user(user_json("103", "Alan", "Turing")).await;
    let pairs: Vec<(&str, &str)> = stale
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let refused = browser.post("/devices/001565aabbcc/replace", &pairs).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused
            .text("#wizard-error")
            .contains("changed since the preview"),
        "{}",
        refused.text("#wizard-error")
    );
    assert_eq!(server.get("/api/v1/devices/001565000002").await.0, 404);
    assert_eq!(ada_file(&server).await, old_file);

    // Confirmed as freshly previewed: the new phone has the configuration
    // that fits, the old MAC gets nothing, no password above all.
    let fresh = confirm_fields(&browser.get(preview_path).await);
    let pairs: Vec<(&str, &str)> = fresh
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let done = browser.post("/devices/001565aabbcc/replace", &pairs).await;
    assert_eq!(done.status, 200, "{}", done.body());
    assert_eq!(
        done.all("#new-device")[0].attr("href"),
        Some("/devices/001565000002")
    );
    let (status, device) = server.get("/api/v1/devices/001565000002").await;
    assert_eq!(status, 200);
    assert_eq!(device["model"], "yealink-t46u");
    assert_eq!(device["modules"], json!([]));
    assert_eq!(device["keys"].as_array().unwrap().len(), 1);
    assert_eq!(server.get("/api/v1/devices/001565aabbcc").await.0, 404);
    let (status, old) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&old).contains("password"));
    let (status, new) = server.phone_get("/001565000002.cfg", Some(t46u)).await;
    assert_eq!(status, 200);
    let new = String::from_utf8(new).unwrap();
    let password = |file: &str| {
        file.lines()
            .find(|l| l.starts_with("account.1.password = "))
            .map(str::to_string)
    };
    assert_eq!(password(&new), password(&old_file));
    server.stop().await;
}
