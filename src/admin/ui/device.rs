//! `/devices/{mac}`: one phone: when it was last seen and whether it has
//! its current file, resync and reboot, and its tabs: Keys (the
//! [`super::keys`] editor), Lines (edited through the API's device check),
//! Settings and History ([`super::device_tabs`]), Template (which files
//! use an uploaded template), Rendered files (masked).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::device_tabs::{HistoryEntry, SettingRow, history_of, settings_of};
use super::keys::Editor;
use super::session::{CSRF_FIELD, Signed};
use super::{Chrome, Shared, Ui, UiError, UiResult, html_with, show_time, status_of};
use crate::admin::api::devices::{has_current_file, not_found, parse_mac, update_device};
use crate::admin::api::resync::resync_device;
use crate::admin::api::{ApiError, ApiResult, blocking};
use crate::admin::resync::ResyncOutcome;
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, LineAssignment};
use crate::provision::Requester;
use crate::render::uploaded;

/// What the server last saw of the phone.
struct LastSeen {
    at: String,
    ip: String,
    user_agent: String,
    firmware: String,
    file: String,
}

/// A line of the phone, or a blank one to add.
struct LineView {
    number: usize,
    /// The user's id; none on a blank or refused line.
    user: Option<u64>,
    extension: String,
    name: String,
    label: String,
}

/// The Lines tab: the phone's lines, and room for one more if it takes it.
struct LinesTab {
    lines: Vec<LineView>,
    /// How many SIP accounts the model has.
    accounts: u16,
}

/// A file of the model, and which template renders it for this phone.
struct TemplateRow {
    /// As the phone asks for it.
    file: String,
    /// As the descriptor and the template editor's URLs name it.
    descriptor_name: String,
    /// "this phone's upload (version 2)", "the model's upload", "built-in".
    in_force: String,
    /// Whether an upload (the phone's or the model's) renders it.
    custom: bool,
    /// Whether each phone has its own (else the file is common to the
    /// model, and only a model-wide upload can change it).
    per_device: bool,
}

/// The Rendered files tab: the model's files, and the one shown.
struct FilesTab {
    names: Vec<String>,
    shown: Option<String>,
    /// The file, masked, or why it does not render.
    body: Result<String, String>,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    chrome: Chrome,
    mac: Mac,
    model: String,
    /// The catalog's id of the model, as template URLs name it.
    model_id: String,
    description: String,
    /// The named key layout the phone follows: its keys sit under the
    /// phone's own, which the Keys tab edits.
    layout: Option<String>,
    last_seen: Option<LastSeen>,
    /// Whether the phone's last file is the one it would get now.
    current: Option<bool>,
    can_resync: bool,
    can_reboot: bool,
    /// The outcome of the last action, or why it failed.
    notice: Option<Result<String, String>>,
    tab: &'static str,
    editor: Option<Editor>,
    lines: Option<LinesTab>,
    settings: Vec<SettingRow>,
    templates: Vec<TemplateRow>,
    history: Vec<HistoryEntry>,
    files: Option<FilesTab>,
}

#[derive(Deserialize)]
pub(super) struct TabQuery {
    #[serde(default)]
    tab: String,
    file: Option<String>,
}

/// `GET /devices/{mac}?tab=keys|lines|settings|template|files|history[&file=NAME]`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    Query(query): Query<TabQuery>,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let view = match query.tab.as_str() {
        "lines" => Tab::Lines(None),
        "settings" => Tab::Settings(None),
        "template" => Tab::Template,
        "files" => Tab::Files(query.file),
        "history" => Tab::History,
        _ => Tab::Keys(None),
    };
    device_page(&ui, &who, mac, view, None).await
}

/// Which tab the page opens on, with what it needs.
pub(super) enum Tab {
    /// The key editor: the stored keys, or a draft being edited.
    Keys(Option<Box<Editor>>),
    /// The lines: the stored ones, or a refused edit shown again.
    Lines(Option<Vec<PostedLine>>),
    /// The settings: stored, or a refused device-level edit shown again.
    Settings(Option<Vec<(String, String)>>),
    Template,
    /// The rendered files, one of them shown.
    Files(Option<String>),
    History,
}

