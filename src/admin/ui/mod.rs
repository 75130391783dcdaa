//! The admin web UI: server-rendered HTML at `/` on the admin listener,
//! beside the JSON API it shares its logic with.
//!
//! A browser signs in with an admin token ([`session`]) and gets a session
//! cookie; every page then goes through [`session::require`] (who, which
//! scope, the CSRF token of a write) and every answer through
//! [`security_headers`]. Pages are askama templates under `ui/templates/`,
//! checked when the crate builds and escaped by default; htmx and
//! SortableJS ([`assets`]) only enhance forms that work without them.
//! Pages call the same store and provisioner functions the API handlers
//! do, and heavy work goes through [`crate::admin::api::blocking`].
//!
//! Adding a page: one file here with its handlers and template structs, its
//! templates under `ui/templates/` (each extends `base.html`), and one
//! `.route` line in [`router`].

mod assets;
mod audit;
mod bans;
mod clone;
mod dashboard;
mod device;
mod device_tabs;
mod devices;
mod discovered;
mod import;
mod key_tools;
mod keys;
mod layouts;
mod login;
mod session;
mod settings;
mod templates;
mod tokens;
mod users;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::admin::api::{AdminState, ApiError};
use assets::Assets;
use session::{Sessions, Signed};

/// What the UI's handlers share: the API's state, the sessions and the
/// embedded assets.
pub(crate) struct Ui {
    admin: Arc<AdminState>,
    sessions: Sessions,
    assets: Assets,
    previews: import::Previews,
    drift: devices::DriftMemo,
}

type Shared = State<Arc<Ui>>;

/// The web UI's routes, for the admin listener's router to merge.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(admin: Arc<AdminState>) -> Router<S> {
    let ui = Arc::new(Ui {
        admin,
        sessions: Sessions::default(),
        assets: Assets::embedded(),
        previews: import::Previews::default(),
        drift: devices::DriftMemo::default(),
    });
    let pages = Router::new()
        .route("/", get(dashboard::show))
        .route("/logout", post(login::logout))
        .route("/users", get(users::list).post(users::create))
        .route("/users/new", get(users::new))
        .route("/users/{id}", get(users::show).post(users::update))
        .route("/users/{id}/password", post(users::rotate_password))
        .route("/devices", get(devices::list).post(devices::create))
        .route("/devices/new", get(devices::new))
        .route("/devices/{mac}", get(device::show))
        .route("/devices/{mac}/resync", post(device::resync))
        .route("/devices/{mac}/keys", post(keys::submit))
        .route("/devices/{mac}/targets", get(keys::targets))
        .route("/import", get(import::form).post(import::dry_run))
        .route("/import/apply", post(import::apply))
        .route("/import/apply/stream", post(import::apply_streamed))
        .route("/import/{hash}/bad-rows.csv", get(import::bad_rows))
        .route("/discovered", get(discovered::list))
        .route("/discovered/{mac}/ignore", post(discovered::ignore))
        .route("/discovered/{mac}/ban", post(discovered::ban))
        .route("/devices/{mac}/lines", post(device::lines))
        .route("/devices/{mac}/settings", post(device_tabs::save_settings))
        .route("/templates", get(templates::list))
        .route(
            "/devices/{mac}/replace",
            get(clone::wizard).post(clone::confirm),
        )
        .route("/users/{id}/replace", get(clone::from_user))
        .route(
            "/templates/{scope}/{target}/{file}",
            get(templates::show).post(templates::submit),
        )
        .route("/devices/bulk", post(devices::bulk))
        .route("/audit", get(audit::list))
        .route("/settings", get(settings::grid).post(settings::edit))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}/revoke", post(tokens::revoke))
        .route("/bans", get(bans::list))
        .route("/bans/lift", post(bans::lift))
        .route("/layouts", get(layouts::list).post(layouts::create))
        .route("/layouts/{name}", get(layouts::show).post(layouts::submit))
        .route("/layouts/{name}/targets", get(layouts::targets))
        .route("/layouts/{name}/delete", post(layouts::delete))
        .route("/layouts/{name}/apply", get(layouts::choose))
        .layer(from_fn_with_state(ui.clone(), session::require));
    Router::new()
        .merge(pages)
        .route("/login", get(login::form).post(login::submit))
        .route("/assets/{name}", get(assets::serve))
        .layer(from_fn(session::refuse_cross_site))
        .layer(from_fn(security_headers))
        .with_state(ui)
}

