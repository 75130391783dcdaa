//! `/api/v1/settings` (global) and `/api/v1/models/{id}/settings`: the
//! lower layers of the settings a device inherits.

use axum::body::Bytes;
use axum::extract::Path;
use axum::{Extension, Json};

use super::{Actor, ApiError, ApiResult, Shared, Who, parse_body};
use crate::model::Settings;
use crate::provision::model_scope;
use crate::store::{Change, GLOBAL_SCOPE};

pub(super) async fn show_global(state: Shared) -> ApiResult<Json<Settings>> {
    Ok(Json(state.store.settings(GLOBAL_SCOPE)?))
}

pub(super) async fn replace_global(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    replace(&state, &actor, GLOBAL_SCOPE, &body).await
}

pub(super) async fn show_model(state: Shared, Path(id): Path<String>) -> ApiResult<Json<Settings>> {
    let scope = known_model_scope(&state, &id)?;
    Ok(Json(state.store.settings(&scope)?))
}

pub(super) async fn replace_model(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    let scope = known_model_scope(&state, &id)?;
    replace(&state, &actor, &scope, &body).await
}

async fn replace(
    state: &Shared,
    actor: &str,
    scope: &str,
    body: &Bytes,
) -> ApiResult<Json<Settings>> {
    let settings: Settings = parse_body(body)?;
    settings.validate()?;
    state.store.change(actor, |store| {
        let change = Change::PutSettings {
            scope: scope.to_string(),
            new: settings.clone(),
            old: store.settings(scope)?,
        };
        Ok::<_, ApiError>((vec![change], ()))
    })?;
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
