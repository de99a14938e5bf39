//! Metadata resource of one image (F§5): the security data block (F§5.1), then the tree of
//! directory entries (F§5.2) with their tagged items (F§5.3) and extra stream entries
//! (F§5.4). The tree is walked with an explicit work list; each directory list offset may be
//! visited once, which rejects cycles and shared lists without recursion.

use super::resource::Wim;
use super::{hex, Error, Result, Sha1};
use std::collections::HashSet;

/// Fixed part of a dentry (F§5.2).
const DENTRY_FIXED: usize = 102;
/// Fixed part of an extra stream entry (F§5.4).
const STREAM_FIXED: usize = 38;
/// wimlib's cap on security descriptors per image (F§5.1).
const MAX_SECURITY_ENTRIES: u64 = 0x8000_0000;
/// Extra streams per dentry: the count field is 16 bits and wimlib caps streams per inode
/// below 0xFFFF (F§9).
const MAX_EXTRA_STREAMS: u16 = 0xFFFE;
/// Directory depth limit, as wimlib (F§9); paths deeper than this are not legitimate.
const MAX_DEPTH: usize = 16384;

pub const ATTR_DIRECTORY: u32 = 0x10;
pub const ATTR_REPARSE_POINT: u32 = 0x400;
pub const ATTR_ENCRYPTED: u32 = 0x4000;
/// Tagged item holding the NTFS object id (F§5.3).
const TAG_OBJECT_ID: u32 = 0x1;

/// What a stream of a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StreamKind {
    /// The unnamed data stream (file contents).
    Data,
    /// Reparse point data (without the 8-byte reparse header).
    Reparse,
    /// A named data stream.
    Named,
    /// Raw EFS backup data of an encrypted file.
    EfsRaw,
}

/// One stream of a dentry; a zero hash means empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stream {
    pub kind: StreamKind,
    pub name: Option<String>,
    #[serde(serialize_with = "ser_hash")]
    pub hash: Sha1,
}

fn ser_hash<S: serde::Serializer>(h: &Sha1, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex(h))
}

/// A directory entry with all its metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dentry {
    pub name: String,
    /// The name as stored (UTF-16 code units), for exact comparisons and ordering.
    #[serde(skip)]
    pub name_utf16: Vec<u16>,
    pub short_name: Option<String>,
    pub attributes: u32,
    pub security_id: Option<u32>,
    pub creation_time: u64,
    pub last_access_time: u64,
    pub last_write_time: u64,
    pub reparse_tag: Option<u32>,
    pub rp_reserved: u16,
    pub rp_flags: u16,
    /// Hard-link group (0 = not linked); entries sharing a non-zero id are one file.
    pub hard_link_group: u64,
    pub streams: Vec<Stream>,
    pub object_id: Option<Vec<u8>>,
    /// Index of the parent (the root is its own parent).
    pub parent: usize,
    /// Child indices, sorted by name as wimlib lists them.
    pub children: Vec<usize>,
    /// Offset of the dentry in the metadata resource.
    pub offset: u64,
}

impl Dentry {
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }

    pub fn is_reparse_point(&self) -> bool {
        self.attributes & ATTR_REPARSE_POINT != 0
    }

    fn stream(&self, kind: StreamKind) -> Option<&Stream> {
        self.streams.iter().find(|s| s.kind == kind)
    }

    /// Hash of the unnamed data stream (zero if empty or absent).
    pub fn data_hash(&self) -> Sha1 {
        self.stream(StreamKind::Data).map_or([0; 20], |s| s.hash)
    }

    /// Hash of the reparse data (zero if none).
    pub fn reparse_hash(&self) -> Sha1 {
        self.stream(StreamKind::Reparse).map_or([0; 20], |s| s.hash)
    }

    /// Named data streams.
    pub fn named_streams(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter().filter(|s| s.kind == StreamKind::Named)
    }
}

/// The directory tree and security descriptors of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageTree {
    pub index: usize,
    /// Self-relative SECURITY_DESCRIPTORs, verbatim, indexed by security id.
    pub security: Vec<Vec<u8>>,
    /// All entries; `entries[0]` is the root.
    pub entries: Vec<Dentry>,
}

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes([
        b[o],
        b[o + 1],
        b[o + 2],
        b[o + 3],
        b[o + 4],
        b[o + 5],
        b[o + 6],
        b[o + 7],
    ])
}

