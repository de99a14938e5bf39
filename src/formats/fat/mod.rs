//! FAT32 EFI system partition: formatting, population and listing.
//!
//! Format: Microsoft "FAT: General Overview of On-Disk Format" (FAT32 BPB, FSInfo) and
//! UEFI 2.10 section 13.3 (the ESP is FAT32). The bytes are produced by the `fatfs` crate,
//! given a fixed volume id and a time provider that returns the build time, so two builds
//! with the same inputs are identical.

use crate::core::block::{copy_sparse, MemDisk, ReadAt, WriteAt};
use crate::core::time::civil;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ESP of {size} bytes cannot hold FAT32 with {sector}-byte sectors: FAT32 needs at least 65525 clusters; use an ESP of 260 MiB or more")]
    TooSmallForFat32 { size: u64, sector: u64 },
    #[error(
        "ESP path '{0}' is not valid: use forward-slash separated names without '..', NUL or ':'"
    )]
    BadPath(String),
    #[error(
        "ESP files need {needed} bytes but the ESP holds {free} free bytes; give a larger ESP"
    )]
    Full { needed: u64, free: u64 },
    #[error("FAT32 ESP: {0}")]
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

/// Files to place on the ESP: path (forward slashes, e.g. `EFI/Boot/bootx64.efi`) to bytes.
/// Directories are implied by the paths. Sorted, so population order is deterministic.
pub type EspFiles = BTreeMap<String, Vec<u8>>;

/// How to format the ESP.
#[derive(Debug, Clone)]
pub struct EspOptions {
    pub size: u64,
    pub sector_size: u64,
    pub volume_id: u32,
    pub label: [u8; 11],
    /// Build time (Unix seconds) stamped on every entry.
    pub time: i64,
    /// Sectors before the partition (its start LBA), recorded in the BPB as Windows does.
    pub hidden_sectors: u32,
}

/// The fixed clock handed to fatfs: always the build time.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

fn fat_time(unix: i64) -> fatfs::DateTime {
    // FAT dates run from 1980 to 2107; clamp so any SOURCE_DATE_EPOCH is representable.
    let (y, mo, d, h, mi, s) = civil(unix.clamp(315_532_800, 4_354_819_199));
    fatfs::DateTime {
        date: fatfs::Date {
            year: y as u16,
            month: mo as u16,
            day: d as u16,
        },
        time: fatfs::Time {
            hour: h as u16,
            min: mi as u16,
            sec: (s & !1) as u16,
            millis: 0,
        },
    }
}

fn check_path(p: &str) -> Result<Vec<&str>, Error> {
    let parts: Vec<&str> = p.split('/').collect();
    let bad = parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains(['\0', ':', '\\']));
    if bad || parts.is_empty() {
        return Err(Error::BadPath(p.to_string()));
    }
    Ok(parts)
}

