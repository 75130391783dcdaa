//! The device page's Keys tab: the phone's faceplate from the catalog (its
//! keys, each module's keys page by page), a key edited in place, moved
//! with "move up/down" buttons (and dragged, where SortableJS runs), its
//! target picked by type-ahead over users or typed as any number or
//! feature code, with warnings; one "Save" or "Save and resync".
//!
//! The form posts every position in page order; a position's number is its
//! place in its group (the phone, or a module), so moving a key is moving
//! its row. A move, or one of the [`super::key_tools`], is answered with
//! the draft, unsaved, so many edits make one change.
//!
//! A key that targets a user is labelled `{name}` unless it says
//! otherwise: the render fills in the user's name, so the label follows a
//! rename. The editor shows such a label empty, with the name as its hint.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::device::{Tab, device_page, resync_notice};
use super::key_tools::{self, FillRange, Preview};
use super::session::{CSRF_FIELD, Signed};
use super::{Shared, Ui, UiError, UiResult, html};
use crate::admin::api::devices::{not_found, parse_mac, update_device};
use crate::admin::api::{ApiError, ApiResult};
use crate::catalog::PhoneModel;
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, Key, KeyType};

/// How many users the picker suggests.
const SUGGESTIONS: usize = 8;

/// The label that the render replaces with the name of the user a key
/// targets.
const NAME_LABEL: &str = "{name}";

/// The name of a key's position, as pages and warnings say it.
pub(super) fn position_name(module: Option<u8>, index: u16) -> String {
    match module {
        None => format!("Key {index}"),
        Some(m) => format!("Module {m} key {index}"),
    }
}

/// One position on the faceplate and what is on it.
pub(crate) struct Slot {
    /// Its place in the form, from 0.
    pub row: usize,
    /// `""` for the phone, else the module's number.
    pub group: String,
    /// Its position in its group, from 1.
    pub index: u16,
    /// "Key 3", "Module 1 key 4".
    pub position: String,
    /// The key type's name (`none` when empty).
    pub kind: &'static str,
    /// The target: an extension, a number, a feature code, a URL.
    pub value: String,
    /// The text beside the key; empty when it is the target's name.
    pub label: String,
    /// The name of the user the key targets, when its label follows it.
    pub follows: String,
    /// The device line it uses (from 1).
    pub line: u16,
    /// What may be wrong with it.
    pub warnings: Vec<String>,
    /// The move button to focus after a move (`up`, `down`), if this key moved.
    pub focus: &'static str,
}

/// A page of a group's keys.
pub(crate) struct KeyPage {
    /// "Page 2", or empty when the group has one page.
    pub title: String,
    /// Its positions.
    pub slots: Vec<Slot>,
}

/// The phone's own keys, or one module's.
pub(crate) struct Group {
    /// "Yealink T46S: 27 keys", "Module 1: EXP50, 60 keys on 3 pages".
    pub title: String,
    /// The module's number, 0 for the phone itself.
    pub module: u8,
    /// Its pages.
    pub pages: Vec<KeyPage>,
}

/// The key editor's content: the faceplate with the keys on it.
pub(crate) struct Editor {
    /// The phone's keys first, then each module's.
    pub groups: Vec<Group>,
    /// The key types the model can do, `none` first.
    pub key_types: Vec<&'static str>,
    /// The device's lines, for a key's line picker.
    pub lines: Vec<u16>,
    /// Whether the keys shown differ from the stored ones.
    pub unsaved: bool,
    /// The draft's modules, comma-separated, posted back with the keys.
    pub modules: String,
    /// The expansion modules that fit the model: id and name.
    pub module_kinds: Vec<(String, String)>,
    /// Whether another module can be chained.
    pub can_add_module: bool,
    /// How many modules the model takes.
    pub max_modules: u8,
    /// Every position in page order, for the fill's starting position.
    pub positions: Vec<String>,
    /// The key types a fill can make.
    pub fill_types: Vec<&'static str>,
    /// The tools' fields as last posted.
    pub tools: ToolFields,
    /// What the last tool did or would do.
    pub preview: Option<Preview>,
    /// Whether the draft tools (sort, fill, copy, modules) are offered:
    /// a device's editor has them, a layout's does not.
    pub has_tools: bool,
    /// Where the form posts.
    pub action: String,
    /// Where the target picker asks for suggestions.
    pub targets: String,
    /// The id of the page's element an htmx answer replaces.
    pub frame: &'static str,
}

