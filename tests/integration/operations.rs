//! The administrator's weekly operations: clone and replace, bulk import,
//! export and restore, adopting discovered phones, status and the audit log.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, user_json};

async fn office(server: &TestServer) -> Value {
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server.add_user(user_json("102", "Bob", "Babbage")).await;
    server
        .add_device(json!({
            "mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}],
            "keys": [{"index": 2, "type": "blf", "value": "102", "label": "Bob"}],
            "settings": {"language": "fr"},
        }))
        .await;
    let (status, _) = server
        .api_text(
            Method::PUT,
            "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg",
            "# custom {{ lines[0].username }} {{ mac.bare }}\n",
        )
        .await;
    assert_eq!(status, 201);
    ada
}

async fn clone(server: &TestServer, from: &str, body: Value) -> (u16, Value) {
    server
        .api(
            Method::POST,
            &format!("/api/v1/devices/{from}/clone"),
            Some(body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_keeps_both_phones_and_replace_retires_the_old_one() {
    let server = TestServer::start().await;
    office(&server).await;

    let (status, copy) = clone(&server, "00:15:65:aa:bb:cc", json!({"to": "001565000002"})).await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["keys"][0]["value"], "102");
    assert_eq!(copy["settings"]["language"], "fr");
    let (status, body) = server.phone_get("/001565000002.cfg", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "# custom sip101 001565000002\n",
        "the device template came along"
    );
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);

    // Into an existing device: refused unless asked.
    let before = server.snapshot().await;
    let (status, error) = clone(&server, "001565aabbcc", json!({"to": "001565000002"})).await;
    assert_eq!((status, error["field"].as_str()), (409, Some("to")));
    let (status, error) = clone(
        &server,
        "001565aabbcc",
        json!({"to": "001565000003", "model": "cisco-mpp-8851"}),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (409, Some("model")),
        "{error}"
    );
    let (status, _) = clone(&server, "001565aabbcc", json!({"to": "not-a-mac"})).await;
    assert_eq!(status, 422);
    let (status, _) = clone(&server, "001565999999", json!({"to": "001565000004"})).await;
    assert_eq!(status, 404);
    assert_eq!(server.snapshot().await, before);

    let (status, _) = clone(
        &server,
        "001565aabbcc",
        json!({"to": "001565000002", "mode": "replace", "overwrite": true}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 404);
    assert!(
        server.tftp_curl("001565aabbcc.cfg").await.is_err(),
        "the old MAC gets nothing over TFTP either"
    );
    assert_eq!(server.get("/api/v1/devices/001565aabbcc").await.0, 404);
    assert_eq!(server.phone_get("/001565000002.cfg", None).await.0, 200);
    assert!(server.tftp_curl("001565000002.cfg").await.is_ok());
    server.stop().await;
}

fn bulk_csv(rows: usize) -> String {
    let mut csv = String::from(deskboot::admin::import::header());
    csv.push('\n');
    for i in 0..rows {
        let ext = 2000 + i;
        let phone = if i % 2 == 0 {
            format!("0015650{:05x},yealink-t46s", i)
        } else {
            ",".into()
        };
        csv.push_str(&format!(
            "{ext},First{i},Last{i},u{ext}@example.com,,,{phone}\n"
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_all_or_nothing_and_lists_every_bad_row() {
    let server = TestServer::start().await;
    office(&server).await;
    let before = server.snapshot().await;
    let csv = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
               201,Carol,C,carol@example.com,,,001565000201,yealink-t46s\n\
               201,Dup,Ext,,,,,\n\
               202,Dan,D,,,,001565000202,yealink-t99\n\
               203,Eve,E,,,,zz:zz,yealink-t46s\n\
               204,Fay,F,fay@example.com,,,,\n";
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", csv).await;
    assert_eq!(status, 422, "{answer}");
    let lines: Vec<u64> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5], "{answer}");
    let fields: Vec<&str> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["extension", "model", "mac"]);
    assert_eq!(server.snapshot().await, before, "nothing imported");

    let good = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n\
                201,Carol,C,carol@example.com,,,001565000201,yealink-t46s\n\
                202,Dan,D,,,,001565000201,\n";
    let (status, dry) = server
        .api_text(Method::POST, "/api/v1/import?dry_run=true", good)
        .await;
    assert_eq!(
        (status, dry["users"].as_u64(), dry["devices"].as_u64()),
        (200, Some(2), Some(1)),
        "{dry}"
    );
    assert_eq!(server.snapshot().await, before, "a dry run writes nothing");
    let (status, done) = server.api_text(Method::POST, "/api/v1/import", good).await;
    assert_eq!(status, 201, "{done}");
    let (_, device) = server.get("/api/v1/devices/001565000201").await;
    assert_eq!(
        device["lines"].as_array().unwrap().len(),
        2,
        "two rows, one shared phone"
    );
    let (status, body) = server.phone_get("/001565000201.cfg", None).await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("account.2.user_name = 202")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_row_import_and_the_wazo_layouts() {
    let server = TestServer::start().await;
    let (status, answer) = server
        .api_text(Method::POST, "/api/v1/import", &bulk_csv(1000))
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (answer["users"].as_u64(), answer["devices"].as_u64()),
        (Some(1000), Some(500))
    );
    let xivo = "entityid|firstname|lastname|language|phonenumber|context|linename|linesecret|voicemailnumber|voicemailpassword\n\
                1|Ada|Lovelace|fr_FR|5101|default|ada5101|s3cret|5101|1234\n";
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", xivo).await;
    assert_eq!(
        (status, answer["format"].as_str()),
        (201, Some("xivo")),
        "{answer}"
    );
    let wazo = "entity_id,firstname,lastname,exten,context,sip_username,sip_secret,voicemail_number\n\
                1,Bob,Babbage,5102,default,bob5102,pw,5102\n";
    let (status, answer) = server.api_text(Method::POST, "/api/v1/import", wazo).await;
    assert_eq!(
        (status, answer["format"].as_str()),
        (201, Some("wazo")),
        "{answer}"
    );
    let (_, users) = server.get("/api/v1/users").await;
    let bob = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["extension"] == "5102")
        .unwrap();
    assert_eq!(bob["sip"]["username"], "bob5102");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_restore_into_a_fresh_store_renders_byte_identical_files() {
    let server = TestServer::start().await;
    office(&server).await;
    let (status, _) = clone(&server, "001565aabbcc", json!({"to": "001565000002"})).await;
    assert_eq!(status, 201);
    let files = [
        "/001565aabbcc.cfg",
        "/001565000002.cfg",
        "/y000000000066.cfg",
    ];
    let mut before = Vec::new();
    for file in files {
        before.push(server.phone_get(file, None).await);
    }
    let (status, backup) = server.get("/api/v1/export").await;
    assert_eq!(status, 200);
    assert_eq!(backup["format"], "deskboot-backup");
    server.stop().await;

    let fresh = TestServer::start().await;
    let (status, answer) = fresh
        .api(Method::POST, "/api/v1/restore", Some(backup.clone()))
        .await;
    assert_eq!(status, 200, "{answer}");
    for (file, expected) in files.iter().zip(&before) {
        assert_eq!(&fresh.phone_get(file, None).await, expected, "{file}");
    }
    // Not into a store with data, unless asked; a bad backup changes nothing.
    let (status, _) = fresh
        .api(Method::POST, "/api/v1/restore", Some(backup.clone()))
        .await;
    assert_eq!(status, 409);
    let mut broken = backup.clone();
    broken["devices"][0]["model"] = json!("nope");
    let snapshot = fresh.snapshot().await;
    let (status, error) = fresh
        .api(Method::POST, "/api/v1/restore?replace=true", Some(broken))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "devices[0].model");
    let mut newer = backup.clone();
    newer["schema_version"] = json!(999);
    let (status, _) = fresh
        .api(Method::POST, "/api/v1/restore?replace=true", Some(newer))
        .await;
    assert_eq!(status, 422);
    assert_eq!(fresh.snapshot().await, snapshot);
    let (status, _) = fresh
        .api(Method::POST, "/api/v1/restore?replace=true", Some(backup))
        .await;
    assert_eq!(status, 200);
    // New users after a restore get fresh ids, never a restored one.
    let carol = fresh.add_user(user_json("103", "Carol", "New")).await;
    assert!(carol["id"].as_u64().unwrap() > 2, "{carol}");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_phone_is_adopted_and_served() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let ua = "Yealink SIP-T54W 96.86.0.45 24:9a:d8:00:00:01";
    assert_eq!(server.phone_get("/249ad8000001.cfg", Some(ua)).await.0, 404);
    let (status, device) = server
        .api(
            Method::POST,
            "/api/v1/discovered/249ad8000001/adopt",
            Some(json!({"user": ada["id"]})),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(
        device["model"], "yealink-t54w",
        "the model came from the User-Agent"
    );
    assert_eq!(server.get("/api/v1/discovered").await.1, json!([]));
    assert_eq!(server.phone_get("/249ad8000001.cfg", Some(ua)).await.0, 200);
    let (status, _) = server
        .api(Method::POST, "/api/v1/discovered/249ad8000009/adopt", None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_whether_the_phone_has_its_current_config() {
    let server = TestServer::start().await;
    office(&server).await;
    let (_, status) = server.get("/api/v1/devices/001565aabbcc/status").await;
    assert_eq!(status["last_seen"], Value::Null);
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    assert_eq!(server.phone_get("/001565aabbcc.cfg", Some(ua)).await.0, 200);
    let (_, status) = server.get("/api/v1/devices/001565aabbcc/status").await;
    assert_eq!(status["current"], true, "{status}");
    assert_eq!(status["firmware"], "66.86.0.15");
    assert_eq!(status["file"], "001565aabbcc.cfg");
    server
        .api_text(
            Method::PUT,
            "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg",
            "# changed\n",
        )
        .await;
    let (_, status) = server.get("/api/v1/devices/001565aabbcc/status").await;
    assert_eq!(status["current"], false, "{status}");

    // The whole fleet: a second phone never seen; by model; and the CLI's
    // table of the phones still to update.
    server
        .add_device(json!({"mac": "0004f2aabbcc", "model": "poly-vvx-450"}))
        .await;
    let (_, fleet) = server.get("/api/v1/status").await;
    let summary: Vec<(Value, Value)> = fleet
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["mac"].clone(), s["current"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("0004f2aabbcc"), Value::Null),
            (json!("001565aabbcc"), json!(false))
        ]
    );
    let (_, yealinks) = server.get("/api/v1/status?model=yealink-t46s").await;
    assert_eq!(yealinks.as_array().unwrap().len(), 1, "{yealinks}");
    let (status, _) = server.get("/api/v1/status?colour=blue").await;
    assert_eq!(status, 400);
    let out = server.cli(&["device", "status", "--stale"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter().any(|r| r.starts_with("001565aabbcc")
            && r.contains("66.86.0.15")
            && r.contains("127.0.0.1")
            && r.ends_with("no")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("0004f2aabbcc") && r.ends_with("never")),
        "{table}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_is_current_when_its_file_names_the_url_it_used() {
    // No provisioning_url: each file names the Host the phone asked, and
    // over TFTP none; the status must render it the same way.
    let server = TestServer::start().await;
    let settings = json!({"sip_server": "pbx.example.com"});
    assert_eq!(
        server
            .api(Method::PUT, "/api/v1/settings", Some(settings))
            .await
            .0,
        200
    );
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server
        .add_device(
            json!({"mac": "001565aabbcc", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
        )
        .await;
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    assert_eq!(server.phone_get("/001565aabbcc.cfg", Some(ua)).await.0, 200);
    let (_, status) = server.get("/api/v1/devices/001565aabbcc/status").await;
    assert_eq!(
        (&status["transport"], &status["current"]),
        (&json!("http"), &json!(true)),
        "{status}"
    );
    server.tftp_curl("001565aabbcc.cfg").await.unwrap();
    let (_, status) = server.get("/api/v1/devices/001565aabbcc/status").await;
    assert_eq!(
        (&status["transport"], &status["current"]),
        (&json!("tftp"), &json!(true)),
        "{status}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_audited_without_secrets() {
    let server = TestServer::start().await;
    let ada = office(&server).await;
    let id = ada["id"].as_u64().unwrap();
    server
        .api(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({"sip": {"password": "New-Secret-99"}, "last_name": "King"})),
        )
        .await;
    let (status, log) = server.get(&format!("/api/v1/audit?target=user/{id}")).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["user.create", "user.update"]);
    assert_eq!(log[1]["changes"]["last_name"], "King");
    assert_eq!(log[1]["changes"]["sip.password"], "(changed)");
    assert_eq!(log[1]["actor"], "admin");
    let (_, everything) = server.get("/api/v1/audit").await;
    let text = everything.to_string();
    for secret in ["Pw-101-secret", "New-Secret-99", "Pw-102-secret"] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    let actions: Vec<&str> = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["settings.update", "device.create", "template.put"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let (_, later) = server.get("/api/v1/audit?since=99999999999").await;
    assert_eq!(later, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_and_restores_stream_their_progress_when_asked() {
    let server = TestServer::start().await;
    let mut csv =
        String::from("extension,firstname,lastname,email,sip_username,sip_password,mac,model\n");
    for i in 0..3000 {
        csv.push_str(&format!("{},User,N{i},,,,,\n", 10_000 + i));
    }
    let lines = server.api_streamed("/api/v1/import", &csv).await;
    let (answer, reports) = lines.split_last().expect("lines");
    assert_eq!(answer["status"], 201, "{answer}");
    assert_eq!(answer["answer"]["users"], 3000, "{answer}");
    let mut last = (String::new(), 0);
    for report in reports {
        let stage = report["stage"].as_str().expect("a stage").to_string();
        let done = report["done"].as_u64().expect("done");
        assert!(done <= report["total"].as_u64().expect("total"), "{report}");
        if stage == last.0 {
            assert!(done > last.1, "progress only goes forward: {reports:?}");
        }
        last = (stage, done);
    }
    let stages: Vec<&str> = reports.iter().filter_map(|r| r["stage"].as_str()).collect();
    assert_eq!(stages.first(), Some(&"checking"), "{stages:?}");
    assert_eq!(stages.last(), Some(&"writing"), "{stages:?}");
    assert_eq!(reports.last().unwrap()["done"], 3000, "every user written");

    // A refusal comes as the last line too, and changes nothing.
    let before = server.snapshot().await;
    let bad = "extension,firstname,lastname,email,sip_username,sip_password,mac,model\n10000,Dup,E,,,,,\n10000,Dup,F,,,,,\n";
    let lines = server.api_streamed("/api/v1/import", bad).await;
    let answer = lines.last().expect("an answer");
    assert_eq!(answer["status"], 422, "{answer}");
    assert_eq!(
        answer["answer"]["rows"][0]["field"], "extension",
        "{answer}"
    );
    assert_eq!(server.snapshot().await, before, "nothing imported");

    // A restore into a store that is not empty is refused, streamed or not.
    let (_, backup) = server.get("/api/v1/export").await;
    let lines = server
        .api_streamed("/api/v1/restore", &backup.to_string())
        .await;
    assert_eq!(lines.last().unwrap()["status"], 409, "{lines:?}");
    let lines = server
        .api_streamed("/api/v1/restore?replace=true", &backup.to_string())
        .await;
    let answer = lines.last().unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["answer"]["users"], 3000, "{answer}");
    assert!(
        lines.iter().any(|l| l["stage"] == "writing"),
        "restore reports its writes: {lines:?}"
    );
    server.stop().await;
}
