//! The template editor and the clone wizard in headless chromium: a broken
//! template typed into the editor is shown failing at its line, that line
//! marked and the caret put there by the page's script; a phone is cloned
//! to a new MAC through the wizard, and the new MAC gets its file over
//! HTTP. Screenshots: `templates`, `template-editor`, `clone-wizard`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::{
    Driver, YEALINK_UA, fill, find, poll, screenshot, sign_in, submit, value_of, wait_for_page,
};
use crate::common::TestServer;

#[tokio::test]
async fn a_broken_template_shows_its_line_and_a_phone_is_cloned_through_the_wizard() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    let keys =
        json!({"keys": [{"index": 2, "type": "speed_dial", "value": "*97", "label": "Voicemail"}]});
    let (status, body) = server
        .api(Method::PATCH, "/api/v1/devices/001565aabbcc", Some(keys))
        .await;
    assert_eq!(status, 200, "{body}");
    let browser = driver.browser().await;
    sign_in(&browser, &server).await;

    // From the list to the T46S's per-phone file.
    submit(&browser, "nav a[href='/templates']").await;
    wait_for_page(&browser, "Templates").await;
    find(&browser, "#model")
        .await
        .select_by_value("yealink-t46s")
        .await
        .unwrap();
    submit(&browser, "#new-template button").await;
    let file = find(&browser, "#files a[href$='%7Bmac%7D%2Ecfg']").await;
    screenshot(&browser, "templates").await;
    file.click().await.unwrap();
    wait_for_page(&browser, "Template {mac}.cfg").await;

    // A template whose second line fails to render.
    fill(
        &browser,
        "#source",
        "#!version:1.0.0.1\nkey = {{ no_such_thing }}\n",
    )
    .await;
    submit(&browser, "button[value=validate]").await;
    let error = find(&browser, "#template-error")
        .await
        .text()
        .await
        .unwrap();
    assert!(error.starts_with("line 2, column "), "{error}");
    let marked = find(&browser, ".gutter li.marked")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(marked, "2");
    // The script put the caret on line 2, where the error is.
    let caret = poll("the caret on the failing line", || async {
        let answer = browser
            .execute(
                "const s = document.getElementById('source');\
                 return [document.activeElement === s, s.value.slice(0, s.selectionStart)];",
                vec![],
            )
            .await
            .ok()?;
        (answer[0] == Value::Bool(true)).then(|| answer[1].as_str().map(str::to_string))?
    })
    .await;
    assert!(caret.starts_with("#!version:1.0.0.1\n"), "{caret:?}");
    assert_eq!(caret.matches('\n').count(), 1, "{caret:?}");
    screenshot(&browser, "template-editor").await;
    // Saving it is refused, and the phone keeps the built-in file.
    // The page before the save says the same: wait for the one after it.
    browser
        .execute("document.body.dataset.before = 'save';", vec![])
        .await
        .unwrap();
    submit(&browser, "button[value=save]").await;
    let error = poll("the save's answer", || async {
        let answer = browser
            .execute(
                "const e = document.getElementById('template-error');\
                 return document.body.dataset.before ? null : e && e.textContent;",
                vec![],
            )
            .await
            .ok()?;
        answer.as_str().map(str::to_string)
    })
    .await;
    assert!(error.starts_with("line 2, column "), "{error}");
    let (status, ada) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&ada).contains("no_such_thing"));

    // Clone Ada's phone to a new MAC that asked for its file.
    let (status, _) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 404);
    browser
        .goto(&server.admin_url("/devices/001565aabbcc"))
        .await
        .unwrap();
    submit(&browser, "#device-replace").await;
    wait_for_page(&browser, "Replace 00:15:65:aa:bb:cc").await;
    fill(&browser, "#to", "001565123456").await;
    submit(&browser, "input[name=mode][value=copy]").await;
    submit(&browser, "#wizard-start button").await;
    let confirm = find(&browser, "#wizard-confirm button").await;
    let mapped = find(&browser, "#key-map").await.text().await.unwrap();
    assert!(mapped.contains("Key 2 of the T46S"), "{mapped}");
    assert_eq!(
        value_of(&browser, "#wizard-confirm input[name=mode]").await,
        "copy"
    );
    screenshot(&browser, "clone-wizard").await;
    confirm.click().await.unwrap();
    wait_for_page(&browser, "00:15:65:12:34:56 is set up").await;

    let (status, file) = server
        .phone_get("/001565123456.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    let file = String::from_utf8(file).unwrap();
    assert!(file.contains("account.1.user_name = sip101"), "{file}");
    // A copy: the old phone keeps its file.
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);
    browser.close().await.unwrap();
}