/// The tools' own fields in the keys form.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolFields {
    /// The fill's first number.
    pub fill_first: String,
    /// The fill's last number.
    pub fill_last: String,
    /// The fill's key type.
    pub fill_type: String,
    /// The fill's starting position, in page order from 0.
    pub fill_start: usize,
    /// `device`, `user` or `layout`.
    pub copy_kind: String,
    /// The MAC, extension or layout name to copy from.
    pub copy_from: String,
    /// The module to add.
    pub module_kind: String,
}

/// What the editor needs to know about users: names by extension and SIP
/// username, names by extension alone (what a `{name}` label resolves
/// by), and the device's own extensions.
pub(super) struct Directory {
    names: HashMap<String, String>,
    by_extension: HashMap<String, String>,
    own: HashSet<String>,
}

impl Directory {
    fn of(ui: &Ui, device: &Device) -> ApiResult<Directory> {
        let mut names = HashMap::new();
        let mut by_extension = HashMap::new();
        let mut own = HashSet::new();
        for user in ui.admin.store.users()? {
            if device.lines.iter().any(|l| l.user == user.id) {
                own.insert(user.extension.clone());
                own.insert(user.sip.username.clone());
            }
            names.insert(user.sip.username.clone(), user.display_name());
            names.insert(user.extension.clone(), user.display_name());
            by_extension.insert(user.extension.clone(), user.display_name());
        }
        Ok(Directory {
            names,
            by_extension,
            own,
        })
    }

    /// The label to store for a key on `value` labelled `label`: `{name}`
    /// when it targets a user and says nothing else than the user's name.
    fn stored_label(&self, value: &str, label: &str) -> String {
        let label = label.trim();
        match self.by_extension.get(value.trim()) {
            Some(name) if label.is_empty() || label == name => NAME_LABEL.to_string(),
            _ => label.to_string(),
        }
    }

    /// The name a key's label follows, if it follows one.
    fn followed(&self, key: &Key) -> Option<&String> {
        self.by_extension
            .get(key.value.trim())
            .filter(|_| key.label == NAME_LABEL)
    }

    /// The label as the phone shows it.
    fn shown_label(&self, key: &Key) -> String {
        match self.followed(key) {
            Some(name) => name.clone(),
            None => key.label.clone(),
        }
    }

    /// What may be wrong with a `kind` key targeting `value`: no such user
    /// (for a key that watches one), the phone's own extension, or the
    /// same target on `other`, an earlier position.
    fn warnings(&self, kind: KeyType, value: &str, other: Option<&str>) -> Vec<String> {
        let mut warnings = Vec::new();
        let value = value.trim();
        if value.is_empty() {
            return warnings;
        }
        let watches = matches!(
            kind,
            KeyType::Blf | KeyType::BlfSpeedDial | KeyType::Intercom
        );
        if watches && !self.names.contains_key(value) {
            warnings.push(format!(
                "no user has extension {value}: its lamp stays dark unless the PBX knows it"
            ));
        }
        if self.own.contains(value) {
            warnings.push(format!("{value} is this phone's own extension"));
        }
        if let Some(other) = other {
            warnings.push(format!("{other} targets {value} too"));
        }
        warnings
    }
}

impl Editor {
    /// The editor for the stored device.
    pub(super) fn of_device(ui: &Ui, device: &Device) -> ApiResult<Editor> {
        Editor::build(ui, device, None, false)
    }

