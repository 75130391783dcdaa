//! `/api/v1/tokens`: named admin tokens with a scope (`read`, `secrets` or
//! `write`), shown once when made, revocable at once.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminState, ApiError, ApiResult, Shared, Who, parse_body};
use crate::admin::auth::{last_use_since, new_named_token};
use crate::domain::records::{ApiToken, Scope};
use crate::store::{Change, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scope: Scope,
}

/// A token as listed: never its hash.
#[derive(Debug, Serialize)]
pub(super) struct TokenView {
    name: String,
    scope: Scope,
    created: u64,
    /// When a request last presented it (Unix seconds); null if never.
    last_used: Option<u64>,
}

pub(super) async fn list(state: Shared) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state.store.tokens()?;
    let used = state.auth.uses().latest(&state.store)?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenView {
                last_used: last_use_since(used.get(&t.name).copied(), t.created),
                name: t.name,
                scope: t.scope,
                created: t.created,
            })
            .collect(),
    ))
}

/// `POST /tokens {"name", "scope"}`: the answer holds the token, once.
pub(super) async fn create(
    state: Shared,
    Extension(super::Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let wanted: NewToken = parse_body(&body)?;
    let (record, token) = create_token(&state, &actor, &wanted.name, wanted.scope).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": record.name, "scope": record.scope, "token": token})),
    ))
}

/// Stores a new named token; gives its record and its secret, which is
/// shown this once.
pub(crate) async fn create_token(
    state: &AdminState,
    actor: &str,
    name: &str,
    scope: Scope,
) -> ApiResult<(ApiToken, String)> {
    ApiToken::check_name(name)?;
    let (record, token) =
        new_named_token(name, scope).map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .store
        .change(actor, |store| {
            if store.token(name)?.is_some() {
                return Err(ApiError::Conflict(crate::domain::records::Invalid::new(
                    "name",
                    format!("token {name} already exists"),
                )));
            }
            Ok((vec![Change::PutToken(record.clone())], ()))
        })
        .await?;
    tracing::info!(name = %record.name, scope = ?record.scope, "token created");
    Ok((record, token))
}

/// `DELETE /tokens/{name}`.
pub(super) async fn revoke(
    state: Shared,
    Extension(super::Actor(actor)): Who,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    revoke_token(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the named token: every request with it is refused from now on.
pub(crate) async fn revoke_token(state: &AdminState, actor: &str, name: &str) -> ApiResult<()> {
    state
        .store
        .change(actor, |store| {
            let token = store
                .token(name)?
                .ok_or_else(|| StoreError::NotFound(format!("token {name}")))?;
            Ok::<_, ApiError>((vec![Change::DeleteToken(token)], ()))
        })
        .await?;
    tracing::info!(%name, "token revoked");
    Ok(())
}
