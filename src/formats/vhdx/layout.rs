//! On-disk structures of MS-VHDX sections 2.2 (header section), 2.5 (BAT) and 2.6 (metadata),
//! encoded and decoded field by field in little-endian order, with the geometry maths of 2.5.

use super::Error;
use crate::core::checksum::{crc32c, crc32c_with_zeroed_field};
use crate::core::Guid;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// The header section (2.1): file identifier, two headers, two region tables, reserved.
pub const HEADER_SECTION_SIZE: u64 = MIB;
pub const FILE_ID_OFFSET: u64 = 0;
pub const HEADER1_OFFSET: u64 = 64 * KIB;
pub const HEADER2_OFFSET: u64 = 128 * KIB;
pub const REGION_TABLE1_OFFSET: u64 = 192 * KIB;
pub const REGION_TABLE2_OFFSET: u64 = 256 * KIB;

/// Each header occupies 64 KiB but its checksum covers the first 4 KiB (2.2.2).
pub const HEADER_SIZE: usize = 4096;
/// The region table is 64 KiB and its checksum covers all of it (2.2.3).
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The metadata table occupies the first 64 KiB of the metadata region (2.6.1).
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;
/// Both tables hold at most 2047 entries (2.2.3.1, 2.6.1.1): 16-byte header + 2047 * 32 fits 64 KiB.
pub const MAX_TABLE_ENTRIES: u32 = 2047;
/// Region table and metadata table entries are 32 bytes (2.2.3.2, 2.6.1.2).
pub const TABLE_ENTRY_SIZE: usize = 32;
/// The metadata table header is 32 bytes, the region table header 16 (2.6.1.1, 2.2.3.1).
pub const METADATA_TABLE_HEADER_SIZE: usize = 32;
pub const REGION_TABLE_HEADER_SIZE: usize = 16;

/// Block sizes allowed by 2.6.2.1: a power of two from 1 MiB to 256 MiB.
pub const MIN_BLOCK_SIZE: u32 = 1 << 20;
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// The largest VirtualDiskSize allowed by 2.6.2.2.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// A sector bitmap block is 1 MiB and describes 2^23 logical sectors (2.4).
pub const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
pub const SECTORS_PER_BITMAP_BLOCK: u64 = 1 << 23;
/// Region offsets, lengths, the log and blocks are all 1 MiB aligned (2.2.3.2, 2.5).
pub const ALIGNMENT: u64 = MIB;

pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";
pub const REGION_SIGNATURE: &[u8; 4] = b"regi";
pub const METADATA_SIGNATURE: &[u8; 8] = b"metadata";
pub const LOG_ENTRY_SIGNATURE: &[u8; 4] = b"loge";

const fn guid(v: u128) -> Guid {
    Guid::from_bytes(v.to_be_bytes())
}

/// Region GUIDs (2.2.3.2).
pub const BAT_REGION: Guid = guid(0x2DC27766_F623_4200_9D64_115E9BFD4A08);
pub const METADATA_REGION: Guid = guid(0x8B7CA206_4790_4B9A_B8FE_575F050F886E);
/// Metadata item GUIDs (2.6.2).
pub const FILE_PARAMETERS: Guid = guid(0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B);
pub const VIRTUAL_DISK_SIZE: Guid = guid(0x2FA54224_CD1B_4876_B211_5DBED83BF4B8);
pub const PAGE83_DATA: Guid = guid(0xBECA12AB_B2E6_4523_93EF_C309E000C746);
pub const LOGICAL_SECTOR_SIZE: Guid = guid(0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F);
pub const PHYSICAL_SECTOR_SIZE: Guid = guid(0xCDA348C7_445D_4471_9CC9_E9885251C556);
pub const PARENT_LOCATOR: Guid = guid(0xA8D35F2D_B30B_454D_ABF7_D3D84834AB0C);

