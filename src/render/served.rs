//! A rendered file, as the cache keeps it and the transports send it.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::catalog::{ModelFile, PhoneModel};
use crate::domain::mac::Mac;

/// A rendered file, ready to send.
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// The bytes.
    pub body: Bytes,
    /// HTTP Content-Type.
    pub content_type: String,
    /// A strong ETag (quoted) computed from the bytes.
    pub etag: String,
    /// The model the file was rendered for.
    pub model: String,
    /// The device's MAC, for a per-device file.
    pub mac: Option<Mac>,
}

impl ServedFile {
    /// The file `model` asks for as `file`, with its ETag.
    pub fn new(body: Vec<u8>, model: &PhoneModel, file: &ModelFile, mac: Option<Mac>) -> Self {
        let digest = Sha256::digest(&body);
        let etag = crate::domain::secret::hex(&digest[..12]);
        ServedFile {
            body: Bytes::from(body),
            content_type: file.content_type.clone(),
            etag: format!("\"{etag}\""),
            model: model.id.clone(),
            mac,
        }
    }
}
