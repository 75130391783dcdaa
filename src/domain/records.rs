//! The domain: users, devices, keys and settings, as stored and as the API
//! shows them.
//!
//! These types are plain data with their own field checks ([`Invalid`]).
//! Checks that need other records (a device's model, its users) live where
//! those records are: the catalog and the store.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::mac::Mac;
use crate::domain::time_zone::{self, DaylightSaving};

/// A refused value: which field, and why, in the administrator's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, as named in the API (`keys[2].type`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    /// A refusal of `field` because of `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A user's id in the store.
pub type UserId = u64;

/// A person with an extension and a SIP account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Assigned by the store.
    #[serde(default)]
    pub id: UserId,
    /// The internal number; unique.
    pub extension: String,
    /// Given name.
    #[serde(default)]
    pub first_name: String,
    /// Family name.
    #[serde(default)]
    pub last_name: String,
    /// Unique when set.
    #[serde(default)]
    pub email: Option<String>,
    /// The SIP account the user's phones register with.
    pub sip: SipAccount,
    /// Caller ID shown inside and outside the company.
    #[serde(default)]
    pub caller_id: CallerId,
    /// Voicemail box, if the user has one.
    #[serde(default)]
    pub voicemail: Option<Voicemail>,
    /// Preferred language (e.g. `en`, `fr`) of the phone whose line 1 is
    /// this user's, unless the phone's own settings name one.
    #[serde(default)]
    pub language: Option<String>,
    /// Mobile number, for the directory.
    #[serde(default)]
    pub mobile: Option<String>,
    /// Do-not-disturb on by default: kept and exported, but not sent to
    /// phones, where a provisioned state would undo the user's own toggle
    /// at each resync.
    #[serde(default)]
    pub dnd: bool,
    /// Call waiting on by default (sent to the phone; see the templates).
    #[serde(default = "yes")]
    pub call_waiting: bool,
    /// Listed in the company phonebook.
    #[serde(default = "yes")]
    pub in_directory: bool,
}

fn yes() -> bool {
    true
}

/// SIP credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAccount {
    /// The user part of the SIP address; unique.
    pub username: String,
    /// The digest authentication name (often the username).
    pub auth_name: String,
    /// The digest password.
    pub password: String,
}

/// Caller ID names and numbers; empty means "derive from the user".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerId {
    /// Name shown to colleagues.
    #[serde(default)]
    pub internal_name: Option<String>,
    /// Number shown to colleagues.
    #[serde(default)]
    pub internal_number: Option<String>,
    /// Name shown outside.
    #[serde(default)]
    pub external_name: Option<String>,
    /// Number shown outside.
    #[serde(default)]
    pub external_number: Option<String>,
}

/// A voicemail box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voicemail {
    /// The mailbox number.
    pub mailbox: String,
    /// The PIN; a secret.
    #[serde(default)]
    pub pin: Option<String>,
}

impl User {
    /// The same user with an empty SIP password (for files sent in clear).
    pub fn without_password(mut self) -> User {
        self.sip.password.clear();
        self
    }

    /// "First Last", or the extension when the user has no name.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.caller_id.internal_name {
            return name.clone();
        }
        let name = format!("{} {}", self.first_name, self.last_name);
        let name = name.trim();
        if name.is_empty() {
            self.extension.clone()
        } else {
            name.to_string()
        }
    }

    /// Checks every field on its own (uniqueness is the store's job).
    pub fn validate(&self) -> Result<(), Invalid> {
        check_token("extension", &self.extension)?;
        check_text("first_name", &self.first_name)?;
        check_text("last_name", &self.last_name)?;
        if let Some(email) = &self.email {
            check_text("email", email)?;
            let valid = email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            if !valid {
                return Err(Invalid::new("email", "not an e-mail address"));
            }
        }
        check_token("sip.username", &self.sip.username)?;
        check_token("sip.auth_name", &self.sip.auth_name)?;
        check_text("sip.password", &self.sip.password)?;
        if self.sip.password.is_empty() {
            return Err(Invalid::new("sip.password", "must not be empty"));
        }
        check_not_mask("sip.password", &self.sip.password)?;
        let caller_id = [
            ("caller_id.internal_name", &self.caller_id.internal_name),
            ("caller_id.internal_number", &self.caller_id.internal_number),
            ("caller_id.external_name", &self.caller_id.external_name),
            ("caller_id.external_number", &self.caller_id.external_number),
            ("language", &self.language),
            ("mobile", &self.mobile),
        ];
        for (field, value) in caller_id {
            if let Some(value) = value {
                check_text(field, value)?;
            }
        }
        if let Some(vm) = &self.voicemail {
            check_token("voicemail.mailbox", &vm.mailbox)?;
            if let Some(pin) = &vm.pin {
                check_token("voicemail.pin", pin)?;
                check_not_mask("voicemail.pin", pin)?;
            }
        }
        Ok(())
    }
}

