//! `/templates`: uploaded templates, per model and per phone. The list
//! (what is uploaded, how many phones use it) and the editor of one slot:
//! the source with line numbers, Validate (a masked render for a chosen
//! phone, or where it fails, at line and column), Save (checked as the
//! API's upload is, refused while it fails), the diff against the previous
//! version and the built-in template, history with rollback, and removal.
//!
//! Slots are the API's ([`crate::admin::api::templates`]); every check and
//! write is its code, so the page and `PUT /api/v1/templates/...` agree.

use std::collections::HashSet;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::Signed;
use super::{Chrome, Shared, Ui, UiResult, html, html_with, query_value, see_other, show_time};
use crate::admin::api::devices::{not_found, parse_mac};
use crate::admin::api::templates::{
    Slot, deactivate, preview_source, put_version, resolve, roll_back,
};
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::catalog::PhoneModel;
use crate::domain::records::{Device, Invalid};
use crate::render::uploaded::{self, UploadFor};
use crate::store::TemplateHistory;

/// The most phones the editor's "Validate against" list offers: past this a
/// list is no help; a phone's own template page validates against it.
const PHONES_IN_PICKER: usize = 200;

/// Unchanged lines shown around each change of a diff.
const DIFF_CONTEXT: usize = 2;

/// The most cells a line diff's table may have (4 bytes each): two sources
/// that differ over more lines than this are shown as wholly replaced.
const MAX_DIFF_CELLS: usize = 1_000_000;

/// One uploaded template in the list.
struct UploadRow {
    /// The editor's path.
    link: String,
    /// "Every Yealink T46S", "Device 00:15:65:aa:bb:cc".
    scope: String,
    file: String,
    used_by: usize,
    /// The version in force, or none after a removal.
    current: Option<u32>,
    last_change: String,
}

/// A file a model's phones ask for, with its editor's path.
struct FileLink {
    name: String,
    link: String,
    /// Whether each phone gets its own (else one for the whole model).
    per_device: bool,
}

/// A model in the "new template" picker.
struct ModelOption {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "templates.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<UploadRow>,
    models: Vec<ModelOption>,
    /// The model picked for a new template, or the phone's.
    picked: String,
    /// What the files section is for: "Yealink T46S", "device 00:15:...".
    files_for: String,
    files: Vec<FileLink>,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// Show this model's files, to start a template for one.
    #[serde(default)]
    model: String,
    /// Show this phone's files.
    #[serde(default)]
    device: String,
}

/// `GET /templates[?model=ID|?device=MAC]`: the uploads, and the files of
/// a model or a phone to edit the template of.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<ListQuery>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let (stored, devices) =
        blocking(move || Ok((admin.store.templates()?, admin.store.devices()?))).await?;
    let rows = upload_rows(&ui.admin, &stored, &devices);
    let device = match query.device.trim() {
        "" => None,
        mac => {
            let mac = parse_mac(mac)?;
            let found = devices.iter().find(|d| d.mac == mac).cloned();
            Some(found.ok_or_else(|| not_found(mac))?)
        }
    };
    let picked = device
        .as_ref()
        .map_or_else(|| query.model.trim().to_string(), |d| d.model.clone());
    let (files_for, files) = match ui.admin.catalog.model(&picked) {
        Some(model) => file_links(model, device.as_ref()),
        None => (String::new(), Vec::new()),
    };
    let models = ui
        .admin
        .catalog
        .models()
        .iter()
        .map(|m| ModelOption {
            id: m.id.clone(),
            name: format!("{} {}", m.vendor, m.name),
        })
        .collect();
    html(ListPage {
        chrome: ui.chrome(&who, "templates", "Templates"),
        rows,
        models,
        picked,
        files_for,
        files,
    })
}

