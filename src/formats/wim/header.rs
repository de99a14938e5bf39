//! WIM header (208 bytes at offset 0, F§1) and resource headers (24 bytes, F§2).

use super::{Error, Result};
use crate::codec::Codec;
use crate::core::guid::Guid;

/// Size of the header; wimlib and 7-Zip reject anything else for 0x10D00/0xE00 (F§1).
pub const HEADER_SIZE: usize = 208;
const MAGIC: &[u8; 8] = b"MSWIM\0\0\0";
/// Normal and solid ("ESD") format versions (F§1).
pub const VERSION_DEFAULT: u32 = 0x10D00;
pub const VERSION_SOLID: u32 = 0xE00;

pub const FLAG_COMPRESSION: u32 = 0x2;
pub const FLAG_READONLY: u32 = 0x4;
pub const FLAG_SPANNED: u32 = 0x8;
pub const FLAG_RESOURCE_ONLY: u32 = 0x10;
pub const FLAG_METADATA_ONLY: u32 = 0x20;
pub const FLAG_WRITE_IN_PROGRESS: u32 = 0x40;
pub const FLAG_RP_FIX: u32 = 0x80;
pub const FLAG_COMPRESS_XPRESS: u32 = 0x20000;
pub const FLAG_COMPRESS_LZX: u32 = 0x40000;
pub const FLAG_COMPRESS_LZMS: u32 = 0x80000;
pub const FLAG_COMPRESS_XPRESS_2: u32 = 0x200000;

/// Resource header flags (F§2; FREE 0x01 and SPANNED 0x08 carry no known meaning).
pub const RES_METADATA: u8 = 0x02;
pub const RES_COMPRESSED: u8 = 0x04;
pub const RES_SOLID: u8 = 0x10;

/// Most images a WIM may hold (wimlib MAX_IMAGES, F§1).
pub const MAX_IMAGES: u32 = 65535;

/// A resource header: where a resource lies and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ResHdr {
    /// Stored size (56 bits on disk).
    pub size_in_wim: u64,
    pub flags: u8,
    /// Absolute file offset.
    pub offset: u64,
    pub uncompressed_size: u64,
}

impl ResHdr {
    pub fn parse(b: &[u8]) -> ResHdr {
        let mut s = [0u8; 8];
        s[..7].copy_from_slice(&b[..7]);
        ResHdr {
            size_in_wim: u64::from_le_bytes(s),
            flags: b[7],
            offset: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
            uncompressed_size: u64::from_le_bytes(b[16..24].try_into().unwrap_or_default()),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.size_in_wim == 0 && self.offset == 0 && self.uncompressed_size == 0
    }

    /// Check that the stored bytes lie inside a file of `file_size` bytes.
    pub fn check_in_file(&self, what: &'static str, at: u64, file_size: u64) -> Result<()> {
        match self.offset.checked_add(self.size_in_wim) {
            Some(end) if end <= file_size => Ok(()),
            _ => Err(Error::Corrupt {
                structure: what,
                offset: at,
                what: format!(
                    "resource of {} bytes at {:#x} runs past the end of the {file_size}-byte file",
                    self.size_in_wim, self.offset
                ),
            }),
        }
    }
}

/// The WIM header.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub chunk_size: u32,
    /// The 16 GUID bytes as stored (wimlib prints them in this order).
    pub guid: [u8; 16],
    pub part_number: u16,
    pub total_parts: u16,
    pub image_count: u32,
    pub blob_table: ResHdr,
    pub xml: ResHdr,
    pub boot_metadata: ResHdr,
    pub boot_index: u32,
    pub integrity: ResHdr,
}