/// What a programmable key does. Each vendor maps these to its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// An appearance of one of the device's lines.
    Line,
    /// Busy lamp of another extension.
    Blf,
    /// Dial a number.
    SpeedDial,
    /// Busy lamp that also dials (and picks up) the extension.
    BlfSpeedDial,
    /// Call voicemail.
    Voicemail,
    /// Pick up a ringing call.
    Pickup,
    /// Park a call.
    Park,
    /// Do not disturb.
    Dnd,
    /// Call forward.
    Forward,
    /// Transfer.
    Transfer,
    /// Intercom / paging to an extension.
    Intercom,
    /// Open a URL (XML browser).
    Url,
    /// An empty key.
    None,
}

impl KeyType {
    /// Every key type, in documentation order.
    pub const ALL: [KeyType; 13] = [
        KeyType::Line,
        KeyType::Blf,
        KeyType::SpeedDial,
        KeyType::BlfSpeedDial,
        KeyType::Voicemail,
        KeyType::Pickup,
        KeyType::Park,
        KeyType::Dnd,
        KeyType::Forward,
        KeyType::Transfer,
        KeyType::Intercom,
        KeyType::Url,
        KeyType::None,
    ];

    /// The name used in the API and in descriptors.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Line => "line",
            KeyType::Blf => "blf",
            KeyType::SpeedDial => "speed_dial",
            KeyType::BlfSpeedDial => "blf_speed_dial",
            KeyType::Voicemail => "voicemail",
            KeyType::Pickup => "pickup",
            KeyType::Park => "park",
            KeyType::Dnd => "dnd",
            KeyType::Forward => "forward",
            KeyType::Transfer => "transfer",
            KeyType::Intercom => "intercom",
            KeyType::Url => "url",
            KeyType::None => "none",
        }
    }

    /// Whether a key of this type is useless without a value (a number, an extension, a URL).
    fn needs_value(self) -> bool {
        matches!(
            self,
            KeyType::Blf
                | KeyType::SpeedDial
                | KeyType::BlfSpeedDial
                | KeyType::Intercom
                | KeyType::Url
        )
    }
}

/// One programmable key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// The expansion module (from 1), or none for a key on the phone itself.
    #[serde(default)]
    pub module: Option<u8>,
    /// The key's position (from 1).
    pub index: u16,
    /// What it does.
    #[serde(rename = "type")]
    pub kind: KeyType,
    /// The extension, number or URL it uses.
    #[serde(default)]
    pub value: String,
    /// The text next to the key.
    #[serde(default)]
    pub label: String,
    /// The device line (from 1) the key uses.
    #[serde(default = "first_line")]
    pub line: u16,
}

fn first_line() -> u16 {
    1
}

/// A user's appearance on a device. Line 1 is the owner; later lines may be
/// other users' shared appearances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineAssignment {
    /// The user whose account this line registers.
    pub user: UserId,
    /// Text on the line key; the user's extension when unset.
    #[serde(default)]
    pub label: Option<String>,
}

/// A phone, keyed by its MAC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The phone's MAC.
    pub mac: Mac,
    /// The phone model's id (see `GET /api/v1/models`).
    pub model: String,
    /// A note for administrators (e.g. "reception desk").
    #[serde(default)]
    pub description: Option<String>,
    /// The SIP accounts, line 1 first.
    #[serde(default)]
    pub lines: Vec<LineAssignment>,
    /// Programmable keys; with a `layout`, they replace its keys at the
    /// same places.
    #[serde(default)]
    pub keys: Vec<Key>,
    /// The named key layout the device follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Expansion module ids, in chain order (module 1 first).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Settings that override the global and model ones for this phone.
    #[serde(default)]
    pub settings: Settings,
}

impl Device {
    /// Checks every field on its own; the model's limits are the catalog's job.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(description) = &self.description {
            check_text("description", description)?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            if let Some(label) = &line.label {
                check_text(&format!("lines[{i}].label"), label)?;
            }
        }
        if let Some(layout) = &self.layout {
            Layout::check_name(layout).map_err(|e| Invalid::new("layout", e.message))?;
        }
        check_keys(&self.keys, self.lines.len())?;
        self.settings.validate()
    }
}