/// Each stored upload as the list shows it.
fn upload_rows(
    admin: &AdminState,
    stored: &[(String, TemplateHistory)],
    devices: &[Device],
) -> Vec<UploadRow> {
    let mut rows: Vec<UploadRow> = stored
        .iter()
        .filter_map(|(key, history)| {
            let (scope, path, file) = match uploaded::upload_for(key)? {
                UploadFor::Model { model, file } => {
                    let name = admin
                        .catalog
                        .model(model)
                        .map_or_else(|| model.to_string(), |m| format!("{} {}", m.vendor, m.name));
                    (format!("Every {name}"), format!("models/{model}"), file)
                }
                UploadFor::Device { mac, file } => (
                    format!("Device {}", mac.colon()),
                    format!("devices/{mac}"),
                    file,
                ),
            };
            let last = history.versions.last();
            Some(UploadRow {
                link: format!("/templates/{path}/{}", query_value(file)),
                scope,
                file: file.to_string(),
                used_by: used_by(key, stored, devices),
                current: history.current().map(|v| v.version),
                last_change: last.map_or_else(String::new, |v| {
                    format!("{} by {}", show_time(v.at), v.author)
                }),
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.scope, &a.file).cmp(&(&b.scope, &b.file)));
    rows
}

/// How many phones get their file from the upload at `key` while it is in
/// force: its phone, or every phone of its model without an upload of its
/// own for that file.
fn used_by(key: &str, stored: &[(String, TemplateHistory)], devices: &[Device]) -> usize {
    match uploaded::upload_for(key) {
        Some(UploadFor::Device { mac, .. }) => usize::from(devices.iter().any(|d| d.mac == mac)),
        Some(UploadFor::Model { model, file }) => {
            let own: HashSet<&str> = stored
                .iter()
                .filter(|(_, h)| h.current().is_some())
                .map(|(k, _)| k.as_str())
                .collect();
            devices
                .iter()
                .filter(|d| d.model == model)
                .filter(|d| !own.contains(uploaded::device_key(d.mac, file).as_str()))
                .count()
        }
        None => 0,
    }
}

/// The files of `model` (for `device`, when given: its own files there,
/// the ones common to the model for the model).
fn file_links(model: &PhoneModel, device: Option<&Device>) -> (String, Vec<FileLink>) {
    let links = model
        .files
        .iter()
        .map(|f| {
            let scope = match device {
                Some(d) if f.per_device => format!("devices/{}", d.mac),
                _ => format!("models/{}", model.id),
            };
            FileLink {
                name: f.name.clone(),
                link: format!("/templates/{scope}/{}", query_value(&f.name)),
                per_device: f.per_device,
            }
        })
        .collect();
    let files_for = match device {
        Some(d) => format!("device {}", d.mac.colon()),
        None => format!("{} {}", model.vendor, model.name),
    };
    (files_for, links)
}

/// A phone the editor can validate against.
struct PickerPhone {
    mac: String,
    label: String,
    selected: bool,
}

/// Where a template fails, as the editor shows it.
struct Fault {
    /// "line 2, column 4: " or empty when the renderer does not say.
    place: String,
    message: String,
    /// The edited source's line to mark, when the fault is in it.
    line: Option<usize>,
    column: Option<usize>,
}

/// One version in the history.
struct VersionRow {
    version: u32,
    author: String,
    at: String,
    note: String,
    current: bool,
}

/// One line of a diff: `' '` kept, `'-'` removed, `'+'` added, `'~'`
/// unchanged lines left out.
pub(super) struct DiffLine {
    sign: char,
    text: String,
}

/// A diff and what it compares.
struct Diff {
    title: String,
    lines: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "template.html")]
struct EditorPage {
    chrome: Chrome,
    /// This page's path, which its forms post to.
    action: String,
    scope: String,
    /// The phone's page, for a per-device slot.
    device_link: Option<String>,
    file: String,
    /// Where the source shown comes from.
    origin: &'static str,
    used_by: usize,
    current: Option<u32>,
    source: String,
    /// 1..=the source's lines, for the gutter.
    line_numbers: Vec<usize>,
    phones: Vec<PickerPhone>,
    /// Whether a sample phone is offered (a model-wide slot).
    sample: bool,
    per_device: bool,
    /// What was done, or why it was refused.
    notice: Option<Result<String, Fault>>,
    /// The masked render of the source shown, when it renders.
    preview: Option<String>,
    /// Where the render of the source shown fails, on opening the page.
    preview_fault: Option<Fault>,
    history: Vec<VersionRow>,
    /// Whether an upload is in force here (Remove is offered).
    removable: bool,
    diff: Option<Diff>,
    /// Whether there is a version before the current one to compare with.
    has_previous: bool,
}

impl EditorPage {
    /// The fault the page shows: the last action's, else the render's.
    fn shown_fault(&self) -> Option<&Fault> {
        match &self.notice {
            Some(Err(fault)) => Some(fault),
            _ => self.preview_fault.as_ref(),
        }
    }

    /// The line the page marks in the gutter (0: none).
    fn marked_line(&self) -> usize {
        self.shown_fault().and_then(|f| f.line).unwrap_or(0)
    }

    /// The textarea's height: the whole source, so the gutter beside it
    /// lines up without a script.
    fn rows(&self) -> usize {
        self.line_numbers.len().max(10) + 1
    }

    /// Whether the sample phone is the one rendered for.
    fn sample_picked(&self) -> bool {
        !self.phones.iter().any(|p| p.selected)
    }

    /// The marked column, for the script that puts the caret there.
    fn marked_column(&self) -> usize {
        self.shown_fault().and_then(|f| f.column).unwrap_or(0)
    }
}

type SlotPath = Path<(String, String, String)>;

#[derive(Deserialize)]
pub(super) struct EditorQuery {
    /// The phone to render for (a MAC; empty: the first, or a sample).
    #[serde(default)]
    device: String,
    /// `previous` or `builtin`: the diff to show.
    #[serde(default)]
    diff: String,
    /// What the last write did: `saved`, `rolled_back`, `removed`.
    #[serde(default)]
    done: String,
    /// The version the last write made.
    version: Option<u32>,
}

/// `GET /templates/{models|devices}/{id or mac}/{file}`: the editor.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path((scope, target, file)): SlotPath,
    Query(query): Query<EditorQuery>,
) -> UiResult<Response> {
    let notice = match (query.done.as_str(), query.version) {
        ("saved", Some(v)) => Some(Ok(format!(
            "Saved as version {v}: phones get it from now on."
        ))),
        ("rolled_back", Some(v)) => Some(Ok(format!(
            "Rolled back, as version {v}: phones get it from now on."
        ))),
        ("removed", _) => Some(Ok(
            "Removed: phones get the model's or the built-in template again.".to_string(),
        )),
        _ => None,
    };
    let view = View {
        draft: None,
        device: query.device,
        diff: query.diff,
        notice,
    };
    editor_page(&ui, &who, (scope, target, file), view).await
}

