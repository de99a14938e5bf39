//! VHDX writer (MS-VHDX 2.1-2.6): dynamic or fixed, streaming, sparse.
//!
//! File layout, all 1 MiB aligned as 2.1 and 2.2.3.2 require:
//!
//! | offset        | contents                                                        |
//! |---------------|-----------------------------------------------------------------|
//! | 0             | file identifier, headers (64 KiB, 128 KiB), region tables       |
//! | 1 MiB         | log, 1 MiB, empty (LogGuid zero) and left as a hole             |
//! | 2 MiB         | metadata region, 1 MiB: table, items at 64 KiB                  |
//! | 3 MiB         | BAT region, its entries rounded up to 1 MiB                     |
//! | after the BAT | payload blocks                                                  |
//!
//! Dynamic: a payload block is placed at the end of the file the first time a non-zero byte is
//! written to it, so block order follows write order and identical write sequences give identical
//! files. Fixed: block `i` lives at `data_offset + i * block_size` and every BAT entry is
//! FULLY_PRESENT. In both, bytes never written are holes (the file is extended with `set_len`),
//! and the BAT is written by `finish`. Allocation state is a sorted map with one entry per block
//! written, so memory follows the data, not the virtual size.

use super::layout::*;
use super::{io_err, Error};
use crate::core::block::{check_range, is_zero, WriteAt};
use crate::core::runs::RunImage;
use crate::core::sink::{FileSink, Mode};
use crate::core::Guid;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Where the (empty) log lives and how long it is: 1 MiB, the minimum of 2.2.2.
const LOG_OFFSET: u64 = HEADER_SECTION_SIZE;
const LOG_LENGTH: u32 = MIB as u32;
/// The metadata region: 1 MiB, far more than the five items need.
const METADATA_OFFSET: u64 = LOG_OFFSET + LOG_LENGTH as u64;
const METADATA_LENGTH: u32 = MIB as u32;
/// Metadata items start after the 64 KiB table (2.6.1).
const METADATA_ITEMS_OFFSET: u32 = 64 * 1024;
const BAT_OFFSET: u64 = METADATA_OFFSET + METADATA_LENGTH as u64;
/// The BAT is written in pieces of this many bytes.
const BAT_CHUNK: u64 = MIB;
/// Creator string in the file identifier (2.2.1); informational only.
const CREATOR: &str = "nanoforge";

/// How to build a VHDX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxOptions {
    /// Bytes of the virtual disk: a multiple of the logical sector size, at most 64 TiB.
    pub virtual_size: u64,
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// Fixed disk (every block present, in order) instead of dynamic.
    pub fixed: bool,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    /// The virtual disk's SCSI page 83 identifier (2.6.2.3).
    pub page83: Guid,
}

impl VhdxOptions {
    /// A dynamic disk with 1 MiB blocks (Microsoft's choice for Nano Server), 512-byte logical and
    /// 4096-byte physical sectors, GUIDs derived from `seed`.
    pub fn new(virtual_size: u64, seed: &[u8]) -> VhdxOptions {
        VhdxOptions {
            virtual_size,
            block_size: 1 << 20,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            fixed: false,
            file_write_guid: Guid::derive(seed, "vhdx:file-write"),
            data_write_guid: Guid::derive(seed, "vhdx:data-write"),
            page83: Guid::derive(seed, "vhdx:page83"),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Options(m));
        if !self.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
        {
            return bad(format!(
                "block size {} is not a power of two from 1 MiB to 256 MiB (MS-VHDX 2.6.2.1)",
                self.block_size
            ));
        }
        for (what, v) in [
            ("logical", self.logical_sector_size),
            ("physical", self.physical_sector_size),
        ] {
            if v != 512 && v != 4096 {
                return bad(format!(
                    "{what} sector size {v} is neither 512 nor 4096 (MS-VHDX 2.6.2.4/5)"
                ));
            }
        }
        if self.virtual_size == 0 || self.virtual_size > MAX_VIRTUAL_SIZE {
            return bad(format!(
                "virtual size {} is outside 1 byte..=64 TiB (MS-VHDX 2.6.2.2)",
                self.virtual_size
            ));
        }
        if !self
            .virtual_size
            .is_multiple_of(u64::from(self.logical_sector_size))
        {
            return bad(format!(
                "virtual size {} is not a multiple of the {}-byte logical sector size",
                self.virtual_size, self.logical_sector_size
            ));
        }
        Ok(())
    }
}

