//! `/api/v1/users`: people, their extensions and SIP accounts.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{
    Actor, AdminState, ApiError, ApiResult, Seen, Shared, Who, from_json, merge_patch, parse_patch,
};
use crate::domain::records::{HoldsSecrets, Invalid, User, UserId};
use crate::domain::secret::random_secret;
use crate::store::{Change, StoreError};

/// Length of a generated SIP password: about 117 bits.
const GENERATED_PASSWORD_LEN: usize = 20;

pub(super) async fn list(state: Shared, Extension(scope): Seen) -> ApiResult<Json<Vec<User>>> {
    let users = state.store.users()?;
    Ok(Json(users.into_iter().map(|u| u.shown_to(scope)).collect()))
}

pub(super) async fn show(
    state: Shared,
    Extension(scope): Seen,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    let id = parse_id(&id)?;
    let user = state.store.user(id)?.ok_or_else(|| not_found(id))?;
    Ok(Json(user.shown_to(scope)))
}

pub(super) async fn create(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = create_user(&state, &actor, parse_patch(&body)?).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Creates a user from its JSON form, with the SIP defaults filled in
/// ([`fill_sip_defaults`]); the answer holds the password, to show once.
pub(crate) async fn create_user(
    state: &AdminState,
    actor: &str,
    mut value: Value,
) -> ApiResult<User> {
    if value.get("id").is_some() {
        return Err(Invalid::new("id", "is assigned by the server").into());
    }
    if value.get("extension").is_none() {
        return Err(Invalid::new("extension", "is required").into());
    }
    fill_sip_defaults(&mut value);
    let mut user: User = from_json(value)?;
    user.validate()?;
    let user = state
        .store
        .change(actor, |store| {
            user.id = store.next_user_id()?;
            Ok::<_, ApiError>((
                vec![Change::PutUser {
                    new: user.clone(),
                    old: None,
                }],
                user,
            ))
        })
        .await?;
    tracing::info!(user = user.id, extension = %user.extension, "user created");
    Ok(user)
}

pub(super) async fn update(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<User>> {
    let id = parse_id(&id)?;
    let user = update_user(&state, &actor, id, parse_patch(&body)?).await?;
    Ok(Json(user))
}

/// Applies a JSON merge patch to user `id`; a masked secret in it keeps
/// the stored one.
pub(crate) async fn update_user(
    state: &AdminState,
    actor: &str,
    id: UserId,
    patch: Value,
) -> ApiResult<User> {
    if patch.get("id").is_some_and(|v| v != &json!(id)) {
        return Err(Invalid::new("id", "cannot be changed").into());
    }
    let user = state
        .store
        .change(actor, |store| {
            let current = store.user(id)?.ok_or_else(|| not_found(id))?;
            let mut value = serde_json::to_value(&current).unwrap_or_default();
            merge_patch(&mut value, patch);
            let mut user: User = from_json(value)?;
            user.unmask_from(&current);
            user.validate()?;
            Ok::<_, ApiError>((
                vec![Change::PutUser {
                    new: user.clone(),
                    old: Some(current),
                }],
                user,
            ))
        })
        .await?;
    tracing::info!(user = id, "user updated");
    Ok(user)
}

/// A new random SIP password.
pub(crate) fn new_sip_password() -> String {
    random_secret(GENERATED_PASSWORD_LEN)
}

pub(super) async fn remove(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    state
        .store
        .change(&actor, |store| {
            let user = store.user(id)?.ok_or_else(|| not_found(id))?;
            if let Some(device) = store.device_of_user(id)? {
                return Err(ApiError::InUse(format!(
                    "user {id} is on device {}; remove the line first",
                    device.mac
                )));
            }
            Ok((vec![Change::DeleteUser(user)], ()))
        })
        .await?;
    tracing::info!(user = id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A new user's SIP username defaults to the extension, the auth name to the
/// username, and the password to a strong random one.
fn fill_sip_defaults(user: &mut Value) {
    let extension = user.get("extension").cloned();
    let Some(fields) = user.as_object_mut() else {
        return;
    };
    let sip = fields.entry("sip").or_insert_with(|| json!({}));
    if let Some(sip) = sip.as_object_mut() {
        if let Some(extension) = extension.filter(Value::is_string) {
            sip.entry("username").or_insert(extension);
        }
        if let Some(username) = sip.get("username").cloned() {
            sip.entry("auth_name").or_insert(username);
        }
        sip.entry("password")
            .or_insert_with(|| json!(new_sip_password()));
    }
}

pub(crate) fn parse_id(id: &str) -> ApiResult<UserId> {
    id.parse()
        .map_err(|_| Invalid::new("id", format!("'{id}' is not a user id")).into())
}

fn not_found(id: UserId) -> StoreError {
    StoreError::NotFound(format!("user {id}"))
}
