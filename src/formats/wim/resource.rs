//! Opening a WIM (or a split set), the blob table (F§4), resources (F§2, F§3), streaming
//! blob reads with SHA-1 checks, whole-file verification and the integrity table (F§7).

use super::header::{
    Header, ResHdr, HEADER_SIZE, RES_COMPRESSED, RES_METADATA, RES_SOLID, VERSION_SOLID,
};
use super::metadata::ImageTree;
use super::xml::{self, ImageInfo};
use super::{hex, Error, Result, Sha1};
use crate::codec::{Codec, Decompress};
use rayon::prelude::*;
use sha1::{Digest, Sha1 as Sha1Hasher};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Size of one blob-table entry (F§4).
const BLOB_ENTRY_SIZE: usize = 50;
/// `uncompressed_size` that marks a solid resource entry (F§3).
const SOLID_RESOURCE_MAGIC: u64 = 0x1_0000_0000;
/// Largest blob table / XML resource we load into memory. Real tables are a few MiB (50
/// bytes per blob); the cap keeps a hostile header from making us allocate gigabytes.
const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Largest metadata resource loaded into memory (a full Windows image is ~100 MiB).
const MAX_METADATA_BYTES: u64 = 1 << 30;
/// wimlib's bound on metadata expansion: uncompressed size / 512 must not exceed the file
/// size (F§9), so a tiny file cannot ask for a huge allocation.
const METADATA_BOMB_RATIO: u64 = 512;
/// Uncompressed bytes decoded per batch of chunks (decoded in parallel); bounds memory.
const BATCH_BYTES: u64 = 16 << 20;
/// Uncompressed bytes one pipeline worker decodes before handing them on (at least one
/// chunk): large enough that the hand-over cost vanishes, small enough that the workers'
/// buffers stay a few MiB for 32 KiB chunks.
const PIPELINE_GROUP_BYTES: u64 = 1 << 20;
/// Non-solid blobs from this size up are streamed by all threads at once when a whole WIM is
/// read (verify, extract): below it, one blob per thread keeps every core busy.
const PIPELINED_BLOB: u64 = 8 << 20;
/// Compressed plus decoded bytes the pipeline workers may hold at once. Two LZMS solid
/// chunks of 64 MiB decode side by side with room for their compressed input, also when one
/// of them barely compresses (64 MiB in, 64 MiB out) and the other compresses to a fifth;
/// with the process's other memory the whole stays under a 256 MiB budget (about 237 MiB
/// measured on a 2 GB solid WIM).
const PIPELINE_BUDGET: u64 = 200 << 20;
/// A capacity that makes the C allocator give a buffer a mapping of its own (see its use).
const OWN_MAPPING: usize = 33 << 20;
/// Uncompressed bytes a [`BlobReader`] decodes per batch (at least one chunk). Readers are
/// opened ahead by the hundreds and often on short-lived threads, so their buffers stay
/// small: big per-reader batches made the allocator keep freed memory and the process
/// grow with the input size.
const READER_BATCH_BYTES: u64 = 1 << 20;
/// Read size for stored (uncompressed) resources.
const RAW_CHUNK: u64 = 1 << 20;
/// Largest chunk a solid resource may declare (wimlib's LZMS limit, F§1).
const MAX_SOLID_CHUNK: u64 = 1 << 30;
/// Most parts of a split set (the part number is 16 bits).
const MAX_PARTS: usize = u16::MAX as usize;
/// Integrity table chunk sizes accepted (wimlib writes 10 MiB; 4 KiB..128 MiB is sane).
const INTEGRITY_CHUNK: std::ops::RangeInclusive<u32> = 4096..=(128 << 20);

/// Idle decoders by (codec, chunk size), reused across chunks and threads.
type DecoderPool = HashMap<(Codec, u64), Vec<Box<dyn Decompress>>>;

pub(crate) struct Part {
    pub(crate) path: PathBuf,
    file: File,
    pub(crate) size: u64,
    pub(crate) header: Header,
}

/// Where a blob's bytes live.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc {
    /// A whole non-solid resource in part `part` (index into `parts`).
    Plain { part: usize, reshdr: ResHdr },
    /// `offset` bytes into solid resource `res`.
    Solid { res: usize, offset: u64 },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobInfo {
    pub(crate) hash: Sha1,
    pub(crate) size: u64,
    pub(crate) refcnt: u32,
    pub(crate) loc: Loc,
}

/// A resource cut into independently decodable chunks.
pub(crate) struct ChunkSource {
    part: usize,
    /// Absolute file offset of chunk 0's stored bytes.
    start: u64,
    /// n+1 chunk boundaries relative to `start` (empty for stored resources).
    bounds: Vec<u64>,
    chunk_size: u64,
    usize: u64,
    codec: Codec,
    /// The resource header's offset, for error messages.
    res_at: u64,
}

impl ChunkSource {
    fn chunk_len(&self, i: u64) -> u64 {
        (self.usize - i * self.chunk_size).min(self.chunk_size)
    }

    fn span(&self, i: u64) -> (u64, u64) {
        if self.codec == Codec::None {
            (i * self.chunk_size, i * self.chunk_size + self.chunk_len(i))
        } else {
            (self.bounds[i as usize], self.bounds[i as usize + 1])
        }
    }
}

/// Summary of a successful [`Wim::verify`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub images: usize,
    pub blobs: u64,
    pub bytes: u64,
    /// `Some(true)` if an integrity table was present and matched.
    pub integrity_checked: bool,
}

/// An open WIM file or split set.
pub struct Wim {
    pub(crate) parts: Vec<Part>,
    codec: Codec,
    pub(crate) blobs: HashMap<Sha1, BlobInfo>,
    solids: Vec<Arc<ChunkSource>>,
    metadata: Vec<BlobInfo>,
    images: Vec<ImageInfo>,
    total_bytes: Option<u64>,
    pools: Mutex<DecoderPool>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn open_part(path: &Path) -> Result<Part> {
    let file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let mut b = vec![0u8; HEADER_SIZE];
    let n = (size as usize).min(HEADER_SIZE);
    file.read_exact_at(&mut b[..n], 0).map_err(io_err(path))?;
    let header = Header::parse(&b, size)?;
    Ok(Part {
        path: path.to_path_buf(),
        file,
        size,
        header,
    })
}

impl Wim {
    /// Open a standalone WIM (part 1 of 1).
    pub fn open(path: impl AsRef<Path>) -> Result<Wim> {
        let part = open_part(path.as_ref())?;
        if part.header.total_parts != 1 {
            return Err(Error::Split(format!(
                "{} is part {} of a {}-part split WIM; open all parts together",
                path.as_ref().display(),
                part.header.part_number,
                part.header.total_parts
            )));
        }
        Wim::assemble(vec![part])
    }

