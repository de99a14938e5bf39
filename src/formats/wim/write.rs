//! WIM writer: capture options, the resource writer and whole WIMs. Layout of non-solid
//! resources (chunk table of `n − 1` offsets relative to the table end, 4-byte entries when
//! the uncompressed size fits in 32 bits, raw chunks where compression does not shrink,
//! whole resource rewritten uncompressed when it is not smaller) from docs/facts-wim.md
//! section 2 (wimlib `resource.c` / `write.c`, 7-Zip `WimIn.cpp`).
//!
//! Whole WIMs ([`write_wim`], [`export_image`]): data blobs (one per distinct SHA-1), then
//! one metadata resource per image (security block F§5.1, dentries F§5.2–5.4 laid out as
//! wimlib's writer does: root + terminator, then each directory's list in pre-order), the
//! blob table (F§4: metadata entries first in image order, then data blobs in the order
//! written), XML (F§6) and finally the header (F§1), following the checklist in F§10.

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
    /// FILETIME used for CREATIONTIME (and LASTMODIFICATIONTIME unless set below).
    pub time: u64,
    /// The 16 header GUID bytes as stored (shared by all images of one WIM: the first
    /// image's value is used).
    pub guid: [u8; 16],
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    /// `<FLAGS>` text (usually the edition id).
    pub flags: Option<String>,
    /// LASTMODIFICATIONTIME when it differs from `time` (exports keep the source's).
    pub last_modification_time: Option<u64>,
    /// WINDOWS/ARCH: PROCESSOR_ARCHITECTURE_* (0 x86, 5 ARM, 6 IA64, 9 AMD64, 12 ARM64).
    pub arch: Option<u32>,
    pub product_name: Option<String>,
    pub installation_type: Option<String>,
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
            display_name: None,
            display_description: None,
            flags: None,
            last_modification_time: None,
            arch: None,
            product_name: None,
            installation_type: None,
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

// ---------------------------------------------------------------------------------------
// Whole WIMs.

use super::header::{
    chunk_limits, FLAG_COMPRESSION, FLAG_COMPRESS_LZX, FLAG_COMPRESS_XPRESS,
    FLAG_WRITE_IN_PROGRESS, HEADER_SIZE, MAX_IMAGES, RES_METADATA, VERSION_DEFAULT,
};
use super::Wim;
use crate::codec::Codec;
use crate::tree::{Content, NameSpace, NodeId, Tree};
use std::collections::HashMap;
use std::sync::Arc;

/// One image to write: its tree and XML fields (compression, chunk size and GUID of the
/// first image apply to the whole file).
pub struct ImageSpec<'a> {
    pub tree: &'a Tree,
    pub options: CaptureOptions,
}

/// What [`write_wim`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteReport {
    pub images: usize,
    /// Distinct data blobs (metadata resources not counted).
    pub blobs: usize,
    /// Uncompressed bytes of the distinct data blobs.
    pub bytes_in: u64,
    /// Size of the finished file.
    pub bytes_out: u64,
}

/// Fixed part of a dentry and of an extra stream entry (F§5.2, F§5.4).
const DENTRY_FIXED: usize = 102;
const STREAM_FIXED: usize = 38;
/// Tagged item holding the NTFS object id (F§5.3).
const TAG_OBJECT_ID: u32 = 0x1;
/// wimlib's flag for a reparse target that was not rewritten at capture (F§5.2); we never
/// rewrite targets, so every reparse point carries it and the header has no RP_FIX.
const RP_FLAG_NOT_FIXED: u16 = 0x1;
const ATTR_DIRECTORY: u32 = 0x10;
const ATTR_REPARSE_POINT: u32 = 0x400;
/// Stream entries per dentry: the count is 16 bits and wimlib keeps streams per inode
/// below 0xFFFF (F§9).
const MAX_EXTRA_STREAMS: usize = 0xFFFE;
/// Blob table entry size (F§4).
const BLOB_ENTRY: usize = 50;
const ZERO_HASH: Sha1 = [0; 20];

fn bad_input(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Any `Write + Seek` output as a [`Sink`]: a cut only moves the logical end; bytes past
/// it are overwritten by later resources, and whatever is left at the very end is zeroed.
struct Out<'a, W: Write + Seek> {
    inner: &'a mut W,
    pos: u64,
    end: u64,
    high: u64,
}

impl<W: Write + Seek> Write for Out<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        self.end = self.end.max(self.pos);
        self.high = self.high.max(self.pos);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write + Seek> Seek for Out<'_, W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(x) => Some(x),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| bad_input("seek before the start of the output".into()))?;
        self.inner.seek(SeekFrom::Start(target))?;
        self.pos = target;
        Ok(target)
    }
}

impl<W: Write + Seek> Sink for Out<'_, W> {
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.end = self.end.min(len);
        Ok(())
    }
}

/// A [`Content`] as `Read + Seek` for [`write_resource`]: seeking back to the start
/// reopens it. Reports each byte once to `progress`.
struct ContentReader<'a> {
    content: &'a Content,
    r: Box<dyn Read + Send>,
    pos: u64,
    reported: u64,
    progress: &'a dyn Fn(u64),
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.pos += n as u64;
        if self.pos > self.reported {
            (self.progress)(self.pos - self.reported);
            self.reported = self.pos;
        }
        Ok(n)
    }
}

impl Seek for ContentReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Current(0) => Ok(self.pos),
            SeekFrom::Start(0) => {
                self.r = self.content.open()?;
                self.pos = 0;
                Ok(0)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "contents can only be re-read from the start",
            )),
        }
    }
}

/// Where a blob's bytes come from.
#[derive(Clone, Copy)]
enum Src<'a> {
    Content(&'a Content),
    Bytes(&'a [u8]),
}

impl Src<'_> {
    fn len(&self) -> u64 {
        match self {
            Src::Content(c) => c.len(),
            Src::Bytes(b) => b.len() as u64,
        }
    }
}

