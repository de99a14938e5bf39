//! WIM writer, part 1: capture options and the resource writer. Layout of non-solid
//! resources (chunk table of `n − 1` offsets relative to the table end, 4-byte entries when
//! the uncompressed size fits in 32 bits, raw chunks where compression does not shrink,
//! whole resource rewritten uncompressed when it is not smaller) from docs/facts-wim.md
//! section 2 (wimlib `resource.c` / `write.c`, 7-Zip `WimIn.cpp`).
//!
//! Not yet here: metadata resource (security table, dentries), blob table, XML, header, and
//! image export.

use super::header::{ResHdr, RES_COMPRESSED};
use super::Sha1;
use crate::codec::{lzx_enc, xpress_enc};
use rayon::prelude::*;
use sha1::{Digest, Sha1 as Sha1Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Default chunk size of non-solid resources (facts-wim.md 1: XPRESS and LZX default 32768;
/// the only LZX size Microsoft tools accept).
pub const DEFAULT_CHUNK_SIZE: u32 = 32768;
/// Chunks compressed per parallel batch: bounds memory to `BATCH × chunk size` per blob.
const BATCH_CHUNKS: usize = 64;

/// Resource compression of a written WIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xpress,
    Lzx,
}

/// Parameters of a capture; times and GUID are inputs so output bytes are deterministic.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub compression: Compression,
    /// Power of two: XPRESS 2^12..2^16, LZX 2^15..2^21 (facts-wim.md 1); ignored for None.
    pub chunk_size: u32,
    pub image_name: String,
    pub description: Option<String>,
    pub edition_id: Option<String>,
    /// (major, minor, build, service pack build) for WINDOWS/VERSION.
    pub version: Option<(u32, u32, u32, u32)>,
    pub languages: Vec<String>,
    /// FILETIME used for CREATIONTIME and LASTMODIFICATIONTIME.
    pub time: u64,
    pub guid: [u8; 16],
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            compression: Compression::Lzx,
            chunk_size: DEFAULT_CHUNK_SIZE,
            image_name: String::new(),
            description: None,
            edition_id: None,
            version: None,
            languages: Vec::new(),
            time: 0,
            guid: [0; 16],
        }
    }
}