    /// Open all parts of a split WIM (.swm), in any order.
    pub fn open_split(paths: &[PathBuf]) -> Result<Wim> {
        if paths.is_empty() || paths.len() > MAX_PARTS {
            return Err(Error::Split(format!("{} parts given", paths.len())));
        }
        let mut parts = paths
            .iter()
            .map(|p| open_part(p))
            .collect::<Result<Vec<_>>>()?;
        parts.sort_by_key(|p| p.header.part_number);
        let first = &parts[0].header;
        for (i, p) in parts.iter().enumerate() {
            let h = &p.header;
            if h.guid != first.guid || h.total_parts != first.total_parts {
                return Err(Error::Split(format!(
                    "{} belongs to another set (GUID or part count differs from {})",
                    p.path.display(),
                    parts[0].path.display()
                )));
            }
            if usize::from(h.part_number) != i + 1 {
                return Err(Error::Split(format!(
                    "part {} is missing or given twice (found part {} at {})",
                    i + 1,
                    h.part_number,
                    p.path.display()
                )));
            }
        }
        if parts.len() != usize::from(first.total_parts) {
            return Err(Error::Split(format!(
                "{} of {} parts given",
                parts.len(),
                first.total_parts
            )));
        }
        Wim::assemble(parts)
    }

    fn assemble(parts: Vec<Part>) -> Result<Wim> {
        let codec = parts[0].header.codec()?;
        let mut wim = Wim {
            parts,
            codec,
            blobs: HashMap::new(),
            solids: Vec::new(),
            metadata: Vec::new(),
            images: Vec::new(),
            total_bytes: None,
            pools: Mutex::new(HashMap::new()),
        };
        for p in 0..wim.parts.len() {
            wim.load_blob_table(p)?;
        }
        let h = wim.parts[0].header.clone();
        if (wim.metadata.len() as u64) < u64::from(h.image_count) {
            return Err(Error::Corrupt {
                structure: "blob table",
                offset: h.blob_table.offset,
                what: format!(
                    "{} metadata resources for {} images",
                    wim.metadata.len(),
                    h.image_count
                ),
            });
        }
        wim.metadata.truncate(h.image_count as usize);
        if !h.xml.is_zero() {
            let bytes = wim.read_small_resource(0, &h.xml, "XML data")?;
            let (images, total) = xml::parse(&bytes, h.xml.offset)?;
            if images.len() != h.image_count as usize {
                return Err(Error::Xml {
                    offset: h.xml.offset,
                    what: format!(
                        "{} IMAGE elements, header says {} images",
                        images.len(),
                        h.image_count
                    ),
                });
            }
            wim.images = images;
            wim.total_bytes = total;
        }
        Ok(wim)
    }

    /// Read a whole small resource (blob table, XML) from part `p`, no hash to check.
    fn read_small_resource(&self, p: usize, r: &ResHdr, what: &'static str) -> Result<Vec<u8>> {
        let part = &self.parts[p];
        if r.uncompressed_size > MAX_TABLE_BYTES || r.uncompressed_size > part.size {
            return Err(Error::Limit {
                limit: "table size",
                what: format!(
                    "{what} of {} bytes in {}",
                    r.uncompressed_size,
                    part.path.display()
                ),
                max: MAX_TABLE_BYTES.min(part.size),
            });
        }
        let src = self.plain_source(p, r)?;
        self.read_all(&src, 0, r.uncompressed_size)
    }

    fn load_blob_table(&mut self, p: usize) -> Result<()> {
        let h = self.parts[p].header.clone();
        if h.blob_table.is_zero() {
            return Ok(());
        }
        let table = self.read_small_resource(p, &h.blob_table, "blob table")?;
        let solid_ok = h.version == VERSION_SOLID;
        let mut run_resources: Vec<usize> = Vec::new();
        let mut run_blobs: Vec<(u64, Sha1, u64, u32)> = Vec::new();
        let base = h.blob_table.offset;
        for (i, e) in table.chunks_exact(BLOB_ENTRY_SIZE).enumerate() {
            let at = base + (i * BLOB_ENTRY_SIZE) as u64;
            let mut reshdr = ResHdr::parse(&e[..24]);
            let part_number = u16::from_le_bytes([e[24], e[25]]);
            let refcnt = u32::from_le_bytes([e[26], e[27], e[28], e[29]]);
            let mut hash = [0u8; 20];
            hash.copy_from_slice(&e[30..50]);
            if !solid_ok {
                reshdr.flags &= !RES_SOLID;
            }
            if reshdr.flags & RES_SOLID == 0 && (!run_resources.is_empty() || !run_blobs.is_empty())
            {
                self.finish_solid_run(&mut run_resources, &mut run_blobs, at)?;
            }
            if part_number != h.part_number {
                continue;
            }
            if reshdr.flags & RES_SOLID != 0 {
                if reshdr.flags & RES_METADATA != 0 {
                    return Err(Error::Corrupt {
                        structure: "blob table entry",
                        offset: at,
                        what: "a metadata resource is marked solid".into(),
                    });
                }
                if reshdr.uncompressed_size == SOLID_RESOURCE_MAGIC {
                    let src = self.solid_source(p, &reshdr, at)?;
                    self.solids.push(Arc::new(src));
                    run_resources.push(self.solids.len() - 1);
                } else if reshdr.size_in_wim != 0 && hash != [0; 20] {
                    // size_in_wim holds the blob's size for blobs inside solid resources.
                    run_blobs.push((reshdr.size_in_wim, hash, reshdr.offset, refcnt));
                }
                continue;
            }
            if reshdr.size_in_wim == 0 && reshdr.uncompressed_size == 0 {
                continue;
            }
            reshdr.check_in_file("blob table entry", at, self.parts[p].size)?;
            if reshdr.flags & RES_COMPRESSED == 0 && reshdr.size_in_wim != reshdr.uncompressed_size
            {
                return Err(Error::Corrupt {
                    structure: "blob table entry",
                    offset: at,
                    what: format!(
                        "stored resource has size_in_wim {} but uncompressed size {}",
                        reshdr.size_in_wim, reshdr.uncompressed_size
                    ),
                });
            }
            let info = BlobInfo {
                hash,
                size: reshdr.uncompressed_size,
                refcnt,
                loc: Loc::Plain { part: p, reshdr },
            };
            if reshdr.flags & RES_METADATA != 0 {
                if refcnt == 0 || p != 0 {
                    continue;
                }
                if refcnt > 1 {
                    return Err(Error::Corrupt {
                        structure: "blob table entry",
                        offset: at,
                        what: format!("metadata resource has reference count {refcnt}, expected 1"),
                    });
                }
                self.metadata.push(info);
                continue;
            }
            if hash == [0; 20] || reshdr.uncompressed_size == 0 {
                continue;
            }
            self.blobs.entry(hash).or_insert(info);
        }
        let end = base + table.len() as u64;
        self.finish_solid_run(&mut run_resources, &mut run_blobs, end)
    }

