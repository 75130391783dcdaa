//! Changes to a record given on the command line, as the JSON merge patch
//! (RFC 7396) the API's PATCH takes: `KEY=TEXT` sets text, `KEY:=JSON` a
//! number, true/false, a list or null (null unsets), and a dotted KEY
//! (`sip.password`) reaches into a nested object.

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// The help line shared by the commands that take such changes.
pub const CHANGES_HELP: &str = "KEY=TEXT|KEY:=JSON";

/// One merge patch from `changes`, in order (a later change of the same
/// field wins).
pub fn merge_patch(changes: &[String]) -> anyhow::Result<Value> {
    let mut patch = Map::new();
    for change in changes {
        let (path, value) = parse_change(change)?;
        let mut object = &mut patch;
        let (last, parents) = path.split_last().context("no field name")?;
        for parent in parents {
            let slot = object
                .entry(parent.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            object = slot.as_object_mut().context("an object")?;
        }
        object.insert(last.to_string(), value);
    }
    Ok(Value::Object(patch))
}

/// A field's path and its new value.
fn parse_change(change: &str) -> anyhow::Result<(Vec<&str>, Value)> {
    // The first `=` ends the name, so values may hold `=` and `:=`.
    let Some((name, text)) = change.split_once('=') else {
        bail!("{change:?}: expected KEY=TEXT or KEY:=JSON");
    };
    let (key, value) = match name.strip_suffix(':') {
        Some(key) => {
            let value: Value = serde_json::from_str(text)
                .with_context(|| format!("{change:?}: after := comes JSON, e.g. 5061 or null"))?;
            (key, value)
        }
        None => (name, Value::String(text.to_string())),
    };
    let path: Vec<&str> = key.split('.').collect();
    if path.iter().any(|part| part.is_empty()) {
        bail!("{change:?}: a field name before the =, with no empty part");
    }
    Ok((path, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: &[&str]) -> anyhow::Result<Value> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        merge_patch(&args)
    }

    #[test]
    fn text_json_null_and_nested_fields_make_one_patch() {
        let patch = parse(&[
            "time_zone=Europe/Paris",
            "sip_port:=5061",
            "vlan_id:=null",
            "admin_password=a=b:=c",
            "sip.password=s3cret",
            "sip.auth_name=ada",
            "keys:=[]",
        ])
        .unwrap();
        assert_eq!(
            patch,
            json!({
                "time_zone": "Europe/Paris",
                "sip_port": 5061,
                "vlan_id": null,
                "admin_password": "a=b:=c",
                "sip": {"password": "s3cret", "auth_name": "ada"},
                "keys": [],
            })
        );
    }

    #[test]
    fn malformed_changes_are_refused_with_the_reason() {
        for (bad, reason) in [
            ("sip_port", "expected KEY=TEXT"),
            ("=x", "a field name"),
            ("sip..password=x", "no empty part"),
            ("sip_port:=five", "after := comes JSON"),
        ] {
            let error = format!("{:#}", parse(&[bad]).unwrap_err());
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }
}
