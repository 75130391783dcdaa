//! The admin web UI without a browser: each page after signing in, parsed
//! as HTML; the security headers and cookie; cross-site and tokenless
//! writes; secrets shown once; read-only tokens; the key editor's form.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use reqwest::Method;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use scraper::{Html, Selector};
use serde_json::json;

use crate::common::{TOKEN, TestServer, user_json};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An administrator's browser, as far as HTTP goes: one session cookie,
/// no redirects followed, same-origin headers on its writes.
pub(crate) struct Browser {
    http: reqwest::Client,
    origin: String,
    cookie: String,
    csrf: String,
}

/// An answer: status, headers, parsed page.
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) html: Html,
}

impl Page {
    pub(crate) fn all(&self, selector: &str) -> Vec<scraper::ElementRef<'_>> {
        let selector = Selector::parse(selector).expect("selector");
        self.html.select(&selector).collect()
    }

    pub(crate) fn text(&self, selector: &str) -> String {
        self.all(selector)
            .iter()
            .map(|e| e.text().collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn body(&self) -> String {
        self.html.root_element().html()
    }
}

/// Form posts (reqwest's own `form` is a feature the server does not need).
pub(crate) trait FormFields {
    fn form_fields<K: AsRef<str>, V: AsRef<str>>(self, fields: &[(K, V)]) -> Self;
}

impl FormFields for reqwest::RequestBuilder {
    fn form_fields<K: AsRef<str>, V: AsRef<str>>(self, fields: &[(K, V)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            .finish();
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) async fn page(response: reqwest::Response) -> Page {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Page {
        status,
        headers,
        html: Html::parse_document(&text),
    }
}

/// A page asked for without a session.
pub(crate) async fn anonymous_get(server: &TestServer, path: &str) -> Page {
    page(
        client()
            .get(server.admin_url(path))
            .send()
            .await
            .expect("UI answers"),
    )
    .await
}

/// Signs in to `server`'s UI with `token`; panics unless it works.
pub(crate) async fn sign_in(server: &TestServer, token: &str) -> Browser {
    let origin = server.admin_url("");
    let http = client();
    let response = http
        .post(server.admin_url("/login"))
        .header("Origin", &origin)
        .header("Sec-Fetch-Site", "same-origin")
        .form_fields(&[("token", token)])
        .send()
        .await
        .expect("login answers");
    assert_eq!(response.status(), 303);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let mut browser = Browser {
        http,
        origin,
        cookie,
        csrf: String::new(),
    };
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.status, 200);
    browser.csrf = dashboard.all("input[name=csrf]")[0]
        .attr("value")
        .unwrap()
        .to_string();
    browser
}

impl Browser {
    pub(crate) async fn get(&self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.origin))
            .header("Cookie", &self.cookie)
            .send()
            .await
            .expect("UI answers");
        page(response).await
    }

    /// A form post from one of the UI's own pages, with the CSRF token.
    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut fields = vec![("csrf", self.csrf.as_str())];
        fields.extend_from_slice(form);
        self.post_raw(path, &fields, &[("Sec-Fetch-Site", "same-origin")])
            .await
    }

    /// A post with exactly these fields and headers.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        page(self.send_raw(path, form, headers).await).await
    }

    /// A post with exactly these fields and headers, its answer unread (a
    /// stream, not a page).
    pub(crate) async fn send_raw(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("Cookie", &self.cookie)
            .header("Origin", &self.origin)
            .form_fields(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("UI answers")
    }

    /// The session's CSRF token, as its pages' forms carry it.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(crate) fn assert_security_headers(page: &Page, what: &str) {
    let header = |name: &str| {
        page.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("content-security-policy"), CSP, "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    // Nothing inline for the CSP to refuse.
    assert!(page.all("script:not([src])").is_empty(), "{what}");
    assert!(page.all("style, [style]").is_empty(), "{what}");
}

#[tokio::test]
async fn every_page_answers_after_sign_in_with_strict_headers() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let (_, ada) = server.get("/api/v1/users").await;
    let ada_id = ada[0]["id"].as_u64().unwrap();

    // Signed out, a page sends the browser to the sign-in page.
    let anonymous = anonymous_get(&server, "/devices").await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.headers[LOCATION], "/login");
    let login = anonymous_get(&server, "/login").await;
    assert_eq!(login.status, 200);
    assert_security_headers(&login, "/login");
    assert_eq!(login.all("input[name=token][type=password]").len(), 1);

    let response = client()
        .post(server.admin_url("/login"))
        .form_fields(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in [
        "__Host-deskboot=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");

    let browser = sign_in(&server, TOKEN).await;
    let pages = [
        ("/", "Dashboard"),
        ("/users", "Users"),
        ("/users?q=ada", "Users"),
        ("/users/new", "New user"),
        (&*format!("/users/{ada_id}"), "Ada Lovelace"),
        ("/devices", "Devices"),
        ("/devices?q=65:AA&status=never", "Devices"),
        ("/devices/new", "New device"),
        ("/devices/001565aabbcc", "Device 00:15:65:aa:bb:cc"),
        (
            "/devices/00-15-65-AA-BB-CC?tab=lines",
            "Device 00:15:65:aa:bb:cc",
        ),
        (
            "/devices/001565aabbcc?tab=files",
            "Device 00:15:65:aa:bb:cc",
        ),
        (
            "/devices/001565aabbcc?tab=files&file=001565aabbcc.cfg",
            "Device 00:15:65:aa:bb:cc",
        ),
    ];
    for (path, title) in pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body());
        assert_security_headers(&page, path);
        assert_eq!(page.text("h1"), title, "{path}");
        assert_eq!(page.all("main").len(), 1, "{path}");
    }

    // The lists find Ada and her phone by partial MAC and by extension.
    let devices = browser.get("/devices?q=65:AA&status=never").await;
    assert!(devices.text("#devices tbody").contains("00:15:65:aa:bb:cc"));
    let devices = browser.get("/devices?q=101&status=seen").await;
    assert!(devices.all("#devices tbody tr").is_empty());
    let users = browser.get("/users?q=lovel").await;
    assert_eq!(users.all("#users tbody tr").len(), 1);

    // The rendered file is the masked preview.
    let file = browser
        .get("/devices/001565aabbcc?tab=files&file=001565aabbcc.cfg")
        .await;
    let rendered = file.text("#rendered");
    assert!(rendered.contains("sip101"), "{rendered}");
    assert!(!rendered.contains("Pw-101-secret"), "{rendered}");

    // Assets are served under their content hash, cacheable for good.
    let script = browser.get("/").await.all("script[src]")[0]
        .attr("src")
        .unwrap()
        .to_string();
    assert!(script.starts_with("/assets/htmx-"), "{script}");
    let asset = browser.get(&script).await;
    assert_eq!(asset.status, 200);
    assert_eq!(
        asset.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
}

