//! `/import`: users and their phones from a CSV or XiVO pipe file, checked
//! by a dry run first, then applied all or nothing, through the same
//! [`import::run`] the API's `/api/v1/import` calls.
//!
//! The file is pasted (or read into the page by a file picker, where
//! scripts run) and posted as a plain form, so the session's CSRF check
//! reads it like any other. A dry run keeps the file on the server, in
//! memory, under its SHA-256 and the session that ran it ([`Previews`]):
//! Apply then names the hash and the store generation it was checked
//! against and the server applies the file it kept, never one the browser
//! sends again, so what is applied is exactly what was previewed. The
//! bad rows download from the same kept preview. Where scripts run, the
//! page posts Apply to [`apply_streamed`] instead, which streams the
//! import's progress as the API's long operations do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::session::Signed;
use super::{Chrome, Shared, Ui, UiError, UiResult, html, html_with};
use crate::admin::api::backup::{after_bulk_work, long_operation};
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::admin::import::{self, ImportError, Imported, Mode, RowError};
use crate::domain::progress::{self, Report};
use crate::domain::secret::hex;

/// How long a dry run's file is kept for its Apply and its bad rows.
const PREVIEW_TTL: Duration = Duration::from_secs(15 * 60);

/// The most dry-run files kept, every session together: each is at most a
/// form's size (1 MiB), so previews hold at most this many MiB.
const MAX_PREVIEWS: usize = 8;

/// A dry run's file, kept for the session that ran it.
struct Preview {
    /// The SHA-256 of the session's CSRF token: the session's own secret,
    /// so its digest names the session without keeping the token.
    session: [u8; 32],
    /// The file's SHA-256, hex.
    hash: String,
    text: Arc<str>,
    errors: Arc<[RowError]>,
    /// The store generation a clean file was checked against; none when
    /// rows were refused (there is nothing to apply).
    generation: Option<u64>,
    kept: Instant,
}

/// The dry runs' files, bounded in count and age.
#[derive(Default)]
pub(crate) struct Previews {
    kept: Mutex<Vec<Preview>>,
}

impl Previews {
    /// Keeps `preview`, in place of the same file's earlier one; the
    /// oldest goes when there are too many.
    fn keep(&self, preview: Preview) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        kept.retain(|p| {
            now.duration_since(p.kept) < PREVIEW_TTL
                && !(p.session == preview.session && p.hash == preview.hash)
        });
        if kept.len() >= MAX_PREVIEWS {
            kept.remove(0);
        }
        kept.push(preview);
    }

    /// The live preview of `hash` that `session` ran: its file, its bad
    /// rows and the generation it was checked against.
    fn find(&self, session: &[u8; 32], hash: &str) -> Option<Found> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .find(|p| p.session == *session && p.hash == hash && p.kept.elapsed() < PREVIEW_TTL)
            .map(|p| Found {
                text: Arc::clone(&p.text),
                errors: Arc::clone(&p.errors),
                generation: p.generation,
            })
    }

    /// Forgets the preview of `hash` that `session` ran (it was applied).
    fn forget(&self, session: &[u8; 32], hash: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|p| !(p.session == *session && p.hash == hash));
    }
}

/// What a kept preview gives back.
struct Found {
    text: Arc<str>,
    errors: Arc<[RowError]>,
    generation: Option<u64>,
}

fn session_of(who: &Signed) -> [u8; 32] {
    Sha256::digest(who.csrf.as_bytes()).into()
}

#[derive(Template)]
#[template(path = "import.html")]
struct UploadPage {
    chrome: Chrome,
    csv: String,
    error: Option<String>,
}

/// `GET /import`: the form for a file.
pub(super) async fn form(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    html(UploadPage {
        chrome: ui.chrome(&who, "import", "Import"),
        csv: String::new(),
        error: None,
    })
}

/// What the upload form posts.
#[derive(Deserialize)]
pub(super) struct Upload {
    #[serde(default)]
    csv: String,
}

/// What a dry run or an apply found.
#[derive(Template)]
#[template(path = "import_result.html")]
struct ResultPage {
    chrome: Chrome,
    hash: String,
    /// The checked file's counts, when every row is good.
    clean: Option<Imported>,
    errors: Arc<[RowError]>,
    /// How many lines have at least one error.
    bad_lines: usize,
    /// Whether the file was written.
    applied: bool,
}

