//! `/devices/{mac}`: one phone: when it was last seen and whether it has
//! its current file, resync and reboot, and its tabs: Keys (the
//! [`super::keys`] editor), Lines, Rendered files (masked).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::keys::Editor;
use super::session::Signed;
use super::{Chrome, Shared, Ui, UiResult, html_with, show_time, status_of};
use crate::admin::api::devices::{has_current_file, not_found, parse_mac};
use crate::admin::api::resync::resync_device;
use crate::admin::api::{ApiError, blocking};
use crate::admin::resync::ResyncOutcome;
use crate::domain::mac::Mac;
use crate::domain::records::Device;
use crate::provision::Requester;

/// What the server last saw of the phone.
struct LastSeen {
    at: String,
    ip: String,
    user_agent: String,
    firmware: String,
    file: String,
}

/// A line of the phone.
struct LineView {
    number: usize,
    user: u64,
    extension: String,
    name: String,
    label: String,
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
    lines: Vec<LineView>,
    files: Option<FilesTab>,
}

#[derive(Deserialize)]
pub(super) struct TabQuery {
    #[serde(default)]
    tab: String,
    file: Option<String>,
}

/// `GET /devices/{mac}?tab=keys|lines|files[&file=NAME]`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    Query(query): Query<TabQuery>,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let view = match query.tab.as_str() {
        "lines" => Tab::Lines,
        "files" => Tab::Files(query.file),
        _ => Tab::Keys(None),
    };
    device_page(&ui, &who, mac, view, None).await
}

/// Which tab the page opens on, with what it needs.
pub(super) enum Tab {
    /// The key editor: the stored keys, or a draft being edited.
    Keys(Option<Editor>),
    Lines,
    /// The rendered files, one of them shown.
    Files(Option<String>),
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
        lines: Vec::new(),
        files: None,
    };
    match tab {
        Tab::Keys(draft) => {
            page.editor = Some(match draft {
                Some(draft) => draft,
                None => Editor::of_device(ui, &device)?,
            });
        }
        Tab::Lines => {
            page.tab = "lines";
            page.lines = lines_of(ui, &device)?;
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
            user: line.user,
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
