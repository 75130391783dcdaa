//! Provisioning over HTTP: `GET`/`HEAD` of any path; HTTPS serves the same
//! router, with what the phone's client certificate says.
//!
//! Answers carry `Content-Type`, `Content-Length` and a strong `ETag`; a
//! matching `If-None-Match` gets `304`. Every refusal is a plain `404`.
//! Firmware images stream from disk with `Range` support (tower-http's
//! `ServeFile`), since phones resume large downloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::client_cert::ClientCert;
use crate::firmware::FirmwareImage;
use crate::metrics::Outcome;
use crate::provision::{NotServed, Provisioner, Request, Transport, log_firmware, log_request};

/// How long a client suspected of scanning waits for each per-device answer.
const THROTTLE_DELAY: Duration = Duration::from_millis(500);

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
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    // Phones send a few hundred bytes of headers; hyper alone would accept
    // about 400 KB per request.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
    }
    let started = Instant::now();
    // Decode %2e%2e and friends before the path checks see it; a path that
    // is not UTF-8 once decoded is refused like any other bad path.
    let decoded = percent_decode_str(uri.path()).decode_utf8();
    let path = decoded.as_deref().unwrap_or("\u{0}");
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    // rustls put the peer's certificates here only once they verified
    // against the client CA bundle; without one it asks for none.
    let client_cert = match &tls {
        Some(Extension(info)) => ClientCert::from_peer(
            &info.peer_certificates,
            cert_required.is_some_and(|Extension(ClientCertRequired(required))| required),
        ),
        None => ClientCert::Unchecked,
    };
    let request = Request {
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
    };
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
    // Which MAC the file is for matters only to authentication and to a
    // client suspected of scanning: most requests skip the lookup here.
    let suspect = provisioner
        .scan_guard()
        .is_suspect(request.peer, request.user_agent);
    let device_mac = if suspect || provisioner.phone_auth().required() {
        provisioner.device_file_mac(request.path)
    } else {
        None
    };
    // A client halfway to a ban waits for every per-device answer, found or
    // not (the same timing either way), unless its User-Agent names the very
    // MAC it asks for.
    let names_its_mac = suspect
        && device_mac.is_some_and(|mac| {
            user_agent.and_then(|ua| provisioner.catalog().identify_user_agent(ua).mac) == Some(mac)
        });
    if suspect && device_mac.is_some() && !names_its_mac {
        throttle(&provisioner).await;
    }
    if let Some(mac) = device_mac {
        let auth = provisioner.phone_auth();
        let answer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let allowed = provisioner.policy().allows(Transport::Http, request.peer);
        if allowed && auth.required() && !auth.check(method.as_str(), answer, mac, request.https) {
            // Any MAC-shaped name is challenged alike: a 401 says nothing
            // about whether the MAC is provisioned.
            provisioner
                .metrics()
                .request(Transport::Http, Outcome::Refused);
            log_request(
                &request,
                &Err(NotServed::Unauthorized),
                0,
                started.elapsed(),
            );
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            for challenge in auth.challenges() {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, value);
                }
            }
            return response;
        }
    }
    let result = provisioner.handle_async(&request).await;
    // Naming the MAC spares a phone behind a scanner's NAT, not a scan that
    // forges its User-Agent: an unknown MAC's answer waits all the same (the
    // status tells it anyway), so the scan crawls instead of taking the CPU
    // known phones need.
    if names_its_mac && matches!(result, Err(NotServed::UnknownMac(_))) {
        throttle(&provisioner).await;
    }
    let response = match &result {
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
        Err(NotServed::Store(e)) => {
            tracing::error!(error = %e, "store failed while provisioning");
            StatusCode::NOT_FOUND.into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    };
    let bytes = match (&result, method == Method::HEAD) {
        (Ok(file), false) if response.status() == StatusCode::OK => file.body.len(),
        _ => 0,
    };
    log_request(&request, &result, bytes, started.elapsed());
    response
}

/// Streams a firmware image, honouring `Range`, `If-Range` and `HEAD`.
/// Holds back an answer to a client suspected of scanning, and counts it.
async fn throttle(provisioner: &Provisioner) {
    provisioner.metrics().http_throttled();
    tokio::time::sleep(THROTTLE_DELAY).await;
}

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
