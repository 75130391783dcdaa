//! What one phone request costs, piece by piece: MAC parsing, recognition of
//! User-Agents and paths, the render of a full device file (cold and from
//! the render cache), and store lookups on 10,000 users and devices.
//!
//! Everything goes through the public library API, with a real sled store in
//! a temp dir, as `server.rs` builds it. Each group measures its reference in
//! the same run (named `reference_*`, or stated in the group's comment), so
//! BENCHMARKS.md reports ratios, which move less than times on a shared
//! machine.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use deskboot::access::client_cert::ClientCert;
use deskboot::access::phone_auth::{self, AuthSettings, PhoneAuth};
use deskboot::access::policy::Policy;
use deskboot::admin::import;
use deskboot::catalog::Catalog;
use deskboot::domain::clock::Clock;
use deskboot::domain::mac::Mac;
use deskboot::domain::records::{Device, Settings, User};
use deskboot::domain::transport::Transport;
use deskboot::provision::firmware::FirmwareDir;
use deskboot::provision::request::Request;
use deskboot::provision::{Provisioner, Requester, model_scope};
use deskboot::render::Renderer;
use deskboot::render::pool::RenderPool;
use deskboot::render::sandbox::Sandbox;
use deskboot::render::uploaded::model_key;
use deskboot::store::{Change, GLOBAL_SCOPE, Store, StoreError};
use serde_json::{Value, json};

/// Users and devices in the store of the lookup benches.
const STORE_SIZE: usize = 10_000;

/// Short runs: the 36 benchmarks must finish in ~3 minutes on 2 cores.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
}

fn golden(family: &str, file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(family)
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The User-Agents of a family's `identify.json`.
fn user_agents(family: &str) -> Vec<String> {
    let cases: Vec<Value> = serde_json::from_str(&golden(family, "identify.json")).expect("json");
    cases
        .iter()
        .filter_map(|c| c["user_agent"].as_str().map(str::to_string))
        .collect()
}

// ---- MAC parsing ----

/// The four accepted forms and a rejected string (a separator that changes
/// half-way). Reference: `u64::from_str_radix` on the bare form, the least a
/// parser of 12 hex digits can do (it checks no layout at all).
fn bench_mac(c: &mut Criterion) {
    let mut group = c.benchmark_group("mac_parse");
    configure(&mut group);
    for (name, text) in [
        ("bare", "001565AABBCC"),
        ("colon", "00:15:65:aa:bb:cc"),
        ("dash", "00-15-65-AA-BB-CC"),
        ("dotted", "0015.65aa.bbcc"),
        ("rejected_mixed_separators", "00:15-65:aa-bb:cc"),
    ] {
        let ok = !name.starts_with("rejected");
        assert_eq!(text.parse::<Mac>().is_ok(), ok, "{text}");
        group.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(text).parse::<Mac>())
        });
    }
    group.bench_function("reference_from_str_radix", |b| {
        b.iter(|| u64::from_str_radix(std::hint::black_box("001565AABBCC"), 16))
    });
    group.finish();
}

// ---- recognition ----