fn align8(x: u64) -> Option<u64> {
    x.checked_add(7).map(|v| v & !7)
}

/// A dentry as read, before stream interpretation and tree placement.
struct RawDentry {
    d: Dentry,
    subdir: u64,
    /// Offset just past the dentry and its stream entries.
    next: u64,
}

impl ImageTree {
    /// Parse a metadata resource whose SHA-1 was already checked.
    pub fn parse(buf: &[u8], index: usize) -> Result<ImageTree> {
        let err = |offset: u64, what: String| Error::Metadata {
            index,
            offset,
            what,
        };
        let len = buf.len() as u64;
        // Security data (F§5.1).
        if buf.len() < 8 {
            return Err(err(
                0,
                format!(
                    "{}-byte metadata cannot hold the security data header",
                    buf.len()
                ),
            ));
        }
        let total = u64::from(u32at(buf, 0));
        let total = if total == 0 { 8 } else { total };
        let n = u64::from(u32at(buf, 4));
        if total > len {
            return Err(err(
                0,
                format!("security data length {total} exceeds the {len}-byte metadata"),
            ));
        }
        if n > MAX_SECURITY_ENTRIES || 8 + 8 * n > total {
            return Err(err(
                4,
                format!("{n} security descriptors cannot fit in {total} bytes"),
            ));
        }
        let mut security = Vec::with_capacity(n as usize);
        let mut p = 8 + 8 * n;
        for i in 0..n {
            let size = u64at(buf, 8 + 8 * i as usize);
            let end = p.checked_add(size).filter(|&e| e <= total).ok_or_else(|| {
                err(
                    8 + 8 * i,
                    format!(
                        "security descriptor {i} of {size} bytes runs past the {total}-byte block"
                    ),
                )
            })?;
            security.push(buf[p as usize..end as usize].to_vec());
            p = end;
        }
        let root_at = align8(total)
            .filter(|&r| r <= len)
            .ok_or_else(|| err(0, "no room for the root".into()))?;

        let nsec = security.len();
        let read = |at: u64| -> Result<Option<RawDentry>> { read_dentry(buf, at, nsec, index) };
        let root =
            read(root_at)?.ok_or_else(|| err(root_at, "the root dentry is missing".into()))?;
        if !root.d.is_dir() {
            return Err(err(
                root_at,
                format!(
                    "the root is not a directory (attributes {:#x})",
                    root.d.attributes
                ),
            ));
        }
        let mut entries = vec![Dentry {
            name: String::new(),
            name_utf16: Vec::new(),
            ..root.d
        }];
        let mut work: Vec<(usize, u64, usize)> = vec![(0, root.subdir, 1)];
        let mut visited: HashSet<u64> = HashSet::new();
        while let Some((dir, list_at, depth)) = work.pop() {
            if list_at == 0 {
                continue;
            }
            if depth > MAX_DEPTH {
                return Err(err(
                    list_at,
                    format!("directories nest deeper than {MAX_DEPTH}"),
                ));
            }
            if !visited.insert(list_at) {
                return Err(err(
                    list_at,
                    format!(
                        "directory list of {} is already used elsewhere (a dentry cycle)",
                        path_of(&entries, dir)
                    ),
                ));
            }
            let mut at = list_at;
            let mut names: HashSet<Vec<u16>> = HashSet::new();
            let mut kids = Vec::new();
            while let Some(raw) = read(at)? {
                at = raw.next;
                let name = &raw.d.name_utf16;
                let bad = if name.is_empty() {
                    Some("is empty")
                } else if name == &[46] || name == &[46, 46] {
                    Some("is \".\" or \"..\"")
                } else if name.iter().any(|&c| c == 0 || c == 47 || c == 92) {
                    Some("contains '/', '\\' or NUL")
                } else {
                    None
                };
                if let Some(why) = bad {
                    return Err(err(
                        raw.d.offset,
                        format!("name {:?} in {} {why}", raw.d.name, path_of(&entries, dir)),
                    ));
                }
                if !names.insert(name.clone()) {
                    return Err(err(
                        raw.d.offset,
                        format!(
                            "name {:?} appears twice in {}",
                            raw.d.name,
                            path_of(&entries, dir)
                        ),
                    ));
                }
                let idx = entries.len();
                let is_dir = raw.d.is_dir();
                entries.push(Dentry {
                    parent: dir,
                    ..raw.d
                });
                kids.push(idx);
                if is_dir {
                    work.push((idx, raw.subdir, depth + 1));
                }
            }
            kids.sort_by(|&a, &b| entries[a].name_utf16.cmp(&entries[b].name_utf16));
            entries[dir].children = kids;
        }
        Ok(ImageTree {
            index,
            security,
            entries,
        })
    }

