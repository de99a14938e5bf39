//! The base block (spec, "Format of primary files", "Base block").

use super::{corrupt, le32, le64, Result};

/// Size of the base block at the start of a primary file.
pub const BASE_BLOCK_SIZE: usize = 4096;
/// Bytes covered by the checksum; the checksum itself sits right after them.
const CHECKSUM_COVERS: usize = 508;
/// Offset of the Windows 10 transaction fields (RmId .. Last reorganized timestamp).
const TXN_FIELDS: std::ops::Range<usize> = 112..176;

/// File type of a primary file.
pub const FILE_TYPE_PRIMARY: u32 = 0;
/// File type of an old-format transaction log.
pub const FILE_TYPE_LOG_OLD: u32 = 1;
/// File type of a new-format transaction log ("HvLE" entries).
pub const FILE_TYPE_LOG_NEW: u32 = 6;

/// Decoded base block. Fields the writer recomputes (root cell offset, hive bins data
/// size, checksum) are informative after parsing; the others are written back verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlock {
    pub primary_sequence_number: u32,
    pub secondary_sequence_number: u32,
    /// FILETIME (UTC) of the last write.
    pub last_written_timestamp: u64,
    pub major_version: u32,
    pub minor_version: u32,
    pub file_type: u32,
    pub file_format: u32,
    pub root_cell_offset: u32,
    pub hive_bins_data_size: u32,
    pub clustering_factor: u32,
    /// UTF-16LE partial path of the file, for debugging (64 bytes, kept verbatim).
    pub file_name: [u8; 64],
    /// Windows 10 fields RmId, LogId, Flags, TmId, GUID signature and Last reorganized
    /// timestamp (bytes 112..176), kept verbatim.
    pub transaction_fields: [u8; 64],
    pub checksum: u32,
}

/// XOR-32 of the first 508 bytes (spec, "Base block", note 2).
pub fn checksum(block: &[u8]) -> u32 {
    block[..CHECKSUM_COVERS].chunks_exact(4).fold(0u32, |c, g| {
        c ^ u32::from_le_bytes([g[0], g[1], g[2], g[3]])
    })
}

impl BaseBlock {
    /// A base block for a new hive (version 1.5, primary file, sequence 1).
    pub fn new(last_written_timestamp: u64) -> Self {
        BaseBlock {
            primary_sequence_number: 1,
            secondary_sequence_number: 1,
            last_written_timestamp,
            major_version: 1,
            minor_version: 5,
            file_type: FILE_TYPE_PRIMARY,
            file_format: 1,
            root_cell_offset: 0x20,
            hive_bins_data_size: 0,
            clustering_factor: 1,
            file_name: [0; 64],
            transaction_fields: [0; 64],
            checksum: 0,
        }
    }

    /// Decode the first 512 bytes. Only the signature and the length are checked here;
    /// [`BaseBlock::validate`] checks the rest.
    pub fn parse(data: &[u8]) -> Result<Self> {
        if data.len() < 512 {
            return Err(corrupt(
                "base block",
                0,
                format!(
                    "file is {} bytes, a base block needs 512; not a hive",
                    data.len()
                ),
            ));
        }
        if &data[0..4] != b"regf" {
            return Err(corrupt(
                "base block",
                0,
                format!(
                    "signature is {:02x?}, expected \"regf\"; not a registry hive",
                    &data[0..4]
                ),
            ));
        }
        let mut file_name = [0u8; 64];
        file_name.copy_from_slice(&data[48..112]);
        let mut transaction_fields = [0u8; 64];
        transaction_fields.copy_from_slice(&data[TXN_FIELDS]);
        Ok(BaseBlock {
            primary_sequence_number: le32(data, 4),
            secondary_sequence_number: le32(data, 8),
            last_written_timestamp: le64(data, 12),
            major_version: le32(data, 20),
            minor_version: le32(data, 24),
            file_type: le32(data, 28),
            file_format: le32(data, 32),
            root_cell_offset: le32(data, 36),
            hive_bins_data_size: le32(data, 40),
            clustering_factor: le32(data, 44),
            file_name,
            transaction_fields,
            checksum: le32(data, 508),
        })
    }

    /// True when the stored checksum matches the bytes it covers.
    pub fn checksum_ok(data: &[u8]) -> bool {
        data.len() >= 512 && checksum(data) == le32(data, 508)
    }

    /// Strict checks of a primary file's base block (version, type, format, sizes).
    pub fn validate(&self, data: &[u8]) -> Result<()> {
        let stored = le32(data, 508);
        let computed = checksum(data);
        if stored != computed {
            return Err(corrupt(
                "base block",
                508,
                format!(
                    "checksum is {stored:#010x}, expected {computed:#010x}; the header is damaged \
                     (recover with the transaction logs, or parse with validate=false)"
                ),
            ));
        }
        if self.major_version != 1 || !(2..=6).contains(&self.minor_version) {
            return Err(corrupt(
                "base block",
                20,
                format!(
                    "version is {}.{}, expected 1.2 to 1.6",
                    self.major_version, self.minor_version
                ),
            ));
        }
        if self.file_type != FILE_TYPE_PRIMARY {
            return Err(corrupt(
                "base block",
                28,
                format!(
                    "file type is {}, expected 0 (primary file); this looks like a transaction log",
                    self.file_type
                ),
            ));
        }
        if self.file_format != 1 {
            return Err(corrupt(
                "base block",
                32,
                format!(
                    "file format is {}, expected 1 (direct memory load)",
                    self.file_format
                ),
            ));
        }
        if !(self.hive_bins_data_size as usize).is_multiple_of(super::HBIN_PAGE) {
            return Err(corrupt(
                "base block",
                40,
                format!(
                    "hive bins data size {:#x} is not a multiple of 4096",
                    self.hive_bins_data_size
                ),
            ));
        }
        Ok(())
    }

    /// Encode as a 4096-byte block with a fresh checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; BASE_BLOCK_SIZE];
        b[0..4].copy_from_slice(b"regf");
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 4, self.primary_sequence_number);
        put(&mut b, 8, self.secondary_sequence_number);
        b[12..20].copy_from_slice(&self.last_written_timestamp.to_le_bytes());
        put(&mut b, 20, self.major_version);
        put(&mut b, 24, self.minor_version);
        put(&mut b, 28, self.file_type);
        put(&mut b, 32, self.file_format);
        put(&mut b, 36, self.root_cell_offset);
        put(&mut b, 40, self.hive_bins_data_size);
        put(&mut b, 44, self.clustering_factor);
        b[48..112].copy_from_slice(&self.file_name);
        b[TXN_FIELDS].copy_from_slice(&self.transaction_fields);
        let sum = checksum(&b);
        put(&mut b, 508, sum);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let mut bb = BaseBlock::new(0x01d0_0000_0000_0000);
        bb.hive_bins_data_size = 4096;
        let bytes = bb.to_bytes();
        assert!(BaseBlock::checksum_ok(&bytes));
        let back = BaseBlock::parse(&bytes).unwrap();
        back.validate(&bytes).unwrap();
        assert_eq!(back.hive_bins_data_size, 4096);
        assert_eq!(back.checksum, checksum(&bytes));
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        let e = BaseBlock::parse(&bad)
            .unwrap()
            .validate(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum") && e.contains("0x1fc"), "{e}");
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert!(BaseBlock::parse(&[0u8; 100]).is_err());
        assert!(BaseBlock::parse(&[0u8; 4096]).is_err());
    }
}
