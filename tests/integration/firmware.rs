//! Firmware images in `<data>/firmware/`: served as they are over HTTP (with
//! `Range`) and TFTP (with blksize), never rendered, never outside the folder;
//! and which phones their files point at the pinned image.

use reqwest::Method;
use reqwest::header::{CONTENT_RANGE, RANGE};
use serde_json::json;

use crate::common::{TestServer, run};

/// An image that no template engine would leave alone and no text tool
/// would pass through unchanged.
pub fn image() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain(b"{{ mac.bare }}{% raw %}".iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_served_whole_and_in_ranges_over_http_and_tftp() {
    let server = TestServer::start().await;
    let image = image();
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/T46S-66.86.0.15.rom"), &image).unwrap();
    std::fs::write(server.data.join("firmware/sip.ld"), &image[..1000]).unwrap();

    let (status, body) = server
        .phone_get("/firmware/T46S-66.86.0.15.rom", None)
        .await;
    assert_eq!(status, 200);
    assert!(body == image, "the image comes back byte for byte");

    // Poly fetches its image relative to the boot server.
    let (status, body) = server.phone_get("/sip.ld", None).await;
    assert_eq!((status, body.as_slice()), (200, &image[..1000]));

    let client = reqwest::Client::new();
    let url = server.http_url("/firmware/T46S-66.86.0.15.rom");
    let partial = client
        .get(&url)
        .header(RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()[CONTENT_RANGE],
        format!("bytes 100-199/{}", image.len()).as_str()
    );
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &image[100..200]);
    let resumed = client
        .get(&url)
        .header(RANGE, "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 206);
    assert_eq!(resumed.bytes().await.unwrap().as_ref(), &image[299_990..]);
    let beyond = client
        .get(&url)
        .header(RANGE, "bytes=900000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let over_tftp = server.tftp_curl("firmware/T46S-66.86.0.15.rom").await;
    assert!(over_tftp == Ok(image.clone()), "plain TFTP");
    let url = format!("tftp://{}/firmware/T46S-66.86.0.15.rom", server.addrs.tftp);
    let big_blocks = run("curl", &["-sS", "--tftp-blksize", "1468", &url]).await;
    assert!(big_blocks.status.success());
    assert!(big_blocks.stdout == image, "TFTP with blksize 1468");
    for options in [
        &["blksize 1468", "tsize 0"][..],
        &["windowsize 8", "blksize 1468"],
        &["windowsize 16"],
    ] {
        let got = server
            .tftp_atftp("firmware/T46S-66.86.0.15.rom", options)
            .await;
        assert!(
            got.as_ref() == Ok(&image),
            "atftp with {options:?}: {got:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_firmware_folder_is_reachable() {
    let server = TestServer::start().await;
    std::fs::create_dir_all(server.data.join("firmware/sub")).unwrap();
    std::fs::write(server.data.join("firmware/sub/inner.bin"), b"x").unwrap();
    std::fs::write(server.data.join("firmware/.hidden"), b"x").unwrap();
    std::fs::write(server.data.join("admin.token"), b"not for phones").unwrap();
    for path in [
        "/firmware/../admin.token",
        "/firmware/%2e%2e/admin.token",
        "/firmware/..%2fadmin.token",
        "/firmware/sub/inner.bin",
        "/firmware/.hidden",
        "/firmware/missing.rom",
        "/admin.token",
    ] {
        let (status, _) = server.phone_get(path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    for name in [
        &b"firmware/../admin.token"[..],
        b"firmware/sub/inner.bin",
        b"admin.token",
    ] {
        let (opcode, code) = server.tftp_raw_rrq(name).await;
        assert_eq!((opcode, code), (5, 1), "{}", String::from_utf8_lossy(name));
    }
    server.stop().await;
}

/// Checks, for each (firmware, pointed) case, whether the T46S at
/// 001565aabbcc reporting that firmware is pointed at the image in its own
/// file.
async fn assert_t46s_pointed(server: &TestServer, cases: &[(&str, bool)], when: &str) {
    for &(firmware, pointed) in cases {
        let user_agent = format!("Yealink SIP-T46S {firmware}");
        let (status, body) = server
            .phone_get("/001565aabbcc.cfg", Some(&user_agent))
            .await;
        assert_eq!(status, 200, "{user_agent}");
        let image = "static.firmware.url = http://10.0.0.5:8080/firmware/T46S-66.86.0.15.rom";
        assert_eq!(
            String::from_utf8_lossy(&body).contains(image),
            pointed,
            "{when}, a phone reporting {firmware}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_phone_on_an_older_version_is_pointed_at_the_image() {
    let server = TestServer::start().await;
    server.ada_with_a_t46s().await;
    let (status, settings) = server
        .api(
            Method::PUT,
            "/api/v1/models/yealink-t46s/settings",
            Some(json!({
                "firmware_url": "http://10.0.0.5:8080/firmware/T46S-66.86.0.15.rom",
                "firmware_version": "66.86.0.15",
            })),
        )
        .await;
    assert_eq!(status, 200, "{settings}");

    let upgrades_only = [
        ("66.86.0.15", false),
        ("66.86.00.15", false),
        ("66.86.0.160", false),
        ("66.87.0.1", false),
        ("66.86.0.9", true),
        ("66.85.0.99", true),
    ];
    assert_t46s_pointed(&server, &upgrades_only, "with 66.86.0.15 pinned").await;

    // A downgrade is pinned on purpose, with the version it goes down to.
    let device = "/api/v1/devices/001565aabbcc";
    let (status, error) = server
        .api(
            Method::PATCH,
            device,
            Some(json!({"settings": {"firmware_downgrade": true}})),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "settings.firmware_downgrade");
    let (status, error) = server
        .api(
            Method::PATCH,
            device,
            Some(json!({"settings": {"firmware_downgrade": "yes"}})),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    let (status, answer) = server
        .api(
            Method::PATCH,
            device,
            Some(
                json!({"settings": {"firmware_version": "66.86.0.15", "firmware_downgrade": true}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let downgrade = [
        ("66.87.0.1", true),
        ("66.86.0.9", true),
        ("66.86.00.15", false),
    ];
    assert_t46s_pointed(&server, &downgrade, "with a downgrade pinned").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_familys_own_spelling_of_a_version_is_the_same_version() {
    // The built-in Cisco SPA descriptor, with a pattern that reads the
    // numbers of an image name (`ata191.11-1-0MSR4-1`) and of what an
    // ATA191 reports (`11-1-0-MSR4`) alike.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let builtin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/phone-models/cisco-spa.toml"
    ))
    .unwrap();
    let pattern = r"firmware_numbers = '(\d+)-(\d+)-(\d+)'";
    std::fs::write(
        models.join("cisco-spa.toml"),
        format!("{pattern}\n{builtin}"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server =
        TestServer::start_configured(&data, |config| config.models_dir = Some(models)).await;
    let image = "http://10.0.0.5:8080/firmware/ata191.11-1-0MSR4-1.zup";
    let (status, answer) = server
        .post(
            "/api/v1/devices",
            json!({"mac": "0002fd000191", "model": "cisco-spa-ata191", "settings": {
                "firmware_url": image, "firmware_version": "ata191.11-1-0MSR4-1"}}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    for (user_agent, pointed) in [
        ("Cisco/ATA191-MPP-11-1-0-MSR4 (FCH2443D9R4)", false),
        ("Cisco/ATA191-MPP-11-2-1-MSR1 (FCH2443D9R4)", false),
        ("Cisco/ATA191-MPP-11-0-9-MSR2 (FCH2443D9R4)", true),
    ] {
        let (status, body) = server
            .phone_get("/0002fd000191.xml", Some(user_agent))
            .await;
        assert_eq!(status, 200, "{user_agent}");
        let rule = format!("<Upgrade_Rule>{image}</Upgrade_Rule>");
        assert_eq!(
            String::from_utf8_lossy(&body).contains(&rule),
            pointed,
            "{user_agent}"
        );
    }
    server.stop().await;
}
