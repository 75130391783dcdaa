//! `/audit`: who changed what, newest first, a page at a time; filtered
//! by actor, object (a target prefix), action and a time range, the
//! filters kept in the URL. Each entry opens to a table of field, before
//! and after, both as the entry recorded them.
//!
//! The page reads the log from its newest end, as far as the page it shows
//! and one entry more (is there a next page?), so it does not count what
//! the filters keep. Only a filter that leaves too few among those reads
//! the whole log. An entry written before the log recorded before values
//! shows "—" for them: working them out would mean walking the whole log
//! for every page, and would still miss fields set before the log began.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::session::Signed;
use super::{Chrome, Shared, UiResult, html, non_empty, query_value, show_time};
use crate::admin::api::{ApiResult, blocking};
use crate::domain::records::Invalid;
use crate::store::audit::AuditEntry;
use crate::store::{Store, StoreError};

/// Entries listed on one page.
const PER_PAGE: usize = 50;

/// What a before cell shows for a value the entry did not record.
const UNRECORDED: &str = "—";

/// One field an entry changed, as a table row shows it.
pub(crate) struct FieldChange {
    /// The dotted path (`settings.sip_server`).
    pub field: String,
    /// Its value before (empty: unset; "—": not recorded).
    pub before: String,
    /// Its value after (empty: removed).
    pub after: String,
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
    pages: Pages,
}

/// Where the page shown stands: its number and its neighbours' links
/// (how many pages there are is not counted).
struct Pages {
    page: usize,
    previous: Option<String>,
    next: Option<String>,
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
    let page = query.page.unwrap_or(1).max(1);
    let (entries, pages) = blocking(move || {
        let wanted = page.saturating_mul(PER_PAGE);
        let (kept, more) = newest_kept(&admin.store, wanted, |e| filter.keeps(e))?;
        Ok(page_of(kept, more, page, &base))
    })
    .await?;
    html(AuditPage {
        chrome: ui.chrome(&who, "audit", "Audit log"),
        query,
        entries,
        pages,
    })
}

/// The newest `wanted` entries that `keep` keeps, newest first, and whether
/// the log holds more. Reads the newest `wanted + 1` entries, and the whole
/// log only when the filter leaves too few of those.
pub(super) fn newest_kept(
    store: &Store,
    wanted: usize,
    keep: impl Fn(&AuditEntry) -> bool,
) -> Result<(Vec<AuditEntry>, bool), StoreError> {
    let window = wanted.saturating_add(1);
    let newest = store.recent_audit(window)?;
    let whole_log = newest.len() < window;
    let mut kept: Vec<AuditEntry> = newest.into_iter().filter(|e| keep(e)).collect();
    if kept.len() < window && !whole_log {
        let log = store.audit(0, None)?;
        kept = log.into_iter().rev().filter(|e| keep(e)).collect();
    }
    let more = kept.len() > wanted;
    kept.truncate(wanted);
    Ok((kept, more))
}

/// Page `page` (from 1; past the last, the last) of `kept` (the newest
/// entries, up to that page), `more` telling whether any follow them.
fn page_of(kept: Vec<AuditEntry>, more: bool, page: usize, base: &str) -> (Vec<Entry>, Pages) {
    let page = page.min(kept.len().div_ceil(PER_PAGE).max(1));
    let start = (page - 1) * PER_PAGE;
    let has_next = more || kept.len() > start + PER_PAGE;
    let link = |p: usize| format!("{base}page={p}");
    let pages = Pages {
        page,
        previous: (page > 1).then(|| link(page - 1)),
        next: has_next.then(|| link(page + 1)),
    };
    let entries = kept
        .into_iter()
        .skip(start)
        .take(PER_PAGE)
        .map(|entry| Entry {
            fields: changed_fields(&entry),
            id: entry.id,
            at: show_time(entry.at),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
        })
        .collect();
    (entries, pages)
}

