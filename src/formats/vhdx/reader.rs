//! VHDX reader (MS-VHDX 2.2-2.6): dynamic and fixed disks, partially present blocks through their
//! sector bitmaps; a log left to replay is replayed in memory first (see `log`). Differencing
//! disks are refused with a message naming the parent.
//!
//! Every offset, length and count read from the file is checked before use: regions must be
//! 1 MiB aligned, inside the file and must not overlap each other, the header section or the log;
//! each present block must lie inside the file and outside those regions.

use super::layout::*;
use super::log::{replay, Source};
use super::{io_err, Error, VhdxInfo};
use crate::core::block::{check_range, ReadAt};
use crate::core::Guid;
use std::fs::File;
use std::io;
use std::ops::Range;

/// The BAT is read in pieces of this size.
const BAT_READ_CHUNK: u64 = MIB;
/// Parent locators beyond this size are not decoded (real ones hold a few paths).
const MAX_PARENT_LOCATOR_LENGTH: u32 = 64 * 1024;

/// An open VHDX disk.
#[derive(Debug)]
pub struct VhdxReader {
    /// The file with the log replayed over it.
    src: Source,
    info: VhdxInfo,
    geometry: Geometry,
    /// Payload block BAT entries, one per block. At most 64 Mi entries (64 TiB in 1 MiB
    /// blocks): 512 MiB, the price of a disk that large.
    payload: Vec<u64>,
    /// Sector bitmap BAT entries, one per chunk.
    bitmaps: Vec<u64>,
}

/// A byte range of the file that holds a structure, for overlap checks.
struct Span {
    start: u64,
    end: u64,
    name: &'static str,
}

fn corrupt(structure: &'static str, offset: u64, detail: String) -> Error {
    Error::Corrupt {
        structure,
        offset,
        detail,
    }
}

/// Read `len` bytes at `offset`, or say which structure the file is too short for.
fn read_struct(
    src: &Source,
    structure: &'static str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, Error> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= src.len => {}
        _ => {
            return Err(corrupt(
                structure,
                offset,
                format!(
                    "needs {len} bytes but the file ends at {:#x}; the file is truncated",
                    src.len
                ),
            ))
        }
    }
    let mut b = vec![0u8; len];
    src.read(offset, &mut b)
        .map_err(io_err(format!("reading the {structure} at {offset:#x}")))?;
    Ok(b)
}

impl VhdxReader {
    /// Open and validate a VHDX file.
    pub fn open(file: File) -> Result<VhdxReader, Error> {
        let mut src = Source::new(file)?;
        let file_len = src.len;
        if file_len < HEADER_SECTION_SIZE {
            return Err(corrupt(
                "file identifier",
                FILE_ID_OFFSET,
                format!("the file is {file_len} bytes, a VHDX starts with a 1 MiB header section; it is truncated or not a VHDX"),
            ));
        }
        let id = read_struct(&src, "file identifier", FILE_ID_OFFSET, 8)?;
        if id != FILE_SIGNATURE {
            return Err(corrupt(
                "file identifier",
                FILE_ID_OFFSET,
                format!(
                    "expected signature 'vhdxfile', found '{}'; this is not a VHDX file",
                    id.escape_ascii()
                ),
            ));
        }

        let header = current_header(&src)?;
        let mut spans = vec![Span {
            start: 0,
            end: HEADER_SECTION_SIZE,
            name: "header section",
        }];
        check_log(&mut src, &header, &mut spans)?;

        let (bat_rt, metadata_rt) = region_table(&src, &mut spans)?;
        let meta = metadata(&src, &metadata_rt)?;
        let geometry = Geometry::new(meta.virtual_size, meta.block_size, meta.logical_sector_size);
        let (payload, bitmaps) = read_bat(&src, &bat_rt, &geometry, &spans)?;

        let info = VhdxInfo {
            virtual_size: meta.virtual_size,
            block_size: meta.block_size,
            logical_sector_size: meta.logical_sector_size,
            physical_sector_size: meta.physical_sector_size,
            fixed: meta.flags & LEAVE_BLOCKS_ALLOCATED != 0,
            has_parent: meta.flags & HAS_PARENT != 0,
            file_write_guid: header.file_write_guid,
            data_write_guid: header.data_write_guid,
            page83: meta.page83,
        };
        Ok(VhdxReader {
            src,
            info,
            geometry,
            payload,
            bitmaps,
        })
    }