/// A fixed disk's length: every payload block present, in order.
fn fixed_len(geometry: &Geometry, data_offset: u64) -> u64 {
    data_offset + geometry.data_blocks * geometry.block_size
}

/// Where the file's bytes go.
enum Out {
    /// A file, through a write-behind sink (contiguous writes gathered, so callers writing
    /// 4 KiB clusters do not cost a syscall each).
    File(Box<FileSink>),
    /// Memory (see [`VhdxWriter::in_memory`]).
    Memory(RunImage),
}

impl Out {
    fn write_at(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Out::File(f) => f.write_at(at, data),
            Out::Memory(m) => {
                m.write_at(at, data);
                Ok(())
            }
        }
    }
}

/// A VHDX being written. Call [`WriteAt::finish`] to write the BAT and sync.
pub struct VhdxWriter {
    out: Out,
    fixed: bool,
    geometry: Geometry,
    /// First byte after the BAT region: where payload blocks begin.
    data_offset: u64,
    /// Dynamic: blocks allocated so far and their file offsets, sorted by block index.
    blocks: BTreeMap<u64, u64>,
    /// Fixed: one bit per block written so far, grown on demand (8 MiB at most, for 64 TiB
    /// in 1 MiB blocks), so zeros into a block never written can be skipped.
    touched: Vec<u64>,
    /// Dynamic: where the next allocated block goes.
    next_free: u64,
    /// End of the highest payload write so far: the file holds only holes beyond it, so
    /// zeros written there need not be stored.
    high_water: u64,
    /// Blocks the BAT mapped when it was written up front (fixed disks, or dynamic ones
    /// given [`WriteAt::reserve`]); None when it is written at the end.
    bat_written: Option<usize>,
}

impl VhdxWriter {
    /// Write the header section and metadata to `file` (which should be empty) and return a
    /// writer ready for payload writes.
    pub fn create(file: File, opts: &VhdxOptions) -> Result<VhdxWriter, Error> {
        Self::create_with(file, opts, false)
    }

    /// [`VhdxWriter::create`], with `digest` also hashing the file on the way for
    /// [`WriteAt::finish_digest`] (which needs [`WriteAt::reserve`] before the first write
    /// and writes in ascending order).
    pub fn create_with(file: File, opts: &VhdxOptions, digest: bool) -> Result<VhdxWriter, Error> {
        opts.validate()?;
        // Start from an empty file: stale bytes in the BAT or log region would be read as
        // entries. Everything then goes through the sink in ascending file order (header
        // section, metadata, the BAT when known up front, payload), so it can hash the file.
        file.set_len(0).map_err(io_err("emptying the file"))?;
        file.set_len(Self::initial_len(opts))
            .map_err(io_err("sizing the file"))?;
        let out = if digest {
            FileSink::with_digest(file, Mode::Direct)
        } else {
            FileSink::new(file, Mode::Direct)
        };
        let out = out.map_err(io_err("starting the writer"))?;
        Self::start(Out::File(Box::new(out)), opts)
    }

    /// A VHDX built in memory, for a file that is then placed inside a volume: take it
    /// with [`VhdxWriter::into_image`]. Runs of one repeated byte cost no memory.
    pub fn in_memory(opts: &VhdxOptions) -> Result<VhdxWriter, Error> {
        opts.validate()?;
        let mut image = RunImage::new();
        image.set_len(Self::initial_len(opts));
        Self::start(Out::Memory(image), opts)
    }

    fn geometry(opts: &VhdxOptions) -> (Geometry, u64) {
        let geometry = Geometry::new(opts.virtual_size, opts.block_size, opts.logical_sector_size);
        // At most (64 TiB / 1 MiB) * 8 bytes plus bitmap entries: about 513 MiB, fits a u32.
        let bat_length = (geometry.bat_entries * 8).next_multiple_of(ALIGNMENT);
        (geometry, BAT_OFFSET + bat_length)
    }