/// The device page on `tab`, with `notice` above it (422 when it says
/// something failed).
pub(super) async fn device_page(
    ui: &Ui,
    who: &Signed,
    mac: Mac,
    tab: Tab,
    notice: Option<Result<String, String>>,
) -> UiResult<Response> {
    let device = ui.admin.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    let model = ui.admin.catalog.model(&device.model);
    let admin = Arc::clone(&ui.admin);
    // Renders the phone's last file to compare it with what it would get.
    let (sighting, current) = blocking(move || {
        admin.provisioner.flush_sightings()?;
        let sighting = admin.store.sighting(mac)?;
        let current = sighting
            .as_ref()
            .and_then(|seen| has_current_file(&admin, mac, seen));
        Ok((sighting, current))
    })
    .await?;
    let failed = matches!(notice, Some(Err(_)));
    let mut page = DevicePage {
        chrome: ui.chrome(who, "devices", format!("Device {}", mac.colon())),
        mac,
        model: model.map_or_else(
            || device.model.clone(),
            |m| format!("{} {}", m.vendor, m.name),
        ),
        model_id: device.model.clone(),
        description: device.description.clone().unwrap_or_default(),
        layout: device.layout.clone(),
        last_seen: sighting.map(|s| LastSeen {
            at: show_time(s.at),
            ip: s.ip.to_string(),
            user_agent: s.user_agent.unwrap_or_default(),
            firmware: s.firmware.unwrap_or_default(),
            file: s.file,
        }),
        current,
        can_resync: model.is_some_and(|m| m.resync_event.is_some()),
        can_reboot: model.is_some_and(|m| m.reboot_event.is_some()),
        notice,
        tab: "keys",
        editor: None,
        lines: None,
        settings: Vec::new(),
        templates: Vec::new(),
        history: Vec::new(),
        files: None,
    };
    match tab {
        Tab::Keys(draft) => {
            page.editor = Some(match draft {
                Some(draft) => *draft,
                None => Editor::of_device(ui, &device)?,
            });
        }
        Tab::Lines(posted) => {
            page.tab = "lines";
            page.lines = Some(LinesTab {
                lines: match posted {
                    Some(posted) => posted_lines(ui, posted)?,
                    None => lines_of(ui, &device)?,
                },
                accounts: model.map_or(0, |m| m.accounts),
            });
        }
        Tab::Settings(posted) => {
            page.tab = "settings";
            page.settings = settings_of(ui, &device, posted)?;
        }
        Tab::Template => {
            page.tab = "template";
            page.templates = templates_of(ui, &device)?;
        }
        Tab::History => {
            page.tab = "history";
            let admin = Arc::clone(&ui.admin);
            let shown = device.clone();
            page.history = blocking(move || history_of(&admin.store, &shown)).await?;
        }
        Tab::Files(shown) => {
            page.tab = "files";
            page.files = Some(files_tab(ui, &device, shown).await?);
        }
    }
    html_with(status_of(failed), page)
}

fn lines_of(ui: &Ui, device: &Device) -> Result<Vec<LineView>, ApiError> {
    let mut lines = Vec::new();
    for (i, line) in device.lines.iter().enumerate() {
        let user = ui.admin.store.user(line.user)?;
        lines.push(LineView {
            number: i + 1,
            user: Some(line.user),
            extension: user
                .as_ref()
                .map(|u| u.extension.clone())
                .unwrap_or_default(),
            name: user.as_ref().map(|u| u.display_name()).unwrap_or_default(),
            label: line.label.clone().unwrap_or_default(),
        });
    }
    Ok(lines)
}

/// A refused lines form, shown again as it was posted.
fn posted_lines(ui: &Ui, posted: Vec<PostedLine>) -> Result<Vec<LineView>, ApiError> {
    let mut lines = Vec::new();
    for (i, line) in posted.into_iter().enumerate() {
        let user = ui.admin.store.user_by_extension(line.extension.trim())?;
        lines.push(LineView {
            number: i + 1,
            user: user.as_ref().map(|u| u.id),
            name: user.map(|u| u.display_name()).unwrap_or_default(),
            extension: line.extension,
            label: line.label,
        });
    }
    Ok(lines)
}

/// Each of the model's files with the template that renders it for this
/// phone: its own upload, the model's, or the built-in one.
fn templates_of(ui: &Ui, device: &Device) -> Result<Vec<TemplateRow>, ApiError> {
    let Some(model) = ui.admin.catalog.model(&device.model) else {
        return Ok(Vec::new());
    };
    let store = &ui.admin.store;
    let mut rows = Vec::new();
    for file in &model.files {
        let version = |key: String| -> Result<Option<u32>, ApiError> {
            Ok(store
                .template(&key)?
                .and_then(|h| h.current().map(|v| v.version)))
        };
        let in_force = match (
            version(uploaded::device_key(device.mac, &file.name))?,
            version(uploaded::model_key(&model.id, &file.name))?,
        ) {
            (Some(v), _) => format!("this phone's upload (version {v})"),
            (None, Some(v)) => format!("the {}'s upload (version {v})", model.name),
            (None, None) => format!("built-in ({})", file.template),
        };
        rows.push(TemplateRow {
            file: file.name.replace("{mac}", &device.mac.lower()),
            descriptor_name: file.name.clone(),
            custom: !in_force.starts_with("built-in"),
            per_device: file.per_device,
            in_force,
        });
    }
    Ok(rows)
}

/// The model's files by name, and `shown` rendered as the admin preview
/// renders it for a token that may not see secrets.
async fn files_tab(ui: &Ui, device: &Device, shown: Option<String>) -> UiResult<FilesTab> {
    let names: Vec<String> = ui
        .admin
        .catalog
        .model(&device.model)
        .map(|m| {
            m.files
                .iter()
                .map(|f| f.name.replace("{mac}", &device.mac.lower()))
                .collect()
        })
        .unwrap_or_default();
    let Some(name) = shown.filter(|n| names.contains(n)) else {
        return Ok(FilesTab {
            names,
            shown: None,
            body: Ok(String::new()),
        });
    };
    let admin = Arc::clone(&ui.admin);
    let (mac, file) = (device.mac, name.clone());
    let rendered = blocking(move || {
        Ok(admin
            .provisioner
            .preview(mac, &file, &Requester::masked_preview()))
    })
    .await?;
    let body = rendered
        .map(|f| String::from_utf8_lossy(&f.body).into_owned())
        .map_err(|e| super::UiError::from(ApiError::from(e)).to_string());
    Ok(FilesTab {
        names,
        shown: Some(name),
        body,
    })
}

