//! `deskboot clone|import|export|restore|template|token|resync|discovered|ban`: the
//! administrator's weekly operations, as clients of the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Connection;
use super::client::{AdminClient, print_json, refusal};

/// Which template: for every phone of a model, or for one phone.
#[derive(Debug, clap::Args)]
pub struct TemplateSlot {
    #[command(flatten)]
    connection: Connection,
    /// A model id (e.g. yealink-t46s) or a phone's MAC.
    target: String,
    /// The file, as the phone asks for it (001565aabbcc.cfg) or as the model names it ({mac}.cfg).
    file: String,
}

impl TemplateSlot {
    fn path(&self, suffix: &str) -> String {
        let scope = if self.target.parse::<deskboot::domain::mac::Mac>().is_ok() {
            "devices"
        } else {
            "models"
        };
        let file = self.file.replace('{', "%7B").replace('}', "%7D");
        format!("/api/v1/templates/{scope}/{}/{file}{suffix}", self.target)
    }
}

/// Template commands.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Print the template in force (uploaded or built-in).
    Get(TemplateSlot),
    /// Upload a template from a file; it is checked before it is used.
    Put {
        #[command(flatten)]
        slot: TemplateSlot,
        /// The Tera source.
        source: PathBuf,
    },
    /// Go back to the built-in template (the history is kept).
    Rm(TemplateSlot),
    /// List the uploaded versions.
    History(TemplateSlot),
    /// Make an earlier version current again.
    Rollback {
        #[command(flatten)]
        slot: TemplateSlot,
        /// The version to bring back.
        version: u32,
    },
}

pub async fn template(command: TemplateCommand) -> anyhow::Result<ExitCode> {
    match command {
        TemplateCommand::Get(slot) => {
            let shown = client(&slot.connection)?
                .call(Method::GET, &slot.path(""), None)
                .await?;
            eprintln!("# origin: {}", shown["origin"].as_str().unwrap_or("?"));
            print!("{}", shown["source"].as_str().unwrap_or_default());
        }
        TemplateCommand::Put { slot, source } => {
            let text = std::fs::read_to_string(&source)
                .with_context(|| format!("cannot read {}", source.display()))?;
            let answer = client(&slot.connection)?
                .send_text(Method::PUT, &slot.path(""), text)
                .await?;
            print_json(&answer)?;
        }
        TemplateCommand::Rm(slot) => {
            client(&slot.connection)?
                .call(Method::DELETE, &slot.path(""), None)
                .await?;
            println!("back to the built-in template");
        }
        TemplateCommand::History(slot) => {
            let history = client(&slot.connection)?
                .call(Method::GET, &slot.path("/history"), None)
                .await?;
            print_json(&history)?;
        }
        TemplateCommand::Rollback { slot, version } => {
            let answer = client(&slot.connection)?
                .call(
                    Method::POST,
                    &slot.path("/rollback"),
                    Some(&json!({"version": version})),
                )
                .await?;
            print_json(&answer)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `deskboot clone OLD NEW [--replace] [--overwrite] [--model M]`.
#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    #[command(flatten)]
    connection: Connection,
    /// The phone whose configuration is copied.
    from: String,
    /// The new phone's MAC.
    to: String,
    /// Move the configuration: the old phone gets nothing any more.
    #[arg(long)]
    replace: bool,
    /// Overwrite an existing device at the new MAC.
    #[arg(long)]
    overwrite: bool,
    /// The new phone's model, if different (it must be compatible).
    #[arg(long)]
    model: Option<String>,
}

pub async fn clone(args: CloneArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "to": args.to,
        "mode": if args.replace { "replace" } else { "copy" },
        "overwrite": args.overwrite,
    });
    if let Some(model) = args.model {
        body["model"] = json!(model);
    }
    let device = client(&args.connection)?
        .call(
            Method::POST,
            &format!("/api/v1/devices/{}/clone", args.from),
            Some(&body),
        )
        .await?;
    print_json(&device)?;
    Ok(ExitCode::SUCCESS)
}

/// `deskboot resync MAC [--port N] [--reboot]`.
#[derive(Debug, clap::Args)]
pub struct ResyncArgs {
    #[command(flatten)]
    connection: Connection,
    /// The phone's MAC.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    mac: Option<String>,
    /// Every phone that has fetched its files, paced (the server answers
    /// with the plan at once and sends in the background).
    #[arg(long)]
    all: bool,
    /// With --all: only the phones of this model.
    #[arg(long, requires = "all")]
    model: Option<String>,
    /// With --all: NOTIFYs per second (1 to 1000; default 50).
    #[arg(long, requires = "all")]
    per_second: Option<u32>,
    /// The phones' SIP port, when it is not 5060.
    #[arg(long)]
    port: Option<u16>,
    /// Reboot the phones rather than only have them fetch their files
    /// (refused for a vendor with no known reboot event).
    #[arg(long)]
    reboot: bool,
}

pub async fn resync(args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    let fields = [
        ("port", args.port.map(|p| json!(p))),
        ("model", args.model.map(|m| json!(m))),
        ("per_second", args.per_second.map(|n| json!(n))),
        ("reboot", args.reboot.then_some(json!(true))),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            body[field] = value;
        }
    }
    let path = match &args.mac {
        Some(mac) => format!("/api/v1/devices/{mac}/resync"),
        None => "/api/v1/resync".to_string(),
    };
    let outcome = client(&args.connection)?
        .call(Method::POST, &path, Some(&body))
        .await?;
    print_json(&outcome)?;
    Ok(ExitCode::SUCCESS)
}