/// BAT entry states (2.5.1.1, 2.5.1.2).
pub const PAYLOAD_BLOCK_NOT_PRESENT: u8 = 0;
pub const PAYLOAD_BLOCK_UNDEFINED: u8 = 1;
pub const PAYLOAD_BLOCK_ZERO: u8 = 2;
pub const PAYLOAD_BLOCK_UNMAPPED: u8 = 3;
/// Draft 0.95 of the format used 5 for unmapped; qemu still reads it as such.
pub const PAYLOAD_BLOCK_UNMAPPED_V095: u8 = 5;
pub const PAYLOAD_BLOCK_FULLY_PRESENT: u8 = 6;
pub const PAYLOAD_BLOCK_PARTIALLY_PRESENT: u8 = 7;
/// A sector bitmap entry is present (6) or not (0, what our writer leaves).
pub const SB_BLOCK_PRESENT: u8 = 6;

/// A BAT entry: State in bits 0-2, FileOffsetMB in bits 20-63 (2.5.1).
pub fn bat_entry(state: u8, file_offset: u64) -> u64 {
    debug_assert_eq!(file_offset % MIB, 0);
    file_offset | u64::from(state)
}

pub fn bat_state(entry: u64) -> u8 {
    (entry & 7) as u8
}

pub fn bat_file_offset(entry: u64) -> u64 {
    entry & !(MIB - 1)
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Guid::from_mixed_endian(a)
}