/// What the editor shows besides the slot itself.
struct View {
    /// The source being edited, when it is not the one in force.
    draft: Option<String>,
    /// The phone picked to render for.
    device: String,
    diff: String,
    notice: Option<Result<String, Fault>>,
}

/// Everything the editor reads, in one blocking call.
struct Loaded {
    slot: Slot,
    origin: &'static str,
    in_force: String,
    builtin: String,
    history: Option<TemplateHistory>,
    phones: Vec<Device>,
    used_by: usize,
    /// The phone rendered for, if not a sample.
    rendered_for: Option<Device>,
    render: ApiResult<Vec<u8>>,
}

fn load(
    admin: &AdminState,
    (scope, target, file): &(String, String, String),
    source: Option<&str>,
    device: &str,
) -> ApiResult<Loaded> {
    let slot = resolve(admin, scope, target, file)?;
    let stored = admin.store.templates()?;
    let in_force_at = |key: &str| {
        stored
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, h)| h.current())
            .map(|v| v.source.clone())
    };
    let builtin = admin
        .provisioner
        .renderer()
        .builtin_source(&slot.file.template)
        .unwrap_or_default()
        .to_string();
    let (origin, in_force) = match (in_force_at(&slot.key), in_force_at(&slot.model_key)) {
        (Some(own), _) => ("uploaded here", own),
        (None, Some(model)) if slot.device.is_some() => ("uploaded for the model", model),
        _ => ("built-in", builtin.clone()),
    };
    let history = stored
        .iter()
        .find(|(k, _)| *k == slot.key)
        .map(|(_, h)| h.clone());
    let devices = admin.store.devices()?;
    let phones: Vec<Device> = match &slot.device {
        Some(device) => vec![device.clone()],
        None => devices
            .iter()
            .filter(|d| d.model == slot.model_id)
            .take(PHONES_IN_PICKER)
            .cloned()
            .collect(),
    };
    let rendered_for = pick_phone(&slot, &phones, device)?;
    let render = preview_source(
        admin,
        &slot,
        source.unwrap_or(&in_force),
        rendered_for.as_ref(),
    );
    Ok(Loaded {
        used_by: used_by(&slot.key, &stored, &devices),
        slot,
        origin,
        in_force,
        builtin,
        history,
        phones,
        rendered_for,
        render,
    })
}