    /// Full path of entry `i`, `/`-separated and starting with `/` (the root is `/`).
    pub fn path(&self, i: usize) -> String {
        path_of(&self.entries, i)
    }

    /// Entry indices in wimlib's listing order (depth first, children by name).
    pub fn walk(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            out.push(i);
            stack.extend(self.entries[i].children.iter().rev());
        }
        out
    }

    /// Find an entry by path (`/a/b`).
    pub fn lookup(&self, path: &str) -> Option<usize> {
        let mut cur = 0usize;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            cur = *self.entries[cur]
                .children
                .iter()
                .find(|&&c| self.entries[c].name == comp)?;
        }
        Some(cur)
    }
}

fn path_of(entries: &[Dentry], mut i: usize) -> String {
    let mut parts = Vec::new();
    let mut guard = 0;
    while i != 0 && guard <= MAX_DEPTH {
        parts.push(entries[i].name.as_str());
        i = entries[i].parent;
        guard += 1;
    }
    if parts.is_empty() {
        return "/".into();
    }
    parts.reverse();
    let mut s = String::new();
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

fn utf16_units(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Read the dentry at `at`; `None` for the end-of-list marker.
fn read_dentry(buf: &[u8], at: u64, nsec: usize, index: usize) -> Result<Option<RawDentry>> {
    let err = |offset: u64, what: String| Error::Metadata {
        index,
        offset,
        what,
    };
    let len = buf.len() as u64;
    if at.checked_add(8).is_none_or(|e| e > len) {
        return Err(err(
            at,
            format!("directory list runs past the end of the {len}-byte metadata"),
        ));
    }
    let p = at as usize;
    let raw_len = u64at(buf, p);
    if raw_len == 0 {
        return Ok(None);
    }
    let dlen = align8(raw_len).ok_or_else(|| err(at, "dentry length overflows".into()))?;
    if dlen < DENTRY_FIXED as u64 || at.checked_add(dlen).is_none_or(|e| e > len) {
        return Err(err(
            at,
            format!(
                "dentry length {raw_len} is below {DENTRY_FIXED} or runs past the metadata end"
            ),
        ));
    }
    let d = &buf[p..p + dlen as usize];
    let attributes = u32at(d, 0x08);
    let sec = u32at(d, 0x0C) as i32;
    let security_id = if sec < 0 {
        None
    } else if (sec as usize) < nsec {
        Some(sec as u32)
    } else {
        return Err(err(
            at + 0x0C,
            format!("security id {sec} is out of range (the image has {nsec} descriptors)"),
        ));
    };
    let subdir = u64at(d, 0x10);
    let mut main_hash = [0u8; 20];
    main_hash.copy_from_slice(&d[0x40..0x54]);
    let is_reparse = attributes & ATTR_REPARSE_POINT != 0;
    let union = u64at(d, 0x58);
    let num_extra = u16at(d, 0x60);
    let short_nbytes = usize::from(u16at(d, 0x62));
    let name_nbytes = usize::from(u16at(d, 0x64));
    if !name_nbytes.is_multiple_of(2) || !short_nbytes.is_multiple_of(2) {
        return Err(err(
            at + 0x62,
            format!("odd name lengths ({name_nbytes}, {short_nbytes})"),
        ));
    }
    let mut q = DENTRY_FIXED;
    let name_u = if name_nbytes > 0 {
        let e = q + name_nbytes + 2;
        if e > d.len() {
            return Err(err(
                at,
                format!("name of {name_nbytes} bytes does not fit in the {dlen}-byte dentry"),
            ));
        }
        let u = utf16_units(&d[q..q + name_nbytes]);
        q = e;
        u
    } else {
        Vec::new()
    };
    let short_name = if short_nbytes > 0 {
        let e = q + short_nbytes + 2;
        if e > d.len() {
            return Err(err(
                at,
                format!("short name of {short_nbytes} bytes does not fit in the dentry"),
            ));
        }
        let s = String::from_utf16_lossy(&utf16_units(&d[q..q + short_nbytes]));
        q = e;
        Some(s)
    } else {
        None
    };
    // Tagged items (F§5.3) between the aligned end of the names and the dentry end.
    let mut object_id = None;
    let mut t = (q + 7) & !7;
    while t + 8 <= d.len() {
        let tag = u32at(d, t);
        let tlen = u32at(d, t + 4) as usize;
        let end = t + 8 + tlen;
        if end > d.len() {
            break;
        }
        if tag == TAG_OBJECT_ID && tlen > 0 {
            object_id = Some(d[t + 8..end].to_vec());
        }
        t = (end + 7) & !7;
    }
    // Extra stream entries (F§5.4).
    if num_extra > MAX_EXTRA_STREAMS {
        return Err(err(
            at + 0x60,
            format!("{num_extra} extra streams exceed {MAX_EXTRA_STREAMS}"),
        ));
    }
    let mut s_at = at + dlen;
    let mut extra: Vec<(Option<String>, Sha1)> = Vec::with_capacity(usize::from(num_extra));
    for _ in 0..num_extra {
        if s_at
            .checked_add(STREAM_FIXED as u64)
            .is_none_or(|e| e > len)
        {
            return Err(err(
                s_at,
                "stream entry runs past the end of the metadata".into(),
            ));
        }
        let sp = s_at as usize;
        let slen = align8(u64at(buf, sp)).unwrap_or(u64::MAX);
        if slen < STREAM_FIXED as u64 || s_at.checked_add(slen).is_none_or(|e| e > len) {
            return Err(err(
                s_at,
                format!("stream entry length {slen} is below {STREAM_FIXED} or runs past the end"),
            ));
        }
        let mut h = [0u8; 20];
        h.copy_from_slice(&buf[sp + 0x10..sp + 0x24]);
        let nb = usize::from(u16at(buf, sp + 0x24));
        if !nb.is_multiple_of(2) || (STREAM_FIXED + nb) as u64 > slen {
            return Err(err(
                s_at,
                format!("stream name of {nb} bytes does not fit in the {slen}-byte entry"),
            ));
        }
        let name = if nb > 0 {
            let u = utf16_units(&buf[sp + STREAM_FIXED..sp + STREAM_FIXED + nb]);
            if u.contains(&0) {
                return Err(err(s_at, "stream name contains NUL".into()));
            }
            Some(String::from_utf16_lossy(&u))
        } else {
            None
        };
        extra.push((name, h));
        s_at += slen;
    }
    let streams = assign_streams(attributes, main_hash, extra);
    let name = String::from_utf16_lossy(&name_u);
    Ok(Some(RawDentry {
        d: Dentry {
            name,
            name_utf16: name_u,
            short_name,
            attributes,
            security_id,
            creation_time: u64at(d, 0x28),
            last_access_time: u64at(d, 0x30),
            last_write_time: u64at(d, 0x38),
            reparse_tag: is_reparse.then_some(u32at(d, 0x58)),
            rp_reserved: if is_reparse { u16at(d, 0x5C) } else { 0 },
            rp_flags: if is_reparse { u16at(d, 0x5E) } else { 0 },
            hard_link_group: if is_reparse { 0 } else { union },
            streams,
            object_id,
            parent: 0,
            children: Vec::new(),
            offset: at,
        },
        subdir,
        next: s_at,
    }))
}

/// Interpret main hash + extra entries as streams, by wimlib's (= DISM's) rules (F§5.4).
fn assign_streams(
    attributes: u32,
    main_hash: Sha1,
    extra: Vec<(Option<String>, Sha1)>,
) -> Vec<Stream> {
    let mut unnamed: Vec<Sha1> = Vec::new();
    if main_hash != [0; 20] {
        unnamed.push(main_hash);
    }
    let mut named = Vec::new();
    for (name, h) in extra {
        match name {
            Some(n) => named.push(Stream {
                kind: StreamKind::Named,
                name: Some(n),
                hash: h,
            }),
            None => unnamed.push(h),
        }
    }
    let mut out = Vec::new();
    let mut it = unnamed.into_iter();
    if attributes & ATTR_ENCRYPTED != 0 {
        if let Some(h) = it.next() {
            out.push(Stream {
                kind: StreamKind::EfsRaw,
                name: None,
                hash: h,
            });
        }
    } else {
        if attributes & ATTR_REPARSE_POINT != 0 {
            out.push(Stream {
                kind: StreamKind::Reparse,
                name: None,
                hash: it.next().unwrap_or([0; 20]),
            });
        }
        if let Some(h) = it.next() {
            out.push(Stream {
                kind: StreamKind::Data,
                name: None,
                hash: h,
            });
        }
    }
    out.extend(named);
    out
}

/// Paths in an image as `wimlib-imagex dir` lists them; `detailed` adds one line of
/// metadata per entry.
pub(crate) fn dir_lines(tree: &ImageTree, wim: &Wim, detailed: bool) -> Vec<String> {
    let mut out = Vec::new();
    for i in tree.walk() {
        let p = tree.path(i);
        if !detailed {
            out.push(p);
            continue;
        }
        let d = &tree.entries[i];
        let mut line = format!(
            "{p}\tattributes={:#010x} security_id={} short_name={:?} created={} written={} accessed={} link_group={:#x}",
            d.attributes,
            d.security_id.map_or("none".to_string(), |s| s.to_string()),
            d.short_name.as_deref().unwrap_or(""),
            d.creation_time,
            d.last_write_time,
            d.last_access_time,
            d.hard_link_group
        );
        if let Some(tag) = d.reparse_tag {
            line.push_str(&format!(" reparse_tag={tag:#010x}"));
        }
        for s in &d.streams {
            let size = wim.blob_size(&s.hash).unwrap_or(0);
            line.push_str(&format!(
                " stream[{:?}{}]={} ({size} bytes)",
                s.kind,
                s.name
                    .as_deref()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default(),
                hex(&s.hash)
            ));
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a dentry with the given name, attributes and subdir offset.
    pub(crate) fn dentry(name: &str, attributes: u32, subdir: u64) -> Vec<u8> {
        let n: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut d = vec![0u8; DENTRY_FIXED];
        d[0x08..0x0C].copy_from_slice(&attributes.to_le_bytes());
        d[0x0C..0x10].copy_from_slice(&(-1i32).to_le_bytes());
        d[0x10..0x18].copy_from_slice(&subdir.to_le_bytes());
        d[0x64..0x66].copy_from_slice(&(n.len() as u16).to_le_bytes());
        if !n.is_empty() {
            d.extend_from_slice(&n);
            d.extend_from_slice(&[0, 0]);
        }
        while !d.len().is_multiple_of(8) {
            d.push(0);
        }
        let l = d.len() as u64;
        d[..8].copy_from_slice(&l.to_le_bytes());
        d
    }

    /// Security block (empty) + root + terminator + root's list at `list`.
    fn image(children: &[Vec<u8>], root_subdir: Option<u64>) -> Vec<u8> {
        let mut b = vec![8, 0, 0, 0, 0, 0, 0, 0];
        let root_len = dentry("", ATTR_DIRECTORY, 0).len() as u64;
        let list = 8 + root_len + 8;
        b.extend(dentry("", ATTR_DIRECTORY, root_subdir.unwrap_or(list)));
        b.extend([0u8; 8]);
        for c in children {
            b.extend(c);
        }
        b.extend([0u8; 8]);
        b
    }

    fn parse(b: &[u8]) -> Result<ImageTree> {
        ImageTree::parse(b, 1)
    }

    #[test]
    fn parses_small_tree() {
        let t = parse(&image(&[dentry("b", 0x80, 0), dentry("a", 0x80, 0)], None)).unwrap();
        assert_eq!(t.entries.len(), 3);
        let w: Vec<String> = t.walk().iter().map(|&i| t.path(i)).collect();
        assert_eq!(w, ["/", "/a", "/b"]);
    }

    #[test]
    fn rejects_bad_names_duplicates_and_cycles() {
        assert!(parse(&image(&[dentry("..", 0x80, 0)], None)).is_err());
        assert!(parse(&image(&[dentry("a/b", 0x80, 0)], None)).is_err());
        assert!(parse(&image(&[dentry("a", 0x80, 0), dentry("a", 0x80, 0)], None)).is_err());
        // A directory whose list is the root's own list: a cycle.
        let root_len = dentry("", ATTR_DIRECTORY, 0).len() as u64;
        let list = 8 + root_len + 8;
        let e = parse(&image(&[dentry("d", ATTR_DIRECTORY, list)], None)).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }
}