/// A named set of keys for one phone model ("Reception", "Sales"), which
/// every device naming it shows; a device's own keys replace single ones.
/// Labels may say `{name}` and `{extension}`: the name and extension of the
/// user the key targets, filled in when a file is rendered, so they follow
/// renames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Its name: lower-case letters, digits and `-`.
    pub name: String,
    /// The phone model it is for.
    pub model: String,
    /// A note for administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The keys, on line 1.
    #[serde(default)]
    pub keys: Vec<Key>,
}

impl Layout {
    /// Refuses names that would not read well in a URL or a CSV column.
    pub fn check_name(name: &str) -> Result<(), Invalid> {
        let fine = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if fine {
            Ok(())
        } else {
            Err(Invalid::new(
                "name",
                "1 to 64 lower-case letters, digits or '-'",
            ))
        }
    }

    /// Checks every field on its own; the model's limits are the catalog's job.
    pub fn validate(&self) -> Result<(), Invalid> {
        Layout::check_name(&self.name)?;
        if let Some(description) = &self.description {
            check_text("description", description)?;
        }
        check_keys(&self.keys, 1)
    }

    /// `device` as it shows following this layout: the layout's keys, each
    /// replaced by the device's own key at the same place, in place order.
    pub fn laid_under(&self, device: &Device) -> Device {
        Device {
            keys: self.keys_with(&device.keys),
            ..device.clone()
        }
    }

    fn keys_with(&self, own: &[Key]) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .keys
            .iter()
            .filter(|k| {
                !own.iter()
                    .any(|o| (o.module, o.index) == (k.module, k.index))
            })
            .chain(own)
            .cloned()
            .collect();
        keys.sort_by_key(|k| (k.module, k.index));
        keys
    }
}

/// Checks keys on their own (`lines`: how many lines they may use): one key
/// per place, positions from 1, a value where the type needs one.
fn check_keys(keys: &[Key], lines: usize) -> Result<(), Invalid> {
    let mut positions = std::collections::HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        let field = |name: &str| format!("keys[{i}].{name}");
        if key.index == 0 {
            return Err(Invalid::new(field("index"), "key positions start at 1"));
        }
        if key.module == Some(0) {
            return Err(Invalid::new(field("module"), "modules are numbered from 1"));
        }
        if !positions.insert((key.module, key.index)) {
            return Err(Invalid::new(
                field("index"),
                format!("two keys at position {}", key.index),
            ));
        }
        check_text(&field("value"), &key.value)?;
        check_text(&field("label"), &key.label)?;
        if key.kind.needs_value() && key.value.trim().is_empty() {
            return Err(Invalid::new(
                field("value"),
                format!("a {} key needs a value", key.kind.name()),
            ));
        }
        if key.line == 0 || usize::from(key.line) > lines.max(1) {
            return Err(Invalid::new(
                field("line"),
                format!("the device has no line {}", key.line),
            ));
        }
    }
    Ok(())
}

/// SIP transport for registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// UDP (the default).
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// Settings at one level (global, model or device). Unset fields fall
/// through to the level below; [`EffectiveSettings`] is the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// SIP registrar / proxy host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_server: Option<String>,
    /// SIP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_port: Option<u16>,
    /// SIP transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_transport: Option<SipTransport>,
    /// Outbound proxy `host[:port]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_proxy: Option<String>,
    /// NTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_server: Option<String>,
    /// Time zone name (IANA, e.g. `Europe/Paris`): the offsets and the
    /// daylight-saving rule phones get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// UTC offset, `+HH:MM` or `-HH:MM`, pinned for phones that take no
    /// daylight-saving rule (unset: the time zone's current offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
    /// Phone language (`en`, `fr`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Where phones fetch their files (`http://10.0.0.5:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_url: Option<String>,
    /// Firmware image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_url: Option<String>,
    /// The firmware version that image holds, as the phone reports it
    /// (User-Agent): phones on it or on a newer one are not pointed at the
    /// image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// Point phones on a newer firmware at the image too: a downgrade on
    /// purpose, to the `firmware_version` set at the same level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_downgrade: Option<bool>,
    /// The phone's web admin password; a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
    /// Syslog server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_server: Option<String>,
    /// Voice VLAN id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    /// Feature code to call voicemail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_code: Option<String>,
    /// Feature code for group pickup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_code: Option<String>,
    /// Prefix for directed pickup of an extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directed_pickup_code: Option<String>,
    /// Feature code to park a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub park_code: Option<String>,
    /// What phones dial at once, as digit-map rules joined by `|` (see
    /// [`DialPlan`]); unset: [`DialPlan::DEFAULT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_plan: Option<String>,
}

