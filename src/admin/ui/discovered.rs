//! `/discovered`: phones that asked for their files but are not devices,
//! newest first and a page at a time, with what the catalog recognised of
//! them (vendor from the OUI or User-Agent, model from the User-Agent or
//! the file asked for). Each can be adopted (the new-device form,
//! prefilled), ignored, or banned; one that looks like the replacement of
//! a phone gone quiet links to that device's replace wizard.
//!
//! Ignoring forgets the record, as adopting does: nothing else in the
//! store marks a MAC, and a phone that asks again is worth seeing again.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::devices::Seen;
use super::session::Signed;
use super::{Chrome, Pager, Shared, UiResult, html, query_value, see_other, show_time};
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::records::{Discovered, Invalid};
use crate::domain::transport::Transport;
use crate::store::Change;

/// Discovered phones listed on one page.
const PER_PAGE: usize = 50;

/// A discovered phone's line in the list.
struct Row {
    mac: Mac,
    vendor: String,
    /// The model as people name it, or as the phone reported it.
    model: String,
    /// The catalog's id of the model, to prefill the new-device form.
    model_id: String,
    ip: IpAddr,
    user_agent: String,
    first_seen: String,
    last_seen: String,
    count: u64,
    /// The device it probably replaces.
    replaces: Option<Mac>,
}

#[derive(Template)]
#[template(path = "discovered.html")]
struct DiscoveredPage {
    chrome: Chrome,
    rows: Vec<Row>,
    pager: Pager,
    oldest_first: bool,
    banned: Option<IpAddr>,
}

#[derive(Deserialize)]
pub(super) struct DiscoveredQuery {
    /// `oldest` for the least recently seen first; else the newest first.
    #[serde(default)]
    order: String,
    page: Option<usize>,
    /// The address just banned, to say so.
    banned: Option<IpAddr>,
}

/// `GET /discovered?order=&page=`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<DiscoveredQuery>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let oldest_first = query.order == "oldest";
    let base = format!("/discovered?order={}&", query_value(&query.order));
    let page = query.page;
    let (rows, pager) = blocking(move || list_page(&admin, oldest_first, page, &base)).await?;
    html(DiscoveredPage {
        chrome: ui.chrome(&who, "discovered", "Discovered phones"),
        rows,
        pager,
        oldest_first,
        banned: query.banned,
    })
}

/// One page of discovered phones, by last seen; only that page's rows
/// look for the devices they may replace.
fn list_page(
    admin: &AdminState,
    oldest_first: bool,
    page: Option<usize>,
    base: &str,
) -> ApiResult<(Vec<Row>, Pager)> {
    // Show what phones did up to now, not up to the last batch write.
    admin.provisioner.flush_sightings()?;
    let mut found = admin.store.discovered()?;
    found.sort_by_key(|d| d.last.at);
    if !oldest_first {
        found.reverse();
    }
    let (pager, range) = Pager::new(page, found.len(), PER_PAGE, base);
    let shown = &found[range];
    let models: HashSet<&str> = shown.iter().filter_map(|d| d.model.as_deref()).collect();
    let quiet = quiet_devices(admin, &models)?;
    let rows = shown
        .iter()
        .map(|d| row(admin, d, replaced_device(d, &quiet)))
        .collect();
    Ok((rows, pager))
}

fn row(admin: &AdminState, found: &Discovered, replaces: Option<Mac>) -> Row {
    let known = found
        .model
        .as_deref()
        .and_then(|id| admin.catalog.model(id));
    let model = match (known, &found.reported_model) {
        (Some(model), _) => format!("{} {}", model.vendor, model.name),
        (None, Some(reported)) => format!("{reported} (not in the catalog)"),
        (None, None) => String::new(),
    };
    Row {
        mac: found.mac,
        vendor: found.vendor.clone().unwrap_or_default(),
        model,
        model_id: known.map(|m| m.id.clone()).unwrap_or_default(),
        ip: found.last.ip,
        user_agent: found.last.user_agent.clone().unwrap_or_default(),
        first_seen: show_time(found.first_seen),
        last_seen: show_time(found.last.at),
        count: found.count,
        replaces,
    }
}

/// A device whose phone has gone quiet: its MAC and the address it was
/// last seen from, if ever.
struct Quiet {
    mac: Mac,
    last_ip: Option<IpAddr>,
}

/// The devices of `models` whose phone was not seen in the last 24 hours,
/// or never, by model.
fn quiet_devices(
    admin: &AdminState,
    models: &HashSet<&str>,
) -> ApiResult<HashMap<String, Vec<Quiet>>> {
    let mut quiet: HashMap<String, Vec<Quiet>> = HashMap::new();
    if models.is_empty() {
        return Ok(quiet);
    }
    let now = unix_now();
    for device in admin.store.devices()? {
        if !models.contains(device.model.as_str()) {
            continue;
        }
        let sighting = admin.store.sighting(device.mac)?;
        if Seen::of(sighting.as_ref(), now) == Seen::Recently {
            continue;
        }
        quiet.entry(device.model).or_default().push(Quiet {
            mac: device.mac,
            last_ip: sighting.map(|s| s.ip),
        });
    }
    Ok(quiet)
}

