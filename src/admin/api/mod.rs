//! The admin JSON API under `/api/v1/`, on its own listener.
//!
//! One file per resource; this module holds the router, the bearer-token
//! check and the one place where errors become HTTP answers
//! (`{"error": "...", "field": "..."}`). Every change is validated in full
//! before the store is touched, so a refused request changes nothing.

mod audit;
pub(crate) mod backup;
pub(crate) mod bans;
pub(crate) mod devices;
mod discovered;
pub(crate) mod layouts;
mod models;
pub(crate) mod resync;
pub(crate) mod settings;
pub(crate) mod templates;
pub(crate) mod tokens;
pub(crate) mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::admin::auth::{Authenticator, Refusal};
use crate::catalog::Catalog;
use crate::domain::records::{Invalid, Scope};
use crate::provision::Provisioner;
use crate::provision::request::NotServed;
use crate::render::RenderError;
use crate::store::{Store, StoreError, StoreState};
use crate::transport::tftp::TftpState;

/// The largest body the API reads (a CSV import or a backup can be large).
const MAX_BODY: usize = 16 << 20;

/// What the admin handlers share.
pub struct AdminState {
    /// The store.
    pub store: Arc<Store>,
    /// The phone models.
    pub catalog: Arc<Catalog>,
    /// The provisioning core, for previews.
    pub provisioner: Arc<Provisioner>,
    /// Checks the token every API call must present.
    pub auth: Authenticator,
    /// TFTP transfers in flight, for `/metrics`.
    pub tftp: Arc<TftpState>,
    /// Whether the admin listener speaks TLS (the web UI signs in over
    /// plain HTTP only from loopback).
    pub tls: bool,
}

type Shared = State<Arc<AdminState>>;

/// The admin listener's router: `/healthz`, the token-protected `/api/v1/`,
/// and the web UI at `/`.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{id}",
            get(users::show).patch(users::update).delete(users::remove),
        )
        .route("/devices", get(devices::list).post(devices::create))
        .route(
            "/devices/{mac}",
            get(devices::show)
                .patch(devices::update)
                .delete(devices::remove),
        )
        .route("/devices/{mac}/files/{*name}", get(devices::file))
        .route("/devices/{mac}/clone", axum::routing::post(devices::clone))
        .route("/devices/{mac}/status", get(devices::status))
        .route("/devices/{mac}/resync", axum::routing::post(resync::one))
        .route("/resync", axum::routing::post(resync::all))
        .route("/status", get(devices::fleet_status))
        .route(
            "/templates/{scope}/{target}/{file}",
            get(templates::show)
                .put(templates::upload)
                .delete(templates::remove),
        )
        .route(
            "/templates/{scope}/{target}/{file}/history",
            get(templates::history),
        )
        .route(
            "/templates/{scope}/{target}/{file}/history/{version}",
            get(templates::version),
        )
        .route(
            "/templates/{scope}/{target}/{file}/rollback",
            axum::routing::post(templates::rollback),
        )
        .route("/layouts", get(layouts::list).post(layouts::create))
        .route(
            "/layouts/{name}",
            get(layouts::show)
                .put(layouts::replace)
                .delete(layouts::remove),
        )
        .route("/audit", get(audit::list))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/bans", get(bans::list))
        .route("/bans/{address}", axum::routing::delete(bans::lift))
        .route("/import", axum::routing::post(backup::import))
        .route("/export", get(backup::export))
        .route("/restore", axum::routing::post(backup::restore))
        .route("/discovered", get(discovered::list))
        .route(
            "/discovered/{mac}/adopt",
            axum::routing::post(discovered::adopt),
        )
        .route("/models", get(models::list))
        .route("/models/{id}", get(models::show))
        .route(
            "/models/{id}/settings",
            get(settings::show_model)
                .put(settings::replace_model)
                .patch(settings::patch_model),
        )
        .route(
            "/settings",
            get(settings::show_global)
                .put(settings::replace_global)
                .patch(settings::patch_global),
        )
        .fallback(|| async { ApiError::NotFound("no such API endpoint".into()) })
        .layer(from_fn_with_state(state.clone(), require_token))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(from_fn(refuse_oversized_bodies));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(bans::metrics))
        .merge(crate::admin::ui::router(state.clone()))
        .with_state(state)
}