#[tokio::test]
async fn cross_site_and_tokenless_writes_are_refused() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;
    let user = [("extension", "201"), ("first_name", "Eve")];
    let with_csrf = |form: &[(&'static str, &'static str)]| {
        let mut fields = vec![("csrf", browser.csrf.clone())];
        fields.extend(form.iter().map(|(k, v)| (*k, v.to_string())));
        fields
    };
    let fields = with_csrf(&user);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let cross_site = browser
        .post_raw("/users", &fields, &[("Sec-Fetch-Site", "cross-site")])
        .await;
    assert_eq!(cross_site.status, 403);
    let other_origin = browser
        .http
        .post(server.admin_url("/users"))
        .header("Cookie", &browser.cookie)
        .header("Origin", "http://evil.example")
        .form_fields(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(other_origin.status(), 403);
    let no_token = browser
        .post_raw("/users", &user, &[("Sec-Fetch-Site", "same-origin")])
        .await;
    assert_eq!(no_token.status, 403);
    assert!(no_token.text(".error").contains("CSRF"));
    let wrong_token = browser
        .post_raw(
            "/users",
            &[("csrf", "not-the-token"), ("extension", "201")],
            &[("x-csrf-token", "not-the-token")],
        )
        .await;
    assert_eq!(wrong_token.status, 403);
    // A cross-site sign-in is refused too.
    let login = client()
        .post(server.admin_url("/login"))
        .header("Sec-Fetch-Site", "cross-site")
        .form_fields(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);

    let (_, users) = server.get("/api/v1/users").await;
    assert_eq!(users, json!([]), "nothing was written");
    // The same form from the UI's own page, with its token, works.
    let created = browser.post("/users", &user).await;
    assert_eq!(created.status, 200, "{}", created.body());
}

