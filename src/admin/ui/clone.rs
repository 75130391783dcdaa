//! `/devices/{mac}/replace`: the clone and replace wizard. Step 1 picks the
//! new MAC (typed, or one of the discovered ones), copy or replace, and a
//! compatible model; step 2 previews, before anything changes, where each
//! key lands on the new model and which have no place there; step 3 is the
//! clone itself, refused if the store changed since the preview.
//!
//! The wizard decides nothing of its own: compatibility, placement and the
//! clone are [`crate::admin::api::devices`]'s, as `POST .../clone` uses them.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::keys::position_name;
use super::session::Signed;
use super::{Chrome, Shared, Ui, UiError, UiResult, html, html_with, see_other, status_of};
use crate::admin::api::devices::{
    CloneMode, CloneOrder, UnfitKeys, check, clone_device, clone_model, clone_models,
    http_credentials, not_found, parse_mac,
};
use crate::admin::api::users::parse_id;
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid};

/// A model the new phone may be.
struct ModelChoice {
    id: String,
    name: String,
    selected: bool,
}

/// Where one of the source's keys lands on the new phone.
struct KeyMapping {
    position: String,
    kind: &'static str,
    value: String,
    label: String,
    /// Where it goes, or why it has no place.
    lands: Result<String, String>,
}

/// Step 2: what confirming would do, and the fields that tie the confirm
/// to it.
struct Preview {
    to: Mac,
    model: String,
    model_name: String,
    mode: &'static str,
    /// The device at the new MAC that confirming overwrites.
    overwrites: bool,
    keys: Vec<KeyMapping>,
    /// Expansion modules the new model does not take.
    modules_left: Vec<String>,
    /// Why the clone would be refused even so (lines, layout), if it would.
    refused: Option<String>,
    /// The store generation previewed.
    generation: u64,
}

impl Preview {
    fn unfit(&self) -> usize {
        self.keys.iter().filter(|k| k.lands.is_err()).count()
    }
}

#[derive(Template)]
#[template(path = "clone.html")]
struct WizardPage {
    chrome: Chrome,
    from: Mac,
    source_model: String,
    to: String,
    mode: &'static str,
    models: Vec<ModelChoice>,
    /// Discovered MACs, with the model each phone says it is.
    discovered: Vec<(String, String)>,
    /// Why the last step was refused.
    error: Option<String>,
    preview: Option<Preview>,
}

#[derive(Deserialize, Default)]
pub(super) struct WizardQuery {
    /// The new MAC.
    #[serde(default)]
    to: String,
    /// `copy` or `replace`.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    model: String,
    /// Present once step 1 is filled in: show the preview.
    #[serde(default)]
    preview: String,
}

/// `GET /devices/{mac}/replace[?to=&mode=&model=&preview=1]`: step 1, or
/// with `preview` step 2.
pub(super) async fn wizard(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    Query(query): Query<WizardQuery>,
) -> UiResult<Response> {
    let from = parse_mac(&mac)?;
    wizard_page(&ui, &who, from, query, None).await
}

async fn wizard_page(
    ui: &Ui,
    who: &Signed,
    from: Mac,
    query: WizardQuery,
    error: Option<String>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let (source, discovered) = blocking(move || {
        admin.provisioner.flush_sightings()?;
        let source = admin.store.device(from)?.ok_or_else(|| not_found(from))?;
        Ok((source, admin.store.discovered()?))
    })
    .await?;
    let to = query.to.trim().to_string();
    let guessed = discovered
        .iter()
        .find(|d| Some(d.mac) == to.parse().ok())
        .and_then(|d| d.model.clone());
    let choices = clone_models(&ui.admin, &source.model);
    let wanted = [Some(query.model.trim().to_string()), guessed]
        .into_iter()
        .flatten()
        .find(|m| choices.iter().any(|c| c.id == *m))
        .unwrap_or_else(|| source.model.clone());
    let mode = if query.mode == "copy" {
        "copy"
    } else {
        "replace"
    };
    let mut error = error;
    let preview = if query.preview.is_empty() || error.is_some() {
        None
    } else {
        match preview(&ui.admin, &source, &to, &wanted, mode) {
            Ok(preview) => Some(preview),
            Err(refused) => {
                error = Some(UiError::from(refused).to_string());
                None
            }
        }
    };
    let page = WizardPage {
        chrome: ui.chrome(who, "devices", format!("Replace {}", from.colon())),
        from,
        source_model: ui.admin.catalog.model(&source.model).map_or_else(
            || source.model.clone(),
            |m| format!("{} {}", m.vendor, m.name),
        ),
        to,
        mode,
        models: choices
            .iter()
            .map(|m| ModelChoice {
                id: m.id.clone(),
                name: format!("{} {}", m.vendor, m.name),
                selected: m.id == wanted,
            })
            .collect(),
        discovered: discovered
            .into_iter()
            .map(|d| (d.mac.to_string(), d.model.unwrap_or_default()))
            .collect(),
        preview,
        error,
    };
    let failed = page.error.is_some();
    html_with(status_of(failed), page)
}

