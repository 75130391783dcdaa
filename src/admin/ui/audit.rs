//! `/audit`: who changed what, newest first, a page at a time; filtered
//! by actor, object (a target prefix), action and a time range, the
//! filters kept in the URL. Each entry opens to a table of field, before
//! and after.
//!
//! The log records each change's new values (its diff), not the old ones:
//! "before" is what the log last recorded for that field of that object,
//! read from the entries before it. A field first set before the log began
//! (a restore) shows no "before".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::session::Signed;
use super::{Chrome, Pager, Shared, UiResult, html, non_empty, query_value, show_time};
use crate::admin::api::{ApiResult, blocking};
use crate::domain::records::Invalid;
use crate::store::audit::AuditEntry;

/// Entries listed on one page.
const PER_PAGE: usize = 50;

/// One field an entry changed.
struct FieldChange {
    field: String,
    before: String,
    after: String,
}

/// One entry as the page lists it.
struct Entry {
    id: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    fields: Vec<FieldChange>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    query: AuditQuery,
    entries: Vec<Entry>,
    pager: Pager,
}

/// The filters, as the URL carries them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    /// The token's name, exactly.
    #[serde(default)]
    actor: String,
    /// The start of the target (`device/`, `device/001565aabbcc`).
    #[serde(default)]
    object: String,
    /// The action, exactly (`device.update`) or its kind (`device`).
    #[serde(default)]
    action: String,
    /// The first day (`YYYY-MM-DD`, UTC).
    #[serde(default)]
    from: String,
    /// The last day (`YYYY-MM-DD`, UTC).
    #[serde(default)]
    to: String,
    page: Option<usize>,
}

/// What the filters keep.
struct Filter {
    actor: Option<String>,
    object: Option<String>,
    action: Option<String>,
    /// Unix seconds, inclusive.
    from: u64,
    /// Unix seconds, inclusive.
    to: u64,
}

impl Filter {
    fn keeps(&self, entry: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == entry.actor)
            && self
                .object
                .as_ref()
                .is_none_or(|o| entry.target.starts_with(o.as_str()))
            && self.action.as_ref().is_none_or(|a| {
                entry.action == *a || entry.action.split('.').next() == Some(a.as_str())
            })
            && (self.from..=self.to).contains(&entry.at)
    }
}

impl AuditQuery {
    fn filter(&self) -> ApiResult<Filter> {
        Ok(Filter {
            actor: non_empty(&self.actor),
            object: non_empty(&self.object),
            action: non_empty(&self.action),
            from: day_start("from", &self.from)?.unwrap_or(0),
            to: day_start("to", &self.to)?.map_or(u64::MAX, |start| start + 24 * 60 * 60 - 1),
        })
    }

    fn url(&self) -> String {
        [
            ("actor", &self.actor),
            ("object", &self.object),
            ("action", &self.action),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}&", query_value(value.trim())))
        .collect()
    }
}

/// The Unix time a `YYYY-MM-DD` day starts in UTC; none for an empty field.
fn day_start(field: &str, day: &str) -> ApiResult<Option<u64>> {
    let Some(day) = non_empty(day) else {
        return Ok(None);
    };
    let invalid = || Invalid::new(field, format!("'{day}' is not a day (YYYY-MM-DD)"));
    let date: jiff::civil::Date = day.parse().map_err(|_| invalid())?;
    let start = jiff::tz::TimeZone::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .map_err(|_| invalid())?
        .as_second();
    Ok(Some(u64::try_from(start).unwrap_or(0)))
}

/// `GET /audit?actor=&object=&action=&from=&to=&page=`.
pub(super) async fn list(
    State(ui): Shared,
    Extension(who): Extension<Signed>,
    Query(query): Query<AuditQuery>,
) -> UiResult<Response> {
    let filter = query.filter()?;
    let admin = Arc::clone(&ui.admin);
    let base = format!("/audit?{}", query.url());
    let page = query.page;
    // Reads the whole log, to know each field's value before each change.
    let (entries, pager) = blocking(move || {
        let log = admin.store.audit(0, None)?;
        Ok(page_of(log, &filter, page, &base))
    })
    .await?;
    html(AuditPage {
        chrome: ui.chrome(&who, "audit", "Audit log"),
        query,
        entries,
        pager,
    })
}

/// The page of `log` (oldest first) that `filter` keeps, newest first,
/// each entry with its fields' values before and after.
fn page_of(
    log: Vec<AuditEntry>,
    filter: &Filter,
    page: Option<usize>,
    base: &str,
) -> (Vec<Entry>, Pager) {
    let mut known: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
    let mut kept = Vec::new();
    for entry in log {
        let fields = fields_of(&mut known, &entry);
        if filter.keeps(&entry) {
            kept.push(Entry {
                id: entry.id,
                at: show_time(entry.at),
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                fields,
            });
        }
    }
    kept.reverse();
    let (pager, range) = Pager::new(page, kept.len(), PER_PAGE, base);
    let shown = kept.drain(range).collect();
    (shown, pager)
}

/// What `entry` changed, field by field, against what `known` says each
/// field of its target was; `known` then holds the values after it.
fn fields_of(
    known: &mut HashMap<String, BTreeMap<String, Value>>,
    entry: &AuditEntry,
) -> Vec<FieldChange> {
    let state = known.entry(entry.target.clone()).or_default();
    if entry.action.ends_with(".create") {
        state.clear();
    }
    if entry.action.ends_with(".delete") {
        let gone = state
            .iter()
            .map(|(field, value)| FieldChange {
                field: field.clone(),
                before: shown(value),
                after: String::new(),
            })
            .collect();
        known.remove(&entry.target);
        return gone;
    }
    let Value::Object(changes) = &entry.changes else {
        return Vec::new();
    };
    changes
        .iter()
        .map(|(field, after)| {
            let before = state.get(field).map(shown).unwrap_or_default();
            if after.is_null() {
                state.remove(field);
            } else {
                state.insert(field.clone(), after.clone());
            }
            FieldChange {
                field: field.clone(),
                before,
                after: shown(after),
            }
        })
        .collect()
}

/// A value as a cell shows it: text as it is, anything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: u64, action: &str, target: &str, changes: Value) -> AuditEntry {
        AuditEntry {
            id,
            at: id,
            actor: "ops".into(),
            action: action.into(),
            target: target.into(),
            changes,
            before: Value::Null,
        }
    }

    #[test]
    fn before_is_what_the_log_last_recorded() {
        let mut known = HashMap::new();
        let created = entry(1, "user.create", "user/1", json!({"first_name": "Ada"}));
        let renamed = entry(2, "user.update", "user/1", json!({"first_name": "Grace"}));
        assert_eq!(fields_of(&mut known, &created)[0].before, "");
        let change = &fields_of(&mut known, &renamed)[0];
        assert_eq!(
            (change.before.as_str(), change.after.as_str()),
            ("Ada", "Grace")
        );
        let deleted = entry(3, "user.delete", "user/1", json!({"extension": "101"}));
        let gone = &fields_of(&mut known, &deleted)[0];
        assert_eq!((gone.before.as_str(), gone.after.as_str()), ("Grace", ""));
    }

    #[test]
    fn a_day_starts_at_midnight_utc() {
        assert_eq!(day_start("from", "1970-01-02").unwrap(), Some(86_400));
        assert!(day_start("from", "yesterday").is_err());
        assert_eq!(day_start("from", " ").unwrap(), None);
    }
}