    /// The file's length before any payload: a fixed disk's is final.
    fn initial_len(opts: &VhdxOptions) -> u64 {
        let (geometry, data_offset) = Self::geometry(opts);
        if opts.fixed {
            fixed_len(&geometry, data_offset)
        } else {
            data_offset
        }
    }

    /// Write the header section and metadata, and the BAT of a fixed disk.
    fn start(mut out: Out, opts: &VhdxOptions) -> Result<VhdxWriter, Error> {
        let (geometry, data_offset) = Self::geometry(opts);
        let bat_length = data_offset - BAT_OFFSET;
        let mut head = vec![0u8; HEADER_SECTION_SIZE as usize];
        let put = |head: &mut Vec<u8>, at: u64, b: &[u8]| {
            head[at as usize..at as usize + b.len()].copy_from_slice(b)
        };
        put(&mut head, FILE_ID_OFFSET, &encode_file_identifier(CREATOR));
        for (at, sequence_number) in [(HEADER1_OFFSET, 1), (HEADER2_OFFSET, 2)] {
            let h = Header {
                sequence_number,
                file_write_guid: opts.file_write_guid,
                data_write_guid: opts.data_write_guid,
                log_guid: Guid::ZERO,
                log_version: 0,
                version: 1,
                log_length: LOG_LENGTH,
                log_offset: LOG_OFFSET,
            };
            put(&mut head, at, &h.encode());
        }
        let regions = encode_region_table(&[
            RegionTableEntry {
                guid: BAT_REGION,
                file_offset: BAT_OFFSET,
                length: bat_length as u32,
                required: true,
            },
            RegionTableEntry {
                guid: METADATA_REGION,
                file_offset: METADATA_OFFSET,
                length: METADATA_LENGTH,
                required: true,
            },
        ]);
        put(&mut head, REGION_TABLE1_OFFSET, &regions);
        put(&mut head, REGION_TABLE2_OFFSET, &regions);
        out.write_at(0, &head)
            .map_err(io_err("writing the header section"))?;
        out.write_at(METADATA_OFFSET, &encode_metadata(opts))
            .map_err(io_err("writing the metadata region"))?;
        let mut w = VhdxWriter {
            out,
            fixed: opts.fixed,
            geometry,
            data_offset,
            blocks: BTreeMap::new(),
            touched: Vec::new(),
            next_free: data_offset,
            high_water: data_offset,
            bat_written: None,
        };
        if w.fixed {
            // A fixed disk's BAT does not depend on what is written.
            w.write_bat_now().map_err(io_err("writing the BAT"))?;
        }
        Ok(w)
    }

    /// Finish a VHDX made by [`VhdxWriter::in_memory`] and return its bytes.
    pub fn into_image(mut self) -> io::Result<RunImage> {
        let len = self.final_len();
        if !self.bat_is_current() {
            self.write_bat_now()?;
        }
        match self.out {
            Out::Memory(mut image) => {
                image.set_len(len);
                Ok(image)
            }
            Out::File(_) => Err(io::Error::other("into_image is for a VHDX made in memory")),
        }
    }

    /// The file's length once finished.
    fn final_len(&self) -> u64 {
        if self.fixed {
            fixed_len(&self.geometry, self.data_offset)
        } else {
            self.next_free
        }
    }

    /// Whether the BAT already written maps every block allocated.
    fn bat_is_current(&self) -> bool {
        self.fixed || self.bat_written == Some(self.blocks.len())
    }

    /// Write the BAT as it stands through the sink, and remember how many blocks it maps.
    fn write_bat_now(&mut self) -> io::Result<()> {
        let out = &mut self.out;
        encode_bat(
            &self.geometry,
            self.fixed,
            self.data_offset,
            &self.blocks,
            &mut |at, b| out.write_at(at, b),
        )?;
        self.bat_written = Some(self.blocks.len());
        Ok(())
    }

