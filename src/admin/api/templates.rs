//! `/api/v1/templates/{models|devices}/{id or mac}/{file}`: uploaded
//! templates, their history and rollback.
//!
//! `{file}` is the file as the descriptor names it (`{mac}.cfg`) or as a
//! phone of that model asks for it (`001565aabbcc.cfg`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Actor, AdminState, ApiError, ApiResult, Shared, Who, blocking, parse_body};
use crate::admin::backup::Backup;
use crate::catalog::{ModelFile, PhoneModel};
use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::progress;
use crate::domain::records::{Device, Invalid, LineAssignment, User, UserId};
use crate::provision::Requester;
use crate::render::Renderer;
use crate::render::uploaded::{self, MAX_TEMPLATE_BYTES, MAX_VERSIONS, UploadFor};
use crate::store::{Change, Store, TemplateHistory, TemplateVersion};

/// What a template URL points at.
pub(crate) struct Slot {
    /// Store key of the upload.
    pub(crate) key: String,
    /// Key of the model-wide upload a device upload overrides.
    pub(crate) model_key: String,
    /// The model whose file it is.
    pub(crate) model_id: String,
    /// The file, as the model's descriptor names it.
    pub(crate) file: ModelFile,
    /// The phone, for a per-device upload.
    pub(crate) device: Option<Device>,
}

/// The slot `scope` (`models` or `devices`), `target` (a model id or a
/// MAC) and `file` name.
pub(crate) fn resolve(
    state: &AdminState,
    scope: &str,
    target: &str,
    file: &str,
) -> ApiResult<Slot> {
    let catalog = &state.catalog;
    let (model_id, device) = match scope {
        "models" => {
            let model = catalog
                .model(target)
                .ok_or_else(|| ApiError::NotFound(format!("model {target} not found")))?;
            (model.id.clone(), None)
        }
        "devices" => {
            let mac: Mac = target
                .parse()
                .map_err(|e| Invalid::new("mac", format!("'{target}': {e}")))?;
            let device = state
                .store
                .device(mac)?
                .ok_or_else(|| ApiError::NotFound(format!("device {mac} not found")))?;
            (device.model.clone(), Some(device))
        }
        _ => {
            return Err(ApiError::NotFound(
                "templates are under models/ or devices/".into(),
            ));
        }
    };
    let model = catalog
        .model(&model_id)
        .ok_or_else(|| ApiError::NotFound(format!("model {model_id} not found")))?;
    let file = uploaded::resolve_file(model, file, |name| {
        let found = catalog.match_file(name)?;
        found
            .candidates
            .iter()
            .find(|(m, _)| m.id == model_id)
            .map(|(_, f)| f.name.clone())
    })
    .ok_or_else(|| ApiError::NotFound(format!("the {} asks for no file {file}", model.name)))?
    .clone();
    if device.is_some() && !file.per_device {
        return Err(Invalid::new(
            "file",
            format!(
                "{} is common to every {}: upload it for the model",
                file.name, model.name
            ),
        )
        .into());
    }
    let model_key = uploaded::model_key(&model_id, &file.name);
    let key = match &device {
        Some(d) => uploaded::device_key(d.mac, &file.name),
        None => model_key.clone(),
    };
    Ok(Slot {
        key,
        model_key,
        model_id,
        file,
        device,
    })
}

type Params = Path<(String, String, String)>;

/// The template in force for the slot, and where it comes from.
pub(super) async fn show(
    state: Shared,
    Path((scope, target, file)): Params,
) -> ApiResult<Json<Value>> {
    let slot = resolve(&state, &scope, &target, &file)?;
    for (origin, key) in [("device", &slot.key), ("model", &slot.model_key)] {
        if origin == "device" && slot.device.is_none() {
            continue;
        }
        if let Some(history) = state.store.template(key)?
            && let Some(current) = history.current()
        {
            return Ok(Json(json!({
                "origin": origin,
                "file": slot.file.name,
                "version": current.version,
                "author": current.author,
                "at": current.at,
                "source": current.source,
            })));
        }
    }
    let renderer = state.provisioner.renderer();
    Ok(Json(json!({
        "origin": "builtin",
        "file": slot.file.name,
        "template": slot.file.template,
        "source": renderer.builtin_source(&slot.file.template),
    })))
}

pub(super) async fn upload(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path((scope, target, file)): Params,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let slot = resolve(&state, &scope, &target, &file)?;
    if body.len() > MAX_TEMPLATE_BYTES {
        return Err(ApiError::TooLarge(format!(
            "a template is at most {MAX_TEMPLATE_BYTES} bytes"
        )));
    }
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("a template is UTF-8 text".into()))?;
    let shared = Arc::clone(&state);
    let key = slot.key.clone();
    let file = slot.file.name.clone();
    let version = blocking(move || put_version(&shared, &actor, &slot, source, None)).await?;
    tracing::info!(template = %key, version, "template uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"file": file, "version": version})),
    ))
}

