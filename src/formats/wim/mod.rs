//! WIM (Windows Imaging Format) reader: header, resources (stored, chunked, solid), blob
//! table, XML image information, metadata resources (security data and directory entries),
//! split sets and the integrity table.
//!
//! Sources: Microsoft "Windows Imaging File Format (WIM)" (2007) for the overall layout; the
//! field-level rules, cross-checked between wimlib, 7-Zip and go-winio, are recorded with
//! citations in docs/facts-wim.md (sections 1–7; section numbers are cited below as "F§n").
//! Codecs live in `crate::codec`.
//!
//! Everything read from the file is untrusted: every offset, size and count is checked
//! against the file size and the named limits below before it is used, and every blob's
//! SHA-1 is checked as it is read.

mod extract;
mod header;
mod metadata;
mod resource;
pub mod write;
mod xml;

pub use extract::{extract, ExtractReport};
pub use header::{Header, ResHdr};
pub use metadata::{Dentry, ImageTree, Stream, StreamKind};
pub use resource::BlobReader;
pub use xml::ImageInfo;

use crate::codec::CodecError;
use std::path::PathBuf;
use thiserror::Error;

/// Errors reading a WIM.
#[derive(Debug, Error)]
pub enum Error {
    #[error("I/O error reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("WIM header at {offset:#x}: {what}; this is not a WIM file or it is damaged")]
    Header { offset: u64, what: String },
    #[error("{structure} at {offset:#x}: {what}; the WIM is damaged or hostile")]
    Corrupt {
        structure: &'static str,
        offset: u64,
        what: String,
    },
    #[error(
        "compressed chunk {chunk} of the resource at {offset:#x}: {source}; the WIM is damaged"
    )]
    Codec {
        offset: u64,
        chunk: u64,
        source: CodecError,
    },
    #[error("blob {hash} ({paths}) has SHA-1 {actual}; the data is damaged, re-copy the WIM")]
    HashMismatch {
        hash: String,
        actual: String,
        paths: String,
    },
    #[error("reading data of {paths}: {source}")]
    BlobData { paths: String, source: Box<Error> },
    #[error("no blob with SHA-1 {0} in this WIM (a split WIM part may be missing)")]
    MissingBlob(String),
    #[error("image {index} does not exist (the WIM has {count} images)")]
    NoImage { index: usize, count: usize },
    #[error("metadata of image {index}: {what}; the WIM is damaged or hostile")]
    Metadata {
        index: usize,
        offset: u64,
        what: String,
    },
    #[error("XML data at {offset:#x}: {what}")]
    Xml { offset: u64, what: String },
    #[error("split WIM: {0}")]
    Split(String),
    #[error("integrity table: {0}")]
    Integrity(String),
    #[error("{limit} exceeded: {what} (limit {max})")]
    Limit {
        limit: &'static str,
        what: String,
        max: u64,
    },
    #[error("extracting to {path}: {what}")]
    Extract { path: PathBuf, what: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { source, .. } => source,
            e => std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A SHA-1 as stored in WIM structures.
pub type Sha1 = [u8; 20];

/// Lower-case hex of a hash.
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub use resource::{VerifyReport, Wim};

impl Wim {
    /// Paths of image `index` as `wimlib-imagex dir` lists them (each beginning with `/`);
    /// `detailed` appends metadata to each line.
    pub fn dir_lines(&self, index: usize, detailed: bool) -> Result<Vec<String>> {
        let tree = self.image(index)?;
        Ok(metadata::dir_lines(&tree, self, detailed))
    }
}
