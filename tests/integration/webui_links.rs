//! Every page the web UI links to answers: a crawl from the dashboard,
//! signed in, over a store with a user, a phone with keys, a layout, an
//! uploaded template and a discovered phone. Pages are built by different
//! files; a link one of them draws to another's route is checked here, as
//! is what every page must be (one `main`, strict headers, a CSRF token in
//! every form that writes, ids used once).

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde_json::json;

use crate::common::{TOKEN, TestServer};
use crate::webui::{Page, assert_security_headers, sign_in};

/// Pages the crawl visits at most: every kind of page, well within.
const MAX_PAGES: usize = 400;

const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:12:34:56";

#[tokio::test]
async fn every_link_in_the_web_ui_leads_to_a_page_that_answers() {
    let server = TestServer::start().await;
    a_store_with_one_of_everything(&server).await;
    let pages = crawl(&server).await;
    // The crawl reached every section, not only the dashboard.
    for section in ["/users", "/devices", "/templates", "/discovered", "/import"] {
        assert!(pages.iter().any(|p| p == section), "no link to {section}");
    }
}

/// Crawls the UI from the dashboard, signed in, checking each page on
/// the way (see the module doc); the pages it found, in the order found.
pub(crate) async fn crawl(server: &TestServer) -> Vec<String> {
    let browser = sign_in(server, TOKEN).await;
    let mut queue = VecDeque::from(["/".to_string()]);
    let mut seen = HashSet::from(["/".to_string()]);
    let mut pages = Vec::new();
    while let Some(path) = queue.pop_front() {
        assert!(seen.len() <= MAX_PAGES, "the crawl did not end: {path}");
        let page = browser.get(&path).await;
        // A link may lead on (a user's "replace" to their phone's).
        if page.status == 303 {
            let onward = page.headers["location"].to_str().unwrap_or_default();
            assert!(onward.starts_with('/'), "{path} leads away to {onward:?}");
            if seen.insert(onward.to_string()) {
                queue.push_back(onward.to_string());
            }
            continue;
        }
        assert_eq!(page.status, 200, "{path}: {}", page.body());
        if path.starts_with("/assets/") {
            continue;
        }
        let html = page.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"));
        if !html {
            continue;
        }
        assert!(is_a_whole_page(&page), "{path} is not a whole page");
        assert_security_headers(&page, &path);
        assert_forms_carry_csrf(&page, &path);
        assert_ids_are_unique(&page, &path);
        for link in links(&page) {
            if seen.insert(link.clone()) {
                queue.push_back(link);
            }
        }
        pages.push(path);
    }
    pages
}

/// Ada with her T46S (a BLF on key 3), Grace, a layout, a model template,
/// and an unknown phone that asked for its file.
pub(crate) async fn a_store_with_one_of_everything(server: &TestServer) {
    server.ada_with_a_t46s().await;
    let grace = json!({"extension": "201", "first_name": "Grace", "last_name": "Hopper",
        "sip": {"username": "sip201", "password": "Pw-201-secret"}});
    server.add_user(grace).await;
    let (status, body) = server
        .api(
            reqwest::Method::PATCH,
            "/api/v1/devices/001565aabbcc",
            Some(json!({"keys": [{"index": 3, "type": "blf", "value": "201", "label": ""}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let layout = json!({"name": "reception", "model": "yealink-t46s",
        "keys": [{"index": 4, "type": "speed_dial", "value": "+15551234", "label": "Taxi"}]});
    let (status, body) = server.post("/api/v1/layouts", layout).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .api_text(
            reqwest::Method::PUT,
            "/api/v1/templates/models/yealink-t46s/%7Bmac%7D.cfg",
            "#!version:1.0.0.1\naccount.1.user_name = {{ lines[0].username | cfg_value }}\n",
        )
        .await;
    assert!(status == 200 || status == 201, "{status}: {body}");
    let (status, _) = server
        .phone_get("/0015650000aa.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 404);
}

/// Whether an HTML answer is a page of the UI's frame.
fn is_a_whole_page(page: &Page) -> bool {
    page.all("main").len() == 1 && page.all("h1").len() == 1
}

/// The UI's own pages a page links to, fragments dropped.
fn links(page: &Page) -> BTreeSet<String> {
    page.all("a[href]")
        .iter()
        .filter_map(|a| a.attr("href"))
        .map(|href| href.split('#').next().unwrap_or_default().to_string())
        .filter(|href| href.starts_with('/') && !href.starts_with("//"))
        .collect()
}

fn assert_forms_carry_csrf(page: &Page, path: &str) {
    for form in page.all("form") {
        let method = form.value().attr("method").unwrap_or("get");
        let action = form.value().attr("action").unwrap_or("");
        if !method.eq_ignore_ascii_case("post") || action == "/login" {
            continue;
        }
        let carries = form
            .select(&scraper::Selector::parse("input[name=csrf]").expect("selector"))
            .next()
            .is_some();
        assert!(carries, "{path}: a form posting to {action:?} has no csrf");
    }
}

fn assert_ids_are_unique(page: &Page, path: &str) {
    let mut ids = HashSet::new();
    for element in page.all("[id]") {
        let id = element.value().attr("id").unwrap_or_default();
        assert!(ids.insert(id.to_string()), "{path}: id {id:?} twice");
    }
}
