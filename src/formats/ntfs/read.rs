//! Reading a volume back for `inspect`: geometry, MFT size, free space and the root
//! folder's entries. The parsing is done by the `ntfs` crate (an independent reader), over
//! a window of the disk.

use crate::core::block::{ReadAt, ReadCursor};
use std::io::{self, Read};

/// $MFT and $Bitmap file record numbers (fixed by the format).
const MFT_RECORD: u64 = 0;
const BITMAP_RECORD: u64 = 6;

/// What `inspect` shows of an NTFS volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NtfsSummary {
    pub label: Option<String>,
    pub serial: String,
    pub cluster_size: u32,
    pub sector_size: u16,
    pub size: u64,
    pub mft_records: u64,
    pub free_bytes: u64,
    /// Root entries: (name, is a directory), sorted, without the $ metadata files.
    pub top_level: Vec<(String, bool)>,
}

fn err(e: ntfs::NtfsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Read the summary of the NTFS volume at `offset` (`len` bytes) of `disk`.
pub fn summary(disk: &dyn ReadAt, offset: u64, len: u64) -> io::Result<NtfsSummary> {
    let mut v = VolumeReader::open(disk, offset, len)?;
    let (fs, f) = (&v.fs, &mut v.f);
    let label = match fs.volume_name(f) {
        Some(Ok(n)) => Some(n.name().to_string_lossy()),
        _ => None,
    };
    let data_len = |fs: &ntfs::Ntfs,
                    f: &mut io::BufReader<ReadCursor>,
                    rec: u64|
     -> io::Result<(u64, Vec<u8>)> {
        let file = fs.file(f, rec).map_err(err)?;
        let item = file
            .data(f, "")
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("record {rec} has no data"),
                )
            })?
            .map_err(err)?;
        let attr = item.to_attribute().map_err(err)?;
        let value_len = attr.value_length();
        let mut bytes = Vec::new();
        if rec == BITMAP_RECORD {
            attr.value(f)
                .map_err(err)?
                .attach(f)
                .read_to_end(&mut bytes)?;
        }
        Ok((value_len, bytes))
    };
    let (mft_len, _) = data_len(fs, f, MFT_RECORD)?;
    let (_, bitmap) = data_len(fs, f, BITMAP_RECORD)?;
    let total_clusters = fs.size() / fs.cluster_size() as u64;
    let used: u64 = bitmap.iter().map(|b| b.count_ones() as u64).sum();
    let root = fs.root_directory(f).map_err(err)?;
    let index = root.directory_index(f).map_err(err)?;
    let mut it = index.entries();
    let mut top = Vec::new();
    while let Some(e) = it.next(f) {
        let e = e.map_err(err)?;
        let Some(key) = e.key() else { continue };
        let key = key.map_err(err)?;
        if key.namespace() == ntfs::structured_values::NtfsFileNamespace::Dos {
            continue;
        }
        let name = key.name().to_string_lossy();
        if name.starts_with('$') || name == "." {
            continue;
        }
        top.push((name, key.is_directory()));
    }
    top.sort();
    Ok(NtfsSummary {
        label,
        serial: format!("{:016X}", fs.serial_number()),
        cluster_size: fs.cluster_size(),
        sector_size: fs.sector_size(),
        size: fs.size(),
        mft_records: mft_len / fs.file_record_size() as u64,
        free_bytes: total_clusters.saturating_sub(used) * fs.cluster_size() as u64,
        top_level: top,
    })
}

/// An open volume for looking up paths and reading files (for `inspect`).
pub struct VolumeReader<'a> {
    fs: ntfs::Ntfs,
    f: io::BufReader<ReadCursor<'a>>,
}

/// $Root's file record number.
const ROOT_RECORD: u64 = 5;

impl<'a> VolumeReader<'a> {
    pub fn open(disk: &'a dyn ReadAt, offset: u64, len: u64) -> io::Result<VolumeReader<'a>> {
        let mut f = io::BufReader::with_capacity(64 << 10, ReadCursor::new(disk, offset, len));
        let mut fs = ntfs::Ntfs::new(&mut f).map_err(err)?;
        fs.read_upcase_table(&mut f).map_err(err)?;
        Ok(VolumeReader { fs, f })
    }

    /// File record number of a path ('/' or '\\' separated), if it exists.
    pub fn lookup(&mut self, path: &str) -> io::Result<Option<u64>> {
        let mut rec = ROOT_RECORD;
        for part in path.split(['/', '\\']).filter(|p| !p.is_empty()) {
            let dir = self.fs.file(&mut self.f, rec).map_err(err)?;
            if !dir.is_directory() {
                return Ok(None);
            }
            let index = dir.directory_index(&mut self.f).map_err(err)?;
            let mut finder = index.finder();
            match ntfs::indexes::NtfsFileNameIndex::find(&mut finder, &self.fs, &mut self.f, part) {
                Some(e) => rec = e.map_err(err)?.file_reference().file_record_number(),
                None => return Ok(None),
            }
        }
        Ok(Some(rec))
    }

    /// Entries of a directory record: (name, is a directory, record), DOS names left out.
    pub fn list(&mut self, rec: u64) -> io::Result<Vec<(String, bool, u64)>> {
        let dir = self.fs.file(&mut self.f, rec).map_err(err)?;
        let index = dir.directory_index(&mut self.f).map_err(err)?;
        let mut it = index.entries();
        let mut out = Vec::new();
        while let Some(e) = it.next(&mut self.f) {
            let e = e.map_err(err)?;
            let Some(key) = e.key() else { continue };
            let key = key.map_err(err)?;
            if key.namespace() == ntfs::structured_values::NtfsFileNamespace::Dos {
                continue;
            }
            out.push((
                key.name().to_string_lossy(),
                key.is_directory(),
                e.file_reference().file_record_number(),
            ));
        }
        Ok(out)
    }

    /// The unnamed data of a file record, up to `limit` bytes.
    pub fn read(&mut self, rec: u64, limit: u64) -> io::Result<Vec<u8>> {
        let file = self.fs.file(&mut self.f, rec).map_err(err)?;
        let item = file
            .data(&mut self.f, "")
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("record {rec} has no data"),
                )
            })?
            .map_err(err)?;
        let attr = item.to_attribute().map_err(err)?;
        let mut out = Vec::new();
        attr.value(&mut self.f)
            .map_err(err)?
            .attach(&mut self.f)
            .take(limit)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    /// Files (not directories) below a directory record, counted recursively.
    pub fn count_files(&mut self, rec: u64) -> io::Result<u64> {
        let mut n = 0;
        let mut stack = vec![rec];
        while let Some(d) = stack.pop() {
            for (name, is_dir, r) in self.list(d)? {
                if name == "." {
                    continue;
                }
                if is_dir {
                    stack.push(r);
                } else {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