pub(super) async fn remove(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path((scope, target, file)): Params,
) -> ApiResult<StatusCode> {
    let slot = resolve(&state, &scope, &target, &file)?;
    let shared = Arc::clone(&state);
    blocking(move || deactivate(&shared, &actor, &slot)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks what phones would get without the slot's upload and, if it
/// renders, returns them to the model's upload or the built-in template.
pub(crate) fn deactivate(state: &AdminState, actor: &str, slot: &Slot) -> ApiResult<()> {
    let renderer = state.store.change_blocking(
        actor,
        |store| {
            let old = store
                .template(&slot.key)?
                .filter(|h| h.active)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no uploaded template for {}", slot.key))
                })?;
            let new = TemplateHistory {
                active: false,
                ..old.clone()
            };
            let candidate = candidate(state, store, &slot.key, None)?;
            check_renders(state, store, &candidate, slot)?;
            let change = Change::PutTemplate {
                key: slot.key.clone(),
                new,
                old: Some(old),
            };
            Ok::<_, ApiError>((vec![change], candidate))
        },
        &progress::silent,
    )?;
    state.provisioner.set_renderer(renderer);
    Ok(())
}

pub(super) async fn history(
    state: Shared,
    Path((scope, target, file)): Params,
) -> ApiResult<Json<Value>> {
    let slot = resolve(&state, &scope, &target, &file)?;
    let history = stored_history(&state.store, &slot)?;
    let current = history.current().map(|v| v.version);
    let versions: Vec<Value> = history
        .versions
        .iter()
        .map(|v| {
            json!({"version": v.version, "author": v.author, "at": v.at, "bytes": v.source.len(),
                   "note": v.note, "current": Some(v.version) == current})
        })
        .collect();
    Ok(Json(
        json!({"file": slot.file.name, "active": history.active, "versions": versions}),
    ))
}

