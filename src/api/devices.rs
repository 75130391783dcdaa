//! `/api/v1/devices`: phones by MAC, their lines and keys, and a preview of
//! the files they get.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{
    AdminState, ApiError, ApiResult, Shared, from_json, merge_patch, parse_body, parse_patch,
};
use crate::mac::Mac;
use crate::model::{Device, Invalid};

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(state.store.devices()?))
}

pub(super) async fn show(state: Shared, Path(mac): Path<String>) -> ApiResult<Json<Device>> {
    let mac = parse_mac(&mac)?;
    Ok(Json(
        state.store.device(mac)?.ok_or_else(|| not_found(mac))?,
    ))
}

pub(super) async fn create(state: Shared, body: Bytes) -> ApiResult<(StatusCode, Json<Device>)> {
    let device: Device = parse_body(&body)?;
    check(&state, &device)?;
    state.store.put_device(&device, true)?;
    state.store.flush().await?;
    tracing::info!(mac = %device.mac, model = %device.model, "device created");
    Ok((StatusCode::CREATED, Json(device)))
}

pub(super) async fn update(
    state: Shared,
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
    let current = state.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    let mut value =
        serde_json::to_value(&current).map_err(|e| ApiError::Internal(e.to_string()))?;
    merge_patch(&mut value, patch);
    value["mac"] = json!(mac);
    let device: Device = from_json(value)?;
    check(&state, &device)?;
    state.store.put_device(&device, false)?;
    state.store.flush().await?;
    tracing::info!(%mac, "device updated");
    Ok(Json(device))
}

pub(super) async fn remove(state: Shared, Path(mac): Path<String>) -> ApiResult<StatusCode> {
    let mac = parse_mac(&mac)?;
    state.store.delete_device(mac)?;
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

/// Everything a device must satisfy before it is stored.
fn check(state: &AdminState, device: &Device) -> Result<(), ApiError> {
    device.validate()?;
    let model = state.catalog.model(&device.model).ok_or_else(|| {
        Invalid::new(
            "model",
            format!("unknown model '{}' (see GET /api/v1/models)", device.model),
        )
    })?;
    model.check_device(device)?;
    Ok(())
}

fn parse_mac(mac: &str) -> ApiResult<Mac> {
    mac.parse()
        .map_err(|e| Invalid::new("mac", format!("'{mac}': {e}")).into())
}

fn not_found(mac: Mac) -> ApiError {
    ApiError::NotFound(format!("device {mac} not found"))
}