/// `identify_user_agent` on real User-Agents from `tests/golden/*/identify.json`
/// and on junk; `identify_path` and `match_file` on real paths. Reference:
/// one `captures` of Yealink's first descriptor regex (read from
/// `phone-models/yealink.toml`, compiled case-insensitive as the catalog
/// does) on the Yealink User-Agent: what checking a single vendor costs.
/// The catalog tries vendors in file-name order, so Yealink (last) and junk
/// (no match) pay for every vendor.
fn bench_recognition(c: &mut Criterion) {
    let catalog = Catalog::builtin().expect("catalog");
    let mut group = c.benchmark_group("recognition");
    configure(&mut group);
    let mut agents = Vec::new();
    for (family, vendor) in [
        ("cisco-mpp", "Cisco"),
        ("grandstream", "Grandstream"),
        ("poly", "Poly"),
        ("snom", "Snom"),
        ("yealink", "Yealink"),
    ] {
        let ua = user_agents(family).remove(0);
        assert_eq!(
            catalog.identify_user_agent(&ua).vendor.as_deref(),
            Some(vendor),
            "{ua}"
        );
        agents.push((format!("user_agent_{family}"), ua));
    }
    let junk = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_string();
    assert_eq!(catalog.identify_user_agent(&junk).vendor, None);
    agents.push(("user_agent_junk".into(), junk));
    for (name, ua) in &agents {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| catalog.identify_user_agent(std::hint::black_box(ua)))
        });
    }

    let descriptor: toml::Table = toml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("phone-models/yealink.toml"),
        )
        .expect("yealink.toml"),
    )
    .expect("toml");
    let pattern = descriptor["user_agents"][0].as_str().expect("pattern");
    let one_vendor = regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .expect("regex");
    let yealink_ua = &agents
        .iter()
        .find(|(n, _)| n.ends_with("yealink"))
        .expect("ua")
        .1;
    assert!(one_vendor.captures(yealink_ua).is_some());
    group.bench_function("reference_one_vendor_regex", |b| {
        b.iter(|| {
            one_vendor
                .captures(std::hint::black_box(yealink_ua))
                .map(|c| c.len())
        })
    });

    for (name, path, mac) in [
        ("path_yealink_device", "/001565aabbcc.cfg", true),
        ("path_poly_user", "/0004F2AABBCC-user.cfg", true),
        (
            "path_cisco_subdir",
            "/Cisco/CP-8851-3PCC/00562b043615.cfg",
            true,
        ),
        ("path_yealink_common", "/y000000000066.cfg", false),
        ("path_unknown", "/favicon.ico", false),
    ] {
        assert_eq!(catalog.identify_path(path).mac.is_some(), mac, "{path}");
        group.bench_function(name, |b| {
            b.iter(|| catalog.identify_path(std::hint::black_box(path)))
        });
    }
    group.bench_function("match_file_yealink_device", |b| {
        b.iter(|| {
            catalog
                .match_file(std::hint::black_box("001565aabbcc.cfg"))
                .map(|m| m.candidates.len())
        })
    });
    group.finish();
}

// ---- render ----

/// A provisioner over a fresh store, built the way `server.rs` builds one.
struct Site {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    provisioner: Provisioner,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(&dir.path().join("store")).expect("store"));
    let catalog = Arc::new(Catalog::builtin().expect("catalog"));
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_deskboot"));
    let renderer = Renderer::load(&catalog, None, sandbox).expect("templates");
    let policy = Policy::default();
    let phone_auth = PhoneAuth::load(
        phone_auth::server_key(&store, dir.path()).expect("device key"),
        AuthSettings {
            mode: policy.http_auth,
            ..AuthSettings::default()
        },
        Clock::System,
    )
    .expect("phone auth");
    let provisioner = Provisioner::new(
        store.clone(),
        catalog,
        renderer,
        FirmwareDir::new(dir.path().join("firmware")),
        policy,
        phone_auth,
        RenderPool::new(1).expect("render thread"),
        Clock::System,
    );
    Site {
        _dir: dir,
        store,
        provisioner,
    }
}

fn put(store: &Store, changes: Vec<Change>) {
    store
        .change_blocking(
            "bench",
            |_| Ok::<_, StoreError>((changes, ())),
            &deskboot::domain::progress::silent,
        )
        .expect("store change");
}

