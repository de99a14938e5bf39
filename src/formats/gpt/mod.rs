//! GUID Partition Table: layout planning and writing.
//!
//! Format: UEFI Specification 2.10, chapter 5 "GUID Partition Table (GPT) Disk Layout"
//! (protective MBR 5.2.3, header 5.3.2, entries 5.3.3). The bytes are produced by the
//! `gpt` crate; we pass every GUID explicitly (it would draw random ones otherwise).
//!
//! The Windows layout (ESP, MSR, basic data) and its sizes follow Microsoft's
//! "UEFI/GPT-based hard drive partitions" guidance: ESP FAT32 of at least 260 MiB on 4 KiB
//! sector disks, MSR 16 MiB, partitions aligned to 1 MiB.

use crate::core::block::{MemDisk, ReadAt, ReadCursor, WriteAt};
use crate::core::guid::Guid;
use crate::core::units::{Bytes, MIB};
use std::collections::BTreeMap;
use std::io;

/// EFI system partition (UEFI 2.10 table 5.7).
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Microsoft reserved partition.
pub const TYPE_MSR: &str = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE";
/// Microsoft basic data partition (NTFS, FAT).
pub const TYPE_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

/// Partition alignment: 1 MiB, as Windows Setup and diskpart align.
pub const ALIGNMENT: u64 = MIB;
/// Number of entries in the partition entry array (the UEFI minimum of 16 KiB of entries).
pub const ENTRY_COUNT: u64 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u64 = 128;
/// Default ESP size: large enough for FAT32 on 4 KiB-sector disks.
pub const DEFAULT_ESP_SIZE: u64 = 260 * MIB;
/// MSR size Windows uses on disks over 16 GiB, and what Nano images use.
pub const DEFAULT_MSR_SIZE: u64 = 16 * MIB;
/// Smallest Windows partition we will lay out: anything smaller cannot hold even a
/// fresh NTFS volume with its metadata files.
pub const MIN_WINDOWS_SIZE: u64 = 16 * MIB;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sector size {0} is not supported: use 512 or 4096")]
    SectorSize(u64),
    #[error("disk size {size} is not a multiple of the {sector}-byte sector size; round it to a multiple of 1 MiB")]
    Unaligned { size: u64, sector: u64 },
    #[error("disk of {} is too small: the layout needs at least {} ({}); give a larger --size", Bytes(*size), Bytes(*needed), .what)]
    TooSmall {
        size: u64,
        needed: u64,
        what: String,
    },
    #[error("partition {0}: {1}")]
    BadPartition(String, String),
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("I/O while writing the GPT: {0}")]
    Io(#[from] io::Error),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}

/// What a partition is for, in the Windows layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Esp,
    Msr,
    Windows,
}

/// A partition placed on the disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedPartition {
    pub number: u32,
    pub role: Role,
    pub name: String,
    pub type_guid: Guid,
    pub part_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub sector_size: u64,
}

impl PlannedPartition {
    pub fn offset(&self) -> u64 {
        self.first_lba * self.sector_size
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * self.sector_size
    }
}

/// A complete planned partition table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GptLayout {
    pub disk_size: u64,
    pub sector_size: u64,
    pub disk_guid: Guid,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub partitions: Vec<PlannedPartition>,
}

impl GptLayout {
    pub fn partition(&self, role: Role) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }
}

/// Sizes requested for the Windows layout.
#[derive(Debug, Clone, Copy)]
pub struct WindowsLayoutRequest {
    pub disk_size: u64,
    pub sector_size: u64,
    pub esp_size: u64,
    pub msr_size: u64,
}