/// An output the writer can seek in and cut short (an abandoned compression attempt that
/// is longer than the raw data is truncated away).
pub trait Sink: Write + Seek {
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for std::fs::File {
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

impl Sink for io::Cursor<Vec<u8>> {
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let n = usize::try_from(len).map_err(io::Error::other)?;
        self.get_mut().truncate(n);
        Ok(())
    }
}

fn compress_one(c: Compression, chunk_size: usize, data: &[u8]) -> Option<Vec<u8>> {
    match c {
        Compression::None => None,
        Compression::Xpress => xpress_enc::compress_chunk(data),
        Compression::Lzx => lzx_enc::compress_chunk(data, chunk_size),
    }
}

/// Write `len` bytes read from `src` (positioned at the data start) as one resource at the
/// current end of `out`. Returns the resource header (flags: COMPRESSED when compressed) and
/// the SHA-1 of the data. `src` must be seekable so an incompressible blob can be re-read
/// and stored raw without holding it in memory.
pub fn write_resource<R: Read + Seek, W: Sink>(
    src: &mut R,
    len: u64,
    compression: Compression,
    chunk_size: u32,
    out: &mut W,
) -> io::Result<(ResHdr, Sha1)> {
    let start_src = src.stream_position()?;
    let offset = out.seek(SeekFrom::End(0))?;
    if compression != Compression::None && len > 0 {
        let cs = chunk_size as usize;
        let n = len.div_ceil(u64::from(chunk_size));
        let entry = if len > u64::from(u32::MAX) { 8 } else { 4 };
        let table_len = (n - 1) * entry;
        out.write_all(&vec![0u8; table_len as usize])?;
        let mut hasher = Sha1Hasher::new();
        let mut offsets = Vec::with_capacity(n as usize);
        let mut rel = 0u64;
        let mut left = len;
        let mut buf = Vec::new();
        while left > 0 {
            let batch = left.min((cs * BATCH_CHUNKS) as u64) as usize;
            buf.resize(batch, 0);
            src.read_exact(&mut buf)?;
            hasher.update(&buf);
            let done: Vec<Option<Vec<u8>>> = buf
                .par_chunks(cs)
                .map(|p| compress_one(compression, cs, p))
                .collect();
            for (p, c) in buf.chunks(cs).zip(&done) {
                offsets.push(rel);
                let bytes = c.as_deref().unwrap_or(p);
                out.write_all(bytes)?;
                rel += bytes.len() as u64;
            }
            left -= batch as u64;
        }
        let stored = table_len + rel;
        if stored < len {
            let mut table = Vec::with_capacity(table_len as usize);
            for &o in &offsets[1..] {
                if entry == 8 {
                    table.extend_from_slice(&o.to_le_bytes());
                } else {
                    table.extend_from_slice(&(o as u32).to_le_bytes());
                }
            }
            out.seek(SeekFrom::Start(offset))?;
            out.write_all(&table)?;
            out.seek(SeekFrom::End(0))?;
            let hdr = ResHdr {
                size_in_wim: stored,
                flags: RES_COMPRESSED,
                offset,
                uncompressed_size: len,
            };
            return Ok((hdr, hasher.finalize().into()));
        }
        // Not smaller: store raw over the attempt (facts-wim.md 2, wimlib rewrites too).
        out.seek(SeekFrom::Start(offset))?;
        src.seek(SeekFrom::Start(start_src))?;
    }
    let mut hasher = Sha1Hasher::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..k])?;
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k])?;
        left -= k as u64;
    }
    let end = offset + len;
    if out.seek(SeekFrom::End(0))? > end {
        out.truncate(end)?;
        out.seek(SeekFrom::Start(end))?;
    }
    let hdr = ResHdr {
        size_in_wim: len,
        flags: 0,
        offset,
        uncompressed_size: len,
    };
    Ok((hdr, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use std::io::Cursor;

    fn read_back(file: &[u8], h: &ResHdr, codec: Codec, cs: usize) -> Vec<u8> {
        let res = &file[h.offset as usize..(h.offset + h.size_in_wim) as usize];
        if h.flags & RES_COMPRESSED == 0 {
            return res.to_vec();
        }
        let n = h.uncompressed_size.div_ceil(cs as u64) as usize;
        let t = (n - 1) * 4;
        let mut offs = vec![0usize];
        for i in 0..n - 1 {
            offs.push(u32::from_le_bytes(res[4 * i..4 * i + 4].try_into().unwrap()) as usize);
        }
        offs.push(res.len() - t);
        let mut dec = codec.decoder(cs).unwrap().unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let ulen = (h.uncompressed_size as usize - i * cs).min(cs);
            let c = &res[t + offs[i]..t + offs[i + 1]];
            if c.len() == ulen {
                out.extend_from_slice(c);
            } else {
                let mut o = vec![0u8; ulen];
                dec.decompress(c, &mut o).unwrap();
                out.extend_from_slice(&o);
            }
        }
        out
    }

    #[test]
    fn resources_round_trip() {
        for (name, data) in crate::codec::xpress_enc::tests::samples() {
            for (comp, codec, cs) in [
                (Compression::Xpress, Codec::Xpress, 32768usize),
                (Compression::Lzx, Codec::Lzx, 32768),
                (Compression::Lzx, Codec::Lzx, 131072),
                (Compression::None, Codec::None, 32768),
            ] {
                let mut out = Cursor::new(vec![0xAAu8; 208]);
                let (h, sha) = write_resource(
                    &mut Cursor::new(&data),
                    data.len() as u64,
                    comp,
                    cs as u32,
                    &mut out,
                )
                .unwrap();
                let file = out.into_inner();
                assert_eq!(h.offset, 208);
                assert_eq!(file.len() as u64, 208 + h.size_in_wim, "{name}");
                let expect: Sha1 = Sha1Hasher::digest(&data).into();
                assert_eq!(sha, expect);
                if name == "random" {
                    assert_eq!(h.flags, 0, "incompressible blob is stored raw");
                }
                assert!(
                    read_back(&file, &h, codec, cs) == data,
                    "{name} {comp:?} {cs}"
                );
            }
        }
    }
}
