//! Block I/O: positional reads and writes over a virtual disk, with a sparse path.
//!
//! Readers report which byte ranges may hold data (`data_ranges`), so copies skip
//! holes and never materialise zeros. Writers accept positional writes; regions never
//! written read as zeros and cost nothing in the output.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

/// Read side of a virtual disk.
pub trait ReadAt {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from virtual offset `offset`. Reading past `size()` is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Ranges that may hold non-zero data, sorted and disjoint. Everything else reads as
    /// zeros. The default is the whole disk.
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        Ok(std::iter::once(0..self.size()).collect())
    }
}

/// Write side of a virtual disk being produced.
pub trait WriteAt {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Write `data` at virtual offset `offset`. Writing past `size()` is an error.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Write all remaining metadata and flush to stable storage.
    fn finish(self: Box<Self>) -> io::Result<()>;
    /// The virtual ranges about to be written, ascending, given before the first write: a
    /// container may lay out its allocation for them up front. Writes outside them still
    /// work, only less efficiently.
    fn reserve(&mut self, _ranges: &[Range<u64>]) -> io::Result<()> {
        Ok(())
    }
    /// [`WriteAt::finish`], also returning the SHA-256 of the whole file when the writer
    /// could compute it on the way; None means the caller has to read the file back.
    fn finish_digest(self: Box<Self>) -> io::Result<Option<[u8; 32]>> {
        self.finish().map(|()| None)
    }
}

/// Check that `len` bytes at `offset` lie inside a disk of `size` bytes.
pub fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "access of {len} bytes at offset {offset:#x} goes past the end of the {size}-byte disk"
            ),
        )),
    }
}

/// Copy every data range of `src` into `dst` at `dst_offset`, skipping runs of zeros
/// (`chunk` bytes at a time), so sparse regions stay sparse in the target.
pub fn copy_sparse(
    src: &dyn ReadAt,
    dst: &mut dyn WriteAt,
    dst_offset: u64,
    chunk: usize,
    mut progress: impl FnMut(u64),
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    for range in src.data_ranges()? {
        let mut pos = range.start;
        while pos < range.end {
            let n = ((range.end - pos) as usize).min(chunk);
            let b = &mut buf[..n];
            src.read_at(pos, b)?;
            if !is_zero(b) {
                dst.write_at(dst_offset + pos, b)?;
            }
            pos += n as u64;
            progress(n as u64);
        }
    }
    Ok(())
}

/// True when every byte is zero. Folds 64-byte blocks with OR so the compiler vectorises
/// it, and stops at the first block that holds data.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// A byte window of a [`ReadAt`] disk seen as a read-only `Read + Seek` stream, for parsers
/// (the `gpt` and `ntfs` crates) that want a stream. Writes are refused.
pub struct ReadCursor<'a> {
    disk: &'a dyn ReadAt,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> ReadCursor<'a> {
    /// The `len` bytes of `disk` from `start`.
    pub fn new(disk: &'a dyn ReadAt, start: u64, len: u64) -> Self {
        ReadCursor {
            disk,
            start,
            len,
            pos: 0,
        }
    }
}

impl std::fmt::Debug for ReadCursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes at {:#x}, position {}",
            self.len, self.start, self.pos
        )
    }
}

impl Read for ReadCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        self.disk.read_at(self.start + self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for ReadCursor<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "this disk view is read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadCursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(self.pos)
    }
}

/// A sparse in-memory disk: only pages written are stored. Used to build small
/// structures (GPT, the FAT32 ESP) with libraries that want `Read + Write + Seek`,
/// before copying them into the real output with [`copy_sparse`].
#[derive(Debug, Clone)]
pub struct MemDisk {
    size: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE]>>,
    pos: u64,
}

const PAGE: usize = 4096;

impl MemDisk {
    pub fn new(size: u64) -> Self {
        MemDisk {
            size,
            pages: BTreeMap::new(),
            pos: 0,
        }
    }

    /// Bytes actually stored (written pages).
    pub fn stored_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE as u64
    }
}

impl ReadAt for MemDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let page = pos / PAGE as u64;
            let within = (pos % PAGE as u64) as usize;
            let n = (PAGE - within).min(buf.len() - done);
            match self.pages.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &page in self.pages.keys() {
            let start = page * PAGE as u64;
            let end = (start + PAGE as u64).min(self.size);
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        Ok(out)
    }
}

impl WriteAt for MemDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.size)?;
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let page = pos / PAGE as u64;
            let within = (pos % PAGE as u64) as usize;
            let n = (PAGE - within).min(data.len() - done);
            let chunk = &data[done..done + n];
            if let Some(p) = self.pages.get_mut(&page) {
                p[within..within + n].copy_from_slice(chunk);
            } else if !is_zero(chunk) {
                let mut p = Box::new([0u8; PAGE]);
                p[within..within + n].copy_from_slice(chunk);
                self.pages.insert(page, p);
            }
            done += n;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

impl Read for MemDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        ReadAt::read_at(self, self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for MemDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        WriteAt::write_at(self, self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for MemDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdisk_reads_zero_where_unwritten_and_stores_only_touched_pages() {
        let mut d = MemDisk::new(1 << 30);
        d.write_at(5000, b"hello").unwrap();
        d.write_at(1 << 20, &[0u8; 8192]).unwrap();
        assert_eq!(d.stored_bytes(), 4096);
        let mut b = [1u8; 10];
        d.read_at(4998, &mut b).unwrap();
        assert_eq!(&b, b"\0\0hello\0\0\0");
        assert_eq!(d.data_ranges().unwrap(), vec![4096..8192]);
        assert!(d.write_at((1 << 30) - 1, b"xy").is_err());
    }

    #[test]
    fn is_zero_finds_a_byte_anywhere() {
        let mut v = vec![0u8; 1000];
        assert!(is_zero(&v));
        for i in [0, 63, 64, 999] {
            v[i] = 1;
            assert!(!is_zero(&v));
            v[i] = 0;
        }
    }
}
