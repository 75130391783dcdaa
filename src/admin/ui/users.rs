//! `/users`: people and their extensions: search, create, edit, rotate the
//! SIP password (shown once), and which keys on other phones target them.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::Signed;
use super::{
    Chrome, Pager, Shared, ShownOnce, Ui, UiError, UiResult, html, html_with, query_value,
    see_other, status_of,
};
use crate::admin::api::users::{create_user, new_sip_password, parse_id, update_user};
use crate::admin::api::{ApiError, blocking};
use crate::domain::mac::Mac;
use crate::domain::records::{Layout, User, UserId};
use crate::store::Store;

/// Users listed on one page.
const PER_PAGE: usize = 50;

/// A user's line in the list.
struct Row {
    id: UserId,
    extension: String,
    name: String,
    email: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    q: String,
    rows: Vec<Row>,
    pager: Pager,
}

#[derive(Deserialize)]
pub(super) struct UserQuery {
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

/// `GET /users?q=&page=`: users whose name or extension holds `q`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<UserQuery>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let needle = query.q.trim().to_lowercase();
    let matching = blocking(move || {
        Ok(admin
            .store
            .users()?
            .into_iter()
            .filter(|u| needle.is_empty() || matches(u, &needle))
            .collect::<Vec<_>>())
    })
    .await?;
    let base = format!("/users?q={}&", query_value(query.q.trim()));
    let (pager, range) = Pager::new(query.page, matching.len(), PER_PAGE, &base);
    let rows = matching[range]
        .iter()
        .map(|u| Row {
            id: u.id,
            extension: u.extension.clone(),
            name: u.display_name(),
            email: u.email.clone().unwrap_or_default(),
        })
        .collect();
    html(UsersPage {
        chrome: ui.chrome(&who, "users", "Users"),
        q: query.q.trim().to_string(),
        rows,
        pager,
    })
}

/// Whether `user`'s extension or name holds `needle` (lower case).
fn matches(user: &User, needle: &str) -> bool {
    user.extension.to_lowercase().contains(needle)
        || user.display_name().to_lowercase().contains(needle)
        || format!("{} {}", user.first_name, user.last_name)
            .to_lowercase()
            .contains(needle)
}

/// What the user form edits.
#[derive(Debug, Default, Deserialize)]
pub(super) struct UserFields {
    extension: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
}

impl UserFields {
    fn of(user: &User) -> Self {
        UserFields {
            extension: user.extension.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email: user.email.clone().unwrap_or_default(),
        }
    }

    /// The fields as the API's JSON (a merge patch, or a new user).
    fn to_json(&self) -> Value {
        json!({
            "extension": self.extension.trim(),
            "first_name": self.first_name.trim(),
            "last_name": self.last_name.trim(),
            "email": super::non_empty(&self.email),
        })
    }
}

#[derive(Template)]
#[template(path = "user_new.html")]
struct NewUserPage {
    chrome: Chrome,
    fields: UserFields,
    error: Option<String>,
}

/// `GET /users/new`.
pub(super) async fn new(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    html(NewUserPage {
        chrome: ui.chrome(&who, "users", "New user"),
        fields: UserFields::default(),
        error: None,
    })
}

/// `POST /users`: creates the user; the answer shows its generated SIP
/// password, the only time it is shown.
pub(super) async fn create(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(fields): Form<UserFields>,
) -> UiResult<Response> {
    match create_user(&ui.admin, &who.actor, fields.to_json()).await {
        Ok(user) => html(ShownOnce {
            chrome: ui.chrome(&who, "users", "User created"),
            what: format!(
                "User {} ({}) was created.",
                user.display_name(),
                user.extension
            ),
            secrets: vec![
                ("SIP username".into(), user.sip.username.clone()),
                ("SIP password".into(), user.sip.password.clone()),
            ],
            next: format!("/users/{}", user.id),
        }),
        Err(refused) => {
            let page = NewUserPage {
                chrome: ui.chrome(&who, "users", "New user"),
                fields,
                error: Some(UiError::from(refused).to_string()),
            };
            html_with(StatusCode::UNPROCESSABLE_ENTITY, page)
        }
    }
}

