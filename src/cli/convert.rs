//! `nanoforge convert IN OUT`

use crate::cli::{parse_size, progress};
use crate::core::block::copy_sparse;
use crate::core::output::PendingOutput;
use crate::core::time::build_epoch;
use crate::image::{self, ContainerOptions, ImageFormat};
use crate::pipeline::seed::{self, SeedBuilder};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

/// Convert between VHDX, VHD and raw images. Only data is copied: holes and all-zero
/// blocks stay unallocated in the output.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  nanoforge convert disk.img disk.vhdx
  nanoforge convert disk.vhdx disk.vhd --fixed
  nanoforge convert hyperv.vhdx out.img --from vhdx

Formats come from the extensions (.vhdx, .vhd, .img/.raw); --from and --format override.")]
pub struct ConvertArgs {
    /// Source image.
    pub input: PathBuf,
    /// Destination image.
    pub output: PathBuf,
    /// Source format (default: detected from its signature).
    #[arg(long, value_enum)]
    pub from: Option<ImageFormat>,
    /// Destination format (default: from the extension).
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
    /// Fixed (fully allocated) VHDX/VHD instead of dynamic.
    #[arg(long)]
    pub fixed: bool,
    /// VHDX/VHD block size (default: VHDX 1MiB, VHD 2MiB).
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Logical sector size of the output VHDX (default: the source's, else 512).
    #[arg(long)]
    pub sector_size: Option<u32>,
    /// Seed for the container's GUIDs (default: derived from the source's size and name).
    #[arg(long)]
    pub seed: Option<String>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ConvertArgs, quiet: bool) -> anyhow::Result<()> {
    let format = match a.format.or_else(|| ImageFormat::from_path(&a.output)) {
        Some(f) => f,
        None => bail!(
            "{}: cannot tell the output format from the extension; name it .vhdx, .vhd or .img, or pass --format",
            a.output.display()
        ),
    };
    if a.input.canonicalize().ok() == a.output.canonicalize().ok() && a.output.exists() {
        bail!("{}: input and output are the same file", a.input.display());
    }
    let src = image::open(&a.input, a.from)?;
    let mut sb = SeedBuilder::new("convert");
    sb.add("size", &src.info.virtual_size.to_le_bytes()).add(
        "name",
        a.input
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default(),
    );
    let seed = seed::resolve(a.seed.as_deref(), sb);
    let sector = a
        .sector_size
        .or(src.info.logical_sector_size)
        .unwrap_or(512);
    let block_size = a
        .block_size
        .map(|b| u32::try_from(b).context("--block-size is larger than any container allows"))
        .transpose()?;
    let (pending, file) = PendingOutput::create(&a.output, a.force)?;
    let mut out = image::create_writer(
        file,
        &ContainerOptions {
            format,
            virtual_size: src.info.virtual_size,
            logical_sector_size: sector,
            fixed: a.fixed,
            block_size,
            seed,
            time: build_epoch()?,
            digest: false,
        },
    )
    .with_context(|| format!("{}", a.output.display()))?;
    let ranges = src.disk.data_ranges()?;
    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let pb = progress::bytes("convert", total, quiet);
    copy_sparse(src.disk.as_ref(), out.as_mut(), 0, 1 << 20, |n| pb.inc(n))
        .with_context(|| format!("copying {} to {}", a.input.display(), a.output.display()))?;
    out.finish()?;
    pending.commit()?;
    pb.finish_and_clear();
    if !quiet {
        eprintln!("wrote {} ({})", a.output.display(), format.name());
    }
    Ok(())
}
