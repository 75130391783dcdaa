//! `deskboot identify`: what a User-Agent or a request path says, using the
//! server's own recognition code.

use std::path::PathBuf;
use std::process::ExitCode;

use deskboot::catalog::Catalog;
use serde_json::json;

/// Flags of `deskboot identify`.
#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    /// An HTTP User-Agent string.
    #[arg(long, group = "input", required_unless_present = "path")]
    user_agent: Option<String>,
    /// A requested path or TFTP file name.
    #[arg(long, group = "input")]
    path: Option<String>,
    /// Extra phone-model descriptors, as for `serve`.
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

/// Prints `{"vendor", "model", "firmware", "mac"}`; exits 1 when the vendor is unknown.
pub fn run(args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load(args.models_dir.as_deref())?;
    let identity = match (&args.user_agent, &args.path) {
        (Some(ua), _) => catalog.identify_user_agent(ua),
        (None, Some(path)) => catalog.identify_path(path),
        (None, None) => anyhow::bail!("give --user-agent or --path"),
    };
    let known = identity.vendor.is_some();
    let out = json!({
        "vendor": identity.vendor,
        "model": identity.model,
        "firmware": identity.firmware,
        "mac": identity.mac.map(|m| m.colon()),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if known {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
