//! The web UI's last gaps without a browser: each token's last use, on the
//! Tokens page and in the API, kept across a restart; "set template" and
//! "clear template" as bulk actions, all or nothing; Import's Apply
//! streaming its progress; the dashboard's drift count over hundreds of
//! phones.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TOKEN, TestServer, user_json};
use crate::webui::{Page, client, sign_in};
use crate::webui_admin::confirm;
use crate::webui_import::{CLEAN, cells};

/// The Tokens page's "Last used" cell of token `name`.
fn last_used_cell(page: &Page, name: &str) -> String {
    cells(page, "#tokens")
        .into_iter()
        .find(|row| row[0] == name)
        .map(|row| row[3].clone())
        .unwrap_or_else(|| panic!("token {name} is listed"))
}

/// `GET /api/v1/tokens`' entry for `name`.
async fn listed_token(server: &TestServer, name: &str) -> Value {
    let (status, tokens) = server.get("/api/v1/tokens").await;
    assert_eq!(status, 200, "{tokens}");
    tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("token {name} is listed: {tokens}"))
}

#[tokio::test]
async fn a_token_used_through_the_api_shows_when_and_an_unused_one_shows_never() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data.path()).await;
    let mut secrets = Vec::new();
    for name in ["ops", "idle"] {
        let (status, made) = server
            .post("/api/v1/tokens", json!({"name": name, "scope": "read"}))
            .await;
        assert_eq!(status, 201, "{made}");
        secrets.push(made["token"].as_str().unwrap().to_string());
    }
    let used = client()
        .get(server.admin_url("/api/v1/users"))
        .bearer_auth(&secrets[0])
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);

    // Shown at once, before the flush tick writes it.
    let ops = listed_token(&server, "ops").await;
    assert!(ops["last_used"].as_u64().unwrap() >= ops["created"].as_u64().unwrap());
    assert_eq!(
        listed_token(&server, "idle").await["last_used"],
        Value::Null
    );
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get("/tokens").await;
    assert!(
        last_used_cell(&page, "ops").ends_with(" UTC"),
        "{}",
        page.body()
    );
    assert_eq!(last_used_cell(&page, "idle"), "never");
    assert!(page.text("#bootstrap-used").ends_with(" UTC."));

    // Written to the store: a restart keeps it.
    let last_used = ops["last_used"].clone();
    server.stop().await;
    let server = TestServer::start_in(data.path()).await;
    assert_eq!(listed_token(&server, "ops").await["last_used"], last_used);
    assert_eq!(
        listed_token(&server, "idle").await["last_used"],
        Value::Null
    );
}

/// The dashboard's drift count, read from the page.
async fn drift_count(server: &TestServer) -> usize {
    let browser = sign_in(server, TOKEN).await;
    let page = browser.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body());
    page.text("#count-drift").parse().unwrap()
}

/// The phone file of the `n`th imported phone.
fn phone_file(n: usize) -> String {
    format!("/0015650{n:05}.cfg")
}

#[tokio::test]
async fn a_dashboard_of_500_seen_phones_counts_the_ones_that_drift() {
    const PHONES: usize = 500;
    let server = TestServer::start().await;
    let mut csv =
        String::from("extension,firstname,lastname,email,sip_username,sip_password,mac,model\n");
    for n in 0..PHONES {
        csv.push_str(&format!(
            "{},User,{n},,,,0015650{n:05},yealink-t46s\n",
            1000 + n
        ));
    }
    let (status, imported) = server.api_text(Method::POST, "/api/v1/import", &csv).await;
    assert_eq!(status, 201, "{imported}");
    for n in 0..PHONES {
        assert_eq!(server.phone_get(&phone_file(n), None).await.0, 200);
    }
    assert_eq!(drift_count(&server).await, 0);

    // Three users renamed: their phones would get a newer file.
    let (_, users) = server.get("/api/v1/users").await;
    let users = users.as_array().unwrap();
    for extension in ["1000", "1007", "1499"] {
        let user = users.iter().find(|u| u["extension"] == extension).unwrap();
        let path = format!("/api/v1/users/{}", user["id"]);
        let patch = json!({"first_name": "Renamed"});
        assert_eq!(server.api(Method::PATCH, &path, Some(patch)).await.0, 200);
    }
    assert_eq!(drift_count(&server).await, 3);
    assert_eq!(drift_count(&server).await, 3, "the same when asked again");

    // One of them fetches its file again; then a new user changes nothing.
    assert_eq!(server.phone_get(&phone_file(7), None).await.0, 200);
    assert_eq!(drift_count(&server).await, 2);
    server.add_user(user_json("2000", "New", "Person")).await;
    assert_eq!(drift_count(&server).await, 2);
}

/// A phone's own template that renders for any phone.
const FOR_ANY_PHONE: &str = "#!version:1.0.0.1\n## bulk-marker {{ mac.colon }}\n";

/// One that fails for a phone with no line.
const NEEDS_A_LINE: &str = "#!version:1.0.0.1\n## needs-a-line {{ lines[0].display_name }}\n";

/// Ada's phone's own upload of its file, as the bulk actions name it.
const ADAS_UPLOAD: &str = "device/001565aabbcc/{mac}.cfg";

