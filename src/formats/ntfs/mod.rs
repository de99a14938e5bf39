//! NTFS 3.1 writer: turns a [`Tree`] into a fresh, cleanly unmounted volume in one
//! sequential pass.
//!
//! Facts and sources: docs/facts-ntfs.md (boot sector §1, reserved records §2, records and
//! fixups §3, $STANDARD_INFORMATION/$FILE_NAME §4, indexes §5, runlists §6, attribute lists
//! §7, names/links/reparse/object ids §8, chkdsk pitfalls §9), which cites mkntfs, the
//! ntfs-3g and Linux ntfs3 headers, libfsntfs' documentation and bytes written by Windows 10.
//!
//! The layout is planned before anything is written: every MFT record, index block and
//! cluster run is decided from the tree's metadata, the volume is checked to be large
//! enough, then the target is written front to back while contents are pulled (and read
//! ahead on worker threads). Memory holds metadata only.
//!
//! Deliberate differences from mkntfs, accepted by ntfs-3g: every system file has the
//! 72-byte $STANDARD_INFORMATION with a security id and no inline $SECURITY_DESCRIPTOR
//! (Windows mixes both forms); $MFTMirr follows $MFT and its bitmap (Windows puts it at
//! LCN 2, mkntfs mid-volume; any free place works); user names without a DOS name are in
//! the POSIX name space, as Windows 10 writes them when 8.3 names are off. Unverified
//! against Windows itself: the all-0xFF $LogFile (what mkntfs leaves) and compression
//! unit 0 on sparse $DATA (ntfs-3g uses 4).
//!
//! ```
//! use nanoforge::core::MemDisk;
//! use nanoforge::formats::ntfs::{write_volume, NtfsOptions};
//! use nanoforge::tree::{Content, Meta, Tree};
//!
//! let t0 = 133_000_000_000_000_000; // a FILETIME
//! let mut tree = Tree::new(Meta::at(t0));
//! let dir = tree.add_dir(Tree::ROOT, "Windows", Meta::at(t0)).unwrap();
//! tree.add_file(dir, "hello.txt", Meta::at(t0), Content::bytes(b"hi".to_vec())).unwrap();
//! let opts = NtfsOptions { size: 16 << 20, serial: 7, time: t0, ..NtfsOptions::default() };
//! let mut disk = MemDisk::new(opts.size);
//! let report = write_volume(&tree, &opts, &mut disk, 0).unwrap();
//! assert_eq!(report.files, 1);
//! ```

mod index;
mod meta;
mod plan;
pub mod read;
mod record;
mod system;
mod write;

use crate::core::WriteAt;
use crate::tree::Tree;

