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
    /// Write the built-in demo media (synthetic, made by nanoforge) into a new folder.
    #[command(after_help = "Examples:
  nanoforge media demo ./demo-media
  nanoforge build templates/container-host.toml --media ./demo-media -o host.vhdx

The demo media follow the layout of the Windows Server 2016 media: NanoServer\\NanoServer.wim
with a Standard and a Datacenter image, NanoServer\\Packages with the Guest, Compute,
OEM-Drivers and Containers packages and their en-us language packs, and a container base
image in BaseImages. Every file is synthetic; nothing is Microsoft's. When grub-mkimage is
installed the boot manager stand-in is a GRUB image that prints what it finds on the built
disk. `--media demo` in `nanoforge build` makes the same files in a temporary folder.")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// Make the boot manager stand-in a text file even when grub-mkimage is installed.
    #[arg(long)]
    pub no_grub: bool,
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
        MediaCommand::Demo(a) => demo(a, quiet),
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

fn demo(a: DemoArgs, quiet: bool) -> anyhow::Result<()> {
    use crate::pipeline::demo::{write_media, DemoOptions};
    if let Ok(mut rd) = std::fs::read_dir(&a.dir) {
        if rd.next().is_some() {
            anyhow::bail!(
                "{} exists and is not empty; name a new folder for the demo media",
                a.dir.display()
            );
        }
    }
    let parent = match a.dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Build next to the target and rename when complete, so a failure leaves nothing.
    let tmp = tempfile::Builder::new()
        .prefix(".nanoforge-demo-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))?;
    let guard = crate::core::output::PendingDir::register(tmp.path());
    let report = write_media(tmp.path(), &DemoOptions { no_grub: a.no_grub })?;
    let _ = std::fs::remove_dir(&a.dir);
    std::fs::rename(tmp.path(), &a.dir)
        .with_context(|| format!("moving the demo media to {}", a.dir.display()))?;
    drop(guard);
    std::mem::forget(tmp);
    if !quiet {
        println!(
            "wrote the demo media ({} files{}) to {}",
            report.files.len(),
            if report.bootable {
                ", with a GRUB boot manager stand-in"
            } else {
                "; grub-mkimage is missing, so images built from it do not boot"
            },
            a.dir.display()
        );
    }
    Ok(())
}
