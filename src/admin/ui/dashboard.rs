//! `/`: the fleet at a glance: phones seen lately, stale, never seen;
//! phones that drift (their last file is not what they would get now),
//! with "resync these"; discovered phones waiting; bans in force; the
//! latest changes.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::devices::Seen;
use super::session::Signed;
use super::{Chrome, Shared, UiResult, html, show_time};
use crate::admin::api::blocking;
use crate::domain::clock::unix_now;

/// How many audit entries the dashboard lists.
const RECENT_CHANGES: usize = 10;

/// One audit entry as the dashboard lists it.
struct Change {
    at: String,
    actor: String,
    action: String,
    target: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    seen: usize,
    stale: usize,
    never: usize,
    /// Phones whose last file differs from what they would get now.
    drift: usize,
    discovered: usize,
    bans: usize,
    changes: Vec<Change>,
}

/// `GET /`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    let shared = Arc::clone(&ui);
    // Reads every device's last sighting and the audit log, and renders
    // the file of each phone seen whose drift is not known for the
    // current render stamp ([`super::devices::DriftMemo`]).
    let (counts, drift, discovered, changes) = blocking(move || {
        let admin = &shared.admin;
        let stamp = admin.provisioner.render_stamp();
        admin.provisioner.flush_sightings()?;
        let now = unix_now();
        let mut counts = [0usize; 3];
        let mut drift = 0;
        for device in admin.store.devices()? {
            let sighting = admin.store.sighting(device.mac)?;
            counts[Seen::of(sighting.as_ref(), now) as usize] += 1;
            let drifts = shared
                .drift
                .drifts(admin, stamp, device.mac, sighting.as_ref());
            drift += usize::from(drifts);
        }
        let changes = (admin.store.recent_audit(RECENT_CHANGES)?)
            .into_iter()
            .map(|e| Change {
                at: show_time(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
            })
            .collect::<Vec<_>>();
        Ok((counts, drift, admin.store.discovered()?.len(), changes))
    })
    .await?;
    html(DashboardPage {
        chrome: ui.chrome(&who, "dashboard", "Dashboard"),
        seen: counts[Seen::Recently as usize],
        stale: counts[Seen::Stale as usize],
        never: counts[Seen::Never as usize],
        drift,
        discovered,
        bans: ui.admin.provisioner.bans().len(),
        changes,
    })
}