/// The phone to render for: the one asked for (it must be the slot's
/// phone or of its model), else the first offered; none means a sample.
fn pick_phone(slot: &Slot, phones: &[Device], asked: &str) -> ApiResult<Option<Device>> {
    if !slot.file.per_device {
        return Ok(None);
    }
    let asked = asked.trim();
    if asked.is_empty() {
        return Ok(phones.first().cloned());
    }
    if asked == "sample" && slot.device.is_none() {
        return Ok(None);
    }
    let mac = parse_mac(asked)?;
    if let Some(found) = phones.iter().find(|d| d.mac == mac) {
        return Ok(Some(found.clone()));
    }
    Err(Invalid::new(
        "device",
        format!("{mac} is not a phone this template serves"),
    )
    .into())
}

async fn editor_page(
    ui: &Ui,
    who: &Signed,
    params: (String, String, String),
    view: View,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let (draft, device) = (view.draft.clone(), view.device.clone());
    let loaded =
        blocking(move || load(&admin, &params, draft.as_deref(), &device).map(|l| (l, params)))
            .await;
    let (loaded, params) = loaded?;
    let source = view.draft.unwrap_or_else(|| loaded.in_force.clone());
    let (preview, preview_fault) = match loaded.render {
        Ok(body) => (Some(String::from_utf8_lossy(&body).into_owned()), None),
        Err(e) => (None, Some(fault(&loaded.slot, e)?)),
    };
    let failed = matches!(view.notice, Some(Err(_)));
    // A refused draft's render fails as its notice says: once is enough.
    let preview_fault = preview_fault.filter(|_| !failed);
    let versions = loaded
        .history
        .as_ref()
        .map(|h| h.versions.as_slice())
        .unwrap_or_default();
    let current = loaded
        .history
        .as_ref()
        .and_then(|h| h.current())
        .map(|v| v.version);
    let diff = match view.diff.as_str() {
        "previous" => match versions {
            [.., before, last] => Some(Diff {
                title: format!("Version {} to {}", before.version, last.version),
                lines: line_diff(&before.source, &last.source),
            }),
            _ => None,
        },
        "builtin" => Some(Diff {
            title: format!("The built-in template to the one {}", loaded.origin),
            lines: line_diff(&loaded.builtin, &loaded.in_force),
        }),
        _ => None,
    };
    let rendered_for = loaded.rendered_for.as_ref().map(|d| d.mac);
    let slot = &loaded.slot;
    let scope = match &slot.device {
        Some(device) => format!("Device {}", device.mac.colon()),
        None => format!("Every {}", model_name(ui, &slot.model_id)),
    };
    let page = EditorPage {
        chrome: ui.chrome(who, "templates", format!("Template {}", slot.file.name)),
        action: editor_path(&params),
        scope,
        device_link: slot.device.as_ref().map(|d| format!("/devices/{}", d.mac)),
        file: slot.file.name.clone(),
        origin: loaded.origin,
        used_by: loaded.used_by,
        current,
        line_numbers: (1..=source.split('\n').count()).collect(),
        source,
        phones: loaded
            .phones
            .iter()
            .map(|d| PickerPhone {
                mac: d.mac.to_string(),
                label: match &d.description {
                    Some(what) => format!("{} ({what})", d.mac.colon()),
                    None => d.mac.colon(),
                },
                selected: Some(d.mac) == rendered_for,
            })
            .collect(),
        sample: slot.device.is_none(),
        per_device: slot.file.per_device,
        notice: view.notice,
        preview,
        preview_fault,
        history: versions
            .iter()
            .rev()
            .map(|v| VersionRow {
                version: v.version,
                author: v.author.clone(),
                at: show_time(v.at),
                note: v.note.clone().unwrap_or_default(),
                current: Some(v.version) == current,
            })
            .collect(),
        removable: current.is_some(),
        has_previous: versions.len() > 1,
        diff,
    };
    html_with(super::status_of(failed), page)
}

/// The editor's path for a slot's scope, target and file.
fn editor_path((scope, target, file): &(String, String, String)) -> String {
    format!(
        "/templates/{scope}/{}/{}",
        query_value(target),
        query_value(file)
    )
}