/// Format a FAT32 volume and fill it with `files`. Returns the sparse volume image.
pub fn build_esp(opts: &EspOptions, files: &EspFiles) -> Result<MemDisk, Error> {
    let ss = opts.sector_size;
    // One sector per cluster keeps the cluster count above the FAT32 minimum of 65525 on
    // 260 MiB with 4 KiB sectors, the configuration Microsoft documents for 4Kn disks.
    let cluster = if ss == 4096 { 4096 } else { 4096.min(ss * 8) };
    if opts.size / cluster < 65_525 + 1024 {
        return Err(Error::TooSmallForFat32 {
            size: opts.size,
            sector: ss,
        });
    }
    let mut disk = MemDisk::new(opts.size);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_sector(ss as u16)
            .bytes_per_cluster(cluster as u32)
            .total_sectors((opts.size / ss) as u32)
            .volume_id(opts.volume_id)
            .volume_label(opts.label),
    )?;
    disk.seek(SeekFrom::Start(0))?;
    let time: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_time(opts.time))));
    {
        let fs = fatfs::FileSystem::new(
            &mut disk,
            fatfs::FsOptions::new()
                .update_accessed_date(false)
                .time_provider(time),
        )?;
        let needed: u64 = files
            .values()
            .map(|v| (v.len() as u64).div_ceil(cluster) * cluster)
            .sum();
        let free = fs.stats()?.free_clusters() as u64 * cluster;
        if needed > free {
            return Err(Error::Full { needed, free });
        }
        for (path, data) in files {
            let root = fs.root_dir();
            let parts = check_path(path)?;
            let mut dir = root;
            for d in &parts[..parts.len() - 1] {
                // Re-open a directory just created: the handle create_dir returns can
                // place the first entries over the new directory's "." and "..".
                if dir.open_dir(d).is_err() {
                    dir.create_dir(d)?;
                }
                dir = dir.open_dir(d)?;
            }
            let mut f = dir.create_file(parts[parts.len() - 1])?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    fix_dot_entries(&mut disk)?;
    set_hidden_sectors(&mut disk, opts.hidden_sectors)?;
    Ok(disk)
}

/// Record the partition's start LBA in BPB_HiddSec (offset 0x1C) of the boot sector and of
/// its backup (BPB_BkBootSec); fatfs has no option for it.
fn set_hidden_sectors(disk: &mut MemDisk, hidden: u32) -> io::Result<()> {
    let mut bs = [0u8; 512];
    disk.read_at(0, &mut bs)?;
    let backup = le16(&bs, 50) * le16(&bs, 11);
    for base in [0, backup] {
        disk.write_at(base + 0x1C, &hidden.to_le_bytes())?;
    }
    Ok(())
}

/// Little-endian field readers over a sector buffer.
fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

/// Size of a directory entry (FAT spec, "FAT Directory Structure").
const DIR_ENTRY: usize = 32;
/// Attribute value of a long-name entry.
const ATTR_LONG_NAME: u8 = 0x0F;
const ATTR_DIRECTORY: u8 = 0x10;
/// First byte of a deleted (free) entry.
const DELETED: u8 = 0xE5;

/// Make every subdirectory start with plain "." and ".." entries, as the FAT spec requires
/// and fsck.fat and Windows check. fatfs 0.3 writes a long-name entry before each of them
/// and points ".." of a top-level directory at the root's cluster instead of 0; here the
/// short entries move to slots 0 and 1, the stray long-name slots become free entries, and
/// ".." of top-level directories gets cluster 0.
fn fix_dot_entries(disk: &mut MemDisk) -> io::Result<()> {
    let mut bs = [0u8; 512];
    disk.read_at(0, &mut bs)?;
    let bytes_per_sector = le16(&bs, 11);
    let cluster = bytes_per_sector * bs[13] as u64;
    let reserved = le16(&bs, 14);
    let fats = bs[16] as u64;
    let fat_sectors = le32(&bs, 36);
    let root_cluster = le32(&bs, 44);
    let fat_offset = reserved * bytes_per_sector;
    let data_offset = (reserved + fats * fat_sectors) * bytes_per_sector;
    let cluster_offset = |c: u64| data_offset + (c - 2) * cluster;
    let next_cluster = |d: &MemDisk, c: u64| -> io::Result<Option<u64>> {
        let mut e = [0u8; 4];
        d.read_at(fat_offset + c * 4, &mut e)?;
        let n = u32::from_le_bytes(e) as u64 & 0x0FFF_FFFF;
        Ok((2..0x0FFF_FFF8).contains(&n).then_some(n))
    };
    // Walk directories breadth-first from the root: (first cluster, is the root).
    let mut queue = std::collections::VecDeque::from([(root_cluster, true)]);
    let mut seen = std::collections::BTreeSet::new();
    while let Some((first, is_root)) = queue.pop_front() {
        if !seen.insert(first) {
            continue;
        }
        let mut c = Some(first);
        let mut index = 0usize;
        let mut buf = vec![0u8; cluster as usize];
        while let Some(cl) = c {
            disk.read_at(cluster_offset(cl), &mut buf)?;
            if index == 0 && !is_root {
                normalise_dots(&mut buf, root_cluster);
                disk.write_at(cluster_offset(cl), &buf)?;
            }
            for e in buf.chunks_exact(DIR_ENTRY) {
                if e[0] == 0 {
                    break;
                }
                let attr = e[11];
                if e[0] == DELETED
                    || attr == ATTR_LONG_NAME
                    || attr & ATTR_DIRECTORY == 0
                    || e[0] == b'.'
                {
                    continue;
                }
                let child = (le16(e, 20) << 16) | le16(e, 26);
                if child >= 2 {
                    queue.push_back((child, false));
                }
            }
            index += 1;
            c = next_cluster(disk, cl)?;
        }
    }
    Ok(())
}

/// Rewrite the first entries of a subdirectory's first cluster: "." then "..".
fn normalise_dots(buf: &mut [u8], root_cluster: u64) {
    let mut dot: Option<[u8; DIR_ENTRY]> = None;
    let mut dotdot: Option<[u8; DIR_ENTRY]> = None;
    let mut last = 0;
    for (i, e) in buf.chunks_exact(DIR_ENTRY).enumerate().take(4) {
        if e[11] == ATTR_LONG_NAME || e[0] == 0 {
            continue;
        }
        if &e[..11] == b".          " {
            dot = Some(e.try_into().expect("32 bytes"));
            last = i;
        } else if &e[..11] == b"..         " {
            dotdot = Some(e.try_into().expect("32 bytes"));
            last = i;
        }
    }
    let (Some(dot), Some(mut dotdot)) = (dot, dotdot) else {
        return;
    };
    if (le16(&dotdot, 20) << 16 | le16(&dotdot, 26)) == root_cluster {
        dotdot[20..22].fill(0);
        dotdot[26..28].fill(0);
    }
    for (i, e) in buf.chunks_exact_mut(DIR_ENTRY).enumerate().take(last + 1) {
        match i {
            0 => e.copy_from_slice(&dot),
            1 => e.copy_from_slice(&dotdot),
            _ => {
                e.fill(0);
                e[0] = DELETED;
            }
        }
    }
}

/// A file or directory found on a FAT volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FatEntry {
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
}