/// A site's dial plan in one neutral form, which each family's templates
/// write in their phones' syntax: rules in the digit-map syntax Cisco,
/// Poly and Grandstream share (RFC 3435's, without timers): digits, `*`,
/// `#` and `+` as themselves, `x` for any digit, `[1-5]` or `[135]` for
/// one of those digits, and `.` for any number (zero or more) of what
/// precedes it. A phone dials as soon as what was typed matches a rule
/// that cannot grow; an open rule (ending in `.`) dials after the phone's
/// inter-digit timeout, which each family writes its own way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialPlan {
    /// The rules, in order.
    pub rules: Vec<String>,
}

impl DialPlan {
    /// Feature codes (`*97`, `#21`), international numbers (`+...`), and
    /// any other digits: nothing a user dials is refused.
    pub const DEFAULT: &'static str = "[*#]x.|+x.|x.";
    /// The most rules a plan may have: phones keep a few dozen at most.
    const MAX_RULES: usize = 50;

    /// Reads `rules` joined by `|`.
    pub fn parse(text: &str) -> Result<DialPlan, String> {
        if text.chars().any(char::is_control) {
            return Err("must not contain line breaks or control characters".into());
        }
        let rules: Vec<String> = text.split('|').map(|r| r.trim().to_string()).collect();
        if rules.len() > Self::MAX_RULES {
            return Err(format!("at most {} rules", Self::MAX_RULES));
        }
        for rule in &rules {
            if rule.is_empty() {
                return Err("a rule is empty (two | in a row?)".into());
            }
            if let Some(bad) = rule
                .chars()
                .find(|c| !(c.is_ascii_digit() || "xX*#+.[]-".contains(*c)))
            {
                return Err(format!(
                    "'{bad}' in rule '{rule}': rules use digits, * # +, x, [1-5] and ."
                ));
            }
            if rule.matches('[').count() != rule.matches(']').count() {
                return Err(format!("rule '{rule}' has an unclosed ["));
            }
        }
        Ok(DialPlan { rules })
    }
}

