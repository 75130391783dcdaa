//! The web UI's Import and Discovered pages without a browser: a dry run
//! lists every bad row and downloads them; Apply writes exactly the
//! previewed file, and nothing when the file or the store changed; a
//! read-only token can neither see nor forge an Apply; a phone that asked
//! is listed with what was recognised of it, adopted through the prefilled
//! form, ignored, and banned.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{TOKEN, TestServer};
use crate::webui::{Browser, Page, sign_in};

/// Ada (good), then a bad MAC on line 3 and an unknown model on line 4.
const TWO_BAD_ROWS: &str = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
    101,Ada,Lovelace,,,,001565000101,yealink-t46s\n\
    102,Bad,Mac,,,,zz,yealink-t46s\n\
    103,Bad,Model,,,,001565000103,nope\n";

/// Two users sharing one phone.
pub(crate) const CLEAN: &str = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
    201,Grace,Hopper,,,,001565000201,yealink-t46s\n\
    202,Alan,Turing,,,,001565000201,\n";

/// The cells of a table's body, row by row.
pub(crate) fn cells(page: &Page, table: &str) -> Vec<Vec<String>> {
    page.all(&format!("{table} tbody tr"))
        .iter()
        .map(|row| {
            row.children()
                .filter_map(scraper::ElementRef::wrap)
                .map(|cell| cell.text().collect::<String>().trim().to_string())
                .collect()
        })
        .collect()
}

/// The value of the Apply form's hidden `name` field.
fn apply_field(page: &Page, name: &str) -> String {
    let field = page.all(&format!("#apply-form input[name={name}]"));
    assert_eq!(field.len(), 1, "{name} in {}", page.body());
    field[0].attr("value").unwrap().to_string()
}

async fn dry_run(browser: &Browser, csv: &str) -> Page {
    browser.post("/import", &[("csv", csv)]).await
}

