//! When each admin token was last used, without a store write per request:
//! a use is noted in memory (one short lock, no allocation once the name
//! is known) and the server's flush tick writes the uses noted since the
//! last tick in one write, as it does phones' sightings.
//!
//! The uses live in one meta entry (a JSON map from token name to Unix
//! time), not in the tokens' records: a record changes only through
//! [`Store::change`], which writes an audit entry and moves the store's
//! generation (every cached phone file goes stale), neither of which a
//! read should do, and writing a record outside a change could bring back
//! a token revoked meanwhile. The bootstrap token is noted as `admin`, a
//! name no named token may take. A use older than a token's creation was
//! made with an earlier token of the same name, and is not that token's.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{Store, StoreError};

/// The meta entry that holds every token's latest use.
const LAST_USED_KEY: &str = "token_last_used";

/// The name the bootstrap token's uses are noted under.
pub const BOOTSTRAP_NAME: &str = "admin";

/// Token uses noted since the last flush, by token name (Unix seconds).
#[derive(Debug, Default)]
pub struct TokenUses {
    pending: Mutex<HashMap<String, u64>>,
}

impl TokenUses {
    /// Notes that token `name` was used at `at`.
    pub fn note(&self, name: &str, at: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(name) {
            Some(latest) => *latest = (*latest).max(at),
            None => {
                pending.insert(name.to_string(), at);
            }
        }
    }

    /// Writes the uses noted since the last call into the store, in one
    /// write; names that are no token any more are dropped from the entry.
    /// On failure the uses stay noted for the next call.
    pub fn persist(&self, store: &Store) -> Result<(), StoreError> {
        let noted = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if noted.is_empty() {
            return Ok(());
        }
        let written = stored(store).and_then(|mut all| {
            merge(&mut all, &noted);
            let tokens = store.tokens()?;
            all.retain(|name, _| name == BOOTSTRAP_NAME || tokens.iter().any(|t| t.name == *name));
            let bytes = serde_json::to_vec(&all).unwrap_or_default();
            store.put_meta(LAST_USED_KEY, &bytes)
        });
        if written.is_err() {
            for (name, at) in noted {
                self.note(&name, at);
            }
        }
        written
    }

    /// Every token's latest use, by name: those written and those noted
    /// since.
    pub fn latest(&self, store: &Store) -> Result<HashMap<String, u64>, StoreError> {
        let mut all = stored(store)?;
        merge(
            &mut all,
            &self.pending.lock().unwrap_or_else(|e| e.into_inner()),
        );
        Ok(all)
    }
}

/// The uses the store holds; none when the entry is missing or unreadable
/// (it only says when tokens were used: losing it loses nothing else).
fn stored(store: &Store) -> Result<HashMap<String, u64>, StoreError> {
    Ok(store
        .meta(LAST_USED_KEY)?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

/// Keeps the later of each name's uses.
fn merge(into: &mut HashMap<String, u64>, uses: &HashMap<String, u64>) {
    for (name, at) in uses {
        let latest = into.entry(name.clone()).or_insert(*at);
        *latest = (*latest).max(*at);
    }
}

/// The latest use of a token made at `created`, if `used` (its name's
/// latest use) was made with it rather than with an earlier token of the
/// same name.
pub fn last_use_since(used: Option<u64>, created: u64) -> Option<u64> {
    used.filter(|at| *at >= created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::auth::new_named_token;
    use crate::domain::records::Scope;
    use crate::store::Change;

    #[tokio::test]
    async fn uses_are_written_once_a_flush_and_only_for_tokens_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (ops, _) = new_named_token("ops", Scope::Read).unwrap();
        let put = vec![Change::PutToken(ops)];
        store
            .change("test", |_| Ok::<_, StoreError>((put, ())))
            .await
            .unwrap();
        let uses = TokenUses::default();
        uses.note("ops", 10);
        uses.note("ops", 30);
        uses.note("ops", 20);
        uses.note("gone", 5);
        uses.note(BOOTSTRAP_NAME, 7);
        assert_eq!(
            uses.latest(&store).unwrap()["ops"],
            30,
            "seen before a flush"
        );
        uses.persist(&store).unwrap();
        let after = TokenUses::default().latest(&store).unwrap();
        let expected = HashMap::from([("ops".to_string(), 30), (BOOTSTRAP_NAME.to_string(), 7)]);
        assert_eq!(after, expected);
    }

    #[test]
    fn a_use_before_a_token_was_made_is_not_its_own() {
        assert_eq!(last_use_since(Some(99), 100), None);
        assert_eq!(last_use_since(Some(100), 100), Some(100));
        assert_eq!(last_use_since(None, 100), None);
    }
}
