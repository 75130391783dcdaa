//! A phone whose User-Agent names a known vendor but a model the catalog does
//! not know: it gets whatever common file its request names, and its own
//! file's request lists it as discovered under the model name it sent.

use serde_json::{Value, json};

use crate::common::TestServer;

/// A Yealink User-Agent for a model no descriptor lists.
const UNKNOWN_YEALINK: &str = "Yealink SIP-T99X 99.86.0.1 00:15:65:00:00:99";

/// The discovered entry of `mac`, if it is listed.
async fn discovered(server: &TestServer, mac: &str) -> Option<Value> {
    let (status, listed) = server.get("/api/v1/discovered").await;
    assert_eq!(status, 200, "{listed}");
    listed.as_array()?.iter().find(|d| d["mac"] == mac).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_of_a_known_vendor_gets_the_common_files_and_is_discovered() {
    let server = TestServer::start().await;
    server.put_site_settings().await;

    // The common file a T46S asks for is the vendor's, whoever asks for it.
    let (status, body) = server
        .phone_get("/y000000000066.cfg", Some(UNKNOWN_YEALINK))
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("#!version:1.0.0.1"));

    let (status, _) = server
        .phone_get("/001565000099.cfg", Some(UNKNOWN_YEALINK))
        .await;
    assert_eq!(status, 404);
    let entry = discovered(&server, "001565000099")
        .await
        .expect("the phone is listed as discovered");
    assert_eq!(entry["vendor"], "Yealink", "{entry}");
    assert_eq!(entry["model"], Value::Null, "{entry}");
    assert_eq!(entry["reported_model"], "T99X", "{entry}");
    assert_eq!(entry["last"]["firmware"], "99.86.0.1", "{entry}");

    // Asking again over TFTP, with no User-Agent, forgets nothing it said.
    assert_eq!(server.tftp_curl("001565000099.cfg").await, Err(68));
    let entry = discovered(&server, "001565000099").await.unwrap();
    assert_eq!(entry["count"], 2, "{entry}");
    assert_eq!(
        (&entry["vendor"], &entry["reported_model"]),
        (&json!("Yealink"), &json!("T99X")),
        "{entry}"
    );
    assert_eq!(entry["last"]["transport"], "tftp", "{entry}");
    server.stop().await;
}
