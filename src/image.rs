//! Disk image containers: pick VHDX, VHD or raw by file extension (or by signature when
//! reading), and hand out the format's reader or writer behind the block traits.

use crate::core::block::{ReadAt, WriteAt};
use crate::core::guid::Guid;
use crate::formats::{raw, vhd, vhdx};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// A virtual disk container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Vhdx,
    Vhd,
    Raw,
}

impl ImageFormat {
    /// From the output name: `.vhdx`, `.vhd`, `.img`/`.raw`.
    pub fn from_path(p: &Path) -> Option<ImageFormat> {
        let ext = p.extension()?.to_string_lossy().to_ascii_lowercase();
        match ext.as_str() {
            "vhdx" => Some(ImageFormat::Vhdx),
            "vhd" => Some(ImageFormat::Vhd),
            "img" | "raw" => Some(ImageFormat::Raw),
            _ => None,
        }
    }

    /// By signature: `vhdxfile` at 0, `conectix` in the last 512 bytes (or at 0 for
    /// dynamic VHDs), anything else is raw.
    pub fn sniff(file: &mut File) -> io::Result<ImageFormat> {
        let len = file.metadata()?.len();
        let mut sig = [0u8; 8];
        if len >= 8 {
            file.seek(SeekFrom::Start(0))?;
            file.read_exact(&mut sig)?;
            if &sig == b"vhdxfile" {
                return Ok(ImageFormat::Vhdx);
            }
            if &sig == b"conectix" {
                return Ok(ImageFormat::Vhd);
            }
        }
        if len >= 512 {
            file.seek(SeekFrom::Start(len - 512))?;
            file.read_exact(&mut sig)?;
            if &sig == b"conectix" {
                return Ok(ImageFormat::Vhd);
            }
        }
        Ok(ImageFormat::Raw)
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Raw => "raw",
        }
    }
}

/// How to lay out the container of a new image.
#[derive(Debug, Clone)]
pub struct ContainerOptions {
    pub format: ImageFormat,
    pub virtual_size: u64,
    pub logical_sector_size: u32,
    /// Fixed (fully allocated) rather than dynamic; ignored for raw.
    pub fixed: bool,
    /// VHDX/VHD block size; `None` for the format's default (VHDX 1 MiB, VHD 2 MiB).
    pub block_size: Option<u32>,
    pub seed: Vec<u8>,
    /// Build time, Unix seconds (the VHD footer carries a timestamp).
    pub time: i64,
    /// Compute the output's SHA-256 while writing where the container allows (VHDX).
    pub digest: bool,
}

/// Seconds between 1970-01-01 and 2000-01-01, the VHD timestamp epoch.
const VHD_EPOCH: i64 = 946_684_800;

/// Open a writer for a new image in `file`.
pub fn create_writer(file: File, o: &ContainerOptions) -> io::Result<Box<dyn WriteAt>> {
    Ok(match o.format {
        ImageFormat::Vhdx => {
            let mut opts = vhdx::VhdxOptions::new(o.virtual_size, &o.seed);
            opts.logical_sector_size = o.logical_sector_size;
            opts.fixed = o.fixed;
            if let Some(b) = o.block_size {
                opts.block_size = b;
            }
            Box::new(vhdx::VhdxWriter::create_with(file, &opts, o.digest)?)
        }
        ImageFormat::Vhd => {
            if o.logical_sector_size != 512 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "VHD supports only 512-byte sectors; use .vhdx for 4096-byte sectors",
                ));
            }
            let opts = vhd::VhdOptions {
                virtual_size: o.virtual_size,
                dynamic: !o.fixed,
                block_size: o.block_size.unwrap_or(vhd::DEFAULT_BLOCK_SIZE),
                unique_id: Guid::derive(&o.seed, "vhd:unique-id"),
                timestamp: (o.time - VHD_EPOCH).clamp(0, u32::MAX as i64) as u32,
            };
            Box::new(vhd::VhdWriter::create(file, &opts)?)
        }
        ImageFormat::Raw => Box::new(raw::RawWriter::create(file, o.virtual_size)?),
    })
}

/// What the container says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerInfo {
    pub format: ImageFormat,
    pub subformat: String,
    pub virtual_size: u64,
    pub file_size: u64,
    pub allocated_bytes: u64,
    pub block_size: Option<u64>,
    pub logical_sector_size: Option<u32>,
    pub physical_sector_size: Option<u32>,
}

/// An opened image.
pub struct OpenImage {
    pub info: ContainerInfo,
    pub disk: Box<dyn ReadAt + Send + Sync>,
}

/// Open an existing image for reading; the format is `format` or sniffed.
pub fn open(path: &Path, format: Option<ImageFormat>) -> io::Result<OpenImage> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(ctx)?;
    let format = match format {
        Some(f) => f,
        None => ImageFormat::sniff(&mut file).map_err(ctx)?,
    };
    let meta = file.metadata().map_err(ctx)?;
    let file_size = meta.len();
    let allocated_bytes = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    let (disk, info): (Box<dyn ReadAt + Send + Sync>, ContainerInfo) = match format {
        ImageFormat::Vhdx => {
            let r = vhdx::VhdxReader::open(file).map_err(|e| ctx(e.into()))?;
            let i = r.info();
            let info = ContainerInfo {
                format,
                subformat: if i.fixed { "fixed" } else { "dynamic" }.into(),
                virtual_size: i.virtual_size,
                file_size,
                allocated_bytes,
                block_size: Some(i.block_size as u64),
                logical_sector_size: Some(i.logical_sector_size),
                physical_sector_size: Some(i.physical_sector_size),
            };
            (Box::new(r), info)
        }
        ImageFormat::Vhd => {
            let r = vhd::VhdReader::open(file).map_err(|e| ctx(e.into()))?;
            let i = r.info();
            let info = ContainerInfo {
                format,
                subformat: match i.disk_type {
                    vhd::DiskType::Dynamic => "dynamic",
                    vhd::DiskType::Fixed => "fixed",
                }
                .into(),
                virtual_size: i.virtual_size,
                file_size,
                allocated_bytes,
                block_size: i.block_size.map(|b| b as u64),
                logical_sector_size: Some(512),
                physical_sector_size: None,
            };
            (Box::new(r), info)
        }
        ImageFormat::Raw => {
            let r = raw::RawReader::open(file).map_err(|e| ctx(e.into()))?;
            let info = ContainerInfo {
                format,
                subformat: "sparse file".into(),
                virtual_size: r.size(),
                file_size,
                allocated_bytes,
                block_size: None,
                logical_sector_size: None,
                physical_sector_size: None,
            };
            (Box::new(r), info)
        }
    };
    Ok(OpenImage { info, disk })
}
