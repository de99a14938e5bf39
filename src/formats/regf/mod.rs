//! Windows registry hive files (regf), after "Windows registry file format specification"
//! by Maxim Suhanov (msuhanov/regf, sections "Format of primary files" and "Format of
//! transaction log files") and the libregf notes "Windows NT Registry File (REGF) format"
//! (Joachim Metz, sections 2–6).
//!
//! [`Hive::parse`] reads a hive into an editable tree of [`Key`]s, [`Hive::to_bytes`]
//! writes a fresh, compact hive from the tree, [`export_reg`] / [`merge_reg`] speak the
//! text form of `regedit` (`.reg` files). Dirty hives are recovered from their new-format
//! transaction logs (`.LOG1`/`.LOG2`, "HvLE" entries) when those are given.
//!
//! The model keeps whatever the writer does not have to compute verbatim: key flags,
//! class names, timestamps, the spare/work fields, value flags, security descriptors.
//!
//! Known limits:
//! - Names are compared and hashed with Unicode simple upper-casing, one UTF-16 unit to
//!   one ([`upcase_unit`]). That is exact for ASCII; for other scripts it follows
//!   Unicode, which may differ from Windows' own upcase table for a few letters.
//! - Old-format transaction logs ("DIRT" dirty vectors, Windows before 8.1) are refused.
//! - Volatile keys (KEY_VOLATILE) read from a file are written back like any other key.
//! - Lists of subkeys are written as hash leaves ("lh"), so written hives are version 1.5
//!   (or 1.6 when the source was); big data records need 1.4 or later anyway.

mod base;
mod log;
mod model;
mod names;
mod read;
mod reg;
mod write;

pub use base::{checksum, BaseBlock, BASE_BLOCK_SIZE};
pub use log::{marvin32, recover, LogRecovery, MARVIN32_LOG_SEED};
pub use model::{Hive, Key, Value, ValueData};
pub use names::{lh_hash, upcase_unit};
pub use read::{HiveBin, KeyNode, KeySecurity, KeyValue, ParseOptions};
pub use reg::{
    decode_reg_file, encode_reg_file, export_reg, export_reg_prefixed, merge_reg,
    merge_reg_prefixed, MergeReport,
};
pub use write::{default_security_descriptor, MAX_LEAF_ELEMENTS};

/// Size of a hive bin page: hive bins are multiples of it (spec, "Hive bin", note 1).
pub const HBIN_PAGE: usize = 4096;
/// Largest data segment of a big data record, and largest value stored in one cell in
/// hives newer than 1.3 (spec, "Big data"): 16344 + 4-byte cell header + 32-byte hbin
/// header fill four pages exactly.
pub const BIG_DATA_SEGMENT: usize = 16344;
/// Deepest key nesting accepted: the registry tree is limited to 512 levels (libregf
/// "Overview", quoting MSDN).
pub const MAX_DEPTH: usize = 512;
/// Longest key name in characters (libregf "Overview", quoting MSDN).
pub const MAX_KEY_NAME_CHARS: usize = 255;
/// Longest value name in characters (libregf "Overview", quoting MSDN).
pub const MAX_VALUE_NAME_CHARS: usize = 16383;

/// Key node flags (spec, "Key node", "Flags").
pub mod key_flags {
    /// KEY_VOLATILE: the key lives in memory only.
    pub const VOLATILE: u16 = 0x0001;
    /// KEY_HIVE_EXIT: mount point of another hive.
    pub const HIVE_EXIT: u16 = 0x0002;
    /// KEY_HIVE_ENTRY: root key of this hive.
    pub const HIVE_ENTRY: u16 = 0x0004;
    /// KEY_NO_DELETE: the key cannot be deleted.
    pub const NO_DELETE: u16 = 0x0008;
    /// KEY_SYM_LINK: symbolic link (target in value "SymbolicLinkValue").
    pub const SYM_LINK: u16 = 0x0010;
    /// KEY_COMP_NAME: the name is stored as 8-bit characters.
    pub const COMP_NAME: u16 = 0x0020;
}

/// Value types (spec, "Key value", "Data types").
pub mod value_type {
    pub const REG_NONE: u32 = 0;
    pub const REG_SZ: u32 = 1;
    pub const REG_EXPAND_SZ: u32 = 2;
    pub const REG_BINARY: u32 = 3;
    pub const REG_DWORD: u32 = 4;
    pub const REG_DWORD_BIG_ENDIAN: u32 = 5;
    pub const REG_LINK: u32 = 6;
    pub const REG_MULTI_SZ: u32 = 7;
    pub const REG_RESOURCE_LIST: u32 = 8;
    pub const REG_FULL_RESOURCE_DESCRIPTOR: u32 = 9;
    pub const REG_RESOURCE_REQUIREMENTS_LIST: u32 = 10;
    pub const REG_QWORD: u32 = 11;
}

/// Everything that can go wrong reading, editing or writing a hive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A structure in the file is malformed.
    #[error("regf {structure} at {offset:#x}: {detail}")]
    Corrupt {
        structure: &'static str,
        offset: u64,
        detail: String,
    },
    /// Primary and secondary sequence numbers differ and no log could be applied.
    #[error(
        "regf base block at 0x0: hive is dirty (primary sequence number {primary} != secondary \
         {secondary}); give its .LOG1/.LOG2 transaction logs to recover it, or parse it with \
         validate=false to read the primary file as it is"
    )]
    Dirty { primary: u32, secondary: u32 },
    /// A transaction log is unusable.
    #[error("regf transaction log {log}, {structure} at {offset:#x}: {detail}")]
    Log {
        log: usize,
        structure: &'static str,
        offset: u64,
        detail: String,
    },
    /// Decoding would allocate more than the budget derived from the input size.
    #[error(
        "regf {structure} at {offset:#x}: decoded data exceeds {limit} bytes (a multiple of the \
         file size); the hive references the same cells over and over, treat it as hostile"
    )]
    Expansion {
        structure: &'static str,
        offset: u64,
        limit: u64,
    },
    /// A key path does not exist.
    #[error("regf key '{0}' does not exist in this hive")]
    NoSuchKey(String),
    /// An edit is not allowed (bad name, existing target, root deletion...).
    #[error("regf edit of '{path}': {detail}")]
    Edit { path: String, detail: String },
    /// The model cannot be written within the format's limits.
    #[error("regf writer: {0}")]
    Limit(String),
    /// A `.reg` text could not be parsed.
    #[error(".reg text line {line}: {detail}")]
    RegSyntax { line: usize, detail: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Result with this format's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        structure,
        offset,
        detail: detail.into(),
    }
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
