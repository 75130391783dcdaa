//! Every page of the web UI on a phone-sized screen, in a real browser:
//! the pages the link crawl finds (see [`crate::webui_links`]), each
//! opened at 390 px wide, must not scroll sideways as a whole (a wide
//! table may scroll inside its own box) and must show its heading. Each
//! is saved as `<page>-phone.png` under `target/screenshots/`.

use crate::browser::{Driver, find, poll, screenshot, sign_in};
use crate::common::TestServer;
use crate::webui_links::{a_store_with_one_of_everything, crawl};

/// The page's width, the screen's, and the innermost element that sticks
/// out of the screen outside a box that scrolls on its own, to name it.
const MEASURE: &str = r#"
const screen = window.innerWidth;
const out = [...document.querySelectorAll("body *")].filter(e =>
    e.getBoundingClientRect().right > screen + 0.5 && !e.parentElement.closest(".scroll, pre"));
const last = out[out.length - 1];
return [document.documentElement.scrollWidth, screen, last ? last.outerHTML.slice(0, 160) : ""];
"#;

#[tokio::test]
async fn every_page_fits_a_phone_sized_screen() {
    let server = TestServer::start().await;
    a_store_with_one_of_everything(&server).await;
    let pages = crawl(&server).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(390, 844).await.unwrap();
    sign_in(&browser, &server).await;

    let mut too_wide = Vec::new();
    for path in &pages {
        browser.goto(&server.admin_url(path)).await.unwrap();
        assert!(find(&browser, "h1").await.is_displayed().await.unwrap());
        let (width, screen, culprit) = poll("the page laid out", || async {
            let measured = browser.execute(MEASURE, vec![]).await.ok()?;
            serde_json::from_value::<(u64, u64, String)>(measured).ok()
        })
        .await;
        if width > screen {
            too_wide.push(format!("{path} ({width} px: {culprit})"));
        }
        let name: String = path
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = if name.is_empty() { "dashboard" } else { &name };
        screenshot(&browser, &format!("{name}-phone")).await;
    }
    assert!(
        too_wide.is_empty(),
        "{} of {} pages scroll sideways at 390 px: {too_wide:?}",
        too_wide.len(),
        pages.len()
    );
    browser.close().await.unwrap();
}
