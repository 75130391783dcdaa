//! The store's test suite: what every backend must do, run by each
//! backend's tests on a fresh, empty store of its own.

use super::*;
use crate::domain::records::{CallerId, SipAccount};

/// One case: it gets a fresh, empty store.
type Case = fn(&Store);

/// Every case, by name.
pub(crate) const CASES: &[(&str, Case)] = &[
    (
        "indexes_follow_the_user_and_refuse_duplicates",
        indexes_follow_the_user_and_refuse_duplicates,
    ),
    (
        "a_refused_batch_changes_nothing",
        a_refused_batch_changes_nothing,
    ),
    (
        "a_deleted_device_takes_its_last_good_files_with_it",
        a_deleted_device_takes_its_last_good_files_with_it,
    ),
    (
        "more_records_than_one_batch_holds_all_land",
        more_records_than_one_batch_holds_all_land,
    ),
    (
        "a_deleted_device_forgets_its_sighting",
        a_deleted_device_forgets_its_sighting,
    ),
    (
        "settings_templates_tokens_and_meta_round_trip",
        settings_templates_tokens_and_meta_round_trip,
    ),
    (
        "discovered_phones_merge_skip_devices_and_are_pruned",
        discovered_phones_merge_skip_devices_and_are_pruned,
    ),
    (
        "layouts_are_kept_listed_and_forgotten",
        layouts_are_kept_listed_and_forgotten,
    ),
    (
        "a_store_that_starts_afresh_keeps_everything",
        a_store_that_starts_afresh_keeps_everything,
    ),
    (
        "user_ids_are_never_handed_out_twice",
        user_ids_are_never_handed_out_twice,
    ),
    (
        "counts_follow_what_is_really_added_and_removed",
        counts_follow_what_is_really_added_and_removed,
    ),
];

/// Runs every case, each on the store `fresh` makes, naming the one that fails.
pub(crate) fn run(fresh: impl Fn() -> Store) {
    for (name, case) in CASES {
        let store = fresh();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&store)));
        assert!(outcome.is_ok(), "store suite case {name} failed");
    }
}

pub(crate) fn user(ext: &str) -> User {
    User {
        id: 0,
        extension: ext.into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: Some(format!("{ext}@example.com")),
        sip: SipAccount {
            username: format!("u{ext}"),
            auth_name: format!("u{ext}"),
            password: "secret".into(),
        },
        caller_id: CallerId::default(),
        voicemail: None,
        language: None,
        mobile: None,
        dnd: false,
        call_waiting: true,
        in_directory: true,
    }
}

pub(crate) fn device(mac: &str) -> Device {
    Device {
        mac: mac.parse().unwrap(),
        model: "yealink-t46s".into(),
        description: None,
        lines: Vec::new(),
        keys: Vec::new(),
        layout: None,
        modules: Vec::new(),
        settings: Settings::default(),
    }
}

/// [`Store::change_blocking`], unwatched: a unit test has no runtime.
pub(crate) fn change<T>(
    store: &Store,
    plan: impl FnOnce(&Store) -> Result<(Vec<Change>, T), StoreError>,
) -> Result<T, StoreError> {
    store.change_blocking("test", plan, &progress::silent)
}

pub(crate) fn create(store: &Store, mut user: User) -> Result<User, StoreError> {
    change(store, |store| {
        user.id = store.next_user_id()?;
        Ok::<_, StoreError>((
            vec![Change::PutUser {
                new: user.clone(),
                old: None,
            }],
            user,
        ))
    })
}

fn indexes_follow_the_user_and_refuse_duplicates(store: &Store) {
    let ada = create(store, user("100")).unwrap();
    let err = create(store, user("100")).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref i) if i.field == "extension"),
        "{err}"
    );
    assert_eq!(store.users().unwrap().len(), 1);
    // A clash deep in a change of many users names its field too, and
    // nothing of the change is kept.
    let many: Vec<Change> = (0..50)
        .map(|n| {
            let mut new = user(&format!("{}", 500 + n));
            new.id = store.next_user_id().unwrap();
            if n == 37 {
                new.sip.username = "u100".into();
            }
            Change::PutUser { new, old: None }
        })
        .collect();
    let err = change(store, |_| Ok::<_, StoreError>((many, ()))).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref i) if i.field == "sip.username"),
        "{err}"
    );
    assert_eq!(store.users().unwrap().len(), 1);

    let mut moved = ada.clone();
    moved.extension = "101".into();
    moved.sip.username = "u101".into();
    moved.email = None;
    change(store, |_| {
        Ok::<_, StoreError>((
            vec![Change::PutUser {
                new: moved.clone(),
                old: Some(ada),
            }],
            (),
        ))
    })
    .unwrap();
    assert!(store.user_by_extension("100").unwrap().is_none());
    assert_eq!(
        store.user_by_extension("101").unwrap().unwrap().id,
        moved.id
    );
    create(store, user("100")).unwrap();

    let log = store.audit(0, Some(&format!("user/{}", moved.id))).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].action, "user.update");
    assert_eq!(log[1].changes["extension"], "101");
    assert!(!serde_json::to_string(&log).unwrap().contains("secret"));
}

