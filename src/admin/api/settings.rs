//! `/api/v1/settings` (global) and `/api/v1/models/{id}/settings`: the
//! lower layers of the settings a device inherits. PUT replaces them, PATCH
//! merges into them.

use axum::body::Bytes;
use axum::extract::Path;
use axum::{Extension, Json};

use serde_json::Value;

use super::{
    Actor, AdminState, ApiError, ApiResult, Seen, Shared, Who, from_json, merge_patch, parse_body,
    parse_patch,
};
use crate::domain::records::{HoldsSecrets, Settings};
use crate::provision::model_scope;
use crate::store::{Change, GLOBAL_SCOPE};

pub(super) async fn show_global(state: Shared, Extension(seen): Seen) -> ApiResult<Json<Settings>> {
    Ok(Json(state.store.settings(GLOBAL_SCOPE)?.shown_to(seen)))
}

pub(super) async fn replace_global(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    replace(&state, &actor, GLOBAL_SCOPE, &body).await
}

/// `PATCH /settings`: a JSON merge patch (`null` unsets a field).
pub(super) async fn patch_global(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    patch(&state, &actor, GLOBAL_SCOPE, &body).await
}

pub(super) async fn show_model(
    state: Shared,
    Extension(seen): Seen,
    Path(id): Path<String>,
) -> ApiResult<Json<Settings>> {
    let scope = known_model_scope(&state, &id)?;
    Ok(Json(state.store.settings(&scope)?.shown_to(seen)))
}

pub(super) async fn replace_model(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    replace(&state, &actor, &known_model_scope(&state, &id)?, &body).await
}

/// `PATCH /models/{id}/settings`: a JSON merge patch.
pub(super) async fn patch_model(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Settings>> {
    patch(&state, &actor, &known_model_scope(&state, &id)?, &body).await
}

/// Replaces the settings of `scope` with the body's.
async fn replace(
    state: &Shared,
    actor: &str,
    scope: &str,
    body: &Bytes,
) -> ApiResult<Json<Settings>> {
    let settings: Settings = parse_body(body)?;
    put(state, actor, scope, |_| Ok(settings)).await
}

/// Merges the body, a JSON merge patch, into the settings of `scope`.
async fn patch(
    state: &Shared,
    actor: &str,
    scope: &str,
    body: &Bytes,
) -> ApiResult<Json<Settings>> {
    let patch = parse_patch(body)?;
    Ok(Json(patch_settings(state, actor, scope, patch).await?))
}

/// Merges `patch`, a JSON merge patch, into the settings of `scope`,
/// checked as the API's PATCH checks them.
pub(crate) async fn patch_settings(
    state: &AdminState,
    actor: &str,
    scope: &str,
    patch: Value,
) -> ApiResult<Settings> {
    put(state, actor, scope, |old| patched(old, patch))
        .await
        .map(|Json(settings)| settings)
}

/// The settings of `scope` made from the stored ones by `make`, checked
/// and stored in one change, so a patch cannot lose a concurrent one.
async fn put(
    state: &AdminState,
    actor: &str,
    scope: &str,
    make: impl FnOnce(&Settings) -> ApiResult<Settings>,
) -> ApiResult<Json<Settings>> {
    let settings = state
        .store
        .change(actor, |store| {
            let old = store.settings(scope)?;
            let mut new = make(&old)?;
            new.unmask_from(&old);
            new.validate()?;
            let change = Change::PutSettings {
                scope: scope.to_string(),
                new: new.clone(),
                old,
            };
            Ok::<_, ApiError>((vec![change], new))
        })
        .await?;
    tracing::info!(scope, "settings changed");
    Ok(Json(settings))
}

fn patched(old: &Settings, patch: Value) -> ApiResult<Settings> {
    let mut value = serde_json::to_value(old).unwrap_or_default();
    merge_patch(&mut value, patch);
    from_json(value)
}

/// The settings scope of model `id`, which the catalog must know.
pub(crate) fn known_model_scope(state: &AdminState, id: &str) -> ApiResult<String> {
    state
        .catalog
        .model(id)
        .map(|m| model_scope(&m.id))
        .ok_or_else(|| ApiError::NotFound(format!("model {id} not found")))
}
