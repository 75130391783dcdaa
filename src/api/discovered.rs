//! `/api/v1/discovered`: MACs that asked for their file but are not provisioned.

use axum::Json;

use super::{ApiResult, Shared};
use crate::model::Discovered;

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<Discovered>>> {
    // Show what phones did up to now, not up to the last batch write.
    state.provisioner.flush_sightings()?;
    Ok(Json(state.store.discovered()?))
}