pub(super) async fn version(
    state: Shared,
    Path((scope, target, file, n)): Path<(String, String, String, u32)>,
) -> ApiResult<Json<TemplateVersion>> {
    let slot = resolve(&state, &scope, &target, &file)?;
    let history = stored_history(&state.store, &slot)?;
    let version = history
        .versions
        .into_iter()
        .find(|v| v.version == n)
        .ok_or_else(|| ApiError::NotFound(format!("version {n} not found")))?;
    Ok(Json(version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rollback {
    version: u32,
}

pub(super) async fn rollback(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path((scope, target, file)): Params,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let slot = resolve(&state, &scope, &target, &file)?;
    let Rollback { version: wanted } = parse_body(&body)?;
    let shared = Arc::clone(&state);
    let key = slot.key.clone();
    let file = slot.file.name.clone();
    let version = blocking(move || roll_back(&shared, &actor, &slot, wanted)).await?;
    tracing::info!(template = %key, version, "template rolled back");
    Ok(Json(json!({"file": file, "version": version})))
}

/// Puts version `wanted` of the slot's upload in force again, checked as
/// an upload is, as a new version. Returns its number.
pub(crate) fn roll_back(
    state: &AdminState,
    actor: &str,
    slot: &Slot,
    wanted: u32,
) -> ApiResult<u32> {
    let history = stored_history(&state.store, slot)?;
    let source = history
        .versions
        .iter()
        .find(|v| v.version == wanted)
        .map(|v| v.source.clone())
        .ok_or_else(|| Invalid::new("version", format!("there is no version {wanted}")))?;
    let note = Some(format!("rollback to {wanted}"));
    put_version(state, actor, slot, source, note)
}

/// The slot's stored upload and its versions.
pub(crate) fn stored_history(store: &Store, slot: &Slot) -> ApiResult<TemplateHistory> {
    store
        .template(&slot.key)?
        .ok_or_else(|| ApiError::NotFound(format!("no uploaded template for {}", slot.key)))
}

/// Checks `source` and, if it compiles and renders, stores it as the next
/// version and puts it in force. Returns the version number.
pub(crate) fn put_version(
    state: &AdminState,
    actor: &str,
    slot: &Slot,
    source: String,
    note: Option<String>,
) -> ApiResult<u32> {
    let (renderer, version) = state.store.change_blocking(
        actor,
        |store| {
            let old = store.template(&slot.key)?;
            let candidate = candidate(state, store, &slot.key, Some(&source))?;
            check_renders(state, store, &candidate, slot)?;
            let (new, version) = with_version(old.as_ref(), &source, actor, note.clone());
            let change = Change::PutTemplate {
                key: slot.key.clone(),
                new,
                old,
            };
            Ok::<_, ApiError>((vec![change], (candidate, version)))
        },
        &progress::silent,
    )?;
    state.provisioner.set_renderer(renderer);
    Ok(version)
}

/// `old` (none for a first upload) with `source` as its next version, in
/// force; the oldest versions past [`MAX_VERSIONS`] dropped. Gives the
/// version's number too.
fn with_version(
    old: Option<&TemplateHistory>,
    source: &str,
    actor: &str,
    note: Option<String>,
) -> (TemplateHistory, u32) {
    let mut new = old.cloned().unwrap_or(TemplateHistory {
        active: true,
        versions: Vec::new(),
    });
    let version = new.versions.last().map_or(1, |v| v.version + 1);
    new.active = true;
    new.versions.push(TemplateVersion {
        version,
        source: source.to_string(),
        author: actor.to_string(),
        at: unix_now(),
        note,
    });
    let excess = new.versions.len().saturating_sub(MAX_VERSIONS);
    new.versions.drain(..excess);
    (new, version)
}

/// Gives each of `devices` (phones of `model`) `source` as its own upload
/// of `file`, or with none, takes their own uploads of it out of force,
/// all in one change. Each phone's file is first rendered with the
/// templates that would then be in force, as an upload for that phone is
/// checked; the first failure refuses the whole change, naming the phone.
/// Gives how many phones' uploads changed. Renders: run it through
/// [`blocking`].
pub(crate) fn set_own_uploads(
    state: &AdminState,
    actor: &str,
    model: &PhoneModel,
    file: &ModelFile,
    devices: &[Device],
    source: Option<&str>,
) -> ApiResult<usize> {
    let renderer = state.store.change_blocking(
        actor,
        |store| {
            let mut changes = Vec::new();
            let mut phones = Vec::new();
            for device in devices.iter().filter(|d| d.model == model.id) {
                let key = uploaded::device_key(device.mac, &file.name);
                let old = store.template(&key)?;
                let new = match (source, &old) {
                    (Some(source), old) => {
                        with_version(old.as_ref(), source, actor, Some("bulk set".into())).0
                    }
                    (None, Some(old)) if old.active => TemplateHistory {
                        active: false,
                        ..old.clone()
                    },
                    // Nothing of its own to clear.
                    (None, _) => continue,
                };
                changes.push(Change::PutTemplate { key, new, old });
                phones.push(device);
            }
            if changes.is_empty() {
                return Ok((changes, None));
            }
            let changed = changes.iter().filter_map(|change| match change {
                Change::PutTemplate { key, new, .. } => {
                    Some((key.as_str(), new.current().map(|v| v.source.as_str())))
                }
                _ => None,
            });
            let candidate = candidate_with(state, store, changed.collect())?;
            for device in &phones {
                let users = state.provisioner.device_users(device)?;
                check_device(state, &candidate, model, file, device, &users)?;
            }
            Ok::<_, ApiError>((changes, Some((candidate, phones.len()))))
        },
        &progress::silent,
    )?;
    let Some((renderer, changed)) = renderer else {
        return Ok(0);
    };
    state.provisioner.set_renderer(renderer);
    tracing::info!(file = %file.name, phones = changed, "own templates set in bulk");
    Ok(changed)
}

/// The slot's file rendered with `source` in it, for `device` (a sample
/// phone of the model when none; no phone for a file common to the model),
/// its secrets masked as the admin preview masks them. Nothing is stored.
/// Renders: run it through [`blocking`].
pub(crate) fn preview_source(
    state: &AdminState,
    slot: &Slot,
    source: &str,
    device: Option<&Device>,
) -> ApiResult<Vec<u8>> {
    let provisioner = &state.provisioner;
    let model = state
        .catalog
        .model(&slot.model_id)
        .ok_or_else(|| ApiError::NotFound(format!("model {} not found", slot.model_id)))?;
    let candidate = candidate(state, &state.store, &slot.key, Some(source))?;
    let requester = Requester::masked_preview();
    if !slot.file.per_device {
        return Ok(provisioner.render_common(&candidate, model, &slot.file, &requester)?);
    }
    let (device, users) = match device {
        Some(device) => (device.clone(), provisioner.device_users(device)?),
        None => uploaded::sample_device(model),
    };
    Ok(provisioner.render_device(&candidate, model, &slot.file, &device, &users, &requester)?)
}

/// The templates that would be in force with `key` set to `source` (or
/// removed): every other active upload stays.
fn candidate(
    state: &AdminState,
    store: &Store,
    key: &str,
    source: Option<&str>,
) -> ApiResult<Renderer> {
    candidate_with(state, store, HashMap::from([(key, source)]))
}

/// The templates that would be in force with each key of `changed` set to
/// its source (or removed, for none): every other active upload stays.
fn candidate_with(
    state: &AdminState,
    store: &Store,
    changed: HashMap<&str, Option<&str>>,
) -> ApiResult<Renderer> {
    let stored = store.templates()?;
    let others = stored
        .iter()
        .filter(|(k, _)| !changed.contains_key(k.as_str()))
        .filter_map(|(k, h)| h.current().map(|v| (k.as_str(), v.source.as_str())));
    let set = changed
        .iter()
        .filter_map(|(key, source)| source.map(|s| (*key, s)));
    let uploads: Vec<(&str, &str)> = others.chain(set).collect();
    state
        .provisioner
        .renderer()
        .with_uploads(uploads)
        .map_err(ApiError::from)
}

/// Renders what the change affects with the candidate templates: the phone
/// itself for a device upload; a sample phone and every real phone of the
/// model for a model-wide one. The first failure refuses the change.
fn check_renders(
    state: &AdminState,
    store: &Store,
    candidate: &Renderer,
    slot: &Slot,
) -> ApiResult<()> {
    let provisioner = &state.provisioner;
    let model = state
        .catalog
        .model(&slot.model_id)
        .ok_or_else(|| ApiError::NotFound(format!("model {} not found", slot.model_id)))?;
    let requester = Requester::default();
    if !slot.file.per_device {
        provisioner.render_common(candidate, model, &slot.file, &requester)?;
        return Ok(());
    }
    let devices: Vec<Device> = match &slot.device {
        Some(device) => vec![device.clone()],
        None => store
            .devices()?
            .into_iter()
            .filter(|d| d.model == slot.model_id)
            .collect(),
    };
    if slot.device.is_none() {
        let (sample, users) = uploaded::sample_device(model);
        provisioner.render_device(candidate, model, &slot.file, &sample, &users, &requester)?;
    }
    for device in devices {
        let users = provisioner.device_users(&device)?;
        check_device(state, candidate, model, &slot.file, &device, &users)?;
    }
    Ok(())
}

/// Renders one real phone's file with the candidate templates; an error
/// names the phone.
fn check_device(
    state: &AdminState,
    candidate: &Renderer,
    model: &PhoneModel,
    file: &ModelFile,
    device: &Device,
    users: &[User],
) -> ApiResult<()> {
    let requester = Requester::default();
    state
        .provisioner
        .render_device(candidate, model, file, device, users, &requester)
        .map(drop)
        .map_err(|e| match ApiError::from(e) {
            ApiError::Template {
                message,
                line,
                column,
            } => ApiError::Template {
                message: format!("for device {}: {message}", device.mac),
                line,
                column,
            },
            other => other,
        })
}

/// Renders what a backup's uploads serve with `candidate` (its templates
/// with this deskboot's built-ins), before the restore writes anything: a
/// sample phone for each model-wide upload, and each of the backup's phones
/// for every file an upload serves it. The first failure refuses the
/// restore. Settings are the store's: the backup's are not in force yet.
pub(super) fn check_restore(
    state: &AdminState,
    candidate: &Renderer,
    backup: &Backup,
) -> ApiResult<()> {
    let requester = Requester::default();
    let by_id: HashMap<UserId, &User> = backup.users.iter().map(|u| (u.id, u)).collect();
    let users = |device: &Device| -> Option<Vec<User>> {
        let user = |line: &LineAssignment| by_id.get(&line.user).map(|u| (*u).clone());
        device.lines.iter().map(user).collect()
    };
    let uploads = backup
        .templates
        .iter()
        .filter(|(_, h)| h.current().is_some());
    for (key, _) in uploads {
        let (model_id, file_name, only) = match uploaded::upload_for(key) {
            Some(UploadFor::Model { model, file }) => (model.to_string(), file, None),
            Some(UploadFor::Device { mac, file }) => {
                match backup.devices.iter().find(|d| d.mac == mac) {
                    Some(device) => (device.model.clone(), file, Some(mac)),
                    // Serves no phone: nothing to check.
                    None => continue,
                }
            }
            None => continue,
        };
        let Some(model) = state.catalog.model(&model_id) else {
            continue;
        };
        let Some(file) = model.files.iter().find(|f| f.name == file_name) else {
            continue;
        };
        if !file.per_device {
            state
                .provisioner
                .render_common(candidate, model, file, &requester)?;
            continue;
        }
        if only.is_none() {
            let (sample, users) = uploaded::sample_device(model);
            state
                .provisioner
                .render_device(candidate, model, file, &sample, &users, &requester)?;
        }
        let phones = backup
            .devices
            .iter()
            .filter(|d| d.model == model.id && only.is_none_or(|mac| d.mac == mac));
        for device in phones {
            // A phone whose users are not in the backup is refused by the
            // restore itself, with a better reason.
            if let Some(users) = users(device) {
                check_device(state, candidate, model, file, device, &users)?;
            }
        }
    }
    Ok(())
}
