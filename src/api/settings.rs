//! `/api/v1/settings` (global) and `/api/v1/models/{id}/settings`: the
//! lower layers of the settings a device inherits.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;

use super::{ApiError, ApiResult, Shared, parse_body};
use crate::model::Settings;
use crate::provision::model_scope;
use crate::store::GLOBAL_SCOPE;

pub(super) async fn show_global(state: Shared) -> ApiResult<Json<Settings>> {
    Ok(Json(state.store.settings(GLOBAL_SCOPE)?))
}

pub(super) async fn replace_global(state: Shared, body: Bytes) -> ApiResult<Json<Settings>> {
    replace(&state, GLOBAL_SCOPE, &body).await
}

pub(super) async fn show_model(state: Shared, Path(id): Path<String>) -> ApiResult<Json<Settings>> {
    let scope = known_model_scope(&state, &id)?;
    Ok(Json(state.store.settings(&scope)?))
}

pub(super) async fn replace_model(
    state: Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    let scope = known_model_scope(&state, &id)?;
    replace(&state, &scope, &body).await
}

async fn replace(state: &Shared, scope: &str, body: &Bytes) -> ApiResult<Json<Settings>> {
    let settings: Settings = parse_body(body)?;
    settings.validate()?;
    state.store.put_settings(scope, &settings)?;
    state.store.flush().await?;
    tracing::info!(scope, "settings replaced");
    Ok(Json(settings))
}

fn known_model_scope(state: &Shared, id: &str) -> ApiResult<String> {
    state
        .catalog
        .model(id)
        .map(|m| model_scope(&m.id))
        .ok_or_else(|| ApiError::NotFound(format!("model {id} not found")))
}
