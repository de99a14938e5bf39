//! `nanoforge media ...`

use crate::servicing::media::{self, Media};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Write the SHA-256 of every file on the installation media to a lock file.
    #[command(after_help = "Examples:
  nanoforge media lock --media /mnt/iso -o media.lock
  nanoforge media verify --media /mnt/iso --lock media.lock

The lock lists `sha256 <digest> <path>` lines sorted by path, so the same media gives the
same file.")]
    Lock(LockArgs),
    /// Check the media against a lock file; any changed, missing or extra file is refused.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Root of the installation media (holds the NanoServer folder).
    #[arg(long)]
    pub media: PathBuf,
    /// Lock file to write.
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Root of the installation media (holds the NanoServer folder).
    #[arg(long)]
    pub media: PathBuf,
    /// Lock file written by `nanoforge media lock`.
    #[arg(long)]
    pub lock: PathBuf,
}

/// Run a `media` subcommand.
pub fn run(cmd: MediaCommand, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        MediaCommand::Lock(a) => {
            // The layout must be Nano media; which language is used does not matter for a lock.
            match Media::open(&a.media, None) {
                Ok(_) | Err(media::Error::AmbiguousLanguage { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let text = media::lock(&a.media)?;
            std::fs::write(&a.output, &text)
                .with_context(|| format!("writing {}", a.output.display()))?;
            if !quiet {
                println!(
                    "{} files locked in {}",
                    text.lines().filter(|l| !l.starts_with('#')).count(),
                    a.output.display()
                );
            }
            Ok(())
        }
        MediaCommand::Verify(a) => {
            let text = media::read_lock(&a.lock)?;
            media::verify_lock(&a.media, &text)?;
            if !quiet {
                println!("media matches {}", a.lock.display());
            }
            Ok(())
        }
    }
}