/// Step 2: what cloning `source` to `to` as `model` would do. The
/// generation is read first, so a change made while the preview is built
/// makes the confirm stale rather than unseen.
fn preview(
    admin: &AdminState,
    source: &Device,
    to: &str,
    model: &str,
    mode: &'static str,
) -> ApiResult<Preview> {
    let generation = admin.store.generation();
    let to: Mac = to
        .parse()
        .map_err(|e| Invalid::new("to", format!("'{to}': {e}")))?;
    if to == source.mac {
        return Err(Invalid::new("to", "is the same phone").into());
    }
    let existing = admin.store.device(to)?;
    let model = clone_model(admin, source, existing.as_ref(), Some(model))?;
    let spec = admin
        .catalog
        .model(&model)
        .ok_or_else(|| Invalid::new("model", format!("unknown model '{model}'")))?;
    let copy = Device {
        mac: to,
        ..source.clone()
    };
    let (fitted, left_out) = spec.fitted(&copy);
    let refused = check(admin, &admin.store, &fitted)
        .err()
        .map(|e| UiError::from(e).to_string());
    let keys = source
        .keys
        .iter()
        .map(|key| {
            let why = left_out
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, why)| why.message.clone());
            let position = position_name(key.module, key.index);
            KeyMapping {
                lands: match why {
                    Some(why) => Err(why),
                    None => Ok(format!("{position} of the {}", spec.name)),
                },
                position,
                kind: key.kind.name(),
                value: key.value.clone(),
                label: key.label.clone(),
            }
        })
        .collect();
    Ok(Preview {
        to,
        model_name: format!("{} {}", spec.vendor, spec.name),
        model,
        mode,
        overwrites: existing.is_some(),
        keys,
        modules_left: source.modules[fitted.modules.len()..].to_vec(),
        refused,
        generation,
    })
}

#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    to: String,
    mode: String,
    model: String,
    /// Whether the preview said a device at `to` is overwritten.
    #[serde(default)]
    overwrite: bool,
    /// The store generation the preview showed.
    generation: u64,
}

#[derive(Template)]
#[template(path = "clone_done.html")]
struct DonePage {
    chrome: Chrome,
    from: Mac,
    to: Mac,
    replaced: bool,
    /// The new phone's HTTP credentials, shown this once, if it needs any.
    secrets: Vec<(String, String)>,
}

/// `POST /devices/{mac}/replace`: step 3, the clone as previewed.
pub(super) async fn confirm(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> UiResult<Response> {
    let from = parse_mac(&mac)?;
    let to: Mac = parse_mac(&form.to)?;
    let mode = match form.mode.as_str() {
        "copy" => CloneMode::Copy,
        "replace" => CloneMode::Replace,
        other => return Err(ApiError::BadRequest(format!("no mode '{other}'")).into()),
    };
    let order = CloneOrder {
        from,
        to,
        mode,
        overwrite: form.overwrite,
        model: Some(form.model.clone()),
        unfit: UnfitKeys::LeaveBehind,
        previewed_at: Some(form.generation),
    };
    let device = match clone_device(&ui.admin, &who.actor, order).await {
        Ok(device) => device,
        Err(refused) => {
            let again = WizardQuery {
                to: form.to,
                mode: form.mode,
                model: form.model,
                preview: String::new(),
            };
            let error = format!("Nothing changed: {}", UiError::from(refused));
            return wizard_page(&ui, &who, from, again, Some(error)).await;
        }
    };
    let secrets = match http_credentials(&ui.admin, device.mac) {
        Some((username, password)) => vec![
            ("HTTP username".to_string(), username),
            ("HTTP password".to_string(), password),
        ],
        None => Vec::new(),
    };
    html(DonePage {
        chrome: ui.chrome(&who, "devices", format!("{} is set up", to.colon())),
        from,
        to,
        replaced: mode == CloneMode::Replace,
        secrets,
    })
}

#[derive(Template)]
#[template(path = "clone_pick.html")]
struct PickPage {
    chrome: Chrome,
    phones: Vec<Mac>,
}

/// `GET /users/{id}/replace`: the wizard for the user's phone; with
/// several, a choice of them.
pub(super) async fn from_user(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id = parse_id(&id)?;
    let admin = Arc::clone(&ui.admin);
    let (user, phones) = blocking(move || {
        let user = admin
            .store
            .user(id)?
            .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
        let phones: Vec<Mac> = admin
            .store
            .devices()?
            .into_iter()
            .filter(|d| d.lines.iter().any(|l| l.user == id))
            .map(|d| d.mac)
            .collect();
        Ok((user, phones))
    })
    .await?;
    match phones.as_slice() {
        [] => Err(ApiError::NotFound(format!("{} is on no phone", user.display_name())).into()),
        [only] => Ok(see_other(&format!("/devices/{only}/replace"))),
        _ => html(PickPage {
            chrome: ui.chrome(
                &who,
                "devices",
                format!("Replace a phone of {}", user.display_name()),
            ),
            phones,
        }),
    }
}
