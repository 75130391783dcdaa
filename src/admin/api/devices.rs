//! `/api/v1/devices`: phones by MAC, their lines and keys, a preview of
//! the files they get, and whether they have them (`/api/v1/status`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Actor, AdminState, ApiError, ApiResult, Seen, Shared, Who, blocking, from_json, merge_patch,
    parse_body, parse_patch,
};
use crate::access::phone_auth::AuthMode;
use crate::catalog::PhoneModel;
use crate::domain::mac::Mac;
use crate::domain::records::{Device, HoldsSecrets, Invalid, Sighting};
use crate::provision::Requester;
use crate::render::uploaded;
use crate::store::{Change, Store, StoreError};

pub(super) async fn list(state: Shared, Extension(scope): Seen) -> ApiResult<Json<Vec<Device>>> {
    let devices = state.store.devices()?;
    Ok(Json(
        devices.into_iter().map(|d| d.shown_to(scope)).collect(),
    ))
}

pub(super) async fn show(
    state: Shared,
    Extension(scope): Seen,
    Path(mac): Path<String>,
) -> ApiResult<Json<Device>> {
    let mac = parse_mac(&mac)?;
    let device = state.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    Ok(Json(device.shown_to(scope)))
}

pub(super) async fn create(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let device: Device = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(create_device(&state, &actor, device).await?),
    ))
}

/// Stores a new device, checked first; the answer carries its phone's
/// HTTP credentials, to show once ([`with_http_credentials`]).
pub(crate) async fn create_device(
    state: &AdminState,
    actor: &str,
    device: Device,
) -> ApiResult<Value> {
    state
        .store
        .change(actor, |store| {
            check(state, store, &device)?;
            if store.device(device.mac)?.is_some() {
                return Err(ApiError::Conflict(Invalid::new(
                    "mac",
                    format!("device {} already exists", device.mac),
                )));
            }
            Ok((
                vec![Change::PutDevice {
                    new: device.clone(),
                    old: None,
                }],
                (),
            ))
        })
        .await?;
    tracing::info!(mac = %device.mac, model = %device.model, "device created");
    Ok(with_http_credentials(state, &device))
}

/// The device as JSON, with the HTTP credentials its phone must present
/// when the policy wants per-device authentication: shown here, once.
pub(crate) fn with_http_credentials(state: &AdminState, device: &Device) -> Value {
    let mut answer = serde_json::to_value(device).unwrap_or(Value::Null);
    if let Some((username, password)) = http_credentials(state, device.mac) {
        answer["http_auth"] = json!({"username": username, "password": password});
    }
    answer
}

/// The HTTP username and password phone `mac` must present, when the
/// policy wants per-device authentication.
pub(crate) fn http_credentials(state: &AdminState, mac: Mac) -> Option<(String, String)> {
    let policy = state.provisioner.policy();
    (policy.http_auth == AuthMode::Device).then(|| {
        (
            mac.lower(),
            state.provisioner.phone_auth().device_password(mac),
        )
    })
}