pub use meta::{default_descriptor, security_hash, system_descriptor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NTFS options: {0}")]
    Options(String),
    #[error("the files need {needed} clusters of {cluster_size} bytes but the volume has {available}; make the volume at least {min_size} bytes")]
    VolumeFull {
        needed: u64,
        available: u64,
        cluster_size: u32,
        min_size: u64,
    },
    #[error("{path}: {why}")]
    Unsupported { path: String, why: String },
    #[error("{path}: {why}; fix the tree before writing")]
    Invalid { path: String, why: String },
    #[error("writing the NTFS volume at byte {offset:#x}: {source}")]
    Write {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the contents of {path}: {source}")]
    Content {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// How to format the volume.
#[derive(Debug, Clone)]
pub struct NtfsOptions {
    /// Volume (partition) size in bytes.
    pub size: u64,
    /// Bytes per cluster: a power of two in 512..=65536.
    pub cluster_size: u32,
    /// 512 or 4096.
    pub sector_size: u32,
    /// Partition start LBA, stored in the boot sector for booting.
    pub hidden_sectors: u64,
    /// Volume serial number (derive it from the seed).
    pub serial: u64,
    /// Volume label, at most 128 UTF-16 code units.
    pub label: String,
    /// FILETIME given to the metadata files.
    pub time: u64,
    /// Worker threads that read file contents ahead of the writer.
    pub prefetch_threads: usize,
    /// Bytes of file contents those workers may hold at once.
    pub prefetch_bytes: u64,
    /// Told the size of each file content as it is written.
    pub progress: ProgressHook,
}

/// A callback told how many content bytes were written (for progress bars).
#[derive(Clone, Default)]
pub struct ProgressHook(pub Option<std::sync::Arc<dyn Fn(u64) + Send + Sync>>);

impl ProgressHook {
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> ProgressHook {
        ProgressHook(Some(std::sync::Arc::new(f)))
    }

    pub fn report(&self, n: u64) {
        if let Some(f) = &self.0 {
            f(n)
        }
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressHook(set)"
        } else {
            "ProgressHook(none)"
        })
    }
}

impl Default for NtfsOptions {
    fn default() -> Self {
        NtfsOptions {
            size: 0,
            cluster_size: 4096,
            sector_size: 512,
            hidden_sectors: 0,
            serial: 0,
            label: String::new(),
            time: 0,
            prefetch_threads: 4,
            prefetch_bytes: 16 << 20,
            progress: ProgressHook::default(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfsReport {
    pub cluster_size: u32,
    pub total_clusters: u64,
    pub used_clusters: u64,
    pub mft_records: u64,
    pub files: u64,
    pub directories: u64,
    pub data_bytes: u64,
}

/// Write `tree` as a fresh NTFS volume at `partition_offset` of `out`. Everything is
/// checked and laid out before the first byte is written.
pub fn write_volume(
    tree: &Tree,
    opts: &NtfsOptions,
    out: &mut dyn WriteAt,
    partition_offset: u64,
) -> Result<NtfsReport, Error> {
    plan_volume(tree, opts)?.write(tree, out, partition_offset)
}

/// A volume laid out and ready to write: [`write_volume`] in two steps, for callers that
/// want to know the ranges it will write first (see [`WriteAt::reserve`]).
pub struct VolumePlan(plan::Plan);

impl std::fmt::Debug for VolumePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumePlan")
            .field("used_clusters", &self.0.used_clusters)
            .finish_non_exhaustive()
    }
}

/// Lay out `tree` as a volume made with `opts` (everything checked, nothing written).
pub fn plan_volume(tree: &Tree, opts: &NtfsOptions) -> Result<VolumePlan, Error> {
    plan::Plan::new(tree, opts).map(VolumePlan)
}

impl VolumePlan {
    /// What the volume will hold, as [`check_volume`] reports it.
    pub fn report(&self) -> NtfsReport {
        self.0.report()
    }

    /// Tell `hook` the bytes of each file as it is written.
    pub fn set_progress(&mut self, hook: ProgressHook) {
        self.0.opts.progress = hook;
    }

    /// The byte ranges of `out` the volume will write when placed at `partition_offset`:
    /// its planned areas, merged, ascending, and the backup boot sector.
    pub fn written_ranges(&self, partition_offset: u64) -> Vec<std::ops::Range<u64>> {
        let p = &self.0;
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        let backup = p.size - p.sector..p.size;
        let areas = p
            .jobs
            .iter()
            .map(|j| j.lcn * p.cs..(j.lcn + j.clusters) * p.cs);
        for r in areas.chain(std::iter::once(backup)) {
            let r = partition_offset + r.start..partition_offset + r.end;
            match out.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }

    /// The single writing pass.
    pub fn write(
        mut self,
        tree: &Tree,
        out: &mut dyn WriteAt,
        partition_offset: u64,
    ) -> Result<NtfsReport, Error> {
        let r = self.0.write(tree, out, partition_offset);
        // Its records and indexes are many small allocations: free them beside the
        // caller's finishing work (the container's last writes and sync).
        let _ = std::thread::Builder::new()
            .name("plan-free".into())
            .spawn(move || drop(self));
        r
    }
}

/// Plan only: check that `tree` fits a volume made with `opts`, without writing.
pub fn check_volume(tree: &Tree, opts: &NtfsOptions) -> Result<NtfsReport, Error> {
    Ok(plan::Plan::new(tree, opts)?.report())
}
