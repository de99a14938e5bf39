//! Extracting an image to a Linux directory: directories, file contents (unnamed data
//! streams), hard links and symbolic links, with times. What a Linux directory cannot hold
//! (named streams, security descriptors, other reparse points, short names, attributes) is
//! counted in the report instead of being faked.
//!
//! Safety: every name was validated by the metadata parser (no `/`, `\`, NUL, `.`, `..`,
//! no duplicates), files are created with `create_new` so nothing existing is overwritten
//! or followed, and symbolic links are created last so no later write can pass through one.

use super::metadata::{Dentry, ImageTree};
use super::resource::{BlobSink, Wim};
use super::{Error, Result, Sha1};
use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reparse tags with a Linux equivalent ([MS-FSCC] 2.1.2.1).
const TAG_SYMLINK: u32 = 0xA000_000C;
const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// Largest reparse data (MAXIMUM_REPARSE_DATA_BUFFER_SIZE minus the 8-byte header, F§5.4).
const MAX_REPARSE_DATA: u64 = 16376;
/// FILETIME of the Unix epoch (100 ns intervals since 1601).
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

/// What an extraction wrote and what it could not represent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExtractReport {
    pub directories: u64,
    pub files: u64,
    pub hard_links: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Named data streams not written (a Linux file has one data stream).
    pub named_streams_skipped: u64,
    /// Entries carrying a security descriptor (not applied).
    pub security_descriptors_skipped: u64,
    /// Reparse points that are not symbolic links or junctions (not applied).
    pub reparse_points_skipped: u64,
    /// Entries with a DOS short name (not applied).
    pub short_names_skipped: u64,
    /// Encrypted files (their raw EFS data is not decrypted; not written).
    pub encrypted_skipped: u64,
}

fn to_systime(ft: u64) -> SystemTime {
    if ft >= FILETIME_UNIX_EPOCH {
        let d = ft - FILETIME_UNIX_EPOCH;
        UNIX_EPOCH + Duration::new(d / 10_000_000, (d % 10_000_000) as u32 * 100)
    } else {
        UNIX_EPOCH
    }
}

fn times(d: &Dentry) -> FileTimes {
    FileTimes::new()
        .set_accessed(to_systime(d.last_access_time))
        .set_modified(to_systime(d.last_write_time))
}

fn xerr(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Extract {
        path: path.to_path_buf(),
        what: e.to_string(),
    }
}

/// Host path of entry `i` under `dest`.
fn host_path(tree: &ImageTree, dest: &Path, i: usize) -> PathBuf {
    let mut p = dest.to_path_buf();
    for comp in tree.path(i).split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
    }
    p
}

/// Symbolic link target from symlink or mount-point reparse data ([MS-FSCC] 2.1.2.4/2.1.2.5).
fn link_target(tag: u32, data: &[u8]) -> Option<String> {
    let u16at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let (sub_off, sub_len, pr_off, pr_len) = (u16at(0)?, u16at(2)?, u16at(4)?, u16at(6)?);
    let (buf_at, relative) = if tag == TAG_SYMLINK {
        let flags = data
            .get(8..12)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        (12, flags & 1 != 0)
    } else {
        (8, false)
    };
    let name = |off: usize, len: usize| -> Option<String> {
        let b = data.get(buf_at + off..buf_at + off + len)?;
        let u: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&u))
    };
    let mut t = name(pr_off, pr_len)
        .filter(|s| !s.is_empty())
        .or_else(|| name(sub_off, sub_len))?;
    if !relative {
        // Absolute Windows targets: drop the NT prefix and drive letter.
        for p in ["\\??\\", "\\\\?\\"] {
            if let Some(r) = t.strip_prefix(p) {
                t = r.to_string();
            }
        }
        let b = t.as_bytes();
        if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
            t = t[2..].to_string();
        }
    }
    let t = t.replace('\\', "/");
    if t.is_empty() || t.contains('\0') {
        return None;
    }
    Some(t)
}

struct FileSink {
    files: Vec<(File, PathBuf)>,
}

impl BlobSink for FileSink {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        for (f, p) in &mut self.files {
            f.write_all(data).map_err(xerr(p))?;
        }
        Ok(())
    }
    fn finish(self) -> Result<()> {
        Ok(())
    }
}

