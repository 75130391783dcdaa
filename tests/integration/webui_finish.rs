//! The web UI's last gaps without a browser: each token's last use, on the
//! Tokens page and in the API, kept across a restart.

use serde_json::{Value, json};

use crate::common::{TOKEN, TestServer};
use crate::webui::{Page, client, sign_in};

/// The cells of a table's body, row by row.
fn cells(page: &Page, table: &str) -> Vec<Vec<String>> {
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
    assert_eq!(listed_token(&server, "idle").await["last_used"], Value::Null);
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get("/tokens").await;
    assert!(last_used_cell(&page, "ops").ends_with(" UTC"), "{}", page.body());
    assert_eq!(last_used_cell(&page, "idle"), "never");
    assert!(page.text("#bootstrap-used").ends_with(" UTC."));

    // Written to the store: a restart keeps it.
    let last_used = ops["last_used"].clone();
    server.stop().await;
    let server = TestServer::start_in(data.path()).await;
    assert_eq!(listed_token(&server, "ops").await["last_used"], last_used);
    assert_eq!(listed_token(&server, "idle").await["last_used"], Value::Null);
}