    /// Place the blobs of one run of solid entries into the run's resources (F§3).
    fn finish_solid_run(
        &mut self,
        resources: &mut Vec<usize>,
        blobs: &mut Vec<(u64, Sha1, u64, u32)>,
        at: u64,
    ) -> Result<()> {
        let mut placed: Vec<Vec<(u64, u64)>> = vec![Vec::new(); resources.len()];
        for &(size, hash, offset, refcnt) in blobs.iter() {
            let mut off = offset;
            let mut found = None;
            for (k, &r) in resources.iter().enumerate() {
                let ru = self.solids[r].usize;
                if off < ru {
                    if off.checked_add(size).is_some_and(|e| e <= ru) {
                        found = Some((k, r, off));
                    }
                    break;
                }
                off -= ru;
            }
            let (k, r, off) = found.ok_or_else(|| Error::Corrupt {
                structure: "solid blob entry",
                offset: at,
                what: format!(
                    "blob {} of {size} bytes at offset {offset} lies outside its solid resources",
                    hex(&hash)
                ),
            })?;
            placed[k].push((off, off + size));
            self.blobs.entry(hash).or_insert(BlobInfo {
                hash,
                size,
                refcnt,
                loc: Loc::Solid {
                    res: r,
                    offset: off,
                },
            });
        }
        for list in placed.iter_mut() {
            list.sort_unstable();
            if list.windows(2).any(|w| w[1].0 < w[0].1) {
                return Err(Error::Corrupt {
                    structure: "solid blob entries",
                    offset: at,
                    what: "two blobs overlap inside one solid resource".into(),
                });
            }
        }
        resources.clear();
        blobs.clear();
        Ok(())
    }

