//! `nanoforge inspect IMAGE`

use crate::core::units::Bytes;
use crate::formats::{bcd, fat, gpt};
use crate::image::{self, ImageFormat};
use clap::Args;
use std::path::PathBuf;

/// Show the container, the partition table and the ESP's files of a disk image.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  nanoforge inspect nano.vhdx
  nanoforge inspect nano.img --json")]
pub struct InspectArgs {
    /// Disk image (.vhdx, .vhd or raw).
    pub image: PathBuf,
    /// Format of the image (default: detected from its signature).
    #[arg(long, value_enum)]
    pub from: Option<ImageFormat>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    container: image::ContainerInfo,
    disk_guid: Option<String>,
    sector_size: Option<u64>,
    partitions: Vec<gpt::PartitionInfo>,
    esp_files: Vec<fat::FatEntry>,
    /// The ESP's BCD store as `bcd show` prints it.
    bcd: Option<String>,
    /// Why the ESP's BCD store could not be read.
    bcd_error: Option<String>,
}

/// Where bcdboot puts the system store on the ESP.
const BCD_ON_ESP: &str = "EFI/Microsoft/Boot/BCD";

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let img = image::open(&a.image, a.from)?;
    let table = gpt::read_partitions(img.disk.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let (sector_size, disk_guid, partitions) = match table {
        Some((ss, g, p)) => (Some(ss), Some(g.to_string()), p),
        None => (None, None, Vec::new()),
    };
    let esp_type: crate::core::Guid = gpt::TYPE_ESP.parse().expect("constant parses");
    let esp_files = match partitions.iter().find(|p| p.type_guid == esp_type) {
        Some(p) => fat::list(img.disk.as_ref(), p.offset, p.size).map_err(|e| {
            anyhow::anyhow!("{}: ESP at offset {:#x}: {e}", a.image.display(), p.offset)
        })?,
        None => Vec::new(),
    };
    // The boot store, printed like `nanoforge bcd show` when the ESP has one. A store
    // that does not decode is reported, not fatal: the rest of the image is still shown.
    let (mut bcd, mut bcd_error) = (None, None);
    if let Some(p) = partitions.iter().find(|p| p.type_guid == esp_type) {
        if esp_files.iter().any(|e| e.path == BCD_ON_ESP) {
            let store = fat::read_file(img.disk.as_ref(), p.offset, p.size, BCD_ON_ESP)
                .map_err(|e| e.to_string())
                .and_then(|b| bcd::Store::parse(&b).map_err(|e| e.to_string()));
            match store {
                Ok(s) => bcd = Some(s.render()),
                Err(e) => bcd_error = Some(e),
            }
        }
    }
    let r = Report {
        container: img.info,
        disk_guid,
        sector_size,
        partitions,
        esp_files,
        bcd,
        bcd_error,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let c = &r.container;
    println!("image        {}", a.image.display());
    println!("container    {} ({})", c.format.name(), c.subformat);
    println!(
        "virtual size {} ({} bytes)",
        Bytes(c.virtual_size),
        c.virtual_size
    );
    println!(
        "file size    {} ({} allocated)",
        Bytes(c.file_size),
        Bytes(c.allocated_bytes)
    );
    if let Some(b) = c.block_size {
        println!("block size   {}", Bytes(b));
    }
    if let (Some(l), p) = (c.logical_sector_size, c.physical_sector_size) {
        match p {
            Some(p) => println!("sectors      {l} logical, {p} physical"),
            None => println!("sectors      {l} logical"),
        }
    }
    match &r.disk_guid {
        None => println!("partitions   none (no GPT found)"),
        Some(g) => {
            println!(
                "GPT          disk {g}, {}-byte sectors",
                r.sector_size.unwrap_or(512)
            );
            for p in &r.partitions {
                println!(
                    "  {:>2}  {:<22} {:>10} at {:#x}  {}  type {}  guid {}",
                    p.number,
                    p.type_name,
                    Bytes(p.size).to_string(),
                    p.offset,
                    p.name,
                    p.type_guid,
                    p.part_guid
                );
            }
        }
    }
    if !r.esp_files.is_empty() {
        println!("ESP files");
        for e in &r.esp_files {
            if e.is_dir {
                println!("  {}/", e.path);
            } else {
                println!("  {}  ({} bytes)", e.path, e.size);
            }
        }
    }
    if let Some(b) = &r.bcd {
        println!("BCD store {BCD_ON_ESP}");
        print!("{b}");
    }
    if let Some(e) = &r.bcd_error {
        println!("BCD store {BCD_ON_ESP} cannot be read: {e}");
    }
    Ok(())
}
