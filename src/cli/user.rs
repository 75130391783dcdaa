//! `deskboot user add|list|show|set|rm`.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Connection;
use super::client::{AdminClient, print_json};
use super::patch::CHANGES_HELP;

/// User commands.
// Parsed once per run: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the SIP password is generated when not given.
    Add {
        #[command(flatten)]
        connection: Connection,
        /// The extension (unique).
        #[arg(long)]
        extension: String,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// SIP username [default: the extension].
        #[arg(long)]
        sip_username: Option<String>,
        /// SIP auth name [default: the SIP username].
        #[arg(long)]
        auth_name: Option<String>,
        /// SIP password [default: generated].
        #[arg(long)]
        sip_password: Option<String>,
        /// Voicemail box number.
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        mobile: Option<String>,
        #[arg(long)]
        language: Option<String>,
    },
    /// List users.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one user as JSON.
    Show {
        #[command(flatten)]
        connection: Connection,
        id: u64,
    },
    /// Change some of a user's fields and show the user, e.g.
    /// `sip.password=N3w-secret` or `mobile:=null` (dotted names reach into
    /// `sip`, `caller_id` and `voicemail`).
    Set {
        #[command(flatten)]
        connection: Connection,
        id: u64,
        #[arg(required = true, value_name = CHANGES_HELP)]
        changes: Vec<String>,
    },
    /// Delete a user (not while a device uses it).
    Rm {
        #[command(flatten)]
        connection: Connection,
        id: u64,
    },
}

pub async fn run(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            connection,
            extension,
            first_name,
            last_name,
            email,
            sip_username,
            auth_name,
            sip_password,
            mailbox,
            mobile,
            language,
        } => {
            let mut user = Map::new();
            user.insert("extension".into(), json!(extension));
            let optional = [
                ("first_name", first_name),
                ("last_name", last_name),
                ("email", email),
                ("mobile", mobile),
                ("language", language),
            ];
            for (field, value) in optional {
                if let Some(value) = value {
                    user.insert(field.into(), json!(value));
                }
            }
            let mut sip = Map::new();
            let sip_fields = [
                ("username", sip_username),
                ("auth_name", auth_name),
                ("password", sip_password),
            ];
            for (field, value) in sip_fields {
                if let Some(value) = value {
                    sip.insert(field.into(), json!(value));
                }
            }
            user.insert("sip".into(), Value::Object(sip));
            if let Some(mailbox) = mailbox {
                user.insert("voicemail".into(), json!({ "mailbox": mailbox }));
            }
            let client = AdminClient::new(&connection)?;
            let created = client
                .call(Method::POST, "/api/v1/users", Some(&Value::Object(user)))
                .await?;
            print_json(&created)?;
        }
        UserCommand::List { connection } => {
            let users = AdminClient::new(&connection)?
                .call(Method::GET, "/api/v1/users", None)
                .await?;
            println!("{:>6}  {:<10}  {:<30}  SIP USER", "ID", "EXTENSION", "NAME");
            for user in users.as_array().into_iter().flatten() {
                let name = format!(
                    "{} {}",
                    user["first_name"].as_str().unwrap_or_default(),
                    user["last_name"].as_str().unwrap_or_default()
                );
                println!(
                    "{:>6}  {:<10}  {:<30}  {}",
                    user["id"],
                    user["extension"].as_str().unwrap_or_default(),
                    name.trim(),
                    user["sip"]["username"].as_str().unwrap_or_default()
                );
            }
        }
        UserCommand::Show { connection, id } => {
            AdminClient::new(&connection)?
                .show(&format!("/api/v1/users/{id}"))
                .await?;
        }
        UserCommand::Set {
            connection,
            id,
            changes,
        } => {
            AdminClient::new(&connection)?
                .patch(&format!("/api/v1/users/{id}"), &changes)
                .await?;
        }
        UserCommand::Rm { connection, id } => {
            AdminClient::new(&connection)?
                .delete(&format!("/api/v1/users/{id}"), &format!("user {id}"))
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
