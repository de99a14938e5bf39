//! `disk create`: a GPT disk with a FAT32 ESP (optionally filled from a host folder), an
//! MSR and a Windows partition, in a VHDX, VHD or raw container.

use crate::containers::{self, StoreEntry};
use crate::core::block::ReadAt;
use crate::core::guid::Guid;
use crate::core::output::PendingOutput;
use crate::core::time::unix_to_filetime;
use crate::core::units::Bytes;
use crate::formats::fat::{self, EspFiles, EspOptions};
use crate::formats::gpt::{
    self, GptLayout, PlannedPartition, Role, TableCopy, WindowsLayoutRequest,
};
use crate::formats::ntfs::{self, NtfsOptions};
use crate::formats::wim::Wim;
use crate::image::{self, ContainerOptions, ImageFormat};
use crate::pipeline::seed::{self, SeedBuilder};
use crate::tree::wim::{self as tree_wim, WimApplyReport};
use crate::tree::{Meta, Tree};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// WIM image applied to the Windows partition: (file, 1-based index).
    pub windows_wim: Option<(PathBuf, usize)>,
    /// Container base images placed in the image store: (file, index of the OS image).
    pub base_images: Vec<(PathBuf, Option<usize>)>,
    /// Allow names that differ only in case (see `Tree::set_case_sensitive`).
    pub case_sensitive: bool,
    /// NTFS cluster size of the Windows partition.
    pub cluster_size: u32,
    pub seed: Option<String>,
    pub time: i64,
    pub force: bool,
    /// Told the bytes of each file written into the Windows volume.
    pub progress: ntfs::ProgressHook,
    /// Compute the output's SHA-256 while writing where the container allows.
    pub digest: bool,
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
    /// What the Windows partition will hold (absent: left unformatted).
    pub windows: Option<WindowsVolumePlan>,
    #[serde(skip)]
    esp: EspFiles,
    #[serde(skip)]
    tree: Option<Tree>,
    #[serde(skip)]
    seed_bytes: Vec<u8>,
    /// The Windows volume as laid out when planning, taken by the write.
    #[serde(skip)]
    volume: std::sync::Mutex<Option<ntfs::VolumePlan>>,
}

/// The planned Windows volume.
#[derive(Debug, serde::Serialize)]
pub struct WindowsVolumePlan {
    pub wim: Option<WimApplyReport>,
    pub base_images: Vec<StoreEntry>,
    pub cluster_size: u32,
    pub used_bytes: u64,
    pub mft_records: u64,
    pub serial: String,
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
    let wims = open_wims(req, &mut sb)?;
    let seed_bytes = seed::resolve(req.seed.as_deref(), sb);
    let volume = if req.windows_wim.is_some() || !req.base_images.is_empty() {
        let filetime = unix_to_filetime(req.time);
        let mut tree = Tree::new(Meta::at(filetime));
        tree.set_case_sensitive(req.case_sensitive);
        let wim_report = match (&req.windows_wim, &wims.windows) {
            (Some((path, index)), Some(w)) => Some(
                tree_wim::add_image(&mut tree, Tree::ROOT, w, *index)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            ),
            _ => None,
        };
        let store = containers::add_base_images(&mut tree, &wims.bases, filetime, &mut || {
            Ok(seed_bytes.clone())
        })?;
        Some(VolumeContent {
            tree,
            wim: wim_report,
            base_images: store,
        })
    } else {
        None
    };
    plan_with(req, seed_bytes, volume, &|_, _| Ok(esp.clone()))
}

/// What the Windows partition is filled from.
pub struct VolumeContent {
    pub tree: Tree,
    pub wim: Option<WimApplyReport>,
    pub base_images: Vec<StoreEntry>,
}

/// Lay out the disk for `req` with the given seed and Windows volume content; `esp` gives
/// the ESP files once the layout (and so every partition GUID) is known. Writes nothing; a
/// volume that cannot fit is refused here.
pub fn plan_with(
    req: &DiskRequest,
    seed_bytes: Vec<u8>,
    volume: Option<VolumeContent>,
    esp: &dyn Fn(&GptLayout, Option<&Tree>) -> io::Result<EspFiles>,
) -> io::Result<DiskPlan> {
    let layout = gpt::plan_windows_layout(
        &WindowsLayoutRequest {
            disk_size: req.size,
            sector_size: req.sector_size,
            esp_size: req.esp_size,
            msr_size: req.msr_size,
        },
        &seed_bytes,
    )?;
    let win = layout
        .partition(Role::Windows)
        .expect("the Windows layout has a Windows partition");
    let (windows, tree, volume) = match volume {
        Some(v) => {
            let filetime = unix_to_filetime(req.time);
            let nopts = ntfs_options(&seed_bytes, win, req, filetime);
            let planned = ntfs::plan_volume(&v.tree, &nopts).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the Windows partition ({}) cannot hold the image: {e}; give a larger --size",
                        Bytes(win.size())
                    ),
                )
            })?;
            let check = planned.report();
            let plan = WindowsVolumePlan {
                wim: v.wim,
                base_images: v.base_images,
                cluster_size: nopts.cluster_size,
                used_bytes: check.used_clusters * nopts.cluster_size as u64,
                mft_records: check.mft_records,
                serial: format!("{:016X}", nopts.serial),
            };
            (Some(plan), Some(v.tree), Some(planned))
        }
        None => (None, None, None),
    };
    let esp = esp(&layout, tree.as_ref())?;
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
        windows,
        esp,
        tree,
        seed_bytes,
        volume: std::sync::Mutex::new(volume),
    })
}

