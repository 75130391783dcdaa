//! The Import and Discovered pages in chromium: a dry run of a file with
//! two bad rows shows both; screenshots of the import form, the dry run
//! and the discovered list.

use crate::browser::{Driver, YEALINK_UA, fill, find, screenshot, sign_in, submit, wait_for_page};
use crate::common::TestServer;

const TWO_BAD_ROWS: &str = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
    101,Ada,Lovelace,,,,001565000101,yealink-t46s\n\
    102,Bad,Mac,,,,zz,yealink-t46s\n\
    103,Bad,Model,,,,001565000103,nope\n";

#[tokio::test]
async fn an_import_dry_run_shows_both_bad_rows() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(1280, 1000).await.unwrap();

    sign_in(&browser, &server).await;

    find(&browser, "nav a[href='/import']")
        .await
        .click()
        .await
        .unwrap();
    wait_for_page(&browser, "Import").await;
    // Where scripts run, the file picker shows.
    assert!(find(&browser, "#file").await.is_displayed().await.unwrap());
    fill(&browser, "#csv", TWO_BAD_ROWS).await;
    screenshot(&browser, "import").await;
    submit(&browser, "#dry-run").await;
    wait_for_page(&browser, "Import: dry run").await;

    let rows = find(&browser, "#bad-rows tbody")
        .await
        .text()
        .await
        .unwrap();
    assert!(rows.contains("3 mac zz"), "{rows}");
    assert!(rows.contains("4 model nope unknown model 'nope'"), "{rows}");
    assert_eq!(
        find(&browser, "#count-errors").await.text().await.unwrap(),
        "2 on 2 rows"
    );
    screenshot(&browser, "import-dry-run").await;

    let (status, _) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 404);
    find(&browser, "nav a[href='/discovered']")
        .await
        .click()
        .await
        .unwrap();
    wait_for_page(&browser, "Discovered phones").await;
    let row = find(&browser, "#mac-001565123456")
        .await
        .text()
        .await
        .unwrap();
    assert!(row.contains("Yealink T46S"), "{row}");
    screenshot(&browser, "discovered").await;
}