/// SHA-1 of a source, checking a content yields exactly its declared length.
fn hash_src(src: Src) -> io::Result<Sha1> {
    if src.len() == 0 {
        return Ok(ZERO_HASH);
    }
    match src {
        Src::Bytes(b) => Ok(Sha1Hasher::digest(b).into()),
        Src::Content(c) => {
            let len = c.len();
            let mut r = c.open()?.take(len.saturating_add(1));
            let mut h = Sha1Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            if total != len {
                return Err(crate::tree::content::length_mismatch(c, total));
            }
            Ok(h.finalize().into())
        }
    }
}

/// Stream hashes of one node.
#[derive(Debug, Clone, Default)]
struct NodeHashes {
    reparse: Option<Sha1>,
    data: Sha1,
    named: Vec<(Vec<u16>, Sha1)>,
}

/// A distinct data blob.
struct Blob<'a> {
    hash: Sha1,
    src: Src<'a>,
    refcnt: u32,
    reshdr: ResHdr,
}

/// Counts for an image's XML.
#[derive(Debug, Default)]
struct Stats {
    dirs: u64,
    files: u64,
    total_bytes: u64,
    hard_link_bytes: u64,
}

fn check_options(o: &CaptureOptions) -> io::Result<()> {
    let codec = match o.compression {
        Compression::None => return Ok(()),
        Compression::Xpress => Codec::Xpress,
        Compression::Lzx => Codec::Lzx,
    };
    let (min, max) = chunk_limits(codec);
    let cs = o.chunk_size;
    if !cs.is_power_of_two() || cs < min || cs > max {
        return Err(bad_input(format!(
            "chunk size {cs} for {} must be a power of two in {min}..={max}",
            codec.name()
        )));
    }
    Ok(())
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// The streams of every node of `tree` as (node, slot, source); slot 0 = reparse data,
/// 1 = unnamed data, 2.. = named streams in name order.
fn tree_sources(tree: &Tree) -> Vec<(usize, usize, Src<'_>)> {
    let mut v = Vec::new();
    for (id, n) in tree.nodes() {
        if let Some(r) = &n.meta.reparse {
            v.push((id.0, 0, Src::Bytes(&r.data)));
        }
        if !n.is_dir {
            v.push((id.0, 1, Src::Content(&n.data.content)));
        }
        for (k, s) in n.streams.values().enumerate() {
            v.push((id.0, 2 + k, Src::Content(&s.content)));
        }
    }
    v
}

/// Bytes of all streams of `tree` (data, named streams, reparse data): the total that
/// [`write_wim`] reports to its progress callback for this tree.
pub fn stream_bytes(tree: &Tree) -> u64 {
    tree_sources(tree).iter().map(|(_, _, s)| s.len()).sum()
}

/// Write a complete WIM holding `images` (numbered from 1 in the order given) to `out`,
/// starting at offset 0. `boot_index` is 0 or the 1-based bootable image. `progress`
/// receives the uncompressed byte counts of data as it is processed.
pub fn write_wim<W: Write + Seek>(
    out: &mut W,
    images: &[ImageSpec],
    boot_index: u32,
    progress: &dyn Fn(u64),
) -> io::Result<WriteReport> {
    let first = images
        .first()
        .ok_or_else(|| bad_input("a WIM needs at least one image".into()))?;
    if images.len() > MAX_IMAGES as usize {
        return Err(bad_input(format!(
            "{} images exceed the WIM limit of {MAX_IMAGES}",
            images.len()
        )));
    }
    if boot_index as usize > images.len() {
        return Err(bad_input(format!(
            "boot index {boot_index} is not an image (the WIM has {} images)",
            images.len()
        )));
    }
    let compression = first.options.compression;
    let chunk = if compression == Compression::None {
        0
    } else {
        first.options.chunk_size
    };
    check_options(&first.options)?;
    for (i, im) in images.iter().enumerate() {
        let o = &im.options;
        if o.compression != compression
            || (compression != Compression::None && o.chunk_size != chunk)
        {
            return Err(bad_input(format!(
                "image {} asks for {:?} with {}-byte chunks but image 1 for {compression:?} with {chunk}-byte chunks; a WIM has one compression",
                i + 1,
                o.compression,
                o.chunk_size
            )));
        }
    }

    // Pass 1: hash every stream (in parallel), so identical contents are written once.
    let sources: Vec<Vec<(usize, usize, Src)>> =
        images.iter().map(|im| tree_sources(im.tree)).collect();
    let flat: Vec<Src> = sources.iter().flatten().map(|&(_, _, s)| s).collect();
    let hashes: Vec<Sha1> = flat
        .par_iter()
        .map(|&s| hash_src(s))
        .collect::<io::Result<_>>()?;
    let mut node_hashes: Vec<Vec<NodeHashes>> = Vec::with_capacity(images.len());
    let mut blobs: Vec<Blob> = Vec::new();
    let mut by_hash: HashMap<Sha1, usize> = HashMap::new();
    let mut sizes: HashMap<Sha1, u64> = HashMap::new();
    let mut k = 0usize;
    for (im, srcs) in images.iter().zip(&sources) {
        let tree = im.tree;
        let mut nh = vec![NodeHashes::default(); tree.len()];
        for &(node, slot, src) in srcs {
            let h = hashes[k];
            k += 1;
            let n = tree.node(NodeId(node));
            match slot {
                0 => nh[node].reparse = Some(h),
                1 => nh[node].data = h,
                _ => {
                    let name = n.streams.keys().nth(slot - 2).map(|s| utf16(s));
                    nh[node].named.push((name.unwrap_or_default(), h));
                }
            }
            if h == ZERO_HASH {
                continue;
            }
            let refs = n.links.len().max(1) as u32;
            match by_hash.get(&h) {
                Some(&b) => blobs[b].refcnt = blobs[b].refcnt.saturating_add(refs),
                None => {
                    by_hash.insert(h, blobs.len());
                    sizes.insert(h, src.len());
                    blobs.push(Blob {
                        hash: h,
                        src,
                        refcnt: refs,
                        reshdr: ResHdr::default(),
                    });
                }
            }
        }
        node_hashes.push(nh);
    }

    // Pass 2: provisional header, then the blobs.
    let mut o = Out {
        inner: out,
        pos: 0,
        end: 0,
        high: 0,
    };
    o.seek(SeekFrom::Start(0))?;
    let mut provisional = vec![0u8; HEADER_SIZE];
    provisional[..8].copy_from_slice(b"MSWIM\0\0\0");
    provisional[8..12].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    provisional[0xC..0x10].copy_from_slice(&VERSION_DEFAULT.to_le_bytes());
    provisional[0x10..0x14].copy_from_slice(&FLAG_WRITE_IN_PROGRESS.to_le_bytes());
    o.write_all(&provisional)?;
    let mut bytes_in = 0u64;
    for b in &mut blobs {
        let len = b.src.len();
        bytes_in += len;
        let (hdr, sha) = match b.src {
            Src::Bytes(bytes) => {
                let r =
                    write_resource(&mut io::Cursor::new(bytes), len, compression, chunk, &mut o)?;
                progress(len);
                r
            }
            Src::Content(c) => {
                let mut r = ContentReader {
                    content: c,
                    r: c.open()?,
                    pos: 0,
                    reported: 0,
                    progress,
                };
                write_resource(&mut r, len, compression, chunk, &mut o)?
            }
        };
        if sha != b.hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {len}-byte stream had SHA-1 {} when hashed and {} when written; the source changed while the WIM was written",
                    super::hex(&b.hash),
                    super::hex(&sha)
                ),
            ));
        }
        b.reshdr = hdr;
    }

    // Streams that were duplicates of a written blob count as processed too.
    let all: u64 = flat.iter().map(Src::len).sum();
    if all > bytes_in {
        progress(all - bytes_in);
    }

    // Metadata resources.
    let mut meta_entries: Vec<(ResHdr, Sha1)> = Vec::new();
    let mut stats = Vec::new();
    for (im, nh) in images.iter().zip(&node_hashes) {
        let (buf, st) = build_metadata(im.tree, nh, &sizes)?;
        let (mut hdr, sha) = write_resource(
            &mut io::Cursor::new(&buf),
            buf.len() as u64,
            compression,
            chunk,
            &mut o,
        )?;
        hdr.flags |= RES_METADATA;
        meta_entries.push((hdr, sha));
        stats.push(st);
    }

    // Blob table: metadata first in image order, then data blobs in the order written.
    let mut table = Vec::with_capacity((meta_entries.len() + blobs.len()) * BLOB_ENTRY);
    let mut entry = |h: &ResHdr, refcnt: u32, hash: &Sha1| {
        table.extend_from_slice(&reshdr_bytes(h));
        table.extend_from_slice(&1u16.to_le_bytes());
        table.extend_from_slice(&refcnt.to_le_bytes());
        table.extend_from_slice(hash);
    };
    for (h, sha) in &meta_entries {
        entry(h, 1, sha);
    }
    for b in &blobs {
        entry(&b.reshdr, b.refcnt, &b.hash);
    }
    let (mut bt_hdr, _) = write_resource(
        &mut io::Cursor::new(&table),
        table.len() as u64,
        Compression::None,
        0,
        &mut o,
    )?;
    bt_hdr.flags |= RES_METADATA;

    // XML; its TOTALBYTES is where it starts (F§6).
    let xml_at = o.seek(SeekFrom::End(0))?;
    let mut text = format!("<WIM><TOTALBYTES>{xml_at}</TOTALBYTES>");
    for (i, (im, st)) in images.iter().zip(&stats).enumerate() {
        text.push_str(&xml_image(i + 1, &im.options, st));
    }
    text.push_str("</WIM>");
    let mut xml = vec![0xFF, 0xFE];
    xml.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let (mut xml_hdr, _) = write_resource(
        &mut io::Cursor::new(&xml),
        xml.len() as u64,
        Compression::None,
        0,
        &mut o,
    )?;
    xml_hdr.flags |= RES_METADATA;

    // Zero whatever an abandoned compression attempt left past the end.
    let end = o.seek(SeekFrom::End(0))?;
    if o.high > end {
        let gap = o.high - end;
        io::copy(&mut io::repeat(0).take(gap), &mut o)?;
    }
    let file_end = o.high;

    // Final header.
    let mut h = provisional;
    let flags = match compression {
        Compression::None => 0,
        Compression::Xpress => FLAG_COMPRESSION | FLAG_COMPRESS_XPRESS,
        Compression::Lzx => FLAG_COMPRESSION | FLAG_COMPRESS_LZX,
    };
    h[0x10..0x14].copy_from_slice(&flags.to_le_bytes());
    h[0x14..0x18].copy_from_slice(&chunk.to_le_bytes());
    h[0x18..0x28].copy_from_slice(&first.options.guid);
    h[0x28..0x2A].copy_from_slice(&1u16.to_le_bytes());
    h[0x2A..0x2C].copy_from_slice(&1u16.to_le_bytes());
    h[0x2C..0x30].copy_from_slice(&(images.len() as u32).to_le_bytes());
    h[0x30..0x48].copy_from_slice(&reshdr_bytes(&bt_hdr));
    h[0x48..0x60].copy_from_slice(&reshdr_bytes(&xml_hdr));
    if boot_index > 0 {
        let m = &meta_entries[boot_index as usize - 1].0;
        h[0x60..0x78].copy_from_slice(&reshdr_bytes(m));
    }
    h[0x78..0x7C].copy_from_slice(&boot_index.to_le_bytes());
    o.seek(SeekFrom::Start(0))?;
    o.write_all(&h)?;
    o.seek(SeekFrom::Start(file_end))?;
    o.flush()?;
    Ok(WriteReport {
        images: images.len(),
        blobs: blobs.len(),
        bytes_in,
        bytes_out: file_end,
    })
}