pub(super) async fn update(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(mac): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Device>> {
    let mac = parse_mac(&mac)?;
    let patch = parse_patch(&body)?;
    if let Some(new_mac) = patch.get("mac") {
        let same = new_mac
            .as_str()
            .and_then(|m| m.parse::<Mac>().ok())
            .is_some_and(|m| m == mac);
        if !same {
            return Err(Invalid::new("mac", "cannot be changed; clone the device instead").into());
        }
    }
    let device = update_device(&state, &actor, mac, |current| {
        let mut value = serde_json::to_value(current).unwrap_or_default();
        merge_patch(&mut value, patch);
        value["mac"] = json!(mac);
        from_json(value)
    })
    .await?;
    Ok(Json(device))
}

/// Replaces device `mac` with what `edit` makes of the stored one, checked
/// as a new device is; a masked secret in it keeps the stored one.
pub(crate) async fn update_device(
    state: &AdminState,
    actor: &str,
    mac: Mac,
    edit: impl FnOnce(&Device) -> ApiResult<Device>,
) -> ApiResult<Device> {
    let device = state
        .store
        .change(actor, |store| {
            let current = store.device(mac)?.ok_or_else(|| not_found(mac))?;
            let mut device = edit(&current)?;
            device.unmask_from(&current);
            check(state, store, &device)?;
            Ok::<_, ApiError>((
                vec![Change::PutDevice {
                    new: device.clone(),
                    old: Some(current),
                }],
                device,
            ))
        })
        .await?;
    tracing::info!(%mac, "device updated");
    Ok(device)
}

pub(super) async fn remove(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(mac): Path<String>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&mac)?;
    state
        .store
        .change(&actor, |store| {
            let device = store.device(mac)?.ok_or_else(|| not_found(mac))?;
            Ok::<_, ApiError>((delete_device_changes(store, device)?, ()))
        })
        .await?;
    tracing::info!(%mac, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The file the phone would get, rendered now, without counting as a
/// request; with its passwords masked for a token that may not see them.
pub(super) async fn file(
    state: Shared,
    Extension(scope): Seen,
    Path((mac, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mac = parse_mac(&mac)?;
    let requester = if scope.sees_secrets() {
        Requester::default()
    } else {
        Requester::masked_preview()
    };
    let provisioner = Arc::clone(&state.provisioner);
    let file = blocking(move || Ok(provisioner.preview(mac, &name, &requester)?)).await?;
    Ok((
        [(header::CONTENT_TYPE, file.content_type.clone())],
        Body::from(file.body.clone()),
    )
        .into_response())
}

/// Everything a device must satisfy before it is stored: its own fields,
/// its model's limits, and users that exist.
pub(crate) fn check(state: &AdminState, store: &Store, device: &Device) -> Result<(), ApiError> {
    device.validate()?;
    let model = state.catalog.model(&device.model).ok_or_else(|| {
        Invalid::new(
            "model",
            format!("unknown model '{}' (see GET /api/v1/models)", device.model),
        )
    })?;
    model.check_device(device)?;
    super::layouts::check_device_layout(state, store, device)?;
    for (i, line) in device.lines.iter().enumerate() {
        if store.user(line.user)?.is_none() {
            return Err(ApiError::Conflict(Invalid::new(
                format!("lines[{i}].user"),
                format!("there is no user {}", line.user),
            )));
        }
    }
    Ok(())
}

/// Deleting a device takes its uploaded templates with it.
pub(super) fn delete_device_changes(
    store: &Store,
    device: Device,
) -> Result<Vec<Change>, StoreError> {
    let prefix = format!("device/{}/", device.mac);
    let mut changes: Vec<Change> = store
        .templates()?
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(key, old)| Change::DeleteTemplate { key, old })
        .collect();
    changes.push(Change::DeleteDevice(device));
    Ok(changes)
}

pub(crate) fn parse_mac(mac: &str) -> ApiResult<Mac> {
    mac.parse()
        .map_err(|e| Invalid::new("mac", format!("'{mac}': {e}")).into())
}

pub(crate) fn not_found(mac: Mac) -> StoreError {
    StoreError::NotFound(format!("device {mac}"))
}

/// How a clone treats the source phone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CloneMode {
    /// Both phones keep working.
    #[default]
    Copy,
    /// The new phone takes over; the old one gets nothing any more.
    Replace,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloneRequest {
    /// The new phone's MAC.
    to: String,
    #[serde(default)]
    mode: CloneMode,
    /// Replace an existing device at `to`.
    #[serde(default)]
    overwrite: bool,
    /// The new phone's model, when it differs (it must be compatible).
    #[serde(default)]
    model: Option<String>,
}

/// How a clone treats the keys the new phone's model has no place for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnfitKeys {
    /// The clone is refused, as any device that does not fit its model is.
    Refuse,
    /// They stay behind: the administrator saw which in a preview.
    LeaveBehind,
}

/// One clone, as the API and the web UI's wizard order it.
#[derive(Debug, Clone)]
pub(crate) struct CloneOrder {
    /// The phone cloned.
    pub from: Mac,
    /// The new phone.
    pub to: Mac,
    /// Whether the source keeps working.
    pub mode: CloneMode,
    /// Replace an existing device at `to`.
    pub overwrite: bool,
    /// The new phone's model, when it differs.
    pub model: Option<String>,
    /// What becomes of keys the new model has no place for.
    pub unfit: UnfitKeys,
    /// The [`Store::generation`] the order was previewed at: a change
    /// since then refuses it, as the preview no longer tells what happens.
    pub previewed_at: Option<u64>,
}

/// The models a phone of `model` can be cloned to: its own and the ones
/// its descriptor names compatible.
pub(crate) fn clone_models<'c>(state: &'c AdminState, model: &str) -> Vec<&'c PhoneModel> {
    let compatible = state
        .catalog
        .model(model)
        .map(|m| m.compatible.clone())
        .unwrap_or_default();
    std::iter::once(model.to_string())
        .chain(compatible)
        .filter_map(|id| state.catalog.model(&id))
        .collect()
}

