//! Import's Apply in chromium, where its script runs: the form goes to the
//! streaming route and the result replaces the page in place.

use crate::browser::{Driver, fill, find, screenshot, sign_in, submit, wait_for_page};
use crate::common::TestServer;
use crate::webui_import::CLEAN;

#[tokio::test]
async fn apply_runs_through_the_stream_and_shows_the_result_in_place() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(1280, 1000).await.unwrap();

    sign_in(&browser, &server).await;
    browser.goto(&server.admin_url("/import")).await.unwrap();
    fill(&browser, "#csv", CLEAN).await;
    submit(&browser, "#dry-run").await;
    wait_for_page(&browser, "Import: dry run").await;

    submit(&browser, "#apply").await;
    let applied = find(&browser, "#applied").await.text().await.unwrap();
    assert_eq!(applied, "Imported: every row was written.");
    // The plain form would have gone to /import/apply.
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/import");
    screenshot(&browser, "import-applied").await;
    let (_, users) = server.get("/api/v1/users").await;
    assert_eq!(users.as_array().unwrap().len(), 2);
}
