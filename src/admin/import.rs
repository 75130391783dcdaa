//! Bulk import of users and their phones from CSV, all or nothing.
//!
//! Three header layouts are understood: deskboot's own comma-separated one
//! (`extension,firstname,lastname,email,sip_username,sip_password,mac,model,...`),
//! Wazo's comma-separated users import (`entity_id,firstname,...,exten,
//! sip_username,sip_secret,voicemail_number,...`), and the legacy XiVO
//! pipe-separated one (`entityid|firstname|...|phonenumber|linename|linesecret|
//! voicemailnumber|...`). Every row is checked, against the file and against
//! the store, before anything is written; a refusal lists every bad row.
//!
//! A row whose extension is a stored user's updates that user, so that an
//! administrator can re-import an edited spreadsheet: a non-empty cell
//! replaces the field, an empty one keeps it. A row whose MAC is a stored
//! phone's adds its user as the phone's next line. What would stay exactly
//! as stored is counted as unchanged and not written, so it leaves no
//! audit entry.
//!
//! The users and phones a file names are read from the store in a few bulk
//! lookups before any row is checked ([`Stored`]): row by row, a store
//! across the network costs several round trips per row.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::catalog::Catalog;
use crate::domain::mac::Mac;
use crate::domain::progress::{Report, Stage};
use crate::domain::records::{Device, LineAssignment, SipAccount, User, UserId, Voicemail};
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
    /// What it creates, updates and leaves as it is.
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

/// What an import creates, updates and leaves as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The header layout recognised: `deskboot`, `wazo` or `xivo`.
    pub format: &'static str,
    /// The users the rows name.
    pub users: Counts,
    /// The devices the rows name.
    pub devices: Counts,
}

/// How many records of one kind an import creates, updates or leaves as
/// they are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records that did not exist.
    pub created: usize,
    /// Stored records the file changes.
    pub updated: usize,
    /// Stored records the file names but would leave exactly as they are.
    pub unchanged: usize,
}

impl Counts {
    /// Counts a record as created (nothing stored), unchanged (stored as
    /// it would be) or updated; true when it is to be written.
    #[must_use]
    fn count<T: PartialEq>(&mut self, stored: Option<&T>, new: &T) -> bool {
        let count = match stored {
            None => &mut self.created,
            Some(stored) if stored == new => &mut self.unchanged,
            Some(_) => &mut self.updated,
        };
        *count += 1;
        stored != Some(new)
    }
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
    let mut stored_records = Stored::read(&rows, store)?;
    let mut phones = Phones::new(store, catalog, std::mem::take(&mut stored_records.devices));
    let mut users = Counts::default();
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
        let (user, stored) = match user_of(row, &mut stored_records) {
            Ok(user) => user,
            Err((field, error)) => {
                fail(&mut errors, field, error);
                continue;
            }
        };
        let mut row_ok = true;
        for (field, error) in taken_fields(&user, row.line, &mut seen, &stored_records) {
            fail(&mut errors, field, error);
            row_ok = false;
        }
        if let Some(mac) = row.get("mac")
            && let Err((field, error)) = phones.place(row, mac, &user, stored.is_some())
        {
            fail(&mut errors, field, error);
            row_ok = false;
        }
        if row_ok && users.count(stored.as_ref(), &user) {
            changes.push(Change::PutUser {
                new: user,
                old: stored,
            });
        }
    }
    let devices = phones.finish(&mut changes, &mut errors)?;
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(ImportError::Rows(errors));
    }
    let summary = Summary {
        format,
        users,
        devices,
    };
    Ok((changes, summary))
}

/// The unique fields of a row's user that an earlier row or another
/// stored user already holds, with why.
fn taken_fields(
    user: &User,
    line: u64,
    seen: &mut HashMap<&'static str, HashMap<String, u64>>,
    stored: &Stored,
) -> Vec<(&'static str, String)> {
    let mut taken = Vec::new();
    // The extension names the user the row is about, so only the file can
    // hold it twice.
    for (field, index_field, value) in [
        ("extension", None, Some(&user.extension)),
        (
            "sip_username",
            Some("sip.username"),
            Some(&user.sip.username),
        ),
        ("email", Some("email"), user.email.as_ref()),
    ] {
        let Some(value) = value else { continue };
        if let Some(first) = seen.entry(field).or_default().insert(value.clone(), line) {
            taken.push((field, format!("{value} is also on line {first}")));
            // A second row for one extension is the error; its SIP username
            // and e-mail clash with the first row's only because of it.
            if field == "extension" {
                return taken;
            }
        }
        if let Some(index_field) = index_field
            && let Some(holder) = stored.user_by(index_field, value)
            && holder.id != user.id
        {
            taken.push((
                field,
                format!(
                    "{value} is already used by another user ({})",
                    holder.extension
                ),
            ));
        }
    }
    taken
}

