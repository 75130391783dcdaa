//! `/api/v1/audit?since=&target=`: who changed what, oldest first, each
//! entry with the values its change replaced (`before`, none in entries
//! written before the log kept them).

use axum::Json;
use axum::extract::Query;
use serde::Deserialize;

use super::{ApiResult, Shared};
use crate::store::audit::AuditEntry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Filter {
    /// Unix seconds.
    #[serde(default)]
    since: u64,
    /// e.g. `device/001565aabbcc`.
    target: Option<String>,
}

pub(super) async fn list(
    state: Shared,
    Query(filter): Query<Filter>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(
        state.store.audit(filter.since, filter.target.as_deref())?,
    ))
}