    /// The faceplate of `device`'s model and modules with its keys on it;
    /// `moved` is the row whose move button keeps the focus.
    pub(super) fn build(
        ui: &Ui,
        device: &Device,
        moved: Option<(usize, &'static str)>,
        unsaved: bool,
    ) -> ApiResult<Editor> {
        let model = model_of(ui, device)?;
        let modules = model.device_modules(device)?;
        let directory = Directory::of(ui, device)?;
        let keys: HashMap<(Option<u8>, u16), &Key> = device
            .keys
            .iter()
            .map(|k| ((k.module, k.index), k))
            .collect();
        let mut targets: HashMap<(KeyType, String), String> = HashMap::new();
        let mut row = 0;
        let mut slot = |module: Option<u8>, index: u16| {
            let key = keys.get(&(module, index));
            let kind = key.map_or(KeyType::None, |k| k.kind);
            let value = key.map(|k| k.value.clone()).unwrap_or_default();
            let position = position_name(module, index);
            let target = (kind, value.trim().to_string());
            let earlier = targets.get(&target).cloned();
            if kind != KeyType::None && !target.1.is_empty() && earlier.is_none() {
                targets.insert(target, position.clone());
            }
            let follows = key.and_then(|k| directory.followed(k)).cloned();
            let slot = Slot {
                row,
                group: module.map(|m| m.to_string()).unwrap_or_default(),
                index,
                warnings: directory.warnings(kind, &value, earlier.as_deref()),
                position,
                kind: kind.name(),
                value,
                label: match (&follows, key) {
                    (None, Some(k)) => k.label.clone(),
                    _ => String::new(),
                },
                follows: follows.unwrap_or_default(),
                line: key.map_or(1, |k| k.line),
                focus: moved.filter(|(r, _)| *r == row).map_or("", |(_, d)| d),
            };
            row += 1;
            slot
        };
        let mut groups = vec![Group {
            title: format!("{} {}: {} keys", model.vendor, model.name, model.line_keys),
            module: 0,
            pages: vec![KeyPage {
                title: String::new(),
                slots: (1..=model.line_keys).map(|i| slot(None, i)).collect(),
            }],
        }];
        for (n, spec) in (1u8..).zip(&modules) {
            let per_page = spec.keys.div_ceil(spec.pages.max(1)).max(1);
            let pages = (0..spec.pages.max(1))
                .map(|p| KeyPage {
                    title: if spec.pages > 1 {
                        format!("Page {}", p + 1)
                    } else {
                        String::new()
                    },
                    slots: (p * per_page + 1..=((p + 1) * per_page).min(spec.keys))
                        .map(|i| slot(Some(n), i))
                        .collect(),
                })
                .collect();
            groups.push(Group {
                title: format!(
                    "Module {n}: {}, {} keys on {} page(s)",
                    spec.name, spec.keys, spec.pages
                ),
                module: n,
                pages,
            });
        }
        let usable = || {
            model
                .key_types
                .iter()
                .filter(|k| **k != KeyType::None)
                .map(|k| k.name())
        };
        let mut key_types = vec![KeyType::None.name()];
        key_types.extend(usable());
        Ok(Editor {
            groups,
            key_types,
            lines: (1..=u16::try_from(device.lines.len().max(1)).unwrap_or(1)).collect(),
            unsaved,
            modules: device.modules.join(","),
            module_kinds: model
                .modules
                .iter()
                .map(|m| (m.id.clone(), format!("{} ({} keys)", m.name, m.keys)))
                .collect(),
            can_add_module: device.modules.len() < usize::from(model.max_modules),
            max_modules: model.max_modules,
            positions: key_tools::positions(model, device)?
                .into_iter()
                .map(|(module, index)| position_name(module, index))
                .collect(),
            fill_types: usable()
                .filter(|k| ["blf", "speed_dial", "blf_speed_dial"].contains(k))
                .collect(),
            tools: ToolFields::default(),
            preview: None,
            has_tools: true,
            action: format!("/devices/{}/keys", device.mac),
            targets: format!("/devices/{}/targets", device.mac),
            frame: "device-body",
        })
    }
}

/// The catalog's model of `device`.
fn model_of<'u>(ui: &'u Ui, device: &Device) -> ApiResult<&'u PhoneModel> {
    ui.admin.catalog.model(&device.model).ok_or_else(|| {
        ApiError::Invalid(Invalid::new(
            "model",
            format!("unknown model '{}'", device.model),
        ))
    })
}

