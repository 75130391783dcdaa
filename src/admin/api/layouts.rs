//! `/api/v1/layouts`: named key layouts ("Reception", "Sales") for one
//! phone model, which many devices follow at once.
//!
//! A layout is checked against its model when it is saved, and again
//! against every device that follows it: a change that would not fit one
//! of them (a key on a module that phone lacks) is refused whole, so a
//! layout edit never breaks a working phone.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::{
    Actor, AdminState, ApiError, ApiResult, Shared, Who, from_json, parse_body, parse_patch,
};
use crate::domain::records::{Device, Invalid, Layout};
use crate::store::{Change, Store, StoreError};

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<Layout>>> {
    Ok(Json(state.store.layouts()?))
}

pub(super) async fn show(state: Shared, Path(name): Path<String>) -> ApiResult<Json<Layout>> {
    let layout = state.store.layout(&name)?.ok_or_else(|| not_found(&name))?;
    Ok(Json(layout))
}

pub(super) async fn create(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Layout>)> {
    let layout: Layout = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(create_layout(&state, &actor, layout).await?),
    ))
}

/// Stores a new layout, checked against its model.
pub(crate) async fn create_layout(
    state: &AdminState,
    actor: &str,
    layout: Layout,
) -> ApiResult<Layout> {
    let saved = state
        .store
        .change(actor, |store| {
            if store.layout(&layout.name)?.is_some() {
                return Err(ApiError::Conflict(Invalid::new(
                    "name",
                    format!(
                        "layout {} exists; PUT /api/v1/layouts/{} replaces it",
                        layout.name, layout.name
                    ),
                )));
            }
            check(state, store, &layout)?;
            let change = Change::PutLayout {
                new: layout.clone(),
                old: None,
            };
            Ok((vec![change], layout))
        })
        .await?;
    tracing::info!(layout = %saved.name, "layout created");
    Ok(saved)
}

/// `PUT /layouts/{name}`: replaces the layout; every device following it
/// gets the new keys with its next file.
pub(super) async fn replace(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Layout>> {
    let mut value = parse_patch(&body)?;
    if let Some(fields) = value.as_object_mut() {
        let named = fields.entry("name").or_insert_with(|| name.clone().into());
        if named != &serde_json::Value::from(name.clone()) {
            return Err(Invalid::new("name", "cannot be changed").into());
        }
    }
    let layout: Layout = from_json(value)?;
    Ok(Json(replace_layout(&state, &actor, &name, layout).await?))
}

/// Replaces layout `name` with `layout` (same model), checked against its
/// model and every device following it.
pub(crate) async fn replace_layout(
    state: &AdminState,
    actor: &str,
    name: &str,
    layout: Layout,
) -> ApiResult<Layout> {
    let saved = state
        .store
        .change(actor, |store| {
            let old = store.layout(name)?.ok_or_else(|| not_found(name))?;
            if old.model != layout.model {
                return Err(ApiError::Conflict(Invalid::new(
                    "model",
                    "cannot be changed: devices of that model follow this layout",
                )));
            }
            check(state, store, &layout)?;
            let change = Change::PutLayout {
                new: layout.clone(),
                old: Some(old),
            };
            Ok((vec![change], layout))
        })
        .await?;
    tracing::info!(layout = %saved.name, "layout replaced");
    Ok(saved)
}

pub(super) async fn remove(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    remove_layout(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes layout `name`; refused while a device follows it.
pub(crate) async fn remove_layout(state: &AdminState, actor: &str, name: &str) -> ApiResult<()> {
    state
        .store
        .change(actor, |store| {
            let layout = store.layout(name)?.ok_or_else(|| not_found(name))?;
            let followers = store.devices_with_layout(name)?;
            if let Some(device) = followers.first() {
                return Err(ApiError::InUse(format!(
                    "layout {name} is followed by {} device(s), device {} first; assign them another layout first",
                    followers.len(),
                    device.mac
                )));
            }
            Ok((vec![Change::DeleteLayout(layout)], ()))
        })
        .await?;
    tracing::info!(layout = %name, "layout deleted");
    Ok(())
}

/// Refuses a layout that does not fit its model, or that would not fit
/// a device following it.
fn check(state: &AdminState, store: &Store, layout: &Layout) -> ApiResult<()> {
    layout.validate()?;
    let model = state.catalog.model(&layout.model).ok_or_else(|| {
        Invalid::new(
            "model",
            format!("unknown model '{}' (see GET /api/v1/models)", layout.model),
        )
    })?;
    // Keys on the phone itself fit any device of the model; a module key
    // fits the devices that have that module.
    let on_phone = on_phone(layout);
    model.check_device(&on_phone)?;
    for device in store.devices_with_layout(&layout.name)? {
        model
            .check_device(&layout.laid_under(&device))
            .map_err(|e| Invalid::new(e.field, format!("device {}: {}", device.mac, e.message)))?;
    }
    Ok(())
}

/// The layout's keys on the phone itself (not on a module), as a device of
/// its model with no line and no module would have them.
pub(crate) fn on_phone(layout: &Layout) -> Device {
    Device {
        mac: crate::domain::mac::Mac::from_bytes([0; 6]),
        model: layout.model.clone(),
        description: None,
        lines: Vec::new(),
        keys: layout
            .keys
            .iter()
            .filter(|k| k.module.is_none())
            .cloned()
            .collect(),
        layout: None,
        modules: Vec::new(),
        settings: Default::default(),
    }
}

/// Refuses a device whose layout is missing, is for another model, or
/// whose keys with the layout's do not fit the device.
pub(super) fn check_device_layout(
    state: &AdminState,
    store: &Store,
    device: &Device,
) -> ApiResult<()> {
    let Some(name) = &device.layout else {
        return Ok(());
    };
    let layout = store.layout(name)?.ok_or_else(|| {
        ApiError::Conflict(Invalid::new(
            "layout",
            format!("there is no layout {name} (see GET /api/v1/layouts)"),
        ))
    })?;
    if layout.model != device.model {
        return Err(Invalid::new(
            "layout",
            format!(
                "layout {name} is for the {}, not the {}",
                layout.model, device.model
            ),
        )
        .into());
    }
    if let Some(model) = state.catalog.model(&device.model) {
        model.check_device(&layout.laid_under(device))?;
    }
    Ok(())
}

/// Layout `name` is not in the store.
pub(crate) fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("layout {name}"))
}
