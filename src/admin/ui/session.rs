//! Browser sessions: signing in with an admin token, the session cookie,
//! and what every request is checked for before a page sees it (transport,
//! session, scope, CSRF).
//!
//! Sessions live in memory, each known only by the SHA-256 of its cookie:
//! a restart ends them all. One ends after [`IDLE`] without a request,
//! [`LIFETIME`] after sign-in, at sign-out, and when its token is revoked
//! (the store is asked on every request, as the API does).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{HX_REQUEST, Shared, UiError};
use crate::admin::auth::Caller;
use crate::domain::records::Scope;
use crate::domain::secret::random_secret;
use crate::store::Store;

/// The session cookie. `__Host-` makes the browser keep it only when it is
/// Secure, for this host alone (no Domain) and the whole site (Path=/).
pub(super) const COOKIE: &str = "__Host-deskboot";

/// A session ends after this long without a request.
pub(super) const IDLE: Duration = Duration::from_secs(30 * 60);

/// A session ends this long after sign-in, however busy.
pub(super) const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The most sessions kept: each is a few hundred bytes; past this the one
/// idle longest is dropped, so sign-ins cannot fill the memory.
const MAX_SESSIONS: usize = 4096;

/// The largest form a write may post (a device's keys are a few KiB).
const MAX_FORM: usize = 1 << 20;

/// The form field and the header (htmx) that carry the CSRF token.
pub(super) const CSRF_FIELD: &str = "csrf";
const CSRF_HEADER: &str = "x-csrf-token";

/// Who a request's session belongs to, for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    /// The token's name: the audit log's actor.
    pub actor: String,
    /// What the token may do.
    pub scope: Scope,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
}

#[derive(Debug, Clone)]
struct Session {
    signed: Signed,
    /// The named token's argon2 hash at sign-in, to notice it revoked (or
    /// replaced under the same name); none for the bootstrap token.
    token_hash: Option<String>,
    started: Instant,
    last_used: Instant,
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.duration_since(self.last_used) < IDLE && now.duration_since(self.started) < LIFETIME
    }
}

