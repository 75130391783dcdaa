//! CSV import of 2,000 users (half with a phone) into a real sled store, in
//! one transaction, against the reference of writing the same users one
//! transaction each (what a script calling the API per user would cost).
//! Each change is flushed to disk before it returns, as the API's are.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use deskboot::admin::import;
use deskboot::catalog::Catalog;
use deskboot::domain::progress::silent;
use deskboot::store::{Change, Store, StoreError};

const ROWS: usize = 2000;

fn csv(model: &str) -> String {
    let mut text = String::from(import::header());
    text.push('\n');
    for i in 0..ROWS {
        let phone = if i % 2 == 0 {
            format!("0015650{i:05x},{model}")
        } else {
            ",".into()
        };
        text.push_str(&format!(
            "{},First{i},Last{i},u{i}@example.com,,,{phone}\n",
            2000 + i
        ));
    }
    text
}

fn bench_import(c: &mut Criterion) {
    let catalog = Catalog::builtin().expect("catalog");
    let model = catalog.models()[0].id.clone();
    let text = csv(&model);
    let mut group = c.benchmark_group("import_2000_rows");
    group.sample_size(10);
    group.bench_function("csv_one_transaction", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let store = Store::open(dir.path()).expect("store");
                let summary = store
                    .change_blocking(
                        "bench",
                        |store| import::plan(&text, store, &catalog, &silent),
                        &silent,
                    )
                    .expect("import");
                assert_eq!(summary.users.created, ROWS);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("reference_one_transaction_per_user", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = Store::open(dir.path()).expect("store");
                let (changes, _) = import::plan(&text, &store, &catalog, &silent).expect("plan");
                (dir, changes)
            },
            |(dir, changes)| {
                let store = Store::open(&dir.path().join("other")).expect("store");
                for change in changes
                    .into_iter()
                    .filter(|c| matches!(c, Change::PutUser { .. }))
                {
                    store
                        .change_blocking(
                            "bench",
                            |_| Ok::<_, StoreError>((vec![change], ())),
                            &silent,
                        )
                        .expect("write");
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_import);
criterion_main!(benches);