/// The golden test's site (tests/integration/golden.rs): its settings, its
/// three users, and the fixed Yealink, Poly and Cisco MPP phones with every
/// key type their models take, so the renders can be checked byte for byte
/// against `tests/golden/`.
fn golden_site() -> Site {
    let site = site();
    let settings: Settings = serde_json::from_value(json!({
        "sip_server": "pbx.example.com",
        "ntp_server": "ntp.example.com",
        "time_zone": "Europe/Paris",
        "utc_offset": "+01:00",
        "provisioning_url": "http://prov.example.com:8080",
    }))
    .expect("settings");
    put(
        &site.store,
        vec![Change::PutSettings {
            scope: GLOBAL_SCOPE.into(),
            new: settings,
            old: Settings::default(),
        }],
    );
    let user = |extension: &str, first: &str, last: &str| {
        json!({
            "extension": extension,
            "first_name": first,
            "last_name": last,
            "email": format!("{}@example.com", first.to_lowercase()),
            "sip": {"username": format!("sip{extension}"), "auth_name": format!("auth{extension}"), "password": format!("Pw-{extension}-secret")},
            "voicemail": {"mailbox": extension},
        })
    };
    let mut bob = user("102", "Bob", "O'Brien & <Sons>");
    bob["caller_id"] = json!({"internal_name": "Bob \"The Builder\""});
    bob["mobile"] = json!("+15550102");
    let mut hidden = user("190", "Hidden", "Fax");
    hidden["in_directory"] = json!(false);
    let mut ids = Vec::new();
    for value in [user("101", "Ada", "Lovelace"), bob, hidden] {
        let mut user: User = serde_json::from_value(value).expect("user");
        user.validate().expect("valid user");
        user.id = site.store.next_user_id().expect("id");
        ids.push(user.id);
        put(
            &site.store,
            vec![Change::PutUser {
                new: user,
                old: None,
            }],
        );
    }
    let catalog = site.provisioner.catalog();
    for family in ["yealink", "poly", "cisco-mpp"] {
        let spec: Value = serde_json::from_str(&golden(family, "device.json")).expect("json");
        let device: Device = serde_json::from_value(json!({
            "mac": spec["mac"],
            "model": spec["model"],
            "lines": [{"user": ids[0]}, {"user": ids[1], "label": "Bob"}],
            "keys": spec.get("keys").cloned().unwrap_or(json!([])),
            "modules": spec.get("modules").cloned().unwrap_or(json!([])),
        }))
        .expect("device");
        device.validate().expect("valid device");
        let model = catalog.model(&device.model).expect("model");
        model.check_device(&device).expect("device fits its model");
        put(
            &site.store,
            vec![Change::PutDevice {
                new: device,
                old: None,
            }],
        );
    }
    site
}

/// The render of each family's largest per-device file, through
/// `Provisioner::handle` as HTTP sees it. `cold`: a store change (settings
/// of an unrelated model, outside the timing) before each request makes the
/// cached file stale, so it loads device, users and settings and renders, as
/// on every phone's first boot after a change. `render_device_only`: the
/// template part of that, with device and users already loaded;
/// `render_upload_only`: the same with the built-in template uploaded for
/// the model, so it renders in a sandbox worker within the render budget
/// (the same bytes). Reference: `cached`, the same request answered from
/// the render cache.
fn bench_render(c: &mut Criterion) {
    let site = golden_site();
    let unrelated = model_scope("snom-d785");
    let invalidate = || {
        put(
            &site.store,
            vec![Change::PutSettings {
                scope: unrelated.clone(),
                new: Settings::default(),
                old: Settings::default(),
            }],
        )
    };
    let mut group = c.benchmark_group("render");
    configure(&mut group);
    for (family, file, user_agent) in [
        (
            "yealink",
            "001565aabbcc.cfg",
            "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc",
        ),
        (
            "poly",
            "0004f2aabbcc-user.cfg",
            "FileTransport PolycomVVX-VVX_450-UA/6.4.6.2474 Type/Application",
        ),
        ("cisco-mpp", "00562b043615.xml", "Cisco-CP-8851-3PCC/11.3.7"),
    ] {
        let path = format!("/{file}");
        let request = Request {
            path: &path,
            user_agent: Some(user_agent),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            transport: Transport::Http,
            host: Some("prov.example.com:8080"),
            https: false,
            client_cert: ClientCert::Unchecked,
            authenticated: false,
        };
        let served = site.provisioner.handle(&request).expect("served");
        assert_eq!(
            String::from_utf8_lossy(&served.body),
            golden(family, file),
            "{family}: the bench must render the golden file"
        );
        group.bench_function(format!("{family}_cold"), |b| {
            b.iter_batched(
                invalidate,
                |()| site.provisioner.handle(&request).expect("served"),
                BatchSize::PerIteration,
            )
        });
        // The same render without the request around it: device and users
        // loaded beforehand, no recognition, no cache (settings are still
        // read from the store inside `render_device`).
        let catalog = site.provisioner.catalog();
        let found = catalog.match_file(file).expect("a phone's file");
        let device = site
            .store
            .device(found.mac.expect("per-device file"))
            .expect("lookup")
            .expect("device");
        let (model, model_file) = found
            .candidates
            .into_iter()
            .find(|(m, _)| m.id == device.model)
            .expect("the device's model asks for the file");
        let users = site.provisioner.device_users(&device).expect("users");
        let renderer = site.provisioner.renderer();
        let requester = Requester {
            origin: Some("http://prov.example.com:8080".into()),
            firmware: catalog.identify_user_agent(user_agent).firmware,
            without_secrets: false,
            masked: false,
        };
        let render = || {
            site.provisioner
                .render_device(&renderer, model, model_file, &device, &users, &requester)
                .expect("rendered")
        };
        assert_eq!(String::from_utf8_lossy(&render()), golden(family, file));
        group.bench_function(format!("{family}_render_device_only"), |b| b.iter(render));
        let source = renderer
            .builtin_source(&model_file.template)
            .expect("built-in source");
        let key = model_key(&model.id, &model_file.name);
        let uploaded = renderer
            .with_uploads([(key.as_str(), source)])
            .expect("the built-in compiles as an upload");
        let render_upload = || {
            site.provisioner
                .render_device(&uploaded, model, model_file, &device, &users, &requester)
                .expect("rendered")
        };
        assert_eq!(
            String::from_utf8_lossy(&render_upload()),
            golden(family, file)
        );
        group.bench_function(format!("{family}_render_upload_only"), |b| {
            b.iter(render_upload)
        });
        site.provisioner.handle(&request).expect("served");
        group.bench_function(format!("{family}_cached"), |b| {
            b.iter(|| site.provisioner.handle(&request).expect("served"))
        });
    }
    group.finish();
}

