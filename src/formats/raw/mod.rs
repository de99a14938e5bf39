//! Raw disk images: the virtual disk's bytes as a plain file, sparse where never written.
//!
//! Holes are found with `lseek(2)` `SEEK_DATA`/`SEEK_HOLE` (Linux since 3.1, POSIX.1-2024),
//! so a copy of a sparse raw image only reads the extents the filesystem actually stores.
//! A filesystem without that support reports the whole file as data, and we fall back to
//! one range covering the disk.

use crate::core::block::{check_range, is_zero, ReadAt, WriteAt};
use rustix::fs::SeekFrom;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Errors of raw images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("raw image: cannot {action} at offset {offset:#x}: {source}")]
    Io {
        action: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "raw image: the file holds {file_len} bytes but the disk needs {size}; \
         give a smaller virtual size or a complete file"
    )]
    FileTooShort { file_len: u64, size: u64 },
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Ranges of `file` within `0..size` that the filesystem stores (not holes), sorted and
/// disjoint. Falls back to `0..size` when the filesystem cannot tell.
pub(crate) fn stored_ranges(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data at or after `pos` (only a hole up to the end of the file).
            Err(rustix::io::Errno::NXIO) => break,
            // The filesystem or kernel does not support SEEK_DATA: treat all as data.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => {
                return Ok(whole(size))
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => {
                return Ok(whole(size))
            }
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            // A filesystem answering inconsistently: do not loop, report everything left.
            out.push(data..size);
            break;
        }
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

fn whole(size: u64) -> Vec<Range<u64>> {
    if size == 0 {
        Vec::new()
    } else {
        std::iter::once(0..size).collect()
    }
}

/// Write `data` at `offset` of `file`, keeping the file sparse: an all-zero write whose
/// target is entirely a hole is skipped (it would read back as zeros anyway), while an
/// all-zero write over stored data is performed so earlier bytes are really cleared.
pub(crate) fn write_sparse(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if is_zero(data) {
        let end = offset + data.len() as u64;
        let next_data = match rustix::fs::seek(file, SeekFrom::Data(offset)) {
            Ok(d) => Some(d),
            Err(rustix::io::Errno::NXIO) => None,
            // Unknown: write, which is always correct.
            Err(_) => Some(offset),
        };
        if next_data.is_none_or(|d| d >= end) {
            return Ok(());
        }
    }
    file.write_all_at(data, offset)
}

/// A raw image being written: the file is extended to the virtual size (a hole) at once,
/// and only non-zero data is ever stored.
#[derive(Debug)]
pub struct RawWriter {
    file: File,
    size: u64,
}

impl RawWriter {
    /// Take `file` (opened for writing), drop its old contents and make it a sparse file
    /// of `virtual_size` bytes.
    pub fn create(file: File, virtual_size: u64) -> Result<Self, Error> {
        file.set_len(0).map_err(|source| Error::Io {
            action: "empty the file",
            offset: 0,
            source,
        })?;
        file.set_len(virtual_size).map_err(|source| Error::Io {
            action: "extend the file to the virtual size",
            offset: virtual_size,
            source,
        })?;
        Ok(RawWriter {
            file,
            size: virtual_size,
        })
    }
}

impl WriteAt for RawWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.size)?;
        write_sparse(&self.file, offset, data)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// A raw image being read. `data_ranges` reports the file's stored extents.
#[derive(Debug)]
pub struct RawReader {
    file: File,
    size: u64,
}

impl RawReader {
    /// Read the whole of `file` as the disk.
    pub fn open(file: File) -> Result<Self, Error> {
        let size = file_len(&file)?;
        Ok(RawReader { file, size })
    }

    /// Read the first `size` bytes of `file` as the disk (a fixed VHD's data area).
    pub fn with_size(file: File, size: u64) -> Result<Self, Error> {
        let file_len = file_len(&file)?;
        if file_len < size {
            return Err(Error::FileTooShort { file_len, size });
        }
        Ok(RawReader { file, size })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

fn file_len(file: &File) -> Result<u64, Error> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|source| Error::Io {
            action: "read the file length",
            offset: 0,
            source,
        })
}

impl ReadAt for RawReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file.read_exact_at(buf, offset)
    }

    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        stored_ranges(&self.file, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        (d, p)
    }

    #[test]
    fn writes_land_and_holes_stay_holes() {
        let (_d, p) = temp();
        let size = 64 << 20;
        let mut w = Box::new(RawWriter::create(File::create(&p).unwrap(), size).unwrap());
        w.write_at(1 << 20, &[7u8; 4096]).unwrap();
        w.write_at(size - 512, &[9u8; 512]).unwrap();
        w.write_at(8 << 20, &[0u8; 1 << 20]).unwrap();
        w.finish().unwrap();
        let r = RawReader::open(File::open(&p).unwrap()).unwrap();
        assert_eq!(ReadAt::size(&r), size);
        let mut b = [0u8; 4];
        r.read_at((1 << 20) + 4094, &mut b).unwrap();
        assert_eq!(b, [7, 7, 0, 0]);
        let ranges = r.data_ranges().unwrap();
        let stored: u64 = ranges.iter().map(|x| x.end - x.start).sum();
        assert!(stored < 1 << 20, "{ranges:?}");
        assert!(ranges.iter().any(|x| x.contains(&(1 << 20))));
        assert!(ranges.iter().any(|x| x.contains(&(size - 1))));
        assert!(!ranges.iter().any(|x| x.contains(&(8 << 20))));
    }

    #[test]
    fn zero_write_over_data_clears_it() {
        let (_d, p) = temp();
        let mut w = RawWriter::create(File::create(&p).unwrap(), 1 << 20).unwrap();
        w.write_at(4096, &[5u8; 4096]).unwrap();
        w.write_at(4096, &[0u8; 4096]).unwrap();
        let r = RawReader::open(File::open(&p).unwrap()).unwrap();
        let mut b = [1u8; 4096];
        r.read_at(4096, &mut b).unwrap();
        assert!(is_zero(&b));
        assert!(w.write_at((1 << 20) - 1, &[1, 2]).is_err());
    }

    #[test]
    fn with_size_refuses_a_short_file() {
        let (_d, p) = temp();
        std::fs::write(&p, [1u8; 1000]).unwrap();
        let e = RawReader::with_size(File::open(&p).unwrap(), 1024).unwrap_err();
        assert!(e.to_string().contains("1000"), "{e}");
    }
}