#[tokio::test]
async fn a_secret_appears_only_in_its_creating_answer() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;
    let created = browser
        .post(
            "/users",
            &[
                ("extension", "202"),
                ("first_name", "Grace"),
                ("last_name", "Hopper"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body());
    let secrets = created.all("code.secret");
    let password = secrets[1].text().collect::<String>();
    assert_eq!(password.len(), 20);
    let (_, users) = server.get("/api/v1/users").await;
    assert_eq!(users[0]["sip"]["password"], password.as_str());
    let id = users[0]["id"].as_u64().unwrap();

    server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565000202", "model": "yealink-t46s", "lines": [{"user": id}]}),
        )
        .await;
    let elsewhere = [
        format!("/users/{id}"),
        "/users".to_string(),
        "/".to_string(),
        "/devices/001565000202".to_string(),
        "/devices/001565000202?tab=files&file=001565000202.cfg".to_string(),
    ];
    for path in &elsewhere {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body().contains(&password),
            "{path} shows the password"
        );
    }

    let rotated = browser.post(&format!("/users/{id}/password"), &[]).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body());
    let new_password = rotated.text("code.secret");
    assert_eq!(new_password.len(), 20);
    assert_ne!(new_password, password);
    let (_, user) = server.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(user["sip"]["password"], new_password.as_str());
    let user_page = browser.get(&format!("/users/{id}")).await;
    assert!(!user_page.body().contains(&new_password));
}