/// What the page may load: only this origin's scripts, styles and images,
/// nothing inline, no framing, forms posted only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the headers every UI answer carries. Pages are never cached (they
/// show the store as it is, and some show a secret once); the content-hashed
/// assets say otherwise themselves.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What every signed-in page's frame shows: who is signed in, the section,
/// the CSRF token its forms carry, and where the assets are.
pub(crate) struct Chrome {
    /// The signed-in token's name; empty on the sign-in page.
    pub actor: String,
    /// Whether write controls are shown.
    pub can_write: bool,
    /// The per-session token every write carries.
    pub csrf: String,
    /// The navigation entry to mark (`dashboard`, `users`, `devices`).
    pub section: &'static str,
    /// The page's title.
    pub title: String,
    /// The assets' content-hashed paths.
    pub assets: AssetPaths,
}

/// The content-hashed paths the pages link to.
#[derive(Clone)]
pub(crate) struct AssetPaths {
    /// htmx.
    pub htmx: String,
    /// SortableJS.
    pub sortable: String,
    /// The UI's own script.
    pub script: String,
    /// The UI's stylesheet.
    pub style: String,
}

impl Ui {
    /// The frame of a page in `section` titled `title`, for `who`.
    fn chrome(&self, who: &Signed, section: &'static str, title: impl Into<String>) -> Chrome {
        Chrome {
            actor: who.actor.clone(),
            can_write: who.scope.may_write(),
            csrf: who.csrf.clone(),
            section,
            title: title.into(),
            assets: self.assets.paths(),
        }
    }

    /// The frame of a page shown before signing in.
    fn anonymous_chrome(&self, title: &str) -> Chrome {
        Chrome {
            actor: String::new(),
            can_write: false,
            csrf: String::new(),
            section: "",
            title: title.to_string(),
            assets: self.assets.paths(),
        }
    }
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    /// The API's logic refused or failed; its status and message.
    #[error("{message}")]
    Refused {
        /// The HTTP status the API would answer.
        status: StatusCode,
        /// What went wrong, in the administrator's words.
        message: String,
    },
    /// A template failed to render.
    #[error("cannot render the page: {0}")]
    Render(#[from] askama::Error),
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        let (status, body) = error.status_and_body();
        let message = match (body["error"].as_str(), body["field"].as_str()) {
            (Some(error), Some(field)) => format!("{field}: {error}"),
            (Some(error), None) => error.to_string(),
            _ => status.to_string(),
        };
        UiError::Refused { status, message }
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

/// The plain page that says what went wrong.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: StatusCode,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = match &self {
            UiError::Refused { status, .. } => *status,
            UiError::Render(e) => {
                tracing::error!(error = %e, "web UI page failed to render");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let page = ErrorPage {
            status,
            message: self.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        }
    }
}

type UiResult<T> = Result<T, UiError>;

/// The answer to a write that made secrets (a SIP password, a phone's
/// HTTP credentials): the one time they are shown.
#[derive(Template)]
#[template(path = "shown_once.html")]
struct ShownOnce {
    chrome: Chrome,
    /// What was done.
    what: String,
    /// Each secret's name and value.
    secrets: Vec<(String, String)>,
    /// Where to go next.
    next: String,
}

/// A write that affects many records, or cannot be undone: first asked
/// ("affects N devices"), then its outcome shown.
#[derive(Template)]
#[template(path = "confirm.html")]
struct Confirm {
    chrome: Chrome,
    /// Where the confirmed form posts.
    action: String,
    /// What the form posts again, beside `confirm=yes`.
    fields: Vec<(String, String)>,
    /// What it will do, and to how many.
    question: String,
    /// What it affects, by name.
    listed: Vec<String>,
    /// Where Cancel and Back go.
    back: String,
    /// Once it ran: what it did, or why not.
    outcome: Option<Result<String, String>>,
}

impl Confirm {
    /// The question before a write posted to `action`.
    fn ask(
        chrome: Chrome,
        action: &str,
        fields: Vec<(String, String)>,
        question: String,
        listed: Vec<String>,
        back: String,
    ) -> Confirm {
        Confirm {
            chrome,
            action: action.to_string(),
            fields,
            question,
            listed,
            back,
            outcome: None,
        }
    }