impl Settings {
    /// Checks each set field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let texts = [
            ("settings.sip_server", &self.sip_server),
            ("settings.outbound_proxy", &self.outbound_proxy),
            ("settings.ntp_server", &self.ntp_server),
            ("settings.time_zone", &self.time_zone),
            ("settings.firmware_version", &self.firmware_version),
            ("settings.language", &self.language),
            ("settings.admin_password", &self.admin_password),
            ("settings.syslog_server", &self.syslog_server),
            ("settings.voicemail_code", &self.voicemail_code),
            ("settings.pickup_code", &self.pickup_code),
            ("settings.directed_pickup_code", &self.directed_pickup_code),
            ("settings.park_code", &self.park_code),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                check_token(field, value)?;
            }
        }
        if let Some(password) = &self.admin_password {
            check_not_mask("settings.admin_password", password)?;
        }
        for (field, url) in [
            ("settings.provisioning_url", &self.provisioning_url),
            ("settings.firmware_url", &self.firmware_url),
        ] {
            if let Some(url) = url {
                check_token(field, url)?;
                if !["http://", "https://", "tftp://", "ftp://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    return Err(Invalid::new(
                        field,
                        "must be an http://, https://, tftp:// or ftp:// URL",
                    ));
                }
            }
        }
        if self.firmware_downgrade == Some(true) && self.firmware_version.is_none() {
            return Err(Invalid::new(
                "settings.firmware_downgrade",
                "a downgrade needs the firmware_version to go down to, set with it",
            ));
        }
        if let Some(offset) = &self.utc_offset {
            UtcOffset::parse(offset).map_err(|m| Invalid::new("settings.utc_offset", m))?;
        }
        if let Some(zone) = &self.time_zone
            && !time_zone::is_known(zone)
        {
            return Err(Invalid::new(
                "settings.time_zone",
                format!("'{zone}' is not in the IANA time zone database (e.g. Europe/Paris)"),
            ));
        }
        if self.sip_port == Some(0) {
            return Err(Invalid::new("settings.sip_port", "must be 1 to 65535"));
        }
        if let Some(plan) = &self.dial_plan {
            DialPlan::parse(plan).map_err(|m| Invalid::new("settings.dial_plan", m))?;
        }
        if let Some(vlan) = self.vlan_id
            && !(1..=4094).contains(&vlan)
        {
            return Err(Invalid::new("settings.vlan_id", "must be 1 to 4094"));
        }
        Ok(())
    }

    /// Lays `layers` over the defaults: a later layer's set fields win.
    pub fn effective(layers: &[&Settings]) -> EffectiveSettings {
        let mut merged = Map::new();
        for layer in layers {
            if let Ok(Value::Object(fields)) = serde_json::to_value(layer) {
                merged.extend(fields);
            }
        }
        let s: Settings = serde_json::from_value(Value::Object(merged)).unwrap_or_default();
        let zone = s
            .time_zone
            .as_deref()
            .and_then(|name| time_zone::rules(name, jiff::Timestamp::now()));
        // An offset set by hand is pinned; otherwise a named zone's current
        // one, which moves at each daylight-saving switch.
        let utc_offset = s
            .utc_offset
            .as_deref()
            .and_then(|o| UtcOffset::parse(o).ok())
            .or(zone.as_ref().map(|z| UtcOffset {
                minutes: z.current_minutes,
            }))
            .unwrap_or_default();
        EffectiveSettings {
            sip_server: s.sip_server.unwrap_or_default(),
            sip_port: s.sip_port.unwrap_or(5060),
            sip_transport: s.sip_transport.unwrap_or(SipTransport::Udp),
            outbound_proxy: s.outbound_proxy,
            ntp_server: s.ntp_server.unwrap_or_else(|| "pool.ntp.org".into()),
            utc_offset,
            standard_offset: zone.as_ref().map_or(utc_offset, |z| UtcOffset {
                minutes: z.standard_minutes,
            }),
            daylight_saving: zone.and_then(|z| z.dst),
            time_zone: s.time_zone.unwrap_or_else(|| "UTC".into()),
            language: s.language.unwrap_or_else(|| "en".into()),
            provisioning_url: s.provisioning_url,
            firmware_url: s.firmware_url,
            firmware_version: s.firmware_version,
            firmware_downgrade: firmware_downgrade(layers),
            admin_password: s.admin_password,
            syslog_server: s.syslog_server,
            vlan_id: s.vlan_id,
            feature_codes: FeatureCodes {
                voicemail: s.voicemail_code.unwrap_or_else(|| "*97".into()),
                pickup: s.pickup_code.unwrap_or_else(|| "*8".into()),
                directed_pickup: s.directed_pickup_code.unwrap_or_else(|| "**".into()),
                park: s.park_code.unwrap_or_else(|| "*70".into()),
            },
            dial_plan: s
                .dial_plan
                .as_deref()
                .and_then(|plan| DialPlan::parse(plan).ok())
                .unwrap_or_else(|| DialPlan {
                    rules: DialPlan::DEFAULT.split('|').map(str::to_string).collect(),
                }),
        }
    }
}

/// Whether the `firmware_version` in force was pinned as a downgrade: a
/// downgrade goes with the version set beside it, so a version pinned at
/// another level (a model's, over a global downgrade) is not one.
fn firmware_downgrade(layers: &[&Settings]) -> bool {
    layers
        .iter()
        .rev()
        .find(|layer| layer.firmware_version.is_some())
        .and_then(|layer| layer.firmware_downgrade)
        .unwrap_or(false)
}

/// The settings a template sees: every level merged over the defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSettings {
    /// SIP registrar / proxy host (empty until configured).
    pub sip_server: String,
    /// SIP port (5060).
    pub sip_port: u16,
    /// SIP transport (udp).
    pub sip_transport: SipTransport,
    /// Outbound proxy.
    pub outbound_proxy: Option<String>,
    /// NTP server (pool.ntp.org).
    pub ntp_server: String,
    /// Time zone name (UTC).
    pub time_zone: String,
    /// The UTC offset to show now: the one set, else the time zone's
    /// current one (+00:00), for phones that take no daylight-saving rule.
    #[serde(skip)]
    pub utc_offset: UtcOffset,
    /// The time zone's standard offset (else `utc_offset`), for phones
    /// that apply [`EffectiveSettings::daylight_saving`] themselves.
    #[serde(skip)]
    pub standard_offset: UtcOffset,
    /// The time zone's daylight-saving rule, when it keeps one.
    #[serde(skip)]
    pub daylight_saving: Option<DaylightSaving>,
    /// Language (en).
    pub language: String,
    /// Where phones fetch their files.
    pub provisioning_url: Option<String>,
    /// Firmware image URL.
    pub firmware_url: Option<String>,
    /// The version in that image.
    pub firmware_version: Option<String>,
    /// Whether phones on a newer version go down to it (false).
    pub firmware_downgrade: bool,
    /// The phone's web admin password.
    pub admin_password: Option<String>,
    /// Syslog server.
    pub syslog_server: Option<String>,
    /// Voice VLAN.
    pub vlan_id: Option<u16>,
    /// Feature codes.
    pub feature_codes: FeatureCodes,
    /// What phones dial at once.
    pub dial_plan: DialPlan,
}