/// What the store holds of the users and phones a file names, read in
/// bulk before any row is checked.
struct Stored {
    /// Users by a unique field (`extension`, `sip.username`, `email`)
    /// and its value: each value a row could give that field.
    users: HashMap<(&'static str, String), User>,
    /// The stored devices among the rows' MACs.
    devices: HashMap<Mac, Device>,
    /// Fresh ids for the rows whose extension no stored user has.
    new_ids: std::vec::IntoIter<UserId>,
}

impl Stored {
    fn read(rows: &[Row], store: &Store) -> Result<Stored, StoreError> {
        let cells = |column: &'static str| rows.iter().filter_map(move |row| row.get(column));
        let distinct = |values: Vec<&str>| -> Vec<String> {
            let distinct: BTreeSet<&str> = values.into_iter().collect();
            distinct.into_iter().map(str::to_string).collect()
        };
        // A new user's SIP username is its extension unless a cell says.
        let usernames = cells("sip_username").chain(cells("extension")).collect();
        let mut users = HashMap::new();
        for (field, values) in [
            ("extension", distinct(cells("extension").collect())),
            ("sip.username", distinct(usernames)),
            ("email", distinct(cells("email").collect())),
        ] {
            for user in store.users_by(field, &values)? {
                let value = match field {
                    "extension" => user.extension.clone(),
                    "sip.username" => user.sip.username.clone(),
                    _ => user.email.clone().unwrap_or_default(),
                };
                users.insert((field, value), user);
            }
        }
        let macs: Vec<Mac> = cells("mac").filter_map(|mac| mac.parse().ok()).collect();
        let devices = store.devices_of(&macs)?;
        let new_users = cells("extension")
            .filter(|extension| !users.contains_key(&("extension", extension.to_string())))
            .count();
        Ok(Stored {
            users,
            devices: devices.into_iter().map(|d| (d.mac, d)).collect(),
            new_ids: store.next_user_ids(new_users)?.into_iter(),
        })
    }

