//! `/devices`: phones, searched and filtered on the server and shown a
//! page at a time (a fleet of 10,000 lists as fast as one of 10); and a
//! new phone, its model picked from the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::Signed;
use super::{
    Chrome, Pager, Shared, ShownOnce, Ui, UiError, UiResult, html, html_with, non_empty,
    query_value,
};
use crate::admin::api::devices::create_device;
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, LineAssignment, Sighting, User, UserId};

/// Devices listed on one page.
const PER_PAGE: usize = 50;

/// How recently a phone must have fetched a file to count as seen; older
/// is stale.
const RECENT_SECS: u64 = 24 * 60 * 60;

/// When a phone last fetched its files, as the lists group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// In the last 24 hours.
    Recently = 0,
    /// Before that.
    Stale = 1,
    /// Never.
    Never = 2,
}

impl Seen {
    /// Which group a phone last seen as `sighting` says is in at `now`.
    pub(super) fn of(sighting: Option<&Sighting>, now: u64) -> Seen {
        match sighting {
            None => Seen::Never,
            Some(s) if now.saturating_sub(s.at) < RECENT_SECS => Seen::Recently,
            Some(_) => Seen::Stale,
        }
    }

    /// The name in URLs and on the page.
    pub(super) fn name(self) -> &'static str {
        match self {
            Seen::Recently => "seen",
            Seen::Stale => "stale",
            Seen::Never => "never",
        }
    }

    fn parse(name: &str) -> Option<Seen> {
        [Seen::Recently, Seen::Stale, Seen::Never]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A phone's line in the list.
struct Row {
    mac: Mac,
    model: String,
    description: String,
    user: String,
    last_seen: String,
    seen: &'static str,
}

/// A model in a picker: id and "Vendor Name".
pub(super) struct ModelChoice {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    chrome: Chrome,
    q: String,
    model: String,
    status: String,
    models: Vec<ModelChoice>,
    rows: Vec<Row>,
    pager: Pager,
}

#[derive(Deserialize)]
pub(super) struct DeviceQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    status: String,
    page: Option<usize>,
}

/// `GET /devices?q=&model=&status=&page=`: `q` is a MAC in any form or a
/// part of one, an extension, a name or an IP address.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<DeviceQuery>,
) -> UiResult<Response> {
    let admin = Arc::clone(&ui.admin);
    let filter = Filter {
        needle: query.q.trim().to_lowercase(),
        model: non_empty(&query.model),
        seen: Seen::parse(query.status.trim()),
    };
    let page = query.page;
    let base = format!(
        "/devices?q={}&model={}&status={}&",
        query_value(query.q.trim()),
        query_value(query.model.trim()),
        query_value(query.status.trim())
    );
    let (rows, pager) = blocking(move || list_page(&admin, &filter, page, &base)).await?;
    html(DevicesPage {
        chrome: ui.chrome(&who, "devices", "Devices"),
        q: query.q.trim().to_string(),
        model: query.model.trim().to_string(),
        status: query.status.trim().to_string(),
        models: model_choices(&ui.admin),
        rows,
        pager,
    })
}

/// Which phones the list shows.
struct Filter {
    /// Lower case; empty for all.
    needle: String,
    model: Option<String>,
    seen: Option<Seen>,
}

/// The page of phones `filter` keeps; only that page's rows are built.
fn list_page(
    admin: &AdminState,
    filter: &Filter,
    page: Option<usize>,
    base: &str,
) -> ApiResult<(Vec<Row>, Pager)> {
    admin.provisioner.flush_sightings()?;
    // Every user is read only for a search; a page's rows read their own.
    let users: HashMap<UserId, User> = if filter.needle.is_empty() {
        HashMap::new()
    } else {
        admin
            .store
            .users()?
            .into_iter()
            .map(|u| (u.id, u))
            .collect()
    };
    let now = unix_now();
    let mut kept = Vec::new();
    for device in admin.store.devices()? {
        if filter.model.as_ref().is_some_and(|m| *m != device.model) {
            continue;
        }
        // A sighting is read only when the filter needs it.
        let mut sighting = None;
        if let Some(wanted) = filter.seen {
            sighting = admin.store.sighting(device.mac)?;
            if Seen::of(sighting.as_ref(), now) != wanted {
                continue;
            }
        }
        if !filter.needle.is_empty() && !matches_record(&device, &users, &filter.needle) {
            if filter.seen.is_none() {
                sighting = admin.store.sighting(device.mac)?;
            }
            let ip_matches = sighting
                .as_ref()
                .is_some_and(|s| s.ip.to_string().contains(&filter.needle));
            if !ip_matches {
                continue;
            }
        }
        kept.push(device);
    }
    let (pager, range) = Pager::new(page, kept.len(), PER_PAGE, base);
    let rows = kept[range]
        .iter()
        .map(|device| row(admin, device, now))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((rows, pager))
}

