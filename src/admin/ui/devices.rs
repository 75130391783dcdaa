//! `/devices`: phones, searched and filtered on the server and shown a
//! page at a time (a fleet of 10,000 lists as fast as one of 10), the
//! filters kept in the URL; bulk actions on the phones ticked, or on all
//! that match, said ("affects N devices") before they run; and a new
//! phone, its model picked from the catalog.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::session::Signed;
use super::{
    Chrome, Confirm, Pager, Shared, ShownOnce, Ui, UiError, UiResult, html, html_with, non_empty,
    query_value,
};
use crate::admin::api::devices::{create_device, has_current_file, parse_mac};
use crate::admin::api::resync::{Paced, resync_paced};
use crate::admin::api::templates::set_own_uploads;
use crate::admin::api::{AdminState, ApiError, ApiResult, blocking};
use crate::domain::clock::unix_now;
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, LineAssignment, Sighting, User, UserId};
use crate::render::cache::Stamp;
use crate::render::uploaded::{UploadFor, upload_for};
use crate::store::TemplateHistory;

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
    pub(super) id: String,
    pub(super) name: String,
}

/// A layout in a picker: its name and model.
pub(super) struct LayoutChoice {
    name: String,
    model: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    chrome: Chrome,
    query: DeviceQuery,
    models: Vec<ModelChoice>,
    layouts: Vec<LayoutChoice>,
    /// The uploads "set template" can give: `(key, label)`.
    templates: Vec<(String, String)>,
    rows: Vec<Row>,
    pager: Pager,
}

/// The list's filters, as the URL (and a bulk action's form) carries them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeviceQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    model: String,
    /// `seen`, `stale` or `never`.
    #[serde(default)]
    status: String,
    /// `yes`: only phones whose last file is not what they would get now.
    #[serde(default)]
    drift: String,
    /// `yes` or `no`: phones with (or without) an uploaded template of their own.
    #[serde(default)]
    custom: String,
    /// `yes` or `no`: phones with (or without) expansion modules.
    #[serde(default)]
    modules: String,
    page: Option<usize>,
}

impl DeviceQuery {
    /// The filters as `(name, value)`, trimmed, for a URL or hidden fields.
    fn fields(&self) -> [(&'static str, &str); 6] {
        [
            ("q", self.q.trim()),
            ("model", self.model.trim()),
            ("status", self.status.trim()),
            ("drift", self.drift.trim()),
            ("custom", self.custom.trim()),
            ("modules", self.modules.trim()),
        ]
    }

    /// The filters as a URL query ending in `&`, for the pager's links.
    fn url(&self) -> String {
        self.fields()
            .iter()
            .map(|(name, value)| format!("{name}={}&", query_value(value)))
            .collect()
    }

    /// Which phones the filters keep.
    fn filter(&self) -> Filter {
        Filter {
            needle: self.q.trim().to_lowercase(),
            model: non_empty(&self.model),
            seen: Seen::parse(self.status.trim()),
            drift: self.drift.trim() == "yes",
            custom: yes_or_no(&self.custom),
            modules: yes_or_no(&self.modules),
        }
    }
}

/// `yes` or `no` as a wanted answer; anything else as no filter.
fn yes_or_no(value: &str) -> Option<bool> {
    match value.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// `GET /devices?q=&model=&status=&drift=&custom=&modules=&page=`: `q` is
/// a MAC in any form or a part of one, an extension, a name or an IP
/// address.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<DeviceQuery>,
) -> UiResult<Response> {
    let shared = Arc::clone(&ui);
    let filter = query.filter();
    let page = query.page;
    let base = format!("/devices?{}", query.url());
    let (rows, pager) = blocking(move || list_page(&shared, &filter, page, &base)).await?;
    html(DevicesPage {
        chrome: ui.chrome(&who, "devices", "Devices"),
        models: model_choices(&ui.admin),
        layouts: layout_choices(&ui.admin)?,
        templates: template_choices(&ui.admin)?,
        query,
        rows,
        pager,
    })
}

/// Every stored layout, by name.
fn layout_choices(admin: &AdminState) -> ApiResult<Vec<LayoutChoice>> {
    Ok(admin
        .store
        .layouts()?
        .into_iter()
        .map(|l| LayoutChoice {
            name: l.name,
            model: l.model,
        })
        .collect())
}

/// Which phones the list shows.
pub(super) struct Filter {
    /// Lower case; empty for all.
    needle: String,
    model: Option<String>,
    seen: Option<Seen>,
    /// Only phones whose last file differs from what they would get now.
    drift: bool,
    /// With (or without) an uploaded template of their own.
    custom: Option<bool>,
    /// With (or without) expansion modules.
    modules: Option<bool>,
}

/// Which phones drift, remembered for one render stamp
/// ([`crate::provision::Provisioner::render_stamp`]): a phone's answer
/// holds while the stamp and what its sighting says it got stay the same.
/// A dashboard of 10,000 phones then renders only the phones that fetched
/// a file since the last look, or every phone once after a change.
#[derive(Debug, Default)]
pub(crate) struct DriftMemo {
    known: Mutex<Known>,
}

/// The phones' drift known under one render stamp.
#[derive(Debug, Default)]
struct Known {
    stamp: Stamp,
    /// Each phone's answer, with what its sighting said when it was found.
    phones: HashMap<Mac, (Got, bool)>,
}

/// What a sighting says a phone got and how it asked: every input of
/// whether it drifts besides the stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    file: String,
    etag: Option<String>,
    origin: Option<String>,
    firmware: Option<String>,
    without_secrets: bool,
}

