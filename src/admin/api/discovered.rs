//! `/api/v1/discovered`: MACs that asked for their file but are not
//! provisioned, and adopting one as a device.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::devices::check;
use super::{Actor, ApiError, ApiResult, Shared, Who, parse_body};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Discovered, Invalid, LineAssignment, UserId};
use crate::store::Change;

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<Discovered>>> {
    // Show what phones did up to now, not up to the last batch write.
    state.provisioner.flush_sightings()?;
    Ok(Json(state.store.discovered()?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Adopt {
    /// The model, when the guess is missing or wrong.
    #[serde(default)]
    model: Option<String>,
    /// The user for line 1.
    #[serde(default)]
    user: Option<UserId>,
}

/// Turns a discovered MAC into a device (and forgets it as discovered).
pub(super) async fn adopt(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(mac): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mac: Mac = mac
        .parse()
        .map_err(|e| Invalid::new("mac", format!("'{mac}': {e}")))?;
    let request: Adopt = if body.is_empty() {
        Adopt::default()
    } else {
        parse_body(&body)?
    };
    state.provisioner.flush_sightings()?;
    let device = state
        .store
        .change(&actor, |store| {
            let found = store
                .discovered_mac(mac)?
                .ok_or_else(|| ApiError::NotFound(format!("{mac} has not been discovered")))?;
            let model = request.model.clone().or(found.model).ok_or_else(|| {
                Invalid::new("model", "the phone did not say its model: give one")
            })?;
            let device = Device {
                mac,
                model,
                description: None,
                lines: request
                    .user
                    .map(|user| vec![LineAssignment { user, label: None }])
                    .unwrap_or_default(),
                keys: Vec::new(),
                layout: None,
                modules: Vec::new(),
                settings: Default::default(),
            };
            check(&state, store, &device)?;
            if store.device(mac)?.is_some() {
                return Err(ApiError::Conflict(Invalid::new(
                    "mac",
                    format!("device {mac} already exists"),
                )));
            }
            let changes = vec![
                Change::PutDevice {
                    new: device.clone(),
                    old: None,
                },
                Change::DeleteDiscovered(mac),
            ];
            Ok((changes, device))
        })
        .await?;
    tracing::info!(%mac, model = %device.model, "discovered phone adopted");
    Ok((
        StatusCode::CREATED,
        Json(super::devices::with_http_credentials(&state, &device)),
    ))
}
