//! Firmware images: files an administrator puts in `<data>/firmware/`,
//! served as they are (never rendered) over HTTP (with `Range`) and TFTP.
//!
//! A phone asks for `/firmware/<name>`, or for a bare `<name>` when it
//! fetches images relative to its boot server (Poly's `sip.ld`); a bare name
//! is only looked up when it is not a provisioning file. Only plain files
//! directly in the folder are served: no subfolders, no symbolic links, no
//! hidden files, so nothing else in the data directory can be reached.

use std::path::PathBuf;

/// The longest image name we look up.
const MAX_NAME_LEN: usize = 200;

/// The folder of firmware images.
#[derive(Debug, Clone)]
pub struct FirmwareDir {
    root: PathBuf,
}

/// One image found for a request.
#[derive(Debug, Clone)]
pub struct FirmwareImage {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its name, as requested.
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
}

impl FirmwareDir {
    /// The images under `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FirmwareDir { root: root.into() }
    }

    /// The image a request path names, if there is one. `bare_names` says
    /// whether a path outside `/firmware/` may name an image.
    pub fn find(&self, path: &str, bare_names: bool) -> Option<FirmwareImage> {
        let path = path.trim_start_matches('/');
        let name = match path.strip_prefix("firmware/") {
            Some(name) => name,
            None if bare_names => path,
            None => return None,
        };
        if !is_plain_name(name) {
            return None;
        }
        let full = self.root.join(name);
        let meta = std::fs::symlink_metadata(&full).ok()?;
        meta.is_file().then(|| FirmwareImage {
            path: full,
            name: name.to_string(),
            len: meta.len(),
        })
    }
}

/// One path component that cannot leave the folder or hide.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_plain_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("firmware");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("sip.ld"), b"image").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("admin.token"), b"secret").unwrap();
        let firmware = FirmwareDir::new(&root);

        assert_eq!(firmware.find("/firmware/sip.ld", false).unwrap().len, 5);
        assert!(firmware.find("/sip.ld", true).is_some());
        assert!(firmware.find("/sip.ld", false).is_none());
        for hostile in [
            "/firmware/../admin.token",
            "/firmware/..",
            "/firmware/sub",
            "/firmware/sub/x",
            "/firmware/.hidden",
            "/firmware/a\\b",
            "/firmware/a\u{0}",
            "/firmware/",
        ] {
            assert!(firmware.find(hostile, true).is_none(), "{hostile}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("admin.token"), root.join("link")).unwrap();
            assert!(firmware.find("/firmware/link", true).is_none());
        }
    }
}
