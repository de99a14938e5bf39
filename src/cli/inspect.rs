//! `nanoforge inspect IMAGE`

use crate::core::units::Bytes;
use crate::formats::{bcd, fat, gpt, ntfs};
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
    /// NTFS volumes found in basic data partitions, by partition number.
    ntfs: Vec<(u32, ntfs::read::NtfsSummary)>,
    /// Container base images in the image store of those volumes.
    base_images: Vec<crate::containers::StoredImage>,
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
    let data_type: crate::core::Guid = gpt::TYPE_BASIC_DATA.parse().expect("constant parses");
    let mut volumes = Vec::new();
    let mut store = Vec::new();
    for p in partitions.iter().filter(|p| p.type_guid == data_type) {
        let mut oem = [0u8; 8];
        img.disk.read_at(p.offset + 3, &mut oem)?;
        if &oem == b"NTFS    " {
            let s = ntfs::read::summary(img.disk.as_ref(), p.offset, p.size).map_err(|e| {
                anyhow::anyhow!(
                    "{}: NTFS volume of partition {} at offset {:#x}: {e}",
                    a.image.display(),
                    p.number,
                    p.offset
                )
            })?;
            volumes.push((p.number, s));
            store.extend(
                crate::containers::read_store(img.disk.as_ref(), p.offset, p.size).map_err(
                    |e| {
                        anyhow::anyhow!(
                            "{}: image store on partition {}: {e}",
                            a.image.display(),
                            p.number
                        )
                    },
                )?,
            );
        }
    }
    // The boot store, printed like `nanoforge bcd show` when the ESP has one. A store
    // that does not decode is reported, not fatal: the rest of the image is still shown.
    let (mut bcd, mut bcd_error) = (None, None);
    if let Some(p) = partitions.iter().find(|p| p.type_guid == esp_type) {
        if esp_files.iter().any(|e| e.path == BCD_ON_ESP) {
            let decoded = fat::read_file(img.disk.as_ref(), p.offset, p.size, BCD_ON_ESP)
                .map_err(|e| e.to_string())
                .and_then(|b| bcd::Store::parse(&b).map_err(|e| e.to_string()));
            match decoded {
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
        ntfs: volumes,
        base_images: store,
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
    for (n, v) in &r.ntfs {
        println!("NTFS         partition {n}: {} clusters of {} bytes, {} MFT records, {} free, serial {}{}",
            v.size / v.cluster_size as u64, v.cluster_size, v.mft_records, Bytes(v.free_bytes), v.serial,
            v.label.as_ref().map(|l| format!(", label {l}")).unwrap_or_default());
        for (name, dir) in &v.top_level {
            println!("  {name}{}", if *dir { "\\" } else { "" });
        }
    }
    if !r.base_images.is_empty() {
        println!("base images  (C:\\{})", crate::containers::store::STORE_DIR);
        for i in &r.base_images {
            println!(
                "  {}  {} {}  {}  {} files{}",
                i.folder,
                i.name,
                i.version,
                Bytes(i.size),
                i.files,
                if i.utility_vm { ", utility VM" } else { "" }
            );
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