/// Runs a template bulk action on `macs` through its confirmation; the
/// question, then the answer.
async fn bulk_template(
    browser: &crate::webui::Browser,
    action: &str,
    macs: &[&str],
) -> (String, Page) {
    let mut form = vec![("action", action), ("template", ADAS_UPLOAD)];
    form.extend(macs.iter().map(|mac| ("mac", *mac)));
    let asked = browser.post("/devices/bulk", &form).await;
    assert_eq!(asked.status, 200, "{}", asked.body());
    let done = confirm(browser, &asked).await;
    (asked.text("#affects"), done)
}

/// A phone's file as it fetches it.
async fn phone_file_text(server: &TestServer, mac: &str) -> String {
    let (status, body) = server.phone_get(&format!("/{mac}.cfg"), None).await;
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn set_template_gives_phones_a_copy_all_or_nothing_and_clear_takes_it_back() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let grace = server.add_user(user_json("102", "Grace", "Hopper")).await;
    server
        .add_device(json!({"mac": "001565000102", "model": "yealink-t46s", "lines": [{"user": grace["id"]}]}))
        .await;
    server
        .add_device(json!({"mac": "001565000103", "model": "yealink-t46s"}))
        .await;
    let upload = "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg";
    let (status, answer) = server.api_text(Method::PUT, upload, FOR_ANY_PHONE).await;
    assert_eq!(status, 201, "{answer}");
    let browser = sign_in(&server, TOKEN).await;
    let offered: Vec<String> = browser
        .get("/devices")
        .await
        .all("#bulk-template option")
        .iter()
        .filter_map(|o| o.attr("value").map(str::to_string))
        .collect();
    assert_eq!(offered, ["", ADAS_UPLOAD]);

    let (asked, done) =
        bulk_template(&browser, "template", &["001565000102", "001565000103"]).await;
    assert_eq!(
        asked,
        format!("Set template {ADAS_UPLOAD} affects 2 device(s).")
    );
    assert_eq!(done.status, 200, "{}", done.body());
    assert!(done.text("#outcome").starts_with("2 device(s) now have"));
    for mac in ["001565000102", "001565000103"] {
        assert!(phone_file_text(&server, mac).await.contains("bulk-marker"));
    }

    // A template that fails for the phone with no line changes neither.
    let (status, answer) = server.api_text(Method::PUT, upload, NEEDS_A_LINE).await;
    assert_eq!(status, 201, "{answer}");
    let (_, refused) = bulk_template(&browser, "template", &["001565000102", "001565000103"]).await;
    assert_eq!(refused.status, 422, "{}", refused.body());
    assert!(
        refused.text("#outcome").contains("001565000103"),
        "{}",
        refused.text("#outcome")
    );
    for mac in ["001565000102", "001565000103"] {
        let file = phone_file_text(&server, mac).await;
        assert!(
            file.contains("bulk-marker") && !file.contains("needs-a-line"),
            "{file}"
        );
    }

    let (asked, cleared) = bulk_template(
        &browser,
        "clear-template",
        &["001565000102", "001565000103"],
    )
    .await;
    assert!(asked.starts_with("Clear own template"), "{asked}");
    assert_eq!(cleared.status, 200, "{}", cleared.body());
    assert!(
        cleared
            .text("#outcome")
            .starts_with("2 device(s) had their own")
    );
    for mac in ["001565000102", "001565000103"] {
        assert!(!phone_file_text(&server, mac).await.contains("bulk-marker"));
    }
}

/// How many users the store holds.
async fn user_count(server: &TestServer) -> usize {
    server
        .get("/api/v1/users")
        .await
        .1
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn apply_streams_its_progress_then_the_result_page_and_needs_the_csrf_token() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;
    let checked = browser.post("/import", &[("csv", CLEAN)]).await;
    assert_eq!(checked.status, 200, "{}", checked.body());
    let form = &checked.all("#apply-form")[0];
    assert_eq!(form.attr("data-stream"), Some("/import/apply/stream"));
    assert_eq!(checked.all("#apply-progress[hidden] progress").len(), 1);
    let field = |name: &str| {
        checked.all(&format!("#apply-form input[name={name}]"))[0]
            .attr("value")
            .unwrap()
            .to_string()
    };
    let (hash, generation) = (field("hash"), field("generation"));
    let asks = [
        ("Sec-Fetch-Site", "same-origin"),
        ("Accept", "application/x-ndjson"),
    ];

    let forged = [("hash", hash.as_str()), ("generation", generation.as_str())];
    let refused = browser
        .send_raw("/import/apply/stream", &forged, &asks)
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(user_count(&server).await, 0, "nothing imported");

    let form = [
        ("csrf", browser.csrf()),
        ("hash", hash.as_str()),
        ("generation", generation.as_str()),
    ];
    let streamed = browser.send_raw("/import/apply/stream", &form, &asks).await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.headers()["content-type"], "application/x-ndjson");
    let text = streamed.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let (last, reports) = lines.split_last().expect("at least the answer");
    assert!(!reports.is_empty(), "progress comes first: {text}");
    for report in reports {
        assert!(
            report["done"].as_u64() <= report["total"].as_u64(),
            "{report}"
        );
        assert!(["checking", "writing"].contains(&report["stage"].as_str().unwrap()));
    }
    assert_eq!(last["status"], 201, "{last}");
    let result = scraper::Html::parse_document(last["answer"]["html"].as_str().unwrap());
    let applied = scraper::Selector::parse("#main #applied").unwrap();
    assert_eq!(
        result.select(&applied).count(),
        1,
        "the result page's content"
    );
    assert_eq!(user_count(&server).await, 2);
}
