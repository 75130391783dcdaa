//! Provisioning over HTTP: `GET`/`HEAD` of any path; HTTPS serves the same
//! router, with what the phone's client certificate says.
//!
//! Answers carry `Content-Type`, `Content-Length` and a strong `ETag`; a
//! matching `If-None-Match` gets `304`. Every refusal is a plain `404`.
//! Firmware images stream from disk with `Range` support (tower-http's
//! `ServeFile`), since phones resume large downloads.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use percent_encoding::percent_decode_str;

use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::access::client_cert::ClientCert;
use crate::access::phone_auth::Attempt;
use crate::domain::transport::Transport;
use crate::metrics::Outcome;
use crate::provision::admission::Admission;
use crate::provision::firmware::FirmwareImage;
use crate::provision::request::{NotServed, Request};
use crate::provision::{Provisioner, log_firmware, log_request};
use crate::render::served::ServedFile;

/// The most header bytes a phone's request may carry.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The router of the phones' HTTP listener.
pub fn router(provisioner: Arc<Provisioner>) -> Router {
    Router::new().fallback(provision).with_state(provisioner)
}

/// Whether the HTTPS listener's per-device files need a verified client
/// certificate; set on its router only.
#[derive(Debug, Clone, Copy)]
struct ClientCertRequired(bool);

/// The router of the phones' HTTPS listener: the HTTP one, told whether
/// per-device files need a client certificate (`client_cert = "required"`).
pub fn https_router(provisioner: Arc<Provisioner>, client_cert_required: bool) -> Router {
    router(provisioner).layer(Extension(ClientCertRequired(client_cert_required)))
}

/// Every phone request: translated, admitted, handled, answered.
async fn provision(
    State(provisioner): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    // Set by axum-server's TLS acceptor: the request came over HTTPS.
    tls: Option<Extension<Arc<TlsInfo>>>,
    cert_required: Option<Extension<ClientCertRequired>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse_malformed(&method, &headers) {
        return refusal;
    }
    let started = Instant::now();
    // Decode %2e%2e and friends before the path checks see it; a path that
    // is not UTF-8 once decoded is refused like any other bad path.
    let decoded = percent_decode_str(uri.path()).decode_utf8();
    let path = decoded.as_deref().unwrap_or("\u{0}");
    let tls = tls.as_ref().map(|Extension(info)| info.as_ref());
    let mut request = phone_request(path, peer, tls, cert_required, &uri, &headers);
    if let Some(image) = provisioner.firmware(&request) {
        provisioner
            .metrics()
            .request(Transport::Http, Outcome::Firmware);
        let response = serve_firmware(&image, method, uri.clone(), &headers).await;
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        log_firmware(&request, &image, bytes, started.elapsed());
        return response;
    }
    let attempt = Attempt {
        method: method.as_str(),
        target: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        peer: request.peer,
        over_tls: request.https,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    };
    match provisioner.admit_http(&request, &attempt).await {
        Admission::Handle { authenticated } => request.authenticated = authenticated,
        Admission::Challenge { stale } => {
            log_request(
                &request,
                &Err(NotServed::Unauthorized),
                0,
                started.elapsed(),
            );
            return challenge(&provisioner, request.peer, stale);
        }
        Admission::Ignore => return StatusCode::NOT_FOUND.into_response(),
    }
    let result = provisioner.handle_async(&request).await;
    let response = file_response(&result, &headers);
    let bytes = match (&result, method == Method::HEAD) {
        (Ok(file), false) if response.status() == StatusCode::OK => file.body.len(),
        _ => 0,
    };
    log_request(&request, &result, bytes, started.elapsed());
    response
}

/// The answer to a request no phone sends: a method other than GET and
/// HEAD, or far more header bytes than a phone's.
fn refuse_malformed(method: &Method, headers: &HeaderMap) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Some(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
            )
                .into_response(),
        );
    }
    // Phones send a few hundred bytes of headers; hyper alone would accept
    // about 400 KB per request.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response());
    }
    None
}

/// The request as the handler sees it: the path already decoded and
/// checked, the peer as IPv4 where it is, the Host, and what the client
/// certificate (HTTPS) says.
fn phone_request<'a>(
    path: &'a str,
    peer: SocketAddr,
    tls: Option<&TlsInfo>,
    cert_required: Option<Extension<ClientCertRequired>>,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Request<'a> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    // rustls put the peer's certificates here only once they verified
    // against the client CA bundle; without one it asks for none.
    let client_cert = match tls {
        Some(info) => ClientCert::from_peer(
            &info.peer_certificates,
            cert_required.is_some_and(|Extension(ClientCertRequired(required))| required),
        ),
        None => ClientCert::Unchecked,
    };
    Request {
        path,
        user_agent,
        // A dual-stack listener sees IPv4 phones as ::ffff:a.b.c.d; logs,
        // allow-lists, bans and resync want them as the IPv4 they are.
        peer: peer.ip().to_canonical(),
        transport: Transport::Http,
        // HTTP/2 (which HTTPS offers by ALPN) sends the host as :authority.
        host: headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str())),
        https: tls.is_some(),
        client_cert,
        authenticated: false,
    }
}

/// The answer to a handled request: the file (or 304 when the phone
/// holds it already, by ETag), or the same not-found for every refusal.
fn file_response(result: &Result<ServedFile, NotServed>, headers: &HeaderMap) -> Response {
    match result {
        Ok(file) => {
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|tags| tags.split(',').any(|t| t.trim() == file.etag));
            let mut response = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                Body::from(file.body.clone()).into_response()
            };
            let h = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&file.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&file.etag) {
                h.insert(header::ETAG, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(busy) if busy.is_busy() => {
            tracing::error!(error = %busy, "the store cannot answer: the phone is told to retry");
            let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            response
        }
        Err(NotServed::Store(e)) => {
            tracing::error!(error = %e, "store failed while provisioning");
            StatusCode::NOT_FOUND.into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// When a phone told "busy" should ask again: the server retries the
/// store every few seconds.
const RETRY_AFTER_SECS: &str = "5";

/// A 401 asking for credentials. Any MAC-shaped name is challenged alike: it
/// says nothing about whether the MAC is provisioned.
fn challenge(provisioner: &Provisioner, peer: IpAddr, stale: bool) -> Response {
    provisioner
        .metrics()
        .request(Transport::Http, Outcome::Refused);
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    for challenge in provisioner.phone_auth().challenges(peer, stale) {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// Streams a firmware image, honouring `Range`, `If-Range` and `HEAD`.
async fn serve_firmware(
    image: &FirmwareImage,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
) -> Response {
    let mut request = axum::http::Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers.clone();
    match ServeFile::new(&image.path).oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => {
            tracing::error!(error = %e, file = %image.name, "cannot read a firmware image");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}