    /// Whether block `block` has been written (dynamic: allocated).
    fn is_allocated(&self, block: u64) -> bool {
        if self.fixed {
            let word = (block / 64) as usize;
            self.touched
                .get(word)
                .is_some_and(|w| w & (1 << (block % 64)) != 0)
        } else {
            self.blocks.contains_key(&block)
        }
    }

    /// File offset of block `block`, allocating it if needed.
    fn block_offset(&mut self, block: u64) -> u64 {
        if self.fixed {
            let word = (block / 64) as usize;
            if self.touched.len() <= word {
                self.touched.resize(word + 1, 0);
            }
            self.touched[word] |= 1 << (block % 64);
            return self.data_offset + block * self.geometry.block_size;
        }
        if let Some(&at) = self.blocks.get(&block) {
            return at;
        }
        let at = self.next_free;
        self.next_free += self.geometry.block_size;
        self.blocks.insert(block, at);
        at
    }
}

/// The BAT's non-empty pieces as (file offset, bytes), ascending: every payload block for a
/// fixed disk, else the `blocks` allocated (block index → file offset).
fn encode_bat(
    g: &Geometry,
    fixed: bool,
    data_offset: u64,
    blocks: &BTreeMap<u64, u64>,
    put: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BAT_CHUNK as usize];
    let entries_per_chunk = BAT_CHUNK / 8;
    if fixed {
        // Every payload entry present, sector bitmap entries not present.
        let mut index = 0u64;
        while index < g.bat_entries {
            let n = (g.bat_entries - index).min(entries_per_chunk);
            buf.fill(0);
            for i in 0..n {
                let e = index + i;
                if !g.is_bitmap_entry(e) {
                    let block = e - e / (g.chunk_ratio + 1);
                    let entry = bat_entry(
                        PAYLOAD_BLOCK_FULLY_PRESENT,
                        data_offset + block * g.block_size,
                    );
                    buf[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&entry.to_le_bytes());
                }
            }
            put(BAT_OFFSET + index * 8, &buf[..n as usize * 8])?;
            index += n;
        }
        return Ok(());
    }
    // Dynamic: only the chunks of the BAT that hold present entries are written.
    let mut current: Option<u64> = None;
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for (&block, &at) in blocks {
        let index = g.payload_index(block);
        let chunk = index / entries_per_chunk;
        if current != Some(chunk) {
            if let Some(c) = current {
                put(BAT_OFFSET + c * BAT_CHUNK + lo as u64, &buf[lo..hi])?;
                buf.fill(0);
            }
            current = Some(chunk);
            (lo, hi) = (usize::MAX, 0);
        }
        let within = (index % entries_per_chunk) as usize * 8;
        buf[within..within + 8]
            .copy_from_slice(&bat_entry(PAYLOAD_BLOCK_FULLY_PRESENT, at).to_le_bytes());
        lo = lo.min(within);
        hi = hi.max(within + 8);
    }
    if let Some(c) = current {
        put(BAT_OFFSET + c * BAT_CHUNK + lo as u64, &buf[lo..hi])?;
    }
    Ok(())
}

/// The metadata region's table and the five required items (2.6.1, 2.6.2).
fn encode_metadata(opts: &VhdxOptions) -> Vec<u8> {
    let flags = if opts.fixed {
        LEAVE_BLOCKS_ALLOCATED
    } else {
        0
    };
    let mut file_parameters = opts.block_size.to_le_bytes().to_vec();
    file_parameters.extend_from_slice(&flags.to_le_bytes());
    let items: [(Guid, bool, Vec<u8>); 5] = [
        (FILE_PARAMETERS, false, file_parameters),
        (
            VIRTUAL_DISK_SIZE,
            true,
            opts.virtual_size.to_le_bytes().to_vec(),
        ),
        (PAGE83_DATA, true, opts.page83.to_mixed_endian().to_vec()),
        (
            LOGICAL_SECTOR_SIZE,
            true,
            opts.logical_sector_size.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            true,
            opts.physical_sector_size.to_le_bytes().to_vec(),
        ),
    ];
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (item_id, is_virtual_disk, bytes) in &items {
        entries.push(MetadataTableEntry {
            item_id: *item_id,
            offset: METADATA_ITEMS_OFFSET + data.len() as u32,
            length: bytes.len() as u32,
            is_user: false,
            is_virtual_disk: *is_virtual_disk,
            is_required: true,
        });
        data.extend_from_slice(bytes);
    }
    let mut out = encode_metadata_table(&entries);
    out.resize(METADATA_ITEMS_OFFSET as usize, 0);
    out.extend_from_slice(&data);
    out
}

