//! `/settings`: every setting (rows) at every level (columns): global,
//! each model that has settings, and one chosen phone's own; the value in
//! force and the level it comes from. A value is edited at one level with
//! the API's PATCH and its checks: a refused value changes nothing.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::devices::{ModelChoice, model_choices};
use super::session::Signed;
use super::{Chrome, Shared, Ui, UiError, UiResult, html_with, non_empty, status_of};
use crate::admin::api::devices::{not_found, parse_mac, update_device};
use crate::admin::api::settings::{known_model_scope, patch_settings};
use crate::admin::api::{ApiResult, from_json, merge_patch};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, HoldsSecrets, Invalid, Settings};
use crate::provision::model_scope;
use crate::store::GLOBAL_SCOPE;

/// One column of the grid: a level and its settings.
struct Level {
    /// `global`, `model:ID` or `device:MAC`: what the edit form posts.
    id: String,
    /// "Global", "Model yealink-t46s", "Device 00:15:65:aa:bb:cc".
    title: String,
    /// The settings set at this level, as JSON fields.
    values: Map<String, Value>,
}

/// One row of the grid: a setting at each level, and in force.
struct Line {
    key: &'static str,
    /// Its value at each level, in column order (empty: not set there).
    cells: Vec<String>,
    /// The value in force for the chain shown, or empty for the default.
    effective: String,
    /// The level it comes from, or `default`.
    from: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    levels: Vec<Level>,
    lines: Vec<Line>,
    /// What the value in force is for: the chosen phone, else global.
    chain: String,
    device: String,
    models: Vec<ModelChoice>,
    keys: &'static [&'static str],
    notice: Option<Result<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SettingsQuery {
    /// The phone whose own settings and chain are shown.
    #[serde(default)]
    device: String,
}

/// `GET /settings?device=MAC`.
pub(super) async fn grid(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<SettingsQuery>,
) -> UiResult<Response> {
    settings_page(&ui, &who, &query.device, None)
}

/// The grid, for the phone `device` names (if any), with `notice` above it.
fn settings_page(
    ui: &Ui,
    who: &Signed,
    device: &str,
    notice: Option<Result<String, String>>,
) -> UiResult<Response> {
    let chosen = match non_empty(device) {
        Some(mac) => {
            let mac = parse_mac(&mac)?;
            Some(ui.admin.store.device(mac)?.ok_or_else(|| not_found(mac))?)
        }
        None => None,
    };
    let levels = levels(ui, who, chosen.as_ref())?;
    // The chain in force: global, the phone's model, the phone.
    let chain: Vec<usize> = match &chosen {
        None => vec![0],
        Some(device) => {
            let model = format!("model:{}", device.model);
            let mut chain = vec![0];
            chain.extend(levels.iter().position(|l| l.id == model));
            chain.push(levels.len() - 1);
            chain
        }
    };
    let lines = setting_keys()
        .iter()
        .map(|key| {
            let cells = levels
                .iter()
                .map(|l| l.values.get(*key).map(shown).unwrap_or_default())
                .collect();
            let source = chain
                .iter()
                .rev()
                .find(|i| levels[**i].values.contains_key(*key));
            Line {
                key,
                cells,
                effective: source
                    .map(|i| shown(&levels[*i].values[*key]))
                    .unwrap_or_default(),
                from: source.map_or_else(|| "default".to_string(), |i| levels[*i].title.clone()),
            }
        })
        .collect();
    let failed = matches!(notice, Some(Err(_)));
    let page = SettingsPage {
        chrome: ui.chrome(who, "settings", "Settings"),
        chain: chosen.as_ref().map_or_else(
            || "global".to_string(),
            |d| format!("device {}", d.mac.colon()),
        ),
        device: chosen.map(|d| d.mac.to_string()).unwrap_or_default(),
        levels,
        lines,
        models: model_choices(&ui.admin),
        keys: setting_keys(),
        notice,
    };
    html_with(status_of(failed), page)
}

