//! The web UI's admin pages without a browser: Audit, Settings, Tokens,
//! Bans, Layouts, the dashboard's drift count and the devices list's bulk
//! actions; each attacked as a read-only token and a forger would.

use reqwest::Method;
use reqwest::header::LOCATION;
use serde_json::json;

use crate::common::{TOKEN, TestServer, user_json};
use crate::security::policy;
use crate::webui::{Browser, Page, assert_security_headers, sign_in};

const ADA_MAC: &str = "001565aabbcc";
const ADA_FILE: &str = "/001565aabbcc.cfg";

/// The key editor's form for a T46S (27 keys): a speed dial to
/// `+15551234` labelled Taxi on key 3, the others empty; and `extra`.
fn t46s_keys_with_taxi_on_3(extra: (&'static str, &'static str)) -> Vec<(&'static str, String)> {
    let mut form = Vec::new();
    for i in 1..=27 {
        let (kind, value, label) = if i == 3 {
            ("speed_dial", "+15551234", "Taxi")
        } else {
            ("none", "", "")
        };
        form.extend([
            ("k_group", String::new()),
            ("k_type", kind.to_string()),
            ("k_value", value.to_string()),
            ("k_label", label.to_string()),
            ("k_line", "1".to_string()),
        ]);
    }
    form.push((extra.0, extra.1.to_string()));
    form
}

/// Three T46S phones, 001565000001 to 3, each with a user of its own.
async fn three_t46s(server: &TestServer) {
    for n in 1..=3 {
        let user = server
            .add_user(user_json(&format!("20{n}"), &format!("Desk{n}"), "Desk"))
            .await;
        server
            .add_device(
                json!({"mac": format!("00156500000{n}"), "model": "yealink-t46s",
                               "lines": [{"user": user["id"]}]}),
            )
            .await;
    }
}

