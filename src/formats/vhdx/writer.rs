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

/// A VHDX being written. Call [`WriteAt::finish`] to write the BAT and sync.
pub struct VhdxWriter {
    /// Payload and BAT writes go through a write-behind sink (contiguous writes gathered,
    /// so callers writing 4 KiB clusters do not cost a syscall each).
    out: FileSink,
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
}

impl VhdxWriter {
    /// Write the header section and metadata to `file` (which should be empty) and return a
    /// writer ready for payload writes.
    pub fn create(file: File, opts: &VhdxOptions) -> Result<VhdxWriter, Error> {
        Self::create_with(file, opts, Mode::Direct)
    }

    /// [`VhdxWriter::create`], writing the payload as `mode` says.
    pub fn create_with(file: File, opts: &VhdxOptions, mode: Mode) -> Result<VhdxWriter, Error> {
        opts.validate()?;
        let geometry = Geometry::new(opts.virtual_size, opts.block_size, opts.logical_sector_size);
        // At most (64 TiB / 1 MiB) * 8 bytes plus bitmap entries: about 513 MiB, fits a u32.
        let bat_length = (geometry.bat_entries * 8).next_multiple_of(ALIGNMENT);
        let data_offset = BAT_OFFSET + bat_length;

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
        // Start from an empty file: stale bytes in the BAT or log region would be read as entries.
        file.set_len(0).map_err(io_err("emptying the file"))?;
        file.write_all_at(&head, 0)
            .map_err(io_err("writing the header section"))?;
        file.write_all_at(&encode_metadata(opts), METADATA_OFFSET)
            .map_err(io_err("writing the metadata region"))?;

        let end = if opts.fixed {
            data_offset + geometry.data_blocks * geometry.block_size
        } else {
            data_offset
        };
        file.set_len(end).map_err(io_err("sizing the file"))?;
        Ok(VhdxWriter {
            out: FileSink::new(file, mode).map_err(io_err("starting the writer"))?,
            fixed: opts.fixed,
            geometry,
            data_offset,
            blocks: BTreeMap::new(),
            touched: Vec::new(),
            next_free: data_offset,
        })
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

    fn write_bat(&self, file: &File) -> io::Result<()> {
        let g = &self.geometry;
        let mut buf = vec![0u8; BAT_CHUNK as usize];
        let entries_per_chunk = BAT_CHUNK / 8;
        if self.fixed {
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
                            self.data_offset + block * g.block_size,
                        );
                        buf[i as usize * 8..i as usize * 8 + 8]
                            .copy_from_slice(&entry.to_le_bytes());
                    }
                }
                file.write_all_at(&buf[..n as usize * 8], BAT_OFFSET + index * 8)?;
                index += n;
            }
            return Ok(());
        }
        // Dynamic: only the chunks of the BAT that hold present entries are written.
        let mut current: Option<u64> = None;
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for (&block, &at) in &self.blocks {
            let index = g.payload_index(block);
            let chunk = index / entries_per_chunk;
            if current != Some(chunk) {
                if let Some(c) = current {
                    file.write_all_at(&buf[lo..hi], BAT_OFFSET + c * BAT_CHUNK + lo as u64)?;
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
            file.write_all_at(&buf[lo..hi], BAT_OFFSET + c * BAT_CHUNK + lo as u64)?;
        }
        Ok(())
    }
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
            // Zeros into a block never written cost nothing: it already reads as zeros.
            if self.is_allocated(block) || !is_zero(piece) {
                let at = self.block_offset(block) + within;
                self.out.write_at(at, piece)?;
            }
            done += n;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out.finish()?;
        let file = self.out.file();
        self.write_bat(file)?;
        if !self.fixed {
            file.set_len(self.next_free)?;
        }
        file.sync_all()
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
