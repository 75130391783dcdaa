//! The admin pages in a real browser (the harness of [`crate::browser`]):
//! an administrator signs in, sees a phone drift on the dashboard, opens an
//! audit entry's diff, edits a setting, makes a token (shown once), lifts
//! a ban, applies a layout to a phone after the "affects N" question; each
//! page saved as a screenshot under `target/screenshots/`. At a phone's
//! width the navigation still fits the screen.

use fantoccini::Locator;
use serde_json::json;

use crate::browser::{Driver, fill, find, poll, screenshot, sign_in, submit, wait_for_page};
use crate::common::TestServer;
use crate::security::policy;

#[tokio::test]
async fn an_administrator_walks_through_the_admin_pages() {
    let driver = Driver::start().await;
    let server = TestServer::start_with(policy("scan_unknown_macs = 3\nban_secs = 300")).await;
    server.ada_with_a_t46s().await;
    server
        .post(
            "/api/v1/layouts",
            json!({"name": "reception", "model": "yealink-t46s",
            "keys": [{"index": 4, "type": "speed_dial", "value": "+15551234", "label": "Taxi"}]}),
        )
        .await;
    // The phone fetches its file, then its user is renamed: it drifts.
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);
    let (_, users) = server.get("/api/v1/users").await;
    server
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{}", users[0]["id"]),
            Some(json!({"first_name": "Augusta"})),
        )
        .await;
    // A scanner asks for unknown MACs until it is banned.
    for n in 0..4 {
        server.phone_get(&format!("/001565{n:06x}.cfg"), None).await;
    }

    let browser = driver.browser().await;
    browser.set_window_size(1280, 1000).await.unwrap();
    sign_in(&browser, &server).await;
    assert_eq!(
        find(&browser, "#count-drift").await.text().await.unwrap(),
        "1"
    );
    screenshot(&browser, "dashboard").await;

    browser.goto(&server.admin_url("/audit")).await.unwrap();
    wait_for_page(&browser, "Audit log").await;
    submit(&browser, "#audit .entry:first-child summary").await;
    let after = find(&browser, "#audit .entry:first-child .diff .after").await;
    assert_eq!(after.text().await.unwrap(), "Augusta");
    screenshot(&browser, "audit").await;

    browser.goto(&server.admin_url("/settings")).await.unwrap();
    wait_for_page(&browser, "Settings").await;
    find(&browser, "#key")
        .await
        .select_by_value("ntp_server")
        .await
        .unwrap();
    fill(&browser, "#value", "ntp.example").await;
    submit(&browser, "#edit-setting button").await;
    let effective = find(&browser, "#setting-ntp_server .effective").await;
    assert_eq!(effective.text().await.unwrap(), "ntp.example");
    screenshot(&browser, "settings").await;

    browser.goto(&server.admin_url("/tokens")).await.unwrap();
    wait_for_page(&browser, "Admin tokens").await;
    fill(&browser, "#name", "helpdesk").await;
    submit(&browser, "#new-token button").await;
    wait_for_page(&browser, "Token created").await;
    let secret = find(&browser, "code.secret").await.text().await.unwrap();
    assert!(secret.len() > 20);
    browser.goto(&server.admin_url("/tokens")).await.unwrap();
    wait_for_page(&browser, "Admin tokens").await;
    assert!(!browser.source().await.unwrap().contains(&secret));
    screenshot(&browser, "tokens").await;

    browser.goto(&server.admin_url("/bans")).await.unwrap();
    wait_for_page(&browser, "Bans").await;
    screenshot(&browser, "bans").await;
    submit(&browser, "#bans button").await;
    find(&browser, "#no-bans").await;

    browser.goto(&server.admin_url("/layouts")).await.unwrap();
    wait_for_page(&browser, "Key layouts").await;
    screenshot(&browser, "layouts").await;
    browser
        .goto(&server.admin_url("/layouts/reception/apply"))
        .await
        .unwrap();
    wait_for_page(&browser, "Apply layout reception").await;
    submit(&browser, "#mac-001565aabbcc").await;
    submit(&browser, "#apply-layout button[type=submit]").await;
    let affects = find(&browser, "#affects").await;
    assert_eq!(
        affects.text().await.unwrap(),
        "Apply layout reception affects 1 device(s)."
    );
    submit(&browser, "#confirm button[type=submit]").await;
    let outcome = find(&browser, "#outcome").await;
    assert_eq!(
        outcome.text().await.unwrap(),
        "1 device(s) now follow layout reception."
    );
    let (_, file) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert!(String::from_utf8_lossy(&file).contains("linekey.4.label = Taxi"));

    // At a phone's width every section is reachable without scrolling sideways.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&server.admin_url("/")).await.unwrap();
    wait_for_page(&browser, "Dashboard").await;
    let fits = poll("the page laid out", || async {
        browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .ok()?
            .as_bool()
    })
    .await;
    assert!(fits, "the dashboard scrolls sideways at 390 px");
    let links = browser.find_all(Locator::Css(".top nav a")).await.unwrap();
    assert_eq!(links.len(), 11, "every section in the navigation");
    for link in links {
        assert!(link.is_displayed().await.unwrap());
    }
    screenshot(&browser, "dashboard-phone").await;
}