async fn post_owned(browser: &Browser, path: &str, form: &[(&'static str, String)]) -> Page {
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post(path, &fields).await
}

/// The hidden fields of a confirmation page's form, to post it as a
/// browser would.
fn confirmation_fields(page: &Page) -> Vec<(String, String)> {
    page.all("#confirm input[type=hidden]")
        .iter()
        .filter(|input| input.attr("name") != Some("csrf"))
        .map(|input| {
            (
                input.attr("name").unwrap_or_default().to_string(),
                input.attr("value").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Posts a confirmation page's form: what "Yes, do it" sends.
pub(crate) async fn confirm(browser: &Browser, page: &Page) -> Page {
    let action = page.all("#confirm")[0].attr("action").unwrap().to_string();
    let fields = confirmation_fields(page);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    browser.post(&action, &fields).await
}

#[tokio::test]
async fn every_admin_page_answers_with_strict_headers() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let (status, _) = server
        .post(
            "/api/v1/layouts",
            json!({"name": "reception", "model": "yealink-t46s"}),
        )
        .await;
    assert_eq!(status, 201);
    let browser = sign_in(&server, TOKEN).await;
    let pages = [
        ("/audit", "Audit log"),
        (
            "/audit?actor=admin&object=device/&action=device&from=2020-01-01&to=2099-12-31",
            "Audit log",
        ),
        ("/settings", "Settings"),
        ("/settings?device=00:15:65:AA:BB:CC", "Settings"),
        ("/tokens", "Admin tokens"),
        ("/bans", "Bans"),
        ("/layouts", "Key layouts"),
        ("/layouts/reception", "Layout reception"),
        ("/layouts/reception/apply", "Apply layout reception"),
        ("/devices?drift=yes&custom=no&modules=no", "Devices"),
    ];
    for (path, title) in pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body());
        assert_security_headers(&page, path);
        assert_eq!(page.text("h1"), title, "{path}");
        for section in ["/audit", "/settings", "/tokens", "/bans", "/layouts"] {
            assert_eq!(
                page.all(&format!(".top nav a[href='{section}']")).len(),
                1,
                "{path} links to {section}"
            );
        }
    }
    // The layout's page edits its keys with the device page's editor.
    let layout = browser.get("/layouts/reception").await;
    assert_eq!(layout.all("#keys-editor .slot").len(), 27);
    assert_eq!(
        layout.all("#keys-editor")[0].attr("action"),
        Some("/layouts/reception")
    );
    let picks = browser
        .get("/layouts/reception/targets?k_value=ad&k_type=blf&position=Key%203")
        .await;
    assert_eq!(picks.all("button.pick[data-value='101']").len(), 1);
    // A bad day is refused, saying why.
    let bad = browser.get("/audit?from=yesterday").await;
    assert_eq!(bad.status, 422);
    assert!(bad.text(".error").contains("not a day"), "{}", bad.body());
}

#[tokio::test]
async fn the_audit_filters_narrow_and_each_entry_shows_before_and_after() {
    let server = TestServer::start().await;
    let ada = server.ada_with_a_t46s().await;
    let (_, users) = server.get("/api/v1/users").await;
    let id = users[0]["id"].as_u64().unwrap();
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({"first_name": "Augusta"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ada["mac"], ADA_MAC);
    let browser = sign_in(&server, TOKEN).await;

    let all = browser.get("/audit").await;
    let entries = all.all("#audit .entry");
    assert_eq!(entries.len(), 3, "{}", all.body());
    // Newest first.
    assert!(
        all.text("#audit .entry:first-child .action")
            .contains("user.update")
    );

    let users_only = browser.get("/audit?object=user/").await;
    assert_eq!(users_only.all("#audit .entry").len(), 2);
    let updates = browser.get("/audit?action=user.update").await;
    assert_eq!(updates.all("#audit .entry").len(), 1);
    let row = updates.all("#audit table.diff tbody tr");
    assert_eq!(row.len(), 1, "{}", updates.body());
    assert_eq!(updates.text(".diff td:first-child"), "first_name");
    assert_eq!(updates.text(".diff .before"), "Ada");
    assert_eq!(updates.text(".diff .after"), "Augusta");
    // The filters stay in the pager's links and the form.
    assert_eq!(updates.all("#action")[0].attr("value"), Some("user.update"));
    for (query, kept) in [
        ("actor=admin", 3),
        ("actor=nobody", 0),
        ("action=device", 1),
        ("from=2099-01-01", 0),
        ("to=1999-12-31", 0),
    ] {
        let page = browser.get(&format!("/audit?{query}")).await;
        assert_eq!(page.all("#audit .entry").len(), kept, "{query}");
    }
}

#[tokio::test]
async fn a_setting_edited_at_a_level_lands_and_a_bad_value_changes_nothing() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let browser = sign_in(&server, TOKEN).await;

    let saved = browser
        .post(
            "/settings",
            &[("level", "global"), ("key", "vlan_id"), ("value", "20")],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body());
    let (_, global) = server.get("/api/v1/settings").await;
    assert_eq!(global["vlan_id"], 20);
    assert_eq!(saved.text("#setting-vlan_id .effective"), "20");
    assert_eq!(saved.text("#setting-vlan_id .from"), "Global");

    let refused = browser
        .post(
            "/settings",
            &[("level", "global"), ("key", "vlan_id"), ("value", "5000")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.text("#notice").contains("1 to 4094"),
        "{}",
        refused.body()
    );
    let (_, global) = server.get("/api/v1/settings").await;
    assert_eq!(global["vlan_id"], 20, "nothing changed");

    // A model's level and a phone's own: the phone's chain shows which wins.
    let model = browser
        .post(
            "/settings",
            &[
                ("level", "model:yealink-t46s"),
                ("key", "sip_server"),
                ("value", "pbx.example"),
            ],
        )
        .await;
    assert_eq!(model.status, 200, "{}", model.body());
    let own = browser
        .post(
            "/settings",
            &[
                ("level", "device:001565aabbcc"),
                ("key", "vlan_id"),
                ("value", "30"),
                ("device", ADA_MAC),
            ],
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body());
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(device["settings"]["vlan_id"], 30);
    assert_eq!(own.text("#setting-vlan_id .effective"), "30");
    assert_eq!(
        own.text("#setting-vlan_id .from"),
        "Device 00:15:65:aa:bb:cc"
    );
    assert_eq!(own.text("#setting-sip_server .from"), "Model yealink-t46s");
    let (_, file) = server.phone_get(ADA_FILE, None).await;
    assert!(String::from_utf8_lossy(&file).contains("pbx.example"));

    // An empty value unsets it at that level: the global one shows through.
    let unset = browser
        .post(
            "/settings",
            &[
                ("level", "device:001565aabbcc"),
                ("key", "vlan_id"),
                ("value", ""),
                ("device", ADA_MAC),
            ],
        )
        .await;
    assert_eq!(unset.text("#setting-vlan_id .from"), "Global");
}

#[tokio::test]
async fn a_token_is_shown_once_and_revoking_it_ends_its_session() {
    let server = TestServer::start().await;
    let browser = sign_in(&server, TOKEN).await;
    let created = browser
        .post("/tokens", &[("name", "helpdesk"), ("scope", "write")])
        .await;
    assert_eq!(created.status, 200, "{}", created.body());
    let secret = created.text("code.secret");
    assert!(secret.len() > 20, "{secret}");
    let (_, tokens) = server.get("/api/v1/tokens").await;
    assert_eq!(tokens[0]["name"], "helpdesk");

    // It signs in; nowhere else shows it.
    let helpdesk = sign_in(&server, &secret).await;
    let list = helpdesk.get("/tokens").await;
    assert_eq!(list.text("#tokens tbody td:first-child"), "helpdesk");
    assert!(!list.body().contains(&secret));
    let again = browser
        .post("/tokens", &[("name", "helpdesk"), ("scope", "read")])
        .await;
    assert_eq!(again.status, 422);
    assert!(again.text(".error").contains("already exists"));
    assert!(again.all("code.secret").is_empty());

    // Revoking asks first; confirmed, the token's session ends.
    let asked = browser.post("/tokens/helpdesk/revoke", &[]).await;
    assert_eq!(asked.status, 200, "{}", asked.body());
    assert!(asked.text("#affects").contains("helpdesk"));
    let (_, tokens) = server.get("/api/v1/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1, "not yet revoked");
    let revoked = confirm(&browser, &asked).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body());
    assert_eq!(revoked.text("#outcome"), "Token helpdesk is revoked.");
    let (_, tokens) = server.get("/api/v1/tokens").await;
    assert_eq!(tokens, json!([]));
    let after = helpdesk.get("/tokens").await;
    assert_eq!(after.status, 303);
    assert_eq!(after.headers[LOCATION], "/login");
}

#[tokio::test]
async fn a_scanners_ban_is_listed_and_lifted() {
    let server = TestServer::start_with(policy("scan_unknown_macs = 3\nban_secs = 300")).await;
    for n in 0..4 {
        server.phone_get(&format!("/001565{n:06x}.cfg"), None).await;
    }
    let browser = sign_in(&server, TOKEN).await;
    let bans = browser.get("/bans").await;
    let listed = bans.text("#bans tbody");
    assert!(listed.contains("127.0.0.1"), "{}", bans.body());
    assert!(listed.contains("unknown MAC(s) over http"), "{listed}");

    let lifted = browser
        .post("/bans/lift", &[("address", "127.0.0.1")])
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body());
    assert!(lifted.text("#notice").contains("lifted"));
    assert_eq!(lifted.all("#bans").len(), 0);
    assert_eq!(lifted.all("#no-bans").len(), 1);
    let (_, bans) = server.get("/api/v1/bans").await;
    assert_eq!(bans, json!([]));
    let audit = browser.get("/audit?action=ban.lift").await;
    assert_eq!(audit.all("#audit .entry").len(), 1);

    let nonsense = browser
        .post("/bans/lift", &[("address", "not-an-ip")])
        .await;
    assert_eq!(nonsense.status, 422);
}

#[tokio::test]
async fn a_layout_made_in_the_ui_and_applied_to_two_phones_changes_their_files() {
    let server = TestServer::start().await;
    three_t46s(&server).await;
    let browser = sign_in(&server, TOKEN).await;
    let created = browser
        .post(
            "/layouts",
            &[
                ("name", "reception"),
                ("model", "yealink-t46s"),
                ("description", "Front desk"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body());
    assert_eq!(created.headers[LOCATION], "/layouts/reception");
    let bad = browser
        .post(
            "/layouts",
            &[("name", "Bad Name"), ("model", "yealink-t46s")],
        )
        .await;
    assert_eq!(bad.status, 422);

    // Keys through the device page's editor: a move is a draft, Save stores.
    let moved = post_owned(
        &browser,
        "/layouts/reception",
        &t46s_keys_with_taxi_on_3(("move", "2:up")),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.body());
    assert_eq!(
        moved.all("#slot-1 input[name=k_value]")[0].attr("value"),
        Some("+15551234")
    );
    let (_, stored) = server.get("/api/v1/layouts/reception").await;
    assert_eq!(stored["keys"], json!([]));
    let saved = post_owned(
        &browser,
        "/layouts/reception",
        &t46s_keys_with_taxi_on_3(("action", "save")),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.body());
    let (_, stored) = server.get("/api/v1/layouts/reception").await;
    assert_eq!(stored["keys"][0]["index"], 3);
    assert_eq!(stored["keys"][0]["label"], "Taxi");

    // Applied to two of the three: asked first, then done.
    let choose = browser.get("/layouts/reception/apply").await;
    assert_eq!(choose.all("#candidates tbody tr").len(), 3);
    let asked = browser
        .post(
            "/devices/bulk",
            &[
                ("action", "layout"),
                ("layout", "reception"),
                ("mac", "001565000001"),
                ("mac", "001565000002"),
            ],
        )
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body());
    assert_eq!(
        asked.text("#affects"),
        "Apply layout reception affects 2 device(s)."
    );
    let (_, untouched) = server.get("/api/v1/devices/001565000001").await;
    assert!(
        untouched.get("layout").is_none_or(|l| l.is_null()),
        "{untouched}"
    );
    let done = confirm(&browser, &asked).await;
    assert_eq!(done.status, 200, "{}", done.body());
    assert_eq!(
        done.text("#outcome"),
        "2 device(s) now follow layout reception."
    );
    for mac in ["001565000001", "001565000002"] {
        let (_, file) = server.phone_get(&format!("/{mac}.cfg"), None).await;
        assert!(
            String::from_utf8_lossy(&file).contains("linekey.3.label = Taxi"),
            "{mac}"
        );
    }
    let (_, other) = server.phone_get("/001565000003.cfg", None).await;
    assert!(!String::from_utf8_lossy(&other).contains("Taxi"));
    let layouts = browser.get("/layouts").await;
    assert!(layouts.text("#layouts tbody").contains("2 device(s)"));

    // Deleting it is refused while phones follow it, with the API's reason.
    let refused = browser.post("/layouts/reception/delete", &[]).await;
    assert_eq!(refused.status, 422, "{}", refused.body());
    assert!(refused.text("#notice").contains("followed by 2 device(s)"));
    let (status, _) = server.get("/api/v1/layouts/reception").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn drift_counts_a_phone_whose_file_changed_and_resync_these_targets_it() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let other = server.add_user(user_json("102", "Grace", "Hopper")).await;
    server
        .add_device(json!({"mac": "001565000102", "model": "yealink-t46s", "lines": [{"user": other["id"]}]}))
        .await;
    for file in [ADA_FILE, "/001565000102.cfg"] {
        assert_eq!(server.phone_get(file, None).await.0, 200);
    }
    let browser = sign_in(&server, TOKEN).await;
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.text("#count-drift"), "0");
    assert!(dashboard.all("#resync-drift").is_empty());

    let (_, users) = server.get("/api/v1/users").await;
    let ada = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["extension"] == "101")
        .unwrap();
    let (status, _) = server
        .api(
            Method::PATCH,
            &format!("/api/v1/users/{}", ada["id"]),
            Some(json!({"first_name": "Augusta"})),
        )
        .await;
    assert_eq!(status, 200);
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.text("#count-drift"), "1");
    let drifting = browser.get("/devices?drift=yes").await;
    assert_eq!(drifting.text("#devices tbody td a"), "00:15:65:aa:bb:cc");

    // "Resync these" names exactly the drifting phone before it runs.
    let form: Vec<(String, String)> = dashboard
        .all("#resync-drift input[type=hidden]")
        .iter()
        .filter(|i| i.attr("name") != Some("csrf"))
        .map(|i| {
            (
                i.attr("name").unwrap().to_string(),
                i.attr("value").unwrap().to_string(),
            )
        })
        .collect();
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let asked = browser.post("/devices/bulk", &form).await;
    assert_eq!(asked.status, 200, "{}", asked.body());
    assert_eq!(asked.text("#affects"), "Resync affects 1 device(s).");
    let macs: Vec<String> = confirmation_fields(&asked)
        .into_iter()
        .filter(|(name, _)| name == "mac")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(macs, ["001565aabbcc"]);
    let done = confirm(&browser, &asked).await;
    assert_eq!(done.status, 200, "{}", done.body());
    assert!(
        done.text("#outcome")
            .starts_with("Resync queued for 1 device(s)"),
        "{}",
        done.text("#outcome")
    );

    // Once the phone fetches its file again, it no longer drifts.
    assert_eq!(server.phone_get(ADA_FILE, None).await.0, 200);
    assert_eq!(browser.get("/").await.text("#count-drift"), "0");
}

#[tokio::test]
async fn a_bulk_action_says_how_many_phones_it_affects_before_it_runs() {
    let server = TestServer::start().await;
    three_t46s(&server).await;
    let browser = sign_in(&server, TOKEN).await;
    let list = browser.get("/devices?model=yealink-t46s").await;
    assert_eq!(list.all("#bulk input[name=mac]").len(), 3);
    assert!(list.text("#bulk").contains("all 3 matching this filter"));
    assert_eq!(
        list.all("#bulk input[name=model]")[0].attr("value"),
        Some("yealink-t46s")
    );

    let ticked = browser
        .post(
            "/devices/bulk",
            &[
                ("action", "reboot"),
                ("mac", "001565000001"),
                ("mac", "001565000003"),
            ],
        )
        .await;
    assert_eq!(ticked.text("#affects"), "Reboot affects 2 device(s).");
    let all = browser
        .post(
            "/devices/bulk",
            &[
                ("action", "resync"),
                ("all", "yes"),
                ("model", "yealink-t46s"),
            ],
        )
        .await;
    assert_eq!(all.text("#affects"), "Resync affects 3 device(s).");
    assert_eq!(all.all(".affected li").len(), 3);
    let (_, log) = server.get("/api/v1/audit").await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "resync.bulk"),
        "nothing ran before the confirmation"
    );
    let done = confirm(&browser, &all).await;
    assert!(
        done.text("#outcome").contains("3 never seen"),
        "{}",
        done.body()
    );
    let none = browser.post("/devices/bulk", &[("action", "resync")]).await;
    assert_eq!(none.status, 422);
}