impl Header {
    /// Parse and validate the 208-byte header of a file of `file_size` bytes.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header> {
        let err = |offset: u64, what: String| Error::Header { offset, what };
        if b.len() < HEADER_SIZE || file_size < HEADER_SIZE as u64 {
            return Err(err(
                0,
                format!("file of {file_size} bytes is shorter than the {HEADER_SIZE}-byte header"),
            ));
        }
        if &b[..8] != MAGIC {
            return Err(err(
                0,
                format!("magic is {:02x?}, expected \"MSWIM\\0\\0\\0\"", &b[..8]),
            ));
        }
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let hdr_size = u32at(8);
        if hdr_size as usize != HEADER_SIZE {
            return Err(err(
                8,
                format!("header size is {hdr_size}, expected {HEADER_SIZE}"),
            ));
        }
        let version = u32at(0xC);
        if version != VERSION_DEFAULT && version != VERSION_SOLID {
            return Err(err(
                0xC,
                format!(
                    "version is {version:#x}, expected {VERSION_DEFAULT:#x} or {VERSION_SOLID:#x}"
                ),
            ));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[0x18..0x28]);
        let h = Header {
            version,
            flags: u32at(0x10),
            chunk_size: u32at(0x14),
            guid,
            part_number: u16at(0x28),
            total_parts: u16at(0x2A),
            image_count: u32at(0x2C),
            blob_table: ResHdr::parse(&b[0x30..0x48]),
            xml: ResHdr::parse(&b[0x48..0x60]),
            boot_metadata: ResHdr::parse(&b[0x60..0x78]),
            boot_index: u32at(0x78),
            integrity: ResHdr::parse(&b[0x7C..0x94]),
        };
        if h.part_number == 0 || h.total_parts == 0 || h.part_number > h.total_parts {
            return Err(err(
                0x28,
                format!("part {} of {} is impossible", h.part_number, h.total_parts),
            ));
        }
        if h.image_count > MAX_IMAGES {
            return Err(err(
                0x2C,
                format!("image count {} exceeds {MAX_IMAGES}", h.image_count),
            ));
        }
        let codec = h.codec()?;
        if codec != Codec::None {
            let cs = h.chunk_size;
            let (min, max) = chunk_limits(codec);
            if !cs.is_power_of_two() || cs < min || cs > max {
                return Err(err(
                    0x14,
                    format!(
                        "chunk size {cs} for {} is not a power of two in {min}..={max}",
                        codec.name()
                    ),
                ));
            }
        }
        for (r, name, at) in [
            (&h.blob_table, "blob table", 0x30u64),
            (&h.xml, "XML data", 0x48),
        ] {
            r.check_in_file(name, at, file_size)?;
        }
        if h.blob_table.is_zero() && h.xml.is_zero() {
            return Err(err(
                0x30,
                "blob table and XML data are both absent (incomplete WIM)".into(),
            ));
        }
        if !h.integrity.is_zero() {
            h.integrity
                .check_in_file("integrity table", 0x7C, file_size)?;
        }
        Ok(h)
    }

    /// The codec of non-solid compressed resources, by wimlib's precedence (F§1).
    pub fn codec(&self) -> Result<Codec> {
        if self.flags & FLAG_COMPRESSION == 0 {
            return Ok(Codec::None);
        }
        if self.flags & FLAG_COMPRESS_LZX != 0 {
            Ok(Codec::Lzx)
        } else if self.flags & (FLAG_COMPRESS_XPRESS | FLAG_COMPRESS_XPRESS_2) != 0 {
            Ok(Codec::Xpress)
        } else if self.flags & FLAG_COMPRESS_LZMS != 0 {
            Ok(Codec::Lzms)
        } else {
            Err(Error::Header {
                offset: 0x10,
                what: format!(
                    "flags {:#x} ask for compression but name no codec",
                    self.flags
                ),
            })
        }
    }

    /// The GUID in the usual text form (bytes taken as a Microsoft mixed-endian GUID).
    pub fn guid(&self) -> Guid {
        Guid::from_mixed_endian(self.guid)
    }

    /// Header flag names that are set, as wimlib spells them.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let names = [
            (0x1, "RESERVED"),
            (FLAG_COMPRESSION, "COMPRESSION"),
            (FLAG_READONLY, "READONLY"),
            (FLAG_SPANNED, "SPANNED"),
            (FLAG_RESOURCE_ONLY, "RESOURCE_ONLY"),
            (FLAG_METADATA_ONLY, "METADATA_ONLY"),
            (FLAG_WRITE_IN_PROGRESS, "WRITE_IN_PROGRESS"),
            (FLAG_RP_FIX, "RP_FIX"),
            (0x10000, "COMPRESS_RESERVED"),
            (FLAG_COMPRESS_XPRESS, "COMPRESS_XPRESS"),
            (FLAG_COMPRESS_LZX, "COMPRESS_LZX"),
            (FLAG_COMPRESS_LZMS, "COMPRESS_LZMS"),
            (FLAG_COMPRESS_XPRESS_2, "COMPRESS_XPRESS_2"),
        ];
        names
            .iter()
            .filter(|(f, _)| self.flags & f != 0)
            .map(|&(_, n)| n)
            .collect()
    }
}

/// Legal chunk sizes per codec (wimlib's limits, F§1; solid resources carry their own).
pub fn chunk_limits(codec: Codec) -> (u32, u32) {
    match codec {
        Codec::None => (0, 0),
        Codec::Xpress => (1 << 12, 1 << 16),
        Codec::Lzx => (1 << 15, 1 << 21),
        Codec::Lzms => (1 << 15, 1 << 30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[0xC..0x10].copy_from_slice(&VERSION_DEFAULT.to_le_bytes());
        b[0x28] = 1;
        b[0x2A] = 1;
        // XML resource: 2 bytes at 208.
        b[0x48] = 2;
        b[0x50] = 208;
        b[0x58] = 2;
        b
    }

    #[test]
    fn parses_minimal_header() {
        let h = Header::parse(&header(), 210).unwrap();
        assert_eq!(h.codec().unwrap(), Codec::None);
        assert_eq!(h.xml.offset, 208);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = header();
        b[0] = b'X';
        assert!(Header::parse(&b, 210).is_err());
        let mut b = header();
        b[0x2A] = 0;
        assert!(Header::parse(&b, 210).is_err());
        // XML past the end.
        assert!(Header::parse(&header(), 209).is_err());
        let mut b = header();
        b[0x10] = FLAG_COMPRESSION as u8;
        assert!(Header::parse(&b, 210).is_err());
        b[0x12] = (FLAG_COMPRESS_XPRESS >> 16) as u8;
        b[0x14..0x18].copy_from_slice(&3000u32.to_le_bytes());
        assert!(Header::parse(&b, 210).is_err());
    }
}