impl WriteAt for VhdxWriter {
    fn size(&self) -> u64 {
        self.geometry.virtual_size
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len(), self.geometry.virtual_size)?;
        let bs = self.geometry.block_size;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            let n = ((bs - within) as usize).min(data.len() - done);
            let piece = &data[done..done + n];
            // Zeros cost nothing where the file holds only a hole: in a block never
            // allocated, or past everything written so far.
            let zero = is_zero(piece);
            if !zero || self.is_allocated(block) {
                let at = self.block_offset(block) + within;
                if !zero || at < self.high_water {
                    self.out.write_at(at, piece)?;
                    self.high_water = self.high_water.max(at + n as u64);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn reserve(&mut self, ranges: &[std::ops::Range<u64>]) -> io::Result<()> {
        // Only before the first payload write, so blocks keep ascending file offsets and
        // the BAT can go out first.
        if self.fixed || !self.blocks.is_empty() {
            return Ok(());
        }
        let bs = self.geometry.block_size;
        for r in ranges.iter().filter(|r| r.start < r.end) {
            let last = (r.end.min(self.geometry.virtual_size).max(1) - 1) / bs;
            for block in r.start / bs..=last {
                self.block_offset(block);
            }
        }
        self.write_bat_now()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.finish_digest().map(|_| ())
    }

    fn finish_digest(mut self: Box<Self>) -> io::Result<Option<[u8; 32]>> {
        let len = self.final_len();
        let current = self.bat_is_current();
        let Out::File(out) = &mut self.out else {
            return Err(io::Error::other(
                "a VHDX made in memory is finished with into_image",
            ));
        };
        // When the BAT went out up front and still maps every block, the sink's digest is
        // the file's; otherwise the BAT is written now, behind the sink's back.
        let digest = if current {
            out.finish_digest(len)?
        } else {
            out.finish()?;
            let file = out.file();
            encode_bat(
                &self.geometry,
                self.fixed,
                self.data_offset,
                &self.blocks,
                &mut |at, b| file.write_all_at(b, at),
            )?;
            None
        };
        let file = out.file();
        file.set_len(len)?;
        file.sync_all()?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let ok = VhdxOptions::new(10 << 30, b"seed");
        assert!(ok.validate().is_ok());
        for bad in [
            VhdxOptions {
                block_size: 3 << 20,
                ..ok.clone()
            },
            VhdxOptions {
                block_size: 512 << 20,
                ..ok.clone()
            },
            VhdxOptions {
                logical_sector_size: 1024,
                ..ok.clone()
            },
            VhdxOptions {
                virtual_size: (64 << 40) + 512,
                ..ok.clone()
            },
            VhdxOptions {
                virtual_size: 1000,
                ..ok.clone()
            },
            VhdxOptions {
                virtual_size: 0,
                ..ok.clone()
            },
            VhdxOptions {
                virtual_size: 8192 + 512,
                logical_sector_size: 4096,
                ..ok.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Options(_))), "{bad:?}");
        }
    }

    #[test]
    fn metadata_items_follow_the_table() {
        let m = encode_metadata(&VhdxOptions {
            fixed: true,
            ..VhdxOptions::new(1 << 30, b"s")
        });
        let t = decode_metadata_table(&m, METADATA_OFFSET).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].item_id, FILE_PARAMETERS);
        assert_eq!(t[0].offset, 65536);
        assert_eq!(le32(&m, 65536), 1 << 20);
        assert_eq!(le32(&m, 65540), LEAVE_BLOCKS_ALLOCATED);
        assert_eq!(le64(&m, t[1].offset as usize), 1 << 30);
        assert!(t.iter().all(|e| e.is_required && !e.is_user));
        assert!(t[1..].iter().all(|e| e.is_virtual_disk) && !t[0].is_virtual_disk);
    }
}
