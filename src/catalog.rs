//! The catalog of phone models: which model and which file a request means,
//! and for which MAC.
//!
//! Everything here is read from data: the descriptors in `phone-models/` and
//! the templates they name (see `docs/phone-models.md`). Both are embedded in
//! the binary; a directory given in the config may add or replace
//! descriptors. No vendor is named in this code.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use include_dir::{Dir, include_dir};
use regex::{Regex, RegexBuilder};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, meta};
use serde::{Deserialize, Serialize};

use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid, Key, KeyType};

/// The descriptors built into the binary.
static BUILTIN_MODELS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/phone-models");

/// A descriptor that cannot be used; the server refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML does not parse or does not fit the descriptor format.
    #[error("{file}: {message}")]
    Descriptor {
        /// The descriptor file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A descriptor directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// One vendor's descriptor file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorFile {
    vendor: String,
    templates: String,
    #[serde(default)]
    ouis: Vec<String>,
    #[serde(default)]
    user_agents: Vec<String>,
    #[serde(default)]
    key_codes: BTreeMap<KeyType, String>,
    #[serde(default)]
    resync_event: Option<String>,
    #[serde(default)]
    reboot_event: Option<String>,
    #[serde(default)]
    firmware_numbers: Option<String>,
    #[serde(default)]
    unserved_files: Vec<String>,
    files: Vec<FileSpec>,
    #[serde(default)]
    modules: Vec<ModuleSpec>,
    models: Vec<ModelSpec>,
}

/// An expansion module (sidecar), as the descriptor describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Stable id used by devices (`yealink-exp50`).
    pub id: String,
    /// As the vendor writes it (`EXP50`).
    pub name: String,
    /// Keys on one module, all pages together.
    pub keys: u16,
    /// Pages the keys are shown on.
    #[serde(default = "one_page")]
    pub pages: u16,
}

fn one_page() -> u16 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    name: String,
    template: String,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    id: String,
    name: String,
    #[serde(default)]
    user_agent_names: Vec<String>,
    accounts: u16,
    line_keys: u16,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    key_types: Option<Vec<KeyType>>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    max_modules: u8,
    #[serde(default)]
    compatible: Vec<String>,
    #[serde(default)]
    unverified: Option<String>,
}

/// A phone vendor: how its phones are recognised and what its key codes are.
#[derive(Debug)]
pub struct Vendor {
    /// The vendor's name (`Yealink`).
    pub name: String,
    ouis: Vec<String>,
    user_agents: Vec<Regex>,
    key_codes: BTreeMap<KeyType, String>,
    /// Names its phones ask for that no template answers (lower case).
    unserved_files: Vec<String>,
}

impl Vendor {
    /// The vendor's code for a key type, if its phones have such keys.
    pub fn key_code(&self, kind: KeyType) -> Option<&str> {
        self.key_codes.get(&kind).map(String::as_str)
    }
}

/// A file a model asks for, and the template that renders it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFile {
    /// The name pattern with the model's vars filled in (`{mac}.cfg`, `y000000000066.cfg`).
    pub name: String,
    /// The template's name (`yealink/mac.cfg`).
    pub template: String,
    /// The HTTP Content-Type.
    pub content_type: String,
    /// Whether the file is for one phone (its name holds the MAC).
    pub per_device: bool,
}

/// A phone model.
#[derive(Debug, Serialize)]
pub struct PhoneModel {
    /// Stable id (`yealink-t46s`).
    pub id: String,
    /// Vendor name.
    pub vendor: String,
    /// Model name as the vendor writes it.
    pub name: String,
    /// SIP accounts.
    pub accounts: u16,
    /// Programmable keys on the phone itself.
    pub line_keys: u16,
    /// Key types this model can do.
    pub key_types: Vec<KeyType>,
    /// Model-specific values for file names and templates.
    pub vars: BTreeMap<String, String>,
    /// Expansion modules that fit this model.
    pub modules: Vec<ModuleSpec>,
    /// How many modules it can chain.
    pub max_modules: u8,
    /// The SIP NOTIFY `Event` that makes it fetch its files again.
    pub resync_event: Option<String>,
    /// The SIP NOTIFY `Event` that makes it reboot (and so fetch its files).
    pub reboot_event: Option<String>,
    /// Other models that can take over a phone's configuration (clone).
    pub compatible: Vec<String>,
    /// What no source at hand confirms about it, when something is
    /// unconfirmed (its files follow its family's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
    /// The files it asks for.
    pub files: Vec<ModelFile>,
    /// How its family's firmware versions compare.
    #[serde(skip)]
    pub firmware_numbers: FirmwareNumbers,
    #[serde(skip)]
    vendor_index: usize,
    #[serde(skip)]
    user_agent_names: Vec<String>,
}

impl PhoneModel {
    /// Checks a device against what this model can do.
    pub fn check_device(&self, device: &Device) -> Result<(), Invalid> {
        if device.lines.len() > usize::from(self.accounts) {
            return Err(Invalid::new(
                "lines",
                format!(
                    "the {} has {} SIP accounts, not {}",
                    self.name,
                    self.accounts,
                    device.lines.len()
                ),
            ));
        }
        let modules = self.device_modules(device)?;
        for (i, key) in device.keys.iter().enumerate() {
            self.check_key(&modules, i, key)?;
        }
        Ok(())
    }

