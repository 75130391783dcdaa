//! The UI's scripts and stylesheet, embedded in the binary and served
//! under content-hashed names (`/assets/htmx-<12 hex>.js`), so a browser
//! may keep each for good and a new build is never mixed with an old file.
//!
//! Vendored, unchanged, with their SHA-256 in `ui/assets/SHA256SUMS`:
//! htmx 2.0.11 (`dist/htmx.min.js`, BSD Zero Clause) and SortableJS 1.15.7
//! (`Sortable.min.js`, MIT, its notice in the file). Both come from the npm
//! registry's packages; there is no build step.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{AssetPaths, Shared};
use crate::domain::secret::hex;

/// One embedded file and the name it is served under.
struct Asset {
    served_as: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    /// `stem-<first 12 hex of the SHA-256>.extension`.
    fn hashed(
        stem: &str,
        extension: &str,
        content_type: &'static str,
        bytes: &'static [u8],
    ) -> Self {
        let digest = hex(&Sha256::digest(bytes));
        Asset {
            served_as: format!("{stem}-{}.{extension}", &digest[..12]),
            content_type,
            bytes,
        }
    }

    fn path(&self) -> String {
        format!("/assets/{}", self.served_as)
    }
}

/// The UI's assets, hashed once when the UI starts.
pub(super) struct Assets {
    htmx: Asset,
    sortable: Asset,
    script: Asset,
    style: Asset,
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

impl Assets {
    /// The files built into the binary.
    pub(super) fn embedded() -> Self {
        Assets {
            htmx: Asset::hashed(
                "htmx",
                "js",
                JAVASCRIPT,
                include_bytes!("../../../ui/assets/htmx.min.js"),
            ),
            sortable: Asset::hashed(
                "sortable",
                "js",
                JAVASCRIPT,
                include_bytes!("../../../ui/assets/Sortable.min.js"),
            ),
            script: Asset::hashed(
                "deskboot",
                "js",
                JAVASCRIPT,
                include_bytes!("../../../ui/assets/deskboot.js"),
            ),
            style: Asset::hashed(
                "deskboot",
                "css",
                "text/css; charset=utf-8",
                include_bytes!("../../../ui/assets/deskboot.css"),
            ),
        }
    }

    /// Where the pages find them.
    pub(super) fn paths(&self) -> AssetPaths {
        AssetPaths {
            htmx: self.htmx.path(),
            sortable: self.sortable.path(),
            script: self.script.path(),
            style: self.style.path(),
        }
    }

    fn named(&self, name: &str) -> Option<&Asset> {
        [&self.htmx, &self.sortable, &self.script, &self.style]
            .into_iter()
            .find(|a| a.served_as == name)
    }
}

/// `GET /assets/{name}`: an asset by its hashed name, cacheable for good
/// (another content has another name); no session needed.
pub(super) async fn serve(State(ui): Shared, Path(name): Path<String>) -> Response {
    match ui.assets.named(&name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_files_match_their_recorded_sha256() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/assets");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, file) = line.split_once("  ").unwrap();
            let bytes = std::fs::read(dir.join(file)).unwrap();
            assert_eq!(hex(&Sha256::digest(&bytes)), sum, "{file}");
            checked += 1;
        }
        assert_eq!(checked, 2, "htmx and SortableJS");
    }

    #[test]
    fn assets_are_served_under_their_content_hash() {
        let assets = Assets::embedded();
        let digest = hex(&Sha256::digest(assets.htmx.bytes));
        assert_eq!(
            assets.paths().htmx,
            format!("/assets/htmx-{}.js", &digest[..12])
        );
        assert!(assets.named(&assets.htmx.served_as).is_some());
        assert!(assets.named("htmx.min.js").is_none());
    }
}