/// One posted row of the form: a position and what is on it.
#[derive(Debug, Clone, Default)]
struct Row {
    group: String,
    kind: String,
    value: String,
    label: String,
    line: String,
}

/// A tool of the keys form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    SortByLabel,
    /// The fill: `true` applies it, `false` only previews it.
    Fill(bool),
    /// The copy: `true` applies it, `false` only previews it.
    Copy(bool),
    AddModule,
    /// Unchains this module (from 1).
    RemoveModule(u8),
}

impl Tool {
    fn parse(value: &str) -> ApiResult<Tool> {
        Ok(match value {
            "sort" => Tool::SortByLabel,
            "fill_preview" => Tool::Fill(false),
            "fill" => Tool::Fill(true),
            "copy_preview" => Tool::Copy(false),
            "copy" => Tool::Copy(true),
            "add_module" => Tool::AddModule,
            other => other
                .strip_prefix("remove_module:")
                .and_then(|n| n.parse().ok())
                .map(Tool::RemoveModule)
                .ok_or_else(|| ApiError::BadRequest(format!("no tool '{other}'")))?,
        })
    }
}

/// What the editor posted: its rows in page order, its modules, and which
/// button.
#[derive(Debug)]
pub(super) struct Posted {
    rows: Vec<Row>,
    /// The draft's module ids; none posted: the stored ones.
    modules: Option<Vec<String>>,
    /// A move: the row and `up` or `down`.
    moving: Option<(usize, &'static str)>,
    /// A tool to use on the draft.
    tool: Option<Tool>,
    /// The tools' fields.
    fields: ToolFields,
    /// Resync after saving.
    resync: bool,
}

impl Posted {
    /// Reads the form; each row posts `k_group`, `k_type`, `k_value`,
    /// `k_label` and `k_line`, in that order.
    fn parse(body: &[u8]) -> ApiResult<Posted> {
        let mut rows: Vec<Row> = Vec::new();
        let (mut moving, mut resync, mut tool, mut modules) = (None, false, None, None);
        let mut fields = ToolFields::default();
        let incomplete =
            || ApiError::BadRequest("the keys form is incomplete: reload the page".into());
        for (name, value) in form_urlencoded::parse(body) {
            let value = value.into_owned();
            match name.as_ref() {
                "k_group" => rows.push(Row {
                    group: value,
                    ..Row::default()
                }),
                "k_type" => rows.last_mut().ok_or_else(incomplete)?.kind = value,
                "k_value" => rows.last_mut().ok_or_else(incomplete)?.value = value,
                "k_label" => rows.last_mut().ok_or_else(incomplete)?.label = value,
                "k_line" => rows.last_mut().ok_or_else(incomplete)?.line = value,
                "move" => moving = parse_move(&value),
                "action" => resync = value == "save_resync",
                "tool" => tool = Some(Tool::parse(&value)?),
                "modules" => {
                    modules = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect(),
                    );
                }
                "fill_first" => fields.fill_first = value,
                "fill_last" => fields.fill_last = value,
                "fill_type" => fields.fill_type = value,
                "fill_start" => fields.fill_start = value.parse().unwrap_or(0),
                "copy_kind" => fields.copy_kind = value,
                "copy_from" => fields.copy_from = value,
                "module_kind" => fields.module_kind = value,
                CSRF_FIELD => {}
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unexpected field '{other}' in the keys form"
                    )));
                }
            }
        }
        Ok(Posted {
            rows,
            modules,
            moving,
            tool,
            fields,
            resync,
        })
    }

    /// The rows with the moving one swapped with its neighbour: what is on
    /// the keys moves, the positions stay.
    fn apply_move(&mut self) {
        let Some((row, direction)) = self.moving else {
            return;
        };
        let other = match direction {
            "up" => row.checked_sub(1),
            _ => Some(row + 1).filter(|r| *r < self.rows.len()),
        };
        let Some(other) = other.filter(|_| row < self.rows.len()) else {
            self.moving = None;
            return;
        };
        let (a, b) = (self.rows[row].clone(), self.rows[other].clone());
        self.rows[row] = Row {
            group: a.group,
            ..b
        };
        self.rows[other] = Row {
            group: b.group,
            ..a
        };
        self.moving = Some((other, direction));
    }

    /// The keys the rows describe; an empty position is no key.
    fn keys(&self, directory: &Directory) -> ApiResult<Vec<Key>> {
        let mut next_index: HashMap<&str, u16> = HashMap::new();
        let mut keys = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            let index = next_index.entry(row.group.as_str()).or_insert(0);
            *index += 1;
            let field = |name: &str| format!("keys[{i}].{name}");
            let kind = KeyType::ALL
                .into_iter()
                .find(|k| k.name() == row.kind)
                .ok_or_else(|| {
                    Invalid::new(field("type"), format!("no key type '{}'", row.kind))
                })?;
            if kind == KeyType::None {
                continue;
            }
            let module = match row.group.as_str() {
                "" => None,
                n => Some(
                    n.parse()
                        .map_err(|_| Invalid::new(field("module"), "not a module"))?,
                ),
            };
            let line = match row.line.trim() {
                "" => 1,
                n => n
                    .parse()
                    .map_err(|_| Invalid::new(field("line"), "not a line"))?,
            };
            let value = row.value.trim().to_string();
            keys.push(Key {
                module,
                index: *index,
                kind,
                label: directory.stored_label(&value, &row.label),
                value,
                line,
            });
        }
        Ok(keys)
    }
}

