//! Command-line interface: argument parsing and the commands' front ends.

pub mod bcd;
pub mod build;
pub mod convert;
pub mod disk;
pub mod inspect;
pub mod media;
pub mod packages;
pub mod progress;
pub mod reg;
pub mod wim;

use clap::{Parser, Subcommand};

/// Build bootable Windows Server Nano disk images on Linux: no Windows, no root, no
/// mounts, and the same bytes from the same inputs.
#[derive(Debug, Parser)]
#[command(name = "nanoforge", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  nanoforge build templates/container-host.toml --media demo -o host.vhdx
  nanoforge build templates/hyperv-guest.toml --media /mnt/iso --dry-run -o nano.vhdx
  nanoforge disk create --size 10GiB --esp-dir ./esp -o lab.vhdx
  nanoforge convert lab.vhdx lab.img
  nanoforge inspect lab.vhdx --json")]
pub struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a Nano Server image from the installation media: packages, drivers, settings,
    /// container base images and boot files, into a .vhdx, .img, .vhd or .wim.
    #[command(after_help = build::AFTER_HELP)]
    Build(build::BuildArgs),
    /// Create, fill and lay out virtual disks.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// Convert a disk image between VHDX, VHD and raw, keeping it sparse.
    Convert(convert::ConvertArgs),
    /// Show what a disk image holds: container, partitions, ESP files, NTFS volumes, the
    /// container image store.
    Inspect(inspect::InspectArgs),
    /// Read, verify, extract, apply, capture and export WIM archives.
    #[command(subcommand)]
    Wim(wim::WimCommand),
    /// Read and edit registry hives through .reg text.
    #[command(subcommand)]
    Reg(reg::RegCommand),
    /// Show Boot Configuration Data stores.
    #[command(subcommand)]
    Bcd(bcd::BcdCommand),
    /// Pin and check the installation media's files by SHA-256; write the demo media.
    #[command(subcommand)]
    Media(media::MediaCommand),
    /// List the Nano Server packages on the installation media.
    #[command(subcommand)]
    Packages(packages::PackagesCommand),
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(a) => build::run(a, cli.quiet),
        Command::Disk(c) => disk::run(c, cli.quiet),
        Command::Convert(a) => convert::run(a, cli.quiet),
        Command::Inspect(a) => inspect::run(a),
        Command::Wim(c) => wim::run(c, cli.quiet),
        Command::Reg(c) => reg::run(c, cli.quiet),
        Command::Bcd(c) => bcd::run(c),
        Command::Media(c) => media::run(c, cli.quiet),
        Command::Packages(c) => packages::run(c),
    }
}

/// Parse a size argument (`10GiB`, `512MiB`, `4G`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::core::units::parse_size(s).map_err(|e| e.to_string())
}
