//! `/`: the fleet at a glance: phones seen lately, stale, never seen;
//! discovered phones waiting; bans in force; the latest changes.

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
    discovered: usize,
    bans: usize,
    changes: Vec<Change>,
}

/// `GET /`.
pub(super) async fn show(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    // Reads every device's last sighting and the audit log.
    let (counts, discovered, changes) = blocking(move || {
        admin.provisioner.flush_sightings()?;
        let now = unix_now();
        let mut counts = [0usize; 3];
        for device in admin.store.devices()? {
            let seen = Seen::of(admin.store.sighting(device.mac)?.as_ref(), now);
            counts[seen as usize] += 1;
        }
        let audit = admin.store.audit(0, None)?;
        let changes = audit
            .into_iter()
            .rev()
            .take(RECENT_CHANGES)
            .map(|e| Change {
                at: show_time(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
            })
            .collect::<Vec<_>>();
        Ok((counts, admin.store.discovered()?.len(), changes))
    })
    .await?;
    html(DashboardPage {
        chrome: ui.chrome(&who, "dashboard", "Dashboard"),
        seen: counts[Seen::Recently as usize],
        stale: counts[Seen::Stale as usize],
        never: counts[Seen::Never as usize],
        discovered,
        bans: ui.admin.provisioner.bans().len(),
        changes,
    })
}