impl EffectiveSettings {
    /// Shows the admin password, when set, as [`SECRET_MASK`].
    pub fn mask_secrets(&mut self) {
        mask(&mut self.admin_password);
    }
}

/// PBX feature codes the phones dial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureCodes {
    /// Voicemail (`*97`).
    pub voicemail: String,
    /// Group pickup (`*8`).
    pub pickup: String,
    /// Directed pickup prefix (`**`).
    pub directed_pickup: String,
    /// Park (`*70`).
    pub park: String,
}

/// An offset from UTC in minutes, rendered in each vendor's form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UtcOffset {
    /// Signed minutes east of UTC.
    pub minutes: i32,
}

impl UtcOffset {
    /// Parses `+HH:MM` / `-HH:MM` (`Z` and `+HH` too).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a UTC offset like +01:00 or -05:30");
        if s == "Z" {
            return Ok(UtcOffset { minutes: 0 });
        }
        let (sign, rest) = match s.split_at_checked(1) {
            Some(("+", rest)) => (1, rest),
            Some(("-", rest)) => (-1, rest),
            _ => return Err(bad()),
        };
        let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "00"));
        let all_digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(hours) || !all_digits(minutes) {
            return Err(bad());
        }
        let hours: i32 = hours.parse().map_err(|_| bad())?;
        let minutes: i32 = minutes.parse().map_err(|_| bad())?;
        if hours > 14 || minutes >= 60 {
            return Err(bad());
        }
        Ok(UtcOffset {
            minutes: sign * (hours * 60 + minutes),
        })
    }
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only read (GET), every secret shown as [`SECRET_MASK`].
    Read,
    /// Only read (GET), secrets included.
    Secrets,
    /// Read, secrets included, and change everything.
    Write,
}

impl Scope {
    /// Whether the token may change anything.
    pub fn may_write(self) -> bool {
        self == Scope::Write
    }

    /// Whether the token sees secrets rather than [`SECRET_MASK`].
    pub fn sees_secrets(self) -> bool {
        matches!(self, Scope::Secrets | Scope::Write)
    }
}

/// What a secret (a SIP password, a voicemail PIN, a phone's admin
/// password) shows as to a token that may not see it. It can never be a
/// secret itself: the checks refuse it.
pub const SECRET_MASK: &str = "(hidden)";

/// A record with secrets in it, as the API shows it.
pub trait HoldsSecrets: Sized {
    /// The record with each secret that is set shown as [`SECRET_MASK`].
    fn masked(self) -> Self;

    /// The record as a token of `scope` may see it.
    fn shown_to(self, scope: Scope) -> Self {
        if scope.sees_secrets() {
            self
        } else {
            self.masked()
        }
    }
}

impl HoldsSecrets for User {
    fn masked(mut self) -> User {
        self.sip.password = SECRET_MASK.into();
        if let Some(voicemail) = &mut self.voicemail {
            mask(&mut voicemail.pin);
        }
        self
    }
}

impl HoldsSecrets for Settings {
    fn masked(mut self) -> Settings {
        mask(&mut self.admin_password);
        self
    }
}

impl HoldsSecrets for Device {
    fn masked(mut self) -> Device {
        self.settings = self.settings.masked();
        self
    }
}

impl User {
    /// Puts `stored`'s secrets back wherever this user has the mask
    /// instead: what a masked user sent back in a PATCH means.
    pub fn unmask_from(&mut self, stored: &User) {
        if self.sip.password == SECRET_MASK {
            self.sip.password.clone_from(&stored.sip.password);
        }
        if let (Some(voicemail), Some(stored)) = (&mut self.voicemail, &stored.voicemail) {
            unmask(&mut voicemail.pin, &stored.pin);
        }
    }
}

impl Settings {
    /// Puts `stored`'s admin password back if this one is the mask.
    pub fn unmask_from(&mut self, stored: &Settings) {
        unmask(&mut self.admin_password, &stored.admin_password);
    }
}

