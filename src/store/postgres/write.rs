//! An administrator's change as SQL: the statements each record change
//! runs in the change's transaction, and what it makes stale in the
//! nodes' caches.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;

use super::cache::{Kind, Stale};
use super::encode;
use crate::domain::mac::Mac;
use crate::domain::records::{Invalid, User};
use crate::store::audit::AuditEntry;
use crate::store::{Change, StoreError};

/// One statement of a change's transaction. Consecutive record changes of
/// one kind become one statement of many rows: an import of 20,000 users
/// and phones is two statements, not 40,000 round trips.
pub(super) enum Write {
    /// Records put into a table under their key, as JSON.
    Put {
        table: &'static str,
        key: &'static str,
        rows: Vec<(String, String)>,
    },
    /// Users put, with the unique fields the table keeps as columns.
    PutUsers(Vec<User>),
    /// Keys deleted from each of `tables`, in order.
    Delete {
        tables: &'static [&'static str],
        key: &'static str,
        keys: Vec<String>,
    },
    /// Users deleted, by id.
    DeleteUsers(Vec<i64>),
}

impl Write {
    /// The statements that apply `changes`, in order.
    pub(super) fn all(changes: &[Change]) -> Vec<Write> {
        let mut writes: Vec<Write> = Vec::new();
        for change in changes {
            let write = Write::of(change);
            let left = match writes.last_mut() {
                Some(last) => last.absorb(write),
                None => Some(write),
            };
            writes.extend(left);
        }
        writes
    }

    fn of(change: &Change) -> Write {
        let put = |table, key, name: String, record: String| Write::Put {
            table,
            key,
            rows: vec![(name, record)],
        };
        let delete = |tables, key, name: String| Write::Delete {
            tables,
            key,
            keys: vec![name],
        };
        match change {
            Change::PutUser { new, .. } => Write::PutUsers(vec![new.clone()]),
            Change::DeleteUser(user) => Write::DeleteUsers(vec![user.id as i64]),
            Change::PutDevice { new, .. } => {
                put("devices", "mac", new.mac.to_string(), encode(new))
            }
            // Its last good files go with it (the foreign key cascades).
            Change::DeleteDevice(device) => {
                delete(&["devices", "sightings"], "mac", device.mac.to_string())
            }
            Change::PutSettings { scope, new, .. } => {
                put("settings", "scope", scope.clone(), encode(new))
            }
            Change::PutTemplate { key, new, .. } => {
                put("templates", "key", key.clone(), encode(new))
            }
            Change::DeleteTemplate { key, .. } => delete(&["templates"], "key", key.clone()),
            Change::PutLayout { new, .. } => put("layouts", "name", new.name.clone(), encode(new)),
            Change::DeleteLayout(layout) => delete(&["layouts"], "name", layout.name.clone()),
            Change::DeleteDiscovered(mac) => delete(&["discovered"], "mac", mac.to_string()),
            Change::PutToken(token) => put("tokens", "name", token.name.clone(), encode(token)),
            Change::DeleteToken(token) => delete(&["tokens"], "name", token.name.clone()),
        }
    }

    /// Joins `next` to this statement when it is of the same kind;
    /// gives it back otherwise.
    fn absorb(&mut self, next: Write) -> Option<Write> {
        match (self, next) {
            (
                Write::Put { table, rows, .. },
                Write::Put {
                    table: next,
                    rows: more,
                    ..
                },
            ) if *table == next => rows.extend(more),
            (
                Write::Delete { tables, keys, .. },
                Write::Delete {
                    tables: next,
                    keys: more,
                    ..
                },
            ) if *tables == next => keys.extend(more),
            (Write::PutUsers(users), Write::PutUsers(more)) => users.extend(more),
            (Write::DeleteUsers(ids), Write::DeleteUsers(more)) => ids.extend(more),
            (_, next) => return Some(next),
        }
        None
    }