    /// Read a solid resource's header and chunk-size table (F§3).
    fn solid_source(&self, p: usize, r: &ResHdr, at: u64) -> Result<ChunkSource> {
        let part = &self.parts[p];
        r.check_in_file("solid resource entry", at, part.size)?;
        let corrupt = |what: String| Error::Corrupt {
            structure: "solid resource header",
            offset: r.offset,
            what,
        };
        if r.size_in_wim < 16 {
            return Err(corrupt(format!(
                "stored size {} is below the 16-byte header",
                r.size_in_wim
            )));
        }
        let mut h = [0u8; 16];
        self.pread(p, r.offset, &mut h)?;
        let usize_ = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
        let chunk_size = u64::from(u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
        let format = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        let codec = match format {
            0 => Codec::None,
            1 => Codec::Xpress,
            2 => Codec::Lzx,
            3 => Codec::Lzms,
            f => return Err(corrupt(format!("compression format {f} is not 0..=3"))),
        };
        if !chunk_size.is_power_of_two() || !(4096..=MAX_SOLID_CHUNK).contains(&chunk_size) {
            return Err(corrupt(format!(
                "chunk size {chunk_size} is not a power of two in 4096..=2^30"
            )));
        }
        let n = usize_.div_ceil(chunk_size);
        let table = n
            .checked_mul(4)
            .and_then(|t| t.checked_add(16))
            .filter(|&t| t <= r.size_in_wim)
            .ok_or_else(|| {
                corrupt(format!(
                    "{n} chunks need a table larger than the {}-byte resource",
                    r.size_in_wim
                ))
            })?;
        let mut raw = vec![0u8; (table - 16) as usize];
        self.pread(p, r.offset + 16, &mut raw)?;
        let mut bounds = Vec::with_capacity(n as usize + 1);
        let mut acc = 0u64;
        bounds.push(0);
        for (i, s) in raw.chunks_exact(4).enumerate() {
            let s = u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            let ulen = (usize_ - i as u64 * chunk_size).min(chunk_size);
            if s == 0 || s > ulen {
                return Err(corrupt(format!(
                    "chunk {i} has stored size {s}, expected 1..={ulen}"
                )));
            }
            acc += s;
            bounds.push(acc);
        }
        if acc > r.size_in_wim - table {
            return Err(corrupt(format!(
                "chunks total {acc} bytes but only {} follow the table",
                r.size_in_wim - table
            )));
        }
        let codec = if codec == Codec::None {
            Codec::None
        } else {
            codec
        };
        if codec == Codec::None && acc != usize_ {
            return Err(corrupt("stored solid resource sizes do not add up".into()));
        }
        Ok(ChunkSource {
            part: p,
            start: r.offset + table,
            bounds: if codec == Codec::None {
                Vec::new()
            } else {
                bounds
            },
            chunk_size,
            usize: usize_,
            codec,
            res_at: r.offset,
        })
    }

    /// A chunk source for a non-solid resource: stored, or chunked with a table (F§2).
    fn plain_source(&self, p: usize, r: &ResHdr) -> Result<ChunkSource> {
        let part = &self.parts[p];
        r.check_in_file("resource", r.offset, part.size)?;
        if r.flags & RES_COMPRESSED == 0 || self.codec == Codec::None {
            if r.size_in_wim != r.uncompressed_size {
                return Err(Error::Corrupt {
                    structure: "resource",
                    offset: r.offset,
                    what: format!(
                        "stored resource of {} bytes claims {} uncompressed bytes",
                        r.size_in_wim, r.uncompressed_size
                    ),
                });
            }
            return Ok(ChunkSource {
                part: p,
                start: r.offset,
                bounds: Vec::new(),
                chunk_size: RAW_CHUNK,
                usize: r.uncompressed_size,
                codec: Codec::None,
                res_at: r.offset,
            });
        }
        let corrupt = |what: String| Error::Corrupt {
            structure: "chunk table",
            offset: r.offset,
            what,
        };
        let cs = u64::from(part.header.chunk_size);
        let n = r.uncompressed_size.div_ceil(cs);
        let width = if r.uncompressed_size > u64::from(u32::MAX) {
            8
        } else {
            4
        };
        let table = n
            .saturating_sub(1)
            .checked_mul(width)
            .filter(|&t| t <= r.size_in_wim)
            .ok_or_else(|| {
                corrupt(format!(
                    "{n} chunks need a table larger than the {}-byte resource",
                    r.size_in_wim
                ))
            })?;
        let mut raw = vec![0u8; table as usize];
        self.pread(p, r.offset, &mut raw)?;
        let data_len = r.size_in_wim - table;
        let mut bounds = Vec::with_capacity(n as usize + 1);
        bounds.push(0u64);
        for e in raw.chunks_exact(width as usize) {
            let v = if width == 4 {
                u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]))
            } else {
                u64::from_le_bytes(e.try_into().unwrap_or_default())
            };
            bounds.push(v);
        }
        if n > 0 {
            bounds.push(data_len);
        }
        for i in 0..n as usize {
            let (a, b) = (bounds[i], bounds[i + 1]);
            let ulen = (r.uncompressed_size - i as u64 * cs).min(cs);
            if b <= a || b - a > ulen || b > data_len {
                return Err(corrupt(format!(
                    "chunk {i} spans {a}..{b} of {data_len} data bytes (offsets must increase, each chunk 1..={ulen} bytes)"
                )));
            }
        }
        Ok(ChunkSource {
            part: p,
            start: r.offset + table,
            bounds,
            chunk_size: cs,
            usize: r.uncompressed_size,
            codec: self.codec,
            res_at: r.offset,
        })
    }

    fn pread(&self, p: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let part = &self.parts[p];
        crate::core::block::check_range(offset, buf.len(), part.size)
            .and_then(|_| part.file.read_exact_at(buf, offset))
            .map_err(io_err(&part.path))
    }

    fn take_decoder(&self, codec: Codec, chunk: u64) -> Result<Box<dyn Decompress>> {
        if let Some(d) = self
            .pools
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(&(codec, chunk)).and_then(|v| v.pop()))
        {
            return Ok(d);
        }
        codec
            .decoder(chunk as usize)
            .map_err(|source| Error::Codec {
                offset: 0,
                chunk: 0,
                source,
            })?
            .ok_or_else(|| Error::Corrupt {
                structure: "resource",
                offset: 0,
                what: "no decoder for stored data".into(),
            })
    }

    fn give_decoder(&self, codec: Codec, chunk: u64, d: Box<dyn Decompress>) {
        if let Ok(mut m) = self.pools.lock() {
            m.entry((codec, chunk)).or_default().push(d);
        }
    }

    /// Decode chunks `first..first+count` of `src` (in parallel) into `out`, chunk `k` of
    /// the batch at `k * chunk_size`; returns the number of bytes decoded. `stored` and
    /// `out` are scratch buffers reused across batches: they only grow, and every byte of
    /// `out[..returned]` is written (a decoder fills its output exactly), so they are
    /// never cleared.
    fn decode_batch(
        &self,
        src: &ChunkSource,
        first: u64,
        count: u64,
        stored: &mut Vec<u8>,
        out: &mut Vec<u8>,
        parallel: bool,
    ) -> Result<usize> {
        let (s, _) = src.span(first);
        let (_, e) = src.span(first + count - 1);
        let stored_len = (e - s) as usize;
        grow(stored, stored_len);
        self.pread(src.part, src.start + s, &mut stored[..stored_len])?;
        let total = (first..first + count)
            .map(|i| src.chunk_len(i) as usize)
            .sum::<usize>();
        grow(out, total);
        let stored = &stored[..stored_len];
        let decode_one = |i: u64, dst: &mut [u8]| -> Result<()> {
            let (a, b) = src.span(i);
            let input = &stored[(a - s) as usize..(b - s) as usize];
            if src.codec == Codec::None || input.len() == dst.len() {
                dst.copy_from_slice(input);
                return Ok(());
            }
            let mut d = self.take_decoder(src.codec, src.chunk_size)?;
            let r = d.decompress(input, dst);
            self.give_decoder(src.codec, src.chunk_size, d);
            r.map_err(|source| Error::Codec {
                offset: src.res_at,
                chunk: i,
                source,
            })
        };
        let out = &mut out[..total];
        if count == 1 {
            decode_one(first, out)?;
        } else if !parallel {
            for (k, dst) in out.chunks_mut(src.chunk_size as usize).enumerate() {
                decode_one(first + k as u64, dst)?;
            }
        } else {
            out.par_chunks_mut(src.chunk_size as usize)
                .enumerate()
                .try_for_each(|(k, dst)| decode_one(first + k as u64, dst))?;
        }
        Ok(total)
    }

    /// Chunks per batch: about `BATCH_BYTES`, but at least one per worker thread so large
    /// solid chunks still decode in parallel.
    fn batch_count(&self, src: &ChunkSource, first: u64, end_chunk: u64) -> u64 {
        (BATCH_BYTES / src.chunk_size)
            .max(rayon::current_num_threads() as u64)
            .min(end_chunk - first)
    }

    /// Stream the bytes `[start, end)` of a resource to `f` in order.
    fn stream_range(
        &self,
        src: &ChunkSource,
        start: u64,
        end: u64,
        f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.stream_range_with(src, start, end, true, f)
    }

    /// [`Wim::stream_range`], decoding each batch's chunks in parallel or not: callers that
    /// already run one blob per thread decode serially, so no thread waits on a nested
    /// batch's slowest chunk while the SHA-1 of the last one runs alone.
    fn stream_range_with(
        &self,
        src: &ChunkSource,
        start: u64,
        end: u64,
        parallel: bool,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut bufs = Scratch::take();
        let mut chunk = start / src.chunk_size;
        let last = (end - 1) / src.chunk_size + 1;
        while chunk < last {
            let count = self.batch_count(src, chunk, last);
            let n =
                self.decode_batch(src, chunk, count, &mut bufs.stored, &mut bufs.out, parallel)?;
            let bstart = chunk * src.chunk_size;
            let a = start.max(bstart) - bstart;
            let b = end.min(bstart + n as u64) - bstart;
            f(&bufs.out[a as usize..b as usize])?;
            chunk += count;
        }
        bufs.give_back();
        Ok(())
    }

    /// Like [`Wim::stream_range`], for long ranges: worker threads each claim the next
    /// group of chunks, decode it into their own buffers, then wait for their turn and pass
    /// it to `f`, so decoding of later groups overlaps `f` (hashing) of earlier ones and
    /// every core stays busy.
    ///
    /// Memory: a group's compressed and decoded bytes are reserved against
    /// [`PIPELINE_BUDGET`] when it is claimed (claims and reservations happen in order
    /// under one lock, so the group whose turn is next always holds its reservation and
    /// progress never stalls); the compressed bytes are released as soon as the group is
    /// decoded. A worker keeps its output buffer, still reserved, for its next group, and
    /// frees it when a claim has to wait, so waiting claims only wait on groups in flight.
    /// A group larger than the whole budget still runs, alone.
    fn stream_range_pipelined(
        &self,
        src: &ChunkSource,
        start: u64,
        end: u64,
        f: impl FnMut(&[u8]) -> Result<()> + Send,
    ) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let first = start / src.chunk_size;
        let last = (end - 1) / src.chunk_size + 1;
        let per_group = (PIPELINE_GROUP_BYTES / src.chunk_size).max(1);
        let groups = (last - first).div_ceil(per_group);
        let workers = (rayon::current_num_threads() as u64).min(groups);
        if workers <= 1 {
            return self.stream_range(src, start, end, f);
        }
        struct Pipe<F> {
            next_claim: u64,
            reserved: u64,
            turn: u64,
            f: F,
            failed: Option<Error>,
        }
        let pipe = Mutex::new(Pipe {
            next_claim: 0,
            reserved: 0,
            turn: 0,
            f,
            failed: None,
        });
        let cv = std::sync::Condvar::new();
        let lock = || pipe.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    // The decoded-output buffer is kept from group to group (no page
                    // faults for a fresh one each time); its size stays reserved while kept.
                    let mut out = Vec::new();
                    let mut kept = 0u64;
                    let exit = |kept: u64| {
                        let mut p = lock();
                        p.reserved -= kept;
                        cv.notify_all();
                    };
                    loop {
                        // Claim the next group and reserve its memory.
                        let (g, chunk, count, stored_len) = {
                            let mut p = lock();
                            loop {
                                if p.failed.is_some() || p.next_claim >= groups {
                                    drop(p);
                                    return exit(kept);
                                }
                                let g = p.next_claim;
                                let chunk = first + g * per_group;
                                let count = per_group.min(last - chunk);
                                let stored_len = src.span(chunk + count - 1).1 - src.span(chunk).0;
                                let out_len: u64 =
                                    (chunk..chunk + count).map(|i| src.chunk_len(i)).sum();
                                let want = stored_len + out_len.saturating_sub(kept);
                                if p.reserved == kept || p.reserved + want <= PIPELINE_BUDGET {
                                    p.reserved += want;
                                    kept = kept.max(out_len);
                                    p.next_claim += 1;
                                    break (g, chunk, count, stored_len);
                                }
                                if kept > 0 {
                                    // Blocked: give the kept buffer back so the budget
                                    // only ever waits on groups in flight.
                                    out = Vec::new();
                                    p.reserved -= kept;
                                    kept = 0;
                                    cv.notify_all();
                                    continue;
                                }
                                p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
                            }
                        };
                        // Capacity above glibc's largest dynamic mmap threshold (32 MiB on
                        // 64-bit, mallopt(3)), so the buffer is its own mapping and its
                        // pages go back to the system when it is dropped instead of
                        // lingering in an arena; pages past `stored_len` are never touched.
                        let mut stored = Vec::with_capacity((stored_len as usize).max(OWN_MAPPING));
                        let res =
                            self.decode_batch(src, chunk, count, &mut stored, &mut out, false);
                        drop(stored);
                        let mut p = lock();
                        p.reserved -= stored_len;
                        cv.notify_all();
                        while p.turn != g && p.failed.is_none() {
                            p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
                        }
                        if p.failed.is_some() {
                            drop(p);
                            return exit(kept);
                        }
                        let res = res.and_then(|n| {
                            let bstart = chunk * src.chunk_size;
                            let a = start.max(bstart) - bstart;
                            let b = end.min(bstart + n as u64) - bstart;
                            (p.f)(&out[a as usize..b as usize])
                        });
                        match res {
                            Ok(()) => p.turn += 1,
                            Err(e) => p.failed = Some(e),
                        }
                        cv.notify_all();
                    }
                });
            }
        });
        let p = pipe.into_inner().unwrap_or_else(|e| e.into_inner());
        match p.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn read_all(&self, src: &ChunkSource, start: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(len as usize);
        self.stream_range(src, start, start + len, |b| {
            v.extend_from_slice(b);
            Ok(())
        })?;
        Ok(v)
    }

    fn source_of(&self, b: &BlobInfo) -> Result<(Arc<ChunkSource>, u64)> {
        match b.loc {
            Loc::Plain { part, reshdr } => Ok((Arc::new(self.plain_source(part, &reshdr)?), 0)),
            Loc::Solid { res, offset } => Ok((self.solids[res].clone(), offset)),
        }
    }

    // ---- public API ----

    /// The header of part 1.
    pub fn header(&self) -> &Header {
        &self.parts[0].header
    }

    /// Codec of non-solid compressed resources.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Per-image information from the XML data.
    pub fn images(&self) -> &[ImageInfo] {
        &self.images
    }

    /// `<TOTALBYTES>` of the `<WIM>` element, if present.
    pub fn xml_total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// Number of images (from the header, matched against metadata resources).
    pub fn image_count(&self) -> usize {
        self.metadata.len()
    }

    /// Size of all parts in bytes.
    pub fn file_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Size, reference count and where a blob is stored.
    pub fn blob_size(&self, hash: &Sha1) -> Option<u64> {
        self.blobs.get(hash).map(|b| b.size)
    }

    /// Reference count recorded in the blob table.
    pub fn blob_ref_count(&self, hash: &Sha1) -> Option<u32> {
        self.blobs.get(hash).map(|b| b.refcnt)
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Whether any resource is solid.
    pub fn has_solid_resources(&self) -> bool {
        !self.solids.is_empty()
    }

    /// Parse the metadata resource of image `index` (1-based).
    pub fn image(&self, index: usize) -> Result<ImageTree> {
        let count = self.metadata.len();
        let m = *index
            .checked_sub(1)
            .and_then(|i| self.metadata.get(i))
            .ok_or(Error::NoImage { index, count })?;
        if m.size > MAX_METADATA_BYTES || m.size / METADATA_BOMB_RATIO > self.file_size() {
            return Err(Error::Limit {
                limit: "metadata size",
                what: format!(
                    "image {index} metadata of {} bytes in a {}-byte WIM",
                    m.size,
                    self.file_size()
                ),
                max: MAX_METADATA_BYTES,
            });
        }
        let (src, off) = self.source_of(&m)?;
        let data = self.read_all(&src, off, m.size)?;
        let actual: Sha1 = Sha1Hasher::digest(&data).into();
        if actual != m.hash {
            return Err(Error::HashMismatch {
                hash: hex(&m.hash),
                actual: hex(&actual),
                paths: format!("metadata of image {index}"),
            });
        }
        ImageTree::parse(&data, index)
    }

    /// A streaming reader over one blob; the SHA-1 is checked when the end is reached
    /// (the final `read` returns an `InvalidData` error on mismatch).
    pub fn open_blob(&self, hash: &Sha1) -> Result<BlobReader<'_>> {
        self.open_blob_named(hash, String::new())
    }

    /// Like [`Wim::open_blob`], naming `label` (the paths using the blob) in errors.
    pub fn open_blob_named(&self, hash: &Sha1, label: String) -> Result<BlobReader<'_>> {
        let b = self
            .blobs
            .get(hash)
            .ok_or_else(|| Error::MissingBlob(hex(hash)))?;
        let (src, off) = self.source_of(b)?;
        let first = off / src.chunk_size;
        Ok(BlobReader {
            wim: self,
            src,
            start: off,
            end: off + b.size,
            next_chunk: first,
            pos: off,
            bufs: None,
            buf_pos: 0,
            buf_end: 0,
            hasher: Sha1Hasher::new(),
            hash: *hash,
            label,
            done: b.size == 0,
        })
    }

    /// The bytes of a blob stored in a resource of its own, decoded straight into the
    /// returned buffer (no copy through a reader's scratch buffer) and SHA-1 checked; None
    /// for a blob inside a solid resource (read those with [`Wim::open_blob`]). For blobs
    /// small enough to hold whole; decoded on the calling thread.
    pub fn read_plain_blob(&self, hash: &Sha1) -> Result<Option<Vec<u8>>> {
        let b = self
            .blobs
            .get(hash)
            .ok_or_else(|| Error::MissingBlob(hex(hash)))?;
        if !matches!(b.loc, Loc::Plain { .. }) {
            return Ok(None);
        }
        if b.size == 0 {
            return Ok(Some(Vec::new()));
        }
        let (src, off) = self.source_of(b)?;
        let first = off / src.chunk_size;
        let last = (off + b.size - 1) / src.chunk_size + 1;
        let mut scratch = Scratch::take();
        let mut out = Vec::new();
        let r = self.decode_batch(
            &src,
            first,
            last - first,
            &mut scratch.stored,
            &mut out,
            true,
        );
        scratch.give_back();
        let n = r.map_err(|e| blob_error(e, hex(hash)))?;
        // A plain blob is its whole resource: the chunks hold exactly its bytes.
        if off != 0 || n as u64 != b.size {
            return Err(Error::Corrupt {
                structure: "resource",
                offset: src.res_at,
                what: format!("blob {} of {} bytes decodes to {n}", hex(hash), b.size),
            });
        }
        out.truncate(n);
        check_sha1(b, Sha1Hasher::new_with_prefix(&out), &|h| hex(h))?;
        Ok(Some(out))
    }

    /// Pass the bytes of one blob to `f` in order, decoded by every thread with its SHA-1
    /// overlapping the decoding (see [`Wim::stream_range_pipelined`]); the SHA-1 is checked
    /// at the end. For a consumer that wants one large blob as fast as possible.
    pub fn stream_blob(
        &self,
        hash: &Sha1,
        f: impl FnMut(&[u8]) -> Result<()> + Send,
    ) -> Result<()> {
        let b = self
            .blobs
            .get(hash)
            .ok_or_else(|| Error::MissingBlob(hex(hash)))?;
        self.stream_blob_pipelined(b, &|h: &Sha1| hex(h), f)
    }

    /// [`Wim::stream_blob`] for a known blob, naming `label(hash)` in errors.
    fn stream_blob_pipelined(
        &self,
        b: &BlobInfo,
        label: &dyn Fn(&Sha1) -> String,
        mut f: impl FnMut(&[u8]) -> Result<()> + Send,
    ) -> Result<()> {
        let (src, off) = self.source_of(b)?;
        let mut h = Sha1Hasher::new();
        self.stream_range_pipelined(&src, off, off + b.size, |d| {
            h.update(d);
            f(d)
        })
        .map_err(|e| blob_error(e, label(&b.hash)))?;
        check_sha1(b, h, label)
    }

    /// Decode every blob in `hashes` (all blobs if `None`), check each SHA-1, and pass the
    /// bytes to a sink made per blob. Resources are processed in parallel; each blob's bytes
    /// arrive in order. `label` names the paths using a blob, for error messages.
    pub(crate) fn stream_blobs<S: BlobSink>(
        &self,
        hashes: Option<&[Sha1]>,
        label: &(dyn Fn(&Sha1) -> String + Sync),
        make_sink: &(dyn Fn(&Sha1) -> Result<S> + Sync),
    ) -> Result<(u64, u64)> {
        let selected: Vec<&BlobInfo> = match hashes {
            None => self.blobs.values().collect(),
            Some(h) => h
                .iter()
                .map(|x| self.blobs.get(x).ok_or_else(|| Error::MissingBlob(hex(x))))
                .collect::<Result<_>>()?,
        };
        // Units of work: each non-solid blob alone; each solid resource with its blobs.
        let mut plain: Vec<&BlobInfo> = Vec::new();
        let mut solid: HashMap<usize, Vec<&BlobInfo>> = HashMap::new();
        for b in selected {
            match b.loc {
                Loc::Plain { .. } => plain.push(b),
                Loc::Solid { res, .. } => solid.entry(res).or_default().push(b),
            }
        }
        // Largest first so the parallel tail is short.
        plain.sort_by(|a, b| b.size.cmp(&a.size).then(a.hash.cmp(&b.hash)));
        let mut solid: Vec<(usize, Vec<&BlobInfo>)> = solid.into_iter().collect();
        solid.sort_by_key(|(r, _)| *r);
        let check = |b: &BlobInfo, h: Sha1Hasher| check_sha1(b, h, label);
        let wrap = |e: Error, h: &Sha1| blob_error(e, label(h));
        let solid_bytes: u64 = solid
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|b| b.size)
            .sum();
        let solid_count: u64 = solid.iter().map(|(_, v)| v.len() as u64).sum();
        // One solid resource at a time: each is decoded by all threads (see
        // `stream_range_pipelined`), which also bounds memory to one set of chunk buffers.
        solid.iter().try_for_each(|(res, blobs)| -> Result<()> {
            let src = &self.solids[*res];
            let mut blobs = blobs.clone();
            blobs.sort_by_key(|b| match b.loc {
                Loc::Solid { offset, .. } => offset,
                Loc::Plain { .. } => 0,
            });
            // Group blobs into spans of consecutive chunks so gaps are skipped.
            let mut i = 0;
            while i < blobs.len() {
                let off = |b: &BlobInfo| match b.loc {
                    Loc::Solid { offset, .. } => offset,
                    Loc::Plain { .. } => 0,
                };
                let start = off(blobs[i]);
                let mut end = start + blobs[i].size;
                let mut j = i + 1;
                while j < blobs.len()
                    && off(blobs[j]) / src.chunk_size <= end.saturating_sub(1) / src.chunk_size + 1
                {
                    end = end.max(off(blobs[j]) + blobs[j].size);
                    j += 1;
                }
                let group = &blobs[i..j];
                let mut k = 0usize;
                let mut pos = start;
                let mut sinks: Vec<Option<(S, Sha1Hasher)>> = group.iter().map(|_| None).collect();
                self.stream_range_pipelined(src, start, end, |mut data| {
                    while !data.is_empty() {
                        while k < group.len()
                            && off(group[k]) + group[k].size <= pos
                            && sinks[k].is_none()
                        {
                            // Empty blob or already finished.
                            k += 1;
                        }
                        if k >= group.len() {
                            return Ok(());
                        }
                        let b = group[k];
                        let bstart = off(b);
                        if pos < bstart {
                            let skip = ((bstart - pos) as usize).min(data.len());
                            data = &data[skip..];
                            pos += skip as u64;
                            continue;
                        }
                        if sinks[k].is_none() {
                            sinks[k] = Some((make_sink(&b.hash)?, Sha1Hasher::new()));
                        }
                        let take = ((bstart + b.size - pos) as usize).min(data.len());
                        if let Some((s, h)) = sinks[k].as_mut() {
                            h.update(&data[..take]);
                            s.write(&data[..take])?;
                        }
                        data = &data[take..];
                        pos += take as u64;
                        if pos == bstart + b.size {
                            if let Some((s, h)) = sinks[k].take() {
                                check(b, h)?;
                                s.finish()?;
                            }
                            k += 1;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| wrap(e, &group[k.min(group.len() - 1)].hash))?;
                i = j;
            }
            Ok(())
        })?;
        let plain_bytes: u64 = plain.iter().map(|b| b.size).sum();
        // Large blobs one at a time, each decoded by every thread with its SHA-1 overlapping
        // the decoding (`stream_range_pipelined`); then the rest one blob per thread, each
        // decoded serially, so no thread waits on another inside a blob.
        let split = plain.partition_point(|b| b.size >= PIPELINED_BLOB);
        let (large, small) = plain.split_at(split);
        for b in large {
            let mut sink = make_sink(&b.hash)?;
            self.stream_blob_pipelined(b, label, |d| sink.write(d))?;
            sink.finish()?;
        }
        small
            .par_iter()
            .with_max_len(16)
            .try_for_each(|b| -> Result<()> {
                let (src, off) = self.source_of(b)?;
                let mut sink = make_sink(&b.hash)?;
                let mut h = Sha1Hasher::new();
                self.stream_range_with(&src, off, off + b.size, false, |d| {
                    h.update(d);
                    sink.write(d)
                })
                .map_err(|e| wrap(e, &b.hash))?;
                check(b, h)?;
                sink.finish()
            })?;
        Ok((solid_count + plain.len() as u64, solid_bytes + plain_bytes))
    }

    /// Check everything: every image's metadata parses, every blob decodes and matches its
    /// SHA-1 (in parallel), and the integrity table if there is one.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut users: HashMap<Sha1, Vec<String>> = HashMap::new();
        for i in 1..=self.image_count() {
            let tree = self.image(i)?;
            for (idx, d) in tree.entries.iter().enumerate() {
                for s in &d.streams {
                    if s.hash != [0; 20] {
                        let v = users.entry(s.hash).or_default();
                        if v.len() < 4 {
                            let mut p = tree.path(idx);
                            if let Some(n) = &s.name {
                                p = format!("{p}:{n}");
                            }
                            v.push(format!("image {i}: {p}"));
                        }
                    }
                }
            }
        }
        let label = |h: &Sha1| match users.get(h) {
            Some(v) => v.join(", "),
            None => "not referenced by any image".to_string(),
        };
        let (blobs, bytes) = self.stream_blobs(None, &label, &|_| Ok(NullSink))?;
        let integrity_checked = self.check_integrity()?;
        Ok(VerifyReport {
            images: self.image_count(),
            blobs,
            bytes,
            integrity_checked,
        })
    }

    /// Check the integrity table (F§7) of every part that has one; `Ok(false)` if none has.
    pub fn check_integrity(&self) -> Result<bool> {
        let mut any = false;
        for p in 0..self.parts.len() {
            let part = &self.parts[p];
            let h = &part.header;
            if h.integrity.is_zero() {
                continue;
            }
            any = true;
            let e = |what: String| Error::Integrity(format!("{}: {what}", part.path.display()));
            let raw = self.read_small_resource(p, &h.integrity, "integrity table")?;
            if raw.len() < 12 {
                return Err(e(format!(
                    "table of {} bytes is shorter than its 12-byte header",
                    raw.len()
                )));
            }
            let size = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
            let n = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]) as u64;
            let cs = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            if size != raw.len()
                || (n as usize).checked_mul(20).and_then(|x| x.checked_add(12)) != Some(size)
            {
                return Err(e(format!(
                    "size field {size} does not match {} bytes holding {n} hashes",
                    raw.len()
                )));
            }
            if !INTEGRITY_CHUNK.contains(&cs) {
                return Err(e(format!("chunk size {cs} is outside {INTEGRITY_CHUNK:?}")));
            }
            let end = h.blob_table.offset + h.blob_table.size_in_wim;
            let covered = end.saturating_sub(HEADER_SIZE as u64);
            let cs = u64::from(cs);
            if covered.div_ceil(cs) != n {
                return Err(e(format!(
                    "{n} hashes for {covered} bytes in chunks of {cs}"
                )));
            }
            (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
                let a = HEADER_SIZE as u64 + i * cs;
                let len = (end - a).min(cs);
                let mut buf = vec![0u8; len as usize];
                self.pread(p, a, &mut buf)?;
                let d: Sha1 = Sha1Hasher::digest(&buf).into();
                let want = &raw[12 + 20 * i as usize..32 + 20 * i as usize];
                if d[..] != *want {
                    return Err(e(format!(
                        "chunk {i} (bytes {a:#x}..{:#x}) does not match its hash",
                        a + len
                    )));
                }
                Ok(())
            })?;
        }
        Ok(any)
    }
}

