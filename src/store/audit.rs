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
}

/// Field names whose values never reach the log.
const SECRET_FIELDS: [&str; 5] = ["password", "pin", "admin_password", "secret", "token"];

/// The fields that differ between `old` and `new` (dotted paths), with the
/// new value, or null when a field went away. Secrets are masked.
pub fn diff(old: &Value, new: &Value) -> Value {
    let mut out = Map::new();
    diff_into("", old, new, &mut out);
    Value::Object(out)
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Map<String, Value>) {
    if old == new {
        return;
    }
    let name = path.rsplit('.').next().unwrap_or(path);
    if SECRET_FIELDS.contains(&name) {
        let mask = if old.is_null() { "(set)" } else { "(changed)" };
        out.insert(path.to_string(), Value::String(mask.into()));
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
                diff_into(
                    &child,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => {
            out.insert(path.to_string(), redact(new.clone()));
        }
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
    fn diffs_name_fields_and_hide_secrets() {
        let old = json!({"name": "Ada", "sip": {"username": "u", "password": "a"}, "keys": [1]});
        let new =
            json!({"name": "Ada L", "sip": {"username": "u", "password": "b"}, "keys": [1, 2]});
        assert_eq!(
            diff(&old, &new),
            json!({"name": "Ada L", "sip.password": "(changed)", "keys": [1, 2]})
        );
        assert_eq!(
            diff(&json!({}), &json!({"sip": {"password": "x"}})),
            json!({"sip.password": "(set)"})
        );
    }
}