impl Device {
    /// Puts `stored`'s secrets back wherever this device has the mask.
    pub fn unmask_from(&mut self, stored: &Device) {
        self.settings.unmask_from(&stored.settings);
    }
}

/// Shows a secret that is set as [`SECRET_MASK`].
fn mask(secret: &mut Option<String>) {
    if secret.is_some() {
        *secret = Some(SECRET_MASK.into());
    }
}

/// Puts `stored` back for a mask, when there is a stored secret; with none,
/// the mask stays, for the checks to refuse.
fn unmask(secret: &mut Option<String>, stored: &Option<String>) {
    if secret.as_deref() == Some(SECRET_MASK) && stored.is_some() {
        secret.clone_from(stored);
    }
}

/// Refuses [`SECRET_MASK`] as a secret's value: it comes from a masked
/// record, and storing it would lose the real secret.
fn check_not_mask(field: &str, secret: &str) -> Result<(), Invalid> {
    if secret == SECRET_MASK {
        return Err(Invalid::new(
            field,
            format!(
                "'{SECRET_MASK}' is how a token without the secrets scope sees a secret, \
                 not a secret: give the real one"
            ),
        ));
    }
    Ok(())
}

/// A named admin token. Only an argon2 hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its name: lower-case letters, digits and `-`; the audit log's actor.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was made (Unix seconds).
    pub created: u64,
    /// The argon2 PHC string of its secret.
    pub hash: String,
}

impl ApiToken {
    /// Refuses names that would not read well as an actor or a token prefix.
    pub fn check_name(name: &str) -> Result<(), Invalid> {
        let fine = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name != "admin";
        if fine {
            Ok(())
        } else {
            Err(Invalid::new(
                "name",
                "1 to 32 lower-case letters, digits or '-', and not 'admin'",
            ))
        }
    }
}

/// The last file rendered without error for a device, served again when a
/// later render fails (a bad template must not take a working phone down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastGood {
    /// The users of the device's lines when it was rendered: the file is only
    /// served again to a device with the same accounts.
    pub users: Vec<UserId>,
    /// The rendered file.
    pub body: String,
}

/// What the server last saw of a phone: kept for the device's status and
/// for discovered (unknown) MACs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// Unix time, seconds.
    pub at: u64,
    /// The phone's address.
    pub ip: IpAddr,
    /// Its User-Agent, when it sent one.
    pub user_agent: Option<String>,
    /// Its firmware, when its User-Agent says.
    pub firmware: Option<String>,
    /// The file it asked for.
    pub file: String,
    /// `http` or `tftp`.
    pub transport: String,
    /// The ETag of what was served (for a provisioned device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The provisioning URL the request implied (`http://<Host>`), which
    /// the file names when none is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Whether passwords were left out (TFTP, by policy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_secrets: bool,
}

/// A MAC that asked for its file but is not provisioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    /// The MAC.
    pub mac: Mac,
    /// First request, unix seconds.
    pub first_seen: u64,
    /// Requests counted.
    pub count: u64,
    /// The vendor guessed from the User-Agent or the MAC's OUI.
    pub vendor: Option<String>,
    /// The model guessed from the User-Agent.
    pub model: Option<String>,
    /// The model as the phone's User-Agent names it, known to the catalog
    /// or not: for an unknown model of a known vendor, the only name there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_model: Option<String>,
    /// The last request.
    pub last: Sighting,
}

impl Discovered {
    /// This sighting merged into what was known of the MAC: first seen and
    /// counts add up, and a vendor or model once recognised is kept.
    pub fn merged_with(&self, old: Option<Discovered>) -> Discovered {
        match old {
            Some(old) => Discovered {
                first_seen: old.first_seen,
                count: old.count + self.count,
                vendor: self.vendor.clone().or(old.vendor),
                model: self.model.clone().or(old.model),
                reported_model: self.reported_model.clone().or(old.reported_model),
                ..self.clone()
            },
            None => self.clone(),
        }
    }
}

/// Refuses control characters: in a key=value or XML file a line break
/// would let a value inject settings of its own.
pub fn check_text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    if value.len() > 256 {
        return Err(Invalid::new(field, "is longer than 256 characters"));
    }
    Ok(())
}

