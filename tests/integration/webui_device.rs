//! The device page's tabs without a browser: each answers; the key
//! editor's fill, copy, sort and modules; lines and settings edited through
//! the API's checks; the history of a change; labels that follow renames;
//! a read-only token sees no write control and its forged posts are
//! refused.

use serde_json::json;

use crate::common::{TOKEN, TestServer, user_json};
use crate::webui::{Browser, Page, sign_in};

const DEVICE: &str = "/devices/001565aabbcc";

/// Every field of the keys form as the page shows it, in page order, with
/// `extra` (a button's name and value, a tool's field) added or replacing.
fn keys_form(page: &Page, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for field in page.all("#keys-editor input[name], #keys-editor select[name]") {
        let element = field.value();
        let name = element.attr("name").unwrap_or_default().to_string();
        if name == "csrf" || extra.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let value = if element.name() == "select" {
            let selected = field
                .select(&scraper::Selector::parse("option[selected]").unwrap())
                .next()
                .or_else(|| {
                    field
                        .select(&scraper::Selector::parse("option").unwrap())
                        .next()
                });
            selected
                .and_then(|o| o.value().attr("value"))
                .unwrap_or_default()
                .to_string()
        } else {
            element.attr("value").unwrap_or_default().to_string()
        };
        fields.push((name, value));
    }
    fields.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    fields
}

/// Posts the keys form of `page` with `extra`.
async fn post_keys(browser: &Browser, page: &Page, extra: &[(&str, &str)]) -> Page {
    let fields = keys_form(page, extra);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    browser.post(&format!("{DEVICE}/keys"), &fields).await
}

