//! `/layouts`: named key layouts ("Reception", "Sales") for one phone
//! model: the list (with how many phones follow each), a new one, its keys
//! in the device page's editor ([`super::keys`]), deleting it (refused
//! while a phone follows it), and applying it to phones of its model
//! through the devices list's bulk action, which says how many first.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::devices::{ModelChoice, model_choices};
use super::keys::{Editor, Posted, TargetQuery, suggest};
use super::session::Signed;
use super::{Chrome, Shared, Ui, UiError, UiResult, html, html_with, non_empty, status_of};
use crate::admin::api::devices::{check, not_found as device_not_found};
use crate::admin::api::layouts::{
    create_layout, not_found, on_phone, remove_layout, replace_layout,
};
use crate::admin::api::resync::{Paced, resync_paced};
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, Layout};
use crate::store::Change;

/// A layout's line in the list.
struct Row {
    name: String,
    model: String,
    keys: usize,
    followers: usize,
}

#[derive(Template)]
#[template(path = "layouts.html")]
struct LayoutsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    models: Vec<ModelChoice>,
    fields: NewLayout,
    error: Option<String>,
}

/// What the new-layout form asks.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NewLayout {
    name: String,
    model: String,
    #[serde(default)]
    description: String,
}

/// `GET /layouts`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    layouts_page(&ui, &who, NewLayout::default(), None).await
}

/// The list, with the new-layout form holding `fields` and why it was
/// refused, if it was (then 422).
async fn layouts_page(
    ui: &Ui,
    who: &Signed,
    fields: NewLayout,
    error: Option<String>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    // Counts each layout's followers over every device.
    let rows = blocking(move || {
        let devices = admin.store.devices()?;
        Ok(admin
            .store
            .layouts()?
            .into_iter()
            .map(|layout| Row {
                followers: devices
                    .iter()
                    .filter(|d| d.layout.as_deref() == Some(layout.name.as_str()))
                    .count(),
                keys: layout.keys.len(),
                name: layout.name,
                model: layout.model,
            })
            .collect())
    })
    .await?;
    let failed = error.is_some();
    let page = LayoutsPage {
        chrome: ui.chrome(who, "layouts", "Key layouts"),
        rows,
        models: model_choices(&ui.admin),
        fields,
        error,
    };
    html_with(status_of(failed), page)
}

/// `POST /layouts`: a new layout with no key yet, then its page to add them.
pub(super) async fn create(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(fields): Form<NewLayout>,
) -> UiResult<Response> {
    let layout = Layout {
        name: fields.name.trim().to_string(),
        model: fields.model.trim().to_string(),
        description: non_empty(&fields.description),
        keys: Vec::new(),
    };
    match create_layout(&ui.admin, &who.actor, layout).await {
        Ok(saved) => Ok(super::see_other(&format!("/layouts/{}", saved.name))),
        Err(refused) => {
            let error = UiError::from(refused).to_string();
            layouts_page(&ui, &who, fields, Some(error)).await
        }
    }
}

#[derive(Template)]
#[template(path = "layout.html")]
struct LayoutPage {
    chrome: Chrome,
    name: String,
    model: String,
    description: String,
    /// The phones that follow it, by MAC.
    followers: Vec<Mac>,
    /// How many of its keys sit on modules, which the editor leaves as
    /// they are.
    module_keys: usize,
    notice: Option<Result<String, String>>,
    editor: Editor,
}

/// `GET /layouts/{name}`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let layout = stored(&ui.admin, &name)?;
    layout_page(&ui, &who, &layout, None, None)
}

/// Layout `name`, or not found.
fn stored(admin: &AdminState, name: &str) -> ApiResult<Layout> {
    Ok(admin.store.layout(name)?.ok_or_else(|| not_found(name))?)
}

/// The layout's page: its editor showing `draft` (else its stored keys),
/// and `notice` above it (422 when it says something failed).
fn layout_page(
    ui: &Ui,
    who: &Signed,
    layout: &Layout,
    draft: Option<Editor>,
    notice: Option<Result<String, String>>,
) -> UiResult<Response> {
    let editor = match draft {
        Some(editor) => editor,
        None => editor_of(ui, layout, &on_phone(layout), None, false)?,
    };
    let failed = matches!(notice, Some(Err(_)));
    let page = LayoutPage {
        chrome: ui.chrome(who, "layouts", format!("Layout {}", layout.name)),
        name: layout.name.clone(),
        model: ui.admin.catalog.model(&layout.model).map_or_else(
            || layout.model.clone(),
            |m| format!("{} {}", m.vendor, m.name),
        ),
        description: layout.description.clone().unwrap_or_default(),
        followers: ui
            .admin
            .store
            .devices_with_layout(&layout.name)?
            .iter()
            .map(|d| d.mac)
            .collect(),
        module_keys: layout.keys.iter().filter(|k| k.module.is_some()).count(),
        notice,
        editor,
    };
    html_with(status_of(failed), page)
}