#[tokio::test]
async fn a_read_only_token_sees_no_write_control_and_cannot_write() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let (status, token) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().unwrap().to_string();
    let (_, users) = server.get("/api/v1/users").await;
    let ada = users[0]["id"].as_u64().unwrap();

    let browser = sign_in(&server, &token).await;
    for path in [
        "/".to_string(),
        "/users".to_string(),
        format!("/users/{ada}"),
        "/devices".to_string(),
        "/devices/001565aabbcc".to_string(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        let forms = page.all("form[method=post]");
        assert_eq!(forms.len(), 1, "{path}: only sign-out");
        assert_eq!(forms[0].attr("action"), Some("/logout"));
        assert!(
            page.all("[hx-post], button[name=move], select[name=k_type], a[href$='/new']")
                .is_empty(),
            "{path}"
        );
        assert!(page.text(".who").contains("read only"));
    }

    // A forged write, with the session's own CSRF token, is refused.
    let forged = browser.post("/users", &[("extension", "301")]).await;
    assert_eq!(forged.status, 403);
    let forged = browser
        .post(
            "/devices/001565aabbcc/keys",
            &[
                ("k_group", ""),
                ("k_type", "blf"),
                ("k_value", "301"),
                ("k_label", ""),
                ("k_line", "1"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(device["keys"], json!([]));

    // Revoking the token ends its session.
    let (status, _) = server
        .api(Method::DELETE, "/api/v1/tokens/viewer", None)
        .await;
    assert_eq!(status, 204);
    let after = browser.get("/").await;
    assert_eq!(after.status, 303);
    assert_eq!(after.headers[LOCATION], "/login");
}

#[tokio::test]
async fn keys_are_placed_moved_and_saved_through_the_form() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let grace = server.add_user(user_json("102", "Grace", "Hopper")).await;
    let browser = sign_in(&server, TOKEN).await;
    let device = browser.get("/devices/001565aabbcc").await;
    let slots = device.all("#keys-editor .slot");
    assert_eq!(slots.len(), 27, "a T46S has 27 programmable keys");

    // The picker suggests Grace by name, and warns about Ada's own extension.
    let picks = browser
        .get("/devices/001565aabbcc/targets?k_value=grac&k_type=blf&position=Key%203")
        .await;
    assert_eq!(picks.all("button.pick[data-value='102']").len(), 1);
    let own = browser
        .get("/devices/001565aabbcc/targets?k_value=101&k_type=blf&position=Key%203")
        .await;
    assert!(own.text(".warning").contains("own extension"));
    let unknown = browser
        .get("/devices/001565aabbcc/targets?k_value=999&k_type=blf&position=Key%203")
        .await;
    assert!(
        unknown
            .text(".warning")
            .contains("no user has extension 999")
    );

    // A BLF on key 3, moved up: the draft is not saved until Save.
    let mut form: Vec<(&str, String)> = Vec::new();
    for i in 1..=27 {
        let (kind, value) = if i == 3 { ("blf", "102") } else { ("none", "") };
        form.extend([
            ("k_group", String::new()),
            ("k_type", kind.to_string()),
            ("k_value", value.to_string()),
            ("k_label", String::new()),
            ("k_line", "1".to_string()),
        ]);
    }
    let fields = |extra: (&'static str, &'static str)| {
        let mut fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(extra);
        fields
    };
    let moved = browser
        .post("/devices/001565aabbcc/keys", &fields(("move", "2:up")))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body());
    let row = &moved.all("#slot-1 input[name=k_value]")[0];
    assert_eq!(row.attr("value"), Some("102"));
    assert_eq!(moved.all("#slot-1 button[autofocus]").len(), 1);
    let (_, stored) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(stored["keys"], json!([]));

    let saved = browser
        .post("/devices/001565aabbcc/keys", &fields(("action", "save")))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body());
    assert_eq!(saved.text("#notice"), "Saved.");
    let (_, stored) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(
        stored["keys"],
        json!([{"module": null, "index": 3, "type": "blf", "value": "102", "label": "{name}", "line": 1}])
    );

    // Grace's page lists the key that targets her.
    let grace_page = browser.get(&format!("/users/{}", grace["id"])).await;
    assert!(grace_page.text("#references").contains("Key 3"));

    // Save and resync of a phone never seen: saved, and says why no NOTIFY.
    let resynced = browser
        .post(
            "/devices/001565aabbcc/keys",
            &fields(("action", "save_resync")),
        )
        .await;
    assert_eq!(resynced.status, 422);
    assert!(resynced.text("#notice").contains("Saved. Resync not sent"));
    assert!(resynced.text("#notice").contains("never fetched"));
}

