//! The audit log records what each change replaced: a user's life (create,
//! rename, new SIP password, delete) read back from the API with each
//! field's value before, and no password anywhere; the audit page shows
//! the rename's old name and pages through the log without counting it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TOKEN, TestServer, user_json};
use crate::webui::sign_in;

/// The password `user_json` gives extension 101, and the one it gets next.
const PASSWORDS: [&str; 2] = ["Pw-101-secret", "Rotated-Secret-77"];

/// Creates Ada (101), renames her Grace, changes her SIP password and
/// deletes her; her id.
async fn a_users_life(server: &TestServer) -> u64 {
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let id = ada["id"].as_u64().expect("an id");
    let path = format!("/api/v1/users/{id}");
    for patch in [
        json!({"first_name": "Grace"}),
        json!({"sip": {"password": PASSWORDS[1]}}),
    ] {
        let (status, body) = server.api(Method::PATCH, &path, Some(patch)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server.api(Method::DELETE, &path, None).await;
    assert!((200..300).contains(&status), "{status} {body}");
    id
}

#[tokio::test]
async fn the_api_gives_each_changes_before_values_and_never_a_password() {
    let server = TestServer::start().await;
    let id = a_users_life(&server).await;

    let (status, body) = server
        .admin_text(&format!("/api/v1/audit?target=user/{id}"))
        .await;
    assert_eq!(status, 200);
    for password in PASSWORDS {
        assert!(!body.contains(password), "{password} in {body}");
    }
    let log: Vec<Value> = serde_json::from_str(&body).expect("JSON");
    let actions: Vec<&str> = log.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["user.create", "user.update", "user.update", "user.delete"]
    );
    let (created, renamed, rotated, deleted) = (&log[0], &log[1], &log[2], &log[3]);
    // A new record had nothing before, field for field.
    assert_eq!(created["changes"]["first_name"], "Ada");
    assert_eq!(created["changes"]["sip.password"], "(set)");
    for field in ["first_name", "extension", "sip.password"] {
        assert_eq!(created["before"][field], Value::Null, "{field}");
        assert!(created["before"].get(field).is_some(), "{field} named");
    }
    assert_eq!(renamed["changes"], json!({"first_name": "Grace"}));
    assert_eq!(renamed["before"], json!({"first_name": "Ada"}));
    assert_eq!(rotated["changes"], json!({"sip.password": "(changed)"}));
    assert_eq!(rotated["before"], json!({"sip.password": "(set)"}));
    assert_eq!(
        deleted["before"],
        json!({"extension": "101", "first_name": "Grace", "last_name": "Lovelace"})
    );
}

#[tokio::test]
async fn the_audit_page_shows_the_name_a_rename_replaced() {
    let server = TestServer::start().await;
    let id = a_users_life(&server).await;
    let browser = sign_in(&server, TOKEN).await;

    let page = browser
        .get(&format!("/audit?object=user/{id}&action=user.update"))
        .await;
    assert_eq!(page.status, 200);
    let body = page.body();
    for password in PASSWORDS {
        assert!(!body.contains(password), "{password} on the page");
    }
    let rows: Vec<(String, String, String)> = page
        .all("#audit table.diff tbody tr")
        .iter()
        .map(|row| {
            let cell = |n: usize| row.child_elements().nth(n).map(|c| c.text().collect());
            let cell = |n| cell(n).unwrap_or_default();
            (cell(0), cell(1), cell(2))
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("sip.password".into(), "(set)".into(), "(changed)".into()),
            ("first_name".into(), "Ada".into(), "Grace".into()),
        ],
        "newest first: {body}"
    );

    let deleted = browser.get("/audit?action=user.delete").await;
    assert_eq!(deleted.text("#audit .before"), "101\nGrace\nLovelace");
}

#[tokio::test]
async fn the_audit_page_pages_without_counting_the_log() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let path = format!("/api/v1/users/{}", ada["id"]);
    // 52 entries: the create and 51 renames, one more than a page.
    for n in 0..51 {
        let rename = json!({"first_name": format!("Ada{n}")});
        let (status, body) = server.api(Method::PATCH, &path, Some(rename)).await;
        assert_eq!(status, 200, "{body}");
    }
    let browser = sign_in(&server, TOKEN).await;

    let first = browser.get("/audit").await;
    assert_eq!(first.all("#audit .entry").len(), 50);
    assert_eq!(first.text(".pager span"), "Page 1");
    assert_eq!(first.all("a[rel=prev]").len(), 0);
    let next = first.all("a[rel=next]")[0]
        .attr("href")
        .expect("a link")
        .to_string();
    let second = browser.get(&next).await;
    assert_eq!(second.text(".pager span"), "Page 2");
    assert_eq!(second.all("a[rel=next]").len(), 0);
    // The oldest two: the first rename, then the create.
    assert_eq!(
        second.text("#audit .entry .action"),
        "user.update\nuser.create"
    );
    assert_eq!(second.text("#audit .entry:first-child .before"), "Ada");
    // A filter that keeps few among the newest still finds the oldest.
    let created = browser.get("/audit?action=user.create").await;
    assert_eq!(created.all("#audit .entry").len(), 1);
    let past_the_end = browser.get("/audit?page=9").await;
    assert_eq!(past_the_end.text(".pager span"), "Page 2");
}