/// Whether `needle` is in the device's MAC (any form, or a part), its
/// description, or its users' extensions or names.
fn matches_record(device: &Device, users: &HashMap<UserId, User>, needle: &str) -> bool {
    let hex: String = needle
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if !hex.is_empty()
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && device.mac.lower().contains(&hex)
    {
        return true;
    }
    if device
        .description
        .as_ref()
        .is_some_and(|d| d.to_lowercase().contains(needle))
    {
        return true;
    }
    device
        .lines
        .iter()
        .filter_map(|l| users.get(&l.user))
        .any(|u| u.extension.contains(needle) || u.display_name().to_lowercase().contains(needle))
}

fn row(admin: &AdminState, device: &Device, now: u64) -> ApiResult<Row> {
    let sighting = admin.store.sighting(device.mac)?;
    let user = match device.lines.first() {
        Some(line) => admin.store.user(line.user)?,
        None => None,
    }
    .map(|u| format!("{} {}", u.extension, u.display_name()))
    .unwrap_or_default();
    Ok(Row {
        mac: device.mac,
        model: device.model.clone(),
        description: device.description.clone().unwrap_or_default(),
        user,
        last_seen: sighting
            .as_ref()
            .map(|s| format!("{} from {}", super::show_time(s.at), s.ip))
            .unwrap_or_default(),
        seen: Seen::of(sighting.as_ref(), now).name(),
    })
}

/// Every model of the catalog, by vendor and name.
pub(super) fn model_choices(admin: &AdminState) -> Vec<ModelChoice> {
    let mut models: Vec<ModelChoice> = admin
        .catalog
        .models()
        .iter()
        .map(|m| ModelChoice {
            id: m.id.clone(),
            name: format!("{} {}", m.vendor, m.name),
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// What the new-device form asks.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeviceFields {
    mac: String,
    model: String,
    #[serde(default)]
    description: String,
    /// Line 1's user, by extension; empty for none yet.
    #[serde(default)]
    extension: String,
}

#[derive(Template)]
#[template(path = "device_new.html")]
struct NewDevicePage {
    chrome: Chrome,
    fields: DeviceFields,
    models: Vec<ModelChoice>,
    error: Option<String>,
}

/// What the new-device form may come prefilled with (adopting a
/// discovered phone).
#[derive(Deserialize)]
pub(super) struct Prefill {
    #[serde(default)]
    mac: String,
    #[serde(default)]
    model: String,
}

/// `GET /devices/new?mac=&model=`.
pub(super) async fn new(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(prefill): Query<Prefill>,
) -> UiResult<Response> {
    html(NewDevicePage {
        chrome: ui.chrome(&who, "devices", "New device"),
        fields: DeviceFields {
            mac: prefill.mac,
            model: prefill.model,
            ..DeviceFields::default()
        },
        models: model_choices(&ui.admin),
        error: None,
    })
}

/// `POST /devices`: stores the phone; when the policy gives each phone its
/// own HTTP credentials, the answer shows them, the only time they are.
pub(super) async fn create(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(fields): Form<DeviceFields>,
) -> UiResult<Response> {
    let created = match device_of(&ui, &fields) {
        Ok(device) => create_device(&ui.admin, &who.actor, device).await,
        Err(refused) => Err(refused),
    };
    let answer = match created {
        Ok(answer) => answer,
        Err(refused) => {
            let page = NewDevicePage {
                chrome: ui.chrome(&who, "devices", "New device"),
                fields,
                models: model_choices(&ui.admin),
                error: Some(UiError::from(refused).to_string()),
            };
            return html_with(StatusCode::UNPROCESSABLE_ENTITY, page);
        }
    };
    let next = format!("/devices/{}", answer["mac"].as_str().unwrap_or_default());
    let credentials = &answer["http_auth"];
    match (
        credentials["username"].as_str(),
        credentials["password"].as_str(),
    ) {
        (Some(username), Some(password)) => html(ShownOnce {
            chrome: ui.chrome(&who, "devices", "Device created"),
            what: "The device was created. Its phone must present these HTTP credentials."
                .to_string(),
            secrets: vec![
                ("HTTP username".into(), username.to_string()),
                ("HTTP password".into(), password.to_string()),
            ],
            next,
        }),
        _ => Ok(super::see_other(&next)),
    }
}

/// The device the form describes.
fn device_of(ui: &Ui, fields: &DeviceFields) -> ApiResult<Device> {
    let mac: Mac = fields
        .mac
        .trim()
        .parse()
        .map_err(|e| Invalid::new("mac", format!("'{}': {e}", fields.mac.trim())))?;
    let lines = match non_empty(&fields.extension) {
        None => Vec::new(),
        Some(extension) => {
            let user = ui
                .admin
                .store
                .user_by_extension(&extension)?
                .ok_or_else(|| {
                    ApiError::Invalid(Invalid::new(
                        "extension",
                        format!("no user has extension {extension}"),
                    ))
                })?;
            vec![LineAssignment {
                user: user.id,
                label: None,
            }]
        }
    };
    Ok(Device {
        mac,
        model: fields.model.trim().to_string(),
        description: non_empty(&fields.description),
        lines,
        keys: Vec::new(),
        layout: None,
        modules: Vec::new(),
        settings: Default::default(),
    })
}