/// GUIDs for a layout, derived from the build seed.
pub fn derived_guids(seed: &[u8]) -> (Guid, [Guid; 3]) {
    (
        Guid::derive(seed, "gpt:disk"),
        [
            Guid::derive(seed, "gpt:partition:esp"),
            Guid::derive(seed, "gpt:partition:msr"),
            Guid::derive(seed, "gpt:partition:windows"),
        ],
    )
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Plan ESP, MSR and Windows partitions. Pure: no I/O, same input same output.
pub fn plan_windows_layout(req: &WindowsLayoutRequest, seed: &[u8]) -> Result<GptLayout, Error> {
    let ss = req.sector_size;
    if ss != 512 && ss != 4096 {
        return Err(Error::SectorSize(ss));
    }
    if !req.disk_size.is_multiple_of(ss) {
        return Err(Error::Unaligned {
            size: req.disk_size,
            sector: ss,
        });
    }
    for (what, v) in [("ESP", req.esp_size), ("MSR", req.msr_size)] {
        if v == 0 || !v.is_multiple_of(ALIGNMENT) {
            return Err(Error::BadPartition(
                what.into(),
                format!("size {v} must be a non-zero multiple of 1 MiB"),
            ));
        }
    }
    let entry_sectors = (ENTRY_COUNT * ENTRY_SIZE).div_ceil(ss);
    let total_sectors = req.disk_size / ss;
    // LBA 0 protective MBR, LBA 1 header, then the entry array; the same at the end.
    let first_usable = 2 + entry_sectors;
    let needed_tail = 1 + entry_sectors;
    let align = ALIGNMENT / ss;
    let esp_first = align_up(first_usable, align);
    let esp_len = req.esp_size / ss;
    let msr_first = esp_first + esp_len;
    let msr_len = req.msr_size / ss;
    let win_first = msr_first + msr_len;
    let min_sectors = win_first + MIN_WINDOWS_SIZE / ss + needed_tail;
    if total_sectors < min_sectors {
        return Err(Error::TooSmall {
            size: req.disk_size,
            needed: align_up(min_sectors * ss, MIB),
            what: format!(
                "{} ESP + {} MSR + {} Windows + GPT structures",
                Bytes(req.esp_size),
                Bytes(req.msr_size),
                Bytes(MIN_WINDOWS_SIZE)
            ),
        });
    }
    let last_usable = total_sectors - needed_tail - 1;
    // The Windows partition also ends on a 1 MiB boundary (as diskpart leaves it), so tools
    // that check alignment of both ends are satisfied; at most 1 MiB stays unused.
    let win_last = (last_usable + 1) / align * align - 1;
    let (disk_guid, [esp_guid, msr_guid, win_guid]) = derived_guids(seed);
    let part = |number, role, name: &str, ty: &str, guid, first, last| PlannedPartition {
        number,
        role,
        name: name.to_string(),
        type_guid: ty.parse().expect("constant type GUIDs parse"),
        part_guid: guid,
        first_lba: first,
        last_lba: last,
        sector_size: ss,
    };
    Ok(GptLayout {
        disk_size: req.disk_size,
        sector_size: ss,
        disk_guid,
        first_usable_lba: first_usable,
        last_usable_lba: last_usable,
        partitions: vec![
            part(
                1,
                Role::Esp,
                "EFI system partition",
                TYPE_ESP,
                esp_guid,
                esp_first,
                msr_first - 1,
            ),
            part(
                2,
                Role::Msr,
                "Microsoft reserved partition",
                TYPE_MSR,
                msr_guid,
                msr_first,
                win_first - 1,
            ),
            part(
                3,
                Role::Windows,
                "Basic data partition",
                TYPE_BASIC_DATA,
                win_guid,
                win_first,
                win_last,
            ),
        ],
    })
}

/// Plan a disk holding one basic data partition from the first 1 MiB boundary to the last
/// whole MiB (the layout of a data disk such as the container store's blank.vhdx). Pure.
pub fn plan_single_data_layout(
    disk_size: u64,
    sector_size: u64,
    seed: &[u8],
) -> Result<GptLayout, Error> {
    let ss = sector_size;
    if ss != 512 && ss != 4096 {
        return Err(Error::SectorSize(ss));
    }
    if !disk_size.is_multiple_of(ss) {
        return Err(Error::Unaligned {
            size: disk_size,
            sector: ss,
        });
    }
    let entry_sectors = (ENTRY_COUNT * ENTRY_SIZE).div_ceil(ss);
    let total = disk_size / ss;
    let first_usable = 2 + entry_sectors;
    let align = ALIGNMENT / ss;
    let first = align_up(first_usable, align);
    let needed = first + MIN_WINDOWS_SIZE / ss + 1 + entry_sectors;
    if total < needed {
        return Err(Error::TooSmall {
            size: disk_size,
            needed: align_up(needed * ss, MIB),
            what: format!(
                "{} data partition + GPT structures",
                Bytes(MIN_WINDOWS_SIZE)
            ),
        });
    }
    let last_usable = total - entry_sectors - 2;
    let last = (last_usable + 1) / align * align - 1;
    Ok(GptLayout {
        disk_size,
        sector_size: ss,
        disk_guid: Guid::derive(seed, "gpt:disk"),
        first_usable_lba: first_usable,
        last_usable_lba: last_usable,
        partitions: vec![PlannedPartition {
            number: 1,
            role: Role::Windows,
            name: "Basic data partition".into(),
            type_guid: TYPE_BASIC_DATA.parse().expect("constant type GUIDs parse"),
            part_guid: Guid::derive(seed, "gpt:partition:data"),
            first_lba: first,
            last_lba: last,
            sector_size: ss,
        }],
    })
}

/// Which copy of a built table to write: the primary (protective MBR, header, entries) lies
/// before the first usable LBA, the backup after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCopy {
    Primary,
    Backup,
}

