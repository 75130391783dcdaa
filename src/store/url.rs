//! Where the store lives, as an operator writes it: `sled:<dir>` (or a
//! bare path) for the embedded database, `postgres://…` for a PostgreSQL
//! database that any number of deskboot nodes share.
//!
//! The URL may hold the database's password, so it is never shown whole:
//! [`StoreUrl`]'s `Display` and `Debug` print it with the password masked.

use std::fmt;
use std::path::PathBuf;

/// The mask that stands for a password wherever a URL is shown.
const MASK: &str = "********";

/// Where the store lives.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StoreUrl {
    /// The embedded sled database in a directory.
    Sled(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL).
    Postgres(String),
}

/// A store URL that names no store deskboot knows.
#[derive(Debug, thiserror::Error)]
#[error("store URL {0}: give sled:<directory>, a directory, or postgres://user@host/database")]
pub struct UnknownStoreUrl(String);

impl StoreUrl {
    /// Reads `sled:<dir>`, `postgres://…`, `postgresql://…` or a bare path.
    pub fn parse(text: &str) -> Result<StoreUrl, UnknownStoreUrl> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        let dir = text.strip_prefix("sled:").unwrap_or(text);
        if dir.is_empty() || dir.contains("://") {
            return Err(UnknownStoreUrl(redact(text)));
        }
        Ok(StoreUrl::Sled(PathBuf::from(dir)))
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = UnknownStoreUrl;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        StoreUrl::parse(&text)
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = UnknownStoreUrl;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(text)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// `url` with the password masked: the one in `user:password@`, and a
/// `password=` parameter.
pub(crate) fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut shown = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:{MASK}@{host}"),
                    None => authority.to_string(),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some(("password", _)) => format!("password={MASK}"),
                _ => param.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_names_its_backend() {
        assert_eq!(
            StoreUrl::parse("sled:/var/lib/deskboot/store").unwrap(),
            StoreUrl::Sled("/var/lib/deskboot/store".into())
        );
        assert_eq!(
            StoreUrl::parse("data/store").unwrap(),
            StoreUrl::Sled("data/store".into())
        );
        for url in ["postgres://db/deskboot", "postgresql://u@db:5433/deskboot"] {
            assert_eq!(
                StoreUrl::parse(url).unwrap(),
                StoreUrl::Postgres(url.into())
            );
        }
        let err = StoreUrl::parse("mysql://root:hunter2@db/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(StoreUrl::parse("sled:").is_err());
    }

    #[test]
    fn a_shown_url_never_holds_the_password() {
        let url = StoreUrl::parse("postgres://deskboot:s3cr%40t@db.example.com:5432/deskboot?sslmode=verify-full&password=other").unwrap();
        let shown = format!("{url} {url:?}");
        assert!(
            !shown.contains("s3cr") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("deskboot:********@db.example.com:5432/deskboot?sslmode=verify-full&password=********"), "{shown}");
        let no_password = "postgres://deskboot@db/deskboot";
        assert_eq!(redact(no_password), no_password);
    }
}
