//! `deskboot cert self-signed`: a certificate and key for a lab's HTTPS.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use deskboot::transport::tls::{self, CERT_FILE, KEY_FILE};

/// Certificate commands.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Write a self-signed certificate (cert.pem) and key (key.pem, mode 0600) for labs.
    SelfSigned {
        /// Where to write cert.pem and key.pem (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address phones use to reach the server; repeat for several.
        #[arg(long = "name", default_value = "localhost")]
        names: Vec<String>,
        /// Replace cert.pem and key.pem if they exist.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::SelfSigned { out, names, force } => {
            for file in [CERT_FILE, KEY_FILE] {
                let path = out.join(file);
                if !force && path.exists() {
                    bail!("{} exists; pass --force to replace it", path.display());
                }
            }
            let (cert, key) = tls::write_self_signed(&out, &names)?;
            println!("certificate: {}", cert.display());
            println!("key:         {}", key.display());
            println!("valid for:   {}", names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
    }
}