/// Copy a FAT partition out of `disk` into memory (sparse) and open it.
fn load(disk: &dyn ReadAt, offset: u64, size: u64) -> io::Result<MemDisk> {
    let window = Window { disk, offset, size };
    let mut mem = MemDisk::new(size);
    copy_sparse(&window, &mut mem, 0, 1 << 20, |_| ())?;
    Ok(mem)
}

/// List every entry of the FAT volume at `offset` (sorted by path).
pub fn list(disk: &dyn ReadAt, offset: u64, size: u64) -> Result<Vec<FatEntry>, Error> {
    let mut mem = load(disk, offset, size)?;
    let fs = fatfs::FileSystem::new(
        &mut mem,
        fatfs::FsOptions::new().update_accessed_date(false),
    )?;
    let mut out = Vec::new();
    walk(&fs.root_dir(), "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Read one file of the FAT volume at `offset`.
pub fn read_file(disk: &dyn ReadAt, offset: u64, size: u64, path: &str) -> Result<Vec<u8>, Error> {
    let mut mem = load(disk, offset, size)?;
    let fs = fatfs::FileSystem::new(
        &mut mem,
        fatfs::FsOptions::new().update_accessed_date(false),
    )?;
    let mut f = fs.root_dir().open_file(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<T>,
    prefix: &str,
    out: &mut Vec<FatEntry>,
) -> io::Result<()> {
    for e in dir.iter() {
        let e = e?;
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.is_dir() {
            out.push(FatEntry {
                path: path.clone(),
                is_dir: true,
                size: 0,
            });
            walk(&e.to_dir(), &path, out)?;
        } else {
            out.push(FatEntry {
                path,
                is_dir: false,
                size: e.len(),
            });
        }
    }
    Ok(())
}

/// A byte window of a disk, seen as a disk of its own.
pub struct Window<'a> {
    pub disk: &'a dyn ReadAt,
    pub offset: u64,
    pub size: u64,
}

impl ReadAt for Window<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::core::block::check_range(offset, buf.len(), self.size)?;
        self.disk.read_at(self.offset + offset, buf)
    }
    fn data_ranges(&self) -> io::Result<Vec<std::ops::Range<u64>>> {
        let end = self.offset + self.size;
        Ok(self
            .disk
            .data_ranges()?
            .into_iter()
            .filter(|r| r.end > self.offset && r.start < end)
            .map(|r| r.start.max(self.offset) - self.offset..r.end.min(end) - self.offset)
            .collect())
    }
}

/// Copy a built ESP into the disk at the partition's offset.
pub fn place(esp: &MemDisk, out: &mut dyn WriteAt, offset: u64) -> io::Result<()> {
    copy_sparse(esp, out, offset, 1 << 20, |_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::MIB;

    fn opts(ss: u64) -> EspOptions {
        EspOptions {
            size: 260 * MIB,
            sector_size: ss,
            volume_id: 0x1234_5678,
            label: *b"ESP        ",
            time: 1_700_000_000,
            hidden_sectors: 2048,
        }
    }

    #[test]
    fn build_list_read_and_determinism() {
        for ss in [512, 4096] {
            let mut files = EspFiles::new();
            files.insert("EFI/Boot/bootx64.efi".into(), vec![7u8; 100_000]);
            files.insert(
                "EFI/Microsoft/Boot/A long file name.txt".into(),
                b"hello".to_vec(),
            );
            let a = build_esp(&opts(ss), &files).unwrap();
            let b = build_esp(&opts(ss), &files).unwrap();
            let (mut x, mut y) = (
                vec![0u8; (260 * MIB) as usize],
                vec![0u8; (260 * MIB) as usize],
            );
            a.read_at(0, &mut x).unwrap();
            b.read_at(0, &mut y).unwrap();
            assert!(x == y, "two builds differ");
            let l = list(&a, 0, 260 * MIB).unwrap();
            let paths: Vec<_> = l.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "EFI",
                    "EFI/Boot",
                    "EFI/Boot/bootx64.efi",
                    "EFI/Microsoft",
                    "EFI/Microsoft/Boot",
                    "EFI/Microsoft/Boot/A long file name.txt"
                ]
            );
            assert_eq!(
                read_file(&a, 0, 260 * MIB, "EFI/Microsoft/Boot/A long file name.txt").unwrap(),
                b"hello"
            );
        }
    }

    #[test]
    fn bad_paths_and_small_volumes_are_refused() {
        let mut files = EspFiles::new();
        files.insert("EFI/../x".into(), vec![]);
        assert!(matches!(
            build_esp(&opts(512), &files),
            Err(Error::BadPath(_))
        ));
        let mut o = opts(4096);
        o.size = 100 * MIB;
        assert!(matches!(
            build_esp(&o, &EspFiles::new()),
            Err(Error::TooSmallForFat32 { .. })
        ));
    }
}