async fn users(server: &TestServer) -> Vec<Value> {
    server
        .get("/api/v1/users")
        .await
        .1
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_both_bad_rows_and_they_download_as_csv() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;
    let form = browser.get("/import").await;
    assert_eq!(form.status, 200);
    assert_eq!(
        form.all("form[action='/import'] textarea[name=csv]").len(),
        1
    );
    assert_eq!(
        form.all("nav a[href='/import'][aria-current=page]").len(),
        1
    );

    // Browsers post a text area's lines ended by CR LF.
    let page = dry_run(&browser, &TWO_BAD_ROWS.replace('\n', "\r\n")).await;
    assert_eq!(page.status, 200, "{}", page.body());
    assert_eq!(page.text("#count-errors"), "2 on 2 rows");
    let bad_rows = cells(&page, "#bad-rows");
    let located: Vec<&[String]> = bad_rows.iter().map(|row| &row[..3]).collect();
    assert_eq!(
        located,
        [["3", "mac", "zz"], ["4", "model", "nope"]],
        "{}",
        page.body()
    );
    assert!(bad_rows[0][3].starts_with("'zz': a MAC address has 12 hex digits"));
    assert_eq!(bad_rows[1][3], "unknown model 'nope'");
    assert!(
        page.all("#apply-form").is_empty(),
        "a bad file has no Apply"
    );
    assert!(users(&server).await.is_empty(), "a dry run writes nothing");

    let link = page.all("a#download")[0].attr("href").unwrap().to_string();
    let hash = sha256(&TWO_BAD_ROWS.replace('\n', "\r\n"));
    assert_eq!(link, format!("/import/{hash}/bad-rows.csv"));
    let download = browser.get(&link).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.headers[CONTENT_TYPE], "text/csv; charset=utf-8");
    // The download is the table: line, column, value, message.
    let text = download.html.root_element().text().collect::<String>();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["line", "column", "value", "message"]
    );
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, bad_rows);

    // Another session has no such dry run.
    let other = sign_in(&server, TOKEN).await;
    assert_eq!(other.get(&link).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_writes_the_previewed_file_only_while_the_file_and_store_are_unchanged() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;

    let preview = dry_run(&browser, CLEAN).await;
    assert_eq!(preview.status, 200, "{}", preview.body());
    assert_eq!(preview.text("#count-create"), "2 users, 1 devices");
    assert_eq!(preview.text("#count-errors"), "0 on 0 rows");
    let (hash, generation) = (
        apply_field(&preview, "hash"),
        apply_field(&preview, "generation"),
    );

    // A file that was not previewed (say, edited since) is refused.
    let edited = CLEAN.replace("Grace", "Grayce");
    let edited_hash = sha256(&edited);
    let refused = browser
        .post(
            "/import/apply",
            &[("hash", &edited_hash), ("generation", &generation)],
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body());
    assert!(refused.text(".error").contains("Run the dry run again"));
    assert!(users(&server).await.is_empty());

    // The store changed since the dry run: refused, nothing written.
    server
        .add_user(crate::common::user_json("300", "Edsger", "Dijkstra"))
        .await;
    let refused = browser
        .post(
            "/import/apply",
            &[("hash", &hash), ("generation", &generation)],
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body());
    assert!(
        refused
            .text(".error")
            .contains("the store changed since the dry run"),
        "{}",
        refused.body()
    );
    assert_eq!(users(&server).await.len(), 1);

    // Previewed again: applied, exactly that file.
    let preview = dry_run(&browser, CLEAN).await;
    let generation = apply_field(&preview, "generation");
    assert_eq!(apply_field(&preview, "hash"), hash);
    let applied = browser
        .post(
            "/import/apply",
            &[("hash", &hash), ("generation", &generation)],
        )
        .await;
    assert_eq!(applied.status, 201, "{}", applied.body());
    assert_eq!(applied.all("#applied").len(), 1);
    assert_eq!(applied.text("#count-create"), "2 users, 1 devices");
    let extensions: Vec<Value> = users(&server)
        .await
        .iter()
        .map(|u| u["extension"].clone())
        .collect();
    assert_eq!(extensions, [json!("300"), json!("201"), json!("202")]);
    let (status, device) = server.get("/api/v1/devices/001565000201").await;
    assert_eq!(status, 200);
    assert_eq!(device["lines"].as_array().unwrap().len(), 2);

    // The same Apply again writes nothing twice.
    let again = browser
        .post(
            "/import/apply",
            &[("hash", &hash), ("generation", &generation)],
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(users(&server).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_no_import_and_its_forged_apply_is_refused() {
    let server = TestServer::start().await;
    let writer = sign_in(&server, TOKEN).await;
    let preview = dry_run(&writer, CLEAN).await;
    let (hash, generation) = (
        apply_field(&preview, "hash"),
        apply_field(&preview, "generation"),
    );
    let (_, token) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    let reader = sign_in(&server, token["token"].as_str().unwrap()).await;

    let page = reader.get("/import").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.all("#read-only").len(), 1);
    assert!(page.all("form[action='/import'], #apply-form").is_empty());
    let forged = reader
        .post(
            "/import/apply",
            &[("hash", &hash), ("generation", &generation)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(reader.post("/import", &[("csv", CLEAN)]).await.status, 403);
    assert!(users(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_phone_is_listed_adopted_ignored_and_banned() {
    let server = TestServer::start().await;
    // Ada's T46S has never fetched its file: the new T46S may replace it.
    server.ada_with_a_t46s().await;
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:77";
    assert_eq!(server.phone_get("/001565000077.cfg", Some(ua)).await.0, 404);
    let other = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:78";
    assert_eq!(
        server.phone_get("/001565000078.cfg", Some(other)).await.0,
        404
    );

    let browser = sign_in(&server, TOKEN).await;
    let dashboard = browser.get("/").await;
    assert_eq!(
        dashboard.text("a[href='/discovered'] #count-discovered"),
        "2"
    );

    let page = browser.get("/discovered").await;
    assert_eq!(page.status, 200, "{}", page.body());
    let row = cells(&page, "#discovered")
        .into_iter()
        .find(|r| r[0] == "00:15:65:00:00:77")
        .expect("the phone that asked");
    assert_eq!(row[1..4], ["Yealink", "Yealink T46S", "127.0.0.1"]);
    assert_eq!(row[6], "1", "one request");
    let replaces = page.all("#mac-001565000077 .replaces a");
    assert_eq!(
        replaces[0].attr("href"),
        Some("/devices/001565aabbcc/replace?to=001565000077")
    );

    // Adopt: the new-device form, prefilled.
    let adopt = page.all("#mac-001565000077 a.adopt")[0]
        .attr("href")
        .unwrap()
        .to_string();
    let form = browser.get(&adopt).await;
    assert_eq!(form.status, 200);
    assert_eq!(form.all("#mac")[0].attr("value"), Some("00:15:65:00:00:77"));
    assert_eq!(
        form.all("#model option[selected]")[0].attr("value"),
        Some("yealink-t46s")
    );

    // Ignore: forgotten, and the audit log says who.
    let ignored = browser.post("/discovered/001565000078/ignore", &[]).await;
    assert_eq!(ignored.status, 303);
    let page = browser.get("/discovered").await;
    assert!(page.all("#mac-001565000078").is_empty());
    let (_, discovered) = server.get("/api/v1/discovered").await;
    assert_eq!(discovered.as_array().unwrap().len(), 1, "{discovered}");
    let (_, audit) = server
        .get("/api/v1/audit?target=discovered/001565000078")
        .await;
    assert_eq!(audit[0]["action"], "discovered.delete", "{audit}");

    // Ban: Ada's phone at the same address is now refused its file,
    // until the bans API lifts it.
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);
    let banned = browser.post("/discovered/001565000077/ban", &[]).await;
    assert_eq!(banned.status, 303);
    assert_eq!(
        banned.headers[LOCATION],
        "/discovered?banned=127%2E0%2E0%2E1"
    );
    let (_, bans) = server.get("/api/v1/bans").await;
    let transports: Vec<&Value> = bans
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["address"] == "127.0.0.1")
        .map(|b| &b["transport"])
        .collect();
    assert_eq!(transports, [&json!("http"), &json!("tftp")], "{bans}");
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 404);
    let (_, audit) = server.get("/api/v1/audit?target=ban/127.0.0.1").await;
    assert_eq!(audit[0]["action"], "ban.add", "{audit}");
    let (status, _) = server
        .api(reqwest::Method::DELETE, "/api/v1/bans/127.0.0.1", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);
}

/// The file's SHA-256, as the pages name it.
fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