fn model_name(ui: &Ui, id: &str) -> String {
    ui.admin
        .catalog
        .model(id)
        .map_or_else(|| id.to_string(), |m| format!("{} {}", m.vendor, m.name))
}

/// Where a render failed, for the page; a failure that is not the
/// template's (the store) is the page's own.
fn fault(slot: &Slot, error: ApiError) -> Result<Fault, ApiError> {
    let ApiError::Template {
        message,
        line,
        column,
    } = error
    else {
        return Err(error);
    };
    let place = match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    };
    // The renderer names the template that failed; only a fault in the
    // edited one has a line of this source to mark.
    let here = message.contains(&format!("{}: ", slot.key));
    Ok(Fault {
        place,
        line: line.filter(|_| here),
        column: column.filter(|_| here),
        message,
    })
}

#[derive(Deserialize)]
pub(super) struct EditorForm {
    /// `validate`, `save`, `rollback` or `remove`.
    action: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    device: String,
    /// The version to roll back to.
    version: Option<u32>,
}

/// `POST /templates/{models|devices}/{id or mac}/{file}`: validate, save,
/// roll back or remove.
pub(super) async fn submit(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(params): SlotPath,
    Form(form): Form<EditorForm>,
) -> UiResult<Response> {
    let source = source_of(&form.source);
    let view = |notice| View {
        draft: Some(source.clone()),
        device: form.device.clone(),
        diff: String::new(),
        notice,
    };
    let written = match form.action.as_str() {
        "validate" => {
            let validated = validate(&ui, &params, &source, &form.device).await?;
            return editor_page(&ui, &who, params, view(Some(validated))).await;
        }
        "save" => {
            let posted = source.clone();
            write(&ui, &who, &params, move |admin, actor, slot| {
                put_version(admin, actor, slot, posted, None)
            })
            .await?
        }
        "rollback" => {
            let wanted = form
                .version
                .ok_or_else(|| Invalid::new("version", "pick a version to roll back to"))
                .map_err(ApiError::from)?;
            write(&ui, &who, &params, move |admin, actor, slot| {
                roll_back(admin, actor, slot, wanted)
            })
            .await?
        }
        "remove" => {
            write(&ui, &who, &params, |admin, actor, slot| {
                deactivate(admin, actor, slot).map(|()| 0)
            })
            .await?
        }
        other => {
            return Err(ApiError::BadRequest(format!("no action '{other}'")).into());
        }
    };
    let path = editor_path(&params);
    match written {
        Ok(version) => {
            let done = match form.action.as_str() {
                "save" => format!("saved&version={version}"),
                "rollback" => format!("rolled_back&version={version}"),
                _ => "removed".to_string(),
            };
            Ok(see_other(&format!(
                "{path}?done={done}&device={}",
                query_value(&form.device)
            )))
        }
        Err(refused) => {
            let slot = {
                let admin = Arc::clone(&ui.admin);
                let p = params.clone();
                blocking(move || resolve(&admin, &p.0, &p.1, &p.2)).await?
            };
            let notice = Err(fault(&slot, refused)?);
            editor_page(&ui, &who, params, view(Some(notice))).await
        }
    }
}

/// A posted source as stored: browsers post a textarea's line ends as CRLF.
fn source_of(posted: &str) -> String {
    posted.replace("\r\n", "\n")
}

/// Runs a write to the slot (in a blocking task, as the API does); gives
/// the version it made (0 for a removal), or why it was refused.
async fn write(
    ui: &Ui,
    who: &Signed,
    params: &(String, String, String),
    action: impl FnOnce(&AdminState, &str, &Slot) -> ApiResult<u32> + Send + 'static,
) -> UiResult<ApiResult<u32>> {
    let admin = Arc::clone(&ui.admin);
    let actor = who.actor.clone();
    let p = params.clone();
    let outcome = blocking(move || {
        let slot = resolve(&admin, &p.0, &p.1, &p.2)?;
        Ok(action(&admin, &actor, &slot))
    })
    .await?;
    if let Ok(version) = outcome {
        tracing::info!(template = %params.2, version, actor = %who.actor, "template changed from the web UI");
    }
    Ok(outcome)
}

