//! The data directory, readable by the server's user alone.
//!
//! It holds the store (SIP passwords, and the last files served to phones
//! with the passwords in them, and the key phones' HTTP passwords derive
//! from) and `admin.token`: what
//! other users of the host may read there, they can use to register as any
//! phone or to administer the server. [`make_private`] creates the directory
//! mode 0700, and takes group and other permissions off it and off anything
//! in it that has them (a directory made by hand, or under a looser umask);
//! `deskboot serve` also sets the umask 077 before it opens anything, so
//! the files sled creates later (its snapshots) are private from the start.
//! Not for what the server reads from elsewhere (TLS keys, templates).

use std::io;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The permissions of group and others: none is wanted in the data directory.
#[cfg(unix)]
const GROUP_AND_OTHERS: u32 = 0o077;

/// Why the data directory cannot be made private.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The directory cannot be created, or its own mode not changed.
    #[error("cannot make the data directory {path} private: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Creates `dir` (mode 0700) or, when it exists, removes group and other
/// permissions from it and from everything under it.
pub fn make_private(dir: &Path) -> Result<(), DataDirError> {
    let failed = |source| DataDirError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    create(dir).map_err(failed)?;
    #[cfg(unix)]
    close_to_others(dir).map_err(failed)?;
    Ok(())
}

/// Removes group and other permissions from `dir` and everything under it,
/// and logs that it did. An entry it may not change (another user's
/// firmware image) is logged and left: `dir` itself shuts others out.
#[cfg(unix)]
fn close_to_others(dir: &Path) -> io::Result<()> {
    let directory = tighten(dir)?;
    let mut entries = 0usize;
    for path in entries_under(dir) {
        match tighten(&path) {
            Ok(true) => entries += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "cannot take group and other permissions off a file in the data directory"),
        }
    }
    if directory || entries > 0 {
        tracing::warn!(
            dir = %dir.display(),
            directory,
            entries,
            "the data directory was open to other users: group and other permissions removed"
        );
    }
    Ok(())
}

/// Creates `dir` and its missing parents, mode 0700 (under the umask).
fn create(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Removes group and other permissions from `path` (not following a
/// symbolic link, whose own mode means nothing); whether there were any.
#[cfg(unix)]
fn tighten(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode();
    if meta.file_type().is_symlink() || mode & GROUP_AND_OTHERS == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode & !GROUP_AND_OTHERS),
    )?;
    Ok(true)
}

/// Every file and directory under `dir`, depth first, without following
/// symbolic links; what cannot be listed is logged and skipped.
#[cfg(unix)]
fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let listing = match std::fs::read_dir(&next) {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(path = %next.display(), error = %e, "cannot list a directory in the data directory");
                continue;
            }
        };
        for entry in listing.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_new_directory_is_private() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_open_directory_and_what_it_holds_are_closed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let store = dir.join("store");
        std::fs::create_dir_all(store.join("blobs")).unwrap();
        std::fs::write(store.join("db"), b"passwords").unwrap();
        std::fs::write(dir.join("tool"), b"#!/bin/sh").unwrap();
        let outside = parent.path().join("outside");
        std::fs::write(&outside, b"not ours").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let set = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for (path, loose) in [
            (&dir, 0o755),
            (&store, 0o775),
            (&store.join("blobs"), 0o755),
            (&store.join("db"), 0o644),
            (&dir.join("tool"), 0o755),
            (&outside, 0o644),
        ] {
            set(path, loose);
        }

        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join("blobs")), 0o700);
        assert_eq!(mode(&store.join("db")), 0o600);
        assert_eq!(
            mode(&dir.join("tool")),
            0o700,
            "the owner keeps what it had"
        );
        assert_eq!(mode(&outside), 0o644, "a link is not followed");
    }
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