/// What `entry` changed, field by field, with the values it recorded
/// before; a delete lists the record as it was.
pub(crate) fn changed_fields(entry: &AuditEntry) -> Vec<FieldChange> {
    let recorded = !entry.before.is_null();
    let deleted = recorded && entry.action.ends_with(".delete");
    let Value::Object(fields) = (if deleted {
        &entry.before
    } else {
        &entry.changes
    }) else {
        return Vec::new();
    };
    fields
        .iter()
        .map(|(field, value)| {
            let (before, after) = if deleted {
                (shown(value), String::new())
            } else if recorded {
                (shown(&entry.before[field.as_str()]), shown(value))
            } else {
                (UNRECORDED.to_string(), shown(value))
            };
            FieldChange {
                field: field.clone(),
                before,
                after,
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

    fn entry(action: &str, changes: Value, before: Value) -> AuditEntry {
        AuditEntry {
            id: 1,
            at: 1,
            actor: "ops".into(),
            action: action.into(),
            target: "user/1".into(),
            changes,
            before,
        }
    }

    fn rows(entry: &AuditEntry) -> Vec<(String, String, String)> {
        let rows = changed_fields(entry).into_iter();
        rows.map(|f| (f.field, f.before, f.after)).collect()
    }

    fn row(field: &str, before: &str, after: &str) -> (String, String, String) {
        (field.into(), before.into(), after.into())
    }

    #[test]
    fn before_is_what_the_entry_recorded() {
        let renamed = entry(
            "user.update",
            json!({"first_name": "Grace", "email": null, "sip.password": "(changed)"}),
            json!({"first_name": "Ada", "email": "ada@example.com", "sip.password": "(set)"}),
        );
        assert_eq!(
            rows(&renamed),
            [
                row("email", "ada@example.com", ""),
                row("first_name", "Ada", "Grace"),
                row("sip.password", "(set)", "(changed)"),
            ]
        );
        let created = entry("user.create", json!({"keys": [1]}), json!({"keys": null}));
        assert_eq!(rows(&created), [row("keys", "", "[1]")]);
    }

    #[test]
    fn a_delete_lists_the_record_as_it_was() {
        let deleted = entry(
            "user.delete",
            json!({"extension": "101"}),
            json!({"extension": "101", "first_name": "Ada"}),
        );
        assert_eq!(
            rows(&deleted),
            [row("extension", "101", ""), row("first_name", "Ada", "")]
        );
    }

    #[test]
    fn an_entry_without_before_values_says_so() {
        let older = entry("user.update", json!({"first_name": "Grace"}), Value::Null);
        assert_eq!(rows(&older), [row("first_name", UNRECORDED, "Grace")]);
    }

    #[test]
    fn a_page_links_to_its_neighbours_without_counting_the_rest() {
        let kept: Vec<AuditEntry> = (0..PER_PAGE + 3)
            .map(|_| entry("user.update", json!({}), json!({})))
            .collect();
        let (shown, pages) = page_of(kept.clone(), false, 2, "/audit?");
        assert_eq!(shown.len(), 3);
        assert_eq!(
            (pages.page, pages.previous.as_deref(), pages.next),
            (2, Some("/audit?page=1"), None)
        );
        let (shown, pages) = page_of(kept.clone(), false, 9, "/audit?");
        assert_eq!((shown.len(), pages.page, pages.next), (3, 2, None));
        let (shown, pages) = page_of(kept[..PER_PAGE].to_vec(), true, 1, "/audit?");
        assert_eq!(shown.len(), PER_PAGE);
        assert_eq!(
            (pages.previous, pages.next.as_deref()),
            (None, Some("/audit?page=2"))
        );
    }

    #[test]
    fn a_day_starts_at_midnight_utc() {
        assert_eq!(day_start("from", "1970-01-02").unwrap(), Some(86_400));
        assert!(day_start("from", "yesterday").is_err());
        assert_eq!(day_start("from", " ").unwrap(), None);
    }
}
