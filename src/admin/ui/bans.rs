//! `/bans`: the clients banned for scanning (asking for many unknown
//! MACs): which address or network, why, since and until when; and
//! lifting one, on every transport, as the API's `DELETE /bans/{address}`.

use std::net::IpAddr;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::Signed;
use super::{Chrome, Shared, Ui, UiError, UiResult, html_with, show_time, status_of};
use crate::admin::api::bans::lift_bans;
use crate::domain::records::Invalid;

/// A ban's line in the list.
struct Row {
    address: String,
    /// The address the Lift button posts: a network's first address
    /// lifts the network's ban.
    lift: String,
    why: String,
    since: String,
    until: String,
}

#[derive(Template)]
#[template(path = "bans.html")]
struct BansPage {
    chrome: Chrome,
    rows: Vec<Row>,
    notice: Option<Result<String, String>>,
}

/// `GET /bans`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
) -> UiResult<Response> {
    bans_page(&ui, &who, None)
}

/// The bans in force, with `notice` above them (422 when it says
/// something failed).
fn bans_page(ui: &Ui, who: &Signed, notice: Option<Result<String, String>>) -> UiResult<Response> {
    let ban_secs = ui.admin.provisioner.policy().ban_secs;
    let mut bans = ui.admin.provisioner.bans();
    bans.sort_by_key(|ban| std::cmp::Reverse(ban.until));
    let rows = bans
        .into_iter()
        .map(|ban| Row {
            lift: ban
                .address
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            why: format!(
                "asked for {} unknown MAC(s) over {}",
                ban.unknown_macs,
                ban.transport.name()
            ),
            since: show_time(ban.until.saturating_sub(ban_secs)),
            until: show_time(ban.until),
            address: ban.address,
        })
        .collect();
    let failed = matches!(notice, Some(Err(_)));
    let page = BansPage {
        chrome: ui.chrome(who, "bans", "Bans"),
        rows,
        notice,
    };
    html_with(status_of(failed), page)
}

#[derive(Debug, Deserialize)]
pub(super) struct LiftForm {
    address: String,
}

/// `POST /bans/lift`: lifts every ban covering the address.
pub(super) async fn lift(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(form): Form<LiftForm>,
) -> UiResult<Response> {
    let typed = form.address.trim();
    let notice = match typed.parse::<IpAddr>() {
        Err(_) => Err(
            UiError::from(crate::admin::api::ApiError::from(Invalid::new(
                "address",
                format!("'{typed}' is not an IP address"),
            )))
            .to_string(),
        ),
        Ok(address) => lift_bans(&ui.admin, &who.actor, address)
            .await
            .map(|lifted| format!("{lifted} ban(s) on {address} lifted."))
            .map_err(|refused| UiError::from(refused).to_string()),
    };
    bans_page(&ui, &who, Some(notice))
}