impl Got {
    fn of(seen: &Sighting) -> Got {
        Got {
            file: seen.file.clone(),
            etag: seen.etag.clone(),
            origin: seen.origin.clone(),
            firmware: seen.firmware.clone(),
            without_secrets: seen.without_secrets,
        }
    }
}

impl DriftMemo {
    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether phone `mac`, last seen as `sighting`, drifts: the file it
    /// last got is not the one it would get now. `stamp` is the render
    /// stamp read before the phone's records were. Renders when the answer
    /// is not known: call it on a blocking thread.
    pub(super) fn drifts(
        &self,
        admin: &AdminState,
        stamp: Stamp,
        mac: Mac,
        sighting: Option<&Sighting>,
    ) -> bool {
        let Some(seen) = sighting else {
            return false;
        };
        let got = Got::of(seen);
        {
            let known = self.known();
            if known.stamp == stamp
                && let Some((was, drifts)) = known.phones.get(&mac)
                && *was == got
            {
                return *drifts;
            }
        }
        // Rendered without the lock: other pages' answers need not wait.
        let drifts = has_current_file(admin, mac, seen) == Some(false);
        let mut known = self.known();
        if known.stamp != stamp {
            known.phones.clear();
            known.stamp = stamp;
        }
        known.phones.insert(mac, (got, drifts));
        drifts
    }
}

/// The page of phones `filter` keeps; only that page's rows are built.
fn list_page(
    ui: &Ui,
    filter: &Filter,
    page: Option<usize>,
    base: &str,
) -> ApiResult<(Vec<Row>, Pager)> {
    let kept = matching(ui, filter)?;
    let now = unix_now();
    let (pager, range) = Pager::new(page, kept.len(), PER_PAGE, base);
    let rows = kept[range]
        .iter()
        .map(|device| row(&ui.admin, device, now))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((rows, pager))
}

/// The phones with an uploaded template of their own.
fn with_own_template(admin: &AdminState) -> ApiResult<HashSet<Mac>> {
    Ok(admin
        .store
        .templates()?
        .iter()
        .filter_map(|(key, _)| match upload_for(key)? {
            UploadFor::Device { mac, .. } => Some(mac),
            UploadFor::Model { .. } => None,
        })
        .collect())
}

