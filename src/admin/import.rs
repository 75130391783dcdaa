//! Bulk import of users and their phones from CSV, all or nothing.
//!
//! Three header layouts are understood: deskboot's own comma-separated one
//! (`extension,firstname,lastname,email,sip_username,sip_password,mac,model,...`),
//! Wazo's comma-separated users import (`entity_id,firstname,...,exten,
//! sip_username,sip_secret,voicemail_number,...`), and the legacy XiVO
//! pipe-separated one (`entityid|firstname|...|phonenumber|linename|linesecret|
//! voicemailnumber|...`). Every row is checked, against the file and against
//! the store, before anything is written; a refusal lists every bad row.

use std::collections::HashMap;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::domain::mac::Mac;
use crate::domain::progress::{Report, Stage};
use crate::domain::records::{Device, LineAssignment, SipAccount, User, Voicemail};
use crate::domain::secret::random_secret;
use crate::store::{Change, Store, StoreError};

/// The largest CSV accepted.
pub const MAX_CSV_BYTES: usize = 8 << 20;

/// Length of a generated SIP password.
const GENERATED_PASSWORD_LEN: usize = 20;

/// One refused row (or the header, line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// The line in the file, from 1.
    pub line: u64,
    /// The column, as named in the file's header (or our name for it).
    pub field: String,
    /// The column's value on that line (the column's name for the header);
    /// empty when the whole row is wrong.
    pub value: String,
    /// What is wrong.
    pub error: String,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file has bad rows; nothing was written.
    #[error("{} row(s) refused", .0.len())]
    Rows(Vec<RowError>),
    /// The store changed since the dry run this apply relies on; nothing
    /// was written.
    #[error("the store changed since the dry run: nothing was imported; run the dry run again")]
    StoreChanged,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether an import writes, and on what condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Checks everything and writes nothing.
    DryRun,
    /// Writes what the file plans against the store as it is.
    Apply,
    /// Writes only if the store is still at this generation, the one a dry
    /// run of the same file was checked against.
    ApplyAt(u64),
}

/// What an import did, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// What it creates.
    pub summary: Summary,
    /// The store's generation the file was checked against.
    pub generation: u64,
}

/// Imports `text` (a leading byte-order mark skipped) as `actor`, all or
/// nothing, reporting each row checked and each record written. The plan,
/// the generation check and the write happen under the store's writer
/// lock, so no other change can slip in between.
pub fn run(
    store: &Store,
    catalog: &Catalog,
    actor: &str,
    text: &str,
    mode: Mode,
    report: Report<'_>,
) -> Result<Imported, ImportError> {
    let text = text.trim_start_matches('\u{feff}');
    store.change_blocking(
        actor,
        |store| {
            let generation = store.generation();
            if let Mode::ApplyAt(previewed) = mode
                && previewed != generation
            {
                return Err(ImportError::StoreChanged);
            }
            let (changes, summary) = plan(text, store, catalog, report)?;
            let changes = if mode == Mode::DryRun {
                Vec::new()
            } else {
                changes
            };
            Ok((
                changes,
                Imported {
                    summary,
                    generation,
                },
            ))
        },
        report,
    )
}

/// What an import creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The header layout recognised: `deskboot`, `wazo` or `xivo`.
    pub format: &'static str,
    /// Users created.
    pub users: usize,
    /// Devices created.
    pub devices: usize,
}

/// The fields we read, with every header name that means each.
const FIELDS: [(&str, &[&str]); 13] = [
    ("extension", &["extension", "exten", "phonenumber"]),
    ("first_name", &["firstname", "first_name"]),
    ("last_name", &["lastname", "last_name"]),
    ("email", &["email"]),
    ("language", &["language"]),
    (
        "mobile",
        &["mobile", "mobilephonenumber", "mobile_phone_number"],
    ),
    ("sip_username", &["sip_username", "linename"]),
    (
        "sip_password",
        &["sip_password", "linesecret", "sip_secret"],
    ),
    ("auth_name", &["auth_name"]),
    (
        "mailbox",
        &[
            "mailbox",
            "voicemailnumber",
            "voicemailmailbox",
            "voicemail_number",
        ],
    ),
    (
        "voicemail_pin",
        &["voicemail_pin", "voicemailpassword", "voicemail_password"],
    ),
    ("mac", &["mac"]),
    ("layout", &["layout"]),
];

/// One data row, by our field names, with its line.
#[derive(Debug)]
struct Row {
    line: u64,
    fields: HashMap<&'static str, String>,
    model: Option<String>,
}

impl Row {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .get(field)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// What the row holds in `field`, as a refusal quotes it.
    fn value(&self, field: &str) -> String {
        let value = match field {
            "model" => self.model.as_deref(),
            _ => self.get(field),
        };
        value.unwrap_or_default().to_string()
    }
}