/// Whether the server can do its work: 200 only while the store takes
/// changes, with the store's state and what to do about it.
async fn healthz(State(state): Shared) -> Response {
    let store = state.store.state();
    let status = match store {
        StoreState::Ok => StatusCode::OK,
        StoreState::ReadOnly | StoreState::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({"status": store.name(), "store": store.advice()});
    (status, axum::Json(body)).into_response()
}

/// Who is making an API call: recorded in the audit log.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

async fn require_token(
    State(state): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = match state
        .auth
        .identify(&state.store, peer.ip(), presented)
        .await
    {
        Ok(caller) => caller,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !caller.scope.may_write() && !reads {
        return ApiError::Forbidden(format!("token {} may only read", caller.name)).into_response();
    }
    request.extensions_mut().insert(caller.scope);
    request.extensions_mut().insert(Actor(caller.name));
    next.run(request).await
}

type Who = axum::Extension<Actor>;

/// The caller's token's scope: a handler that answers with secrets shows
/// them as [`Scope::sees_secrets`] says.
type Seen = axum::Extension<Scope>;

/// An API failure; [`IntoResponse`] maps each kind to its status.
#[derive(Debug)]
pub enum ApiError {
    /// A field is wrong (422).
    Invalid(Invalid),
    /// A field clashes with another record (409).
    Conflict(Invalid),
    /// The body is not the JSON we expect (400).
    BadRequest(String),
    /// No such record (404).
    NotFound(String),
    /// The record is used elsewhere (409).
    InUse(String),
    /// No or wrong token (401).
    Unauthorized,
    /// Too many wrong tokens from the caller's address (429); it may try
    /// again after the given time.
    Banned(Duration),
    /// The token may not do this (403).
    Forbidden(String),
    /// Our fault (500); the message is logged, not shown.
    Internal(String),
    /// A template that does not compile or render (422), with where.
    Template {
        /// What is wrong with the template.
        message: String,
        /// The line (from 1), when known.
        line: Option<usize>,
        /// The column (from 1), when known.
        column: Option<usize>,
    },
    /// The body is over a size limit (413).
    TooLarge(String),
    /// The disk is full: the change was not saved (507).
    DiskFull(String),
    /// The store cannot do this now, after a disk failure (503).
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let extra_header = match &self {
            ApiError::Unauthorized => {
                Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
            ApiError::Banned(left) => {
                Some((header::RETRY_AFTER, HeaderValue::from(seconds(*left))))
            }
            _ => None,
        };
        let (status, body) = self.status_and_body();
        let mut response = (status, axum::Json(body)).into_response();
        if let Some((name, value)) = extra_header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl ApiError {
    /// The status and JSON body this failure is answered with.
    pub(crate) fn status_and_body(self) -> (StatusCode, Value) {
        match self {
            ApiError::Invalid(i) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": i.message, "field": i.field}),
            ),
            ApiError::Conflict(i) => (
                StatusCode::CONFLICT,
                json!({"error": i.message, "field": i.field}),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"error": m})),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": m})),
            ApiError::InUse(m) => (StatusCode::CONFLICT, json!({"error": m})),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({"error": m})),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or wrong admin token (Authorization: Bearer <token>)"}),
            ),
            ApiError::Banned(left) => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": format!(
                    "too many wrong admin tokens from this address: try again in {} s",
                    seconds(left)
                )}),
            ),
            ApiError::Template {
                message,
                line,
                column,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": message, "field": "template", "line": line, "column": column}),
            ),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": m})),
            ApiError::DiskFull(m) => (StatusCode::INSUFFICIENT_STORAGE, json!({"error": m})),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": m})),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "admin API failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal error; see the server log"}),
                )
            }
        }
    }
}