/// The file type identifier (2.2.1): signature and a UTF-16 creator string of up to 256 units.
pub fn encode_file_identifier(creator: &str) -> Vec<u8> {
    let mut b = vec![0u8; 8 + 512];
    b[..8].copy_from_slice(FILE_SIGNATURE);
    for (i, unit) in creator.encode_utf16().take(255).enumerate() {
        b[8 + 2 * i..10 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    b
}

/// The VHDX header (2.2.2). Field offsets within the 4 KiB checksummed area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence_number: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

const HDR_SIGNATURE: usize = 0;
const HDR_CHECKSUM: usize = 4;
const HDR_SEQUENCE_NUMBER: usize = 8;
const HDR_FILE_WRITE_GUID: usize = 16;
const HDR_DATA_WRITE_GUID: usize = 32;
const HDR_LOG_GUID: usize = 48;
const HDR_LOG_VERSION: usize = 64;
const HDR_VERSION: usize = 66;
const HDR_LOG_LENGTH: usize = 68;
const HDR_LOG_OFFSET: usize = 72;
/// The fields end at 80; the rest of the 4 KiB is reserved and zero.
const HDR_FIELDS_END: usize = 80;
const _: () = assert!(HDR_FIELDS_END <= HEADER_SIZE);

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[HDR_SIGNATURE..4].copy_from_slice(HEADER_SIGNATURE);
        b[HDR_SEQUENCE_NUMBER..16].copy_from_slice(&self.sequence_number.to_le_bytes());
        b[HDR_FILE_WRITE_GUID..32].copy_from_slice(&self.file_write_guid.to_mixed_endian());
        b[HDR_DATA_WRITE_GUID..48].copy_from_slice(&self.data_write_guid.to_mixed_endian());
        b[HDR_LOG_GUID..64].copy_from_slice(&self.log_guid.to_mixed_endian());
        b[HDR_LOG_VERSION..66].copy_from_slice(&self.log_version.to_le_bytes());
        b[HDR_VERSION..68].copy_from_slice(&self.version.to_le_bytes());
        b[HDR_LOG_LENGTH..72].copy_from_slice(&self.log_length.to_le_bytes());
        b[HDR_LOG_OFFSET..80].copy_from_slice(&self.log_offset.to_le_bytes());
        let crc = crc32c(&b);
        b[HDR_CHECKSUM..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check signature, checksum and version. `b` is the 4 KiB at `offset`.
    pub fn decode(b: &[u8], offset: u64) -> Result<Header, Error> {
        let bad = |detail: String| Error::Corrupt {
            structure: "header",
            offset,
            detail,
        };
        if b.len() < HEADER_SIZE {
            return Err(bad(format!(
                "expected {HEADER_SIZE} bytes, the file ends after {}; the file is truncated",
                b.len()
            )));
        }
        let b = &b[..HEADER_SIZE];
        if &b[..4] != HEADER_SIGNATURE {
            return Err(bad(format!(
                "expected signature 'head', found '{}'",
                b[..4].escape_ascii()
            )));
        }
        let stored = le32(b, HDR_CHECKSUM);
        let computed = crc32c_with_zeroed_field(b, HDR_CHECKSUM);
        if stored != computed {
            return Err(bad(format!(
                "checksum expected {computed:#010x} (CRC-32C), found {stored:#010x}; the header is damaged"
            )));
        }
        let h = Header {
            sequence_number: le64(b, HDR_SEQUENCE_NUMBER),
            file_write_guid: guid_at(b, HDR_FILE_WRITE_GUID),
            data_write_guid: guid_at(b, HDR_DATA_WRITE_GUID),
            log_guid: guid_at(b, HDR_LOG_GUID),
            log_version: le16(b, HDR_LOG_VERSION),
            version: le16(b, HDR_VERSION),
            log_length: le32(b, HDR_LOG_LENGTH),
            log_offset: le64(b, HDR_LOG_OFFSET),
        };
        if h.version != 1 {
            return Err(Error::Unsupported {
                structure: "header",
                offset,
                detail: format!(
                    "Version expected 1, found {}; this reader knows only VHDX version 1",
                    h.version
                ),
            });
        }
        Ok(h)
    }
}

/// A region table entry (2.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionTableEntry {
    pub guid: Guid,
    pub file_offset: u64,
    pub length: u32,
    pub required: bool,
}

const RT_CHECKSUM: usize = 4;
const RT_ENTRY_COUNT: usize = 8;

pub fn encode_region_table(entries: &[RegionTableEntry]) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    b[..4].copy_from_slice(REGION_SIGNATURE);
    b[RT_ENTRY_COUNT..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = REGION_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
        b[at..at + 16].copy_from_slice(&e.guid.to_mixed_endian());
        b[at + 16..at + 24].copy_from_slice(&e.file_offset.to_le_bytes());
        b[at + 24..at + 28].copy_from_slice(&e.length.to_le_bytes());
        b[at + 28..at + 32].copy_from_slice(&u32::from(e.required).to_le_bytes());
    }
    let crc = crc32c(&b);
    b[RT_CHECKSUM..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decode a region table (the 64 KiB at `offset`), checking signature, checksum and count.
pub fn decode_region_table(b: &[u8], offset: u64) -> Result<Vec<RegionTableEntry>, Error> {
    let bad = |detail: String| Error::Corrupt {
        structure: "region table",
        offset,
        detail,
    };
    if b.len() < REGION_TABLE_SIZE {
        return Err(bad(format!(
            "expected {REGION_TABLE_SIZE} bytes, the file ends after {}; the file is truncated",
            b.len()
        )));
    }
    let b = &b[..REGION_TABLE_SIZE];
    if &b[..4] != REGION_SIGNATURE {
        return Err(bad(format!(
            "expected signature 'regi', found '{}'",
            b[..4].escape_ascii()
        )));
    }
    let stored = le32(b, RT_CHECKSUM);
    let computed = crc32c_with_zeroed_field(b, RT_CHECKSUM);
    if stored != computed {
        return Err(bad(format!(
            "checksum expected {computed:#010x} (CRC-32C), found {stored:#010x}; the region table is damaged"
        )));
    }
    let count = le32(b, RT_ENTRY_COUNT);
    if count > MAX_TABLE_ENTRIES {
        return Err(bad(format!(
            "EntryCount expected at most {MAX_TABLE_ENTRIES}, found {count}"
        )));
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = REGION_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
            RegionTableEntry {
                guid: guid_at(b, at),
                file_offset: le64(b, at + 16),
                length: le32(b, at + 24),
                required: le32(b, at + 28) & 1 != 0,
            }
        })
        .collect())
}