    /// How many records it writes.
    pub(super) fn len(&self) -> usize {
        match self {
            Write::Put { rows, .. } => rows.len(),
            Write::PutUsers(users) => users.len(),
            Write::Delete { keys, .. } => keys.len(),
            Write::DeleteUsers(ids) => ids.len(),
        }
    }

    /// Runs it in `tx`; a unique field another user holds is
    /// [`StoreError::Conflict`], naming the field and value as the sled
    /// backend does.
    pub(super) async fn run(
        &self,
        tx: &mut deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Write::Put { table, key, rows } => {
                // One statement may not write a row twice: the last wins.
                let (keys, docs): (Vec<String>, Vec<String>) =
                    last_of_each(rows, |(key, _)| key.clone())
                        .into_iter()
                        .cloned()
                        .unzip();
                let sql = format!(
                    "INSERT INTO {table} ({key}, doc) SELECT k, d::json \
                     FROM UNNEST($1::text[], $2::text[]) AS t(k, d) \
                     ON CONFLICT ({key}) DO UPDATE SET doc = EXCLUDED.doc"
                );
                tx.execute(&sql, &[&keys, &docs]).await?;
            }
            Write::PutUsers(users) => put_users(tx, users).await?,
            Write::Delete { tables, key, keys } => {
                for table in *tables {
                    let sql = format!("DELETE FROM {table} WHERE {key} = ANY($1)");
                    tx.execute(&sql, &[keys]).await?;
                }
            }
            Write::DeleteUsers(ids) => {
                tx.execute("DELETE FROM users WHERE id = ANY($1)", &[ids])
                    .await?;
            }
        }
        Ok(())
    }
}

const PUT_USERS: &str = "INSERT INTO users (id, extension, sip_username, email, doc) \
    SELECT id, extension, sip_username, email, doc::json \
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
        AS t(id, extension, sip_username, email, doc) \
    ON CONFLICT (id) DO UPDATE SET extension = EXCLUDED.extension, \
        sip_username = EXCLUDED.sip_username, email = EXCLUDED.email, doc = EXCLUDED.doc";

/// Puts `users` in one statement. When a unique field clashes, the batch
/// is undone to a savepoint and the users are put one by one, so the
/// refusal names the user and field the sled backend would.
async fn put_users(
    tx: &mut deadpool_postgres::Transaction<'_>,
    users: &[User],
) -> Result<(), StoreError> {
    let batch = last_of_each(users, |user| user.id);
    let attempt = tx.savepoint("users").await?;
    match execute_put_users(&attempt, &batch).await {
        Ok(()) => return Ok(attempt.commit().await?),
        Err(e) if unique_violation(&e).is_none() => return Err(e.into()),
        Err(_) => attempt.rollback().await?,
    }
    for user in batch {
        if let Err(e) = execute_put_users(tx, &[user]).await {
            return Err(conflict(&e, user).unwrap_or_else(|| e.into()));
        }
    }
    Ok(())
}

/// Runs [`PUT_USERS`] for `users`.
async fn execute_put_users(
    tx: &deadpool_postgres::Transaction<'_>,
    users: &[&User],
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<i64> = users.iter().map(|u| u.id as i64).collect();
    let extensions: Vec<&str> = users.iter().map(|u| u.extension.as_str()).collect();
    let usernames: Vec<&str> = users.iter().map(|u| u.sip.username.as_str()).collect();
    let emails: Vec<Option<&str>> = users.iter().map(|u| u.email.as_deref()).collect();
    let docs: Vec<String> = users.iter().map(encode).collect();
    tx.execute(PUT_USERS, &[&ids, &extensions, &usernames, &emails, &docs])
        .await?;
    Ok(())
}

/// The constraint a unique violation broke.
fn unique_violation(e: &tokio_postgres::Error) -> Option<&str> {
    let refused = e
        .as_db_error()
        .filter(|db| db.code() == &SqlState::UNIQUE_VIOLATION)?;
    refused.constraint()
}

/// A unique field of `user` that another user holds, as the store says it.
fn conflict(e: &tokio_postgres::Error, user: &User) -> Option<StoreError> {
    let (field, value) = match unique_violation(e)? {
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