/// Copy one half of a table made by [`build_gpt`] into `out`, so callers can write the disk in
/// ascending offsets (primary, partitions, backup).
pub fn write_table(
    layout: &GptLayout,
    table: &MemDisk,
    which: TableCopy,
    out: &mut dyn WriteAt,
) -> io::Result<()> {
    let boundary = layout.first_usable_lba * layout.sector_size;
    for r in table.data_ranges()? {
        if (r.start < boundary) != (which == TableCopy::Primary) {
            continue;
        }
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        table.read_at(r.start, &mut buf)?;
        out.write_at(r.start, &buf)?;
    }
    Ok(())
}

/// Build the GPT structures on a sparse in-memory disk of the layout's size.
pub fn build_gpt(layout: &GptLayout) -> Result<MemDisk, Error> {
    let lb = match layout.sector_size {
        512 => gpt::disk::LogicalBlockSize::Lb512,
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        s => return Err(Error::SectorSize(s)),
    };
    let gerr = |e: gpt::GptError| Error::Gpt(e.to_string());
    let mut mem = MemDisk::new(layout.disk_size);
    let total = layout.disk_size / layout.sector_size;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut mem)
        .map_err(|e| Error::Gpt(e.to_string()))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(mem, Some(layout.disk_guid.to_uuid()))
        .map_err(gerr)?;
    let mut parts = BTreeMap::new();
    for p in &layout.partitions {
        parts.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: p.type_guid.to_uuid(),
                    os: gpt::partition_types::OperatingSystem::Windows,
                },
                part_guid: p.part_guid.to_uuid(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.clone(),
            },
        );
    }
    disk.update_partitions(parts).map_err(gerr)?;
    let header = disk
        .primary_header()
        .map_err(|e| Error::Gpt(e.to_string()))?;
    if header.first_usable != layout.first_usable_lba
        || header.last_usable != layout.last_usable_lba
    {
        return Err(Error::Gpt(format!(
            "usable range {}..={} differs from the plan {}..={}",
            header.first_usable,
            header.last_usable,
            layout.first_usable_lba,
            layout.last_usable_lba
        )));
    }
    disk.write().map_err(gerr)
}

/// A partition read back from a disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionInfo {
    pub number: u32,
    pub type_guid: Guid,
    pub type_name: String,
    pub part_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub offset: u64,
    pub size: u64,
    pub name: String,
}

/// Human name of a partition type GUID.
pub fn type_name(g: &Guid) -> String {
    let s = g.to_string().to_ascii_uppercase();
    match s.as_str() {
        TYPE_ESP => "EFI system".into(),
        TYPE_MSR => "Microsoft reserved".into(),
        TYPE_BASIC_DATA => "Microsoft basic data".into(),
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery".into(),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem".into(),
        _ => "unknown".into(),
    }
}

