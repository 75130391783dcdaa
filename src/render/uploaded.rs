//! Uploaded templates: which phones each applies to, and the checks an
//! upload passes before it is stored.
//!
//! An administrator can replace a built-in template for every phone of a
//! model, or for one phone. An upload is compiled together with everything
//! else in force and rendered against real data (the phone's own, or a
//! sample phone of the model) before it is accepted, so a template that does
//! not parse or does not render is refused with its line and reason and
//! never reaches a phone. Tera has no access to files or the environment.

use crate::catalog::{ModelFile, PhoneModel};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Key, KeyType, LineAssignment, SipAccount, User, Voicemail};

/// The largest template an administrator may upload.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// How many versions of one template are kept.
pub const MAX_VERSIONS: usize = 50;

/// The store key of a model-wide upload for one of its files.
pub fn model_key(model_id: &str, file_name: &str) -> String {
    format!("model/{model_id}/{file_name}")
}

/// The store key of one phone's upload for one of its files.
pub fn device_key(mac: Mac, file_name: &str) -> String {
    format!("device/{mac}/{file_name}")
}

/// Whom an upload's store key says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadFor<'k> {
    /// Every phone of a model ([`model_key`]).
    Model {
        /// The model's id.
        model: &'k str,
        /// The file, as the descriptor names it.
        file: &'k str,
    },
    /// One phone ([`device_key`]).
    Device {
        /// The phone's MAC.
        mac: Mac,
        /// The file, as the descriptor names it.
        file: &'k str,
    },
}

/// Reads a key made by [`model_key`] or [`device_key`] (a file name may
/// hold slashes; a model id and a MAC do not).
pub fn upload_for(key: &str) -> Option<UploadFor<'_>> {
    let mut parts = key.splitn(3, '/');
    match (parts.next()?, parts.next()?, parts.next()?) {
        ("model", model, file) => Some(UploadFor::Model { model, file }),
        ("device", mac, file) => Some(UploadFor::Device {
            mac: mac.parse().ok()?,
            file,
        }),
        _ => None,
    }
}

/// The file of `model` that `name` means: the name as the descriptor writes
/// it (`{mac}.cfg`), or a name a phone of that model would ask for.
pub fn resolve_file<'m>(
    model: &'m PhoneModel,
    name: &str,
    matched: impl FnOnce(&str) -> Option<String>,
) -> Option<&'m ModelFile> {
    model
        .files
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .or_else(|| {
            let pattern = matched(name)?;
            model.files.iter().find(|f| f.name == pattern)
        })
}

/// A phone of `model` with sample users on its lines and one key of every
/// type it supports: what a model-wide upload must render for.
pub fn sample_device(model: &PhoneModel) -> (Device, Vec<User>) {
    let lines = usize::from(model.accounts.clamp(1, 2));
    let users: Vec<User> = (0..lines)
        .map(|i| {
            let extension = format!("{}", 100 + i);
            User {
                id: 1_000_000 + i as u64,
                extension: extension.clone(),
                first_name: "Sample".into(),
                last_name: format!("User {}", i + 1),
                email: None,
                sip: SipAccount {
                    username: extension.clone(),
                    auth_name: extension.clone(),
                    password: "sample-password".into(),
                },
                caller_id: Default::default(),
                voicemail: Some(Voicemail {
                    mailbox: extension,
                    pin: None,
                }),
                language: None,
                mobile: Some("+15550100".into()),
                dnd: false,
                call_waiting: true,
                in_directory: true,
            }
        })
        .collect();
    let mut keys: Vec<Key> = model
        .key_types
        .iter()
        .zip(1..=model.line_keys)
        .map(|(&kind, index)| sample_key(kind, None, index))
        .collect();
    let modules: Vec<String> = model
        .modules
        .first()
        .filter(|_| model.max_modules > 0)
        .map(|m| vec![m.id.clone()])
        .unwrap_or_default();
    if !modules.is_empty()
        && let Some(&kind) = model.key_types.iter().find(|k| **k != KeyType::Line)
    {
        keys.push(sample_key(kind, Some(1), 1));
    }
    let device = Device {
        mac: Mac::from_bytes([0, 0, 0, 0, 0, 1]),
        model: model.id.clone(),
        description: None,
        lines: users
            .iter()
            .map(|u| LineAssignment {
                user: u.id,
                label: None,
            })
            .collect(),
        keys,
        layout: None,
        modules,
        settings: Default::default(),
    };
    (device, users)
}

fn sample_key(kind: KeyType, module: Option<u8>, index: u16) -> Key {
    let value = match kind {
        KeyType::Url => "http://example.com/menu.xml",
        KeyType::Line | KeyType::None | KeyType::Dnd => "",
        _ => "101",
    };
    Key {
        module,
        index,
        kind,
        value: value.into(),
        label: format!("Sample {}", kind.name()),
        line: 1,
    }
}