/// A metadata table entry (2.6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataTableEntry {
    pub item_id: Guid,
    /// Offset from the start of the metadata region; at least 64 KiB unless `length` is 0.
    pub offset: u32,
    pub length: u32,
    pub is_user: bool,
    pub is_virtual_disk: bool,
    pub is_required: bool,
}

const MT_ENTRY_COUNT: usize = 10;

pub fn encode_metadata_table(entries: &[MetadataTableEntry]) -> Vec<u8> {
    let mut b = vec![0u8; METADATA_TABLE_SIZE];
    b[..8].copy_from_slice(METADATA_SIGNATURE);
    b[MT_ENTRY_COUNT..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = METADATA_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
        b[at..at + 16].copy_from_slice(&e.item_id.to_mixed_endian());
        b[at + 16..at + 20].copy_from_slice(&e.offset.to_le_bytes());
        b[at + 20..at + 24].copy_from_slice(&e.length.to_le_bytes());
        let flags = u32::from(e.is_user)
            | u32::from(e.is_virtual_disk) << 1
            | u32::from(e.is_required) << 2;
        b[at + 24..at + 28].copy_from_slice(&flags.to_le_bytes());
    }
    b
}

/// Decode the metadata table (the first 64 KiB of the metadata region at `offset`).
pub fn decode_metadata_table(b: &[u8], offset: u64) -> Result<Vec<MetadataTableEntry>, Error> {
    let bad = |detail: String| Error::Corrupt {
        structure: "metadata table",
        offset,
        detail,
    };
    if b.len() < METADATA_TABLE_SIZE {
        return Err(bad(format!(
            "expected {METADATA_TABLE_SIZE} bytes, found {}; the file is truncated",
            b.len()
        )));
    }
    if &b[..8] != METADATA_SIGNATURE {
        return Err(bad(format!(
            "expected signature 'metadata', found '{}'",
            b[..8].escape_ascii()
        )));
    }
    let count = le16(b, MT_ENTRY_COUNT);
    if u32::from(count) > MAX_TABLE_ENTRIES {
        return Err(bad(format!(
            "EntryCount expected at most {MAX_TABLE_ENTRIES}, found {count}"
        )));
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = METADATA_TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
            let flags = le32(b, at + 24);
            MetadataTableEntry {
                item_id: guid_at(b, at),
                offset: le32(b, at + 16),
                length: le32(b, at + 20),
                is_user: flags & 1 != 0,
                is_virtual_disk: flags & 2 != 0,
                is_required: flags & 4 != 0,
            }
        })
        .collect())
}

/// File parameters flags (2.6.2.1).
pub const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
pub const HAS_PARENT: u32 = 2;

/// Block and BAT geometry (2.5): how virtual blocks map to BAT entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub virtual_size: u64,
    pub block_size: u64,
    pub logical_sector_size: u64,
    /// Payload blocks described by one sector bitmap block: 2^23 * LogicalSectorSize / BlockSize.
    pub chunk_ratio: u64,
    /// ceil(VirtualDiskSize / BlockSize).
    pub data_blocks: u64,
    /// BAT entries of a dynamic or fixed disk: the last entry is the last payload block's (2.5).
    pub bat_entries: u64,
}

impl Geometry {
    /// Callers validate first: block size a power of two in 1..=256 MiB, sector size 512 or
    /// 4096, virtual size at most 64 TiB. Then nothing here can overflow.
    pub fn new(virtual_size: u64, block_size: u32, logical_sector_size: u32) -> Geometry {
        let block_size = u64::from(block_size);
        let logical_sector_size = u64::from(logical_sector_size);
        let chunk_ratio = SECTORS_PER_BITMAP_BLOCK * logical_sector_size / block_size;
        let data_blocks = virtual_size.div_ceil(block_size);
        let bat_entries = match data_blocks {
            0 => 0,
            n => n + (n - 1) / chunk_ratio,
        };
        Geometry {
            virtual_size,
            block_size,
            logical_sector_size,
            chunk_ratio,
            data_blocks,
            bat_entries,
        }
    }

