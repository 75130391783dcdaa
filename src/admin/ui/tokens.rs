//! `/tokens`: the named admin tokens: their scope, when each was made,
//! last used and last wrote (and when the bootstrap token was last used);
//! a new one (its secret shown on the answer that makes it,
//! the only time); revoking one, after a confirmation. A revoked token's
//! sessions end at their next request ([`super::session::require`] asks
//! the store each time).

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::Signed;
use super::{
    Chrome, Confirm, Shared, ShownOnce, Ui, UiError, UiResult, html, html_with, show_time,
    status_of,
};
use crate::admin::api::blocking;
use crate::admin::api::tokens::{create_token, revoke_token};
use crate::admin::auth::{BOOTSTRAP_NAME, last_use_since};
use crate::domain::records::Scope;

/// A token's line in the list.
struct Row {
    name: String,
    scope: &'static str,
    created: String,
    /// When a request (API or web UI) last presented it, or "never".
    last_used: String,
    /// Its latest change in the audit log, if any.
    last_write: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    rows: Vec<Row>,
    /// When the bootstrap token (`admin.token`) was last used, or "never".
    bootstrap_used: String,
    fields: NewToken,
    error: Option<String>,
}

/// What the new-token form asks.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NewToken {
    name: String,
    /// `read`, `secrets` or `write`.
    scope: String,
}

/// A scope as the page names it.
fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Secrets => "secrets",
        Scope::Write => "write",
    }
}

/// A time as the list shows it, or "never".
fn when(at: Option<u64>) -> String {
    at.map_or_else(|| "never".to_string(), show_time)
}

/// `GET /tokens`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    tokens_page(&ui, &who, NewToken::default(), None).await
}

/// The list, with the new-token form holding `fields` and why it was
/// refused, if it was (then 422).
async fn tokens_page(
    ui: &Ui,
    who: &Signed,
    fields: NewToken,
    error: Option<String>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    // Reads the audit log for each token's latest change.
    let (rows, bootstrap_used) = blocking(move || {
        let mut last_write: HashMap<String, u64> = HashMap::new();
        for entry in admin.store.audit(0, None)? {
            last_write.insert(entry.actor, entry.at);
        }
        let used = admin.auth.uses().latest(&admin.store)?;
        let rows = admin
            .store
            .tokens()?
            .into_iter()
            .map(|t| Row {
                scope: scope_name(t.scope),
                created: show_time(t.created),
                last_used: when(last_use_since(used.get(&t.name).copied(), t.created)),
                last_write: when(last_write.get(&t.name).copied()),
                name: t.name,
            })
            .collect();
        Ok((rows, when(used.get(BOOTSTRAP_NAME).copied())))
    })
    .await?;
    let failed = error.is_some();
    let page = TokensPage {
        chrome: ui.chrome(who, "tokens", "Admin tokens"),
        rows,
        bootstrap_used,
        fields,
        error,
    };
    html_with(status_of(failed), page)
}

/// `POST /tokens`: a new token, its secret shown this once.
pub(super) async fn create(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(fields): Form<NewToken>,
) -> UiResult<Response> {
    let scope = [Scope::Read, Scope::Secrets, Scope::Write]
        .into_iter()
        .find(|s| scope_name(*s) == fields.scope.trim());
    let Some(scope) = scope else {
        let error = format!("scope: '{}' is not read, secrets or write", fields.scope);
        return tokens_page(&ui, &who, fields, Some(error)).await;
    };
    let name = fields.name.trim().to_string();
    match create_token(&ui.admin, &who.actor, &name, scope).await {
        Ok((record, secret)) => html(ShownOnce {
            chrome: ui.chrome(&who, "tokens", "Token created"),
            what: format!(
                "Token {} ({} scope) was created. Sign in with it, or send it as a Bearer token.",
                record.name,
                scope_name(record.scope)
            ),
            secrets: vec![("Token".into(), secret)],
            next: "/tokens".into(),
        }),
        Err(refused) => {
            let error = UiError::from(refused).to_string();
            tokens_page(&ui, &who, fields, Some(error)).await
        }
    }
}

/// `POST /tokens/{name}/revoke`: asks first; confirmed (`confirm=yes`),
/// revokes it.
pub(super) async fn revoke(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let confirmed = form_urlencoded::parse(&body).any(|(k, v)| k == "confirm" && v == "yes");
    let chrome = ui.chrome(&who, "tokens", format!("Revoke token {name}?"));
    let back = "/tokens".to_string();
    if !confirmed {
        let question = format!(
            "Revoking token {name} refuses every request made with it from now on, and ends its web UI sessions. It cannot be undone."
        );
        let action = format!("/tokens/{}/revoke", super::query_value(&name));
        return html(Confirm::ask(
            chrome,
            &action,
            Vec::new(),
            question,
            Vec::new(),
            back,
        ));
    }
    let outcome = revoke_token(&ui.admin, &who.actor, &name)
        .await
        .map(|()| format!("Token {name} is revoked."))
        .map_err(|refused| UiError::from(refused).to_string());
    let chrome = ui.chrome(&who, "tokens", format!("Revoke token {name}"));
    html_with(
        status_of(outcome.is_err()),
        Confirm::done(chrome, outcome, back),
    )
}