/// Every phone `filter` keeps, in MAC order. Renders each phone's file
/// for the drift filter: call it on a blocking thread.
pub(super) fn matching(ui: &Ui, filter: &Filter) -> ApiResult<Vec<Device>> {
    let admin = &ui.admin;
    // Read before any phone's records, so a change made meanwhile makes
    // the drift answers stale, never a stale answer current.
    let stamp = admin.provisioner.render_stamp();
    admin.provisioner.flush_sightings()?;
    let customised = match filter.custom {
        Some(_) => with_own_template(admin)?,
        None => HashSet::new(),
    };
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
        if filter.model.as_ref().is_some_and(|m| *m != device.model)
            || filter
                .custom
                .is_some_and(|wanted| customised.contains(&device.mac) != wanted)
            || filter
                .modules
                .is_some_and(|wanted| device.modules.is_empty() == wanted)
        {
            continue;
        }
        // A sighting is read only when the filter needs it.
        let needs_sighting = filter.seen.is_some() || filter.drift;
        let mut sighting = None;
        if needs_sighting {
            sighting = admin.store.sighting(device.mac)?;
        }
        if filter
            .seen
            .is_some_and(|wanted| Seen::of(sighting.as_ref(), now) != wanted)
        {
            continue;
        }
        if !filter.needle.is_empty() && !matches_record(&device, &users, &filter.needle) {
            if !needs_sighting {
                sighting = admin.store.sighting(device.mac)?;
            }
            let ip_matches = sighting
                .as_ref()
                .is_some_and(|s| s.ip.to_string().contains(&filter.needle));
            if !ip_matches {
                continue;
            }
        }
        // Last, as it renders the phone's file.
        if filter.drift && !ui.drift.drifts(admin, stamp, device.mac, sighting.as_ref()) {
            continue;
        }
        kept.push(device);
    }
    Ok(kept)
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

/// How many of the phones a bulk action affects its confirmation names.
const LISTED: usize = 50;

/// What a bulk action does to each phone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BulkAction {
    /// A resync NOTIFY, paced.
    Resync,
    /// A reboot NOTIFY, paced.
    Reboot,
    /// Follow this named layout.
    Layout(String),
    /// Make the upload under this store key the phone's own upload of
    /// its file.
    SetTemplate(String),
    /// Take the phone's own upload of this store key's file out of force.
    ClearTemplate(String),
}

impl BulkAction {
    fn parse(form: &BulkForm) -> ApiResult<BulkAction> {
        let template = || {
            non_empty(&form.template)
                .ok_or_else(|| ApiError::from(Invalid::new("template", "choose a template")))
        };
        match (form.action.trim(), non_empty(&form.layout)) {
            ("resync", _) => Ok(BulkAction::Resync),
            ("reboot", _) => Ok(BulkAction::Reboot),
            ("layout", Some(name)) => Ok(BulkAction::Layout(name)),
            ("layout", None) => Err(Invalid::new("layout", "choose a layout to apply").into()),
            ("template", _) => Ok(BulkAction::SetTemplate(template()?)),
            ("clear-template", _) => Ok(BulkAction::ClearTemplate(template()?)),
            (other, _) => Err(Invalid::new("action", format!("no bulk action '{other}'")).into()),
        }
    }

    /// The action's fields, as its confirmation posts them again.
    fn fields(&self) -> Vec<(String, String)> {
        let (action, layout, template) = match self {
            BulkAction::Resync => ("resync", "", ""),
            BulkAction::Reboot => ("reboot", "", ""),
            BulkAction::Layout(name) => ("layout", name.as_str(), ""),
            BulkAction::SetTemplate(key) => ("template", "", key.as_str()),
            BulkAction::ClearTemplate(key) => ("clear-template", "", key.as_str()),
        };
        vec![
            ("action".into(), action.into()),
            ("layout".into(), layout.into()),
            ("template".into(), template.into()),
        ]
    }

    /// "Resync", "Apply layout reception".
    fn describe(&self) -> String {
        match self {
            BulkAction::Resync => "Resync".into(),
            BulkAction::Reboot => "Reboot".into(),
            BulkAction::Layout(name) => format!("Apply layout {name}"),
            BulkAction::SetTemplate(key) => format!("Set template {key}"),
            BulkAction::ClearTemplate(key) => format!("Clear own template {key}"),
        }
    }

    /// The upload a template action names, if it is one.
    fn template(&self) -> Option<&str> {
        match self {
            BulkAction::SetTemplate(key) | BulkAction::ClearTemplate(key) => Some(key),
            _ => None,
        }
    }
}

/// An upload a bulk action can give phones as their own: its store key,
/// its model and file (a file for one phone), and its source in force.
struct TemplateSource {
    key: String,
    model: String,
    file: String,
    source: String,
}