#[tokio::test]
async fn devices_page_on_the_server() {
    let server = TestServer::start().await;
    for n in 0..60 {
        let mac = format!("0015650000{n:02x}");
        let (status, body) = server
            .post(
                "/api/v1/devices",
                json!({"mac": mac, "model": "yealink-t46s"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let browser = sign_in(&server, TOKEN).await;
    let first = browser.get("/devices?model=yealink-t46s").await;
    assert_eq!(first.all("#devices tbody tr").len(), 50);
    assert_eq!(first.text(".pager span"), "Page 1 of 2 (60 found)");
    let next = first.all("a[rel=next]")[0]
        .attr("href")
        .unwrap()
        .to_string();
    let second = browser.get(&next).await;
    assert_eq!(second.all("#devices tbody tr").len(), 10);
    let one = browser.get("/devices?q=00-15-65-00-00-3B").await;
    assert_eq!(one.all("#devices tbody tr").len(), 1);
}

/// An address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the source address.
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let address = socket.local_addr().ok()?.ip();
    (!address.is_loopback() && !address.is_unspecified()).then_some(address)
}

#[tokio::test]
async fn plain_http_from_another_address_is_told_to_use_https() {
    let Some(address) = non_loopback_address() else {
        // session::tests::plain_http_is_for_loopback_only covers the rule.
        eprintln!("no non-loopback address on this machine: tested as a unit only");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(dir.path(), |c| {
        c.admin = SocketAddr::new(address, 0);
    })
    .await;
    let login = anonymous_get(&server, "/login").await;
    assert_eq!(login.status, 403);
    assert!(login.text(".error").contains("HTTPS"));
    assert!(login.all("input[name=token]").is_empty());
    let refused = client()
        .post(server.admin_url("/login"))
        .form_fields(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    // The API is not the UI: tokens over the network still work there.
    let (status, _) = server.get("/api/v1/users").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_list_a_page_at_a_time() {
    let server = TestServer::start().await;
    let mut csv =
        String::from("extension,firstname,lastname,email,sip_username,sip_password,mac,model\n");
    for i in 0..10_000u32 {
        csv.push_str(&format!(
            "{},User,N{i},,,,0015650{i:05x},yealink-t46s\n",
            20_000 + i
        ));
    }
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", &csv).await;
    assert_eq!(status, 201, "{answer}");
    let browser = sign_in(&server, TOKEN).await;
    // Each page is built from the store, never by rendering every device:
    // in this debug build a page takes a few hundred milliseconds; a bound
    // of seconds catches work that grows with the fleet times itself.
    let pages = [
        ("/devices", 50),
        ("/devices?q=29999", 1),
        ("/devices?q=00:15:65:00:27:0F&status=never", 1),
        ("/devices?model=yealink-t46s&status=seen", 0),
        ("/", 0),
    ];
    for (path, rows) in pages {
        let started = std::time::Instant::now();
        let page = browser.get(path).await;
        let took = started.elapsed();
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.all("#devices tbody tr").len(), rows, "{path}");
        assert!(took < std::time::Duration::from_secs(5), "{path}: {took:?}");
    }
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.text("#count-never"), "10000");
}

#[tokio::test]
async fn a_phones_http_credentials_are_shown_once_and_sign_out_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(dir.path(), |c| {
        c.provisioning.http_auth = deskboot::access::phone_auth::AuthMode::Device;
    })
    .await;
    let browser = sign_in(&server, TOKEN).await;
    let created = browser
        .post(
            "/devices",
            &[
                ("mac", "00-15-65-AA-00-01"),
                ("model", "yealink-t46s"),
                ("extension", ""),
                ("description", "lobby"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body());
    let password = created.all(".secrets dd:nth-of-type(2) code.secret")[0]
        .text()
        .collect::<String>();
    assert!(!password.is_empty());
    for path in ["/devices/001565aa0001", "/devices?q=lobby", "/"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body().contains(&password),
            "{path} shows the password"
        );
    }

    let signed_out = browser.post("/logout", &[]).await;
    assert_eq!(signed_out.status, 303);
    let cleared = signed_out.headers[SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("__Host-deskboot=;") && cleared.contains("Max-Age=0"));
    let after = browser.get("/").await;
    assert_eq!(after.status, 303, "the old cookie opens nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_page_names_the_layout_its_phone_follows() {
    let server = TestServer::start().await;
    let (status, layout) = server
        .post(
            "/api/v1/layouts",
            json!({"name": "reception", "model": "yealink-t46s",
                   "keys": [{"index": 3, "type": "speed_dial", "value": "100"}]}),
        )
        .await;
    assert_eq!(status, 201, "{layout}");
    for (mac, layout) in [
        ("001565aabb01", json!("reception")),
        ("001565aabb02", json!(null)),
    ] {
        let (status, body) = server
            .post(
                "/api/v1/devices",
                json!({"mac": mac, "model": "yealink-t46s", "layout": layout}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let browser = sign_in(&server, TOKEN).await;
    let follows = browser.get("/devices/001565aabb01").await;
    assert!(
        follows.text("#layout").starts_with("reception"),
        "{}",
        follows.body()
    );
    let alone = browser.get("/devices/001565aabb02").await;
    assert!(alone.all("#layout").is_empty());
    server.stop().await;
}