/// The value of the key-target field at `row`.
fn target_at(page: &Page, row: usize) -> String {
    page.all(&format!("#value-{row}"))
        .first()
        .and_then(|e| e.attr("value"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_tab_answers() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let browser = sign_in(&server, TOKEN).await;
    for tab in ["keys", "lines", "settings", "template", "files", "history"] {
        let page = browser.get(&format!("{DEVICE}?tab={tab}")).await;
        assert_eq!(page.status, 200, "{tab}: {}", page.body());
        crate::webui::assert_security_headers(&page, tab);
        assert_eq!(page.all(".tabs a[aria-current=page]").len(), 1, "{tab}");
    }
    let template = browser.get(&format!("{DEVICE}?tab=template")).await;
    let links: Vec<&str> = template
        .all("#templates a.edit-device, #templates a.edit-model")
        .iter()
        .filter_map(|a| a.attr("href"))
        .collect();
    assert!(
        links.contains(&"/templates/devices/001565aabbcc/%7Bmac%7D.cfg"),
        "{links:?}"
    );
    assert!(
        links.contains(&"/templates/models/yealink-t46s/%7Bmac%7D.cfg"),
        "{links:?}"
    );
}

#[tokio::test]
async fn a_range_fills_free_keys_in_order_and_lists_what_does_not_fit() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get(DEVICE).await;

    // From key 25 of 27: three land, two do not fit.
    let fill = [
        ("fill_first", "201"),
        ("fill_last", "205"),
        ("fill_type", "blf"),
        ("fill_start", "24"),
    ];
    let mut previewing = fill.to_vec();
    previewing.push(("tool", "fill_preview"));
    let preview = post_keys(&browser, &page, &previewing).await;
    assert_eq!(preview.status, 200, "{}", preview.body());
    assert_eq!(
        preview.text("#tool-preview .lands li"),
        "Key 25: blf 201\nKey 26: blf 202\nKey 27: blf 203"
    );
    let misfits = preview.text("#tool-preview .misfits li");
    assert!(
        misfits.contains("204") && misfits.contains("205"),
        "{misfits}"
    );
    assert_eq!(target_at(&preview, 24), "", "a preview changes nothing");

    // Applied from key 1, with key 2 taken: the range goes round it.
    let mut taken = keys_form(&page, &[]);
    let row = |name: &str, n: usize| {
        taken
            .iter()
            .enumerate()
            .filter(|(_, (f, _))| f == name)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap()
    };
    let (kind, value) = (row("k_type", 1), row("k_value", 1));
    taken[kind].1 = "speed_dial".into();
    taken[value].1 = "*97".into();
    let fields: Vec<(&str, &str)> = taken
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain([
            ("fill_first", "201"),
            ("fill_last", "205"),
            ("fill_type", "blf"),
            ("fill_start", "0"),
            ("tool", "fill"),
        ])
        .collect();
    let filled = browser.post(&format!("{DEVICE}/keys"), &fields).await;
    assert_eq!(filled.status, 200, "{}", filled.body());
    let targets: Vec<String> = (0..7).map(|r| target_at(&filled, r)).collect();
    assert_eq!(targets, ["201", "*97", "202", "203", "204", "205", ""]);
    assert!(filled.text(".warning").contains("Not saved yet"));
    // No user has 201: the key's lamp would stay dark, and it says so.
    assert!(
        filled
            .text("#slot-0 .warning")
            .contains("no user has extension 201")
    );

    let saved = post_keys(&browser, &filled, &[("action", "save")]).await;
    assert_eq!(saved.text("#notice"), "Saved.");
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    let values: Vec<&str> = device["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["201", "*97", "202", "203", "204", "205"]);
}

#[tokio::test]
async fn copying_a_layout_previews_what_does_not_fit() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    server.add_user(user_json("102", "Grace", "Hopper")).await;
    let (status, layout) = server
        .post(
            "/api/v1/layouts",
            json!({"name": "reception", "model": "yealink-t46s", "keys": [
                {"index": 1, "type": "blf", "value": "102", "label": "Grace"},
                {"index": 2, "type": "speed_dial", "value": "*97", "label": "Voicemail"},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{layout}");
    // A module key only a phone with a module can take.
    let (status, with_module) = server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565000001", "model": "yealink-t46s", "modules": ["yealink-exp40"],
                   "keys": [{"module": 1, "index": 4, "type": "blf", "value": "102"},
                            {"index": 3, "type": "blf", "value": "102"}]}),
        )
        .await;
    assert_eq!(status, 201, "{with_module}");
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get(DEVICE).await;

    let preview = post_keys(
        &browser,
        &page,
        &[
            ("copy_kind", "layout"),
            ("copy_from", "reception"),
            ("tool", "copy_preview"),
        ],
    )
    .await;
    assert_eq!(preview.status, 200, "{}", preview.body());
    assert_eq!(
        preview.text("#tool-preview .lands li"),
        "Key 1: blf 102\nKey 2: speed_dial *97"
    );
    assert!(preview.all("#tool-preview .misfits li").is_empty());

    let from_device = post_keys(
        &browser,
        &page,
        &[
            ("copy_kind", "device"),
            ("copy_from", "00:15:65:00:00:01"),
            ("tool", "copy"),
        ],
    )
    .await;
    assert_eq!(from_device.status, 200, "{}", from_device.body());
    assert_eq!(
        from_device.text("#tool-preview .lands li"),
        "Key 3: blf 102"
    );
    let misfit = from_device.text("#tool-preview .misfits li");
    assert!(
        misfit.starts_with("Module 1 key 4: blf 102") && misfit.contains("module"),
        "{misfit}"
    );
    assert_eq!(target_at(&from_device, 2), "102");
    // Its label follows Grace's name: shown empty, her name as the hint.
    let label = &from_device.all("#label-2")[0];
    assert_eq!(label.attr("value"), Some(""));
    assert_eq!(label.attr("placeholder"), Some("Grace Hopper"));
}

#[tokio::test]
async fn a_label_that_is_the_targets_name_follows_a_rename() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let grace = server.add_user(user_json("102", "Grace", "Hopper")).await;
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get(DEVICE).await;
    let mut form = keys_form(&page, &[("action", "save")]);
    let at = |form: &Vec<(String, String)>, name: &str| {
        form.iter().position(|(n, _)| n == name).unwrap()
    };
    let i = at(&form, "k_type");
    form[i].1 = "blf".into();
    let i = at(&form, "k_value");
    form[i].1 = "102".into();
    let i = at(&form, "k_label");
    form[i].1 = "Grace Hopper".into();
    let fields: Vec<(&str, &str)> = form.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let saved = browser.post(&format!("{DEVICE}/keys"), &fields).await;
    assert_eq!(saved.text("#notice"), "Saved.");
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(device["keys"][0]["label"], "{name}");

    let (status, _) = server
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{}", grace["id"]),
            Some(json!({"last_name": "Brewster Hopper"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, file) = server
        .admin_text("/api/v1/devices/001565aabbcc/files/001565aabbcc.cfg")
        .await;
    assert!(
        file.contains("linekey.1.label = Grace Brewster Hopper"),
        "{file}"
    );
}

#[tokio::test]
async fn sorting_by_label_and_modules_up_to_capacity() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let (status, _) = server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}],
                   "modules": ["yealink-exp40", "yealink-exp40", "yealink-exp40", "yealink-exp40", "yealink-exp40"],
                   "keys": [{"index": 1, "type": "speed_dial", "value": "1", "label": "Zed"},
                            {"index": 4, "type": "speed_dial", "value": "2", "label": "alpha"},
                            {"module": 3, "index": 1, "type": "speed_dial", "value": "3", "label": "m3"},
                            {"module": 5, "index": 2, "type": "speed_dial", "value": "5", "label": "m5"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let browser = sign_in(&server, TOKEN).await;
    let page = browser.get(DEVICE).await;

    let sorted = post_keys(&browser, &page, &[("tool", "sort")]).await;
    assert_eq!(sorted.status, 200, "{}", sorted.body());
    assert_eq!(
        (target_at(&sorted, 0), target_at(&sorted, 3)),
        ("2".into(), "1".into())
    );

    // Five of six modules: one more may be added, then no more.
    assert!(page.all("#add-module[disabled]").is_empty());
    let added = post_keys(
        &browser,
        &page,
        &[("module_kind", "yealink-exp40"), ("tool", "add_module")],
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body());
    assert_eq!(added.all("#add-module[disabled]").len(), 1);
    assert!(added.text("#modules-full").contains("at most 6"));
    let refused = post_keys(
        &browser,
        &added,
        &[("module_kind", "yealink-exp40"), ("tool", "add_module")],
    )
    .await;
    assert_eq!(refused.status, 422);
    assert!(refused.text("#notice").contains("at most 6"));

    // Removing module 3 takes its key; module 5's moves up to module 4.
    let removed = post_keys(&browser, &added, &[("tool", "remove_module:3")]).await;
    let saved = post_keys(&browser, &removed, &[("action", "save")]).await;
    assert_eq!(saved.text("#notice"), "Saved.", "{}", saved.body());
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(device["modules"].as_array().unwrap().len(), 5);
    let on_modules: Vec<(u64, &str)> = device["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k["module"].is_null())
        .map(|k| (k["module"].as_u64().unwrap(), k["value"].as_str().unwrap()))
        .collect();
    assert_eq!(on_modules, [(4, "5")]);
}

#[tokio::test]
async fn lines_are_edited_with_the_apis_checks() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let grace = server.add_user(user_json("102", "Grace", "Hopper")).await;
    let browser = sign_in(&server, TOKEN).await;
    let tab = browser.get(&format!("{DEVICE}?tab=lines")).await;
    assert_eq!(
        tab.all("#lines-form input[name=l_user]").len(),
        2,
        "line 1 and a new one"
    );

    let saved = browser
        .post(
            &format!("{DEVICE}/lines"),
            &[
                ("l_user", "101"),
                ("l_label", ""),
                ("l_user", "102"),
                ("l_label", "Grace"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body());
    assert_eq!(saved.text("#notice"), "Lines saved.");
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(
        device["lines"][1],
        json!({"user": grace["id"], "label": "Grace"})
    );

    // An unknown extension is refused, shown again, and nothing changes.
    let refused = browser
        .post(
            &format!("{DEVICE}/lines"),
            &[
                ("l_user", "101"),
                ("l_label", ""),
                ("l_user", "999"),
                ("l_label", ""),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused
            .text("#notice")
            .contains("no user has extension 999")
    );
    assert_eq!(refused.all("#lines input[value='999']").len(), 1);
    let (_, after) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(after, device);

    // A key on line 2 keeps line 2 from going away: the API's own check.
    let (status, _) = server
        .api(
            reqwest::Method::PATCH,
            "/api/v1/devices/001565aabbcc",
            Some(json!({"keys": [{"index": 1, "type": "line", "line": 2}]})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    let kept = browser
        .post(
            &format!("{DEVICE}/lines"),
            &[
                ("l_user", "101"),
                ("l_label", ""),
                ("l_user", "102"),
                ("l_label", "Grace"),
                ("remove", "2"),
            ],
        )
        .await;
    assert_eq!(kept.status, 422);
    assert!(
        kept.text("#notice").contains("no line 2"),
        "{}",
        kept.text("#notice")
    );
    let (_, after) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(after, device);
}

#[tokio::test]
async fn settings_show_their_level_and_the_device_overrides_them() {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    let (status, _) = server
        .api(
            reqwest::Method::PATCH,
            "/api/v1/models/yealink-t46s/settings",
            Some(json!({"ntp_server": "ntp.model.example"})),
        )
        .await;
    assert_eq!(status, 200);
    let browser = sign_in(&server, TOKEN).await;
    let saved = browser
        .post(
            &format!("{DEVICE}/settings"),
            &[("sip_port", "5062"), ("vlan_id", ""), ("syslog_server", "")],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body());
    assert_eq!(saved.text("#notice"), "Settings saved.");
    let (_, device) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(device["settings"], json!({"sip_port": 5062}));

    let tab = browser.get(&format!("{DEVICE}?tab=settings")).await;
    let row = |name: &str| {
        (
            tab.text(&format!("#setting-{name} .value")),
            tab.text(&format!("#setting-{name} .level")),
        )
    };
    assert_eq!(
        row("sip_server"),
        ("pbx.example.com".into(), "global".into())
    );
    assert_eq!(
        row("ntp_server"),
        ("ntp.model.example".into(), "model".into())
    );
    assert_eq!(row("sip_port"), ("5062".into(), "device".into()));
    assert_eq!(row("sip_transport"), ("udp".into(), "default".into()));

    // A bad value is refused and shown again; nothing changes.
    let refused = browser
        .post(&format!("{DEVICE}/settings"), &[("vlan_id", "5000")])
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.text("#notice").contains("vlan_id"));
    assert_eq!(refused.all("#set-vlan_id[value='5000']").len(), 1);
    let (_, after) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(after["settings"], json!({"sip_port": 5062}));
}

#[tokio::test]
async fn history_lists_a_change_newest_first_with_before_and_after() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let browser = sign_in(&server, TOKEN).await;
    let saved = browser
        .post(&format!("{DEVICE}/settings"), &[("sip_port", "5062")])
        .await;
    assert_eq!(saved.status, 200);
    let saved = browser
        .post(&format!("{DEVICE}/settings"), &[("sip_port", "5064")])
        .await;
    assert_eq!(saved.status, 200);

    let tab = browser.get(&format!("{DEVICE}?tab=history")).await;
    let entries = tab.all("#history > li");
    assert!(entries.len() >= 4, "two updates, the device and Ada made");
    let newest = tab.text("#history > li:first-child");
    assert!(newest.contains("device.update"), "{newest}");
    assert_eq!(
        (
            tab.text("#history > li:first-child td.before"),
            tab.text("#history > li:first-child td.after")
        ),
        ("5062".into(), "5064".into())
    );
    assert!(tab.text("#history").contains("user.create"));
}

#[tokio::test]
async fn read_only_sees_no_write_control_on_any_tab_and_forged_posts_are_refused() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let (status, token) = server
        .post("/api/v1/tokens", json!({"name": "viewer", "scope": "read"}))
        .await;
    assert_eq!(status, 201);
    let browser = sign_in(&server, token["token"].as_str().unwrap()).await;
    for tab in ["keys", "lines", "settings", "template", "files", "history"] {
        let page = browser.get(&format!("{DEVICE}?tab={tab}")).await;
        assert_eq!(page.status, 200, "{tab}");
        let forms = page.all("form[method=post]");
        assert_eq!(forms.len(), 1, "{tab}: only sign-out");
        assert!(
            page.all("button[name=tool], input[name=l_user], input[name=sip_port], #add-module")
                .is_empty(),
            "{tab}"
        );
    }
    let (_, before) = server.get("/api/v1/devices/001565aabbcc").await;
    for (path, form) in [
        ("lines", vec![("l_user", "101"), ("l_label", "x")]),
        ("settings", vec![("sip_port", "5062")]),
        (
            "keys",
            vec![("modules", "yealink-exp40"), ("tool", "add_module")],
        ),
    ] {
        let forged = browser.post(&format!("{DEVICE}/{path}"), &form).await;
        assert_eq!(forged.status, 403, "{path}");
    }
    let (_, after) = server.get("/api/v1/devices/001565aabbcc").await;
    assert_eq!(after, before);
}