/// Read the partition table of a disk (trying 512- then 4096-byte sectors). `Ok(None)`
/// when the disk has no GPT.
pub fn read_partitions(
    disk: &dyn ReadAt,
) -> Result<Option<(u64, Guid, Vec<PartitionInfo>)>, Error> {
    for (ss, lb) in [
        (512u64, gpt::disk::LogicalBlockSize::Lb512),
        (4096, gpt::disk::LogicalBlockSize::Lb4096),
    ] {
        let mut sig = [0u8; 8];
        if disk.size() < ss * 2 {
            continue;
        }
        disk.read_at(ss, &mut sig)?;
        if &sig != b"EFI PART" {
            continue;
        }
        let dev = ReadCursor::new(disk, 0, disk.size());
        let g = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open_from_device(dev)
            .map_err(|e| {
                Error::Gpt(format!(
                    "the partition table at LBA 1 ({:#x}) cannot be read: {e}",
                    ss
                ))
            })?;
        let mut out = Vec::new();
        for (&n, p) in g.partitions() {
            if !p.is_used() {
                continue;
            }
            let tg = Guid::from_uuid(&p.part_type_guid.guid);
            out.push(PartitionInfo {
                number: n,
                type_name: type_name(&tg),
                type_guid: tg,
                part_guid: Guid::from_uuid(&p.part_guid),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                offset: p.first_lba * ss,
                size: (p.last_lba + 1 - p.first_lba) * ss,
                name: p.name.clone(),
            });
        }
        return Ok(Some((ss, Guid::from_uuid(g.guid()), out)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::GIB;

    fn req(size: u64, ss: u64) -> WindowsLayoutRequest {
        WindowsLayoutRequest {
            disk_size: size,
            sector_size: ss,
            esp_size: DEFAULT_ESP_SIZE,
            msr_size: DEFAULT_MSR_SIZE,
        }
    }

    #[test]
    fn layout_is_aligned_ordered_and_fills_the_disk_over_size_ranges() {
        for ss in [512u64, 4096] {
            for size in [
                300 * MIB,
                GIB,
                10 * GIB,
                10 * GIB + 4096 * 3,
                2 << 40,
                64 << 40,
            ] {
                let l = plan_windows_layout(&req(size, ss), b"s").unwrap();
                let mut prev_end = l.first_usable_lba;
                for p in &l.partitions {
                    assert_eq!(p.offset() % ALIGNMENT, 0, "{size} {ss} {p:?}");
                    assert!(p.first_lba >= prev_end && p.last_lba >= p.first_lba);
                    prev_end = p.last_lba + 1;
                }
                let w = l.partition(Role::Windows).unwrap();
                assert!(
                    w.last_lba <= l.last_usable_lba
                        && l.last_usable_lba - w.last_lba < ALIGNMENT / ss
                );
                assert_eq!((w.last_lba + 1) * ss % ALIGNMENT, 0);
                assert_eq!((l.last_usable_lba + 1 + 128 * 128 / ss + 1) * ss, size);
                assert_eq!(l.partition(Role::Esp).unwrap().size(), DEFAULT_ESP_SIZE);
                assert_eq!(l.partition(Role::Msr).unwrap().size(), DEFAULT_MSR_SIZE);
            }
        }
    }

    #[test]
    fn too_small_and_bad_sizes_are_refused() {
        let e = plan_windows_layout(&req(200 * MIB, 512), b"s").unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        assert!(plan_windows_layout(&req(GIB + 100, 512), b"s").is_err());
        assert!(plan_windows_layout(&req(GIB, 1024), b"s").is_err());
    }

    #[test]
    fn guids_follow_the_seed() {
        let a = plan_windows_layout(&req(GIB, 512), b"a").unwrap();
        let b = plan_windows_layout(&req(GIB, 512), b"b").unwrap();
        assert_eq!(a, plan_windows_layout(&req(GIB, 512), b"a").unwrap());
        assert_ne!(a.disk_guid, b.disk_guid);
        for (x, y) in a.partitions.iter().zip(&b.partitions) {
            assert_ne!(x.part_guid, y.part_guid);
        }
    }

    #[test]
    fn written_table_reads_back() {
        for ss in [512u64, 4096] {
            let l = plan_windows_layout(&req(GIB, ss), b"seed").unwrap();
            let mem = build_gpt(&l).unwrap();
            let (got_ss, disk_guid, parts) = read_partitions(&mem).unwrap().unwrap();
            assert_eq!(got_ss, ss);
            assert_eq!(disk_guid, l.disk_guid);
            assert_eq!(parts.len(), 3);
            for (p, q) in parts.iter().zip(&l.partitions) {
                assert_eq!(
                    (p.first_lba, p.last_lba, p.part_guid, p.type_guid),
                    (q.first_lba, q.last_lba, q.part_guid, q.type_guid)
                );
                assert_eq!(p.name, q.name);
            }
        }
    }
}