/// Refuse an image index the WIM does not have (indexes start at 1).
pub fn check_image_index(path: &Path, wim: &Wim, index: usize) -> io::Result<()> {
    if index == 0 || index > wim.image_count() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: no image {index}; the file holds images 1 to {}",
                path.display(),
                wim.image_count()
            ),
        ));
    }
    Ok(())
}

/// The WIMs a disk request names, opened once.
struct OpenedWims {
    windows: Option<Arc<Wim>>,
    bases: Vec<(PathBuf, Arc<Wim>, usize)>,
}

/// Open every WIM and add what identifies it to the default seed: size, GUID and the
/// image XML, so a changed input changes every GUID without hashing gigabytes.
fn open_wims(req: &DiskRequest, sb: &mut SeedBuilder) -> io::Result<OpenedWims> {
    let open = |p: &Path| -> io::Result<Arc<Wim>> {
        Wim::open(p).map(Arc::new).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        })
    };
    let id = |sb: &mut SeedBuilder, label: &str, w: &Wim, index: usize| {
        sb.add(label, &w.header().guid)
            .add("size", &w.file_size().to_le_bytes())
            .add("index", &(index as u64).to_le_bytes())
            .add(
                "images",
                serde_json::to_string(w.images())
                    .unwrap_or_default()
                    .as_bytes(),
            );
    };
    let windows = match &req.windows_wim {
        Some((p, index)) => {
            let w = open(p)?;
            check_image_index(p, &w, *index)?;
            id(sb, "windows-wim", &w, *index);
            Some(w)
        }
        None => None,
    };
    let mut bases = Vec::new();
    for (p, index) in &req.base_images {
        let w = open(p)?;
        let index = index.unwrap_or(1);
        check_image_index(p, &w, index)?;
        id(sb, "base-image", &w, index);
        bases.push((p.clone(), w, index));
    }
    Ok(OpenedWims { windows, bases })
}

fn ntfs_options(
    seed: &[u8],
    win: &PlannedPartition,
    req: &DiskRequest,
    filetime: u64,
) -> NtfsOptions {
    let serial = Guid::derive_u64(seed, "ntfs:serial");
    NtfsOptions {
        size: win.size(),
        cluster_size: req.cluster_size,
        sector_size: req.sector_size as u32,
        hidden_sectors: win.first_lba,
        serial,
        label: String::new(),
        time: filetime,
        ..NtfsOptions::default()
    }
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
/// Write the planned disk; returns the output file's SHA-256 when the container could
/// compute it while writing (VHDX), else None.
pub fn write(plan: &DiskPlan, req: &DiskRequest) -> io::Result<Option<[u8; 32]>> {
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
            digest: req.digest,
        },
    )?;
    let volume = match &plan.tree {
        Some(tree) => {
            let win = plan
                .layout
                .partition(Role::Windows)
                .expect("the Windows layout has a Windows partition");
            let mut v = plan
                .volume
                .lock()
                .ok()
                .and_then(|mut v| v.take())
                .ok_or_else(|| io::Error::other("this disk plan was already written"))?;
            v.set_progress(req.progress.clone());
            Some((win.offset(), tree, v))
        }
        None => None,
    };
    // Write in ascending offset order: primary GPT, ESP, the Windows volume, then the
    // backup GPT at the end; the container learns these ranges first.
    let first = esp_part.offset();
    let boundary = plan.layout.first_usable_lba * plan.layout.sector_size;
    let gpt_ranges = gpt_mem.data_ranges()?;
    let mut ranges: Vec<Range<u64>> = gpt_ranges
        .iter()
        .filter(|r| r.start < boundary)
        .cloned()
        .collect();
    ranges.extend(
        esp.data_ranges()?
            .into_iter()
            .map(|r| r.start + first..r.end + first),
    );
    if let Some((at, _, v)) = &volume {
        ranges.extend(v.written_ranges(*at));
    }
    ranges.extend(gpt_ranges.iter().filter(|r| r.start >= boundary).cloned());
    out.reserve(&ranges)?;
    gpt::write_table(&plan.layout, &gpt_mem, TableCopy::Primary, out.as_mut())?;
    fat::place(&esp, out.as_mut(), first)?;
    if let Some((at, tree, v)) = volume {
        v.write(tree, out.as_mut(), at)?;
    }
    gpt::write_table(&plan.layout, &gpt_mem, TableCopy::Backup, out.as_mut())?;
    let digest = out.finish_digest()?;
    pending.commit()?;
    Ok(digest)
}