#[tokio::test]
async fn a_read_only_token_sees_no_admin_write_control_and_its_forged_posts_are_refused() {
    let server = TestServer::start_with(policy("scan_unknown_macs = 3\nban_secs = 300")).await;
    server.ada_with_a_t46s().await;
    server
        .post(
            "/api/v1/layouts",
            json!({"name": "reception", "model": "yealink-t46s"}),
        )
        .await;
    for n in 0..4 {
        server.phone_get(&format!("/001565{n:06x}.cfg"), None).await;
    }
    let (_, token) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    let viewer = sign_in(&server, token["token"].as_str().unwrap()).await;
    for path in [
        "/",
        "/audit",
        "/settings",
        "/tokens",
        "/bans",
        "/layouts",
        "/layouts/reception",
        "/layouts/reception/apply",
        "/devices",
    ] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        let forms = page.all("form[method=post]");
        assert_eq!(forms.len(), 1, "{path}: only sign-out");
        assert_eq!(forms[0].attr("action"), Some("/logout"));
        assert!(page.all("[hx-post], input[name=mac]").is_empty(), "{path}");
    }

    let before = server.snapshot().await;
    let (_, bans_before) = server.get("/api/v1/bans").await;
    let forged: [(&str, &[(&str, &str)]); 7] = [
        (
            "/settings",
            &[("level", "global"), ("key", "vlan_id"), ("value", "20")],
        ),
        ("/tokens", &[("name", "mine"), ("scope", "write")]),
        ("/tokens/viewer/revoke", &[("confirm", "yes")]),
        ("/bans/lift", &[("address", "127.0.0.1")]),
        ("/layouts", &[("name", "sales"), ("model", "yealink-t46s")]),
        ("/layouts/reception/delete", &[]),
        (
            "/devices/bulk",
            &[
                ("action", "layout"),
                ("layout", "reception"),
                ("all", "yes"),
                ("confirm", "yes"),
            ],
        ),
    ];
    for (path, form) in forged {
        let refused = viewer.post(path, form).await;
        assert_eq!(refused.status, 403, "{path}");
    }
    assert_eq!(server.snapshot().await, before, "nothing was written");
    let (_, tokens) = server.get("/api/v1/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let (_, layouts) = server.get("/api/v1/layouts").await;
    assert_eq!(layouts.as_array().unwrap().len(), 1);
    let (_, bans_after) = server.get("/api/v1/bans").await;
    assert_eq!(bans_after, bans_before);
}
