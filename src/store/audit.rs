//! The audit log: who changed what, and when, without secret values.
//!
//! Every store change made through [`Store::change`](crate::store::Store::change)
//! is described by an [`AuditEntry`] written in the same transaction as the
//! change itself, so the log can never miss a change or record one that did
//! not happen.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: u64,
    /// Unix time, seconds.
    pub at: u64,
    /// Who made it (the admin token's name).
    pub actor: String,
    /// What was done (`user.create`, `device.delete`, `template.put`, ...).
    pub action: String,
    /// What it was done to (`user/3`, `device/001565aabbcc`, `settings/global`).
    pub target: String,
    /// The fields that changed and their new values; secrets show as `"(changed)"`.
    pub changes: Value,
    /// The value each field in `changes` had (null: it did not exist),
    /// secrets masked; for a delete, the deleted record's identifying
    /// fields. Null in entries written before the log kept it, so older
    /// logs still load.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub before: Value,
}

/// Both sides of a change, as an [`AuditEntry`] records them (none: a
/// change that names no field).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// The fields that changed and their new values.
    pub changes: Value,
    /// The same fields' old values.
    pub before: Value,
}

impl Diff {
    /// A change described whole rather than walked (an action's outcome, a
    /// template's summary): every field of `new`, against the same field
    /// of `old` (none: nothing existed).
    pub fn of_fields(old: Option<&Value>, new: Value) -> Diff {
        let new = redact(new);
        let before = match &new {
            Value::Object(fields) => Value::Object(
                fields
                    .keys()
                    .map(|key| {
                        let was = old.and_then(|o| o.get(key)).cloned();
                        (key.clone(), redact(was.unwrap_or_default()))
                    })
                    .collect(),
            ),
            _ => Value::Null,
        };
        Diff {
            changes: new,
            before,
        }
    }
}

/// Field names whose values never reach the log.
const SECRET_FIELDS: [&str; 5] = ["password", "pin", "admin_password", "secret", "token"];

/// The fields that differ between `old` and `new` (dotted paths): in
/// `changes` the new value, or null when a field went away; in `before`
/// the old value, or null when the field is new. Secrets are masked on
/// both sides: a secret that existed shows as `"(set)"` before, and
/// `"(set)"` or `"(changed)"` after.
pub fn diff(old: &Value, new: &Value) -> Diff {
    let mut sides = Sides::default();
    sides.walk("", old, new);
    Diff {
        changes: Value::Object(sides.after),
        before: Value::Object(sides.before),
    }
}

/// The two sides [`diff`] fills in, keyed by the same dotted paths.
#[derive(Default)]
struct Sides {
    before: Map<String, Value>,
    after: Map<String, Value>,
}

impl Sides {
    fn walk(&mut self, path: &str, old: &Value, new: &Value) {
        if old == new {
            return;
        }
        let name = path.rsplit('.').next().unwrap_or(path);
        if SECRET_FIELDS.contains(&name) {
            let (was, now) = if old.is_null() {
                (Value::Null, "(set)")
            } else {
                (Value::String("(set)".into()), "(changed)")
            };
            self.record(path, was, Value::String(now.into()));
            return;
        }
        let empty = Map::new();
        let fields = |v: &'_ Value| match v {
            Value::Object(m) => Some(m.clone()),
            Value::Null => Some(empty.clone()),
            _ => None,
        };
        match (fields(old), fields(new)) {
            (Some(a), Some(b)) if old.is_object() || new.is_object() => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.walk(
                        &child,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    );
                }
            }
            _ => self.record(path, redact(old.clone()), redact(new.clone())),
        }
    }

    fn record(&mut self, path: &str, before: Value, after: Value) {
        self.before.insert(path.to_string(), before);
        self.after.insert(path.to_string(), after);
    }
}

/// Masks secret fields anywhere inside a value.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| {
                    if SECRET_FIELDS.contains(&k.as_str()) && !v.is_null() {
                        (k, Value::String("(set)".into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_name_fields_with_both_sides() {
        let old = json!({"name": "Ada", "sip": {"username": "u"}, "keys": [1], "gone": 3});
        let new = json!({"name": "Ada L", "sip": {"username": "v", "auth": "a"}, "keys": [1, 2]});
        let diff = diff(&old, &new);
        assert_eq!(
            diff.changes,
            json!({"name": "Ada L", "sip.username": "v", "sip.auth": "a", "keys": [1, 2], "gone": null})
        );
        assert_eq!(
            diff.before,
            json!({"name": "Ada", "sip.username": "u", "sip.auth": null, "keys": [1], "gone": 3})
        );
    }

    #[test]
    fn a_secret_never_shows_its_value_on_either_side() {
        let old = json!({"sip": {"password": "old-secret"}, "voicemail": null});
        let new = json!({"sip": {"password": "new-secret"}, "voicemail": {"mailbox": "1", "pin": "4321"}});
        let diff = diff(&old, &new);
        assert_eq!(
            diff.changes,
            json!({"sip.password": "(changed)", "voicemail.mailbox": "1", "voicemail.pin": "(set)"})
        );
        assert_eq!(
            diff.before,
            json!({"sip.password": "(set)", "voicemail.mailbox": null, "voicemail.pin": null})
        );
        let text = format!("{diff:?}");
        for secret in ["old-secret", "new-secret", "4321"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn a_value_that_turns_into_fields_is_masked_whole_on_both_sides() {
        let diff = diff(
            &json!({"sip": {"password": "a"}, "lines": ["x"]}),
            &json!({"sip": "none", "lines": [{"password": "b"}]}),
        );
        assert_eq!(
            diff.before,
            json!({"sip": {"password": "(set)"}, "lines": ["x"]})
        );
        assert_eq!(
            diff.changes,
            json!({"sip": "none", "lines": [{"password": "(set)"}]})
        );
    }

    #[test]
    fn fields_described_whole_take_their_old_values() {
        let diff = Diff::of_fields(
            Some(&json!({"version": 1, "bytes": 10, "active": true})),
            json!({"version": 2, "bytes": 12, "active": true}),
        );
        assert_eq!(
            diff.before,
            json!({"version": 1, "bytes": 10, "active": true})
        );
        let fresh = Diff::of_fields(None, json!({"scope": "read", "secret": "s"}));
        assert_eq!(fresh.before, json!({"scope": null, "secret": null}));
        assert_eq!(fresh.changes, json!({"scope": "read", "secret": "(set)"}));
    }

    #[test]
    fn an_entry_written_without_before_still_loads_and_writes_none() {
        let old = r#"{"id":1,"at":2,"actor":"a","action":"user.update","target":"user/1","changes":{"first_name":"Ada"}}"#;
        let entry: AuditEntry = serde_json::from_str(old).unwrap();
        assert_eq!(entry.before, Value::Null);
        assert_eq!(serde_json::to_string(&entry).unwrap(), old);
    }
}