/// The key editor over `shown` (the layout as a device), posting to the
/// layout's page.
fn editor_of(
    ui: &Ui,
    layout: &Layout,
    shown: &Device,
    moved: Option<(usize, &'static str)>,
    unsaved: bool,
) -> ApiResult<Editor> {
    let mut editor = Editor::build(ui, shown, moved, unsaved)?;
    editor.has_tools = false;
    editor.action = format!("/layouts/{}", layout.name);
    editor.targets = format!("/layouts/{}/targets", layout.name);
    editor.frame = "layout-body";
    Ok(editor)
}

/// `POST /layouts/{name}`: the key editor's move (answered with the draft)
/// or save (and resync of every phone following it).
pub(super) async fn submit(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let layout = stored(&ui.admin, &name)?;
    let (draft, posted, _) = Posted::draft(&ui, &body, on_phone(&layout))?;
    if let Some(moved) = posted.moving() {
        let editor = editor_of(&ui, &layout, &draft, Some(moved), true)?;
        return layout_page(&ui, &who, &layout, Some(editor), None);
    }
    // The editor shows the phone's own keys; those on modules stay.
    let mut keys = draft.keys.clone();
    keys.extend(layout.keys.iter().filter(|k| k.module.is_some()).cloned());
    let edited = Layout {
        keys,
        ..layout.clone()
    };
    let saved = match replace_layout(&ui.admin, &who.actor, &name, edited).await {
        Ok(saved) => saved,
        Err(refused) => {
            let editor = editor_of(&ui, &layout, &draft, None, true)?;
            let notice = Err(format!("Not saved: {}", UiError::from(refused)));
            return layout_page(&ui, &who, &layout, Some(editor), Some(notice));
        }
    };
    let notice = if posted.resyncs() {
        resync_followers(&ui, &who, &saved).await
    } else {
        Ok("Saved: every phone following it gets the new keys with its next file.".into())
    };
    layout_page(&ui, &who, &saved, None, Some(notice))
}

/// Sends every phone following `layout` a paced resync; what was queued.
async fn resync_followers(ui: &Ui, who: &Signed, layout: &Layout) -> Result<String, String> {
    let refused = |e: ApiError| format!("Saved; resync not sent: {}", UiError::from(e));
    let admin = Arc::clone(&ui.admin);
    let name = layout.name.clone();
    let followers = blocking(move || {
        admin.provisioner.flush_sightings()?;
        Ok(admin.store.devices_with_layout(&name)?)
    })
    .await
    .map_err(refused)?;
    let target = format!("resync/layout:{}", layout.name);
    let plan = resync_paced(&ui.admin, &who.actor, followers, Paced::default(), target)
        .await
        .map_err(refused)?;
    Ok(format!(
        "Saved. Resync queued for {} phone(s); {} never seen.",
        plan.queued, plan.never_seen
    ))
}

/// `GET /layouts/{name}/targets`: the key editor's picker, for a layout.
pub(super) async fn targets(
    State(ui): Shared,
    Extension(_who): Extension<Signed>,
    Path(name): Path<String>,
    Query(query): Query<TargetQuery>,
) -> UiResult<Response> {
    let layout = stored(&ui.admin, &name)?;
    suggest(&ui, &on_phone(&layout), &query)
}

/// `POST /layouts/{name}/delete`: refused, with the API's reason, while a
/// phone follows it.
pub(super) async fn delete(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let layout = stored(&ui.admin, &name)?;
    match remove_layout(&ui.admin, &who.actor, &name).await {
        Ok(()) => Ok(super::see_other("/layouts")),
        Err(refused) => {
            let notice = Err(format!("Not deleted: {}", UiError::from(refused)));
            layout_page(&ui, &who, &layout, None, Some(notice))
        }
    }
}

/// A phone the layout may be applied to.
struct Candidate {
    mac: Mac,
    description: String,
    /// The layout it follows now, if any.
    follows: String,
}

#[derive(Template)]
#[template(path = "layout_apply.html")]
struct ApplyPage {
    chrome: Chrome,
    name: String,
    model: String,
    candidates: Vec<Candidate>,
}

/// `GET /layouts/{name}/apply`: the phones of the layout's model to choose
/// from; the choice goes to the devices list's bulk action, which asks
/// first ("affects N devices").
pub(super) async fn choose(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let layout = stored(&ui.admin, &name)?;
    let admin = Arc::clone(&ui.admin);
    let model = layout.model.clone();
    let candidates = blocking(move || {
        Ok(admin
            .store
            .devices()?
            .into_iter()
            .filter(|d| d.model == model)
            .map(|d| Candidate {
                mac: d.mac,
                description: d.description.unwrap_or_default(),
                follows: d.layout.unwrap_or_default(),
            })
            .collect())
    })
    .await?;
    html(ApplyPage {
        chrome: ui.chrome(&who, "layouts", format!("Apply layout {}", layout.name)),
        name: layout.name,
        model: layout.model,
        candidates,
    })
}

/// Makes each of `macs` follow layout `name`, checked as any device change
/// is, in one change: all of them, or none. Gives how many.
pub(super) async fn apply_layout(
    admin: &AdminState,
    actor: &str,
    name: &str,
    macs: &[Mac],
) -> ApiResult<usize> {
    admin
        .store
        .change(actor, |store| {
            let mut changes = Vec::with_capacity(macs.len());
            for &mac in macs {
                let old = store.device(mac)?.ok_or_else(|| device_not_found(mac))?;
                let new = Device {
                    layout: Some(name.to_string()),
                    ..old.clone()
                };
                check(admin, store, &new).map_err(|refused| match refused {
                    ApiError::Invalid(invalid) => ApiError::Invalid(Invalid::new(
                        invalid.field,
                        format!("device {mac}: {}", invalid.message),
                    )),
                    other => other,
                })?;
                changes.push(Change::PutDevice {
                    new,
                    old: Some(old),
                });
            }
            Ok::<_, ApiError>((changes, macs.len()))
        })
        .await
}