/// The open sessions, by the SHA-256 of their cookie.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session for `caller` (whose named token's hash is
    /// `token_hash`); gives the cookie's value, known only to the browser.
    pub(super) fn open(&self, caller: Caller, token_hash: Option<String>, now: Instant) -> String {
        let cookie = random_secret(43);
        let session = Session {
            signed: Signed {
                actor: caller.name,
                scope: caller.scope,
                csrf: random_secret(32),
            },
            token_hash,
            started: now,
            last_used: now,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.alive(now));
        if open.len() >= MAX_SESSIONS
            && let Some(idlest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(key, _)| *key)
        {
            open.remove(&idlest);
        }
        open.insert(digest(&cookie), session);
        cookie
    }

    /// The live session of `cookie`, marked as used now; an expired one is
    /// forgotten.
    fn find(&self, cookie: &str, now: Instant) -> Option<Session> {
        let key = digest(cookie);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let session = open.get_mut(&key)?;
        if !session.alive(now) {
            open.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends the session of `cookie`.
    pub(super) fn close(&self, cookie: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&digest(cookie));
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Whether a browser at `peer` may use the UI over this listener: over
/// TLS from anywhere, over plain HTTP only from the machine itself (a
/// token and a session cookie must not cross a network in clear).
pub(super) fn may_sign_in(tls: bool, peer: IpAddr) -> bool {
    tls || peer.to_canonical().is_loopback()
}

/// The `Set-Cookie` value that gives the browser its session.
pub(super) fn session_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser drop its session.
pub(super) fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value in a request, if it has one.
pub(super) fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Lets a request reach a page only with a live session whose token still
/// exists and whose scope allows it, and a write only with the session's
/// CSRF token; hands the page its [`Signed`].
pub(super) async fn require(
    State(ui): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if !may_sign_in(ui.admin.tls, peer.ip()) {
        return super::login::use_https(&ui);
    }
    let cookie = cookie_value(request.headers()).map(str::to_string);
    let Some((cookie, session)) =
        cookie.and_then(|c| Some((c.clone(), ui.sessions.find(&c, Instant::now())?)))
    else {
        return to_sign_in(request.headers());
    };
    match token_still_valid(&ui.admin.store, &session) {
        Ok(true) => {}
        Ok(false) => {
            ui.sessions.close(&cookie);
            return to_sign_in(request.headers());
        }
        Err(e) => return e.into_response(),
    }
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if writes {
        if !session.signed.scope.may_write() {
            return forbidden(format!("token {} may only read", session.signed.actor));
        }
        request = match with_csrf_checked(request, &session.signed.csrf).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
    }
    let now = crate::domain::clock::unix_now();
    ui.admin.auth.uses().note(&session.signed.actor, now);
    request.extensions_mut().insert(session.signed);
    next.run(request).await
}

/// Whether the session's named token is still the one it signed in with.
fn token_still_valid(store: &Store, session: &Session) -> Result<bool, UiError> {
    let Some(hash) = &session.token_hash else {
        return Ok(true);
    };
    let token = store.token(&session.signed.actor)?;
    Ok(token.is_some_and(|t| &t.hash == hash))
}

/// Off to the sign-in page: a redirect, or for htmx, its own redirect
/// header (it would otherwise swap the sign-in page into the current one).
fn to_sign_in(headers: &HeaderMap) -> Response {
    if headers.contains_key(HX_REQUEST) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        return response;
    }
    super::see_other("/login")
}

fn forbidden(message: impl Into<String>) -> Response {
    UiError::Refused {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
    }
    .into_response()
}

/// The request, if it carries `expected` in its CSRF header or form field;
/// the form's body is read here and handed on unchanged.
async fn with_csrf_checked(request: Request, expected: &str) -> Result<Request, Response> {
    let matches = |presented: &str| bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if let Some(presented) = request.headers().get(CSRF_HEADER) {
        return match presented.to_str() {
            Ok(presented) if matches(presented) => Ok(request),
            _ => Err(forbidden("the form's CSRF token is wrong: reload the page")),
        };
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return Err(UiError::Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("a form is at most {MAX_FORM} bytes"),
        }
        .into_response());
    };
    let presented = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value);
    if !presented.is_some_and(|p| matches(&p)) {
        return Err(forbidden(
            "the form has no valid CSRF token: reload the page",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Refuses a write another site's page sent: the browser says so in
/// `Sec-Fetch-Site`, or, a browser too old to send it, by an `Origin` that
/// is not this host. Under `Referrer-Policy: no-referrer` a browser's own
/// form posts carry `Origin: null`, which proves nothing either way; such a
/// write, like one from a client that sends neither (not a browser), still
/// needs the session (a SameSite=Strict cookie) and its CSRF token.
pub(super) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && is_cross_site(&request) {
        return forbidden("a write from another site's page is refused");
    }
    next.run(request).await
}

fn is_cross_site(request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() != b"same-origin";
    }
    let origin = match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => return false,
        Some(Ok("null")) => return false,
        Some(Ok(origin)) => origin,
        Some(Err(_)) => return true,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    origin.split_once("://").map(|(_, authority)| authority) != host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scope: Scope) -> Caller {
        Caller {
            name: "ops".into(),
            scope,
        }
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for loopback in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(may_sign_in(false, loopback.parse().unwrap()), "{loopback}");
        }
        for remote in ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"] {
            assert!(!may_sign_in(false, remote.parse().unwrap()), "{remote}");
            assert!(may_sign_in(true, remote.parse().unwrap()), "{remote}");
        }
    }

    #[test]
    fn a_session_ends_after_30_idle_minutes_or_12_hours() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let cookie = sessions.open(caller(Scope::Write), None, start);
        // Busy all along: alive until the lifetime is up.
        let mut now = start;
        while now + IDLE / 2 < start + LIFETIME {
            now += IDLE / 2;
            assert!(sessions.find(&cookie, now).is_some());
        }
        assert!(sessions.find(&cookie, start + LIFETIME).is_none());

        let cookie = sessions.open(caller(Scope::Read), None, start);
        assert!(sessions.find(&cookie, start + IDLE).is_none());
        assert!(sessions.find(&cookie, start).is_none(), "forgotten");
    }

    #[test]
    fn only_the_cookies_digest_is_kept() {
        let sessions = Sessions::default();
        let cookie = sessions.open(caller(Scope::Write), None, Instant::now());
        let open = sessions.open.lock().unwrap();
        assert!(open.contains_key(&digest(&cookie)));
        assert!(!format!("{open:?}").contains(&cookie));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-deskboot=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers), Some("abc"));
    }
}
