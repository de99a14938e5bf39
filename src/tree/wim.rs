//! Filling a tree from a WIM image: every dentry becomes a node with its names, DOS name,
//! attributes, times, security descriptor, object id, reparse data, named streams and
//! hard links; file contents stay in the WIM as [`Content::Source`] references that the
//! NTFS writer decompresses as it writes.

use super::content::read_to_vec;
use crate::formats::wim::{self, StreamKind, Wim};
use crate::tree::{Content, ContentSource, Meta, NodeId, Reparse, SecurityId, Tree};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

/// FILE_ATTRIBUTE_* bits that describe how NTFS stores data rather than what the file is.
const ATTR_DIRECTORY: u32 = 0x10;
const ATTR_SPARSE_FILE: u32 = 0x200;
const ATTR_COMPRESSED: u32 = 0x800;
const ATTR_ENCRYPTED: u32 = 0x4000;

/// Blobs of one WIM, numbered for [`Content::Source`] ids.
pub struct WimSource {
    wim: Arc<Wim>,
    hashes: Vec<wim::Sha1>,
}

/// Blobs up to this size are decompressed in the caller's thread into one buffer; larger
/// ones stream from a thread of their own through a bounded pipe, decoded by every core
/// with the SHA-1 overlapping the decoding (`Wim::stream_blob`).
const INLINE_BLOB: u64 = 1 << 20;
/// Pieces in flight in a blob pipe (each up to `PIPE_PIECE` bytes): bounds its memory.
const PIPE_DEPTH: usize = 4;
const PIPE_PIECE: usize = 1 << 20;

impl ContentSource for WimSource {
    fn open(&self, id: u64) -> io::Result<Box<dyn Read + Send>> {
        let hash = self.hash(id)?;
        let len = self.wim.blob_size(&hash).unwrap_or(0);
        if len <= INLINE_BLOB {
            return Ok(Box::new(io::Cursor::new(self.read_small(&hash, len)?)));
        }
        // Nothing is decoded until the writer reaches this file: readers opened ahead hold
        // no buffers, so memory does not grow with how many large files are in flight.
        Ok(Box::new(PipeReader::Idle(self.wim.clone(), hash)))
    }

    fn read_all(&self, id: u64, len: u64) -> io::Result<Vec<u8>> {
        let hash = self.hash(id)?;
        if self.wim.blob_size(&hash).unwrap_or(0) <= INLINE_BLOB {
            return self.read_small(&hash, len);
        }
        read_to_vec(self.open(id)?, len)
    }
}

impl WimSource {
    fn hash(&self, id: u64) -> io::Result<wim::Sha1> {
        self.hashes.get(id as usize).copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no blob number {id}"))
        })
    }

    /// A small blob, decoded on this thread: straight into its buffer when it has a
    /// resource of its own, else through a reader.
    fn read_small(&self, hash: &wim::Sha1, len: u64) -> io::Result<Vec<u8>> {
        if let Some(v) = self.wim.read_plain_blob(hash).map_err(io::Error::from)? {
            return Ok(v);
        }
        read_to_vec(self.wim.open_blob(hash).map_err(io::Error::from)?, len)
    }
}

/// The reading end of a blob pipe: idle until first read, then fed by a decoding thread.
enum PipeReader {
    Idle(Arc<Wim>, wim::Sha1),
    Running {
        rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
        cur: io::Cursor<Vec<u8>>,
    },
}

