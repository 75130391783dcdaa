//! The admin web UI in a real browser: Debian's headless chromium driven
//! over WebDriver (chromedriver) with fantoccini. An administrator signs
//! in, creates a user and a phone, puts a BLF on key 3 with the picker,
//! moves it with the keyboard, saves and resyncs; the phone's file then
//! has the key. Each page is saved as a screenshot under
//! `target/screenshots/` (not committed); with `UPDATE_DOCS_SCREENSHOT=1`
//! the device page at 1,280 px also replaces `docs/webui-device.png`.
//!
//! `scripts/test` installs `chromium` and `chromium-driver`; without them
//! this test fails, saying so, rather than being skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::common::{TOKEN, TestServer};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the browser may take for anything: a page, a swap, a start.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:12:34:56";

/// chromedriver on a free loopback port, ended with the test.
pub(crate) struct Driver {
    url: String,
    _process: Child,
}

impl Driver {
    pub(crate) async fn start() -> Driver {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the browser test needs Debian's chromium and \
                 chromium-driver (scripts/test installs them: apt-get install chromium chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        // reqwest here has rustls without a provider of its own.
        deskboot::transport::tls::install_crypto_provider();
        poll("chromedriver ready", || async {
            let answer = reqwest::get(&status)
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()?;
            answer["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        Driver {
            url,
            _process: process,
        }
    }

    /// A new headless chromium window, 1,280 px wide.
    pub(crate) async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// Polls `check` until it gives a value, for at most [`PATIENCE`].
pub(crate) async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn find(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

pub(crate) async fn value_of(browser: &Client, css: &str) -> String {
    find(browser, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

pub(crate) async fn heading(browser: &Client) -> String {
    find(browser, "h1").await.text().await.unwrap()
}

/// Waits for the page titled `title`; says which page there is instead.
pub(crate) async fn wait_for_page(browser: &Client, title: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let h1 = match browser.find(Locator::Css("h1")).await {
            Ok(h1) => h1.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if h1 == title {
            return;
        }
        if Instant::now() >= deadline {
            let url = browser.current_url().await.map(|u| u.to_string());
            let page = browser.find(Locator::Css("main")).await;
            let text = match page {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("waiting for {title:?}, the browser is at {url:?}: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    dir
}

pub(crate) async fn screenshot(browser: &Client, name: &str) -> Vec<u8> {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), &png).expect("saved");
    png
}

/// Signs in to `server` with the test token; the browser is then at the
/// dashboard.
pub(crate) async fn sign_in(browser: &Client, server: &TestServer) {
    browser.goto(&server.admin_url("/login")).await.unwrap();
    fill(browser, "#token", TOKEN).await;
    submit(browser, "form[action='/login'] button").await;
    wait_for_page(browser, "Dashboard").await;
}

pub(crate) async fn fill(browser: &Client, css: &str, text: &str) {
    let field = find(browser, css).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn submit(browser: &Client, css: &str) {
    find(browser, css).await.click().await.unwrap();
}

#[tokio::test]
async fn an_administrator_puts_a_blf_on_key_3_and_the_phone_gets_it() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(1280, 1000).await.unwrap();

    browser.goto(&server.admin_url("/login")).await.unwrap();
    screenshot(&browser, "login").await;
    fill(&browser, "#token", TOKEN).await;
    submit(&browser, "form[action='/login'] button").await;
    wait_for_page(&browser, "Dashboard").await;
    screenshot(&browser, "dashboard").await;

    // Ada owns the phone; Grace is who its BLF watches.
    for (extension, first, last) in [("201", "Ada", "Lovelace"), ("202", "Grace", "Hopper")] {
        browser.goto(&server.admin_url("/users/new")).await.unwrap();
        fill(&browser, "#extension", extension).await;
        fill(&browser, "#first_name", first).await;
        fill(&browser, "#last_name", last).await;
        submit(&browser, "form[action='/users'] button").await;
        wait_for_page(&browser, "User created").await;
        let password = find(&browser, ".secrets dd:nth-of-type(2) code.secret").await;
        assert!(!password.text().await.unwrap().is_empty());
    }
    screenshot(&browser, "user-created").await;
    browser.goto(&server.admin_url("/users")).await.unwrap();
    screenshot(&browser, "users").await;

    browser
        .goto(&server.admin_url("/devices/new"))
        .await
        .unwrap();
    fill(&browser, "#mac", "00:15:65:12:34:56").await;
    find(&browser, "#model")
        .await
        .select_by_value("yealink-t46s")
        .await
        .unwrap();
    fill(&browser, "#extension", "201").await;
    submit(&browser, "form[action='/devices'] button").await;
    wait_for_page(&browser, "Device 00:15:65:12:34:56").await;

    browser.goto(&server.admin_url("/devices")).await.unwrap();
    screenshot(&browser, "devices").await;
    browser
        .goto(&server.admin_url("/devices/001565123456"))
        .await
        .unwrap();

    // The phone fetches its file once, so a resync has an address.
    let (status, _) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);

    // Key 3 (row 2): a BLF, its target picked by typing part of a name.
    find(&browser, "#type-2")
        .await
        .select_by_value("blf")
        .await
        .unwrap();
    fill(&browser, "#value-2", "Grac").await;
    let pick = find(&browser, "#picks-2 button.pick[data-value='202']").await;
    pick.click().await.unwrap();
    assert_eq!(value_of(&browser, "#value-2").await, "202");
    assert_eq!(value_of(&browser, "#label-2").await, "Grace Hopper");

    // Move it up with the keyboard: the button takes Enter, the key goes
    // to key 2, and the focus stays on its move button.
    let up = find(&browser, "button[aria-label='Move Key 3 up']").await;
    up.send_keys(&Key::Enter.to_string()).await.unwrap();
    poll("the key on key 2", || async {
        let value = browser.find(Locator::Css("#value-1")).await.ok()?;
        (value.prop("value").await.ok()?? == "202").then_some(())
    })
    .await;
    let focused = browser.active_element().await.unwrap();
    assert_eq!(
        focused.attr("aria-label").await.unwrap().as_deref(),
        Some("Move Key 2 up")
    );
    assert_eq!(value_of(&browser, "#value-2").await, "");
    screenshot(&browser, "device-keys-moved").await;

    submit(&browser, "#save-resync").await;
    let notice = find(&browser, "#notice").await;
    let notice = poll("the save's notice", || async {
        let text = notice.text().await.ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await;
    assert!(
        notice.starts_with("Saved. Resync sent to 127.0.0.1:5060"),
        "{notice}"
    );
    // The phone's file has the key.
    let (status, file) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    let file = String::from_utf8(file).unwrap();
    assert!(file.contains("linekey.2.value = 202"), "{file}");
    assert!(file.contains("linekey.2.label = Grace Hopper"), "{file}");

    browser
        .goto(&server.admin_url("/devices/001565123456"))
        .await
        .unwrap();
    assert_eq!(value_of(&browser, "#value-1").await, "202");
    let png = screenshot(&browser, "device").await;
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/webui-device.png");
        std::fs::write(docs, &png).expect("docs/webui-device.png");
    }

    // Grace's page lists the key that targets her.
    browser
        .goto(&server.admin_url("/users?q=grace"))
        .await
        .unwrap();
    submit(&browser, "#users tbody a").await;
    wait_for_page(&browser, "Grace Hopper").await;
    let references = find(&browser, "#references").await.text().await.unwrap();
    assert!(references.contains("Key 2"), "{references}");
    screenshot(&browser, "user").await;

    // The other tabs, and the device page on a phone-sized screen.
    browser
        .goto(&server.admin_url("/devices/001565123456?tab=files&file=001565123456.cfg"))
        .await
        .unwrap();
    let rendered = find(&browser, "#rendered").await.text().await.unwrap();
    assert!(rendered.contains("linekey.2.value = 202"));
    screenshot(&browser, "device-files").await;
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&server.admin_url("/devices/001565123456"))
        .await
        .unwrap();
    assert_eq!(heading(&browser).await, "Device 00:15:65:12:34:56");
    screenshot(&browser, "device-phone-sized").await;

    browser.close().await.unwrap();
}
