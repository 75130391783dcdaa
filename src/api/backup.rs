//! `/api/v1/import` (CSV), `/api/v1/export` and `/api/v1/restore` (JSON).

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::devices::reload_templates;
use super::{Actor, ApiError, ApiResult, Shared, Who};
use crate::backup::{self, Backup, RestoreError};
use crate::import::{self, ImportError, MAX_CSV_BYTES};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportOptions {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /import[?dry_run=true]`: users and phones from CSV, all or nothing.
pub(super) async fn import(
    state: Shared,
    Extension(Actor(actor)): Who,
    Query(options): Query<ImportOptions>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.len() > MAX_CSV_BYTES {
        return Err(ApiError::TooLarge(format!(
            "a CSV file is at most {MAX_CSV_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the CSV file must be UTF-8".into()))?;
    let text = text.trim_start_matches('\u{feff}');
    let result = state.store.change(&actor, |store| {
        let (changes, summary) = import::plan(text, store, &state.catalog)?;
        // A dry run checks everything and writes nothing.
        let changes = if options.dry_run { Vec::new() } else { changes };
        Ok::<_, ImportError>((changes, summary))
    });
    let summary = match result {
        Ok(summary) => summary,
        Err(ImportError::Rows(rows)) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(
                    json!({"error": format!("{} row(s) refused; nothing was imported", rows.len()), "rows": rows}),
                ),
            ));
        }
        Err(ImportError::Store(e)) => return Err(e.into()),
    };
    if !options.dry_run {
        state.store.flush().await?;
        tracing::info!(users = summary.users, devices = summary.devices, "import");
    }
    let status = if options.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(
            json!({"dry_run": options.dry_run, "format": summary.format, "users": summary.users, "devices": summary.devices}),
        ),
    ))
}

/// `GET /export`: everything, as a backup document.
pub(super) async fn export(state: Shared) -> ApiResult<Json<Backup>> {
    Ok(Json(backup::export(&state.store)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreOptions {
    #[serde(default)]
    replace: bool,
}

/// `POST /restore[?replace=true]`: a backup, into an empty store or over everything.
pub(super) async fn restore(
    state: Shared,
    Extension(Actor(actor)): Who,
    Query(options): Query<RestoreOptions>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let backup: Backup = super::parse_body(&body)?;
    let (users, devices) = (backup.users.len(), backup.devices.len());
    // Uploaded templates must compile with this deskboot's built-ins.
    let uploads: Vec<(String, String)> = backup
        .templates
        .iter()
        .filter_map(|(k, h)| h.current().map(|v| (k.clone(), v.source.clone())))
        .collect();
    state
        .provisioner
        .renderer()
        .with_uploads(uploads.iter().map(|(k, s)| (k.as_str(), s.as_str())))?;
    state
        .store
        .change(&actor, |store| {
            Ok::<_, RestoreError>((
                backup::plan_restore(backup, store, &state.catalog, options.replace)?,
                (),
            ))
        })
        .map_err(|e| match e {
            RestoreError::Invalid(i) => ApiError::Invalid(i),
            RestoreError::NotEmpty => ApiError::InUse(e.to_string()),
            RestoreError::Store(e) => e.into(),
        })?;
    reload_templates(&state)?;
    state.store.flush().await?;
    tracing::info!(users, devices, "restore");
    Ok(Json(json!({"users": users, "devices": devices})))
}