/// What validating `source` for the phone picked came to: that it renders,
/// or where it fails.
async fn validate(
    ui: &Ui,
    params: &(String, String, String),
    source: &str,
    device: &str,
) -> UiResult<Result<String, Fault>> {
    let admin = Arc::clone(&ui.admin);
    let (p, source, device) = (params.clone(), source.to_string(), device.to_string());
    let (slot, rendered_for, render) = blocking(move || {
        let loaded = load(&admin, &p, Some(&source), &device)?;
        Ok((loaded.slot, loaded.rendered_for, loaded.render))
    })
    .await?;
    let whom = match rendered_for {
        Some(device) => format!("phone {}", device.mac.colon()),
        None if slot.file.per_device => "a sample phone".to_string(),
        None => "every phone of the model".to_string(),
    };
    Ok(match render {
        Ok(_) => Ok(format!("It renders for {whom}. Not saved yet.")),
        Err(e) => Err(fault(&slot, e)?),
    })
}

/// The lines of `new` against `old`, by their longest common subsequence,
/// with [`DIFF_CONTEXT`] unchanged lines around each change.
pub(super) fn line_diff(old: &str, new: &str) -> Vec<DiffLine> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut all: Vec<(char, &str)> = a[..prefix].iter().map(|l| (' ', *l)).collect();
    all.extend(middle_diff(mid_a, mid_b));
    all.extend(a[a.len() - suffix..].iter().map(|l| (' ', *l)));
    with_context(&all)
}

/// The changed middle of two sources, line by line.
fn middle_diff<'s>(a: &[&'s str], b: &[&'s str]) -> Vec<(char, &'s str)> {
    let (n, m) = (a.len(), b.len());
    let removed = a.iter().map(|l| ('-', *l));
    let added = b.iter().map(|l| ('+', *l));
    if (n + 1).saturating_mul(m + 1) > MAX_DIFF_CELLS {
        return removed.chain(added).collect();
    }
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = m + 1;
    let mut common = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i * width + j] = if a[i] == b[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut lines) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            lines.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || common[(i + 1) * width + j] >= common[i * width + j + 1]) {
            // On a tie the removal comes first, as diffs show a change.
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    lines
}

/// The changes with [`DIFF_CONTEXT`] lines around them; each run of other
/// unchanged lines becomes one `'~'` line saying how many.
fn with_context(all: &[(char, &str)]) -> Vec<DiffLine> {
    let changed: Vec<usize> = (0..all.len()).filter(|&i| all[i].0 != ' ').collect();
    let near = |i: usize| {
        let at = changed.partition_point(|&c| c < i);
        let after = changed.get(at).is_some_and(|&c| c - i <= DIFF_CONTEXT);
        let before = at > 0 && i - changed[at - 1] <= DIFF_CONTEXT;
        after || before
    };
    let mut lines = Vec::new();
    let mut skipped = 0;
    for (i, (sign, text)) in all.iter().enumerate() {
        if *sign == ' ' && !near(i) {
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            lines.push(unchanged(skipped));
            skipped = 0;
        }
        lines.push(DiffLine {
            sign: *sign,
            text: (*text).to_string(),
        });
    }
    if skipped > 0 {
        lines.push(unchanged(skipped));
    }
    lines
}

fn unchanged(count: usize) -> DiffLine {
    DiffLine {
        sign: '~',
        text: format!("{count} unchanged line(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signs(lines: &[DiffLine]) -> String {
        lines.iter().map(|l| l.sign).collect()
    }

    #[test]
    fn a_line_diff_shows_what_changed_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\n";
        let diff = line_diff(old, new);
        assert_eq!(signs(&diff), "~  -+   +");
        assert_eq!(diff[0].text, "2 unchanged line(s)");
        assert_eq!((diff[3].text.as_str(), diff[4].text.as_str()), ("e", "E"));
    }

    #[test]
    fn identical_sources_have_no_change() {
        let diff = line_diff("x\ny\n", "x\ny\n");
        assert!(diff.iter().all(|l| l.sign == '~'));
    }

    #[test]
    fn a_diff_too_large_to_align_is_a_replacement() {
        let old: String = (0..1200).map(|i| format!("a{i}\n")).collect();
        let new: String = (0..1200).map(|i| format!("b{i}\n")).collect();
        let diff = line_diff(&old, &new);
        assert_eq!(diff.len(), 2400);
        assert!(diff[..1200].iter().all(|l| l.sign == '-'));
    }
}
