//! `/api/v1/bans`: clients banned for scanning, and lifting a ban; and the
//! `/metrics` scrape (no token: it carries no secrets, and the admin
//! listener is on a management network).

use std::net::IpAddr;

use axum::Extension;
use axum::Json;
use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{Actor, AdminState, ApiResult, Shared, Who};
use crate::access::scan::BanView;
use crate::domain::records::Invalid;
use crate::metrics::Gauges;

pub(super) async fn list(state: Shared) -> Json<Vec<BanView>> {
    Json(state.provisioner.bans())
}

/// `DELETE /bans/{address}`: lifts every ban covering an address (its
/// own, its network's), on every transport.
pub(super) async fn lift(
    state: Shared,
    Extension(Actor(actor)): Who,
    Path(address): Path<String>,
) -> ApiResult<Json<Value>> {
    let address: IpAddr = address
        .parse()
        .map_err(|_| Invalid::new("address", format!("'{address}' is not an IP address")))?;
    let lifted = lift_bans(&state, &actor, address).await?;
    Ok(Json(json!({"address": address, "lifted": lifted})))
}

/// Lifts every ban covering `address`, recorded in the audit log; gives
/// how many were lifted.
pub(crate) async fn lift_bans(
    state: &AdminState,
    actor: &str,
    address: IpAddr,
) -> ApiResult<usize> {
    let lifted = state.provisioner.lift_bans(address);
    state
        .store
        .record_action(
            actor,
            "ban.lift",
            format!("ban/{address}"),
            json!({"lifted": lifted}),
        )
        .await?;
    tracing::info!(%address, lifted, "bans lifted");
    Ok(lifted)
}

pub(super) async fn metrics(state: Shared) -> impl IntoResponse {
    let provisioner = &state.provisioner;
    let gauges = Gauges {
        tftp_transfers: state.tftp.active(),
        bans: provisioner.bans().len(),
        devices: state.store.device_count(),
        users: state.store.user_count(),
        store_bytes: state.store.size_on_disk(),
        render_cache_bytes: provisioner.render_cache_bytes(),
        store_state: state.store.state(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        provisioner.metrics().exposition(gauges),
    )
}