/// Whole seconds, rounded up: a client told 0 would try again at once.
fn seconds(time: Duration) -> u64 {
    time.as_secs() + u64::from(time.subsec_nanos() > 0)
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Banned(left) => ApiError::Banned(left),
            Refusal::Store(e) => e.into(),
            Refusal::Missing | Refusal::Wrong => ApiError::Unauthorized,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> Self {
        ApiError::Invalid(i)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(i) => ApiError::Conflict(i),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::InUse(m) => ApiError::InUse(m),
            full @ StoreError::DiskFull => ApiError::DiskFull(full.to_string()),
            down @ StoreError::Unavailable(_) => ApiError::Unavailable(down.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<NotServed> for ApiError {
    fn from(e: NotServed) -> Self {
        match e {
            NotServed::Store(e) => e.into(),
            NotServed::Render(e) => e.into(),
            NotServed::BadPath(m) => ApiError::Invalid(Invalid::new("name", m)),
            other => ApiError::NotFound(other.to_string()),
        }
    }
}

impl From<RenderError> for ApiError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Template {
                template,
                line,
                column,
                message,
            } => ApiError::Template {
                message: format!("{}: {message}", template.trim_start_matches("upload/")),
                line: Some(line),
                column: Some(column),
            },
            other => ApiError::Template {
                message: other.to_string(),
                line: None,
                column: None,
            },
        }
    }
}

/// What the API's logic gives: a value, or the refusal the API answers.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Refuses a body whose declared length is over [`MAX_BODY`] before any of
/// it is read, and closes the connection after every 413.
///
/// Answering from the headers means the client (or curl waiting on
/// `Expect: 100-continue`) learns at once, instead of after 16 MiB have
/// crossed the wire only to race the close. A body refused for its size is
/// left unread, so hyper closes the connection after the answer; saying so
/// keeps a client from sending its next request down it. (tower-http's
/// `RequestBodyLimitLayer` checks the header too, but answers in plain text
/// rather than the API's JSON error.)
async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = match declared {
        Some(length) if length > MAX_BODY as u64 => {
            ApiError::TooLarge(format!("a request body is at most {MAX_BODY} bytes"))
                .into_response()
        }
        _ => next.run(request).await,
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Parses a JSON body, naming the offending field in the error.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    from_json(value)
}

/// Converts JSON to a type, naming the offending field in the error.
pub(crate) fn from_json<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = e.path().to_string();
        let message = e.inner().to_string();
        // For "missing field `x`" the path stops at the parent: add the name.
        if let Some(name) = message.split('`').nth(1)
            && message.starts_with("missing field")
        {
            field = if field == "." {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        ApiError::Invalid(Invalid::new(field, message))
    })
}

/// RFC 7396 JSON merge patch: `patch` over `target`.
pub(crate) fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(target) = target {
                for (key, value) in fields {
                    if value.is_null() {
                        target.remove(&key);
                    } else {
                        merge_patch(target.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// Reads a body as a JSON object for a merge patch.
fn parse_patch(body: &Bytes) -> ApiResult<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::BadRequest("a PATCH body is a JSON object".into()));
    }
    Ok(patch)
}

/// Runs an administrator's work that renders, checks, reads many records
/// or waits on the disk, on a blocking thread: a render may take its whole
/// budget, which the async workers phones share must not spend. Every
/// handler that does such work goes through here.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::Internal(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut target, json!({"a": null, "b": {"c": 4}, "e": [1]}));
        assert_eq!(target, json!({"b": {"c": 4, "d": 3}, "e": [1]}));
    }

    #[test]
    fn body_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            model: String,
        }
        let Err(ApiError::Invalid(i)) = parse_body::<T>(b"{}") else {
            panic!()
        };
        assert_eq!(i.field, "model");
        let Err(ApiError::Invalid(i)) = parse_body::<T>(br#"{"model": "x", "modle": 1}"#) else {
            panic!()
        };
        assert_eq!(i.field, "modle");
    }
}