    /// The stored user holding `value` of a unique `field`.
    fn user_by(&self, field: &'static str, value: &str) -> Option<&User> {
        self.users.get(&(field, value.to_string()))
    }
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

/// The user a row describes, checked on its own, and the stored user of
/// its extension, which the row updates.
fn user_of(row: &Row, known: &mut Stored) -> Result<(User, Option<User>), (&'static str, String)> {
    let extension = row
        .get("extension")
        .ok_or(("extension", "is required".to_string()))?;
    let stored = known.user_by("extension", extension).cloned();
    let mut user = match &stored {
        Some(stored) => stored.clone(),
        None => {
            let id = known.new_ids.next().ok_or((
                "extension",
                "no user id was set aside for this row".to_string(),
            ))?;
            new_user(id, extension)
        }
    };
    fill_from_cells(&mut user, row);
    // Only a new user without a password cell gets one made up: a stored
    // password is what the user's phones already register with.
    if stored.is_none() && user.sip.password.is_empty() {
        user.sip.password = random_secret(GENERATED_PASSWORD_LEN);
    }
    user.validate().map_err(|invalid| {
        let field = FIELDS
            .iter()
            .find(|(name, _)| invalid.field.replace('.', "_") == *name)
            .map_or("user", |(name, _)| *name);
        (field, format!("{}: {}", invalid.field, invalid.message))
    })?;
    Ok((user, stored))
}

/// A user with a fresh id, `extension` as its SIP username and nothing
/// else the rows have not said.
fn new_user(id: UserId, extension: &str) -> User {
    User {
        id,
        first_name: String::new(),
        last_name: String::new(),
        email: None,
        sip: SipAccount {
            username: extension.to_string(),
            auth_name: extension.to_string(),
            password: String::new(),
        },
        caller_id: Default::default(),
        voicemail: None,
        language: None,
        mobile: None,
        dnd: false,
        call_waiting: true,
        in_directory: true,
        extension: extension.to_string(),
    }
}

/// Sets each field the row has a non-empty cell for; an empty cell or a
/// missing column keeps what `user` holds.
fn fill_from_cells(user: &mut User, row: &Row) {
    let cell = |field| row.get(field).map(str::to_string);
    for (field, value) in [
        ("first_name", &mut user.first_name),
        ("last_name", &mut user.last_name),
        ("sip_password", &mut user.sip.password),
    ] {
        if let Some(cell) = cell(field) {
            *value = cell;
        }
    }
    for (field, value) in [
        ("email", &mut user.email),
        ("language", &mut user.language),
        ("mobile", &mut user.mobile),
    ] {
        if let Some(cell) = cell(field) {
            *value = Some(cell);
        }
    }
    if let Some(username) = cell("sip_username") {
        // An authentication name that was the username stays so: it was
        // never set on its own.
        if user.sip.auth_name == user.sip.username {
            user.sip.auth_name.clone_from(&username);
        }
        user.sip.username = username;
    }
    if let Some(auth_name) = cell("auth_name") {
        user.sip.auth_name = auth_name;
    }
    if let Some(mailbox) = cell("mailbox") {
        match &mut user.voicemail {
            Some(voicemail) => voicemail.mailbox = mailbox,
            None => user.voicemail = Some(Voicemail { mailbox, pin: None }),
        }
    }
    if let (Some(pin), Some(voicemail)) = (cell("voicemail_pin"), &mut user.voicemail) {
        voicemail.pin = Some(pin);
    }
}

/// A device the rows name, as the import would leave it.
struct PlannedDevice {
    device: Device,
    /// As stored; none for a device the file creates.
    stored: Option<Device>,
    /// The last line that changed it: a refusal of the whole device names it.
    line: u64,
    /// The line whose layout cell named the device's layout, if one did.
    layout_line: Option<u64>,
}

/// The phones the rows name: created, or stored and given lines or a
/// layout.
struct Phones<'a> {
    store: &'a Store,
    catalog: &'a Catalog,
    /// The stored devices among the rows' MACs, taken as each is planned.
    stored: HashMap<Mac, Device>,
    /// In the order the file first names them.
    planned: Vec<PlannedDevice>,
    by_mac: HashMap<Mac, usize>,
    /// The stored devices each stored user has a line on, read once the
    /// first row puts a stored user on a phone.
    stored_lines: Option<HashMap<UserId, Vec<Mac>>>,
}

impl<'a> Phones<'a> {
    fn new(store: &'a Store, catalog: &'a Catalog, stored: HashMap<Mac, Device>) -> Self {
        Phones {
            store,
            catalog,
            stored,
            planned: Vec::new(),
            by_mac: HashMap::new(),
            stored_lines: None,
        }
    }

    /// Puts the row's user on the phone `mac`, as its next line unless it
    /// has one already, and sets the layout the row names. A stored user
    /// on another phone is refused: moving a user to a new phone is
    /// `replace`'s job, which carries the old phone's keys and settings.
    fn place(
        &mut self,
        row: &Row,
        mac: &str,
        user: &User,
        stored_user: bool,
    ) -> Result<(), (&'static str, String)> {
        let mac: Mac = mac.parse().map_err(|e| ("mac", format!("'{mac}': {e}")))?;
        if stored_user && let Some(other) = self.other_phone_of(user.id, mac)? {
            return Err((
                "mac",
                format!(
                    "user {} is on device {other}: use replace to move it",
                    user.extension
                ),
            ));
        }
        let index = match self.by_mac.get(&mac) {
            Some(index) => *index,
            None => self.open(row, mac)?,
        };
        let planned = &mut self.planned[index];
        let model = planned.device.model.clone();
        if let Some(named) = row.model.as_ref().filter(|named| **named != model) {
            return Err(("model", format!("{mac} is a {model}, not a {named}")));
        }
        if let Some(layout) = row.get("layout") {
            match planned.layout_line {
                Some(line) if planned.device.layout.as_deref() != Some(layout) => {
                    return Err((
                        "layout",
                        format!("{mac} follows another layout on line {line}"),
                    ));
                }
                Some(_) => {}
                None => {
                    if planned.device.layout.as_deref() != Some(layout) {
                        check_layout(layout, &model, self.store)?;
                        planned.device.layout = Some(layout.to_string());
                        planned.line = row.line;
                    }
                    planned.layout_line = Some(row.line);
                }
            }
        }
        if !planned.device.lines.iter().any(|l| l.user == user.id) {
            planned.device.lines.push(LineAssignment {
                user: user.id,
                label: None,
            });
            planned.line = row.line;
        }
        Ok(())
    }