impl Posted {
    /// What the editor posted for `owner` (a device, or a layout shown as
    /// one): `owner` with the posted keys, moved if a move was asked.
    pub(super) fn draft(
        ui: &Ui,
        body: &[u8],
        owner: Device,
    ) -> ApiResult<(Device, Posted, Directory)> {
        let mut posted = Posted::parse(body)?;
        let directory = Directory::of(ui, &owner)?;
        posted.apply_move();
        let draft = Device {
            keys: posted.keys(&directory)?,
            modules: (posted.modules.clone()).unwrap_or_else(|| owner.modules.clone()),
            ..owner
        };
        Ok((draft, posted, directory))
    }

    /// The row whose move was asked, and which way; none for a save.
    pub(super) fn moving(&self) -> Option<(usize, &'static str)> {
        self.moving
    }

    /// Whether "Save and resync" was pressed.
    pub(super) fn resyncs(&self) -> bool {
        self.resync
    }
}

fn parse_move(value: &str) -> Option<(usize, &'static str)> {
    let (row, direction) = value.split_once(':')?;
    let direction = match direction {
        "up" => "up",
        "down" => "down",
        _ => return None,
    };
    Some((row.parse().ok()?, direction))
}

/// `POST /devices/{mac}/keys`: a move or a tool (answered with the draft)
/// or a save (and resync).
pub(super) async fn submit(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let stored = ui.admin.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    let (mut draft, posted, directory) = Posted::draft(&ui, &body, stored)?;
    if let Some(tool) = posted.tool {
        let done = use_tool(&ui, &directory, &mut draft, tool, &posted.fields);
        for key in &mut draft.keys {
            key.label = directory.stored_label(&key.value, &key.label);
        }
        let mut editor = Editor::build(&ui, &draft, None, true)?;
        editor.tools = posted.fields;
        let notice = match done {
            Ok(preview) => {
                editor.preview = preview;
                None
            }
            Err(refused) => Some(Err(UiError::from(refused).to_string())),
        };
        return device_page(&ui, &who, mac, Tab::Keys(Some(Box::new(editor))), notice).await;
    }
    if posted.moving.is_some() {
        let editor = Editor::build(&ui, &draft, posted.moving, true)?;
        return device_page(&ui, &who, mac, Tab::Keys(Some(Box::new(editor))), None).await;
    }
    let (keys, modules) = (draft.keys.clone(), draft.modules.clone());
    let saved = update_device(&ui.admin, &who.actor, mac, |current| {
        Ok(Device {
            keys,
            modules,
            ..current.clone()
        })
    })
    .await;
    if let Err(refused) = saved {
        let editor = Editor::build(&ui, &draft, None, true)?;
        let notice = Err(format!("Not saved: {}", UiError::from(refused)));
        return device_page(
            &ui,
            &who,
            mac,
            Tab::Keys(Some(Box::new(editor))),
            Some(notice),
        )
        .await;
    }
    let notice = if posted.resync {
        resync_notice(&ui, mac, false, "Saved. ").await
    } else {
        Ok("Saved.".to_string())
    };
    device_page(&ui, &who, mac, Tab::Keys(None), Some(notice)).await
}