    /// What the metadata says about this disk.
    pub fn info(&self) -> VhdxInfo {
        self.info.clone()
    }

    /// Whether the file's log held entries, now replayed in memory (the file is untouched).
    pub fn log_replayed(&self) -> bool {
        self.src.replayed()
    }

    /// Fill `out` from a partially present block through its sector bitmap (2.4): sectors whose
    /// bit is set come from the file, the others read as zeros (there is no parent here).
    fn read_partial(&self, block: u64, entry: u64, within: u64, out: &mut [u8]) -> io::Result<()> {
        let g = &self.geometry;
        let sector = g.logical_sector_size;
        let bitmap = self.bitmaps[(block / g.chunk_ratio) as usize];
        let base_bit = (block % g.chunk_ratio) * (g.block_size / sector);
        let first = within / sector;
        let last = (within + out.len() as u64 - 1) / sector;
        let byte_lo = (base_bit + first) / 8;
        let byte_hi = (base_bit + last) / 8;
        let mut bits = vec![0u8; (byte_hi - byte_lo + 1) as usize];
        self.src
            .read(bat_file_offset(bitmap) + byte_lo, &mut bits)?;
        let bit = |s: u64| {
            let b = base_bit + s - byte_lo * 8;
            bits[(b / 8) as usize] & (1 << (b % 8)) != 0
        };
        let end = within + out.len() as u64;
        let mut s = first;
        while s <= last {
            let present = bit(s);
            let mut t = s + 1;
            while t <= last && bit(t) == present {
                t += 1;
            }
            let lo = (s * sector).max(within);
            let hi = (t * sector).min(end);
            let dst = &mut out[(lo - within) as usize..(hi - within) as usize];
            if present {
                self.src.read(bat_file_offset(entry) + lo, dst)?;
            } else {
                dst.fill(0);
            }
            s = t;
        }
        Ok(())
    }
}

