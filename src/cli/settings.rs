//! `deskboot settings show|set`: the global settings, a model's, or one
//! phone's own.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Connection;
use super::client::{AdminClient, print_json};
use super::patch::{CHANGES_HELP, merge_patch};

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
        #[arg(required = true, value_name = CHANGES_HELP)]
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
            let patch = merge_patch(&changes)?;
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