    /// Checks a device's key `keys[i]` against this model with `modules`
    /// chained to it: a position that exists, a type the model can do.
    pub fn check_key(&self, modules: &[&ModuleSpec], i: usize, key: &Key) -> Result<(), Invalid> {
        let (keys, on) = match key.module {
            None => (self.line_keys, self.name.clone()),
            Some(n) => {
                let module = modules.get(usize::from(n) - 1).ok_or_else(|| {
                    Invalid::new(
                        format!("keys[{i}].module"),
                        format!(
                            "the device has {} expansion module(s), not {n}",
                            modules.len()
                        ),
                    )
                })?;
                (module.keys, format!("{} module {n}", module.name))
            }
        };
        if key.index > keys {
            return Err(Invalid::new(
                format!("keys[{i}].index"),
                format!(
                    "the {on} has {keys} programmable keys; there is no key {}",
                    key.index
                ),
            ));
        }
        if !self.key_types.contains(&key.kind) {
            return Err(Invalid::new(
                format!("keys[{i}].type"),
                format!("the {} has no {} keys", self.name, key.kind.name()),
            ));
        }
        Ok(())
    }

    /// `device` as this model can take it: its expansion modules up to the
    /// first that does not fit, and the keys that have a place on the model;
    /// with the keys left out, each with why.
    pub fn fitted(&self, device: &Device) -> (Device, Vec<(Key, Invalid)>) {
        let modules: Vec<&ModuleSpec> = device
            .modules
            .iter()
            .take(usize::from(self.max_modules))
            .map_while(|id| self.modules.iter().find(|m| &m.id == id))
            .collect();
        let mut fitted = Device {
            model: self.id.clone(),
            modules: modules.iter().map(|m| m.id.clone()).collect(),
            keys: Vec::new(),
            ..device.clone()
        };
        let mut left_out = Vec::new();
        for (i, key) in device.keys.iter().enumerate() {
            match self.check_key(&modules, i, key) {
                Ok(()) => fitted.keys.push(key.clone()),
                Err(why) => left_out.push((key.clone(), why)),
            }
        }
        (fitted, left_out)
    }

    /// The device's expansion modules, checked against what fits this model.
    pub fn device_modules(&self, device: &Device) -> Result<Vec<&ModuleSpec>, Invalid> {
        if device.modules.len() > usize::from(self.max_modules) {
            return Err(Invalid::new(
                "modules",
                format!(
                    "the {} takes at most {} expansion module(s)",
                    self.name, self.max_modules
                ),
            ));
        }
        device
            .modules
            .iter()
            .enumerate()
            .map(|(i, id)| {
                self.modules.iter().find(|m| &m.id == id).ok_or_else(|| {
                    let fits: Vec<&str> = self.modules.iter().map(|m| m.id.as_str()).collect();
                    Invalid::new(
                        format!("modules[{i}]"),
                        format!(
                            "module '{id}' does not fit the {} (fits: {})",
                            self.name,
                            if fits.is_empty() {
                                "none".to_string()
                            } else {
                                fits.join(", ")
                            }
                        ),
                    )
                })
            })
            .collect()
    }
}

/// How a family's firmware versions compare: by the numbers in them, in
/// order, so `66.86.00.15` is `66.86.0.15`. Where a family spells one
/// version several ways (Cisco's image `sip88xx.11-3-7MPP0001-2` for the
/// `11.3.7` its User-Agent reports), the descriptor's `firmware_numbers`
/// pattern picks the numbers that compare.
#[derive(Debug, Clone, Default)]
pub struct FirmwareNumbers(Option<Regex>);

impl FirmwareNumbers {
    /// Numbers from the capture groups of `pattern`'s first match (or the
    /// whole match when it has no groups); without a pattern, from the
    /// whole version.
    fn new(pattern: Option<&str>) -> Result<FirmwareNumbers, String> {
        pattern
            .map(|p| {
                RegexBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("firmware_numbers: {e}"))
            })
            .transpose()
            .map(FirmwareNumbers)
    }

    /// The runs of digits in what the pattern picks from `version`, each
    /// without its leading zeros.
    fn of<'v>(&self, version: &'v str) -> Vec<&'v str> {
        let picked: Vec<&str> = match &self.0 {
            None => vec![version],
            Some(pattern) => match pattern.captures(version) {
                None => Vec::new(),
                Some(caps) => {
                    let skip_whole_match = usize::from(caps.len() > 1);
                    caps.iter()
                        .skip(skip_whole_match)
                        .flatten()
                        .map(|m| m.as_str())
                        .collect()
                }
            },
        };
        picked
            .into_iter()
            .flat_map(|text| text.split(|c: char| !c.is_ascii_digit()))
            .filter(|run| !run.is_empty())
            .map(|run| run.trim_start_matches('0'))
            .collect()
    }

    /// How the version a phone reports compares with the pinned one, on
    /// the numbers both spell out: a phone that reports fewer (`11.3.7`
    /// where the pin adds a build number) is on that version, since asking
    /// it to upgrade could never make it report more. None when either has
    /// no numbers to compare.
    pub fn compare(&self, reported: &str, pinned: &str) -> Option<Ordering> {
        let (reported, pinned) = (self.of(reported), self.of(pinned));
        if reported.is_empty() || pinned.is_empty() {
            return None;
        }
        // Digit runs of any length compare as numbers: longer is larger,
        // leading zeros being gone.
        let ordering = reported
            .iter()
            .zip(&pinned)
            .map(|(r, p)| (r.len(), r).cmp(&(p.len(), p)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal);
        Some(ordering)
    }
}

