//! Build a tree from a host folder: regular files (as [`Content::HostFile`] references,
//! never read here), directories, hard links (same device and inode), and optionally
//! symbolic links as NTFS symlink reparse points.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::{Content, Error, Meta, NodeId, Reparse, Tree};

/// IO_REPARSE_TAG_SYMLINK (facts §8).
pub const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// SYMLINK_FLAG_RELATIVE in the symlink reparse buffer.
const SYMLINK_FLAG_RELATIVE: u32 = 1;
/// FILE_ATTRIBUTE_ARCHIVE, which Windows sets on every new file.
const ATTR_ARCHIVE: u32 = 0x20;

/// How host files map onto the tree.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// FILETIME given to every node (host times are ignored so output is reproducible).
    pub time: u64,
    /// Store symbolic links as symlink reparse points; when false they are an error.
    pub symlinks: bool,
    /// Accept names that differ only in case (Linux folders often have them); see
    /// [`Tree::set_case_sensitive`].
    pub case_sensitive: bool,
    /// Refuse names Windows rejects; see [`Tree::set_windows_names`].
    pub windows_names: bool,
}

impl Tree {
    /// A tree holding everything under `dir` (which becomes the root).
    pub fn from_host_dir(dir: &Path, opts: &HostOptions) -> Result<Tree, Error> {
        let mut t = Tree::new(Meta::at(opts.time));
        t.set_case_sensitive(opts.case_sensitive);
        t.set_windows_names(opts.windows_names);
        let mut inodes: HashMap<(u64, u64), NodeId> = HashMap::new();
        t.add_host_children(Tree::ROOT, dir, opts, &mut inodes)?;
        Ok(t)
    }

    fn add_host_children(
        &mut self,
        parent: NodeId,
        dir: &Path,
        opts: &HostOptions,
        inodes: &mut HashMap<(u64, u64), NodeId>,
    ) -> Result<(), Error> {
        let host_err = |p: &Path, e| Error::Host {
            path: p.display().to_string(),
            source: e,
        };
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| host_err(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| host_err(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = e.file_name().into_string().map_err(|n| Error::BadName {
                path: dir.display().to_string(),
                name: n.to_string_lossy().into_owned(),
                why: "not valid UTF-8",
            })?;
            let md = fs::symlink_metadata(&path).map_err(|e| host_err(&path, e))?;
            let mut meta = Meta::at(opts.time);
            if md.is_dir() {
                meta.attributes = 0;
                let id = self.add_dir(parent, &name, meta)?;
                self.add_host_children(id, &path, opts, inodes)?;
            } else if md.file_type().is_symlink() {
                if !opts.symlinks {
                    return Err(Error::Invalid {
                        path: path.display().to_string(),
                        why: "symbolic links are not accepted unless stored as reparse points"
                            .into(),
                    });
                }
                let target = fs::read_link(&path).map_err(|e| host_err(&path, e))?;
                let target = target.to_string_lossy().replace('/', "\\");
                meta.attributes = ATTR_ARCHIVE;
                meta.reparse = Some(symlink_reparse(&target, !target.starts_with('\\')));
                self.add_file(parent, &name, meta, Content::Empty)?;
            } else if md.is_file() {
                #[cfg(unix)]
                let key = {
                    use std::os::unix::fs::MetadataExt;
                    (md.nlink() > 1).then(|| (md.dev(), md.ino()))
                };
                #[cfg(not(unix))]
                let key: Option<(u64, u64)> = None;
                if let Some(&existing) = key.as_ref().and_then(|k| inodes.get(k)) {
                    self.add_hard_link(existing, parent, &name, None)?;
                    continue;
                }
                meta.attributes = ATTR_ARCHIVE;
                let id = self.add_file(
                    parent,
                    &name,
                    meta,
                    Content::HostFile(path.clone(), md.len()),
                )?;
                if let Some(k) = key {
                    inodes.insert(k, id);
                }
            } else {
                return Err(Error::Invalid {
                    path: path.display().to_string(),
                    why: "only regular files, directories and symbolic links can be stored".into(),
                });
            }
        }
        Ok(())
    }
}

/// A symlink reparse buffer (MS-FSCC 2.1.2.4): substitute and print names both `target`.
pub fn symlink_reparse(target: &str, relative: bool) -> Reparse {
    let name: Vec<u8> = target
        .encode_utf16()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    let n = name.len() as u16;
    let mut data = Vec::new();
    data.extend_from_slice(&0u16.to_le_bytes()); // substitute name offset
    data.extend_from_slice(&n.to_le_bytes()); // substitute name length
    data.extend_from_slice(&n.to_le_bytes()); // print name offset
    data.extend_from_slice(&n.to_le_bytes()); // print name length
    let flags = if relative { SYMLINK_FLAG_RELATIVE } else { 0 };
    data.extend_from_slice(&flags.to_le_bytes());
    data.extend_from_slice(&name);
    data.extend_from_slice(&name);
    Reparse {
        tag: IO_REPARSE_TAG_SYMLINK,
        data,
    }
}