fn start_pipe(wim: Arc<Wim>, hash: wim::Sha1) -> std::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
    std::thread::spawn(move || {
        // Pieces of PIPE_PIECE bytes; the blob is decoded by every thread at once.
        let mut piece = Vec::with_capacity(PIPE_PIECE);
        let r = wim.stream_blob(&hash, |mut d| {
            while !d.is_empty() {
                let n = (PIPE_PIECE - piece.len()).min(d.len());
                piece.extend_from_slice(&d[..n]);
                d = &d[n..];
                if piece.len() == PIPE_PIECE {
                    let full = std::mem::replace(&mut piece, Vec::with_capacity(PIPE_PIECE));
                    // The reader went away (an error elsewhere): stop decoding.
                    tx.send(Ok(full)).map_err(|_| wim::Error::Io {
                        path: "blob pipe".into(),
                        source: io::Error::new(io::ErrorKind::BrokenPipe, "reader closed"),
                    })?;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                if !piece.is_empty() {
                    let _ = tx.send(Ok(piece));
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.into()));
            }
        }
    });
    rx
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let PipeReader::Idle(wim, hash) = self {
            let rx = start_pipe(wim.clone(), *hash);
            *self = PipeReader::Running {
                rx,
                cur: io::Cursor::new(Vec::new()),
            };
        }
        let PipeReader::Running { rx, cur } = self else {
            unreachable!("started above")
        };
        loop {
            let n = cur.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match rx.recv() {
                Ok(piece) => *cur = io::Cursor::new(piece?),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// What an image apply did with things NTFS volumes we write do not carry as the WIM did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WimApplyReport {
    pub entries: u64,
    pub files: u64,
    pub directories: u64,
    pub hard_links: u64,
    pub bytes: u64,
    /// Files marked compressed in the image: written uncompressed, attribute cleared.
    pub compressed_written_plain: u64,
    /// Files marked sparse in the image: written with all their data, attribute cleared.
    pub sparse_written_dense: u64,
    /// Encrypted files: their raw EFS data cannot be turned into an encrypted NTFS file
    /// offline, so they are left out.
    pub encrypted_skipped: u64,
}

/// Add image `index` of `wim` below the tree node `at` (the image's root metadata goes
/// onto `at` itself).
pub fn add_image(
    tree: &mut Tree,
    at: NodeId,
    wim: &Arc<Wim>,
    index: usize,
) -> io::Result<WimApplyReport> {
    let image = wim.image(index).map_err(io::Error::from)?;
    let mut report = WimApplyReport::default();
    let mut hashes: Vec<wim::Sha1> = Vec::new();
    let mut blob_ids: HashMap<wim::Sha1, u64> = HashMap::new();
    let mut security: HashMap<u32, SecurityId> = HashMap::new();
    let mut nodes: Vec<Option<NodeId>> = vec![None; image.entries.len()];
    let mut links: HashMap<u64, NodeId> = HashMap::new();
    // Contents are attached after the walk, when the blob table of the source is final.
    let mut pending: Vec<(NodeId, Option<String>, wim::Sha1)> = Vec::new();
    nodes[0] = Some(at);
    for i in image.walk() {
        let d = &image.entries[i];
        if d.attributes & ATTR_ENCRYPTED != 0 {
            report.encrypted_skipped += 1;
            continue;
        }
        let mut meta = Meta {
            attributes: d.attributes & !(ATTR_DIRECTORY | ATTR_SPARSE_FILE | ATTR_COMPRESSED),
            creation_time: d.creation_time,
            last_write_time: d.last_write_time,
            mft_change_time: d.last_write_time,
            last_access_time: d.last_access_time,
            security: None,
            object_id: d
                .object_id
                .as_ref()
                .and_then(|o| o.get(..16))
                .map(|o| o.try_into().expect("16 bytes")),
            reparse: None,
        };
        if d.attributes & ATTR_COMPRESSED != 0 && !d.is_dir() {
            report.compressed_written_plain += 1;
        }
        if d.attributes & ATTR_SPARSE_FILE != 0 {
            report.sparse_written_dense += 1;
        }
        if let Some(sid) = d.security_id {
            let id = match security.get(&sid) {
                Some(&id) => id,
                None => {
                    let sd = image.security.get(sid as usize).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: security id {sid} out of range", image.path(i)),
                        )
                    })?;
                    let id = tree.add_security(sd).map_err(io::Error::from)?;
                    security.insert(sid, id);
                    id
                }
            };
            meta.security = Some(id);
        }
        if let Some(tag) = d.reparse_tag {
            let h = d.reparse_hash();
            let mut data = Vec::new();
            if h != [0; 20] {
                wim.open_blob_named(&h, image.path(i))
                    .map_err(io::Error::from)?
                    .read_to_end(&mut data)?;
            }
            meta.reparse = Some(Reparse { tag, data });
        }
        if i == 0 {
            tree.set_meta(at, meta).map_err(io::Error::from)?;
            continue;
        }
        let parent = match nodes[d.parent] {
            Some(p) => p,
            None => continue, // below a skipped (encrypted) directory
        };
        let dos: Option<Vec<u16>> = d.short_name.as_ref().map(|s| s.encode_utf16().collect());
        report.entries += 1;
        if !d.is_dir() && d.hard_link_group != 0 {
            if let Some(&target) = links.get(&d.hard_link_group) {
                tree.add_hard_link_utf16(target, parent, &d.name_utf16, dos.as_deref())
                    .map_err(io::Error::from)?;
                nodes[i] = Some(target);
                report.hard_links += 1;
                continue;
            }
        }
        let id = tree
            .add_utf16(parent, &d.name_utf16, dos.as_deref(), d.is_dir(), meta)
            .map_err(io::Error::from)?;
        nodes[i] = Some(id);
        if d.hard_link_group != 0 && !d.is_dir() {
            links.insert(d.hard_link_group, id);
        }
        if d.is_dir() {
            report.directories += 1;
            continue;
        }
        report.files += 1;
        for s in &d.streams {
            let name = match s.kind {
                StreamKind::Data => None,
                StreamKind::Named => s.name.clone(),
                StreamKind::Reparse | StreamKind::EfsRaw => continue,
            };
            if s.hash == [0; 20] {
                if let Some(n) = name {
                    tree.add_stream(id, &n, Content::Empty)
                        .map_err(io::Error::from)?;
                }
                continue;
            }
            blob_ids.entry(s.hash).or_insert_with(|| {
                hashes.push(s.hash);
                hashes.len() as u64 - 1
            });
            pending.push((id, name, s.hash));
        }
    }
    let dyn_source: Arc<dyn ContentSource> = Arc::new(WimSource {
        wim: wim.clone(),
        hashes,
    });
    for (id, name, hash) in pending {
        let len = wim.blob_size(&hash).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: blob {} is not in the WIM's blob table",
                    tree.path_of(id),
                    wim::hex(&hash)
                ),
            )
        })?;
        report.bytes += len;
        let content = Content::Source {
            source: dyn_source.clone(),
            id: blob_ids[&hash],
            len,
        };
        match name {
            None => tree.set_data(id, content),
            Some(n) => tree.add_stream(id, &n, content),
        }
        .map_err(io::Error::from)?;
    }
    Ok(report)
}