/// The device a discovered phone probably replaces: among the quiet
/// devices of its model, the one last seen from its address, else the
/// one last seen from its network (an IPv4 /24, an IPv6 /64), else the
/// only one, if there is just one. A guess to offer, never acted on alone.
fn replaced_device(found: &Discovered, quiet: &HashMap<String, Vec<Quiet>>) -> Option<Mac> {
    let candidates = quiet.get(found.model.as_deref()?)?;
    let ip = found.last.ip;
    let from = |matches: &dyn Fn(IpAddr) -> bool| {
        let mut near = candidates.iter().filter(|q| q.last_ip.is_some_and(matches));
        near.next().filter(|_| near.next().is_none()).map(|q| q.mac)
    };
    from(&|last| last.to_canonical() == ip.to_canonical())
        .or_else(|| from(&|last| same_network(last, ip)))
        .or(match candidates.as_slice() {
            [only] => Some(only.mac),
            _ => None,
        })
}

/// Whether two addresses are in the same IPv4 /24 or IPv6 /64.
fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

fn parse_mac(mac: &str) -> ApiResult<Mac> {
    Ok(mac
        .parse()
        .map_err(|e| Invalid::new("mac", format!("'{mac}': {e}")))?)
}

/// The discovered record of `mac`, with what phones did up to now.
fn discovered(admin: &AdminState, mac: Mac) -> ApiResult<Discovered> {
    admin.provisioner.flush_sightings()?;
    admin
        .store
        .discovered_mac(mac)?
        .ok_or_else(|| ApiError::NotFound(format!("{mac} has not been discovered")))
}

/// `POST /discovered/{mac}/ignore`: forgets the phone until it asks again.
pub(super) async fn ignore(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    discovered(&ui.admin, mac)?;
    ui.admin
        .store
        .change(&who.actor, |_| {
            Ok::<_, ApiError>((vec![Change::DeleteDiscovered(mac)], ()))
        })
        .await?;
    tracing::info!(%mac, "discovered phone ignored");
    Ok(see_other("/discovered"))
}

/// `POST /discovered/{mac}/ban`: bans the address the phone last asked
/// from, on every transport, for the policy's ban time, as a scanner
/// would be; `DELETE /api/v1/bans/{address}` lifts it.
pub(super) async fn ban(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let address = discovered(&ui.admin, mac)?.last.ip;
    for transport in [Transport::Http, Transport::Tftp] {
        ui.admin.provisioner.scan_guard(transport).ban_host(address);
    }
    ui.admin
        .store
        .record_action(
            &who.actor,
            "ban.add",
            format!("ban/{address}"),
            json!({"discovered": mac}),
        )
        .await?;
    Ok(see_other(&format!(
        "/discovered?banned={}",
        query_value(&address.to_string())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::Sighting;

    fn found(ip: &str) -> Discovered {
        Discovered {
            mac: "001565000099".parse().unwrap(),
            first_seen: 0,
            count: 1,
            vendor: Some("Yealink".into()),
            model: Some("yealink-t46s".into()),
            reported_model: None,
            last: Sighting {
                at: 0,
                ip: ip.parse().unwrap(),
                user_agent: None,
                firmware: None,
                file: "001565000099.cfg".into(),
                transport: "http".into(),
                etag: None,
                origin: None,
                without_secrets: false,
            },
        }
    }

    fn quiet(devices: &[(&str, Option<&str>)]) -> HashMap<String, Vec<Quiet>> {
        let list = devices
            .iter()
            .map(|(mac, ip)| Quiet {
                mac: mac.parse().unwrap(),
                last_ip: ip.map(|ip| ip.parse().unwrap()),
            })
            .collect();
        HashMap::from([("yealink-t46s".to_string(), list)])
    }

    #[test]
    fn the_replaced_phone_is_the_quiet_one_nearest_the_new_one() {
        let mac = |m: &str| Some(m.parse::<Mac>().unwrap());
        let two = quiet(&[
            ("001565000001", Some("192.0.2.10")),
            ("001565000002", Some("198.51.100.10")),
        ]);
        assert_eq!(
            replaced_device(&found("192.0.2.10"), &two),
            mac("001565000001")
        );
        assert_eq!(
            replaced_device(&found("198.51.100.77"), &two),
            mac("001565000002")
        );
        assert_eq!(
            replaced_device(&found("203.0.113.5"), &two),
            None,
            "no guess"
        );
        let one = quiet(&[("001565000003", None)]);
        assert_eq!(
            replaced_device(&found("203.0.113.5"), &one),
            mac("001565000003")
        );
        let other_model = Discovered {
            model: Some("yealink-t48s".into()),
            ..found("192.0.2.10")
        };
        assert_eq!(replaced_device(&other_model, &two), None);
    }
}