    /// BAT index of payload block `block`: each chunk's entries are followed by its bitmap entry.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// Whether BAT entry `index` is a sector bitmap entry (the last of each chunk's group).
    pub fn is_bitmap_entry(&self, index: u64) -> bool {
        (index + 1).is_multiple_of(self.chunk_ratio + 1)
    }

    /// Bytes of the virtual disk held by block `block` (the last may be short).
    pub fn block_len(&self, block: u64) -> u64 {
        (self.virtual_size - block * self.block_size).min(self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_their_on_disk_form() {
        // 2.2.3.2: the BAT region GUID 2DC27766-F623-4200-9D64-115E9BFD4A08 as stored.
        assert_eq!(
            BAT_REGION.to_mixed_endian(),
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(
            FILE_PARAMETERS.to_string(),
            "caa16737-fa36-4d43-b3b6-33f0aa44e76b"
        );
    }

    #[test]
    fn geometry_interleaves_bitmap_entries() {
        // 512-byte sectors, 1 MiB blocks: chunk ratio 2^23 * 512 / 2^20 = 4096.
        let g = Geometry::new(10 << 30, 1 << 20, 512);
        assert_eq!(g.chunk_ratio, 4096);
        assert_eq!(g.data_blocks, 10240);
        assert_eq!(g.bat_entries, 10240 + 2);
        assert_eq!(g.payload_index(4095), 4095);
        assert!(g.is_bitmap_entry(4096) && !g.is_bitmap_entry(4095) && g.is_bitmap_entry(8193));
        assert_eq!(g.payload_index(4096), 4097);
        // 4096-byte sectors, 32 MiB blocks: 2^23 * 4096 / 2^25 = 1024.
        let g = Geometry::new((70 << 20) + 4096, 32 << 20, 4096);
        assert_eq!((g.chunk_ratio, g.data_blocks, g.bat_entries), (1024, 3, 3));
        assert_eq!(g.block_len(2), (6 << 20) + 4096);
        // Exactly one chunk: no bitmap entry after it (the last entry is a payload entry).
        let g = Geometry::new(4096 << 20, 1 << 20, 512);
        assert_eq!(g.bat_entries, 4096);
        let g = Geometry::new((4096 << 20) + 512, 1 << 20, 512);
        assert_eq!(g.bat_entries, 4098);
        assert_eq!(Geometry::new(0, 1 << 20, 512).bat_entries, 0);
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = Header {
            sequence_number: 7,
            file_write_guid: Guid::derive(b"s", "f"),
            data_write_guid: Guid::derive(b"s", "d"),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b, HEADER1_OFFSET).unwrap(), h);
        b[100] ^= 1;
        let e = Header::decode(&b, HEADER1_OFFSET).unwrap_err().to_string();
        assert!(
            e.contains("header at 0x10000") && e.contains("checksum"),
            "{e}"
        );
    }

    #[test]
    fn tables_round_trip() {
        let rt = [
            RegionTableEntry {
                guid: BAT_REGION,
                file_offset: 3 << 20,
                length: 1 << 20,
                required: true,
            },
            RegionTableEntry {
                guid: METADATA_REGION,
                file_offset: 2 << 20,
                length: 1 << 20,
                required: true,
            },
        ];
        let b = encode_region_table(&rt);
        assert_eq!(decode_region_table(&b, 0).unwrap(), rt);
        let mt = [MetadataTableEntry {
            item_id: PAGE83_DATA,
            offset: 65536,
            length: 16,
            is_user: false,
            is_virtual_disk: true,
            is_required: true,
        }];
        let b = encode_metadata_table(&mt);
        assert_eq!(decode_metadata_table(&b, 0).unwrap(), mt);
    }

    #[test]
    fn bat_entry_fields() {
        let e = bat_entry(PAYLOAD_BLOCK_FULLY_PRESENT, 5 << 20);
        assert_eq!(e, (5 << 20) | 6);
        assert_eq!(bat_state(e), 6);
        assert_eq!(bat_file_offset(e), 5 << 20);
    }
}