/// Uses `tool` on the draft; what it did or would do, for a tool that
/// says.
fn use_tool(
    ui: &Ui,
    directory: &Directory,
    draft: &mut Device,
    tool: Tool,
    fields: &ToolFields,
) -> ApiResult<Option<Preview>> {
    let model = model_of(ui, draft)?;
    match tool {
        Tool::SortByLabel => {
            key_tools::sort_by_label(draft, |k| directory.shown_label(k));
            Ok(None)
        }
        Tool::Fill(apply) => {
            let kind = KeyType::ALL
                .into_iter()
                .find(|k| k.name() == fields.fill_type)
                .ok_or_else(|| Invalid::new("fill_type", "pick a key type"))?;
            let range = FillRange {
                first: &fields.fill_first,
                last: &fields.fill_last,
                kind,
                start: fields.fill_start,
            };
            let mut filled = draft.clone();
            let preview = key_tools::fill(&mut filled, model, &range)?;
            if apply {
                *draft = filled;
            }
            Ok(Some(preview))
        }
        Tool::Copy(apply) => {
            let (source, keys) = copy_source(ui, fields)?;
            let mut copied = draft.clone();
            let preview = key_tools::copy(&mut copied, model, &source, &keys);
            if apply {
                *draft = copied;
            }
            Ok(Some(preview))
        }
        Tool::AddModule => {
            key_tools::add_module(draft, model, fields.module_kind.trim())?;
            Ok(None)
        }
        Tool::RemoveModule(n) => {
            key_tools::remove_module(draft, n);
            Ok(None)
        }
    }
}

/// The keys the copy's source shows, and its name: another phone's (with
/// its layout's), a user's phone's, or a named layout's.
fn copy_source(ui: &Ui, fields: &ToolFields) -> ApiResult<(String, Vec<Key>)> {
    let store = &ui.admin.store;
    let from = fields.copy_from.trim();
    let phone_keys = |device: Device| -> ApiResult<Vec<Key>> {
        Ok(ui.admin.provisioner.laid_out(&device)?.keys.clone())
    };
    match fields.copy_kind.as_str() {
        "device" => {
            let mac = parse_mac(from)?;
            let device = store.device(mac)?.ok_or_else(|| not_found(mac))?;
            Ok((format!("device {}", mac.colon()), phone_keys(device)?))
        }
        "user" => {
            let user = store.user_by_extension(from)?.ok_or_else(|| {
                Invalid::new("copy_from", format!("no user has extension {from}"))
            })?;
            let device = store.device_of_user(user.id)?.ok_or_else(|| {
                Invalid::new(
                    "copy_from",
                    format!("{} has a line on no phone", user.display_name()),
                )
            })?;
            let name = format!("{}'s phone ({})", user.display_name(), device.mac.colon());
            Ok((name, phone_keys(device)?))
        }
        "layout" => {
            let layout = store
                .layout(from)?
                .ok_or_else(|| Invalid::new("copy_from", format!("there is no layout {from}")))?;
            Ok((format!("layout {from}"), layout.keys))
        }
        _ => Err(Invalid::new("copy_kind", "copy from a device, a user or a layout").into()),
    }
}

/// A user the picker suggests.
struct Suggestion {
    extension: String,
    name: String,
}

