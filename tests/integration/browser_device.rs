//! The device page in a real browser (see [`crate::browser`]): an
//! administrator fills extensions 202 to 206 as BLF keys from key 3,
//! saves and resyncs; the phone's file over HTTP then has the keys, their
//! labels the users' names. Each tab, and the user page, is saved as a
//! screenshot.

use fantoccini::Locator;

use crate::browser::{
    Driver, YEALINK_UA, fill, find, poll, screenshot, sign_in, submit, value_of, wait_for_page,
};
use crate::common::{TestServer, user_json};

#[tokio::test]
async fn an_administrator_fills_a_range_of_blf_keys_and_the_phone_gets_them() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("201", "Ada", "Lovelace")).await;
    let grace = server.add_user(user_json("202", "Grace", "Hopper")).await;
    server.add_user(user_json("203", "Alan", "Turing")).await;
    server
        .add_device(serde_json::json!({
            "mac": "001565123456", "model": "yealink-t46s", "lines": [{"user": ada["id"]}],
        }))
        .await;
    // The phone fetches its file once, so a resync has an address.
    let (status, _) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);

    let browser = driver.browser().await;
    sign_in(&browser, &server).await;
    browser
        .goto(&server.admin_url("/devices/001565123456"))
        .await
        .unwrap();
    wait_for_page(&browser, "Device 00:15:65:12:34:56").await;

    // Preview first: five land from key 3, nothing is left over.
    fill(&browser, "#fill_first", "202").await;
    fill(&browser, "#fill_last", "206").await;
    find(&browser, "#fill_type")
        .await
        .select_by_value("blf")
        .await
        .unwrap();
    find(&browser, "#fill_start")
        .await
        .select_by_value("2")
        .await
        .unwrap();
    submit(&browser, "#fill-preview").await;
    let lands = poll("the fill's preview", || async {
        let preview = browser
            .find(Locator::Css("#tool-preview .lands"))
            .await
            .ok()?;
        preview.text().await.ok()
    })
    .await;
    assert!(lands.starts_with("Key 3: blf 202"), "{lands}");
    assert!(lands.contains("Key 7: blf 206"), "{lands}");
    assert_eq!(value_of(&browser, "#value-2").await, "", "only a preview");

    submit(&browser, "#fill-apply").await;
    poll("the range on the keys", || async {
        let value = browser.find(Locator::Css("#value-6")).await.ok()?;
        (value.prop("value").await.ok()?? == "206").then_some(())
    })
    .await;
    assert_eq!(value_of(&browser, "#value-2").await, "202");
    let label = find(&browser, "#label-2").await;
    assert_eq!(
        label.attr("placeholder").await.unwrap().as_deref(),
        Some("Grace Hopper")
    );
    screenshot(&browser, "device-keys").await;

    submit(&browser, "#save-resync").await;
    let notice = poll("the save's notice", || async {
        let notice = browser.find(Locator::Css("#notice")).await.ok()?;
        let text = notice.text().await.ok()?;
        text.starts_with("Saved.").then_some(text)
    })
    .await;
    assert!(
        notice.starts_with("Saved. Resync sent to 127.0.0.1:5060"),
        "{notice}"
    );

    let (status, file) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    let file = String::from_utf8(file).unwrap();
    for expected in [
        "linekey.3.value = 202",
        "linekey.3.label = Grace Hopper",
        "linekey.4.label = Alan Turing",
        "linekey.7.value = 206",
    ] {
        assert!(file.contains(expected), "{expected}:\n{file}");
    }

    for (tab, shot, sign) in [
        ("lines", "device-lines", "#lines"),
        ("settings", "device-settings", "#settings"),
        ("template", "device-template", "#templates"),
        ("files&file=001565123456.cfg", "device-files", "#rendered"),
        ("history", "device-history", "#history"),
    ] {
        browser
            .goto(&server.admin_url(&format!("/devices/001565123456?tab={tab}")))
            .await
            .unwrap();
        find(&browser, sign).await;
        screenshot(&browser, shot).await;
    }

    // Grace's page lists the key that targets her, with her name.
    browser
        .goto(&server.admin_url(&format!("/users/{}", grace["id"])))
        .await
        .unwrap();
    wait_for_page(&browser, "Grace Hopper").await;
    let references = find(&browser, "#references").await.text().await.unwrap();
    assert!(references.contains("Key 3"), "{references}");
    assert!(references.contains("Grace Hopper"), "{references}");
    screenshot(&browser, "user").await;

    browser.close().await.unwrap();
}
