//! An administrator's change as SQL: the statements each record change
//! runs in the change's transaction, and what it makes stale in the
//! nodes' caches.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::error::SqlState;

use super::cache::{Kind, Stale};
use super::{Param, borrowed, encode, text, user_key};
use crate::domain::mac::Mac;
use crate::domain::records::{Invalid, User};
use crate::store::audit::AuditEntry;
use crate::store::{Change, StoreError};

/// One record change as statements, owned for the backend's runtime.
pub(super) struct Write {
    statements: Vec<(String, Vec<Param>)>,
    /// The user a unique violation is about.
    user: Option<User>,
}

fn upsert(table: &str, key: &str) -> String {
    format!(
        "INSERT INTO {table} ({key}, doc) VALUES ($1, $2::text::json) ON CONFLICT ({key}) DO UPDATE SET doc = EXCLUDED.doc"
    )
}

fn delete(table: &str, key: &str) -> String {
    format!("DELETE FROM {table} WHERE {key} = $1")
}

impl Write {
    fn one(sql: String, params: Vec<Param>) -> Write {
        Write {
            statements: vec![(sql, params)],
            user: None,
        }
    }

    fn put(table: &str, key_column: &str, key: &str, record: &impl Serialize) -> Write {
        Write::one(
            upsert(table, key_column),
            vec![text(key), text(encode(record))],
        )
    }

    fn delete(table: &str, key_column: &str, key: &str) -> Write {
        Write::one(delete(table, key_column), vec![text(key)])
    }

    pub(super) fn of(change: &Change) -> Write {
        match change {
            Change::PutUser { new, .. } => Write {
                statements: vec![(
                    "INSERT INTO users (id, extension, sip_username, email, doc) \
                     VALUES ($1, $2, $3, $4, $5::text::json) ON CONFLICT (id) DO UPDATE SET \
                     extension = EXCLUDED.extension, sip_username = EXCLUDED.sip_username, \
                     email = EXCLUDED.email, doc = EXCLUDED.doc"
                        .into(),
                    vec![
                        user_key(new.id),
                        text(&new.extension),
                        text(&new.sip.username),
                        Box::new(new.email.clone()),
                        text(encode(new)),
                    ],
                )],
                user: Some(new.clone()),
            },
            Change::DeleteUser(user) => Write::one(delete("users", "id"), vec![user_key(user.id)]),
            Change::PutDevice { new, .. } => {
                Write::put("devices", "mac", &new.mac.to_string(), new)
            }
            Change::DeleteDevice(device) => {
                let mac = device.mac.to_string();
                Write {
                    statements: vec![
                        (delete("devices", "mac"), vec![text(&mac)]),
                        (delete("sightings", "mac"), vec![text(&mac)]),
                    ],
                    user: None,
                }
            }
            Change::PutSettings { scope, new, .. } => Write::put("settings", "scope", scope, new),
            Change::PutTemplate { key, new, .. } => Write::put("templates", "key", key, new),
            Change::DeleteTemplate { key, .. } => Write::delete("templates", "key", key),
            Change::PutLayout { new, .. } => Write::put("layouts", "name", &new.name, new),
            Change::DeleteLayout(layout) => Write::delete("layouts", "name", &layout.name),
            Change::DeleteDiscovered(mac) => Write::delete("discovered", "mac", &mac.to_string()),
            Change::PutToken(token) => Write::put("tokens", "name", &token.name, token),
            Change::DeleteToken(token) => Write::delete("tokens", "name", &token.name),
        }
    }

    /// Runs the statements in `tx`; a unique field another user holds is
    /// [`StoreError::Conflict`], as the sled backend says it.
    pub(super) async fn run(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        for (sql, params) in &self.statements {
            let statement = tx.prepare_cached(sql).await?;
            if let Err(e) = tx.execute(&statement, &borrowed(params)).await {
                return Err(self.conflict(&e).unwrap_or_else(|| e.into()));
            }
        }
        Ok(())
    }

    fn conflict(&self, e: &tokio_postgres::Error) -> Option<StoreError> {
        let refused = e
            .as_db_error()
            .filter(|db| db.code() == &SqlState::UNIQUE_VIOLATION)?;
        let user = self.user.as_ref()?;
        let (field, value) = match refused.constraint()? {
            "users_extension_key" => ("extension", &user.extension),
            "users_sip_username_key" => ("sip.username", &user.sip.username),
            "users_email_key" => ("email", user.email.as_ref()?),
            _ => return None,
        };
        Some(StoreError::Conflict(Invalid::new(
            field,
            format!("{value} is already used by another user"),
        )))
    }
}

/// What a change makes stale in every node's cache.
pub(super) fn stale_after(change: &Change) -> Vec<Stale> {
    let one = |kind, key: &str| Stale::One(kind, key.to_string());
    match change {
        Change::PutUser { new: user, .. } | Change::DeleteUser(user) => {
            vec![
                one(Kind::User, &user.id.to_string()),
                Stale::Every(Kind::UserBy),
            ]
        }
        Change::PutDevice { new, .. } => vec![one(Kind::Device, &new.mac.to_string())],
        Change::DeleteDevice(device) => {
            let mac = device.mac.to_string();
            vec![
                one(Kind::Device, &mac),
                one(Kind::Sighting, &mac),
                Stale::Every(Kind::LastGood),
            ]
        }
        Change::PutSettings { scope, .. } => vec![one(Kind::Settings, scope)],
        Change::PutTemplate { key, .. } | Change::DeleteTemplate { key, .. } => {
            vec![one(Kind::Template, key)]
        }
        Change::PutLayout { new: layout, .. } | Change::DeleteLayout(layout) => {
            vec![one(Kind::Layout, &layout.name)]
        }
        Change::DeleteDiscovered(_) => Vec::new(),
        Change::PutToken(token) | Change::DeleteToken(token) => vec![one(Kind::Token, &token.name)],
    }
}

/// The key of a last good file in the cache and in notifications.
pub(super) fn last_good_key(mac: Mac, file: &str) -> String {
    format!("{mac}/{file}")
}

/// The audit entries' ids and records, as `UNNEST` takes them.
pub(super) fn audit_rows(entries: &[AuditEntry]) -> (Vec<i64>, Vec<String>) {
    entries
        .iter()
        .map(|entry| (entry.id as i64, encode(entry)))
        .unzip()
}

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (id, doc) SELECT id, doc::json FROM UNNEST($1::bigint[], $2::text[]) AS t(id, doc)";

/// The last of each key in `records`: one statement may not write a row twice.
pub(super) fn last_of_each<K: std::hash::Hash + Eq + Clone, T>(
    records: &[T],
    key: impl Fn(&T) -> K,
) -> Vec<&T> {
    let mut last: HashMap<K, usize> = HashMap::new();
    for (at, record) in records.iter().enumerate() {
        last.insert(key(record), at);
    }
    let mut kept: Vec<usize> = last.into_values().collect();
    kept.sort_unstable();
    kept.into_iter().map(|at| &records[at]).collect()
}