/// A key on another phone that targets the user.
struct Reference {
    mac: Mac,
    position: String,
    kind: &'static str,
    label: String,
}

/// A phone the user has a line on.
struct LineOn {
    mac: Mac,
    line: usize,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    chrome: Chrome,
    id: UserId,
    fields: UserFields,
    sip_username: String,
    lines: Vec<LineOn>,
    references: Vec<Reference>,
    error: Option<String>,
}

/// `GET /users/{id}`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id = parse_id(&id)?;
    user_page(&ui, &who, id, None, None).await
}

/// The user page, with the form showing `fields` when given (a refused
/// edit) and `error`.
async fn user_page(
    ui: &Ui,
    who: &Signed,
    id: UserId,
    fields: Option<UserFields>,
    error: Option<String>,
) -> UiResult<Response> {
    let user = ui
        .admin
        .store
        .user(id)?
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    let admin = Arc::clone(&ui.admin);
    let target = user.clone();
    let (lines, references) = blocking(move || Ok(uses_of(&admin.store, &target)?)).await?;
    let page = UserPage {
        chrome: ui.chrome(who, "users", user.display_name()),
        id,
        fields: fields.unwrap_or_else(|| UserFields::of(&user)),
        sip_username: user.sip.username.clone(),
        lines,
        references,
        error,
    };
    html_with(status_of(page.error.is_some()), page)
}

/// The phones `user` has a line on, and every key on another phone that
/// targets the user's extension or SIP username, its layout's keys too.
fn uses_of(
    store: &Store,
    user: &User,
) -> Result<(Vec<LineOn>, Vec<Reference>), crate::store::StoreError> {
    let (mut lines, mut references) = (Vec::new(), Vec::new());
    let mut layouts: HashMap<String, Option<Layout>> = HashMap::new();
    for device in store.devices()? {
        if let Some(line) = device.lines.iter().position(|l| l.user == user.id) {
            lines.push(LineOn {
                mac: device.mac,
                line: line + 1,
            });
            continue;
        }
        let keys = match &device.layout {
            Some(name) => {
                if !layouts.contains_key(name) {
                    layouts.insert(name.clone(), store.layout(name)?);
                }
                match layouts.get(name).and_then(Option::as_ref) {
                    Some(layout) => layout.laid_under(&device).keys,
                    None => device.keys,
                }
            }
            None => device.keys,
        };
        for key in keys {
            let value = key.value.trim();
            if value == user.extension || value == user.sip.username {
                references.push(Reference {
                    mac: device.mac,
                    position: super::keys::position_name(key.module, key.index),
                    kind: key.kind.name(),
                    label: key
                        .label
                        .replace("{name}", &user.display_name())
                        .replace("{extension}", &user.extension),
                });
            }
        }
    }
    Ok((lines, references))
}

/// `POST /users/{id}`: saves the form.
pub(super) async fn update(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
    Form(fields): Form<UserFields>,
) -> UiResult<Response> {
    let id = parse_id(&id)?;
    match update_user(&ui.admin, &who.actor, id, fields.to_json()).await {
        Ok(_) => Ok(see_other(&format!("/users/{id}"))),
        Err(refused) => {
            let error = UiError::from(refused).to_string();
            user_page(&ui, &who, id, Some(fields), Some(error)).await
        }
    }
}

/// `POST /users/{id}/password`: a new SIP password, shown this once.
pub(super) async fn rotate_password(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id = parse_id(&id)?;
    let patch = json!({"sip": {"password": new_sip_password()}});
    let user = update_user(&ui.admin, &who.actor, id, patch).await?;
    html(ShownOnce {
        chrome: ui.chrome(&who, "users", "SIP password rotated"),
        what: format!(
            "{} ({}) has a new SIP password. Their phones get it at their next resync.",
            user.display_name(),
            user.extension
        ),
        secrets: vec![("SIP password".into(), user.sip.password.clone())],
        next: format!("/users/{id}"),
    })
}