/// Pick the current header (2.2.2): both are checked, the valid one with the larger
/// SequenceNumber wins.
fn current_header(src: &Source) -> Result<Header, Error> {
    let mut found: Vec<Header> = Vec::new();
    let mut errors = Vec::new();
    for at in [HEADER1_OFFSET, HEADER2_OFFSET] {
        let b = read_struct(src, "header", at, HEADER_SIZE)?;
        match Header::decode(&b, at) {
            Ok(h) => found.push(h),
            Err(e @ Error::Unsupported { .. }) => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match found.len() {
        0 => Err(corrupt(
            "header",
            HEADER1_OFFSET,
            format!(
                "neither header is valid ({}); the file is damaged",
                errors.join("; ")
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            let (h1, h2) = (&found[0], &found[1]);
            if h1.sequence_number == h2.sequence_number && h1 != h2 {
                return Err(corrupt(
                    "header",
                    HEADER2_OFFSET,
                    format!(
                        "both headers are valid with SequenceNumber {} but differ; the current one cannot be told",
                        h1.sequence_number
                    ),
                ));
            }
            let i = usize::from(h2.sequence_number > h1.sequence_number);
            Ok(found.remove(i))
        }
    }
}

/// Check the log fields (2.2.2, 2.3) and replay a non-empty log in memory.
fn check_log(src: &mut Source, h: &Header, spans: &mut Vec<Span>) -> Result<(), Error> {
    let at = h.log_offset;
    if h.log_version != 0 {
        return Err(Error::Unsupported {
            structure: "header",
            offset: HEADER1_OFFSET,
            detail: format!("LogVersion expected 0, found {}", h.log_version),
        });
    }
    if h.log_length == 0 {
        return Ok(());
    }
    let length = u64::from(h.log_length);
    let end = at.checked_add(length);
    if at < HEADER_SECTION_SIZE
        || !at.is_multiple_of(ALIGNMENT)
        || !length.is_multiple_of(ALIGNMENT)
        || end.is_none()
    {
        return Err(corrupt(
            "log",
            at,
            format!(
                "LogOffset {at:#x} and LogLength {length:#x} must be 1 MiB multiples after the header section"
            ),
        ));
    }
    spans.push(Span {
        start: at,
        end: end.unwrap_or(u64::MAX),
        name: "log",
    });
    // A zero LogGuid means the log holds nothing to replay (2.2.2).
    if h.log_guid != Guid::ZERO {
        replay(src, at, length, h.log_guid)?;
    }
    Ok(())
}

/// Read the region table (2.2.3), falling back to the second copy, and return the BAT and
/// metadata entries after checking alignment, bounds and overlaps.
fn region_table(
    src: &Source,
    spans: &mut Vec<Span>,
) -> Result<(RegionTableEntry, RegionTableEntry), Error> {
    let b1 = read_struct(src, "region table", REGION_TABLE1_OFFSET, REGION_TABLE_SIZE)?;
    let entries = match decode_region_table(&b1, REGION_TABLE1_OFFSET) {
        Ok(e) => e,
        Err(first) => {
            let b2 = read_struct(src, "region table", REGION_TABLE2_OFFSET, REGION_TABLE_SIZE)?;
            decode_region_table(&b2, REGION_TABLE2_OFFSET).map_err(|second| {
                corrupt(
                    "region table",
                    REGION_TABLE1_OFFSET,
                    format!("neither copy is valid ({first}; {second}); the file is damaged"),
                )
            })?
        }
    };
    let (mut bat, mut metadata) = (None, None);
    for (i, e) in entries.iter().enumerate() {
        let at = REGION_TABLE1_OFFSET + (REGION_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE) as u64;
        let (slot, name) = if e.guid == BAT_REGION {
            (&mut bat, "BAT region")
        } else if e.guid == METADATA_REGION {
            (&mut metadata, "metadata region")
        } else if e.required {
            return Err(Error::Unsupported {
                structure: "region table",
                offset: at,
                detail: format!("entry {i} is a required region {} this reader does not know; it cannot be read safely", e.guid),
            });
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(corrupt(
                "region table",
                at,
                format!("entry {i} repeats the {name}"),
            ));
        }
        let length = u64::from(e.length);
        let end = e.file_offset.checked_add(length);
        if !e.file_offset.is_multiple_of(ALIGNMENT)
            || !length.is_multiple_of(ALIGNMENT)
            || length == 0
            || end.is_none()
        {
            return Err(corrupt(
                "region table",
                at,
                format!(
                    "{name} at {:#x} length {length:#x}: expected non-zero 1 MiB multiples",
                    e.file_offset
                ),
            ));
        }
        let end = end.unwrap_or(u64::MAX);
        if end > src.len {
            return Err(corrupt(
                "region table",
                at,
                format!(
                    "{name} ends at {end:#x}, past the end of the file at {:#x}; the file is truncated",
                    src.len
                ),
            ));
        }
        if let Some(s) = spans
            .iter()
            .find(|s| e.file_offset < s.end && s.start < end)
        {
            return Err(corrupt(
                "region table",
                at,
                format!(
                    "{name} {:#x}..{end:#x} overlaps the {} {:#x}..{:#x}; regions must be disjoint",
                    e.file_offset, s.name, s.start, s.end
                ),
            ));
        }
        spans.push(Span {
            start: e.file_offset,
            end,
            name,
        });
        *slot = Some(*e);
    }
    match (bat, metadata) {
        (Some(b), Some(m)) => Ok((b, m)),
        (b, _) => Err(corrupt(
            "region table",
            REGION_TABLE1_OFFSET,
            format!(
                "the {} region is missing",
                if b.is_none() { "BAT" } else { "metadata" }
            ),
        )),
    }
}

/// The metadata items this reader needs.
struct Metadata {
    block_size: u32,
    flags: u32,
    virtual_size: u64,
    page83: Guid,
    logical_sector_size: u32,
    physical_sector_size: u32,
}

/// Read the metadata table and known items (2.6), refusing unknown required items and
/// differencing disks.
fn metadata(src: &Source, rt: &RegionTableEntry) -> Result<Metadata, Error> {
    let base = rt.file_offset;
    let table = read_struct(src, "metadata table", base, METADATA_TABLE_SIZE)?;
    let entries = decode_metadata_table(&table, base)?;
    let known = [
        FILE_PARAMETERS,
        VIRTUAL_DISK_SIZE,
        PAGE83_DATA,
        LOGICAL_SECTOR_SIZE,
        PHYSICAL_SECTOR_SIZE,
        PARENT_LOCATOR,
    ];
    let mut items: [Option<MetadataTableEntry>; 6] = [None; 6];
    for (i, e) in entries.iter().enumerate() {
        let at = base + (METADATA_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE) as u64;
        let end = u64::from(e.offset) + u64::from(e.length);
        if e.length != 0
            && (u64::from(e.offset) < METADATA_TABLE_SIZE as u64 || end > u64::from(rt.length))
        {
            return Err(corrupt(
                "metadata table",
                at,
                format!(
                    "item {} at {:#x} length {:#x} must lie after the 64 KiB table and inside the {:#x}-byte metadata region",
                    e.item_id, e.offset, e.length, rt.length
                ),
            ));
        }
        match known.iter().position(|k| *k == e.item_id) {
            Some(k) if items[k].is_some() => {
                return Err(corrupt(
                    "metadata table",
                    at,
                    format!("item {} appears twice", e.item_id),
                ))
            }
            Some(k) => items[k] = Some(*e),
            None if e.is_required => {
                return Err(Error::Unsupported {
                    structure: "metadata table",
                    offset: at,
                    detail: format!(
                    "unknown required metadata item {}; this reader cannot read the disk safely",
                    e.item_id
                ),
                })
            }
            None => {}
        }
    }
    let names = [
        "file parameters",
        "virtual disk size",
        "page 83 data",
        "logical sector size",
        "physical sector size",
    ];
    let item = |k: usize, need: u32| -> Result<(Vec<u8>, u64), Error> {
        let e = items[k].ok_or_else(|| {
            corrupt(
                "metadata table",
                base,
                format!("the required {} item ({}) is missing", names[k], known[k]),
            )
        })?;
        let at = base + u64::from(e.offset);
        if e.length < need {
            return Err(corrupt(
                names[k],
                at,
                format!("item length expected at least {need}, found {}", e.length),
            ));
        }
        Ok((read_struct(src, names[k], at, need as usize)?, at))
    };

    let (fp, fp_at) = item(0, 8)?;
    let block_size = le32(&fp, 0);
    let flags = le32(&fp, 4);
    if flags & HAS_PARENT != 0 {
        let parent = items[5].and_then(|e| parent_path(src, base, &e));
        return Err(Error::Differencing {
            offset: fp_at,
            parent,
        });
    }
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(corrupt(
            "file parameters",
            fp_at,
            format!("BlockSize expected a power of two from 1 MiB to 256 MiB, found {block_size}"),
        ));
    }
    let sector = |k: usize| -> Result<u32, Error> {
        let (b, at) = item(k, 4)?;
        match le32(&b, 0) {
            v @ (512 | 4096) => Ok(v),
            v => Err(corrupt(
                names[k],
                at,
                format!("expected 512 or 4096, found {v}"),
            )),
        }
    };
    let logical_sector_size = sector(3)?;
    let physical_sector_size = sector(4)?;
    let (vs, vs_at) = item(1, 8)?;
    let virtual_size = le64(&vs, 0);
    if virtual_size > MAX_VIRTUAL_SIZE
        || !virtual_size.is_multiple_of(u64::from(logical_sector_size))
    {
        return Err(corrupt(
            "virtual disk size",
            vs_at,
            format!(
                "expected a multiple of the {logical_sector_size}-byte logical sector size up to 64 TiB, found {virtual_size}"
            ),
        ));
    }
    let (p83, _) = item(2, 16)?;
    Ok(Metadata {
        block_size,
        flags,
        virtual_size,
        page83: guid_at(&p83, 0),
        logical_sector_size,
        physical_sector_size,
    })
}

/// The parent's path from a parent locator (2.6.2.6): key/value pairs of UTF-16LE strings.
/// Returns None when the locator cannot be decoded; the disk is refused either way.
fn parent_path(src: &Source, base: u64, e: &MetadataTableEntry) -> Option<String> {
    if e.length > MAX_PARENT_LOCATOR_LENGTH || e.length < 20 {
        return None;
    }
    let b = read_struct(
        src,
        "parent locator",
        base + u64::from(e.offset),
        e.length as usize,
    )
    .ok()?;
    let count = usize::from(le16(&b, 18));
    let utf16 = |off: u32, len: u16| -> Option<String> {
        let s = b.get(off as usize..(off as usize).checked_add(usize::from(len))?)?;
        let units: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).ok()
    };
    let mut pairs = Vec::new();
    for i in 0..count {
        let at = 20 + i * 12;
        let kv = b.get(at..at + 12)?;
        let key = utf16(le32(kv, 0), le16(kv, 8))?;
        let value = utf16(le32(kv, 4), le16(kv, 10))?;
        pairs.push((key, value));
    }
    ["absolute_win32_path", "relative_path", "volume_path"]
        .iter()
        .find_map(|k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        })
}

/// Read the BAT (2.5) and check every entry: known states, present blocks inside the file and
/// clear of the metadata structures, partially present blocks backed by a sector bitmap.
fn read_bat(
    src: &Source,
    rt: &RegionTableEntry,
    g: &Geometry,
    spans: &[Span],
) -> Result<(Vec<u64>, Vec<u64>), Error> {
    let need = g.bat_entries * 8;
    if u64::from(rt.length) < need {
        return Err(corrupt(
            "BAT",
            rt.file_offset,
            format!(
                "the region holds {:#x} bytes but {} blocks need {} entries ({need:#x} bytes)",
                rt.length, g.data_blocks, g.bat_entries
            ),
        ));
    }
    let mut payload = Vec::with_capacity(g.data_blocks as usize);
    let mut bitmaps = Vec::with_capacity(g.data_blocks.div_ceil(g.chunk_ratio) as usize);
    // The last chunk's sector bitmap entry lies past the last payload entry. A dynamic disk
    // needs none, but when the region holds it (as in a differencing-style BAT) it is read too,
    // so a partially present block in the last chunk still finds its bitmap.
    let with_last_bitmap = g.data_blocks.div_ceil(g.chunk_ratio) * (g.chunk_ratio + 1);
    let total = if u64::from(rt.length) / 8 >= with_last_bitmap {
        with_last_bitmap
    } else {
        g.bat_entries
    };
    // A block at `start..start + len` named by the BAT entry at `at` must lie inside the file
    // and clear of the header section, log, BAT and metadata.
    let check_extent = |start: u64, len: u64, at: u64, what: String| -> Result<(), Error> {
        let end = start.saturating_add(len);
        if end > src.len {
            return Err(corrupt(
                "BAT",
                at,
                format!(
                    "{what} points to {start:#x}..{end:#x}, past the end of the file at {:#x}; the file is truncated",
                    src.len
                ),
            ));
        }
        if let Some(s) = spans.iter().find(|s| start < s.end && s.start < end) {
            return Err(corrupt(
                "BAT",
                at,
                format!(
                    "{what} points to {start:#x}..{end:#x}, inside the {} {:#x}..{:#x}",
                    s.name, s.start, s.end
                ),
            ));
        }
        Ok(())
    };
    let mut index = 0u64;
    while index < total {
        let n = (total - index).min(BAT_READ_CHUNK / 8);
        let chunk = read_struct(src, "BAT", rt.file_offset + index * 8, (n * 8) as usize)?;
        for (i, raw) in chunk.chunks_exact(8).enumerate() {
            let e = le64(raw, 0);
            let e_index = index + i as u64;
            let at = rt.file_offset + e_index * 8;
            let state = bat_state(e);
            if g.is_bitmap_entry(e_index) {
                // Checked below, and only where a partially present block needs it: a dynamic
                // or fixed disk never uses these entries (and some writers leave junk in them).
                bitmaps.push(e);
                continue;
            }
            if payload.len() as u64 == g.data_blocks {
                // Padding entries of the last chunk, past the end of the virtual disk.
                continue;
            }
            let block = payload.len() as u64;
            match state {
                PAYLOAD_BLOCK_NOT_PRESENT
                | PAYLOAD_BLOCK_UNDEFINED
                | PAYLOAD_BLOCK_ZERO
                | PAYLOAD_BLOCK_UNMAPPED
                | PAYLOAD_BLOCK_UNMAPPED_V095 => {}
                PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT => {
                    // A short last block need only exist up to the end of the virtual disk
                    // (qemu once wrote such files).
                    check_extent(
                        bat_file_offset(e),
                        g.block_len(block),
                        at,
                        format!("entry {e_index} (block {block})"),
                    )?;
                }
                _ => {
                    return Err(corrupt(
                        "BAT",
                        at,
                        format!(
                            "payload entry {e_index} (block {block}) has unknown state {state}"
                        ),
                    ))
                }
            }
            payload.push(e);
        }
        index += n;
    }
    let mut checked_chunk = None;
    for (block, &e) in payload.iter().enumerate() {
        if bat_state(e) != PAYLOAD_BLOCK_PARTIALLY_PRESENT {
            continue;
        }
        let chunk = block as u64 / g.chunk_ratio;
        if checked_chunk == Some(chunk) {
            continue;
        }
        let at = rt.file_offset + ((chunk + 1) * (g.chunk_ratio + 1) - 1) * 8;
        match bitmaps.get(chunk as usize) {
            Some(&b) if bat_state(b) == SB_BLOCK_PRESENT => check_extent(
                bat_file_offset(b),
                SECTOR_BITMAP_BLOCK_SIZE,
                at,
                format!("sector bitmap entry of chunk {chunk}"),
            )?,
            _ => {
                return Err(corrupt(
                    "BAT",
                    rt.file_offset + g.payload_index(block as u64) * 8,
                    format!("block {block} is partially present but its chunk {chunk} has no sector bitmap block"),
                ))
            }
        }
        checked_chunk = Some(chunk);
    }
    Ok((payload, bitmaps))
}

impl ReadAt for VhdxReader {
    fn size(&self) -> u64 {
        self.info.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.info.virtual_size)?;
        let bs = self.geometry.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            let n = ((bs - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let e = self.payload[block as usize];
            match bat_state(e) {
                PAYLOAD_BLOCK_FULLY_PRESENT => self.src.read(bat_file_offset(e) + within, out)?,
                PAYLOAD_BLOCK_PARTIALLY_PRESENT => self.read_partial(block, e, within, out)?,
                // Not present, zero, unmapped, undefined: no data in this file, reads as zeros.
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        let bs = self.geometry.block_size;
        let mut out: Vec<Range<u64>> = Vec::new();
        for (block, &e) in self.payload.iter().enumerate() {
            if bat_state(e) < PAYLOAD_BLOCK_FULLY_PRESENT {
                continue;
            }
            let start = block as u64 * bs;
            let end = start + self.geometry.block_len(block as u64);
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::block::WriteAt;
    use crate::core::checksum::crc32c_with_zeroed_field;
    use crate::formats::vhdx::{VhdxOptions, VhdxWriter};
    use std::os::unix::fs::FileExt;

    fn pread(f: &File, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, at).unwrap();
        b
    }

    fn make(opts: &VhdxOptions, writes: &[(u64, Vec<u8>)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = Box::new(VhdxWriter::create(f.reopen().unwrap(), opts).unwrap());
        for (at, d) in writes {
            w.write_at(*at, d).unwrap();
        }
        w.finish().unwrap();
        f
    }

    fn put64(f: &File, at: u64, v: u64) {
        f.write_all_at(&v.to_le_bytes(), at).unwrap();
    }

    #[test]
    fn partially_present_block_reads_through_its_sector_bitmap() {
        // 512-byte sectors and 256 MiB blocks: chunk ratio 16, so with 17 blocks BAT entry 16
        // is chunk 0's sector bitmap entry.
        let opts = VhdxOptions {
            block_size: 256 << 20,
            ..VhdxOptions::new((4 << 30) + 512, b"partial")
        };
        let t = make(&opts, &[(0, vec![0xAA; 4096])]);
        let f = t.reopen().unwrap();
        let len = f.metadata().unwrap().len();
        let bat = 3 * MIB;
        let block0 = le64(&pread(&f, bat, 8), 0);
        put64(
            &f,
            bat,
            bat_file_offset(block0) | u64::from(PAYLOAD_BLOCK_PARTIALLY_PRESENT),
        );
        put64(&f, bat + 16 * 8, len | u64::from(SB_BLOCK_PRESENT));
        f.set_len(len + MIB).unwrap();
        // Sectors 1 and 3 present.
        f.write_all_at(&[0b1010], len).unwrap();

        let r = VhdxReader::open(t.reopen().unwrap()).unwrap();
        let mut b = vec![0xFFu8; 4096];
        r.read_at(0, &mut b).unwrap();
        let want = |i: usize| {
            if (512..1024).contains(&i) || (1536..2048).contains(&i) {
                0xAA
            } else {
                0
            }
        };
        assert!(b.iter().enumerate().all(|(i, &v)| v == want(i)));
        let mut b = vec![0xFFu8; 1300];
        r.read_at(700, &mut b).unwrap();
        assert!(b.iter().enumerate().all(|(i, &v)| v == want(i + 700)));
        assert_eq!(r.data_ranges().unwrap(), vec![0..256 << 20]);
    }

    #[test]
    fn the_header_with_the_larger_sequence_number_wins() {
        let opts = VhdxOptions::new(8 << 20, b"headers");
        let t = make(&opts, &[]);
        let f = t.reopen().unwrap();
        let mut h = pread(&f, HEADER1_OFFSET, HEADER_SIZE);
        h[8..16].copy_from_slice(&9u64.to_le_bytes());
        let other = Guid::derive(b"x", "y");
        h[16..32].copy_from_slice(&other.to_mixed_endian());
        let crc = crc32c_with_zeroed_field(&h, 4);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, HEADER1_OFFSET).unwrap();
        let r = VhdxReader::open(t.reopen().unwrap()).unwrap();
        assert_eq!(r.info().file_write_guid, other);
        // Unchanged files report the writer's GUIDs (header 2, sequence 2, is current).
        let t = make(&opts, &[]);
        assert_eq!(
            VhdxReader::open(t.reopen().unwrap())
                .unwrap()
                .info()
                .file_write_guid,
            opts.file_write_guid
        );
    }

    #[test]
    fn zero_and_unmapped_blocks_read_as_zeros_and_hold_no_data() {
        let opts = VhdxOptions::new(8 << 20, b"zero");
        let t = make(&opts, &[(0, vec![7; 512]), (1 << 20, vec![8; 512])]);
        let f = t.reopen().unwrap();
        put64(&f, 3 * MIB, u64::from(PAYLOAD_BLOCK_ZERO));
        put64(
            &f,
            3 * MIB + 8,
            (5 << 20) | u64::from(PAYLOAD_BLOCK_UNMAPPED),
        );
        let r = VhdxReader::open(t.reopen().unwrap()).unwrap();
        let mut b = vec![1u8; 2 << 20];
        r.read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&v| v == 0));
        assert!(r.data_ranges().unwrap().is_empty());
        assert!(r.read_at((8 << 20) - 1, &mut [0u8; 2]).is_err());
    }
}
