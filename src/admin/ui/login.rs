//! Signing in with an admin token, and out.

use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::{self, Signed};
use super::{Chrome, Shared, Ui, UiResult, html, html_with, see_other};
use crate::admin::auth::Refusal;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "use_https.html")]
struct UseHttpsPage {
    chrome: Chrome,
}

/// The page a browser gets over plain HTTP from another machine.
pub(super) fn use_https(ui: &Ui) -> Response {
    let page = UseHttpsPage {
        chrome: ui.anonymous_chrome("Use HTTPS"),
    };
    html_with(StatusCode::FORBIDDEN, page).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /login`.
pub(super) async fn form(
    State(ui): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> UiResult<Response> {
    if !session::may_sign_in(ui.admin.tls, peer.ip()) {
        return Ok(use_https(&ui));
    }
    html(LoginPage {
        chrome: ui.anonymous_chrome("Sign in"),
        error: None,
    })
}

#[derive(Deserialize)]
pub(super) struct Credentials {
    token: String,
}

/// `POST /login`: the token is checked as the API checks it (the same
/// lockout for wrong ones); a good one opens a session.
pub(super) async fn submit(
    State(ui): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(credentials): Form<Credentials>,
) -> UiResult<Response> {
    if !session::may_sign_in(ui.admin.tls, peer.ip()) {
        return Ok(use_https(&ui));
    }
    let presented = credentials.token.trim();
    let caller = match ui
        .admin
        .auth
        .identify(&ui.admin.store, peer.ip(), Some(presented))
        .await
    {
        Ok(caller) => caller,
        Err(Refusal::Store(e)) => return Err(e.into()),
        Err(refusal) => return refused(&ui, &refusal),
    };
    let token_hash = if caller.name == "admin" {
        None
    } else {
        ui.admin.store.token(&caller.name)?.map(|t| t.hash)
    };
    tracing::info!(actor = %caller.name, %peer, "web UI sign-in");
    let cookie = ui.sessions.open(caller, token_hash, Instant::now());
    let mut response = see_other("/");
    set_cookie(&mut response, &session::session_cookie(&cookie));
    Ok(response)
}

/// The sign-in page again, saying why the token was not taken.
fn refused(ui: &Ui, refusal: &Refusal) -> UiResult<Response> {
    let (status, error) = match refusal {
        Refusal::Banned(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong tokens from this address: try again in a few minutes.",
        ),
        _ => (StatusCode::UNAUTHORIZED, "That is not an admin token."),
    };
    let page = LoginPage {
        chrome: ui.anonymous_chrome("Sign in"),
        error: Some(error.to_string()),
    };
    html_with(status, page)
}

/// `POST /logout`: ends the session and drops the cookie.
pub(super) async fn logout(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    headers: HeaderMap,
) -> Response {
    if let Some(cookie) = session::cookie_value(&headers) {
        ui.sessions.close(cookie);
    }
    tracing::info!(actor = %who.actor, "web UI sign-out");
    let mut response = see_other("/login");
    set_cookie(&mut response, &session::cleared_cookie());
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}
