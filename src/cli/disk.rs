//! `nanoforge disk ...`

use crate::cli::parse_size;
use crate::core::time::build_epoch;
use crate::core::units::Bytes;
use crate::formats::gpt::DEFAULT_MSR_SIZE;
use crate::image::ImageFormat;
use crate::pipeline::disk::{self, DiskRequest};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a GPT disk: FAT32 ESP (filled from --esp-dir), MSR and a Windows partition.
    #[command(after_help = "Examples:
  nanoforge disk create --size 10GiB -o nano.vhdx
  nanoforge disk create --size 4GiB --sector-size 4096 --esp-dir ./esp -o nano.vhdx
  nanoforge disk create --size 8G --fixed -o nano.vhd
  nanoforge disk create --size 10GiB --windows-wim NanoServer.wim:1 --esp-dir ./esp -o nano.vhdx
  nanoforge disk create --size 20GiB --windows-wim NanoServer.wim:2 --base-image NanoServerBase.wim -o host.vhdx

The container comes from the output's extension (.vhdx, .vhd, .img); --format overrides it.
GUIDs and the ESP serial derive from --seed, or from the settings and inputs when no seed is
given, so the same command gives the same bytes. Times come from SOURCE_DATE_EPOCH.")]
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Virtual disk size (e.g. 10GiB, 512MiB, 4G).
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
    /// Logical sector size in bytes: 512 or 4096.
    #[arg(long, default_value_t = 512, value_parser = parse_sector_size)]
    pub sector_size: u64,
    /// Folder whose files are copied onto the ESP (subfolders kept).
    #[arg(long)]
    pub esp_dir: Option<PathBuf>,
    /// Fill the Windows partition with image INDEX of this WIM (FILE:INDEX, INDEX from 1).
    #[arg(long, value_name = "FILE:INDEX", value_parser = parse_wim_ref)]
    pub windows_wim: Option<(PathBuf, Option<usize>)>,
    /// Place a container base image in the image store (FILE or FILE:INDEX; repeatable).
    /// A WIM with a second image gets it as the utility VM (BaseOs).
    #[arg(long, value_name = "FILE[:INDEX]", value_parser = parse_wim_ref)]
    pub base_image: Vec<(PathBuf, Option<usize>)>,
    /// Keep names that differ only in case in one folder of the applied WIMs (WIMs
    /// captured from Linux folders have them; Windows reaches only one of each pair).
    #[arg(long)]
    pub case_sensitive: bool,
    /// NTFS cluster size of the Windows partition (512 to 65536, a power of two).
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub cluster_size: u64,
    /// ESP size.
    #[arg(long, value_parser = parse_size, default_value = "260MiB")]
    pub esp_size: u64,
    /// Container format; by default from the output extension.
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
    /// Allocate the whole disk up front (fixed VHDX/VHD) instead of growing on demand.
    #[arg(long)]
    pub fixed: bool,
    /// VHDX/VHD block size (VHDX: a power of two from 1MiB to 256MiB; default 1MiB; VHD 2MiB).
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Seed for every GUID and serial (default: derived from the settings and inputs).
    #[arg(long)]
    pub seed: Option<String>,
    /// Print the plan (human, or JSON with --json) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run, print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Output image (.vhdx, .vhd or .img).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `FILE` or `FILE:INDEX` (the last colon splits, so paths may hold colons).
pub fn parse_wim_ref(s: &str) -> Result<(PathBuf, Option<usize>), String> {
    if let Some((file, idx)) = s.rsplit_once(':') {
        if let Ok(i) = idx.parse::<usize>() {
            if i == 0 {
                return Err("image indexes start at 1".into());
            }
            return Ok((PathBuf::from(file), Some(i)));
        }
    }
    Ok((PathBuf::from(s), None))
}

fn parse_sector_size(s: &str) -> Result<u64, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err(format!(
            "'{s}' is not a supported sector size: use 512 or 4096"
        )),
    }
}

pub fn run(cmd: DiskCommand, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        DiskCommand::Create(a) => create(a, quiet),
    }
}

fn create(a: CreateArgs, quiet: bool) -> anyhow::Result<()> {
    let format = match a.format.or_else(|| ImageFormat::from_path(&a.output)) {
        Some(f) => f,
        None => bail!(
            "{}: cannot tell the container from the extension; name it .vhdx, .vhd or .img, or pass --format",
            a.output.display()
        ),
    };
    let block_size = a
        .block_size
        .map(|b| u32::try_from(b).context("--block-size is larger than any container allows"))
        .transpose()?;
    let req = DiskRequest {
        output: a.output.clone(),
        format,
        size: a.size,
        sector_size: a.sector_size,
        fixed: a.fixed,
        block_size,
        esp_size: a.esp_size,
        msr_size: DEFAULT_MSR_SIZE,
        esp_dir: a.esp_dir.clone(),
        windows_wim: match &a.windows_wim {
            Some((p, Some(i))) => Some((p.clone(), *i)),
            Some((p, None)) => bail!(
                "--windows-wim {}: name the image as FILE:INDEX (e.g. {}:1)",
                p.display(),
                p.display()
            ),
            None => None,
        },
        base_images: a.base_image.clone(),
        case_sensitive: a.case_sensitive,
        cluster_size: u32::try_from(a.cluster_size).context("--cluster-size is too large")?,
        seed: a.seed.clone(),
        time: build_epoch()?,
        force: a.force,
        progress: Default::default(),
        digest: false,
    };
    let plan = disk::plan(&req)?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print_plan(&plan);
        }
        return Ok(());
    }
    disk::write(&plan, &req)?;
    if !quiet {
        eprintln!(
            "wrote {} ({}, {} virtual, {} ESP files)",
            a.output.display(),
            format.name(),
            Bytes(a.size),
            plan.esp_files.len()
        );
    }
    // The plan holds the volume's whole tree: the process ends now, and freeing it node by
    // node would only make the user wait.
    std::mem::forget(plan);
    Ok(())
}

fn print_plan(plan: &disk::DiskPlan) {
    println!(
        "output     {} ({})",
        plan.output.display(),
        plan.format.name()
    );
    println!(
        "disk       {} with {}-byte sectors, GUID {}",
        Bytes(plan.layout.disk_size),
        plan.layout.sector_size,
        plan.layout.disk_guid
    );
    for p in &plan.layout.partitions {
        println!(
            "  {}  {:<30} {:>10} at {:>12}  {}",
            p.number,
            p.name,
            Bytes(p.size()).to_string(),
            p.offset(),
            p.part_guid
        );
    }
    println!(
        "ESP        {} files, volume id {}",
        plan.esp_files.len(),
        plan.esp_volume_id
    );
    println!("seed       {}", plan.seed);
}
