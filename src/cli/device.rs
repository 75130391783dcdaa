//! `deskboot device add|list|show|status|set|rm`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Connection;
use super::client::{AdminClient, print_json};
use super::patch::CHANGES_HELP;

/// Device commands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a phone.
    Add {
        #[command(flatten)]
        connection: Connection,
        /// The phone's MAC, in any usual form.
        mac: String,
        /// The model id (see GET /api/v1/models), e.g. yealink-t46s.
        #[arg(long)]
        model: String,
        /// A user id for each line, in order (line 1 first).
        #[arg(long = "user")]
        users: Vec<u64>,
        /// A key as INDEX:TYPE[:VALUE[:LABEL]], e.g. 2:blf:102:Alice.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// A note for administrators.
        #[arg(long)]
        description: Option<String>,
    },
    /// List phones.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one phone as JSON.
    Show {
        #[command(flatten)]
        connection: Connection,
        mac: String,
    },
    /// When each phone last fetched its file, and whether it has its current
    /// one (all phones as a table, or one as JSON).
    Status {
        #[command(flatten)]
        connection: Connection,
        /// One phone's MAC [default: every phone].
        mac: Option<String>,
        /// Only the phones of this model.
        #[arg(long, conflicts_with = "mac")]
        model: Option<String>,
        /// Only the phones without their current file (or never seen).
        #[arg(long, conflicts_with = "mac")]
        stale: bool,
    },
    /// Change some of a phone's fields and show it, e.g. `description=Lobby`
    /// or `keys:=[]` (a list or object replaces the whole field).
    Set {
        #[command(flatten)]
        connection: Connection,
        mac: String,
        #[arg(required = true, value_name = CHANGES_HELP)]
        changes: Vec<String>,
    },
    /// Delete a phone.
    Rm {
        #[command(flatten)]
        connection: Connection,
        mac: String,
    },
}

pub async fn run(command: DeviceCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeviceCommand::Add {
            connection,
            mac,
            model,
            users,
            keys,
            description,
        } => {
            let keys = keys
                .iter()
                .map(|k| parse_key(k))
                .collect::<anyhow::Result<Vec<Value>>>()?;
            let lines: Vec<Value> = users.iter().map(|u| json!({ "user": u })).collect();
            let mut device = json!({ "mac": mac, "model": model, "lines": lines, "keys": keys });
            if let Some(description) = description {
                device["description"] = json!(description);
            }
            let created = AdminClient::new(&connection)?
                .call(Method::POST, "/api/v1/devices", Some(&device))
                .await?;
            print_json(&created)?;
        }
        DeviceCommand::List { connection } => {
            let devices = AdminClient::new(&connection)?
                .call(Method::GET, "/api/v1/devices", None)
                .await?;
            println!(
                "{:<12}  {:<20}  {:>5}  {:>4}",
                "MAC", "MODEL", "LINES", "KEYS"
            );
            for device in devices.as_array().into_iter().flatten() {
                let count = |field: &str| device[field].as_array().map_or(0, Vec::len);
                println!(
                    "{:<12}  {:<20}  {:>5}  {:>4}",
                    device["mac"].as_str().unwrap_or_default(),
                    device["model"].as_str().unwrap_or_default(),
                    count("lines"),
                    count("keys")
                );
            }
        }
        DeviceCommand::Status {
            connection,
            mac: Some(mac),
            ..
        } => {
            AdminClient::new(&connection)?
                .show(&format!("/api/v1/devices/{mac}/status"))
                .await?;
        }
        DeviceCommand::Status {
            connection,
            mac: None,
            model,
            stale,
        } => {
            let path = match model {
                Some(model) => format!("/api/v1/status?model={model}"),
                None => "/api/v1/status".to_string(),
            };
            let statuses = AdminClient::new(&connection)?
                .call(Method::GET, &path, None)
                .await?;
            print_statuses(statuses.as_array().into_iter().flatten(), stale);
        }
        DeviceCommand::Show { connection, mac } => {
            AdminClient::new(&connection)?
                .show(&format!("/api/v1/devices/{mac}"))
                .await?;
        }
        DeviceCommand::Set {
            connection,
            mac,
            changes,
        } => {
            AdminClient::new(&connection)?
                .patch(&format!("/api/v1/devices/{mac}"), &changes)
                .await?;
        }
        DeviceCommand::Rm { connection, mac } => {
            AdminClient::new(&connection)?
                .delete(&format!("/api/v1/devices/{mac}"), &format!("device {mac}"))
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The fleet status as a table: yes when the phone has its current file,
/// no when it has an older one, never when it has not fetched one.
fn print_statuses<'a>(statuses: impl Iterator<Item = &'a Value>, stale_only: bool) {
    println!(
        "{:<12}  {:<20}  {:<16}  {:<15}  {:<16}  CURRENT",
        "MAC", "MODEL", "LAST SEEN (UTC)", "IP", "FIRMWARE"
    );
    for status in statuses {
        let current = match status["current"].as_bool() {
            _ if status["last_seen"].is_null() => "never",
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        if stale_only && current == "yes" {
            continue;
        }
        let seen = status["last_seen"]
            .as_i64()
            .and_then(|at| jiff::Timestamp::from_second(at).ok())
            .map(|at| at.strftime("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let text = |field: &str| status[field].as_str().unwrap_or_default().to_string();
        println!(
            "{:<12}  {:<20}  {:<16}  {:<15}  {:<16}  {current}",
            text("mac"),
            text("model"),
            seen,
            text("ip"),
            text("firmware"),
        );
    }
}

/// `INDEX:TYPE[:VALUE[:LABEL]]` as the API's key object.
fn parse_key(spec: &str) -> anyhow::Result<Value> {
    let mut parts = spec.splitn(4, ':');
    let (Some(index), Some(kind)) = (parts.next(), parts.next()) else {
        bail!("--key {spec:?}: expected INDEX:TYPE[:VALUE[:LABEL]]");
    };
    let Ok(index) = index.parse::<u16>() else {
        bail!("--key {spec:?}: {index:?} is not a key number");
    };
    Ok(json!({
        "index": index,
        "type": kind,
        "value": parts.next().unwrap_or_default(),
        "label": parts.next().unwrap_or_default(),
    }))
}
