//! The render budget: a template that never ends, or builds something huge,
//! is stopped. Uploads and restores carrying one are refused while phones
//! and `/healthz` go on answering; a phone whose data pushes an accepted
//! template past the budget gets its last good file, and the render
//! threads are free again at once.

use std::future::Future;
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::TestServer;

const MODEL_SLOT: &str = "/api/v1/templates/models/yealink-t46s/%7Bmac%7D.cfg";

/// Templates that never end or grow without bound, each refused for going
/// past the budget.
const OVER_BUDGET: &[(&str, &str)] = &[
    (
        "two nested loops of 100,000 with empty bodies",
        "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{% endfor %}{% endfor %}",
    ),
    (
        "the same with output in the body",
        "{% for i in range(end=100000) %}{% for j in range(end=100000) %}\
         {{ mac.colon_upper }} {{ mac.colon_upper }} {{ mac.colon_upper }}\n{% endfor %}{% endfor %}",
    ),
    (
        "nested ranges",
        "{% for i in range(end=100000) %}{% for j in range(end=i) %}{% endfor %}{% endfor %}",
    ),
    (
        "a string doubled by set_global",
        "{% set_global s = \"deskboot\" %}{% for i in range(end=64) %}\
         {% set_global s = s ~ s %}{% endfor %}{{ s | length }}",
    ),
    (
        "a string filter that multiplies",
        "{% set a = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" %}\
         {{ a | replace(from=\"a\", to=a) | replace(from=\"a\", to=a) | replace(from=\"a\", to=a) \
         | replace(from=\"a\", to=a) | replace(from=\"a\", to=a) | length }}",
    ),
    (
        "a component calling itself ten times, 19 deep",
        "{% component Bomb(depth) %}{% if depth < 19 %}{% for i in range(end=10) %}\
         {{<Bomb depth={depth + 1} />}}{% endfor %}{% endif %}{% endcomponent Bomb %}\
         {{<Bomb depth={0} />}}",
    ),
];

/// Ada and her T46S.
async fn office() -> TestServer {
    let server = TestServer::start().await;
    server.put_site_settings().await;
    server.ada_with_a_t46s().await;
    server
}

/// Ada's phone, reporting a firmware of its own: every such request misses
/// the render cache, so it takes a render.
fn ada_phone(firmware: usize) -> String {
    format!("Yealink SIP-T46S 66.86.0.{firmware} 00:15:65:aa:bb:cc")
}

/// A phone's file (rendered each time) and `/healthz`, each answered as
/// usual, as often as they can be until `operation` ends; how many times
/// they were.
async fn answered_meanwhile<T>(
    server: &TestServer,
    phone_file: &[u8],
    operation: impl Future<Output = T>,
) -> (T, usize) {
    let client = reqwest::Client::new();
    let mut answered = 0;
    let polls = async {
        loop {
            let user_agent = ada_phone(answered + 1);
            let (status, body) = server
                .phone_get("/001565aabbcc.cfg", Some(&user_agent))
                .await;
            assert_eq!((status, body.as_slice()), (200, phone_file));
            let health = client
                .get(server.admin_url("/healthz"))
                .send()
                .await
                .expect("/healthz answers");
            assert_eq!(health.status(), 200);
            answered += 1;
        }
    };
    tokio::pin!(operation);
    let result = tokio::select! {
        result = &mut operation => result,
        never = polls => never,
    };
    (result, answered)
}

/// A refusal for the model-wide `{mac}.cfg` upload going past the budget,
/// while phones and `/healthz` answered.
fn assert_refused_over_budget(((status, body), answered): ((u16, Value), usize), what: &str) {
    assert_eq!(status, 422, "{what}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("model/yealink-t46s/{mac}.cfg: exceeded the render budget"),
        "{what}: {body}"
    );
    assert!(answered > 0, "{what}: nothing answered during the check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_budget_are_refused_while_phones_and_healthz_answer() {
    let server = office().await;
    let (status, phone_file) = server
        .phone_get("/001565aabbcc.cfg", Some(&ada_phone(0)))
        .await;
    assert_eq!(status, 200);
    for (attack, source) in OVER_BUDGET {
        let upload = server.api_text(Method::PUT, MODEL_SLOT, source);
        assert_refused_over_budget(
            answered_meanwhile(&server, &phone_file, upload).await,
            attack,
        );
        assert_eq!(
            server.get(MODEL_SLOT).await.1["origin"],
            "builtin",
            "{attack}"
        );
    }
    // What Tera refuses by itself never gets as far as a render.
    for (attack, source) in [
        ("an unknown filter", "{{ \"x\" | repeat(n=1000000000) }}"),
        (
            "an include of itself",
            "{% include \"upload/model/yealink-t46s/{mac}.cfg\" %}",
        ),
    ] {
        let (status, body) = server.api_text(Method::PUT, MODEL_SLOT, source).await;
        assert_eq!(status, 422, "{attack}: {body}");
    }
    let (status, _) = server.get(&format!("{MODEL_SLOT}/history")).await;
    assert_eq!(status, 404, "nothing was stored");
    assert_eq!(
        server
            .phone_get("/001565aabbcc.cfg", Some(&ada_phone(0)))
            .await,
        (200, phone_file)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusal_says_which_part_of_the_budget_was_exceeded() {
    let server = office().await;
    // 420 MB in 7,000 pieces of 60 KB: past the memory cap in a few
    // thousand steps, a small part of the second of CPU time, however long
    // a loaded machine keeps the worker waiting for a core.
    let wide = format!(
        "{{{{ range(end=7000) | join(sep=\"{}\") | length }}}}",
        "x".repeat(60_000)
    );
    for (source, reason) in [
        (wide.as_str(), "it needed more than 256 MiB"),
        (OVER_BUDGET[1].1, "it wrote more than 1 MiB"),
        (OVER_BUDGET[0].1, "it ran for more than 1 s"),
    ] {
        let (status, body) = server.api_text(Method::PUT, MODEL_SLOT, source).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            body["error"],
            format!("model/yealink-t46s/{{mac}}.cfg: exceeded the render budget: {reason}")
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_a_template_over_the_budget_is_refused_and_changes_nothing() {
    let server = office().await;
    let (_, phone_file) = server
        .phone_get("/001565aabbcc.cfg", Some(&ada_phone(0)))
        .await;
    let (status, mut backup) = server.get("/api/v1/export").await;
    assert_eq!(status, 200);
    let (_, source) = OVER_BUDGET[0];
    backup["templates"]["model/yealink-t46s/{mac}.cfg"] = json!({
        "active": true,
        "versions": [{"version": 1, "source": source, "author": "mallory", "at": 0}],
    });
    let before = server.snapshot().await;
    let restore = server.api(Method::POST, "/api/v1/restore?replace=true", Some(backup));
    assert_refused_over_budget(
        answered_meanwhile(&server, &phone_file, restore).await,
        "the restore",
    );
    assert_eq!(server.snapshot().await, before);
    assert_eq!(server.get(MODEL_SLOT).await.1["origin"], "builtin");
    server.stop().await;
}

/// Costs keys⁴ steps: a few thousand for a phone with a handful of keys
/// (the upload's sample phone has one of each type), over a hundred
/// million once a phone has a hundred.
const KEYS_TO_THE_FOURTH: &str = "\
{%- for a in keys %}{% for b in keys %}{% for c in keys %}{% for d in keys %}\
{% endfor %}{% endfor %}{% endfor %}{% endfor -%}
keys={{ keys | length }} user={{ lines[0].username }}
";

/// The 27 line keys of a T46S and the 40 of each of two EXP40 modules, as
/// a patch of the device.
fn a_hundred_keys() -> Value {
    let speed_dial = |module: Option<u8>, index: u16| json!({"index": index, "module": module, "type": "speed_dial", "value": "*97"});
    let mut keys: Vec<Value> = (1..=27).map(|i| speed_dial(None, i)).collect();
    for module in 1..=2 {
        keys.extend((1..=40).map(|i| speed_dial(Some(module), i)));
    }
    json!({"modules": ["yealink-exp40", "yealink-exp40"], "keys": keys})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_whose_data_goes_past_the_budget_gets_its_last_good_file() {
    let server = office().await;
    let ada = server.get("/api/v1/users").await.1[0]["id"].clone();
    for mac in ["001565aabbcd", "001565aabbce"] {
        server
            .add_device(json!({"mac": mac, "model": "yealink-t46s", "lines": [{"user": ada}]}))
            .await;
    }
    let (status, body) = server
        .api_text(Method::PUT, MODEL_SLOT, KEYS_TO_THE_FOURTH)
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, good) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&good), "keys=0 user=sip101\n");

    // The phones' data changes after the check: the template now takes
    // longer than the budget for them.
    for mac in ["001565aabbcc", "001565aabbce"] {
        let path = format!("/api/v1/devices/{mac}");
        let (status, body) = server
            .api(Method::PATCH, &path, Some(a_hundred_keys()))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let failures = server.metric("deskboot_render_failures_total").await;
    let over_budget = Instant::now();
    let (with_last_good, without) = tokio::join!(
        server.phone_get("/001565aabbcc.cfg", None),
        server.phone_get("/001565aabbce.cfg", None),
    );
    let over_budget = over_budget.elapsed();
    assert_eq!(with_last_good, (200, good), "the last good file");
    assert_eq!(without.0, 404, "no good file to fall back on");
    assert_eq!(
        server.metric("deskboot_render_failures_total").await,
        failures + 2
    );

    // Both render threads were stopped; the next render is as usual. Had a
    // thread gone on with a render over budget, this one would wait behind
    // it for its second of CPU time; a render with a fresh worker takes a
    // fraction of what the two took, measured under the same load.
    let started = Instant::now();
    let (status, body) = server.phone_get("/001565aabbcd.cfg", None).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, "keys=0 user=sip101\n")
    );
    assert!(
        started.elapsed() < over_budget,
        "a normal render took {:?}, the two over budget {over_budget:?}",
        started.elapsed()
    );
    server.stop().await;
}