/// The grid's columns: global, each model with settings (and the chosen
/// phone's model), then the chosen phone; secrets as `who` may see them.
fn levels(ui: &Ui, who: &Signed, device: Option<&Device>) -> ApiResult<Vec<Level>> {
    let fields = |settings: Settings| match serde_json::to_value(settings.shown_to(who.scope)) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let mut levels = vec![Level {
        id: GLOBAL_SCOPE.to_string(),
        title: "Global".to_string(),
        values: fields(ui.admin.store.settings(GLOBAL_SCOPE)?),
    }];
    let device_model = device.map(|d| model_scope(&d.model));
    for (scope, settings) in ui.admin.store.all_settings()? {
        let Some(model) = scope.strip_prefix("model:") else {
            continue;
        };
        if settings != Settings::default() || device_model.as_deref() == Some(scope.as_str()) {
            levels.push(Level {
                id: scope.clone(),
                title: format!("Model {model}"),
                values: fields(settings),
            });
        }
    }
    if let Some(device) = device {
        if let Some(model) = &device_model
            && !levels.iter().any(|l| l.id == *model)
        {
            levels.push(Level {
                id: model.clone(),
                title: format!("Model {}", device.model),
                values: Map::new(),
            });
        }
        levels.push(Level {
            id: format!("device:{}", device.mac),
            title: format!("Device {}", device.mac.colon()),
            values: fields(device.settings.clone()),
        });
    }
    Ok(levels)
}

/// A value as a cell shows it: text as it is, anything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What the edit form posts.
#[derive(Debug, Deserialize)]
pub(super) struct EditForm {
    /// `global`, `model:ID` or `device:MAC`.
    level: String,
    key: String,
    /// Empty: unset at that level.
    #[serde(default)]
    value: String,
    /// The phone the grid showed, to show it again.
    #[serde(default)]
    device: String,
}

/// `POST /settings`: sets (or, empty, unsets) one setting at one level.
pub(super) async fn edit(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Form(form): Form<EditForm>,
) -> UiResult<Response> {
    let notice = match apply(&ui, &who, &form).await {
        Ok(()) => Ok(format!("{} saved at {}.", form.key, form.level)),
        Err(refused) => Err(format!("Not saved: {}", UiError::from(refused))),
    };
    settings_page(&ui, &who, &form.device, Some(notice))
}

/// Patches the setting the form names at its level, through the API's checks.
async fn apply(ui: &Ui, who: &Signed, form: &EditForm) -> ApiResult<()> {
    let key = setting_keys()
        .iter()
        .find(|k| **k == form.key.trim())
        .ok_or_else(|| Invalid::new("key", format!("no setting '{}'", form.key.trim())))?;
    let patch = json!({ *key: typed(key, &form.value) });
    let level = form.level.trim();
    if level == GLOBAL_SCOPE {
        patch_settings(&ui.admin, &who.actor, GLOBAL_SCOPE, patch).await?;
    } else if let Some(model) = level.strip_prefix("model:") {
        let scope = known_model_scope(&ui.admin, model)?;
        patch_settings(&ui.admin, &who.actor, &scope, patch).await?;
    } else if let Some(mac) = level.strip_prefix("device:") {
        let mac: Mac = parse_mac(mac)?;
        update_device(&ui.admin, &who.actor, mac, |current| {
            let mut settings = serde_json::to_value(&current.settings).unwrap_or_default();
            merge_patch(&mut settings, patch);
            Ok(Device {
                settings: from_json(settings)?,
                ..current.clone()
            })
        })
        .await?;
    } else {
        return Err(Invalid::new("level", format!("no level '{level}'")).into());
    }
    Ok(())
}

/// The JSON a typed value means for setting `key`: empty unsets it; text
/// where the setting is text; else a number or true/false as typed (a
/// value of the wrong kind is then refused by the checks, naming the field).
fn typed(key: &str, value: &str) -> Value {
    let value = value.trim();
    if value.is_empty() {
        return Value::Null;
    }
    let text = Value::String(value.to_string());
    if serde_json::from_value::<Settings>(json!({ key: text })).is_ok() {
        return text;
    }
    serde_json::from_str(value).unwrap_or(text)
}

/// Every setting's name, in the order [`Settings`] declares them.
fn setting_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut names: &'static [&'static str] = &[];
        // Settings' derived Deserialize names its fields to the deserializer.
        let _ = Settings::deserialize(FieldNames(&mut names));
        names
    })
}

/// A deserializer that only notes the field names a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom(
            "only a struct's field names are read",
        ))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field names noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_a_row() {
        let keys = setting_keys();
        assert_eq!(keys.first(), Some(&"sip_server"));
        assert!(keys.contains(&"dial_plan") && keys.contains(&"vlan_id"));
    }

    #[test]
    fn a_typed_value_takes_the_settings_kind() {
        assert_eq!(typed("sip_server", "10.0.0.1"), json!("10.0.0.1"));
        assert_eq!(typed("pickup_code", "8"), json!("8"));
        assert_eq!(typed("vlan_id", "20"), json!(20));
        assert_eq!(typed("firmware_downgrade", "true"), json!(true));
        assert_eq!(typed("vlan_id", ""), Value::Null);
        assert_eq!(typed("vlan_id", "lots"), json!("lots"));
    }
}