/// What a User-Agent or a path says about the phone behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The vendor, when recognised.
    pub vendor: Option<String>,
    /// The model id, when recognised.
    pub model: Option<String>,
    /// The model as the User-Agent names it (`T46S`), whether the catalog
    /// knows it or not: what an unknown model of a known vendor is called.
    pub reported_model: Option<String>,
    /// The firmware version the phone reports.
    pub firmware: Option<String>,
    /// The MAC the phone reports, or the one in the path.
    pub mac: Option<Mac>,
}

/// What a requested file name means.
#[derive(Debug)]
pub struct FileMatch<'a> {
    /// The MAC in the name, for a per-device file.
    pub mac: Option<Mac>,
    /// The models that ask for a file of this name, with the file.
    pub candidates: Vec<(&'a PhoneModel, &'a ModelFile)>,
}

/// All phone models, and the index that maps file names to them.
#[derive(Debug)]
pub struct Catalog {
    vendors: Vec<Vendor>,
    models: Vec<PhoneModel>,
    by_id: HashMap<String, usize>,
    /// Every distinct file name pattern, and the models that ask for it.
    file_names: FileNames,
    /// Every vendor's User-Agent patterns, tried in one pass...
    user_agent_patterns: FirstMatch,
    /// ...and the (vendor, pattern) each one is.
    user_agent_owners: Vec<(usize, usize)>,
    /// A model by (vendor, lower-cased User-Agent name).
    user_agent_models: HashMap<(usize, String), usize>,
}

/// How many hex digits a `{mac}` placeholder stands for in a file name.
const MAC_DIGITS: usize = 12;