impl ResultPage {
    fn new(chrome: Chrome, hash: &str, outcome: Result<Imported, Arc<[RowError]>>) -> Self {
        let (clean, errors) = match outcome {
            Ok(imported) => (Some(imported), Arc::from([])),
            Err(errors) => (None, errors),
        };
        let mut lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        lines.dedup();
        ResultPage {
            chrome,
            hash: hash.to_string(),
            clean,
            bad_lines: lines.len(),
            errors,
            applied: false,
        }
    }
}

/// `POST /import`: the dry run. Nothing is written; the file is kept for
/// its Apply and its bad rows.
pub(super) async fn dry_run(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(upload): Form<Upload>,
) -> UiResult<Response> {
    // The session's form limit bounds the file, below the API's own.
    if upload.csv.trim().is_empty() {
        let page = UploadPage {
            chrome: ui.chrome(&who, "import", "Import"),
            csv: upload.csv,
            error: Some("Paste the file, or choose one.".to_string()),
        };
        return html_with(StatusCode::UNPROCESSABLE_ENTITY, page);
    }
    let text: Arc<str> = Arc::from(upload.csv);
    let hash = hex(&Sha256::digest(text.as_bytes()));
    let admin = Arc::clone(&ui.admin);
    let (actor, file) = (who.actor.clone(), Arc::clone(&text));
    let checked = blocking(move || {
        let store = &admin.store;
        let mode = Mode::DryRun;
        Ok(import::run(
            store,
            &admin.catalog,
            &actor,
            &file,
            mode,
            &progress::silent,
        ))
    })
    .await?;
    let outcome = match checked {
        Ok(imported) => Ok(imported),
        Err(ImportError::Rows(rows)) => Err(Arc::from(rows)),
        Err(other) => return Err(refusal(other).into()),
    };
    ui.previews.keep(Preview {
        session: session_of(&who),
        hash: hash.clone(),
        text,
        errors: outcome
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_else(|| Arc::from([])),
        generation: outcome.as_ref().ok().map(|i| i.generation),
        kept: Instant::now(),
    });
    let page = ResultPage::new(ui.chrome(&who, "import", "Import: dry run"), &hash, outcome);
    html(page)
}

/// What the Apply form posts: the previewed file's hash and the store
/// generation it was checked against.
#[derive(Deserialize)]
pub(super) struct ApplyFields {
    hash: String,
    generation: String,
}

/// `POST /import/apply`: writes the previewed file, all or nothing, if
/// it is the one this session previewed and the store has not changed
/// since; otherwise nothing is written and the page says why.
pub(super) async fn apply(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(fields): Form<ApplyFields>,
) -> UiResult<Response> {
    let (text, generation) = previewed(&ui, &who, &fields)?;
    let admin = Arc::clone(&ui.admin);
    let actor = who.actor.clone();
    let written = blocking(move || {
        let written = write(&admin, &actor, &text, generation, &progress::silent);
        after_bulk_work(&admin.store);
        Ok(written)
    })
    .await?;
    let (status, page) = applied_page(&ui, &who, fields.hash.trim(), written)?;
    html_with(status, page)
}

/// `POST /import/apply/stream`: [`apply`] for the page's script. Asked
/// for `application/x-ndjson`, it answers a line per progress report as
/// the rows are written, then `{"status", "answer"}`: the answer holds the
/// result page's HTML (`html`), or why nothing was imported (`error`).
/// A file this session did not preview is refused before anything runs,
/// with the page [`apply`] would show.
pub(super) async fn apply_streamed(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    headers: HeaderMap,
    Form(fields): Form<ApplyFields>,
) -> UiResult<Response> {
    let (text, generation) = previewed(&ui, &who, &fields)?;
    let store = Arc::clone(&ui.admin.store);
    let work = move |report: Report<'_>| {
        let written = write(&ui.admin, &who.actor, &text, generation, report);
        let (status, page) = applied_page(&ui, &who, fields.hash.trim(), written)?;
        let html = page
            .render()
            .map_err(|e| ApiError::Internal(format!("cannot render the import result: {e}")))?;
        Ok((status, json!({ "html": html })))
    };
    Ok(long_operation(store, &headers, work).await)
}

/// The file and the store generation an Apply names, if this session
/// checked that file in a dry run against that generation.
fn previewed(ui: &Ui, who: &Signed, fields: &ApplyFields) -> UiResult<(Arc<str>, u64)> {
    match ui.previews.find(&session_of(who), fields.hash.trim()) {
        Some(Found {
            text,
            generation: Some(generation),
            ..
        }) if fields.generation.trim() == generation.to_string() => Ok((text, generation)),
        _ => Err(UiError::Refused {
            status: StatusCode::CONFLICT,
            message: "This is not a file this session checked in a dry run, or its dry run \
                      expired: nothing was imported. Run the dry run again."
                .to_string(),
        }),
    }
}

