//! `deskboot store copy`: moves a site between stores (sled and
//! PostgreSQL), opening both directly, then checks that every device's
//! files render the same from the copy as from the source.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use deskboot::access::phone_auth;
use deskboot::admin::auth::TOKEN_HASH_KEY;
use deskboot::config::Config;
use deskboot::provision::{Provisioner, Requester};
use deskboot::server::provisioner_over;
use deskboot::store::copy;
use deskboot::store::{Store, StoreUrl};

use super::client::StageBars;

/// The named store values a site takes along: with the hash, a server on
/// the copy keeps accepting the admin token in its data directory; with
/// the key, its phones keep their HTTP passwords.
const COPIED_META: &[&str] = &[TOKEN_HASH_KEY, phone_auth::KEY_META];

/// Differences listed before the check gives up listing.
const DIFFERENCES_SHOWN: usize = 10;

/// Commands on stores themselves, with no server running on them.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy a whole site from one store to another, e.g. from sled to
    /// PostgreSQL, and check every device's files render the same.
    Copy(CopyArgs),
}

/// Flags of `deskboot store copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The store copied: sled:<dir> or postgres://user@host/database.
    #[arg(long, env = "DESKBOOT_STORE_FROM", hide_env_values = true)]
    from: StoreUrl,
    /// The store written.
    #[arg(long, env = "DESKBOOT_STORE_TO", hide_env_values = true)]
    to: StoreUrl,
    /// Overwrite whatever the destination holds.
    #[arg(long)]
    replace: bool,
    /// Skip rendering every device's files from both stores.
    #[arg(long)]
    no_check: bool,
    /// The server's config file, for its models_dir and templates_dir (the check renders with them).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        // Both stores are read and written by blocking calls.
        StoreCommand::Copy(args) => tokio::task::spawn_blocking(move || copy_site(args)).await?,
    }
}

fn copy_site(args: CopyArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let from = Arc::new(copy::open(&args.from, true)?);
    let to = Arc::new(copy::open(&args.to, false)?);
    eprintln!("copying {} to {}", args.from, args.to);
    let bars = RefCell::new(StageBars::new()?);
    let copied = copy::copy(
        (&from, &args.from),
        (&to, &args.to),
        COPIED_META,
        args.replace,
        &|stage, done, total| bars.borrow_mut().show(stage, done, total),
    );
    bars.borrow_mut().clear();
    println!("copied {}", copied?);
    if args.no_check {
        return Ok(ExitCode::SUCCESS);
    }
    let checked = compare_renders(&config, from, to)?;
    println!("{checked}");
    Ok(if checked.differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What rendering both stores found.
struct Checked {
    devices: usize,
    files: usize,
    /// The first differences, as lines to show.
    differences: Vec<String>,
    /// How many differ in all.
    differing: usize,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Checked { devices, files, .. } = self;
        if self.differing == 0 {
            return write!(
                f,
                "checked: {devices} devices, {files} files, all identical"
            );
        }
        writeln!(
            f,
            "checked: {devices} devices, {files} files, {} differ:",
            self.differing
        )?;
        for line in &self.differences {
            writeln!(f, "  {line}")?;
        }
        if self.differing > self.differences.len() {
            writeln!(f, "  ...")?;
        }
        Ok(())
    }
}

/// Renders every file of every device of `from` from both stores, each
/// with the built-in templates and its own uploads as a server on it
/// would, and compares them byte for byte. A model's common files are
/// rendered once.
fn compare_renders(config: &Config, from: Arc<Store>, to: Arc<Store>) -> anyhow::Result<Checked> {
    // Rendering needs phones' authentication set up, which keeps a key in
    // the data directory: a scratch one, so no real one is touched.
    let scratch = std::env::temp_dir().join(format!("deskboot-store-copy-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let config = Config {
        data: scratch.clone(),
        ..config.clone()
    };
    let checked = (|| {
        let devices = from.devices()?;
        let source = provisioner_over(&config, from)?;
        let copy = provisioner_over(&config, to)?;
        Ok::<_, anyhow::Error>(compare_devices(&source, &copy, &devices))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    checked
}

fn compare_devices(
    source: &Provisioner,
    copy: &Provisioner,
    devices: &[deskboot::domain::records::Device],
) -> Checked {
    let mut checked = Checked {
        devices: devices.len(),
        files: 0,
        differences: Vec::new(),
        differing: 0,
    };
    let mut common_done = std::collections::HashSet::new();
    for device in devices {
        let Some(model) = source.catalog().model(&device.model) else {
            checked.note(format!("{}: unknown model {}", device.mac, device.model));
            continue;
        };
        for file in &model.files {
            if !file.per_device && !common_done.insert((model.id.clone(), file.name.clone())) {
                continue;
            }
            let name = file.name.replace("{mac}", &device.mac.lower());
            let render = |provisioner: &Provisioner| {
                provisioner
                    .preview(device.mac, &name, &Requester::default())
                    .map(|served| served.body.to_vec())
                    .map_err(|e| e.to_string())
            };
            checked.files += 1;
            match (render(source), render(copy)) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(a), Err(b)) if a == b => {}
                (Ok(a), Ok(b)) => checked.note(format!(
                    "{name}: differs ({} bytes from the source, {} from the copy)",
                    a.len(),
                    b.len()
                )),
                (a, b) => checked.note(format!(
                    "{name}: {} from the source, {} from the copy",
                    outcome(&a),
                    outcome(&b)
                )),
            }
        }
    }
    checked
}

impl Checked {
    fn note(&mut self, difference: String) {
        self.differing += 1;
        if self.differences.len() < DIFFERENCES_SHOWN {
            self.differences.push(difference);
        }
    }
}

/// A render's outcome in a few words.
fn outcome(render: &Result<Vec<u8>, String>) -> String {
    match render {
        Ok(body) => format!("{} bytes", body.len()),
        Err(e) => format!("not rendered ({e})"),
    }
}
