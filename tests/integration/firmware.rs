//! Firmware images in `<data>/firmware/`: served as they are over HTTP (with
//! `Range`) and TFTP (with blksize), never rendered, never outside the folder.

use reqwest::header::{CONTENT_RANGE, RANGE};

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