/// Writes a previewed file, all or nothing, if the store is still at
/// `generation`. Call it on a blocking thread.
fn write(
    admin: &AdminState,
    actor: &str,
    text: &str,
    generation: u64,
    report: Report<'_>,
) -> Result<Imported, ImportError> {
    let mode = Mode::ApplyAt(generation);
    import::run(&admin.store, &admin.catalog, actor, text, mode, report)
}

/// The page that says what an Apply of the file `hash` did, and its
/// status; once written, the preview is forgotten.
fn applied_page(
    ui: &Ui,
    who: &Signed,
    hash: &str,
    written: Result<Imported, ImportError>,
) -> ApiResult<(StatusCode, ResultPage)> {
    let chrome = ui.chrome(who, "import", "Import");
    match written {
        Ok(imported) => {
            ui.previews.forget(&session_of(who), hash);
            let summary = &imported.summary;
            tracing::info!(users = ?summary.users, devices = ?summary.devices, "import");
            let page = ResultPage {
                applied: true,
                ..ResultPage::new(chrome, hash, Ok(imported))
            };
            Ok((StatusCode::CREATED, page))
        }
        Err(ImportError::Rows(rows)) => {
            let page = ResultPage::new(chrome, hash, Err(Arc::from(rows)));
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page))
        }
        Err(other) => Err(refusal(other)),
    }
}

/// Why nothing was imported: a store that changed since the dry run is a
/// conflict, like the API's.
fn refusal(error: ImportError) -> ApiError {
    match error {
        ImportError::Store(e) => e.into(),
        other => ApiError::InUse(other.to_string()),
    }
}

/// `GET /import/{hash}/bad-rows.csv`: the dry run's bad rows, one a line:
/// line, column, value, message.
pub(super) async fn bad_rows(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(hash): Path<String>,
) -> UiResult<Response> {
    let found = ui
        .previews
        .find(&session_of(&who), &hash)
        .ok_or_else(|| UiError::Refused {
            status: StatusCode::NOT_FOUND,
            message: "No dry run of this file in this session, or it expired: run it again."
                .to_string(),
        })?;
    let csv = bad_rows_csv(&found.errors).map_err(|e| UiError::Refused {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot write the bad rows: {e}"),
    })?;
    let name = format!(
        "attachment; filename=\"bad-rows-{}.csv\"",
        &hash[..12.min(hash.len())]
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        csv,
    )
        .into_response())
}

/// The bad rows as CSV. A cell that a spreadsheet would take for a
/// formula gets a leading `'`: the values come from an uploaded file,
/// and opening the report must not run what it quotes.
fn bad_rows_csv(errors: &[RowError]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["line", "column", "value", "message"])?;
    for error in errors {
        let line = error.line.to_string();
        let cells = [&line, &error.field, &error.value, &error.error].map(|c| inert(c));
        writer.write_record(&cells)?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// `cell`, made inert for a spreadsheet.
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: u64, value: &str) -> RowError {
        RowError {
            line,
            field: "mac".into(),
            value: value.into(),
            error: "bad, \"really\"".into(),
        }
    }

    #[test]
    fn bad_rows_are_quoted_and_formulas_made_inert() {
        let csv = bad_rows_csv(&[error(3, "zz"), error(5, "=HYPERLINK(\"x\")")]).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "line,column,value,message\n\
             3,mac,zz,\"bad, \"\"really\"\"\"\n\
             5,mac,\"'=HYPERLINK(\"\"x\"\")\",\"bad, \"\"really\"\"\"\n"
        );
    }

    fn preview(session: u8, hash: &str) -> Preview {
        Preview {
            session: [session; 32],
            hash: hash.into(),
            text: Arc::from("x"),
            errors: Arc::from([]),
            generation: Some(1),
            kept: Instant::now(),
        }
    }

    #[test]
    fn a_preview_is_found_only_by_its_session_and_the_oldest_make_room() {
        let previews = Previews::default();
        previews.keep(preview(1, "a"));
        assert!(previews.find(&[1; 32], "a").is_some());
        assert!(previews.find(&[2; 32], "a").is_none(), "another session");
        for n in 0..MAX_PREVIEWS {
            previews.keep(preview(2, &n.to_string()));
        }
        assert!(previews.find(&[1; 32], "a").is_none(), "the oldest went");
        assert_eq!(previews.kept.lock().unwrap().len(), MAX_PREVIEWS);
        previews.forget(&[2; 32], "0");
        assert!(previews.find(&[2; 32], "0").is_none());
    }
}