/// The 24 on-disk bytes of a resource header (F§2).
fn reshdr_bytes(h: &ResHdr) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&h.size_in_wim.to_le_bytes());
    b[7] = h.flags;
    b[8..16].copy_from_slice(&h.offset.to_le_bytes());
    b[16..24].copy_from_slice(&h.uncompressed_size.to_le_bytes());
    b
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

/// One dentry to write: the node and the link (name, DOS name) it is reached by.
struct Entry {
    node: NodeId,
    name: Vec<u16>,
    short: Option<Vec<u16>>,
}

/// Children of directory `dir` in wimlib's order (by UTF-16 code units, as its
/// case-sensitive name comparison orders them).
fn children(tree: &Tree, dir: NodeId) -> Vec<Entry> {
    let mut v: Vec<Entry> = tree
        .node(dir)
        .entries()
        .filter(|(_, e)| e.space != NameSpace::Dos)
        .map(|(name, e)| {
            let short = tree
                .node(e.node)
                .links
                .iter()
                .find(|l| l.parent == dir && l.name == name)
                .and_then(|l| l.dos_name.clone())
                .filter(|d| d.as_slice() != name);
            Entry {
                node: e.node,
                name: name.to_vec(),
                short,
            }
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The (unnamed-first) stream list of a node as wimlib/DISM write it (F§5.4): main hash
/// and extra entries (name, hash).
/// An extra stream entry: name (`None` = unnamed) and hash.
type ExtraEntry = (Option<Vec<u16>>, Sha1);

fn node_streams(tree: &Tree, id: NodeId, nh: &NodeHashes) -> (Sha1, Vec<ExtraEntry>) {
    let n = tree.node(id);
    let mut unnamed = Vec::new();
    if let Some(r) = nh.reparse {
        unnamed.push(r);
    }
    // A reparse point's unnamed data stream is written only when it holds data.
    if !n.is_dir && (nh.reparse.is_none() || nh.data != ZERO_HASH) {
        unnamed.push(nh.data);
    }
    if unnamed.len() <= 1 && nh.named.is_empty() {
        return (unnamed.first().copied().unwrap_or(ZERO_HASH), Vec::new());
    }
    let mut extra: Vec<ExtraEntry> = unnamed.into_iter().map(|h| (None, h)).collect();
    extra.extend(nh.named.iter().map(|(n, h)| (Some(n.clone()), *h)));
    (ZERO_HASH, extra)
}

fn dentry_len(tree: &Tree, e: &Entry, nh: &[NodeHashes]) -> usize {
    let mut len = DENTRY_FIXED;
    if !e.name.is_empty() {
        len += 2 * e.name.len() + 2;
    }
    if let Some(s) = &e.short {
        len += 2 * s.len() + 2;
    }
    len = align8(len);
    if tree.node(e.node).meta.object_id.is_some() {
        len += align8(8 + 16);
    }
    let (_, extra) = node_streams(tree, e.node, &nh[e.node.0]);
    for (name, _) in &extra {
        len += stream_entry_len(name.as_deref());
    }
    len
}

fn stream_entry_len(name: Option<&[u16]>) -> usize {
    align8(STREAM_FIXED + name.map_or(0, |n| 2 * n.len() + 2))
}

fn put_utf16(b: &mut Vec<u8>, s: &[u16]) {
    for u in s {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b.extend_from_slice(&[0, 0]);
}

/// Append dentry `e` and its extra stream entries.
fn write_dentry(
    b: &mut Vec<u8>,
    tree: &Tree,
    e: &Entry,
    nh: &[NodeHashes],
    subdir: u64,
    link_group: u64,
) {
    let n = tree.node(e.node);
    let start = b.len();
    let mut attributes = n.meta.attributes & !(ATTR_DIRECTORY | ATTR_REPARSE_POINT);
    if n.is_dir {
        attributes |= ATTR_DIRECTORY;
    }
    if n.meta.reparse.is_some() {
        attributes |= ATTR_REPARSE_POINT;
    }
    let (main, extra) = node_streams(tree, e.node, &nh[e.node.0]);
    b.extend_from_slice(&[0u8; 8]); // length, filled below
    b.extend_from_slice(&attributes.to_le_bytes());
    let sec = n.meta.security.map_or(-1i32, |s| s.0 as i32);
    b.extend_from_slice(&sec.to_le_bytes());
    b.extend_from_slice(&subdir.to_le_bytes());
    b.extend_from_slice(&[0u8; 16]);
    b.extend_from_slice(&n.meta.creation_time.to_le_bytes());
    b.extend_from_slice(&n.meta.last_access_time.to_le_bytes());
    b.extend_from_slice(&n.meta.last_write_time.to_le_bytes());
    b.extend_from_slice(&main);
    b.extend_from_slice(&[0u8; 4]);
    match &n.meta.reparse {
        Some(r) => {
            b.extend_from_slice(&r.tag.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&RP_FLAG_NOT_FIXED.to_le_bytes());
        }
        None => b.extend_from_slice(&link_group.to_le_bytes()),
    }
    b.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    let short_nbytes = e.short.as_ref().map_or(0, |s| 2 * s.len());
    b.extend_from_slice(&(short_nbytes as u16).to_le_bytes());
    b.extend_from_slice(&((2 * e.name.len()) as u16).to_le_bytes());
    if !e.name.is_empty() {
        put_utf16(b, &e.name);
    }
    if let Some(s) = &e.short {
        put_utf16(b, s);
    }
    b.resize(start + align8(b.len() - start), 0);
    if let Some(oid) = &n.meta.object_id {
        b.extend_from_slice(&TAG_OBJECT_ID.to_le_bytes());
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(oid);
        b.resize(start + align8(b.len() - start), 0);
    }
    let len = (b.len() - start) as u64;
    b[start..start + 8].copy_from_slice(&len.to_le_bytes());
    for (name, h) in &extra {
        let s = b.len();
        let l = stream_entry_len(name.as_deref());
        b.extend_from_slice(&(l as u64).to_le_bytes());
        b.extend_from_slice(&[0u8; 8]);
        b.extend_from_slice(h);
        let nb = name.as_ref().map_or(0, |n| 2 * n.len());
        b.extend_from_slice(&(nb as u16).to_le_bytes());
        if let Some(n) = name {
            put_utf16(b, n);
        }
        b.resize(s + l, 0);
    }
}

/// The metadata resource of one image (F§5) and its XML counts.
fn build_metadata(
    tree: &Tree,
    nh: &[NodeHashes],
    sizes: &HashMap<Sha1, u64>,
) -> io::Result<(Vec<u8>, Stats)> {
    let mut b = Vec::new();
    // Security data (F§5.1).
    let sds = tree.security_descriptors();
    let raw_len = 8 + 8 * sds.len() + sds.iter().map(|s| s.len()).sum::<usize>();
    let total = u32::try_from(align8(raw_len))
        .map_err(|_| bad_input("security descriptors exceed 4 GiB".into()))?;
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(&(sds.len() as u32).to_le_bytes());
    for s in sds {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    for s in sds {
        b.extend_from_slice(s);
    }
    b.resize(total as usize, 0);

    for (id, n) in tree.nodes() {
        if nh[id.0].named.len() + 2 > MAX_EXTRA_STREAMS {
            return Err(bad_input(format!(
                "{} has {} named streams; a WIM dentry holds at most {} stream entries",
                tree.path_of(id),
                n.streams.len(),
                MAX_EXTRA_STREAMS
            )));
        }
    }

    // Hard-link groups: numbered from 1 in node order for files with several links.
    // A reparse point has no group field (it shares the union with the reparse tag,
    // F§5.2), so each link of a multiply-linked reparse point is written as its own file.
    let mut groups: HashMap<usize, u64> = HashMap::new();
    for (id, n) in tree.nodes() {
        if !n.is_dir && n.links.len() > 1 && n.meta.reparse.is_none() {
            let g = groups.len() as u64 + 1;
            groups.insert(id.0, g);
        }
    }

    // Directory lists in pre-order, each with its offset (wimlib's layout, F§5.2).
    let root = Entry {
        node: Tree::ROOT,
        name: Vec::new(),
        short: None,
    };
    let mut offset = (b.len() + dentry_len(tree, &root, nh) + 8) as u64;
    let mut subdirs: HashMap<usize, u64> = HashMap::new();
    let mut lists: Vec<Vec<Entry>> = Vec::new();
    let mut stack = vec![Tree::ROOT];
    while let Some(dir) = stack.pop() {
        let kids = children(tree, dir);
        subdirs.insert(dir.0, offset);
        offset += kids
            .iter()
            .map(|k| dentry_len(tree, k, nh) as u64)
            .sum::<u64>()
            + 8;
        for k in kids.iter().rev() {
            if tree.node(k.node).is_dir {
                stack.push(k.node);
            }
        }
        lists.push(kids);
    }

    let mut st = Stats::default();
    let mut seen = std::collections::HashSet::new();
    let size_of = |h: &Sha1| sizes.get(h).copied().unwrap_or(0);
    let mut count = |e: &Entry| {
        let n = tree.node(e.node);
        let h = &nh[e.node.0];
        let bytes = h.reparse.map_or(0, |r| size_of(&r))
            + size_of(&h.data)
            + h.named.iter().map(|(_, x)| size_of(x)).sum::<u64>();
        st.total_bytes += bytes;
        if n.is_dir {
            st.dirs += 1;
        } else {
            st.files += 1;
            if groups.contains_key(&e.node.0) && !seen.insert(e.node.0) {
                st.hard_link_bytes += bytes;
            }
        }
    };
    write_dentry(&mut b, tree, &root, nh, subdirs[&0], 0);
    count(&root);
    b.extend_from_slice(&[0u8; 8]);
    for kids in &lists {
        for k in kids {
            let sub = if tree.node(k.node).is_dir {
                subdirs[&k.node.0]
            } else {
                0
            };
            let g = groups.get(&k.node.0).copied().unwrap_or(0);
            write_dentry(&mut b, tree, k, nh, sub, g);
            count(k);
        }
        b.extend_from_slice(&[0u8; 8]);
    }
    debug_assert_eq!(b.len() as u64, offset);
    Ok((b, st))
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

fn xml_time(name: &str, t: u64) -> String {
    format!(
        "<{name}><HIGHPART>0x{:08X}</HIGHPART><LOWPART>0x{:08X}</LOWPART></{name}>",
        t >> 32,
        t & 0xFFFF_FFFF
    )
}

/// One `<IMAGE>` element, children in wimlib's order (F§6).
fn xml_image(index: usize, o: &CaptureOptions, st: &Stats) -> String {
    let mut x = format!(
        "<IMAGE INDEX=\"{index}\"><DIRCOUNT>{}</DIRCOUNT><FILECOUNT>{}</FILECOUNT><TOTALBYTES>{}</TOTALBYTES><HARDLINKBYTES>{}</HARDLINKBYTES>",
        st.dirs, st.files, st.total_bytes, st.hard_link_bytes
    );
    x.push_str(&xml_time("CREATIONTIME", o.time));
    x.push_str(&xml_time(
        "LASTMODIFICATIONTIME",
        o.last_modification_time.unwrap_or(o.time),
    ));
    if o.edition_id.is_some()
        || o.version.is_some()
        || !o.languages.is_empty()
        || o.arch.is_some()
        || o.product_name.is_some()
        || o.installation_type.is_some()
    {
        x.push_str("<WINDOWS>");
        if let Some(a) = o.arch {
            x.push_str(&format!("<ARCH>{a}</ARCH>"));
        }
        if let Some(p) = &o.product_name {
            x.push_str(&format!("<PRODUCTNAME>{}</PRODUCTNAME>", esc(p)));
        }
        if let Some(e) = &o.edition_id {
            x.push_str(&format!("<EDITIONID>{}</EDITIONID>", esc(e)));
        }
        if let Some(t) = &o.installation_type {
            x.push_str(&format!("<INSTALLATIONTYPE>{}</INSTALLATIONTYPE>", esc(t)));
        }
        if let Some(first) = o.languages.first() {
            x.push_str("<LANGUAGES>");
            for l in &o.languages {
                x.push_str(&format!("<LANGUAGE>{}</LANGUAGE>", esc(l)));
            }
            x.push_str(&format!("<DEFAULT>{}</DEFAULT></LANGUAGES>", esc(first)));
        }
        if let Some((a, b, c, d)) = o.version {
            x.push_str(&format!(
                "<VERSION><MAJOR>{a}</MAJOR><MINOR>{b}</MINOR><BUILD>{c}</BUILD><SPBUILD>{d}</SPBUILD></VERSION>"
            ));
        }
        x.push_str("</WINDOWS>");
    }
    let mut text = |tag: &str, v: Option<&str>| {
        if let Some(v) = v {
            x.push_str(&format!("<{tag}>{}</{tag}>", esc(v)));
        }
    };
    text(
        "NAME",
        Some(o.image_name.as_str()).filter(|n| !n.is_empty()),
    );
    text("DESCRIPTION", o.description.as_deref());
    text("DISPLAYNAME", o.display_name.as_deref());
    text("DISPLAYDESCRIPTION", o.display_description.as_deref());
    text("FLAGS", o.flags.as_deref());
    x.push_str("</IMAGE>");
    x
}

/// Chunk size of integrity tables wimlib writes (F§7).
const INTEGRITY_CHUNK: u64 = 10 * 1024 * 1024;

/// Append an integrity table (F§7) to a finished WIM in `f` and record it in the header:
/// SHA-1s of each 10 MiB piece of the bytes from the end of the header to the end of the
/// blob table.
pub fn add_integrity_table<F: Read + Write + Seek>(f: &mut F) -> io::Result<()> {
    let mut h = vec![0u8; HEADER_SIZE];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut h)?;
    let size = f.seek(SeekFrom::End(0))?;
    let hdr = super::Header::parse(&h, size)?;
    if !hdr.integrity.is_zero() {
        return Err(bad_input("the WIM already has an integrity table".into()));
    }
    let end = hdr.blob_table.offset + hdr.blob_table.size_in_wim;
    let start = HEADER_SIZE as u64;
    let covered = end.saturating_sub(start);
    let n = covered.div_ceil(INTEGRITY_CHUNK);
    let mut table = Vec::with_capacity(12 + 20 * n as usize);
    table.extend_from_slice(&((12 + 20 * n) as u32).to_le_bytes());
    table.extend_from_slice(&(n as u32).to_le_bytes());
    table.extend_from_slice(&(INTEGRITY_CHUNK as u32).to_le_bytes());
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = covered;
    while left > 0 {
        let mut piece = left.min(INTEGRITY_CHUNK);
        left -= piece;
        let mut sha = Sha1Hasher::new();
        while piece > 0 {
            let k = piece.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..k])?;
            sha.update(&buf[..k]);
            piece -= k as u64;
        }
        table.extend_from_slice(&sha.finalize());
    }
    let r = ResHdr {
        size_in_wim: table.len() as u64,
        flags: 0,
        offset: size,
        uncompressed_size: table.len() as u64,
    };
    f.seek(SeekFrom::Start(size))?;
    f.write_all(&table)?;
    f.seek(SeekFrom::Start(0x7C))?;
    f.write_all(&reshdr_bytes(&r))?;
    f.seek(SeekFrom::Start(size + table.len() as u64))?;
    f.flush()
}

/// Capture options that keep image `index`'s XML fields, with `base`'s compression,
/// chunk size and GUID.
pub fn export_options(
    src: &Wim,
    index: usize,
    base: &CaptureOptions,
) -> io::Result<CaptureOptions> {
    let info = src.images().get(index.wrapping_sub(1)).ok_or_else(|| {
        bad_input(format!(
            "image {index} does not exist (the WIM has {} images)",
            src.image_count()
        ))
    })?;
    let version = match (info.version_major, info.version_minor, info.version_build) {
        (Some(a), Some(b), Some(c)) => Some((a, b, c, info.version_spbuild.unwrap_or(0))),
        _ => None,
    };
    let mut languages = info.languages.clone();
    if let Some(d) = &info.default_language {
        // The default goes first: it is written as <DEFAULT>.
        if let Some(p) = languages.iter().position(|l| l == d) {
            let l = languages.remove(p);
            languages.insert(0, l);
        }
    }
    Ok(CaptureOptions {
        compression: base.compression,
        chunk_size: base.chunk_size,
        image_name: info.name.clone().unwrap_or_default(),
        description: info.description.clone(),
        edition_id: info.edition_id.clone(),
        version,
        languages,
        time: info.creation_time.unwrap_or(base.time),
        guid: base.guid,
        display_name: info.display_name.clone(),
        display_description: info.display_description.clone(),
        flags: info.flags.clone(),
        last_modification_time: info.last_modification_time.or(base.last_modification_time),
        arch: info.arch,
        product_name: info.product_name.clone(),
        installation_type: info.installation_type.clone(),
    })
}

/// Write image `index` of `src` as a one-image WIM, keeping its XML fields (see
/// [`export_options`]); compression, chunk size and GUID come from `options`. The image
/// is read through [`crate::tree::wim::add_image`], so what that leaves out (encrypted
/// files, the sparse and compressed attributes) is left out here too.
pub fn export_image<W: Write + Seek>(
    src: &Arc<Wim>,
    index: usize,
    out: &mut W,
    options: &CaptureOptions,
    progress: &dyn Fn(u64),
) -> io::Result<WriteReport> {
    let opts = export_options(src, index, options)?;
    let mut tree = Tree::new(crate::tree::Meta::default());
    tree.set_case_sensitive(true);
    crate::tree::wim::add_image(&mut tree, Tree::ROOT, src, index)?;
    write_wim(
        out,
        &[ImageSpec {
            tree: &tree,
            options: opts,
        }],
        0,
        progress,
    )
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

    use crate::tree::{Meta, Reparse};

    /// Stream hashes and blob sizes of a tree, as `write_wim` computes them.
    fn hashes(tree: &Tree) -> (Vec<NodeHashes>, HashMap<Sha1, u64>) {
        let mut nh = vec![NodeHashes::default(); tree.len()];
        let mut sizes = HashMap::new();
        for (node, slot, src) in tree_sources(tree) {
            let h = hash_src(src).unwrap();
            sizes.insert(h, src.len());
            match slot {
                0 => nh[node].reparse = Some(h),
                1 => nh[node].data = h,
                _ => {
                    let name = tree.node(NodeId(node)).streams.keys().nth(slot - 2);
                    nh[node].named.push((utf16(name.unwrap()), h));
                }
            }
        }
        (nh, sizes)
    }

    fn small_tree() -> Tree {
        let mut t = Tree::new(Meta::at(5));
        let sd = t.add_security(&[
            1, 0, 4, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
        ]);
        let d = t.add_dir(Tree::ROOT, "dir", Meta::at(6)).unwrap();
        t.add_dir(d, "empty", Meta::at(7)).unwrap();
        let f = t
            .add_with_dos_name(d, "Long name.txt", "LONGNA~1.TXT", false, Meta::at(8))
            .unwrap();
        t.set_data(f, Content::bytes(b"data".to_vec())).unwrap();
        t.add_stream(f, "ads", Content::bytes(b"ads".to_vec()))
            .unwrap();
        t.add_hard_link(f, Tree::ROOT, "link", None).unwrap();
        let mut m = Meta::at(9);
        m.security = Some(sd.unwrap());
        m.reparse = Some(Reparse {
            tag: 0xA000_000C,
            data: vec![1, 2, 3],
        });
        t.add_file(Tree::ROOT, "B", m, Content::Empty).unwrap();
        t
    }

    #[test]
    fn stream_entries_follow_the_dism_rules() {
        let t = small_tree();
        let (nh, _) = hashes(&t);
        let id = |p: &str| t.lookup(p).unwrap();
        // Unnamed data + a named stream: main hash zero, unnamed entry first.
        let (main, extra) =
            node_streams(&t, id("dir/Long name.txt"), &nh[id("dir/Long name.txt").0]);
        assert_eq!(main, ZERO_HASH);
        assert_eq!(extra.len(), 2);
        assert_eq!(extra[0].0, None);
        assert_eq!(extra[1].0.as_deref(), Some(&utf16("ads")[..]));
        // A reparse point without data: the reparse hash is the main hash.
        let (main, extra) = node_streams(&t, id("B"), &nh[id("B").0]);
        let want: Sha1 = Sha1Hasher::digest([1u8, 2, 3]).into();
        assert_eq!(main, want);
        assert!(extra.is_empty());
        // Directories carry no unnamed data stream.
        let (main, extra) = node_streams(&t, id("dir"), &nh[id("dir").0]);
        assert_eq!((main, extra.len()), (ZERO_HASH, 0));
    }

    #[test]
    fn metadata_reads_back_with_the_wim_reader() {
        use super::super::metadata::{ImageTree, StreamKind};
        let t = small_tree();
        let (nh, sizes) = hashes(&t);
        let (buf, st) = build_metadata(&t, &nh, &sizes).unwrap();
        // Security block: one 21-byte descriptor, 8 + 8 + 21 = 37 rounded to 40.
        assert_eq!(&buf[..8], &[40, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(buf[37..40], [0, 0, 0]);
        let img = ImageTree::parse(&buf, 1).unwrap();
        let paths: Vec<String> = img.walk().iter().map(|&i| img.path(i)).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/B",
                "/dir",
                "/dir/Long name.txt",
                "/dir/empty",
                "/link"
            ]
        );
        let e = |p: &str| &img.entries[img.lookup(p).unwrap()];
        assert_eq!(e("/").offset, 40, "root right after the security block");
        let long = e("/dir/Long name.txt");
        assert_eq!(long.short_name.as_deref(), Some("LONGNA~1.TXT"));
        assert_eq!(long.creation_time, 8);
        assert_ne!(long.hard_link_group, 0);
        assert_eq!(long.hard_link_group, e("/link").hard_link_group);
        let kinds: Vec<StreamKind> = long.streams.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [StreamKind::Data, StreamKind::Named]);
        let b = e("/B");
        assert_eq!(b.reparse_tag, Some(0xA000_000C));
        assert_eq!(b.security_id, Some(0));
        assert_eq!(b.attributes, ATTR_REPARSE_POINT);
        assert_eq!(e("/dir").security_id, None);
        assert!(e("/dir/empty").is_dir());
        // Every dentry starts 8-aligned.
        assert!(img.entries.iter().all(|d| d.offset % 8 == 0));
        assert_eq!((st.dirs, st.files), (3, 3));
        // data 4 + ads 3 twice (two links), reparse 3.
        assert_eq!((st.total_bytes, st.hard_link_bytes), (17, 7));
    }

    #[test]
    fn whole_wim_header_xml_and_end() {
        let t = small_tree();
        let mut big = Tree::new(Meta::at(1));
        // Incompressible and several chunks long: stored raw after a compression attempt.
        let mut x = 1u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        big.add_file(Tree::ROOT, "noise", Meta::at(1), Content::bytes(noise))
            .unwrap();
        let opts = |name: &str| CaptureOptions {
            compression: Compression::Xpress,
            chunk_size: 4096,
            image_name: name.into(),
            description: Some("d & <e>".into()),
            edition_id: Some("ServerDatacenterNano".into()),
            version: Some((10, 0, 14393, 0)),
            languages: vec!["en-US".into()],
            time: 0x01D1_2345_6789_ABCD,
            guid: [3; 16],
            display_name: Some("dn".into()),
            display_description: Some("dd".into()),
            flags: Some("fl".into()),
            last_modification_time: Some(0x01D2_0000_0000_0001),
            arch: Some(9),
            product_name: Some("Microsoft® Windows® Operating System".into()),
            installation_type: Some("Nano Server".into()),
        };
        let mut out = Cursor::new(Vec::new());
        let counted = std::cell::Cell::new(0u64);
        let r = write_wim(
            &mut out,
            &[
                ImageSpec {
                    tree: &t,
                    options: opts("one"),
                },
                ImageSpec {
                    tree: &big,
                    options: opts("two"),
                },
            ],
            2,
            &|n| counted.set(counted.get() + n),
        )
        .unwrap();
        let f = out.into_inner();
        assert_eq!(counted.get(), stream_bytes(&t) + stream_bytes(&big));
        assert_eq!(r.bytes_out, f.len() as u64);
        let h = super::super::Header::parse(&f, f.len() as u64).unwrap();
        assert_eq!(h.codec().unwrap(), Codec::Xpress);
        assert_eq!((h.chunk_size, h.image_count, h.boot_index), (4096, 2, 2));
        assert_eq!(h.flags, FLAG_COMPRESSION | FLAG_COMPRESS_XPRESS);
        assert_eq!(h.guid, [3; 16]);
        assert_eq!(
            h.xml.offset + h.xml.size_in_wim,
            f.len() as u64,
            "nothing after the XML"
        );
        assert_eq!(h.blob_table.offset + h.blob_table.size_in_wim, h.xml.offset);
        // Boot metadata = image 2's metadata entry (the second table entry).
        let bt = &f[h.blob_table.offset as usize..];
        assert_eq!(ResHdr::parse(&bt[50..74]), h.boot_metadata);
        assert_eq!(h.boot_metadata.flags & RES_METADATA, RES_METADATA);
        let xml = &f[h.xml.offset as usize..];
        assert_eq!(&xml[..2], &[0xFF, 0xFE]);
        let (imgs, total) = super::super::xml::parse(xml, h.xml.offset).unwrap();
        assert_eq!(total, Some(h.xml.offset));
        let i = &imgs[0];
        assert_eq!(i.name.as_deref(), Some("one"));
        assert_eq!(i.description.as_deref(), Some("d & <e>"));
        assert_eq!(i.display_name.as_deref(), Some("dn"));
        assert_eq!(i.display_description.as_deref(), Some("dd"));
        assert_eq!(i.flags.as_deref(), Some("fl"));
        assert_eq!(i.edition_id.as_deref(), Some("ServerDatacenterNano"));
        assert_eq!(
            (
                i.version_major,
                i.version_minor,
                i.version_build,
                i.version_spbuild
            ),
            (Some(10), Some(0), Some(14393), Some(0))
        );
        assert_eq!(i.languages, ["en-US"]);
        assert_eq!(i.arch, Some(9));
        assert_eq!(
            i.product_name.as_deref(),
            Some("Microsoft® Windows® Operating System")
        );
        assert_eq!(i.installation_type.as_deref(), Some("Nano Server"));
        assert_eq!(i.default_language.as_deref(), Some("en-US"));
        assert_eq!((i.dir_count, i.file_count), (Some(3), Some(3)));
        assert_eq!((i.total_bytes, i.hard_link_bytes), (Some(17), Some(7)));
        assert_eq!(i.creation_time, Some(0x01D1_2345_6789_ABCD));
        assert_eq!(i.last_modification_time, Some(0x01D2_0000_0000_0001));
        assert_eq!(imgs[1].name.as_deref(), Some("two"));
        assert_eq!(imgs[1].total_bytes, Some(200_000));
    }

    #[test]
    fn mixed_compression_and_bad_chunk_sizes_are_refused() {
        let t = Tree::default();
        let a = CaptureOptions::default();
        let b = CaptureOptions {
            compression: Compression::Xpress,
            ..CaptureOptions::default()
        };
        let mut out = Cursor::new(Vec::new());
        let specs = [
            ImageSpec {
                tree: &t,
                options: a.clone(),
            },
            ImageSpec {
                tree: &t,
                options: b,
            },
        ];
        assert!(write_wim(&mut out, &specs, 0, &|_| {}).is_err());
        let bad = CaptureOptions {
            chunk_size: 4096,
            ..a.clone()
        };
        let one = [ImageSpec {
            tree: &t,
            options: bad,
        }];
        assert!(write_wim(&mut out, &one, 0, &|_| {}).is_err());
        let one = [ImageSpec {
            tree: &t,
            options: a,
        }];
        assert!(write_wim(&mut out, &one, 2, &|_| {}).is_err());
        assert!(write_wim(&mut out, &[], 0, &|_| {}).is_err());
    }

    #[test]
    fn integrity_table_covers_header_end_to_blob_table_end() {
        let t = small_tree();
        let mut out = Cursor::new(Vec::new());
        let one = [ImageSpec {
            tree: &t,
            options: CaptureOptions::default(),
        }];
        write_wim(&mut out, &one, 1, &|_| {}).unwrap();
        add_integrity_table(&mut out).unwrap();
        assert!(add_integrity_table(&mut out).is_err(), "only once");
        let f = out.into_inner();
        let h = super::super::Header::parse(&f, f.len() as u64).unwrap();
        let it = &f[h.integrity.offset as usize..];
        assert_eq!(h.integrity.offset + 12 + 20, f.len() as u64);
        assert_eq!(&it[..12], &[32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xA0, 0]);
        let end = (h.blob_table.offset + h.blob_table.size_in_wim) as usize;
        let want: Sha1 = Sha1Hasher::digest(&f[HEADER_SIZE..end]).into();
        assert_eq!(&it[12..32], &want);
    }
}
