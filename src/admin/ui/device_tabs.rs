//! The device page's Settings and History tabs.
//!
//! Settings: every setting with the value in force for this phone and the
//! level it comes from (global, model, the line 1 user's language, the
//! device, or the built-in default), and a form for the device's own
//! overrides, saved through the API's device update. History: the audit
//! entries of the device and of its lines' users, newest first, each field
//! with its value before and after as the entry recorded them (the audit
//! page's rows).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::{Map, Value, json};

use super::audit::{FieldChange, changed_fields, newest_kept};
use super::device::{Tab, save_and_show};
use super::session::{CSRF_FIELD, Signed};
use super::{Shared, Ui, UiResult, show_time};
use crate::admin::api::devices::parse_mac;
use crate::admin::api::{ApiResult, from_json};
use crate::domain::records::{Device, HoldsSecrets, Settings};
use crate::provision::model_scope;
use crate::store::audit::AuditEntry;
use crate::store::{GLOBAL_SCOPE, Store};

/// How many audit entries the History tab shows.
const MAX_HISTORY: usize = 100;

/// Every setting's name, read from `Settings`' own `Deserialize`, so a new
/// setting shows here with no list to keep.
static SETTING_NAMES: LazyLock<&'static [&'static str]> = LazyLock::new(|| {
    let mut names: &'static [&'static str] = &[];
    // The capture answers an error on purpose: only the names are wanted.
    let _ = Settings::deserialize(FieldNames(&mut names));
    names
});

/// A deserializer that only notes the field names a struct asks for.
struct FieldNames<'n>(&'n mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// A setting as the Settings tab shows it.
pub(crate) struct SettingRow {
    /// Its name (`sip_server`).
    pub name: &'static str,
    /// The value in force for this phone, secrets masked.
    pub value: String,
    /// Where that value comes from: `global`, `model`, `user`, `device`
    /// or `default`.
    pub level: &'static str,
    /// The device's own value (empty: it inherits), as the form edits it.
    pub device_value: String,
}

/// Each setting for `device`: the value in force and its level; the form
/// shows `posted` (a refused edit) instead of the stored overrides.
pub(super) fn settings_of(
    ui: &Ui,
    device: &Device,
    posted: Option<Vec<(String, String)>>,
) -> ApiResult<Vec<SettingRow>> {
    let store = &ui.admin.store;
    // The render's own layers, in its order (see `render_device`).
    let owner = match device.lines.first() {
        Some(line) => store.user(line.user)?.and_then(|u| u.language),
        None => None,
    };
    let layers: [(&'static str, Settings); 4] = [
        ("global", store.settings(GLOBAL_SCOPE)?),
        ("model", store.settings(&model_scope(&device.model))?),
        (
            "user",
            Settings {
                language: owner,
                ..Settings::default()
            },
        ),
        ("device", device.settings.clone()),
    ];
    let layers: Vec<(&'static str, Map<String, Value>)> = layers
        .into_iter()
        .map(|(level, settings)| (level, fields_of(&settings.masked())))
        .collect();
    let defaults = serde_json::to_value(Settings::effective(&[])).unwrap_or_default();
    let posted: Option<HashMap<String, String>> = posted.map(|p| p.into_iter().collect());
    let own = fields_of(&device.settings.clone().masked());
    Ok(SETTING_NAMES
        .iter()
        .map(|name| {
            let (level, value) = layers
                .iter()
                .rev()
                .find_map(|(level, fields)| Some((*level, fields.get(*name)?)))
                .map_or_else(
                    || {
                        (
                            "default",
                            defaults.get(*name).map(shown).unwrap_or_default(),
                        )
                    },
                    |(level, value)| (level, shown(value)),
                );
            let device_value = match &posted {
                Some(posted) => posted.get(*name).cloned().unwrap_or_default(),
                None => own.get(*name).map(shown).unwrap_or_default(),
            };
            SettingRow {
                name,
                value,
                level,
                device_value,
            }
        })
        .collect())
}

/// The fields `settings` sets.
fn fields_of(settings: &Settings) -> Map<String, Value> {
    match serde_json::to_value(settings) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

/// A JSON value as a page shows it: text as itself, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `POST /devices/{mac}/settings`: the device's own settings, one field a
/// setting (empty: inherit), saved through the API's device update with
/// its checks; a masked secret keeps the stored one.
pub(super) async fn save_settings(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Path(mac): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let mac = parse_mac(&mac)?;
    let posted: Vec<(String, String)> = form_urlencoded::parse(&body)
        .into_owned()
        .filter(|(name, _)| name != CSRF_FIELD)
        .collect();
    let edit = overrides(&posted).map(|settings| {
        move |current: Device| Device {
            settings,
            ..current
        }
    });
    let tabs = (Tab::Settings(None), Tab::Settings(Some(posted)));
    save_and_show(&ui, &who, mac, edit, "Settings saved.", tabs).await
}

/// The posted fields as device settings: each non-empty one as text, or as
/// the number or true/false it spells where the setting takes one.
fn overrides(posted: &[(String, String)]) -> ApiResult<Settings> {
    let mut fields = Map::new();
    for (name, text) in posted {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let as_text = Value::String(text.to_string());
        let takes_text = serde_json::from_value::<Settings>(json!({ name: as_text })).is_ok();
        let value = if takes_text {
            as_text
        } else {
            serde_json::from_str(text).unwrap_or(as_text)
        };
        fields.insert(name.clone(), value);
    }
    let settings: Settings = from_json(Value::Object(fields))?;
    Ok(settings)
}

/// An audit entry as the History tab shows it.
pub(crate) struct HistoryEntry {
    /// When, in UTC.
    pub at: String,
    /// The token's name.
    pub actor: String,
    /// `device.update`, `user.update`, ...
    pub action: String,
    /// `device/001565aabbcc`, `user/3`.
    pub target: String,
    /// Each field that changed.
    pub changes: Vec<FieldChange>,
}

/// The newest audit entries of `device` and of its lines' users, newest
/// first.
pub(super) fn history_of(store: &Store, device: &Device) -> ApiResult<Vec<HistoryEntry>> {
    let mut targets = vec![format!("device/{}", device.mac)];
    targets.extend(device.lines.iter().map(|l| format!("user/{}", l.user)));
    let (entries, _) = newest_kept(store, MAX_HISTORY, |e| targets.contains(&e.target))?;
    Ok(entries.iter().map(history_entry).collect())
}

/// `entry` as the History tab shows it.
fn history_entry(entry: &AuditEntry) -> HistoryEntry {
    HistoryEntry {
        at: show_time(entry.at),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        changes: changed_fields(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_named() {
        assert!(SETTING_NAMES.contains(&"sip_server"));
        assert!(SETTING_NAMES.contains(&"dial_plan"));
        for name in SETTING_NAMES.iter() {
            let known = serde_json::from_value::<Settings>(json!({ *name: null }));
            assert!(known.is_ok(), "{name}");
        }
    }

    #[test]
    fn overrides_take_numbers_where_a_setting_wants_one() {
        let posted = [
            ("sip_port".to_string(), "5061".to_string()),
            ("pickup_code".to_string(), "8".to_string()),
            ("ntp_server".to_string(), String::new()),
        ];
        let settings = overrides(&posted).unwrap();
        assert_eq!(settings.sip_port, Some(5061));
        assert_eq!(settings.pickup_code.as_deref(), Some("8"));
        assert_eq!(settings.ntp_server, None);
        assert!(overrides(&[("sip_port".into(), "many".into())]).is_err());
    }
}