/// Grow a scratch buffer to at least `len` bytes (never shrinks, never clears).
/// A blob's SHA-1 against the one its table entry names (`label` names its users).
fn check_sha1(b: &BlobInfo, h: Sha1Hasher, label: &dyn Fn(&Sha1) -> String) -> Result<()> {
    let actual: Sha1 = h.finalize().into();
    if actual != b.hash {
        return Err(Error::HashMismatch {
            hash: hex(&b.hash),
            actual: hex(&actual),
            paths: label(&b.hash),
        });
    }
    Ok(())
}

/// A decoding or reading error inside a blob, wrapped to name the blob's users.
fn blob_error(e: Error, paths: String) -> Error {
    match e {
        e @ (Error::Codec { .. } | Error::Corrupt { .. } | Error::Io { .. }) => Error::BlobData {
            paths,
            source: Box::new(e),
        },
        e => e,
    }
}

fn grow(v: &mut Vec<u8>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

/// Largest scratch buffer kept per thread between resource reads: enough for the batches
/// of small blobs (the common case), while the big batches of large blobs and solid
/// resources are freed when their read ends, so idle threads hold little memory.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

/// Per-thread reusable buffers for compressed input and decoded output. Taken out of the
/// thread-local slot for the duration of one read (a nested read on the same thread, as
/// rayon may schedule while waiting, simply allocates its own), and put back afterwards.
#[derive(Default)]
struct Scratch {
    stored: Vec<u8>,
    out: Vec<u8>,
}

impl Scratch {
    fn take() -> Box<Scratch> {
        SCRATCH.with(|c| c.take()).unwrap_or_default()
    }

    fn give_back(mut self: Box<Self>) {
        for v in [&mut self.stored, &mut self.out] {
            if v.capacity() > SCRATCH_KEEP {
                *v = Vec::new();
            }
        }
        SCRATCH.with(|c| c.set(Some(self)));
    }
}

/// Receives one blob's bytes in order during [`Wim::stream_blobs`].
pub(crate) trait BlobSink: Send {
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Called after the SHA-1 matched.
    fn finish(self) -> Result<()>;
}

struct NullSink;
impl BlobSink for NullSink {
    fn write(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn finish(self) -> Result<()> {
        Ok(())
    }
}

/// Streaming reader over one blob, decoding a bounded batch of chunks at a time.
pub struct BlobReader<'a> {
    wim: &'a Wim,
    src: Arc<ChunkSource>,
    start: u64,
    end: u64,
    next_chunk: u64,
    pos: u64,
    /// Scratch buffers, taken from the thread at the first read and given back on drop;
    /// `bufs.out[buf_pos..buf_end]` is decoded but not yet read.
    bufs: Option<Box<Scratch>>,
    buf_pos: usize,
    buf_end: usize,
    hasher: Sha1Hasher,
    hash: Sha1,
    label: String,
    done: bool,
}

impl BlobReader<'_> {
    /// Size of the blob.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    fn fill(&mut self) -> Result<()> {
        let src = &self.src;
        let last = (self.end - 1) / src.chunk_size + 1;
        let count = (READER_BATCH_BYTES / src.chunk_size).clamp(1, last - self.next_chunk);
        let bufs = self.bufs.get_or_insert_with(Scratch::take);
        let n = self.wim.decode_batch(
            src,
            self.next_chunk,
            count,
            &mut bufs.stored,
            &mut bufs.out,
            true,
        )?;
        let bstart = self.next_chunk * src.chunk_size;
        self.buf_pos = (self.pos.max(self.start) - bstart) as usize;
        self.buf_end = (self.end.min(bstart + n as u64) - bstart) as usize;
        self.next_chunk += count;
        Ok(())
    }
}

impl Drop for BlobReader<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.bufs.take() {
            b.give_back();
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.buf_pos == self.buf_end {
            if self.pos >= self.end {
                if !self.done {
                    self.done = true;
                    let actual: Sha1 = std::mem::take(&mut self.hasher).finalize().into();
                    if actual != self.hash {
                        return Err(Error::HashMismatch {
                            hash: hex(&self.hash),
                            actual: hex(&actual),
                            paths: if self.label.is_empty() {
                                "blob".into()
                            } else {
                                self.label.clone()
                            },
                        }
                        .into());
                    }
                }
                return Ok(0);
            }
            if let Err(e) = self.fill() {
                let paths = if self.label.is_empty() {
                    hex(&self.hash)
                } else {
                    self.label.clone()
                };
                return Err(Error::BlobData {
                    paths,
                    source: Box::new(e),
                }
                .into());
            }
        }
        let Some(bufs) = self.bufs.as_ref() else {
            return Ok(0);
        };
        let n = out.len().min(self.buf_end - self.buf_pos);
        out[..n].copy_from_slice(&bufs.out[self.buf_pos..self.buf_pos + n]);
        self.hasher.update(&out[..n]);
        self.buf_pos += n;
        self.pos += n as u64;
        Ok(n)
    }
}
