//! `nanoforge reg ...`: registry hives as `.reg` text.

use crate::core::output::PendingOutput;
use crate::core::time::{build_epoch, unix_to_filetime};
use crate::formats::regf::{self, Hive};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum RegCommand {
    /// Print a hive (or one key's subtree) as regedit's .reg text.
    #[command(after_help = "Examples:
  nanoforge reg export SYSTEM
  nanoforge reg export SOFTWARE 'Microsoft\\Windows NT\\CurrentVersion' -o cv.reg

Paths are relative to the hive root and written as [\\A\\B]. With -o the file is
UTF-16LE with a byte order mark, as regedit writes it; on standard output it is UTF-8.")]
    Export(ExportArgs),
    /// Apply a .reg file to a hive, in place. The hive is replaced atomically: on any
    /// error it is left as it was.
    #[command(after_help = "Examples:
  nanoforge reg merge SYSTEM settings.reg

Keys in the .reg file are relative to the hive root ([\\ControlSet001\\Services]).
New keys take the time from SOURCE_DATE_EPOCH, so the same inputs give the same bytes.")]
    Merge(MergeArgs),
    /// Write an empty hive.
    #[command(after_help = "Examples:
  nanoforge reg new empty.hive
  nanoforge reg new BCD --root NewStoreRoot")]
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Hive file.
    pub hive: PathBuf,
    /// Key to export (default: the whole hive).
    pub key: Option<String>,
    /// Write the .reg file here (UTF-16LE) instead of printing it.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Hive file, changed in place.
    pub hive: PathBuf,
    /// .reg file (UTF-16LE with BOM, UTF-8 or 8-bit REGEDIT4 text).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Output hive.
    pub output: PathBuf,
    /// Name of the root key.
    #[arg(long, default_value = "ROOT")]
    pub root: String,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: RegCommand, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        RegCommand::Export(a) => export(a),
        RegCommand::Merge(a) => merge(a, quiet),
        RegCommand::New(a) => new(a),
    }
}

fn load(path: &Path) -> anyhow::Result<Hive> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Hive::parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Write `bytes` to `dest` through a temporary file renamed into place.
fn write_atomic(dest: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    let (pending, mut f) =
        PendingOutput::create(dest, force).with_context(|| format!("{}", dest.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    pending
        .commit()
        .with_context(|| format!("{}", dest.display()))?;
    Ok(())
}

fn filetime_now() -> anyhow::Result<u64> {
    Ok(unix_to_filetime(build_epoch()?))
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let hive = load(&a.hive)?;
    let text = regf::export_reg(&hive, a.key.as_deref())
        .with_context(|| format!("{}", a.hive.display()))?;
    match a.output {
        Some(o) => write_atomic(&o, &regf::encode_reg_file(&text), a.force),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn merge(a: MergeArgs, quiet: bool) -> anyhow::Result<()> {
    let mut hive = load(&a.hive)?;
    let raw = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let text = regf::decode_reg_file(&raw).with_context(|| format!("{}", a.file.display()))?;
    hive.base_block.last_written_timestamp = filetime_now()?;
    let report = regf::merge_reg(&mut hive, &text)
        .with_context(|| format!("{}: hive left unchanged", a.file.display()))?;
    let bytes = hive
        .to_bytes()
        .with_context(|| format!("{}: hive left unchanged", a.hive.display()))?;
    write_atomic(&a.hive, &bytes, true)?;
    if !quiet {
        eprintln!(
            "merged {} into {}: {} keys created, {} deleted, {} values set, {} deleted",
            a.file.display(),
            a.hive.display(),
            report.keys_created,
            report.keys_deleted,
            report.values_set,
            report.values_deleted
        );
    }
    Ok(())
}

fn new(a: NewArgs) -> anyhow::Result<()> {
    let hive = Hive::new_empty(&a.root, filetime_now()?);
    write_atomic(&a.output, &hive.to_bytes()?, a.force)
}
