//! `/api/v1/models`: the phone models the catalog knows.

use axum::Json;
use axum::extract::Path;
use serde_json::Value;

use super::{ApiError, ApiResult, Shared};

pub(super) async fn list(state: Shared) -> ApiResult<Json<Value>> {
    to_json(state.catalog.models())
}

pub(super) async fn show(state: Shared, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let model = state
        .catalog
        .model(&id)
        .ok_or_else(|| ApiError::NotFound(format!("model {id} not found")))?;
    to_json(model)
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> ApiResult<Json<Value>> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