impl Catalog {
    /// The catalog built into the binary.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::load(None)
    }

    /// The built-in descriptors, plus (replacing same-named files) the
    /// `*.toml` files in `extra_dir`.
    pub fn load(extra_dir: Option<&Path>) -> Result<Catalog, CatalogError> {
        let mut sources: BTreeMap<String, String> = BUILTIN_MODELS
            .files()
            .filter(|f| f.path().extension().is_some_and(|e| e == "toml"))
            .filter_map(|f| {
                let name = f.path().to_string_lossy().into_owned();
                f.contents_utf8().map(|text| (name, text.to_string()))
            })
            .collect();
        if let Some(dir) = extra_dir {
            let io = |source| CatalogError::Io {
                path: dir.display().to_string(),
                source,
            };
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).map_err(io)?;
                    let name = path.file_name().unwrap_or_default().to_string_lossy();
                    sources.insert(name.into_owned(), text);
                }
            }
        }
        Catalog::from_sources(&sources)
    }

    /// Builds the catalog from descriptor texts keyed by file name.
    fn from_sources(sources: &BTreeMap<String, String>) -> Result<Catalog, CatalogError> {
        let mut vendors = Vec::new();
        let mut models = Vec::new();
        for (file, text) in sources {
            let bad = |message: String| CatalogError::Descriptor {
                file: file.clone(),
                message,
            };
            let spec: VendorFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
            let vendor_index = vendors.len();
            let numbers = FirmwareNumbers::new(spec.firmware_numbers.as_deref()).map_err(bad)?;
            for spec_model in &spec.models {
                let model = build_model(&spec, spec_model, vendor_index, &numbers).map_err(bad)?;
                models.push(model);
            }
            vendors.push(build_vendor(spec).map_err(bad)?);
        }
        let mut by_id = HashMap::new();
        for (i, model) in models.iter().enumerate() {
            if by_id.insert(model.id.clone(), i).is_some() {
                return Err(CatalogError::Descriptor {
                    file: model.vendor.clone(),
                    message: format!("model id {} is used twice", model.id),
                });
            }
        }
        let file_names = FileNames::new(&models)?;
        let (user_agent_patterns, user_agent_owners) = index_user_agents(&vendors)?;
        let mut user_agent_models = HashMap::new();
        for (i, model) in models.iter().enumerate() {
            for name in &model.user_agent_names {
                // The first model to claim a name keeps it, as the old scan did.
                user_agent_models
                    .entry((model.vendor_index, name.to_ascii_lowercase()))
                    .or_insert(i);
            }
        }
        Ok(Catalog {
            vendors,
            models,
            by_id,
            file_names,
            user_agent_patterns,
            user_agent_owners,
            user_agent_models,
        })
    }

    /// Every model, in descriptor order.
    pub fn models(&self) -> &[PhoneModel] {
        &self.models
    }

    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&PhoneModel> {
        self.by_id.get(id).map(|&i| &self.models[i])
    }

    /// The vendor of a model.
    pub fn vendor_of(&self, model: &PhoneModel) -> &Vendor {
        &self.vendors[model.vendor_index]
    }

    /// What a file name (the last part of the requested path) means.
    pub fn match_file(&self, file_name: &str) -> Option<FileMatch<'_>> {
        let (pattern, mac_at) = self.file_names.find(file_name)?;
        let mac = mac_at
            .and_then(|at| file_name.get(at..at + MAC_DIGITS))
            .and_then(|mac| mac.parse().ok());
        let candidates = self.file_names.owners[pattern]
            .iter()
            .map(|&(m, f)| (&self.models[m], &self.models[m].files[f]))
            .collect();
        Some(FileMatch { mac, candidates })
    }

    /// What a User-Agent says: vendor, model, firmware and MAC, each when known.
    /// An unknown or malformed User-Agent is simply not recognised.
    pub fn identify_user_agent(&self, user_agent: &str) -> Identity {
        // One pass over every vendor's patterns; the first in descriptor
        // order wins, then only that one runs again for its groups.
        let Some(first) = self.user_agent_patterns.first(user_agent) else {
            return Identity::default();
        };
        let (vendor_index, pattern) = self.user_agent_owners[first];
        let vendor = &self.vendors[vendor_index];
        let Some(caps) = vendor.user_agents[pattern].captures(user_agent) else {
            return Identity::default();
        };
        let group = |name| caps.name(name).map(|m| m.as_str().to_string());
        let reported_model = group("model");
        let model = reported_model.as_ref().and_then(|name| {
            self.user_agent_models
                .get(&(vendor_index, name.to_ascii_lowercase()))
                .map(|&i| &self.models[i])
        });
        Identity {
            vendor: Some(vendor.name.clone()),
            model: model.map(|m| m.id.clone()),
            reported_model,
            firmware: group("firmware"),
            mac: group("mac").and_then(|m| m.parse().ok()),
        }
    }

    /// What a requested path means: its longest tail that is a file
    /// pattern, and that tail. A pattern may put `{mac}` in a folder
    /// (`gs-phonebook/{mac}/phonebook.xml`) for phones that are given a
    /// folder and add the file name themselves.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<(&'p str, FileMatch<'_>)> {
        let path = path.trim_matches(['/', '\\']);
        // The longest tail a pattern can be, then shorter ones: the first
        // that matches is the longest, and a plain name costs one lookup.
        let mut start = path
            .rmatch_indices(['/', '\\'])
            .nth(self.file_names.depth.saturating_sub(1))
            .map_or(0, |(at, _)| at + 1);
        loop {
            let tail = &path[start..];
            if let Some(found) = self.match_file(tail) {
                return Some((tail, found));
            }
            start += tail.find(['/', '\\'])? + 1;
        }
    }

    /// What a requested path says: the MAC in it, and the vendor and model
    /// when only one could ask for it.
    pub fn identify_path(&self, path: &str) -> Identity {
        let Some((_, found)) = self.match_path(path) else {
            let file_name = path.rsplit(['/', '\\']).next().unwrap_or(path);
            return self.identify_unserved(file_name);
        };
        let only = |values: Vec<&String>| {
            let first = values.first().copied();
            first.filter(|f| values.iter().all(|v| v == f)).cloned()
        };
        // Several vendors ask for the same name (`{mac}.xml`, `cfg{mac}.xml`):
        // the MAC's OUI tells them apart when one of them owns it.
        let mut candidates = found.candidates;
        if let Some(mac) = found.mac {
            let oui = mac.oui();
            let owners: Vec<_> = candidates
                .iter()
                .filter(|(m, _)| self.vendors[m.vendor_index].ouis.contains(&oui))
                .copied()
                .collect();
            if !owners.is_empty() {
                candidates = owners;
            }
        }
        Identity {
            vendor: only(candidates.iter().map(|(m, _)| &m.vendor).collect()),
            model: only(candidates.iter().map(|(m, _)| &m.id).collect()),
            reported_model: None,
            firmware: None,
            mac: found.mac,
        }
    }

    /// The vendor whose phones ask for `file_name` though nothing serves it
    /// (Cisco's `ITLFile.tlv`): that still tells who is asking.
    fn identify_unserved(&self, file_name: &str) -> Identity {
        let lower = file_name.to_ascii_lowercase();
        let vendor = self
            .vendors
            .iter()
            .find(|v| v.unserved_files.contains(&lower))
            .map(|v| v.name.clone());
        Identity {
            vendor,
            ..Identity::default()
        }
    }

    /// The vendor that owns a MAC's OUI, if any.
    pub fn vendor_by_oui(&self, mac: Mac) -> Option<&Vendor> {
        let oui = mac.oui();
        self.vendors.iter().find(|v| v.ouis.contains(&oui))
    }

    /// Every template name the models use.
    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .flat_map(|m| m.files.iter().map(|f| f.template.as_str()))
    }
}