    /// A stored phone other than `mac` that the stored user `id` has a
    /// line on, unless it has one on `mac` too.
    fn other_phone_of(
        &mut self,
        id: UserId,
        mac: Mac,
    ) -> Result<Option<Mac>, (&'static str, String)> {
        if self.stored_lines.is_none() {
            let mut lines: HashMap<UserId, Vec<Mac>> = HashMap::new();
            for device in self.store.devices().map_err(|e| ("mac", e.to_string()))? {
                for line in &device.lines {
                    lines.entry(line.user).or_default().push(device.mac);
                }
            }
            self.stored_lines = Some(lines);
        }
        let phones = self.stored_lines.as_ref().and_then(|lines| lines.get(&id));
        Ok(match phones {
            Some(phones) if !phones.contains(&mac) => phones.first().copied(),
            _ => None,
        })
    }

    /// Starts planning the phone `mac` the file names first on `row`: the
    /// stored device, or a new one of the row's model.
    fn open(&mut self, row: &Row, mac: Mac) -> Result<usize, (&'static str, String)> {
        let stored = self.stored.remove(&mac);
        let device = match &stored {
            Some(stored) => stored.clone(),
            None => {
                let model = row
                    .model
                    .clone()
                    .ok_or(("model", format!("a phone ({mac}) needs its model")))?;
                if self.catalog.model(&model).is_none() {
                    return Err(("model", format!("unknown model '{model}'")));
                }
                Device {
                    mac,
                    model,
                    description: None,
                    lines: Vec::new(),
                    keys: Vec::new(),
                    layout: None,
                    modules: Vec::new(),
                    settings: Default::default(),
                }
            }
        };
        self.planned.push(PlannedDevice {
            device,
            stored,
            line: row.line,
            layout_line: None,
        });
        self.by_mac.insert(mac, self.planned.len() - 1);
        Ok(self.planned.len() - 1)
    }

    /// Checks every phone the file changes against its model (a line too
    /// many is refused here), plans its write and counts them all.
    fn finish(
        self,
        changes: &mut Vec<Change>,
        errors: &mut Vec<RowError>,
    ) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for PlannedDevice {
            device,
            stored,
            line,
            ..
        } in self.planned
        {
            if !counts.count(stored.as_ref(), &device) {
                continue;
            }
            let Some(model) = self.catalog.model(&device.model) else {
                continue;
            };
            let layout = match &device.layout {
                Some(name) => self.store.layout(name)?,
                None => None,
            };
            let shown = layout.map_or_else(|| device.clone(), |l| l.laid_under(&device));
            if let Err(invalid) = model.check_device(&shown) {
                errors.push(RowError {
                    line,
                    field: "mac".into(),
                    value: device.mac.to_string(),
                    error: format!("device {}: {}", device.mac, invalid.message),
                });
            }
            changes.push(Change::PutDevice {
                new: device,
                old: stored,
            });
        }
        Ok(counts)
    }
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
        assert_eq!(summary.users.created, 1);
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

    fn row(cells: &[(&'static str, &str)]) -> Row {
        Row {
            line: 2,
            fields: cells.iter().map(|(f, v)| (*f, v.to_string())).collect(),
            model: None,
        }
    }

    #[test]
    fn empty_cells_keep_fields_and_a_defaulted_auth_name_follows_the_username() {
        let stored = new_user(1, "201");
        let mut user = stored.clone();
        fill_from_cells(
            &mut user,
            &row(&[
                ("first_name", ""),
                ("sip_username", "grace"),
                ("mailbox", ""),
            ]),
        );
        assert_eq!(
            (user.sip.username.as_str(), user.sip.auth_name.as_str()),
            ("grace", "grace")
        );
        assert_eq!(
            (&user.first_name, &user.voicemail),
            (&stored.first_name, &None)
        );

        let mut user = stored.clone();
        user.sip.auth_name = "auth-201".into();
        fill_from_cells(&mut user, &row(&[("sip_username", "grace")]));
        assert_eq!(user.sip.auth_name, "auth-201", "set on its own, it stays");
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