/// Like [`check_text`], and also not empty and without spaces.
pub fn check_token(field: &str, value: &str) -> Result<(), Invalid> {
    check_text(field, value)?;
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(Invalid::new(field, "must not contain spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_plan_is_digit_map_rules_and_nothing_else() {
        let plan = DialPlan::parse("1xx | *x. |[2-9]xxxxxx|+x.").unwrap();
        assert_eq!(plan.rules, ["1xx", "*x.", "[2-9]xxxxxx", "+x."]);
        for bad in ["1xx||2xx", "1xxT", "x.;reboot", "[2-9xx", "1xx\n"] {
            assert!(DialPlan::parse(bad).is_err(), "{bad:?}");
        }
        let layers = [&Settings::default()];
        let default = Settings::effective(&layers).dial_plan;
        assert_eq!(default.rules, ["[*#]x.", "+x.", "x."]);
    }

    #[test]
    fn a_downgrade_goes_with_the_version_pinned_beside_it() {
        let pin = |version: Option<&str>, downgrade: Option<bool>| Settings {
            firmware_version: version.map(str::to_string),
            firmware_downgrade: downgrade,
            ..Settings::default()
        };
        let global = pin(Some("66.86.0.15"), Some(true));
        assert!(Settings::effective(&[&global]).firmware_downgrade);
        let model = pin(Some("66.86.0.20"), None);
        assert!(
            !Settings::effective(&[&global, &model]).firmware_downgrade,
            "a version pinned elsewhere is not a downgrade"
        );
        let device = pin(None, Some(false));
        assert!(Settings::effective(&[&global, &device]).firmware_downgrade);
        assert!(!Settings::effective(&[]).firmware_downgrade);

        let err = pin(None, Some(true)).validate().unwrap_err();
        assert_eq!(err.field, "settings.firmware_downgrade");
        assert!(pin(None, Some(false)).validate().is_ok());
        assert!(global.validate().is_ok());
    }

    #[test]
    fn offsets_parse_and_refuse() {
        assert_eq!(UtcOffset::parse("+01:00").unwrap().minutes, 60);
        assert_eq!(UtcOffset::parse("-05:30").unwrap().minutes, -330);
        assert_eq!(UtcOffset::parse("+05").unwrap().minutes, 300);
        for bad in ["1:00", "+1:00", "+25:00", "+01:60", "", "+ab:cd"] {
            assert!(UtcOffset::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn later_layers_win_and_defaults_fill_the_rest() {
        let global = Settings {
            sip_server: Some("pbx.example.com".into()),
            ntp_server: Some("ntp1".into()),
            ..Settings::default()
        };
        let device = Settings {
            ntp_server: Some("ntp2".into()),
            ..Settings::default()
        };
        let s = Settings::effective(&[&global, &Settings::default(), &device]);
        assert_eq!(s.sip_server, "pbx.example.com");
        assert_eq!(s.ntp_server, "ntp2");
        assert_eq!(s.sip_port, 5060);
        assert_eq!(s.feature_codes.voicemail, "*97");
    }

    #[test]
    fn a_masked_secret_sent_back_keeps_the_stored_one_and_is_never_stored() {
        let stored = User {
            id: 1,
            extension: "101".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: None,
            sip: SipAccount {
                username: "101".into(),
                auth_name: "101".into(),
                password: "Pw-101-secret".into(),
            },
            caller_id: CallerId::default(),
            voicemail: Some(Voicemail {
                mailbox: "101".into(),
                pin: Some("4711".into()),
            }),
            language: None,
            mobile: None,
            dnd: false,
            call_waiting: true,
            in_directory: true,
        };
        let shown = stored.clone().shown_to(Scope::Read);
        assert_eq!(shown.sip.password, SECRET_MASK);
        assert_eq!(
            shown.voicemail.as_ref().unwrap().pin.as_deref(),
            Some(SECRET_MASK)
        );
        assert_eq!(stored.clone().shown_to(Scope::Secrets), stored);

        let mut sent_back = shown.clone();
        sent_back.unmask_from(&stored);
        assert_eq!(sent_back, stored);
        assert_eq!(shown.validate().unwrap_err().field, "sip.password");

        let settings = Settings {
            admin_password: Some(SECRET_MASK.into()),
            ..Settings::default()
        };
        let mut unset = settings.clone();
        unset.unmask_from(&Settings::default());
        assert_eq!(
            unset.validate().unwrap_err().field,
            "settings.admin_password"
        );
    }

    #[test]
    fn newlines_are_refused_everywhere_a_template_could_print_them() {
        let settings = Settings {
            language: Some("en\nsecurity.user_password = admin:pwned".into()),
            ..Settings::default()
        };
        assert_eq!(settings.validate().unwrap_err().field, "settings.language");
    }
}
