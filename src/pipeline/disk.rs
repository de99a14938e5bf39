//! `disk create`: a GPT disk with a FAT32 ESP (optionally filled from a host folder), an
//! MSR and a Windows partition, in a VHDX, VHD or raw container.

use crate::core::block::{MemDisk, ReadAt, WriteAt};
use crate::core::guid::Guid;
use crate::core::output::PendingOutput;
use crate::formats::fat::{self, EspFiles, EspOptions};
use crate::formats::gpt::{self, GptLayout, Role, WindowsLayoutRequest};
use crate::image::{self, ContainerOptions, ImageFormat};
use crate::pipeline::seed::{self, SeedBuilder};
use std::io;
use std::path::{Path, PathBuf};

/// Largest ESP folder we accept: the boot files of Windows are a few tens of MiB.
const MAX_ESP_FILE: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct DiskRequest {
    pub output: PathBuf,
    pub format: ImageFormat,
    pub size: u64,
    pub sector_size: u64,
    pub fixed: bool,
    pub block_size: Option<u32>,
    pub esp_size: u64,
    pub msr_size: u64,
    pub esp_dir: Option<PathBuf>,
    pub seed: Option<String>,
    pub time: i64,
    pub force: bool,
}

/// What was planned (and, after `write`, written).
#[derive(Debug, serde::Serialize)]
pub struct DiskPlan {
    pub output: PathBuf,
    pub format: ImageFormat,
    pub seed: String,
    pub layout: GptLayout,
    pub esp_volume_id: String,
    pub esp_files: Vec<(String, u64)>,
    #[serde(skip)]
    esp: EspFiles,
    #[serde(skip)]
    seed_bytes: Vec<u8>,
}

/// Read a host folder into ESP files (sorted, forward-slash paths).
pub fn read_esp_dir(dir: &Path) -> io::Result<EspFiles> {
    let mut out = EspFiles::new();
    fn walk(base: &Path, dir: &Path, out: &mut EspFiles) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read ESP folder {}: {e}", dir.display()),
                )
            })?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let md = std::fs::metadata(&p)?;
            if md.is_dir() {
                walk(base, &p, out)?;
            } else if md.len() > MAX_ESP_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: {} bytes is more than an ESP file may hold",
                        p.display(),
                        md.len()
                    ),
                ));
            } else {
                let rel = p.strip_prefix(base).expect("walk stays below its base");
                let name = rel
                    .to_str()
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: name is not UTF-8", p.display()),
                        )
                    })?
                    .to_string();
                out.insert(name, std::fs::read(&p)?);
            }
        }
        Ok(())
    }
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Plan the disk: resolve inputs, derive the seed, lay out the partitions. Writes nothing.
pub fn plan(req: &DiskRequest) -> io::Result<DiskPlan> {
    let esp = match &req.esp_dir {
        Some(d) => read_esp_dir(d)?,
        None => EspFiles::new(),
    };
    let mut sb = SeedBuilder::new("disk create");
    sb.add("format", req.format.name().as_bytes())
        .add("size", &req.size.to_le_bytes())
        .add("sector", &req.sector_size.to_le_bytes())
        .add("esp", &req.esp_size.to_le_bytes())
        .add("msr", &req.msr_size.to_le_bytes())
        .add("fixed", &[req.fixed as u8]);
    for (name, data) in &esp {
        sb.add(name, &sha2_digest(data));
    }
    let seed_bytes = seed::resolve(req.seed.as_deref(), sb);
    let layout = gpt::plan_windows_layout(
        &WindowsLayoutRequest {
            disk_size: req.size,
            sector_size: req.sector_size,
            esp_size: req.esp_size,
            msr_size: req.msr_size,
        },
        &seed_bytes,
    )?;
    Ok(DiskPlan {
        output: req.output.clone(),
        format: req.format,
        seed: seed::hex(&seed_bytes),
        esp_volume_id: format!("{:08X}", esp_volume_id(&seed_bytes)),
        esp_files: esp
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect(),
        layout,
        esp,
        seed_bytes,
    })
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// FAT volume serial from the seed.
fn esp_volume_id(seed: &[u8]) -> u32 {
    let g = Guid::derive(seed, "fat:volume-id");
    u32::from_le_bytes(g.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// Write the planned disk to a temporary file and rename it into place.
pub fn write(plan: &DiskPlan, req: &DiskRequest) -> io::Result<()> {
    let esp_part = plan
        .layout
        .partition(Role::Esp)
        .expect("the Windows layout has an ESP");
    let esp = fat::build_esp(
        &EspOptions {
            size: esp_part.size(),
            sector_size: req.sector_size,
            volume_id: esp_volume_id(&plan.seed_bytes),
            label: *b"SYSTEM     ",
            time: req.time,
            hidden_sectors: u32::try_from(esp_part.first_lba).unwrap_or(u32::MAX),
        },
        &plan.esp,
    )?;
    let gpt_mem = gpt::build_gpt(&plan.layout)?;
    let (pending, file) = PendingOutput::create(&req.output, req.force)?;
    let mut out = image::create_writer(
        file,
        &ContainerOptions {
            format: req.format,
            virtual_size: req.size,
            logical_sector_size: req.sector_size as u32,
            fixed: req.fixed,
            block_size: req.block_size,
            seed: plan.seed_bytes.clone(),
            time: req.time,
        },
    )?;
    // Write in ascending offset order: primary GPT, ESP, then the backup GPT at the end.
    let first = esp_part.offset();
    copy_ranges(&gpt_mem, out.as_mut(), |r| r.start < first)?;
    fat::place(&esp, out.as_mut(), first)?;
    copy_ranges(&gpt_mem, out.as_mut(), |r| r.start >= first)?;
    out.finish()?;
    pending.commit()
}

fn copy_ranges(
    src: &MemDisk,
    out: &mut dyn WriteAt,
    keep: impl Fn(&std::ops::Range<u64>) -> bool,
) -> io::Result<()> {
    for r in src.data_ranges()?.into_iter().filter(|r| keep(r)) {
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        src.read_at(r.start, &mut buf)?;
        out.write_at(r.start, &buf)?;
    }
    Ok(())
}
