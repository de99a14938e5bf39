//! Reading a volume back for `inspect`: geometry, MFT size, free space and the root
//! folder's entries. The parsing is done by the `ntfs` crate (an independent reader), over
//! a window of the disk.

use crate::core::block::ReadAt;
use std::io::{self, Read, Seek, SeekFrom};

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

/// A byte window of a disk as `Read + Seek`.
struct Cursor<'a> {
    disk: &'a dyn ReadAt,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        self.disk.read_at(self.start + self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        let new = match p {
            SeekFrom::Start(x) => Some(x),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

fn err(e: ntfs::NtfsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Read the summary of the NTFS volume at `offset` (`len` bytes) of `disk`.
pub fn summary(disk: &dyn ReadAt, offset: u64, len: u64) -> io::Result<NtfsSummary> {
    let mut f = io::BufReader::with_capacity(
        64 << 10,
        Cursor {
            disk,
            start: offset,
            len,
            pos: 0,
        },
    );
    let mut fs = ntfs::Ntfs::new(&mut f).map_err(err)?;
    fs.read_upcase_table(&mut f).map_err(err)?;
    let label = match fs.volume_name(&mut f) {
        Some(Ok(n)) => Some(n.name().to_string_lossy()),
        _ => None,
    };
    let data_len =
        |fs: &ntfs::Ntfs, f: &mut io::BufReader<Cursor>, rec: u64| -> io::Result<(u64, Vec<u8>)> {
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
    let (mft_len, _) = data_len(&fs, &mut f, MFT_RECORD)?;
    let (_, bitmap) = data_len(&fs, &mut f, BITMAP_RECORD)?;
    let total_clusters = fs.size() / fs.cluster_size() as u64;
    let used: u64 = bitmap.iter().map(|b| b.count_ones() as u64).sum();
    let root = fs.root_directory(&mut f).map_err(err)?;
    let index = root.directory_index(&mut f).map_err(err)?;
    let mut it = index.entries();
    let mut top = Vec::new();
    while let Some(e) = it.next(&mut f) {
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