fn build_vendor(spec: VendorFile) -> Result<Vendor, String> {
    for (key, event) in [
        ("resync_event", &spec.resync_event),
        ("reboot_event", &spec.reboot_event),
    ] {
        // The event goes into a SIP header as it is: a line break there
        // would add headers of its own.
        if event
            .as_deref()
            .is_some_and(|e| e.is_empty() || e.chars().any(char::is_control))
        {
            return Err(format!("{key}: must be one non-empty line"));
        }
    }
    let user_agents = spec
        .user_agents
        .iter()
        .map(|p| {
            RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .map_err(|e| format!("user_agents: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let ouis = spec.ouis.iter().map(|o| o.to_ascii_lowercase()).collect();
    let unserved_files = spec
        .unserved_files
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    Ok(Vendor {
        name: spec.vendor,
        ouis,
        user_agents,
        key_codes: spec.key_codes,
        unserved_files,
    })
}

fn build_model(
    vendor: &VendorFile,
    spec: &ModelSpec,
    vendor_index: usize,
    firmware_numbers: &FirmwareNumbers,
) -> Result<PhoneModel, String> {
    let vendor_types: Vec<KeyType> = vendor.key_codes.keys().copied().collect();
    let key_types = match &spec.key_types {
        None => vendor_types,
        Some(types) => {
            if let Some(t) = types.iter().find(|t| !vendor_types.contains(t)) {
                return Err(format!(
                    "model {}: key type {} has no code in key_codes",
                    spec.id,
                    t.name()
                ));
            }
            types.clone()
        }
    };
    let files = vendor
        .files
        .iter()
        .filter_map(|file| {
            let name = fill_vars(&file.name, &spec.vars)?;
            Some(ModelFile {
                per_device: name.contains("{mac}"),
                content_type: file
                    .content_type
                    .clone()
                    .unwrap_or_else(|| content_type_for(&name).to_string()),
                template: format!("{}/{}", vendor.templates, file.template),
                name,
            })
        })
        .collect();
    let modules = spec
        .modules
        .iter()
        .map(|id| {
            vendor
                .modules
                .iter()
                .find(|m| &m.id == id)
                .cloned()
                .ok_or_else(|| format!("model {}: no module {id} in [[modules]]", spec.id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if spec.max_modules > 0 && modules.is_empty() {
        return Err(format!("model {}: max_modules without modules", spec.id));
    }
    let user_agent_names = if spec.user_agent_names.is_empty() {
        vec![spec.name.clone()]
    } else {
        spec.user_agent_names.clone()
    };
    Ok(PhoneModel {
        id: spec.id.clone(),
        vendor: vendor.vendor.clone(),
        name: spec.name.clone(),
        accounts: spec.accounts,
        line_keys: spec.line_keys,
        key_types,
        vars: spec.vars.clone(),
        modules,
        max_modules: spec.max_modules,
        resync_event: vendor.resync_event.clone(),
        reboot_event: vendor.reboot_event.clone(),
        compatible: spec.compatible.clone(),
        unverified: spec.unverified.clone(),
        files,
        firmware_numbers: firmware_numbers.clone(),
        vendor_index,
        user_agent_names,
    })
}

/// Fills `{var}`s from the model's vars, leaving `{mac}`; none when the
/// model lacks a var the pattern needs (it does not ask for that file).
fn fill_vars(pattern: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}')?;
        out.push_str(&rest[..start]);
        let var = &rest[start + 1..end];
        if var == "mac" {
            out.push_str("{mac}");
        } else {
            out.push_str(vars.get(var)?);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn content_type_for(name: &str) -> &'static str {
    let extension = name.rsplit('.').next().unwrap_or_default();
    match extension.to_ascii_lowercase().as_str() {
        "xml" => "application/xml",
        "htm" | "html" => "text/html",
        _ => "text/plain",
    }
}

/// Patterns in order, and one search that tells the first of them to match
/// anywhere: what a `RegexSet` answers with its first match, without
/// finding every other pattern that matches too (three times the time).
#[derive(Debug)]
struct FirstMatch(meta::Regex);

impl FirstMatch {
    /// The patterns match as ASCII: a User-Agent is ASCII (HTTP field values
    /// are), and Unicode classes and case folding made the automaton's
    /// per-thread search cache 300-400 KB instead of 40-90 KB.
    fn new(patterns: &[String]) -> Result<FirstMatch, String> {
        // Each pattern behind a lazy `.*?`, searched from the start only:
        // every match then starts at 0, and leftmost-first picks the one
        // that backtracking would, the first pattern that can match.
        let anywhere: Vec<String> = patterns
            .iter()
            .map(|p| format!("(?s:.*?)(?:{p})"))
            .collect();
        let syntax = syntax::Config::new()
            .case_insensitive(true)
            .unicode(false)
            .utf8(false);
        meta::Regex::builder()
            .syntax(syntax)
            .build_many(&anywhere)
            .map(FirstMatch)
            .map_err(|e| e.to_string())
    }

    /// The index of the first pattern that matches `haystack`.
    fn first(&self, haystack: &str) -> Option<usize> {
        let input = Input::new(haystack).anchored(Anchored::Yes);
        self.0.search(&input).map(|m| m.pattern().as_usize())
    }
}

/// Every vendor's User-Agent patterns as one set, with their owners.
fn index_user_agents(
    vendors: &[Vendor],
) -> Result<(FirstMatch, Vec<(usize, usize)>), CatalogError> {
    let mut sources = Vec::new();
    let mut owners = Vec::new();
    for (v, vendor) in vendors.iter().enumerate() {
        for (p, pattern) in vendor.user_agents.iter().enumerate() {
            sources.push(pattern.as_str().to_string());
            owners.push((v, p));
        }
    }
    let set = FirstMatch::new(&sources).map_err(|e| CatalogError::Descriptor {
        file: "user_agents".into(),
        message: e,
    })?;
    Ok((set, owners))
}

/// The models' file names, matched case-insensitively as ASCII. A name
/// without `{mac}` is one map lookup; a name with it is found by the text
/// on either side of a run of [`MAC_DIGITS`] hex digits. A regex set over
/// the 351 built-in names did the same with a lazy DFA whose search cache
/// took 300-400 KB on every thread that searched it.
#[derive(Debug)]
struct FileNames {
    /// Lower-cased names without a MAC, and their pattern.
    fixed: HashMap<String, usize>,
    /// Names with a MAC: the lower-cased text before it, then each text
    /// after it with its pattern.
    around_mac: HashMap<String, Vec<(String, usize)>>,
    /// The (model, file) pairs each pattern stands for.
    owners: Vec<Vec<(usize, usize)>>,
    /// The most path segments a pattern has (1 when all are file names).
    depth: usize,
}

impl FileNames {
    fn new(models: &[PhoneModel]) -> Result<FileNames, CatalogError> {
        let mut by_name: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (m, model) in models.iter().enumerate() {
            for (f, file) in model.files.iter().enumerate() {
                by_name
                    .entry(file.name.to_ascii_lowercase())
                    .or_default()
                    .push((m, f));
            }
        }
        // A request means the first pattern that fits, so names without a
        // MAC come first: `000000000000.cfg` is Poly's master file, not a
        // device.
        let mut by_name: Vec<(String, Vec<(usize, usize)>)> = by_name.into_iter().collect();
        by_name.sort_by_key(|(name, _)| name.contains("{mac}"));
        let mut names = FileNames {
            fixed: HashMap::new(),
            around_mac: HashMap::new(),
            owners: Vec::with_capacity(by_name.len()),
            depth: 1,
        };
        for (pattern, (name, owners)) in by_name.into_iter().enumerate() {
            names.depth = names.depth.max(name.split('/').count());
            match name.split_once("{mac}") {
                None => {
                    names.fixed.insert(name, pattern);
                }
                Some((_, after)) if after.contains("{mac}") => {
                    let (m, _) = owners[0];
                    return Err(CatalogError::Descriptor {
                        file: models[m].vendor.clone(),
                        message: format!("file name {name} has {{mac}} more than once"),
                    });
                }
                Some((before, after)) => names
                    .around_mac
                    .entry(before.to_string())
                    .or_default()
                    .push((after.to_string(), pattern)),
            }
            names.owners.push(owners);
        }
        Ok(names)
    }

    /// The first pattern `file_name` fits, and where its MAC starts if the
    /// pattern has one.
    fn find(&self, file_name: &str) -> Option<(usize, Option<usize>)> {
        let name = file_name.to_ascii_lowercase();
        if let Some(&pattern) = self.fixed.get(&name) {
            return Some((pattern, None));
        }
        let bytes = name.as_bytes();
        // Each start of a hex run is an ASCII byte, so a char boundary, and
        // so is the byte after the run.
        (0..(bytes.len() + 1).saturating_sub(MAC_DIGITS))
            .filter(|&at| bytes[at..at + MAC_DIGITS].iter().all(u8::is_ascii_hexdigit))
            .filter_map(|at| {
                let after = &name[at + MAC_DIGITS..];
                self.around_mac
                    .get(&name[..at])?
                    .iter()
                    .find(|(suffix, _)| suffix == after)
                    .map(|&(_, pattern)| (pattern, Some(at)))
            })
            .min_by_key(|&(pattern, _)| pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Recognition of any User-Agent or path never panics; a MAC it
        /// reports from a path is really in that path.
        #[test]
        fn recognition_never_panics(
            text in "\\PC{0,80}",
            mac in "[0-9a-fA-F]{12}",
            prefix in "(cfg|spa|snomD785-|y0000000000|)",
            suffix in "(\\.cfg|\\.xml|-phonebook\\.xml|\\.htm|)",
        ) {
            static BUILTIN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
            let catalog = BUILTIN.get_or_init(|| Catalog::builtin().unwrap());
            let _ = catalog.identify_user_agent(&text);
            let _ = catalog.identify_path(&text);
            let path = format!("/{prefix}{mac}{suffix}");
            if let Some(found) = catalog.identify_path(&path).mac {
                prop_assert!(path.to_ascii_lowercase().contains(&found.lower()));
            }
        }
    }

    proptest! {
        /// A file name means the pattern a RegexSet of the names (each
        /// `{mac}` a run of 12 hex digits) finds first, with the MAC where
        /// that pattern has it.
        #[test]
        fn file_names_match_as_a_regex_set_would(
            pick in any::<prop::sample::Index>(),
            mac in "[0-9a-fA-F]{12}",
            noise in "[0-9a-fA-F.]{0,14}",
            upper in any::<bool>(),
        ) {
            static BUILTIN: std::sync::OnceLock<(Catalog, Vec<String>, regex::RegexSet)> =
                std::sync::OnceLock::new();
            let (catalog, names, set) = BUILTIN.get_or_init(|| {
                let catalog = Catalog::builtin().unwrap();
                let mut names: Vec<(bool, String)> = catalog
                    .models
                    .iter()
                    .flat_map(|m| m.files.iter().map(|f| f.name.to_ascii_lowercase()))
                    .map(|n| (n.contains("{mac}"), n))
                    .collect();
                names.sort();
                names.dedup();
                let names: Vec<String> = names.into_iter().map(|(_, n)| n).collect();
                let patterns = names.iter().map(|n| {
                    let parts: Vec<String> = n.split("{mac}").map(regex::escape).collect();
                    format!("^{}$", parts.join("[0-9a-f]{12}"))
                });
                let set = regex::RegexSetBuilder::new(patterns)
                    .case_insensitive(true)
                    .unicode(false)
                    .build()
                    .unwrap();
                (catalog, names, set)
            });
            let name = pick.get(names).replace("{mac}", &mac);
            for text in [name.clone(), format!("{noise}{name}"), format!("{name}{noise}"), noise.clone()] {
                let text = if upper { text.to_ascii_uppercase() } else { text };
                let expected = set.matches(&text).into_iter().next();
                let found = catalog.file_names.find(&text);
                prop_assert_eq!(found.map(|(p, _)| p), expected, "{}", text);
                if let Some((pattern, Some(at))) = found {
                    let before = names[pattern].split("{mac}").next().unwrap_or_default();
                    prop_assert_eq!(at, before.len());
                }
            }
        }
    }

    proptest! {
        /// One search answers what a RegexSet's first match does, whether
        /// the patterns are anchored or not.
        #[test]
        fn first_match_is_a_regex_sets_first(text in "[abcAB ]{0,12}") {
            let patterns = ["c", "^ab", "b+ $", "a", "^$"].map(String::from);
            let set = regex::RegexSetBuilder::new(&patterns)
                .case_insensitive(true)
                .build()
                .unwrap();
            let first = FirstMatch::new(&patterns).unwrap();
            prop_assert_eq!(first.first(&text), set.matches(&text).into_iter().next());
        }
    }

    const ACME: &str = r#"
vendor = "Acme"
templates = "acme"
ouis = ["AABBCC"]
user_agents = ['^acme (?P<model>\S+) (?P<firmware>\S+)(?: (?P<mac>[0-9a-f]{12}))?$']
[key_codes]
line = "1"
blf = "2"
[[files]]
name = "acme{code}.cfg"
template = "common.cfg"
[[files]]
name = "{mac}.cfg"
template = "mac.cfg"
[[models]]
id = "acme-a1"
name = "A1"
accounts = 2
line_keys = 4
vars = { code = "01" }
[[models]]
id = "acme-a2"
name = "A2"
accounts = 4
line_keys = 8
key_types = ["line"]
"#;

    fn acme() -> Catalog {
        let sources = BTreeMap::from([("acme.toml".to_string(), ACME.to_string())]);
        Catalog::from_sources(&sources).unwrap()
    }

    #[test]
    fn common_and_per_device_files_are_told_apart() {
        let catalog = acme();
        let common = catalog.match_file("ACME01.cfg").unwrap();
        assert_eq!(common.mac, None);
        assert_eq!(common.candidates.len(), 1);
        assert_eq!(common.candidates[0].0.id, "acme-a1");

        let per_device = catalog.match_file("AABBCC000001.CFG").unwrap();
        assert_eq!(per_device.mac.unwrap().lower(), "aabbcc000001");
        assert_eq!(per_device.candidates.len(), 2);
        assert!(
            catalog.match_file("acme02.cfg").is_none(),
            "A2 has no code var"
        );
        assert!(catalog.match_file("aabbcc00000.cfg").is_none());
    }

    #[test]
    fn a_shared_file_name_is_told_apart_by_the_macs_oui() {
        let other = ACME
            .replace("Acme", "Other")
            .replace("acme", "other")
            .replace("AABBCC", "112233");
        let sources = BTreeMap::from([
            ("acme.toml".to_string(), ACME.to_string()),
            ("other.toml".to_string(), other),
        ]);
        let catalog = Catalog::from_sources(&sources).unwrap();
        let vendor = |path| catalog.identify_path(path).vendor;
        assert_eq!(vendor("/aabbcc000001.cfg").as_deref(), Some("Acme"));
        assert_eq!(vendor("/112233000001.cfg").as_deref(), Some("Other"));
        assert_eq!(vendor("/445566000001.cfg"), None, "nobody owns the OUI");
    }

    #[test]
    fn user_agents_are_recognised_from_data() {
        let catalog = acme();
        let id = catalog.identify_user_agent("ACME a1 1.2.3 aabbcc000001");
        assert_eq!(id.vendor.as_deref(), Some("Acme"));
        assert_eq!(id.model.as_deref(), Some("acme-a1"));
        assert_eq!(id.firmware.as_deref(), Some("1.2.3"));
        assert_eq!(id.mac.unwrap().lower(), "aabbcc000001");
        assert_eq!(id.reported_model.as_deref(), Some("a1"));
        let unknown = catalog.identify_user_agent("acme A9 2.0");
        assert_eq!(unknown.vendor.as_deref(), Some("Acme"));
        assert_eq!(unknown.model, None);
        assert_eq!(unknown.reported_model.as_deref(), Some("A9"));
        assert_eq!(catalog.identify_user_agent("curl/8.0"), Identity::default());
        assert_eq!(
            catalog.identify_user_agent("\u{0}\u{ff}"),
            Identity::default()
        );
    }

    #[test]
    fn a_key_type_without_a_code_is_refused_for_the_model() {
        let catalog = acme();
        let a2 = catalog.model("acme-a2").unwrap();
        assert_eq!(a2.key_types, vec![KeyType::Line]);
        assert_eq!(catalog.model("acme-a1").unwrap().key_types.len(), 2);
    }

    #[test]
    fn a_broken_descriptor_is_named() {
        let sources = BTreeMap::from([("bad.toml".to_string(), "vendor = 3".to_string())]);
        let err = Catalog::from_sources(&sources).unwrap_err().to_string();
        assert!(err.starts_with("bad.toml:"), "{err}");
    }

    #[test]
    fn firmware_versions_compare_by_their_numbers() {
        use Ordering::{Equal, Greater, Less};
        let numbers = FirmwareNumbers::default();
        for (reported, pinned, expected) in [
            ("66.86.0.15", "66.86.0.15", Some(Equal)),
            ("66.86.00.15", "66.86.0.15", Some(Equal)),
            ("66.86.0.16", "66.86.0.15", Some(Greater)),
            ("66.86.0.100", "66.86.0.99", Some(Greater)),
            ("67.0.0.1", "66.86.0.15", Some(Greater)),
            ("66.85.0.99", "66.86.0.15", Some(Less)),
            ("9.1", "10.0", Some(Less)),
            ("11.3.7", "11.3.7.2", Some(Equal)),
            ("83.V2.48.0", "83.V2.11.0", Some(Greater)),
            ("99999999999999999999999.1", "1.0", Some(Greater)),
            ("beta", "66.86.0.15", None),
            ("66.86.0.15", "", None),
        ] {
            assert_eq!(
                numbers.compare(reported, pinned),
                expected,
                "{reported} vs {pinned}"
            );
        }
    }

    #[test]
    fn a_familys_pattern_picks_the_numbers_that_compare() {
        use Ordering::{Equal, Greater, Less};
        let cisco = FirmwareNumbers::new(Some(r"(\d+)[.-](\d+)[.-](\d+)")).unwrap();
        let image = "sip88xx.11-3-7MPP0001-2";
        assert_eq!(cisco.compare("11.3.7", image), Some(Equal));
        assert_eq!(cisco.compare("12.0.1", image), Some(Greater));
        assert_eq!(cisco.compare("11.2.3", image), Some(Less));
        assert_eq!(cisco.compare("11", image), None, "no match, no numbers");
        assert_eq!(
            FirmwareNumbers::default().compare("11.3.7", image),
            Some(Less),
            "without the pattern the 88 of sip88xx would count"
        );
        let whole = FirmwareNumbers::new(Some(r"\d+\.\d+")).unwrap();
        assert_eq!(whole.compare("v2.10 build 7", "2.10.3"), Some(Equal));
        assert!(FirmwareNumbers::new(Some("(")).is_err());
    }

    #[test]
    fn a_notify_event_must_be_one_line() {
        let with = |event: &str| {
            let text = format!("reboot_event = \"{event}\"\n{ACME}");
            let sources = BTreeMap::from([("acme.toml".to_string(), text)]);
            Catalog::from_sources(&sources)
        };
        let catalog = with("check-sync;reboot=true").unwrap();
        let a1 = catalog.model("acme-a1").unwrap();
        assert_eq!(a1.reboot_event.as_deref(), Some("check-sync;reboot=true"));
        assert_eq!(a1.resync_event, None);
        let err = with("check-sync\\r\\nX-Injected: 1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reboot_event: must be one non-empty line"),
            "{err}"
        );
        assert!(with("").is_err());
    }

    #[test]
    fn a_mac_in_a_folder_is_matched_on_the_paths_tail() {
        let folder = ACME.replace(
            "[[models]]\nid = \"acme-a1\"",
            "[[files]]\nname = \"book/{mac}/book.xml\"\ntemplate = \"book.xml\"\n[[models]]\nid = \"acme-a1\"",
        );
        let sources = BTreeMap::from([("acme.toml".to_string(), folder)]);
        let catalog = Catalog::from_sources(&sources).unwrap();
        let (tail, found) = catalog
            .match_path("/prov/Book/AABBCC000001/book.xml")
            .unwrap();
        assert_eq!(tail, "Book/AABBCC000001/book.xml");
        assert_eq!(found.mac.unwrap().lower(), "aabbcc000001");
        assert!(found.candidates[0].1.template.ends_with("book.xml"));
        let (tail, _) = catalog.match_path("/prov/aabbcc000001.cfg/").unwrap();
        assert_eq!(tail, "aabbcc000001.cfg", "a file name still matches alone");
        assert!(catalog.match_path("/book.xml").is_none());
        assert!(catalog.match_path("/book/aabbcc000001/other.xml").is_none());
        assert_eq!(
            catalog
                .identify_path("/book/aabbcc000001/book.xml")
                .vendor
                .as_deref(),
            Some("Acme")
        );
    }

    #[test]
    fn a_file_name_with_two_macs_is_refused() {
        let twice = ACME.replace("name = \"{mac}.cfg\"", "name = \"{mac}-{mac}.cfg\"");
        let sources = BTreeMap::from([("acme.toml".to_string(), twice)]);
        let err = Catalog::from_sources(&sources).unwrap_err().to_string();
        assert!(
            err.contains("{mac}-{mac}.cfg has {mac} more than once"),
            "{err}"
        );
    }

    #[test]
    fn the_builtin_catalog_loads() {
        let catalog = Catalog::builtin().unwrap();
        assert!(!catalog.models().is_empty());
    }
}
