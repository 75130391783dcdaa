//! Re-importing an edited spreadsheet: a row whose extension is a stored
//! user's updates it (an empty cell keeps the stored value), a row whose
//! MAC is a stored phone's adds its user as the next line, and what would
//! stay as stored is counted unchanged and leaves no audit entry. Moving a
//! user to another phone or naming a phone's model wrongly refuses the
//! whole file. The API, the web UI's dry run and the CLI show the counts.

use reqwest::Method;
use serde_json::Value;

use crate::common::{TOKEN, TestServer};
use crate::webui::sign_in;

const HEADER: &str = "extension,firstname,lastname,email,sip_username,sip_password,mac,model";

/// Grace and Alan, each on a T46S; Edsger without a phone.
fn staff(alan: &str, alan_password: &str) -> String {
    format!(
        "{HEADER}\n\
         201,Grace,Hopper,grace@example.com,,Pw-201-first,001565000201,yealink-t46s\n\
         202,{alan},Turing,,,{alan_password},001565000202,yealink-t46s\n\
         203,Edsger,Dijkstra,,,Pw-203-first,,\n"
    )
}

async fn import(server: &TestServer, csv: &str) -> Value {
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", csv).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// The import answer's counts: users created, updated, unchanged, then
/// devices created, updated, unchanged.
fn counts(answer: &Value) -> [u64; 6] {
    [
        "users",
        "users_updated",
        "users_unchanged",
        "devices",
        "devices_updated",
        "devices_unchanged",
    ]
    .map(|key| {
        answer[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {answer}"))
    })
}

async fn audit(server: &TestServer) -> Vec<Value> {
    let (status, entries) = server.get("/api/v1/audit").await;
    assert_eq!(status, 200);
    entries.as_array().expect("audit entries").clone()
}

/// The phone's file, as it fetches it over HTTP.
async fn phone_file(server: &TestServer, mac: &str) -> String {
    let (status, body) = server.phone_get(&format!("/{mac}.cfg"), None).await;
    assert_eq!(status, 200);
    String::from_utf8(body).expect("a text file")
}

async fn user(server: &TestServer, extension: &str) -> Value {
    let (_, users) = server.get("/api/v1/users").await;
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["extension"] == extension)
        .unwrap_or_else(|| panic!("user {extension} in {users}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reimport_changes_only_what_the_file_changed() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    let first = import(&server, &staff("Alan", "Pw-202-first")).await;
    assert_eq!(counts(&first), [3, 0, 0, 2, 0, 0]);
    let grace_id = user(&server, "201").await["id"].clone();

    // The same file again: nothing to write, nothing audited.
    let before = (server.snapshot().await, audit(&server).await);
    let again = import(&server, &staff("Alan", "Pw-202-first")).await;
    assert_eq!(counts(&again), [0, 0, 3, 0, 0, 2]);
    assert_eq!((server.snapshot().await, audit(&server).await), before);

    // One row's name and password edited: that user only, in place.
    let edited = import(&server, &staff("Alonzo", "Pw-202-second")).await;
    assert_eq!(counts(&edited), [0, 1, 2, 0, 0, 2]);
    let file = phone_file(&server, "001565000202").await;
    assert!(
        file.contains("account.1.password = Pw-202-second"),
        "{file}"
    );
    assert!(file.contains("Alonzo Turing"), "{file}");
    let added: Vec<Value> = audit(&server).await[before.1.len()..].to_vec();
    let alan_id = user(&server, "202").await["id"].clone();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(
        (&added[0]["action"], &added[0]["target"]),
        (
            &Value::from("user.update"),
            &Value::from(format!("user/{alan_id}"))
        ),
    );

    // An empty cell, or a missing column, keeps the stored value.
    let sparse = import(
        &server,
        "extension,lastname,sip_password\n201,Hopper-Murray,\n",
    )
    .await;
    assert_eq!(counts(&sparse), [0, 1, 0, 0, 0, 0]);
    let grace = user(&server, "201").await;
    assert_eq!(grace["id"], grace_id, "the user keeps its id");
    assert_eq!(
        (&grace["first_name"], &grace["last_name"], &grace["email"]),
        (
            &Value::from("Grace"),
            &Value::from("Hopper-Murray"),
            &Value::from("grace@example.com")
        )
    );
    let file = phone_file(&server, "001565000201").await;
    assert!(
        file.contains("account.1.password = Pw-201-first"),
        "the stored password stays: {file}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_phone_gets_the_next_line_and_a_move_or_a_wrong_model_refuses_the_file() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    import(&server, &staff("Alan", "Pw-202-first")).await;
    import(
        &server,
        &format!("{HEADER}\n301,Barbara,Liskov,,,,001565000301,yealink-t19p-e2\n"),
    )
    .await;

    // Edsger onto Grace's phone: the phone is updated, Edsger is not.
    let audited = audit(&server).await.len();
    let joined = import(&server, &format!("{HEADER}\n203,,,,,,001565000201,\n")).await;
    assert_eq!(counts(&joined), [0, 0, 1, 0, 1, 0]);
    let file = phone_file(&server, "001565000201").await;
    assert!(file.contains("account.2.user_name = 203"), "{file}");
    let added = audit(&server).await[audited..].to_vec();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["action"], "device.update", "{added:?}");
    assert_eq!(added[0]["target"], "device/001565000201", "{added:?}");

    // Every bad row is listed and nothing is written.
    let before = (server.snapshot().await, audit(&server).await);
    let bad = format!(
        "{HEADER}\n\
         202,Alan,Turing,,,,001565000299,yealink-t46s\n\
         201,Grace,Hopper,,,,001565000201,yealink-t48s\n\
         204,Ken,Thompson,,,,001565000301,\n\
         205,Dennis,Ritchie,,,,,\n\
         205,Dennis,Again,,,,,\n\
         203,Edsger,Renamed,,,,,\n"
    );
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", &bad).await;
    assert_eq!(status, 422, "{answer}");
    let rows: Vec<(u64, &str, &str)> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap(),
                r["error"].as_str().unwrap(),
            )
        })
        .collect();
    let located: Vec<(u64, &str)> = rows.iter().map(|(l, f, _)| (*l, *f)).collect();
    assert_eq!(
        located,
        [(2, "mac"), (3, "model"), (4, "mac"), (6, "extension")],
        "{answer}"
    );
    assert!(
        rows[0].2.starts_with("user 202 is on device 001565000202")
            && rows[0].2.ends_with("use replace to move it"),
        "{answer}"
    );
    assert!(
        rows[1].2.contains("yealink-t46s") && rows[1].2.contains("yealink-t48s"),
        "{answer}"
    );
    assert!(rows[2].2.starts_with("device 001565000301: "), "{answer}");
    assert_eq!((server.snapshot().await, audit(&server).await), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_dry_run_and_the_cli_show_what_would_be_created_updated_and_left() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    import(&server, &staff("Alan", "Pw-202-first")).await;
    // Grace renamed, Alan as he is, Edsger onto Grace's phone, Ken new.
    let edited = format!(
        "{}204,Ken,Thompson,,,,,\n",
        staff("Alan", "Pw-202-first")
            .replace("Grace,", "Grayce,")
            .replace(
                "203,Edsger,Dijkstra,,,Pw-203-first,,",
                "203,,,,,,001565000201,"
            )
    );
    let before = server.snapshot().await;

    let browser = sign_in(&server, TOKEN).await;
    let page = browser.post("/import", &[("csv", &edited)]).await;
    assert_eq!(page.status, 200, "{}", page.body());
    assert_eq!(page.text("#count-create"), "1 users, 0 devices");
    assert_eq!(page.text("#count-update"), "1 users, 1 devices");
    assert_eq!(page.text("#count-unchanged"), "2 users, 1 devices");
    assert_eq!(page.text("#count-errors"), "0 on 0 rows");
    assert_eq!(server.snapshot().await, before, "a dry run writes nothing");

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("staff.csv");
    std::fs::write(&csv, &edited).unwrap();
    let out = server
        .cli(&["import", csv.to_str().unwrap(), "--dry-run"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "users: 1 created, 1 updated, 2 unchanged; devices: 0 created, 1 updated, 1 unchanged"
        ),
        "{stderr}"
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("the JSON answer");
    assert_eq!(counts(&answer), [1, 1, 2, 0, 1, 1]);
    server.stop().await;
}