/// The model a clone of `source` gives the new phone: `requested`, else
/// the one of the device it overwrites, else the source's; refused unless
/// the models are compatible.
pub(crate) fn clone_model(
    state: &AdminState,
    source: &Device,
    existing: Option<&Device>,
    requested: Option<&str>,
) -> ApiResult<String> {
    let model = requested
        .map(str::to_string)
        .or_else(|| existing.map(|d| d.model.clone()))
        .unwrap_or_else(|| source.model.clone());
    let compatible = model == source.model
        || state
            .catalog
            .model(&source.model)
            .is_some_and(|m| m.compatible.contains(&model));
    if !compatible {
        return Err(ApiError::Conflict(Invalid::new(
            "model",
            format!(
                "a {} configuration cannot go to a {model}: the models are not compatible",
                source.model
            ),
        )));
    }
    Ok(model)
}

/// `POST /devices/{mac}/clone`: copy a phone's whole configuration (lines,
/// keys, modules, settings, uploaded templates) to another MAC, or move it
/// there, in one transaction.
pub(super) async fn clone(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(mac): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let from = parse_mac(&mac)?;
    let request: CloneRequest = parse_body(&body)?;
    let to: Mac = request
        .to
        .parse()
        .map_err(|e| Invalid::new("to", format!("'{}': {e}", request.to)))?;
    let order = CloneOrder {
        from,
        to,
        mode: request.mode,
        overwrite: request.overwrite,
        model: request.model,
        unfit: UnfitKeys::Refuse,
        previewed_at: None,
    };
    let device = clone_device(&state, &actor, order).await?;
    Ok((
        StatusCode::CREATED,
        Json(with_http_credentials(&state, &device)),
    ))
}

/// Carries out `order` in one transaction and puts the uploads that moved
/// with the phone in force; gives the new device.
pub(crate) async fn clone_device(
    state: &AdminState,
    actor: &str,
    order: CloneOrder,
) -> ApiResult<Device> {
    let (from, to) = (order.from, order.to);
    if to == from {
        return Err(Invalid::new("to", "is the same phone").into());
    }
    let device = state
        .store
        .change(actor, |store| {
            if order
                .previewed_at
                .is_some_and(|at| at != store.generation())
            {
                return Err(ApiError::Conflict(Invalid::new(
                    "store",
                    "the configuration changed since the preview: look at the preview again",
                )));
            }
            let source = store.device(from)?.ok_or_else(|| not_found(from))?;
            let existing = store.device(to)?;
            if existing.is_some() && !order.overwrite {
                return Err(ApiError::Conflict(Invalid::new(
                    "to",
                    format!("device {to} already exists; pass \"overwrite\": true to replace it"),
                )));
            }
            let model = clone_model(state, &source, existing.as_ref(), order.model.as_deref())?;
            let copy = Device {
                mac: to,
                model,
                ..source.clone()
            };
            let copy = match (order.unfit, state.catalog.model(&copy.model)) {
                (UnfitKeys::LeaveBehind, Some(model)) => model.fitted(&copy).0,
                _ => copy,
            };
            check(state, store, &copy)?;
            let mut changes = Vec::new();
            if let Some(existing) = &existing {
                changes.extend(
                    delete_device_changes(store, existing.clone())?
                        .into_iter()
                        .filter(|c| !matches!(c, Change::DeleteDevice(_))),
                );
            }
            let target_files: Vec<String> = state
                .catalog
                .model(&copy.model)
                .map(|m| m.files.iter().map(|f| f.name.clone()).collect())
                .unwrap_or_default();
            let source_prefix = format!("device/{from}/");
            for (key, history) in store.templates()? {
                if let Some(file) = key.strip_prefix(&source_prefix)
                    && target_files.iter().any(|f| f == file)
                {
                    changes.push(Change::PutTemplate {
                        key: uploaded::device_key(to, file),
                        new: history,
                        old: None,
                    });
                }
            }
            changes.push(Change::PutDevice {
                new: copy.clone(),
                old: existing,
            });
            if order.mode == CloneMode::Replace {
                changes.extend(delete_device_changes(store, source)?);
            }
            Ok((changes, copy))
        })
        .await?;
    // Uploads moved with the phone: put the stored set in force.
    reload_templates(state)?;
    tracing::info!(%from, %to, mode = ?order.mode, "device cloned");
    Ok(device)
}

