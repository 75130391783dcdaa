//! `/api/v1/import` (CSV), `/api/v1/export` and `/api/v1/restore` (JSON).

use std::cell::Cell;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::devices::reload_templates;
use super::templates::check_restore;
use super::{Actor, AdminState, ApiError, ApiResult, Seen, Shared, Who, blocking};
use crate::admin::backup::{self, Backup, RestoreError};
use crate::admin::import::{self, ImportError, MAX_CSV_BYTES, Mode};
use crate::domain::progress::{self, Line, NDJSON, Report};
use crate::domain::records::HoldsSecrets;
use crate::render::Renderer;
use crate::render::memory;
use crate::store::Store;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportOptions {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /import[?dry_run=true]`: users and phones from CSV, all or nothing.
pub(super) async fn import(
    State(state): Shared,
    Extension(Actor(actor)): Who,
    Query(options): Query<ImportOptions>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if body.len() > MAX_CSV_BYTES {
        return Err(ApiError::TooLarge(format!(
            "a CSV file is at most {MAX_CSV_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the CSV file must be UTF-8".into()))?;
    Ok(
        long_operation(state.store.clone(), &headers, move |report| {
            import_csv(&state, &actor, options, &text, report)
        })
        .await,
    )
}

fn import_csv(
    state: &AdminState,
    actor: &str,
    options: ImportOptions,
    text: &str,
    report: Report<'_>,
) -> Outcome {
    let mode = if options.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let summary = match import::run(&state.store, &state.catalog, actor, text, mode, report) {
        Ok(imported) => imported.summary,
        Err(ImportError::Rows(rows)) => {
            let error = format!("{} row(s) refused; nothing was imported", rows.len());
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": error, "rows": rows}),
            ));
        }
        Err(e @ ImportError::StoreChanged) => return Err(ApiError::InUse(e.to_string())),
        Err(ImportError::Store(e)) => return Err(e.into()),
    };
    let status = if options.dry_run {
        StatusCode::OK
    } else {
        tracing::info!(users = ?summary.users, devices = ?summary.devices, "import");
        StatusCode::CREATED
    };
    // `users` and `devices` stay the created counts, as clients written
    // before imports updated read them.
    let (users, devices) = (summary.users, summary.devices);
    Ok((
        status,
        json!({
            "dry_run": options.dry_run,
            "format": summary.format,
            "users": users.created,
            "users_updated": users.updated,
            "users_unchanged": users.unchanged,
            "devices": devices.created,
            "devices_updated": devices.updated,
            "devices_unchanged": devices.unchanged,
        }),
    ))
}

/// An answer's status and JSON body.
pub(crate) type Outcome = ApiResult<(StatusCode, Value)>;

/// How often a streamed answer reports progress, at most.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Runs a long operation on a blocking thread. A client that accepts
/// `application/x-ndjson` gets one JSON line per report as it goes, then a
/// last line with the answer's status and body; any other client gets the
/// answer alone, as usual.
pub(crate) async fn long_operation(
    store: Arc<Store>,
    headers: &HeaderMap,
    work: impl FnOnce(Report<'_>) -> Outcome + Send + 'static,
) -> Response {
    let streamed = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON));
    if !streamed {
        let outcome = blocking(move || {
            let outcome = work(&progress::silent);
            after_bulk_work(&store);
            outcome
        })
        .await;
        return match outcome {
            Ok((status, body)) => (status, Json(body)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let (lines, received) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let last = Cell::new(None::<Instant>);
        let report = |stage, done, total| {
            let now = Instant::now();
            if done == total || last.get().is_none_or(|at| now - at >= REPORT_EVERY) {
                last.set(Some(now));
                // A slow reader misses reports, never the answer.
                let _ = lines.try_send(ndjson(&Line::Progress { stage, done, total }));
            }
        };
        let (status, answer) = work(&report).unwrap_or_else(ApiError::status_and_body);
        after_bulk_work(&store);
        let status = status.as_u16();
        let _ = lines.blocking_send(ndjson(&Line::Answer { status, answer }));
    });
    let body = futures_util::stream::unfold(received, |mut received| async move {
        let line = received.recv().await?;
        Some((Ok::<_, Infallible>(line), received))
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response()
}

/// Gives back the memory bulk work took: what sled deferred freeing is
/// freed, the store starts afresh (what it kept is scattered among what
/// the work freed), then every thread gives back what it freed. Freeing
/// first lets the reopened store's pages take the freed room instead of
/// fresh memory between old nodes still waiting to be freed: 8-9 MiB less
/// after an import or a restore of 10,000 rows (BENCHMARKS.md).
pub(crate) fn after_bulk_work(store: &Store) {
    memory::note_bulk_work();
    if let Err(e) = store.start_afresh() {
        tracing::warn!(error = %e, "the store could not start afresh after bulk work");
    }
    memory::note_bulk_work();
}

fn ndjson(line: &Line) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// `GET /export`: everything, as a backup document; with its secrets
/// masked for a token that may not see them (such a backup does not
/// restore: the mask is refused as a secret).
pub(super) async fn export(state: Shared, Extension(scope): Seen) -> ApiResult<Json<Backup>> {
    // Reading every record takes a while: not on the workers phones share.
    let store = Arc::clone(&state.store);
    let exported = blocking(move || {
        let exported = backup::export(&store);
        after_bulk_work(&store);
        Ok(exported?)
    })
    .await?;
    Ok(Json(exported.shown_to(scope)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreOptions {
    #[serde(default)]
    replace: bool,
}

/// `POST /restore[?replace=true]`: a backup, into an empty store or over everything.
pub(super) async fn restore(
    State(state): Shared,
    Extension(Actor(actor)): Who,
    Query(options): Query<RestoreOptions>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // Ten thousand records parse into a few tens of MiB. Parsed, checked,
    // written and dropped on one blocking thread, which then gives its
    // free memory back: memory freed on another thread than the one that
    // took it stays with the taker until that thread next cleans up, and
    // the taker may be an idle one that never does.
    Ok(
        long_operation(state.store.clone(), &headers, move |report| {
            let backup: Backup = super::parse_body(&body)?;
            drop(body);
            restore_backup(&state, &actor, options, backup, report)
        })
        .await,
    )
}

/// A renderer with the backup's uploads, to check them before anything
/// is written; none when it has none (nothing to check, and no reason to
/// copy every compiled template).
fn candidate_renderer(state: &AdminState, backup: &Backup) -> ApiResult<Option<Renderer>> {
    let uploads: Vec<(&str, &str)> = backup
        .templates
        .iter()
        .filter_map(|(k, h)| h.current().map(|v| (k.as_str(), v.source.as_str())))
        .collect();
    if uploads.is_empty() {
        return Ok(None);
    }
    Ok(Some(state.provisioner.renderer().with_uploads(uploads)?))
}

fn restore_backup(
    state: &AdminState,
    actor: &str,
    options: RestoreOptions,
    backup: Backup,
    report: Report<'_>,
) -> Outcome {
    // Uploaded templates must compile with this deskboot's built-ins, and
    // render within budget.
    if let Some(candidate) = candidate_renderer(state, &backup)? {
        check_restore(state, &candidate, &backup)?;
    }
    let (users, devices) = (backup.users.len(), backup.devices.len());
    state
        .store
        .change_blocking(
            actor,
            |store| {
                let changes = backup::plan_restore(backup, store, &state.catalog, options.replace)?;
                Ok::<_, RestoreError>((changes, ()))
            },
            report,
        )
        .map_err(|e| match e {
            RestoreError::Invalid(i) => ApiError::Invalid(i),
            RestoreError::NotEmpty => ApiError::InUse(e.to_string()),
            RestoreError::Store(e) => e.into(),
        })?;
    reload_templates(state)?;
    tracing::info!(users, devices, "restore");
    Ok((StatusCode::OK, json!({"users": users, "devices": devices})))
}