fn a_refused_batch_changes_nothing(store: &Store) {
    let result = change(store, |store| {
        let mut a = user("200");
        a.id = store.next_user_id()?;
        let mut b = user("200");
        b.id = store.next_user_id()?;
        b.sip.username = "other".into();
        b.email = None;
        Ok::<_, StoreError>((
            vec![
                Change::PutUser { new: a, old: None },
                Change::PutUser { new: b, old: None },
            ],
            (),
        ))
    });
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert!(store.users().unwrap().is_empty());
    assert!(store.audit(0, None).unwrap().is_empty());
}

fn a_deleted_device_takes_its_last_good_files_with_it(store: &Store) {
    let (gone, kept) = (device("001565aabbcc"), device("001565aabbcd"));
    for device in [&gone, &kept] {
        let put = Change::PutDevice {
            new: device.clone(),
            old: None,
        };
        change(store, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
    }
    let good = LastGood {
        users: vec![1],
        body: "account.1.password = secret".into(),
    };
    let files = |mac: Mac| {
        ["001565aabbcc.cfg", "y000000000066.cfg"]
            .map(|file| ((mac, file.to_string()), good.clone()))
    };
    store.record_last_good(&files(gone.mac)).unwrap();
    store.record_last_good(&files(kept.mac)).unwrap();

    let delete = Change::DeleteDevice(gone.clone());
    change(store, |_| Ok::<_, StoreError>((vec![delete], ()))).unwrap();
    assert_eq!(store.last_good(gone.mac, "001565aabbcc.cfg").unwrap(), None);
    assert_eq!(
        store.last_good(gone.mac, "y000000000066.cfg").unwrap(),
        None
    );
    assert_eq!(
        store.last_good(kept.mac, "001565aabbcc.cfg").unwrap(),
        Some(good.clone())
    );

    // A render that finished before the delete is flushed after it.
    store.record_last_good(&files(gone.mac)).unwrap();
    assert_eq!(store.last_good(gone.mac, "001565aabbcc.cfg").unwrap(), None);
}

fn more_records_than_one_batch_holds_all_land(store: &Store) {
    let count = RECORDS_PER_BATCH * 2 + 1;
    let sightings: Vec<(Mac, Sighting)> = (0..count as u64).map(seen).collect();
    store.record_sightings(&sightings).unwrap();
    for (mac, sighting) in &sightings {
        assert_eq!(store.sighting(*mac).unwrap().as_ref(), Some(sighting));
    }
}

/// The `n`th phone, seen at unix time `n`.
fn seen(n: u64) -> (Mac, Sighting) {
    let mac = Mac::from_bytes([0, 0x15, 0x65, 0, (n >> 8) as u8, n as u8]);
    let sighting = Sighting {
        at: n,
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        user_agent: None,
        firmware: None,
        file: format!("{mac}.cfg"),
        transport: "tftp".into(),
        etag: None,
        origin: None,
        without_secrets: false,
    };
    (mac, sighting)
}

fn a_deleted_device_forgets_its_sighting(store: &Store) {
    let phone = device("001565aabbcc");
    let put = Change::PutDevice {
        new: phone.clone(),
        old: None,
    };
    change(store, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
    let (_, sighting) = seen(7);
    store.record_sightings(&[(phone.mac, sighting)]).unwrap();
    assert!(store.sighting(phone.mac).unwrap().is_some());
    let delete = Change::DeleteDevice(phone.clone());
    change(store, |_| Ok::<_, StoreError>((vec![delete], ()))).unwrap();
    assert_eq!(store.device(phone.mac).unwrap(), None);
    assert_eq!(store.sighting(phone.mac).unwrap(), None);
}

fn settings_templates_tokens_and_meta_round_trip(store: &Store) {
    let before = store.generation();
    let global = Settings {
        ntp_server: Some("ntp.example.com".into()),
        ..Settings::default()
    };
    let template = TemplateHistory {
        active: true,
        versions: vec![TemplateVersion {
            version: 1,
            source: "{{ mac }}".into(),
            author: "test".into(),
            at: 1,
            note: None,
        }],
    };
    let token = ApiToken {
        name: "ops".into(),
        scope: crate::domain::records::Scope::Read,
        created: 1,
        hash: "$argon2id$...".into(),
    };
    let changes = vec![
        Change::PutSettings {
            scope: GLOBAL_SCOPE.into(),
            new: global.clone(),
            old: Settings::default(),
        },
        Change::PutTemplate {
            key: "model/yealink-t46s/mac.cfg".into(),
            new: template.clone(),
            old: None,
        },
        Change::PutToken(token.clone()),
    ];
    change(store, |_| Ok::<_, StoreError>((changes, ()))).unwrap();
    assert!(store.generation() > before);
    assert_eq!(store.settings(GLOBAL_SCOPE).unwrap(), global);
    assert_eq!(store.settings("model:none").unwrap(), Settings::default());
    assert_eq!(
        store.all_settings().unwrap(),
        vec![(GLOBAL_SCOPE.to_string(), global)]
    );
    assert_eq!(
        store.template("model/yealink-t46s/mac.cfg").unwrap(),
        Some(template.clone())
    );
    assert_eq!(store.templates().unwrap().len(), 1);
    assert_eq!(store.token("ops").unwrap(), Some(token.clone()));
    assert_eq!(store.tokens().unwrap(), vec![token.clone()]);
    let actions = audited_actions(store);
    assert_eq!(actions, ["settings.update", "template.put", "token.create"]);

    let forget = vec![
        Change::DeleteTemplate {
            key: "model/yealink-t46s/mac.cfg".into(),
            old: template,
        },
        Change::DeleteToken(token),
    ];
    change(store, |_| Ok::<_, StoreError>((forget, ()))).unwrap();
    assert_eq!(store.template("model/yealink-t46s/mac.cfg").unwrap(), None);
    assert_eq!(store.token("ops").unwrap(), None);

    assert_eq!(store.meta("admin").unwrap(), None);
    store.put_meta("admin", b"hash").unwrap();
    assert_eq!(store.meta("admin").unwrap(), Some(b"hash".to_vec()));
    // A claim sets a value once; a later claim gets the first one back.
    assert_eq!(store.claim_meta("key", b"first").unwrap(), b"first");
    assert_eq!(store.claim_meta("key", b"second").unwrap(), b"first");
    assert_eq!(store.meta("key").unwrap(), Some(b"first".to_vec()));
}

fn discovered_phones_merge_skip_devices_and_are_pruned(store: &Store) {
    let knock = |n: u64, count: u64, model: Option<&str>| {
        let (mac, last) = seen(n % 4);
        Discovered {
            mac,
            first_seen: n,
            count,
            vendor: Some("yealink".into()),
            model: model.map(str::to_string),
            reported_model: None,
            last: Sighting { at: n, ..last },
        }
    };
    store
        .record_discovered(&[knock(0, 1, Some("t46s")), knock(1, 1, None)])
        .unwrap();
    store
        .record_discovered(&[knock(4, 2, None), knock(2, 1, None)])
        .unwrap();
    let first = store.discovered_mac(seen(0).0).unwrap().unwrap();
    assert_eq!((first.first_seen, first.count, first.last.at), (0, 3, 4));
    assert_eq!(first.model.as_deref(), Some("t46s"));

    // A MAC adopted as a device is no longer recorded as discovered.
    let mut adopted = device("001565aabbcc");
    adopted.mac = seen(3).0;
    let put = Change::PutDevice {
        new: adopted,
        old: None,
    };
    change(store, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
    store.record_discovered(&[knock(3, 1, None)]).unwrap();
    assert_eq!(store.discovered_mac(seen(3).0).unwrap(), None);

    // Last seen at 4, 1 and 2: the one before the cutoff goes, then the
    // oldest beyond the one kept.
    assert_eq!(store.prune_discovered(2, 1).unwrap(), 2);
    let left: Vec<Mac> = store
        .discovered()
        .unwrap()
        .into_iter()
        .map(|d| d.mac)
        .collect();
    assert_eq!(left, vec![seen(0).0]);
}

fn user_ids_are_never_handed_out_twice(store: &Store) {
    let ada = create(store, user("101")).unwrap();
    let grace = create(store, user("102")).unwrap();
    assert_ne!(ada.id, grace.id);
    let next = store.next_user_id().unwrap();
    assert!(next != ada.id && next != grace.id);
    let many = store.next_user_ids(3).unwrap();
    assert_eq!(many.len(), 3);
    assert!(many.windows(2).all(|w| w[0] < w[1]), "{many:?}");
    assert!(many.iter().all(|id| ![ada.id, grace.id, next].contains(id)));
    assert!(!many.contains(&store.next_user_id().unwrap()));
    assert_eq!(
        store.user_by("email", "102@example.com").unwrap(),
        Some(grace.clone())
    );
    assert_eq!(
        store.user_by("extension", "101").unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.user_by("nickname", "102").unwrap(), None);
    let wanted = ["u102", "u999", "u101"].map(String::from);
    let mut found = store.users_by("sip.username", &wanted).unwrap();
    found.sort_by_key(|u| u.id);
    assert_eq!(found, vec![ada, grace]);
    assert_eq!(store.users_by("nickname", &wanted).unwrap(), vec![]);
}

fn counts_follow_what_is_really_added_and_removed(store: &Store) {
    let apply =
        |changes: Vec<Change>| change(store, |_| Ok::<_, StoreError>((changes, ()))).unwrap();
    let ada = create(store, user("101")).unwrap();
    create(store, user("102")).unwrap();
    let put = |mac: &str| Change::PutDevice {
        new: device(mac),
        old: None,
    };
    apply(vec![put("001565aabbcc"), put("001565aabbcd")]);
    assert_eq!((store.user_count(), store.device_count()), (2, 2));
    let asked = ["001565aabbcd", "001565000000"].map(|mac| mac.parse().unwrap());
    assert_eq!(
        store.devices_of(&asked).unwrap(),
        vec![device("001565aabbcd")]
    );
    // A plan that takes a replacement for a new record does not count it twice.
    apply(vec![put("001565aabbcc")]);
    apply(vec![Change::PutUser {
        new: ada.clone(),
        old: None,
    }]);
    assert_eq!((store.user_count(), store.device_count()), (2, 2));
    apply(vec![
        Change::DeleteUser(ada.clone()),
        Change::DeleteDevice(device("001565aabbcc")),
    ]);
    apply(vec![Change::DeleteUser(ada)]);
    assert_eq!((store.user_count(), store.device_count()), (1, 1));
}

fn layouts_are_kept_listed_and_forgotten(store: &Store) {
    let reception = Layout {
        name: "reception".into(),
        model: "yealink-t46s".into(),
        description: None,
        keys: Vec::new(),
    };
    let sales = Layout {
        name: "sales".into(),
        ..reception.clone()
    };
    let put = |layout: &Layout| Change::PutLayout {
        new: layout.clone(),
        old: None,
    };
    change(store, |_| {
        Ok::<_, StoreError>((vec![put(&sales), put(&reception)], ()))
    })
    .unwrap();
    assert_eq!(store.layout("sales").unwrap(), Some(sales.clone()));
    assert_eq!(store.layouts().unwrap(), vec![reception.clone(), sales]);
    let mut phone = device("001565aabbcc");
    phone.layout = Some("reception".into());
    let put_device = Change::PutDevice {
        new: phone.clone(),
        old: None,
    };
    change(store, |_| Ok::<_, StoreError>((vec![put_device], ()))).unwrap();
    assert_eq!(store.devices_with_layout("reception").unwrap(), vec![phone]);
    let delete = Change::DeleteLayout(reception);
    change(store, |_| Ok::<_, StoreError>((vec![delete], ()))).unwrap();
    assert_eq!(store.layout("reception").unwrap(), None);
    let actions = audited_actions(store);
    assert_eq!(
        actions,
        [
            "layout.create",
            "layout.create",
            "device.create",
            "layout.delete"
        ]
    );
    // The newest entries, newest first, as the dashboard lists them.
    let recent: Vec<String> = (store.recent_audit(2).unwrap().into_iter())
        .map(|e| e.action)
        .collect();
    assert_eq!(recent, ["layout.delete", "device.create"]);
}

/// The audit log's actions, oldest first.
fn audited_actions(store: &Store) -> Vec<String> {
    store
        .audit(0, None)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

fn a_store_that_starts_afresh_keeps_everything(store: &Store) {
    let ada = create(store, user("101")).unwrap();
    let (mac, sighting) = seen(1);
    store.record_sightings(&[(mac, sighting.clone())]).unwrap();
    let before = store.generation();
    store.start_afresh().unwrap();
    // Whatever a cache holds may be stale now.
    assert!(store.generation() > before);
    assert_eq!(store.user(ada.id).unwrap(), Some(ada));
    assert_eq!(store.sighting(mac).unwrap(), Some(sighting));
    let grace = create(store, user("102")).unwrap();
    assert_eq!(store.user_by_extension("102").unwrap(), Some(grace));
    assert_eq!(store.user_count(), 2);
}