/// Extract image `index` (1-based) of `wim` into `dest` (created if missing; existing files
/// are never overwritten).
pub fn extract(wim: &Wim, index: usize, dest: &Path) -> Result<ExtractReport> {
    let tree = wim.image(index)?;
    let mut rep = ExtractReport::default();
    std::fs::create_dir_all(dest).map_err(xerr(dest))?;
    let order = tree.walk();
    // Which entries get their own file; hard-link group members after the first link.
    let mut group_first: HashMap<u64, usize> = HashMap::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut targets: HashMap<Sha1, Vec<usize>> = HashMap::new();
    let mut symlinks: Vec<(usize, String)> = Vec::new();
    let mut plain_files: Vec<usize> = Vec::new();
    for &i in &order {
        let d = &tree.entries[i];
        rep.named_streams_skipped += d.named_streams().count() as u64;
        rep.security_descriptors_skipped += u64::from(d.security_id.is_some());
        rep.short_names_skipped += u64::from(d.short_name.is_some());
        if i == 0 {
            continue;
        }
        let path = host_path(&tree, dest, i);
        if d.attributes & super::metadata::ATTR_ENCRYPTED != 0 {
            rep.encrypted_skipped += 1;
            continue;
        }
        if d.is_reparse_point() {
            let tag = d.reparse_tag.unwrap_or(0);
            let h = d.reparse_hash();
            let target = if (tag == TAG_SYMLINK || tag == TAG_MOUNT_POINT)
                && wim.blob_size(&h).is_some_and(|s| s <= MAX_REPARSE_DATA)
            {
                let mut data = Vec::new();
                wim.open_blob_named(&h, tree.path(i))?
                    .read_to_end(&mut data)
                    .map_err(|e| Error::Extract {
                        path: path.clone(),
                        what: e.to_string(),
                    })?;
                link_target(tag, &data)
            } else {
                None
            };
            match target {
                Some(t) => {
                    symlinks.push((i, t));
                    continue;
                }
                None => rep.reparse_points_skipped += 1,
            }
        }
        if d.is_dir() {
            std::fs::create_dir(&path).map_err(xerr(&path))?;
            rep.directories += 1;
            continue;
        }
        if d.hard_link_group != 0 {
            if let Some(&first) = group_first.get(&d.hard_link_group) {
                links.push((first, i));
                continue;
            }
            group_first.insert(d.hard_link_group, i);
        }
        let h = d.data_hash();
        if h == [0; 20] {
            plain_files.push(i);
        } else {
            targets.entry(h).or_default().push(i);
        }
        rep.files += 1;
    }
    for &i in &plain_files {
        let p = host_path(&tree, dest, i);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(xerr(&p))?;
    }
    let hashes: Vec<Sha1> = targets.keys().copied().collect();
    let label = |h: &Sha1| {
        targets
            .get(h)
            .map(|v| {
                v.iter()
                    .take(4)
                    .map(|&i| tree.path(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let make_sink = |h: &Sha1| -> Result<FileSink> {
        let mut files = Vec::new();
        for &i in targets.get(h).map(|v| v.as_slice()).unwrap_or(&[]) {
            let p = host_path(&tree, dest, i);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(xerr(&p))?;
            files.push((f, p));
        }
        Ok(FileSink { files })
    };
    let (_, bytes) = wim.stream_blobs(Some(&hashes), &label, &make_sink)?;
    rep.bytes = bytes;
    for &(first, other) in &links {
        let (a, b) = (host_path(&tree, dest, first), host_path(&tree, dest, other));
        std::fs::hard_link(&a, &b).map_err(xerr(&b))?;
        rep.hard_links += 1;
    }
    for (i, t) in &symlinks {
        let p = host_path(&tree, dest, *i);
        std::os::unix::fs::symlink(t, &p).map_err(xerr(&p))?;
        rep.symlinks += 1;
    }
    // Times: files first, then directories deepest first after every entry exists, since
    // creating an entry changes its parent directory's times.
    for &i in order.iter().rev() {
        let d = &tree.entries[i];
        if symlinks.iter().any(|(s, _)| *s == i)
            || d.attributes & super::metadata::ATTR_ENCRYPTED != 0
        {
            continue;
        }
        let p = host_path(&tree, dest, i);
        if i != 0 && d.is_dir() || !d.is_dir() {
            if let Ok(f) = File::open(&p) {
                f.set_times(times(d)).map_err(xerr(&p))?;
            }
        }
    }
    Ok(rep)
}
