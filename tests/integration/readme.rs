//! The README's table of supported models is generated from `phone-models/`,
//! so it cannot drift: this test fails when they differ, and
//! `UPDATE_GOLDEN=1 cargo test readme` rewrites it.

use deskboot::catalog::Catalog;

const START: &str =
    "<!-- models:start (generated from phone-models/ by tests/integration/readme.rs) -->";
const END: &str = "<!-- models:end -->";

fn models_table() -> String {
    let catalog = Catalog::builtin().expect("built-in catalog");
    let mut table = String::from(
        "| vendor | model | id | SIP accounts | line keys | files | verified |\n|---|---|---|---|---|---|---|\n",
    );
    for model in catalog.models() {
        let files: Vec<String> = model
            .files
            .iter()
            .map(|f| format!("`{}`", f.name))
            .collect();
        let verified = match &model.unverified {
            Some(unknown) => format!("no: {unknown}"),
            None => "yes".to_string(),
        };
        table.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | {} | {verified} |\n",
            model.vendor,
            model.name,
            model.id,
            model.accounts,
            model.line_keys,
            files.join(", ")
        ));
    }
    table
}

#[test]
fn the_readme_lists_every_model_in_the_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
        panic!("README.md lacks the models markers");
    };
    let current = &readme[start + START.len()..end];
    let expected = format!("\n{}", models_table());
    if current == expected {
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let updated = format!("{}{START}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    panic!("README.md's model table is out of date: run UPDATE_GOLDEN=1 cargo test readme");
}