/// `deskboot import FILE [--dry-run]`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    connection: Connection,
    /// A CSV file (deskboot, Wazo or XiVO layout).
    file: PathBuf,
    /// Check everything, write nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let path = format!("/api/v1/import?dry_run={}", args.dry_run);
    let client = client(&args.connection)?;
    match client.send_with_progress(&path, "text/csv", text).await? {
        (status, answer) if status.is_success() => {
            print_json(&answer)?;
            let nothing_written = if args.dry_run {
                "dry run, nothing written: "
            } else {
                ""
            };
            eprintln!("{nothing_written}{}", import_counts(&answer));
            Ok(ExitCode::SUCCESS)
        }
        (_, answer) => {
            eprintln!("{}", answer["error"].as_str().unwrap_or("import refused"));
            for row in answer["rows"].as_array().into_iter().flatten() {
                eprintln!(
                    "  line {}: {}: {}",
                    row["line"],
                    row["field"].as_str().unwrap_or_default(),
                    row["error"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// An import's answer for a person, beside the JSON a script reads:
/// `users: 1 created, 2 updated, 0 unchanged; devices: ...`.
fn import_counts(answer: &Value) -> String {
    let counts = |kind: &str| {
        format!(
            "{kind}: {} created, {} updated, {} unchanged",
            answer[kind],
            answer[format!("{kind}_updated")],
            answer[format!("{kind}_unchanged")]
        )
    };
    format!("{}; {}", counts("users"), counts("devices"))
}

/// `deskboot export > backup.json`.
pub async fn export(connection: Connection) -> anyhow::Result<ExitCode> {
    let backup = client(&connection)?
        .call(Method::GET, "/api/v1/export", None)
        .await?;
    print_json(&backup)?;
    Ok(ExitCode::SUCCESS)
}

/// `deskboot restore FILE [--replace]`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    connection: Connection,
    /// A file written by `deskboot export`.
    file: PathBuf,
    /// Replace everything in the store.
    #[arg(long)]
    replace: bool,
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    serde_json::from_str::<Value>(&text).context("the backup is not JSON")?;
    let path = format!("/api/v1/restore?replace={}", args.replace);
    let (status, answer) = client(&args.connection)?
        .send_with_progress(&path, "application/json", text)
        .await?;
    if !status.is_success() {
        return Err(refusal(status, &answer, "restore refused"));
    }
    print_json(&answer)?;
    Ok(ExitCode::SUCCESS)
}

fn client(connection: &Connection) -> anyhow::Result<AdminClient> {
    AdminClient::new(connection)
}

/// Named admin token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once.
    Add {
        #[command(flatten)]
        connection: Connection,
        /// Its name (lower-case letters, digits, '-'): the audit log's actor.
        name: String,
        /// What it may do: `read` (GET, secrets masked, e.g. for
        /// monitoring), `secrets` (GET, secrets shown) or `write` (everything).
        #[arg(long, default_value = "write", value_parser = ["read", "secrets", "write"])]
        scope: String,
    },
    /// List the tokens (names and scopes, never secrets).
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke a token at once.
    Rm {
        #[command(flatten)]
        connection: Connection,
        /// Its name.
        name: String,
    },
}

pub async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let (connection, method, path, body) = match command {
        TokenCommand::Add {
            connection,
            name,
            scope,
        } => {
            let body = json!({"name": name, "scope": scope});
            (
                connection,
                Method::POST,
                "/api/v1/tokens".into(),
                Some(body),
            )
        }
        TokenCommand::List { connection } => {
            (connection, Method::GET, "/api/v1/tokens".into(), None)
        }
        TokenCommand::Rm { connection, name } => (
            connection,
            Method::DELETE,
            format!("/api/v1/tokens/{name}"),
            None,
        ),
    };
    call_and_print(&connection, method, &path, body).await
}

/// Phones that asked for their files but are not provisioned.
#[derive(Debug, Subcommand)]
pub enum DiscoveredCommand {
    /// List them (by MAC), with what they said of themselves and when.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Turn one into a device.
    Adopt {
        #[command(flatten)]
        connection: Connection,
        /// Its MAC.
        mac: String,
        /// The model, when the phone did not say it or said it wrong.
        #[arg(long)]
        model: Option<String>,
        /// The user for line 1 (an id from `deskboot user list`).
        #[arg(long)]
        user: Option<u64>,
    },
}

pub async fn discovered(command: DiscoveredCommand) -> anyhow::Result<ExitCode> {
    let (connection, method, path, body) = match command {
        DiscoveredCommand::List { connection } => {
            (connection, Method::GET, "/api/v1/discovered".into(), None)
        }
        DiscoveredCommand::Adopt {
            connection,
            mac,
            model,
            user,
        } => (
            connection,
            Method::POST,
            format!("/api/v1/discovered/{mac}/adopt"),
            Some(json!({"model": model, "user": user})),
        ),
    };
    call_and_print(&connection, method, &path, body).await
}

/// Clients banned for scanning for MACs.
#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// List the bans in force.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Lift every ban of an address at once.
    Lift {
        #[command(flatten)]
        connection: Connection,
        /// The address (IPv4 or IPv6).
        address: String,
    },
}

pub async fn ban(command: BanCommand) -> anyhow::Result<ExitCode> {
    let (connection, method, path) = match command {
        BanCommand::List { connection } => (connection, Method::GET, "/api/v1/bans".into()),
        BanCommand::Lift {
            connection,
            address,
        } => (
            connection,
            Method::DELETE,
            format!("/api/v1/bans/{address}"),
        ),
    };
    call_and_print(&connection, method, &path, None).await
}

/// One admin API call; its JSON answer, if any, on stdout.
async fn call_and_print(
    connection: &Connection,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let answer = client(connection)?
        .call(method, path, body.as_ref())
        .await?;
    if !answer.is_null() {
        print_json(&answer)?;
    }
    Ok(ExitCode::SUCCESS)
}