// ---- store lookups ----

/// Lookups on 10,000 users, each with a Yealink phone (one CSV import).
/// Reference: the same answer from a full scan (`devices()` / `users()`,
/// which decode every record), what a lookup without its key or index costs.
/// `device_of_user` is measured too: it is such a scan in the library.
fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let catalog = Catalog::builtin().expect("catalog");
    let mut text = String::from(import::header());
    text.push('\n');
    for i in 0..STORE_SIZE {
        text.push_str(&format!(
            "{},First{i},Last{i},u{i}@example.com,,,0015650{i:05x},yealink-t46s\n",
            10_000 + i
        ));
    }
    let summary = store
        .change_blocking(
            "bench",
            |store| import::plan(&text, store, &catalog, &deskboot::domain::progress::silent),
            &deskboot::domain::progress::silent,
        )
        .expect("import");
    assert_eq!(summary.users.created, STORE_SIZE);
    assert_eq!(store.device_count(), STORE_SIZE);

    // A record in the middle of each key order.
    let middle = STORE_SIZE / 2;
    let mac: Mac = format!("0015650{middle:05x}").parse().expect("mac");
    let extension = format!("{}", 10_000 + middle);
    let user = store
        .user_by_extension(&extension)
        .expect("lookup")
        .expect("user");
    assert_eq!(
        store.device(mac).expect("lookup").expect("device").lines[0].user,
        user.id
    );

    let mut group = c.benchmark_group("store_lookup_10k");
    configure(&mut group);
    group.bench_function("device_by_mac", |b| {
        b.iter(|| store.device(std::hint::black_box(mac)).expect("lookup"))
    });
    group.bench_function("user_by_id", |b| {
        b.iter(|| store.user(std::hint::black_box(user.id)).expect("lookup"))
    });
    group.bench_function("user_by_extension", |b| {
        b.iter(|| {
            store
                .user_by_extension(std::hint::black_box(&extension))
                .expect("lookup")
        })
    });
    group.sample_size(10);
    group.bench_function("reference_device_full_scan", |b| {
        b.iter(|| {
            store
                .devices()
                .expect("scan")
                .into_iter()
                .find(|d| d.mac == mac)
        })
    });
    group.bench_function("reference_user_by_extension_full_scan", |b| {
        b.iter(|| {
            store
                .users()
                .expect("scan")
                .into_iter()
                .find(|u| u.extension == extension)
        })
    });
    group.bench_function("device_of_user", |b| {
        b.iter(|| {
            store
                .device_of_user(std::hint::black_box(user.id))
                .expect("scan")
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_mac,
    bench_recognition,
    bench_render,
    bench_store
);
criterion_main!(benches);