    /// What a confirmed write did.
    fn done(chrome: Chrome, outcome: Result<String, String>, back: String) -> Confirm {
        Confirm {
            chrome,
            action: String::new(),
            fields: Vec::new(),
            question: String::new(),
            listed: Vec::new(),
            back,
            outcome: Some(outcome),
        }
    }
}

/// A rendered page, answered as HTML.
fn html(page: impl Template) -> UiResult<Response> {
    html_with(StatusCode::OK, page)
}

/// A rendered page answered with `status`: 422 for a form shown again
/// with why it was refused.
fn html_with(status: StatusCode, page: impl Template) -> UiResult<Response> {
    Ok((status, Html(page.render()?)).into_response())
}

/// 422 for a page that says a write failed, else 200.
fn status_of(failed: bool) -> StatusCode {
    if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    }
}

/// A 303 to `location` (after a write: reloading shows, not repeats).
fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The header htmx sends with its requests.
const HX_REQUEST: HeaderName = HeaderName::from_static("hx-request");

/// `value` made safe inside a URL's query.
fn query_value(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// Lists page by page: which page of how many, and the links to the others.
pub(crate) struct Pager {
    /// The page shown (from 1).
    pub page: usize,
    /// How many pages there are (at least 1).
    pub pages: usize,
    /// How many items match.
    pub total: usize,
    /// The link to the page before, if any.
    pub previous: Option<String>,
    /// The link to the page after, if any.
    pub next: Option<String>,
}

impl Pager {
    /// Page `page` (from 1, clamped) of `total` items, `per_page` a page;
    /// the links are `base` (a path and query, ending in `?` or `&`) and
    /// the page number. Gives the range of items to show.
    fn new(
        page: Option<usize>,
        total: usize,
        per_page: usize,
        base: &str,
    ) -> (Pager, std::ops::Range<usize>) {
        let pages = total.div_ceil(per_page).max(1);
        let page = page.unwrap_or(1).clamp(1, pages);
        let start = (page - 1) * per_page;
        let link = |p: usize| format!("{base}page={p}");
        let pager = Pager {
            page,
            pages,
            total,
            previous: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
        };
        (pager, start..(start + per_page).min(total))
    }
}

/// A Unix time as the pages show it: UTC, to the second.
fn show_time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || unix.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// An optional form field: empty means none.
fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pager_clamps_its_page_and_links_to_its_neighbours() {
        let (pager, range) = Pager::new(Some(3), 120, 50, "/devices?q=a&");
        assert_eq!((pager.page, pager.pages, range), (3, 3, 100..120));
        assert_eq!(pager.previous.as_deref(), Some("/devices?q=a&page=2"));
        assert_eq!(pager.next, None);
        let (pager, range) = Pager::new(Some(9), 0, 50, "/users?");
        assert_eq!((pager.page, pager.pages, range), (1, 1, 0..0));
    }

    #[test]
    fn times_show_in_utc() {
        assert_eq!(show_time(0), "1970-01-01 00:00:00 UTC");
    }
}