/// Puts the stored uploads in force again after a change that moved some.
pub(super) fn reload_templates(state: &AdminState) -> ApiResult<()> {
    let stored = state.store.templates()?;
    let uploads: Vec<(&str, &str)> = stored
        .iter()
        .filter_map(|(key, h)| h.current().map(|v| (key.as_str(), v.source.as_str())))
        .collect();
    let current = state.provisioner.renderer();
    // A restore or a clone that leaves the uploads as they were keeps the
    // renderer: compiling every template again costs megabytes and drops
    // every render thread's compiled set.
    if current.has_exactly(&uploads) {
        return Ok(());
    }
    state
        .provisioner
        .set_renderer(current.with_uploads(uploads)?);
    Ok(())
}

/// `GET /devices/{mac}/status`: what the server last saw of the phone, and
/// whether what it last got is what it would get now.
pub(super) async fn status(state: Shared, Path(mac): Path<String>) -> ApiResult<Json<Value>> {
    let mac = parse_mac(&mac)?;
    let device = state.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    let state = Arc::clone(&state);
    let status = blocking(move || {
        state.provisioner.flush_sightings()?;
        device_status(&state, &device)
    });
    Ok(Json(status.await?))
}

/// Which phones `GET /status` lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusFilter {
    /// Only the phones of this model.
    model: Option<String>,
}

/// `GET /status[?model=ID]`: every phone's status, to find the ones that
/// have not fetched their current files yet.
pub(super) async fn fleet_status(
    state: Shared,
    Query(filter): Query<StatusFilter>,
) -> ApiResult<Json<Vec<Value>>> {
    let state = Arc::clone(&state);
    // One render per phone seen.
    let statuses = blocking(move || {
        state.provisioner.flush_sightings()?;
        state
            .store
            .devices()?
            .iter()
            .filter(|device| filter.model.as_ref().is_none_or(|m| *m == device.model))
            .map(|device| device_status(&state, device))
            .collect::<ApiResult<Vec<Value>>>()
    })
    .await?;
    Ok(Json(statuses))
}

/// When a phone was last seen, from where, with what, and whether the file
/// it got then is the one it would get now (null: never seen, or no longer
/// renders).
fn device_status(state: &AdminState, device: &Device) -> ApiResult<Value> {
    let mac = device.mac;
    let Some(seen) = state.store.sighting(mac)? else {
        return Ok(json!({"mac": mac, "model": device.model, "last_seen": null, "current": null}));
    };
    let current = has_current_file(state, mac, &seen);
    Ok(json!({
        "mac": mac,
        "model": device.model,
        "last_seen": seen.at,
        "ip": seen.ip,
        "user_agent": seen.user_agent,
        "firmware": seen.firmware,
        "file": seen.file,
        "transport": seen.transport,
        "current": current,
    }))
}

/// Whether the file `seen` says phone `mac` last got is the one it would
/// get now; none when it no longer renders. Renders: run it through
/// [`blocking`].
pub(crate) fn has_current_file(state: &AdminState, mac: Mac, seen: &Sighting) -> Option<bool> {
    let requester = Requester {
        origin: seen.origin.clone(),
        firmware: seen.firmware.clone(),
        without_secrets: seen.without_secrets,
        masked: false,
    };
    state
        .provisioner
        .preview(mac, &seen.file, &requester)
        .ok()
        .map(|now| Some(now.etag) == seen.etag)
}
