//! `deskboot settings show|set`: the global settings, a model's, or one
//! phone's own.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Connection;
use super::client::{AdminClient, print_json};

/// Settings commands.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the settings set at one level (global unless --model or --device).
    Show {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        level: Level,
    },
    /// Change some settings and show the result: `KEY=TEXT`, or `KEY:=JSON`
    /// for a number, true/false or null (null unsets), e.g.
    /// `time_zone=Europe/Paris sip_port:=5061 vlan_id:=null`.
    Set {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        level: Level,
        #[arg(required = true, value_name = "KEY=TEXT|KEY:=JSON")]
        changes: Vec<String>,
    },
}

/// Which settings: the global ones, a model's or a phone's (each overrides
/// the one before).
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
pub struct Level {
    /// A model's settings, inherited by its phones (e.g. yealink-t46s).
    #[arg(long)]
    model: Option<String>,
    /// One phone's own settings (its MAC).
    #[arg(long)]
    device: Option<String>,
}

pub async fn run(command: SettingsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SettingsCommand::Show { connection, level } => {
            let client = AdminClient::new(&connection)?;
            print_json(&settings_of(&client, &level).await?)?;
        }
        SettingsCommand::Set {
            connection,
            level,
            changes,
        } => {
            let patch = Value::Object(parse_changes(&changes)?);
            let client = AdminClient::new(&connection)?;
            let settings = match (&level.model, &level.device) {
                (_, Some(mac)) => {
                    let path = format!("/api/v1/devices/{mac}");
                    let body = json!({ "settings": patch });
                    client.call(Method::PATCH, &path, Some(&body)).await?["settings"].take()
                }
                (model, None) => {
                    let path = scope_path(model.as_deref());
                    client.call(Method::PATCH, &path, Some(&patch)).await?
                }
            };
            print_json(&settings)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings set at `level`.
async fn settings_of(client: &AdminClient, level: &Level) -> anyhow::Result<Value> {
    Ok(match (&level.model, &level.device) {
        (_, Some(mac)) => {
            let path = format!("/api/v1/devices/{mac}");
            client.call(Method::GET, &path, None).await?["settings"].take()
        }
        (model, None) => {
            client
                .call(Method::GET, &scope_path(model.as_deref()), None)
                .await?
        }
    })
}

fn scope_path(model: Option<&str>) -> String {
    match model {
        Some(id) => format!("/api/v1/models/{id}/settings"),
        None => "/api/v1/settings".to_string(),
    }
}

/// `KEY=TEXT` and `KEY:=JSON` arguments as one JSON merge patch.
fn parse_changes(changes: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut patch = Map::new();
    for change in changes {
        // The first `=` ends the name, so values may hold `=` and `:=`.
        let Some((name, text)) = change.split_once('=') else {
            bail!("{change:?}: expected KEY=TEXT or KEY:=JSON");
        };
        let (key, value) = match name.strip_suffix(':') {
            Some(key) => {
                let value: Value = serde_json::from_str(text).with_context(|| {
                    format!("{change:?}: after := comes JSON, e.g. 5061 or null")
                })?;
                (key, value)
            }
            None => (name, Value::String(text.to_string())),
        };
        if key.is_empty() {
            bail!("{change:?}: no setting name before the =");
        }
        patch.insert(key.to_string(), value);
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Value> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_changes(&args).map(Value::Object)
    }

    #[test]
    fn text_json_and_null_make_one_patch() {
        let patch = parse(&[
            "time_zone=Europe/Paris",
            "sip_port:=5061",
            "vlan_id:=null",
            "admin_password=a=b:=c",
        ])
        .unwrap();
        assert_eq!(
            patch,
            json!({
                "time_zone": "Europe/Paris",
                "sip_port": 5061,
                "vlan_id": null,
                "admin_password": "a=b:=c",
            })
        );
    }

    #[test]
    fn malformed_changes_are_refused_with_the_reason() {
        for (bad, reason) in [
            ("sip_port", "expected KEY=TEXT"),
            ("=x", "no setting name"),
            ("sip_port:=five", "after := comes JSON"),
        ] {
            let error = format!("{:#}", parse(&[bad]).unwrap_err());
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }
}
