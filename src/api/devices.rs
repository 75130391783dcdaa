//! `/api/v1/devices`: phones by MAC, their lines and keys, and a preview of
//! the files they get.

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::{
    Actor, AdminState, ApiError, ApiResult, Shared, Who, from_json, merge_patch, parse_body,
    parse_patch,
};
use crate::mac::Mac;
use crate::model::{Device, Invalid};
use crate::store::{Change, Store, StoreError};

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(state.store.devices()?))
}

pub(super) async fn show(state: Shared, Path(mac): Path<String>) -> ApiResult<Json<Device>> {
    let mac = parse_mac(&mac)?;
    Ok(Json(
        state.store.device(mac)?.ok_or_else(|| not_found(mac))?,
    ))
}

pub(super) async fn create(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Device>)> {
    let device: Device = parse_body(&body)?;
    state.store.change(&actor, |store| {
        check(&state, store, &device)?;
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
    })?;
    state.store.flush().await?;
    tracing::info!(mac = %device.mac, model = %device.model, "device created");
    Ok((StatusCode::CREATED, Json(device)))
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
    let device = state.store.change(&actor, |store| {
        let current = store.device(mac)?.ok_or_else(|| not_found(mac))?;
        let mut value = serde_json::to_value(&current).unwrap_or_default();
        merge_patch(&mut value, patch);
        value["mac"] = json!(mac);
        let device: Device = from_json(value)?;
        check(&state, store, &device)?;
        Ok::<_, ApiError>((
            vec![Change::PutDevice {
                new: device.clone(),
                old: Some(current),
            }],
            device,
        ))
    })?;
    state.store.flush().await?;
    tracing::info!(%mac, "device updated");
    Ok(Json(device))
}

pub(super) async fn remove(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(mac): Path<String>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&mac)?;
    state.store.change(&actor, |store| {
        let device = store.device(mac)?.ok_or_else(|| not_found(mac))?;
        Ok::<_, ApiError>((delete_device_changes(store, device)?, ()))
    })?;
    state.store.flush().await?;
    tracing::info!(%mac, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The file the phone would get, rendered now, without counting as a request.
pub(super) async fn file(
    state: Shared,
    Path((mac, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mac = parse_mac(&mac)?;
    let file = state.provisioner.preview(mac, &name)?;
    Ok((
        [(header::CONTENT_TYPE, file.content_type.clone())],
        Body::from(file.body.as_ref().clone()),
    )
        .into_response())
}

/// Everything a device must satisfy before it is stored: its own fields,
/// its model's limits, and users that exist.
pub(super) fn check(state: &AdminState, store: &Store, device: &Device) -> Result<(), ApiError> {
    device.validate()?;
    let model = state.catalog.model(&device.model).ok_or_else(|| {
        Invalid::new(
            "model",
            format!("unknown model '{}' (see GET /api/v1/models)", device.model),
        )
    })?;
    model.check_device(device)?;
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

fn parse_mac(mac: &str) -> ApiResult<Mac> {
    mac.parse()
        .map_err(|e| Invalid::new("mac", format!("'{mac}': {e}")).into())
}

fn not_found(mac: Mac) -> StoreError {
    StoreError::NotFound(format!("device {mac}"))
}