#[derive(Template)]
#[template(path = "targets.html")]
struct TargetsFragment {
    suggestions: Vec<Suggestion>,
    warnings: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct TargetQuery {
    /// What is typed so far.
    #[serde(default)]
    k_value: String,
    /// The key's type, for the warnings.
    #[serde(default)]
    k_type: String,
    /// The key's position, so it is not its own duplicate.
    #[serde(default)]
    position: String,
}

/// `GET /devices/{mac}/targets?k_value=&k_type=&position=`: users whose
/// extension starts with, or name holds, what is typed; and what may be
/// wrong with what is typed as it is (against the stored keys).
pub(super) async fn targets(
    State(ui): Shared,
    Extension(_who): Extension<Signed>,
    Path(mac): Path<String>,
    Query(query): Query<TargetQuery>,
) -> UiResult<Response> {
    let mac: Mac = parse_mac(&mac)?;
    let device = ui.admin.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    suggest(&ui, &device, &query)
}

/// The picker's suggestions and warnings for what is typed on a key of
/// `device` (a phone, or a layout shown as one).
pub(super) fn suggest(ui: &Ui, device: &Device, query: &TargetQuery) -> UiResult<Response> {
    let typed = query.k_value.trim();
    let needle = typed.to_lowercase();
    let mut suggestions: Vec<Suggestion> = if needle.is_empty() {
        Vec::new()
    } else {
        ui.admin
            .store
            .users()?
            .into_iter()
            .filter(|u| {
                u.extension.starts_with(&needle)
                    || u.display_name().to_lowercase().contains(&needle)
            })
            .map(|u| Suggestion {
                name: u.display_name(),
                extension: u.extension,
            })
            .collect()
    };
    suggestions.sort_by(|a, b| a.extension.cmp(&b.extension));
    suggestions.truncate(SUGGESTIONS);
    let kind = KeyType::ALL
        .into_iter()
        .find(|k| k.name() == query.k_type)
        .unwrap_or(KeyType::Blf);
    let duplicate = device
        .keys
        .iter()
        .find(|k| {
            k.kind == kind
                && k.value.trim() == typed
                && position_name(k.module, k.index) != query.position
        })
        .map(|k| position_name(k.module, k.index));
    let directory = Directory::of(ui, device)?;
    html(TargetsFragment {
        suggestions,
        warnings: directory.warnings(kind, typed, duplicate.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, kind: &str, value: &str) -> Row {
        Row {
            group: group.into(),
            kind: kind.into(),
            value: value.into(),
            ..Row::default()
        }
    }

    #[test]
    fn a_move_swaps_what_is_on_two_positions() {
        let mut posted = Posted {
            rows: vec![
                row("", "blf", "201"),
                row("", "none", ""),
                row("1", "blf", "202"),
            ],
            modules: None,
            moving: Some((2, "up")),
            tool: None,
            fields: ToolFields::default(),
            resync: false,
        };
        posted.apply_move();
        assert_eq!(posted.moving, Some((1, "up")));
        assert_eq!(
            (posted.rows[1].group.as_str(), posted.rows[1].value.as_str()),
            ("", "202")
        );
        assert_eq!(
            (posted.rows[2].group.as_str(), posted.rows[2].kind.as_str()),
            ("1", "none")
        );
        // Past either end, nothing moves.
        posted.moving = Some((0, "up"));
        posted.apply_move();
        assert_eq!(posted.moving, None);
    }

    #[test]
    fn the_form_is_read_row_by_row() {
        let body = b"csrf=x&k_group=&k_type=blf&k_value=201&k_label=&k_line=1\
                     &k_group=1&k_type=speed_dial&k_value=*97&k_label=VM&k_line=1&move=0%3Adown";
        let posted = Posted::parse(body).unwrap();
        assert_eq!(posted.rows.len(), 2);
        assert_eq!(posted.rows[1].value, "*97");
        assert_eq!(posted.moving, Some((0, "down")));
        assert!(Posted::parse(b"k_type=blf").is_err());
    }
}