/// Checks a CSV file and plans the changes that import it; nothing is
/// written. Each row checked is reported.
pub fn plan(
    text: &str,
    store: &Store,
    catalog: &Catalog,
    report: Report<'_>,
) -> Result<(Vec<Change>, Summary), ImportError> {
    let (format, rows, mut errors) = read_rows(text).map_err(ImportError::Rows)?;
    let mut changes = Vec::new();
    let mut seen: HashMap<&'static str, HashMap<String, u64>> = HashMap::new();
    let mut devices: Vec<(u64, Device)> = Vec::new();
    let mut users = 0;
    for (checked, row) in rows.iter().enumerate() {
        report(Stage::Checking, checked + 1, rows.len());
        let fail = |errors: &mut Vec<RowError>, field: &str, error: String| {
            errors.push(RowError {
                line: row.line,
                field: field.to_string(),
                value: row.value(field),
                error,
            })
        };
        let user = match user_of(row, store) {
            Ok(user) => user,
            Err((field, error)) => {
                fail(&mut errors, field, error);
                continue;
            }
        };
        let mut row_ok = true;
        for (field, error) in taken_fields(&user, row.line, &mut seen, store)? {
            fail(&mut errors, field, error);
            row_ok = false;
        }
        if let Some(mac) = row.get("mac") {
            match place_on_device(row, mac, &user, store, catalog, &mut devices) {
                Ok(()) => {}
                Err((field, error)) => {
                    fail(&mut errors, field, error);
                    row_ok = false;
                }
            }
        }
        if row_ok {
            users += 1;
            changes.push(Change::PutUser {
                new: user,
                old: None,
            });
        }
    }
    for (line, device) in &devices {
        let Some(model) = catalog.model(&device.model) else {
            continue;
        };
        let layout = match &device.layout {
            Some(name) => store.layout(name)?,
            None => None,
        };
        let shown = layout.map_or_else(|| device.clone(), |l| l.laid_under(device));
        if let Err(invalid) = model.check_device(&shown) {
            errors.push(RowError {
                line: *line,
                field: "mac".into(),
                value: device.mac.to_string(),
                error: format!("device {}: {}", device.mac, invalid.message),
            });
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(ImportError::Rows(errors));
    }
    let summary = Summary {
        format,
        users,
        devices: devices.len(),
    };
    changes.extend(devices.into_iter().map(|(_, device)| Change::PutDevice {
        new: device,
        old: None,
    }));
    Ok((changes, summary))
}

/// The unique fields of a row's user that an earlier row or a stored user
/// already holds, with why.
fn taken_fields(
    user: &User,
    line: u64,
    seen: &mut HashMap<&'static str, HashMap<String, u64>>,
    store: &Store,
) -> Result<Vec<(&'static str, String)>, StoreError> {
    let mut taken = Vec::new();
    for (field, index_field, value) in [
        ("extension", "extension", Some(&user.extension)),
        ("sip_username", "sip.username", Some(&user.sip.username)),
        ("email", "email", user.email.as_ref()),
    ] {
        let Some(value) = value else { continue };
        if let Some(first) = seen.entry(field).or_default().insert(value.clone(), line) {
            taken.push((field, format!("{value} is also on line {first}")));
        }
        if store.user_by(index_field, value)?.is_some() {
            taken.push((field, format!("{value} is already used by a user")));
        }
    }
    Ok(taken)
}

/// The header layout, the rows that could be read and the ones that could not.
type ReadRows = (&'static str, Vec<Row>, Vec<RowError>);

/// Reads the file; a header that cannot be used is refused at once.
fn read_rows(text: &str) -> Result<ReadRows, Vec<RowError>> {
    // The csv reader counts a CR LF as two line ends, and browsers post a
    // text area's lines ended so: a refusal must name the file's own line.
    let text = text.replace("\r\n", "\n");
    let header_line = text.lines().next().unwrap_or_default();
    let pipe = header_line.contains('|');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if pipe { b'|' } else { b',' })
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header_error = |value: &str, error: String| {
        vec![RowError {
            line: 1,
            field: "header".into(),
            value: value.to_string(),
            error,
        }]
    };
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| header_error("", e.to_string()))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let wazo = headers.iter().any(|h| h == "entity_id" || h == "entityid");
    let format = match (pipe, wazo) {
        (true, _) => "xivo",
        (false, true) => "wazo",
        (false, false) => "deskboot",
    };
    // Map each column to our field; in our own format an unknown column is
    // a typo worth refusing, Wazo's files carry many columns we do not need.
    let mut columns: Vec<Option<&'static str>> = Vec::new();
    for header in &headers {
        let field = FIELDS
            .iter()
            .find(|(_, names)| names.contains(&header.as_str()))
            .map(|(field, _)| *field)
            .or((header == "model").then_some("model"));
        if field.is_none() && format == "deskboot" {
            return Err(header_error(header, format!("unknown column '{header}'")));
        }
        columns.push(field);
    }
    if !columns.contains(&Some("extension")) {
        return Err(header_error(
            "",
            "no extension column (extension, exten or phonenumber)".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(RowError {
                    line,
                    field: "row".into(),
                    value: String::new(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            errors.push(RowError {
                line,
                field: "row".into(),
                value: String::new(),
                error: format!("{} fields, the header has {}", record.len(), headers.len()),
            });
            continue;
        }
        let mut fields = HashMap::new();
        let mut model = None;
        for (column, value) in columns.iter().zip(record.iter()) {
            match column {
                Some("model") => model = Some(value.to_string()).filter(|m| !m.is_empty()),
                Some(field) => {
                    fields.insert(*field, value.to_string());
                }
                None => {}
            }
        }
        rows.push(Row {
            line,
            fields,
            model,
        });
    }
    Ok((format, rows, errors))
}

/// The user a row describes, checked on its own.
fn user_of(row: &Row, store: &Store) -> Result<User, (&'static str, String)> {
    let extension = row
        .get("extension")
        .ok_or(("extension", "is required".to_string()))?
        .to_string();
    let username = row.get("sip_username").unwrap_or(&extension).to_string();
    let user = User {
        id: store
            .next_user_id()
            .map_err(|e| ("extension", e.to_string()))?,
        first_name: row.get("first_name").unwrap_or_default().to_string(),
        last_name: row.get("last_name").unwrap_or_default().to_string(),
        email: row.get("email").map(str::to_string),
        sip: SipAccount {
            auth_name: row.get("auth_name").unwrap_or(&username).to_string(),
            password: row
                .get("sip_password")
                .map(str::to_string)
                .unwrap_or_else(|| random_secret(GENERATED_PASSWORD_LEN)),
            username,
        },
        caller_id: Default::default(),
        voicemail: row.get("mailbox").map(|mailbox| Voicemail {
            mailbox: mailbox.to_string(),
            pin: row.get("voicemail_pin").map(str::to_string),
        }),
        language: row.get("language").map(str::to_string),
        mobile: row.get("mobile").map(str::to_string),
        dnd: false,
        call_waiting: true,
        in_directory: true,
        extension,
    };
    user.validate().map_err(|invalid| {
        let field = FIELDS
            .iter()
            .find(|(name, _)| invalid.field.replace('.', "_") == *name)
            .map_or("user", |(name, _)| *name);
        (field, format!("{}: {}", invalid.field, invalid.message))
    })?;
    Ok(user)
}

/// Puts the row's user on its phone: a new device, or the next line of a
/// device an earlier row created.
fn place_on_device(
    row: &Row,
    mac: &str,
    user: &User,
    store: &Store,
    catalog: &Catalog,
    devices: &mut Vec<(u64, Device)>,
) -> Result<(), (&'static str, String)> {
    let mac: Mac = mac.parse().map_err(|e| ("mac", format!("'{mac}': {e}")))?;
    let line = LineAssignment {
        user: user.id,
        label: None,
    };
    let layout = row.get("layout").map(str::to_string);
    if let Some((_, device)) = devices.iter_mut().find(|(_, d)| d.mac == mac) {
        if row.model.as_ref().is_some_and(|m| *m != device.model) {
            return Err((
                "model",
                format!("{mac} is a {} on an earlier line", device.model),
            ));
        }
        if layout.is_some() && layout != device.layout {
            return Err((
                "layout",
                format!("{mac} follows another layout on an earlier line"),
            ));
        }
        device.lines.push(line);
        return Ok(());
    }
    let model = row
        .model
        .clone()
        .ok_or(("model", format!("a phone ({mac}) needs its model")))?;
    if catalog.model(&model).is_none() {
        return Err(("model", format!("unknown model '{model}'")));
    }
    if store
        .device(mac)
        .map_err(|e| ("mac", e.to_string()))?
        .is_some()
    {
        return Err(("mac", format!("device {mac} already exists")));
    }
    if let Some(name) = &layout {
        check_layout(name, &model, store)?;
    }
    devices.push((
        row.line,
        Device {
            mac,
            model,
            description: None,
            lines: vec![line],
            keys: Vec::new(),
            layout,
            modules: Vec::new(),
            settings: Default::default(),
        },
    ));
    Ok(())
}

/// Refuses a layout that is not stored, or is for another model.
fn check_layout(name: &str, model: &str, store: &Store) -> Result<(), (&'static str, String)> {
    let layout = store
        .layout(name)
        .map_err(|e| ("layout", e.to_string()))?
        .ok_or_else(|| ("layout", format!("there is no layout {name}")))?;
    if layout.model != model {
        return Err((
            "layout",
            format!("layout {name} is for the {}, not the {model}", layout.model),
        ));
    }
    Ok(())
}

/// The header of deskboot's own layout with the usual columns.
pub fn header() -> &'static str {
    "extension,firstname,lastname,email,sip_username,sip_password,mac,model"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::progress::silent;
    use proptest::prelude::*;

    /// One store and catalog for every case: opening them is the slow part,
    /// and a plan only reads.
    fn fixtures() -> (&'static Store, &'static Catalog) {
        static FIXTURES: std::sync::OnceLock<(tempfile::TempDir, Store, Catalog)> =
            std::sync::OnceLock::new();
        let (_, store, catalog) = FIXTURES.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            (dir, store, Catalog::builtin().unwrap())
        });
        (store, catalog)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the file, the importer answers with a plan or with row
        /// errors; it never panics, and every error names a line of the file.
        #[test]
        fn any_file_gets_a_plan_or_row_errors(
            header in prop::sample::select(vec![
                header().to_string(),
                "entityid|firstname|lastname|linename|linesecret".to_string(),
                "entity_id,firstname,lastname,exten,sip_username,sip_secret".to_string(),
                String::new(),
            ]),
            rows in prop::collection::vec("[0-9a-zA-Z,|\"; :\\.\\-\n\r\u{0}é]{0,60}", 0..12),
        ) {
            let (store, catalog) = fixtures();
            let text = format!("{header}\n{}", rows.join("\n"));
            let lines = text.lines().count() as u64 + 1;
            match plan(&text, store, catalog, &silent) {
                Ok(_) => {}
                Err(ImportError::Rows(errors)) => {
                    prop_assert!(!errors.is_empty());
                    for e in errors {
                        prop_assert!(e.line <= lines, "line {} of {}", e.line, lines);
                    }
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }
    }

    fn setup() -> (tempfile::TempDir, Store, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store, Catalog::builtin().unwrap())
    }

    #[test]
    fn the_xivo_pipe_format_is_understood() {
        let (_dir, store, catalog) = setup();
        let csv = "entityid|firstname|lastname|language|phonenumber|context|linename|linesecret|voicemailnumber|voicemailpassword\n\
                   1|Ada|Lovelace|fr_FR|101|default|ada101|s3cret|101|1234\n";
        let (changes, summary) = plan(csv, &store, &catalog, &silent).unwrap();
        assert_eq!(summary.format, "xivo");
        assert_eq!(summary.users, 1);
        let Change::PutUser { new, .. } = &changes[0] else {
            panic!()
        };
        assert_eq!(new.sip.username, "ada101");
        assert_eq!(new.sip.password, "s3cret");
        assert_eq!(new.voicemail.as_ref().unwrap().pin.as_deref(), Some("1234"));
    }

    #[test]
    fn every_bad_row_is_reported() {
        let (_dir, store, catalog) = setup();
        let csv = format!(
            "{}\n101,Ada,L,ada@example.com,,,,\n101,Dup,L,,,,,\n102,Bad,Mac,,,,zz,x\n103,Bad,Model,,,,001565000103,nope\n104,Ok,Row,,,,,\n105,A\nB,L,,,,,\n",
            header()
        );
        let Err(ImportError::Rows(errors)) = plan(&csv, &store, &catalog, &silent) else {
            panic!("should be refused")
        };
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert!(
            lines.contains(&3) && lines.contains(&4) && lines.contains(&5),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bad_row_names_its_line_whatever_ends_the_lines() {
        let (_dir, store, catalog) = setup();
        let csv = format!("{}\n101,Ada,L,,,,zz,yealink-t46s\n", header());
        for text in [csv.clone(), csv.replace('\n', "\r\n")] {
            let Err(ImportError::Rows(errors)) = plan(&text, &store, &catalog, &silent) else {
                panic!("should be refused")
            };
            assert_eq!((errors[0].line, errors[0].value.as_str()), (2, "zz"));
        }
    }

    #[test]
    fn an_unknown_column_is_refused_in_our_format() {
        let (_dir, store, catalog) = setup();
        let Err(ImportError::Rows(errors)) =
            plan("extension,frstname\n1,x\n", &store, &catalog, &silent)
        else {
            panic!()
        };
        assert_eq!(errors[0].line, 1);
        assert!(errors[0].error.contains("frstname"));
    }
}