#[derive(Deserialize)]
pub(super) struct ResyncForm {
    /// `resync` or `reboot`.
    action: String,
}

/// `POST /devices/{mac}/resync`: a resync or reboot NOTIFY, and its outcome.
pub(super) async fn resync(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    Form(form): Form<ResyncForm>,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let reboot = form.action == "reboot";
    let notice = resync_notice(&ui, mac, reboot, "").await;
    device_page(&ui, &who, mac, Tab::Keys(None), Some(notice)).await
}

/// A line as the Lines form posts it.
pub(super) struct PostedLine {
    extension: String,
    label: String,
}

/// `POST /devices/{mac}/lines`: the lines form, each line posting
/// `l_user` (an extension) and `l_label`; `remove=N` drops line N. Saved
/// through the API's device update, so its checks (the model's accounts,
/// keys on a line that would go away) apply.
pub(super) async fn lines(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    body: axum::body::Bytes,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let mut posted: Vec<PostedLine> = Vec::new();
    let mut remove = None;
    for (name, value) in form_urlencoded::parse(&body) {
        let value = value.into_owned();
        match name.as_ref() {
            "l_user" => posted.push(PostedLine {
                extension: value,
                label: String::new(),
            }),
            "l_label" => {
                posted
                    .last_mut()
                    .ok_or_else(|| {
                        ApiError::BadRequest("the lines form is incomplete: reload the page".into())
                    })?
                    .label = value;
            }
            "remove" => remove = value.parse::<usize>().ok(),
            "action" | CSRF_FIELD => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected field '{other}' in the lines form"
                ))
                .into());
            }
        }
    }
    if let Some(n) = remove.filter(|n| (1..=posted.len()).contains(n)) {
        posted.remove(n - 1);
    }
    posted.retain(|l| !l.extension.trim().is_empty());
    let lines = assignments(&ui, &posted);
    let edit = lines.map(|lines| move |current: Device| Device { lines, ..current });
    let tabs = (Tab::Lines(None), Tab::Lines(Some(posted)));
    save_and_show(&ui, &who, mac, edit, "Lines saved.", tabs).await
}

/// Stores `edit` of the device through the API's update (and its checks),
/// then shows the page on the first of `tabs` saying `done`, or, refused,
/// on the second (the form as posted) saying why; nothing is stored then.
pub(super) async fn save_and_show(
    ui: &Ui,
    who: &Signed,
    mac: Mac,
    edit: ApiResult<impl FnOnce(Device) -> Device>,
    done: &str,
    (saved, refused): (Tab, Tab),
) -> UiResult<Response> {
    let stored = match edit {
        Ok(edit) => {
            update_device(&ui.admin, &who.actor, mac, |current| {
                Ok(edit(current.clone()))
            })
            .await
        }
        Err(invalid) => Err(invalid),
    };
    match stored {
        Ok(_) => device_page(ui, who, mac, saved, Some(Ok(done.to_string()))).await,
        Err(why) => {
            let notice = Some(Err(format!("Not saved: {}", UiError::from(why))));
            device_page(ui, who, mac, refused, notice).await
        }
    }
}

/// The posted lines as the device stores them: each extension's user.
fn assignments(ui: &Ui, posted: &[PostedLine]) -> ApiResult<Vec<LineAssignment>> {
    posted
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let extension = line.extension.trim();
            let user = ui
                .admin
                .store
                .user_by_extension(extension)?
                .ok_or_else(|| {
                    ApiError::Conflict(Invalid::new(
                        format!("lines[{i}].user"),
                        format!("no user has extension {extension}"),
                    ))
                })?;
            Ok(LineAssignment {
                user: user.id,
                label: super::non_empty(&line.label),
            })
        })
        .collect()
}

/// What sending the phone its resync (or reboot) came to, after `done`
/// (what was done before, or empty).
pub(super) async fn resync_notice(
    ui: &Ui,
    mac: Mac,
    reboot: bool,
    done: &str,
) -> Result<String, String> {
    let what = if reboot { "Reboot" } else { "Resync" };
    match resync_device(&ui.admin, mac, None, reboot).await {
        Ok(outcome) => Ok(format!("{done}{what} {}", answered(&outcome))),
        Err(refused) => Err(format!(
            "{done}{what} not sent: {}",
            super::UiError::from(refused)
        )),
    }
}

fn answered(outcome: &ResyncOutcome) -> String {
    match &outcome.answer {
        Some(answer) => format!("sent to {}: the phone answered {answer}.", outcome.sent_to),
        None => format!(
            "sent to {}: no answer within 2 s (over UDP it may still have worked).",
            outcome.sent_to
        ),
    }
}
