//! Shared building blocks: block I/O, GUIDs, checksums, sizes, build time and atomic outputs.
//!
//! Nothing here knows any on-disk format; every format module builds on these.

pub mod block;
pub mod checksum;
pub mod guid;
pub mod output;
pub mod runs;
pub mod sink;
pub mod time;
pub mod units;

pub use block::{MemDisk, ReadAt, WriteAt};
pub use guid::Guid;