impl TemplateSource {
    /// The upload under `key`, if it is in force and its file is one a
    /// phone has of its own.
    fn find(admin: &AdminState, key: &str, history: &TemplateHistory) -> ApiResult<Option<Self>> {
        let Some(current) = history.current() else {
            return Ok(None);
        };
        let (model, file) = match upload_for(key) {
            Some(UploadFor::Model { model, file }) => (model.to_string(), file),
            Some(UploadFor::Device { mac, file }) => match admin.store.device(mac)? {
                Some(device) => (device.model, file),
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        let per_device = admin
            .catalog
            .model(&model)
            .and_then(|m| m.files.iter().find(|f| f.name == file))
            .is_some_and(|f| f.per_device);
        Ok(per_device.then(|| TemplateSource {
            key: key.to_string(),
            model,
            file: file.to_string(),
            source: current.source.clone(),
        }))
    }

    /// The upload under `key`, or why a bulk action cannot use it.
    fn named(admin: &AdminState, key: &str) -> ApiResult<Self> {
        let unusable = || {
            ApiError::from(Invalid::new(
                "template",
                format!("{key} is no uploaded template in force for a phone's own file"),
            ))
        };
        let history = admin.store.template(key)?.ok_or_else(unusable)?;
        TemplateSource::find(admin, key, &history)?.ok_or_else(unusable)
    }

    /// "{mac}.cfg of 00:15:65:aa:bb:cc (yealink-t46s)".
    fn label(&self) -> String {
        match upload_for(&self.key) {
            Some(UploadFor::Device { mac, .. }) => {
                format!("{} of {} ({})", self.file, mac.colon(), self.model)
            }
            _ => format!("{} of every {}", self.file, self.model),
        }
    }
}

/// Every upload the template bulk actions offer: `(key, label)`.
fn template_choices(admin: &AdminState) -> ApiResult<Vec<(String, String)>> {
    let mut choices = Vec::new();
    for (key, history) in admin.store.templates()? {
        if let Some(found) = TemplateSource::find(admin, &key, &history)? {
            choices.push((found.key.clone(), found.label()));
        }
    }
    Ok(choices)
}

/// What a bulk action's form posts: the action, the phones ticked (or
/// `all=yes` and the list's filters), and `confirm=yes` once confirmed.
#[derive(Debug, Default)]
struct BulkForm {
    action: String,
    layout: String,
    /// The upload a template action names.
    template: String,
    macs: Vec<String>,
    all: bool,
    query: DeviceQuery,
    confirmed: bool,
}

impl BulkForm {
    fn parse(body: &[u8]) -> BulkForm {
        let mut form = BulkForm::default();
        for (name, value) in form_urlencoded::parse(body) {
            let value = value.into_owned();
            match name.as_ref() {
                "action" => form.action = value,
                "layout" => form.layout = value,
                "template" => form.template = value,
                "mac" => form.macs.push(value),
                "all" => form.all = value == "yes",
                "confirm" => form.confirmed = value == "yes",
                "q" => form.query.q = value,
                "model" => form.query.model = value,
                "status" => form.query.status = value,
                "drift" => form.query.drift = value,
                "custom" => form.query.custom = value,
                "modules" => form.query.modules = value,
                _ => {}
            }
        }
        form
    }
}

/// `POST /devices/bulk`: asks first, naming how many phones the action
/// affects (each by MAC, so what runs is what was counted); confirmed, runs
/// it and shows what it did.
pub(super) async fn bulk(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    body: axum::body::Bytes,
) -> UiResult<Response> {
    let form = BulkForm::parse(&body);
    let action = BulkAction::parse(&form)?;
    let mut devices = chosen(&ui, &form).await?;
    let back = format!("/devices?{}", form.query.url());
    // A template is a file of one model: the phones of others are left out.
    let mut left_out = String::new();
    if let Some(key) = action.template() {
        let model = TemplateSource::named(&ui.admin, key)?.model;
        let before = devices.len();
        devices.retain(|d| d.model == model);
        if devices.len() < before {
            left_out = format!(
                " {} device(s) of another model are left out.",
                before - devices.len()
            );
        }
    }
    if devices.is_empty() {
        return Err(ApiError::from(Invalid::new("mac", "no device is chosen")).into());
    }
    let chrome = ui.chrome(&who, "devices", format!("{}?", action.describe()));
    if !form.confirmed {
        // The filters ride along only for the way back: the phones are named.
        let mut fields = action.fields();
        fields.extend(
            form.query
                .fields()
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        fields.extend(
            devices
                .iter()
                .map(|d| ("mac".to_string(), d.mac.to_string())),
        );
        let question = format!(
            "{} affects {} device(s).{left_out}",
            action.describe(),
            devices.len()
        );
        let listed = listed(devices.iter().map(|d| d.mac.colon().to_string()));
        return html(Confirm::ask(
            chrome,
            "/devices/bulk",
            fields,
            question,
            listed,
            back,
        ));
    }
    let outcome = run_bulk(&ui, &who, &action, devices).await;
    let chrome = ui.chrome(&who, "devices", action.describe());
    html_with(
        super::status_of(outcome.is_err()),
        Confirm::done(chrome, outcome, back),
    )
}

/// The first of `names`, and how many more there are.
pub(super) fn listed(names: impl ExactSizeIterator<Item = String>) -> Vec<String> {
    let total = names.len();
    let mut shown: Vec<String> = names.take(LISTED).collect();
    if total > LISTED {
        shown.push(format!("and {} more", total - LISTED));
    }
    shown
}

/// The phones the form chose: those ticked, or all that match its filters.
async fn chosen(ui: &Arc<Ui>, form: &BulkForm) -> ApiResult<Vec<Device>> {
    if form.all {
        let shared = Arc::clone(ui);
        let filter = form.query.filter();
        return blocking(move || matching(&shared, &filter)).await;
    }
    let admin = Arc::clone(&ui.admin);
    let macs = form
        .macs
        .iter()
        .map(|m| parse_mac(m))
        .collect::<ApiResult<Vec<Mac>>>()?;
    blocking(move || {
        admin.provisioner.flush_sightings()?;
        macs.into_iter()
            .map(|mac| {
                admin
                    .store
                    .device(mac)?
                    .ok_or_else(|| crate::admin::api::devices::not_found(mac).into())
            })
            .collect()
    })
    .await
}

/// Runs `action` on `devices`; what it did, or why it did nothing.
async fn run_bulk(
    ui: &Ui,
    who: &Signed,
    action: &BulkAction,
    devices: Vec<Device>,
) -> Result<String, String> {
    let refused = |e: ApiError| UiError::from(e).to_string();
    match action {
        BulkAction::Resync | BulkAction::Reboot => {
            let paced = Paced {
                reboot: *action == BulkAction::Reboot,
                ..Paced::default()
            };
            let plan = resync_paced(&ui.admin, &who.actor, devices, paced, "resync/bulk".into())
                .await
                .map_err(refused)?;
            Ok(format!(
                "{} queued for {} device(s), {} a second; left out: {} never seen, {} whose model has no such event.",
                action.describe(),
                plan.queued,
                plan.per_second,
                plan.never_seen,
                plan.no_event
            ))
        }
        BulkAction::Layout(name) => {
            let macs: Vec<Mac> = devices.iter().map(|d| d.mac).collect();
            let applied = super::layouts::apply_layout(&ui.admin, &who.actor, name, &macs)
                .await
                .map_err(refused)?;
            Ok(format!("{applied} device(s) now follow layout {name}."))
        }
        BulkAction::SetTemplate(key) | BulkAction::ClearTemplate(key) => {
            let set = matches!(action, BulkAction::SetTemplate(_));
            let (admin, actor, key) = (Arc::clone(&ui.admin), who.actor.clone(), key.clone());
            let (changed, file) = blocking(move || {
                let chosen = TemplateSource::named(&admin, &key)?;
                let model = admin.catalog.model(&chosen.model).ok_or_else(|| {
                    ApiError::NotFound(format!("model {} not found", chosen.model))
                })?;
                let file = model
                    .files
                    .iter()
                    .find(|f| f.name == chosen.file)
                    .ok_or_else(|| ApiError::NotFound(format!("file {} not found", chosen.file)))?;
                let source = set.then_some(chosen.source.as_str());
                let changed = set_own_uploads(&admin, &actor, model, file, &devices, source)?;
                Ok((changed, chosen.file))
            })
            .await
            .map_err(refused)?;
            Ok(if set {
                format!("{changed} device(s) now have this template as their own {file}.")
            } else {
                format!(
                    "{changed} device(s) had their own {file} removed; they get their model's again."
                )
            })
        }
    }
}
