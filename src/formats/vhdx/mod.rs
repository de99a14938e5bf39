//! VHDX virtual hard disk, after MS-VHDX "Virtual Hard Disk v2 (VHDX) File Format", v1.0+:
//! section 2.1 (layout), 2.2 (header section: file identifier, headers, region table), 2.3 (log),
//! 2.5 (BAT), 2.6 (metadata region and its known items).
//!
//! [`VhdxWriter`] produces dynamic or fixed disks (never differencing), streaming: data blocks are
//! placed at the end of the file as they are first written and the BAT is written last.
//! [`VhdxReader`] reads dynamic and fixed disks written by us, qemu-img and Hyper-V; it refuses
//! differencing disks, and replays a non-empty log in memory (never writing to the file).

mod layout;
mod log;
mod reader;
mod writer;

pub use reader::VhdxReader;
pub use writer::{VhdxOptions, VhdxWriter};

use crate::core::Guid;
use std::io;

/// What [`VhdxReader::info`] reports about an opened disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxInfo {
    /// VirtualDiskSize metadata item (MS-VHDX 2.6.2.2), in bytes.
    pub virtual_size: u64,
    /// BlockSize from the file parameters (2.6.2.1).
    pub block_size: u32,
    /// LogicalSectorSize (2.6.2.4): 512 or 4096.
    pub logical_sector_size: u32,
    /// PhysicalSectorSize (2.6.2.5): 512 or 4096.
    pub physical_sector_size: u32,
    /// LeaveBlocksAllocated from the file parameters: set on fixed disks.
    pub fixed: bool,
    /// HasParent from the file parameters (differencing disk).
    pub has_parent: bool,
    /// FileWriteGuid of the current header (2.2.2).
    pub file_write_guid: Guid,
    /// DataWriteGuid of the current header (2.2.2).
    pub data_write_guid: Guid,
    /// Page 83 data (2.6.2.3): the virtual disk's SCSI identifier.
    pub page83: Guid,
}

/// Everything that can go wrong reading or writing a VHDX. Messages are one line and name the
/// structure, its absolute file offset, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A structure in the file breaks a rule of MS-VHDX.
    #[error("VHDX {structure} at {offset:#x}: {detail}")]
    Corrupt {
        structure: &'static str,
        offset: u64,
        detail: String,
    },
    /// A valid structure this reader does not implement.
    #[error("VHDX {structure} at {offset:#x}: {detail}")]
    Unsupported {
        structure: &'static str,
        offset: u64,
        detail: String,
    },
    /// The disk is a differencing disk; its contents need its parent.
    #[error(
        "VHDX file parameters at {offset:#x}: this is a differencing disk (HasParent set), parent {}; \
         merge it into its parent (or convert it with qemu-img/Hyper-V) and open the result",
        parent.as_deref().map(|p| format!("'{p}'")).unwrap_or_else(|| "not named by its parent locator".into())
    )]
    Differencing { offset: u64, parent: Option<String> },
    /// Writer options out of range.
    #[error("VHDX options: {0}")]
    Options(String),
    /// An I/O error from the underlying file.
    #[error("VHDX {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        // An I/O failure keeps its kind (a full disk is not corrupt data); the rest is bad data.
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
