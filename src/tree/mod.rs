//! The volume tree: an in-memory model of an NTFS volume's files whose contents are
//! references ([`Content`]), built by sources (a host folder, a WIM, code) and turned into
//! a volume by `formats::ntfs`.
//!
//! Model (docs/architecture.md): a file object ([`Node`]) holds metadata and streams; it is
//! reachable through one or more links (parent directory, long name, optional DOS 8.3
//! name). Directories have exactly one link, the root none. Security descriptors live once
//! in a table and nodes refer to them by [`SecurityId`]. Name rules follow NTFS
//! (docs/facts-ntfs.md §8): names are checked when they are added, so the writer never
//! meets a bad one.

pub mod content;
pub mod host;
pub mod upcase;
pub mod wim;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

pub use content::{Content, ContentSource};

/// Longest file or stream name NTFS stores, in UTF-16 code units ($FILE_NAME length is u8).
pub const MAX_NAME_UNITS: usize = 255;
/// Largest $REPARSE_POINT value, header included ($AttrDef maximum, facts §2.5).
pub const MAX_REPARSE_BYTES: usize = 16 * 1024;
/// Most hard links NTFS allows on one file (Windows' limit; each is a $FILE_NAME).
pub const MAX_LINKS: usize = 1024;
/// Largest self-relative security descriptor we accept: $SDS entries must fit inside one
/// 256 KiB block (facts §2.7), and Windows caps descriptors at 64 KiB.
pub const MAX_SECURITY_DESCRIPTOR: usize = 65535;

/// FILE_ATTRIBUTE_DIRECTORY, implied by a directory node and never stored in $STANDARD_INFORMATION.
pub const ATTR_DIRECTORY: u32 = 0x10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid name {name:?} at {path}: {why}; rename it before building the volume")]
    BadName {
        path: String,
        name: String,
        why: &'static str,
    },
    #[error("{path} already exists (names are compared case-insensitively with the NTFS upcase table); rename one of them")]
    Exists { path: String },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
    #[error("no such directory {path}")]
    NotFound { path: String },
    #[error("{path} is not a directory")]
    NotDir { path: String },
    #[error("cannot read host path {path}: {source}")]
    Host {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Index of a file object in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Index of a security descriptor in the tree's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecurityId(pub u32);

/// A reparse point: the tag and everything after the 8-byte header (for non-Microsoft
/// tags, that includes the 16-byte GUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reparse {
    pub tag: u32,
    pub data: Vec<u8>,
}

/// Metadata of a file object. Times are FILETIMEs (100 ns since 1601, UTC).
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// FILE_ATTRIBUTE_* bits. DIRECTORY (0x10) is derived from the node kind.
    pub attributes: u32,
    pub creation_time: u64,
    pub last_write_time: u64,
    pub mft_change_time: u64,
    pub last_access_time: u64,
    pub security: Option<SecurityId>,
    pub object_id: Option<[u8; 16]>,
    pub reparse: Option<Reparse>,
}

impl Meta {
    /// All four times set to `t`.
    pub fn at(t: u64) -> Meta {
        Meta {
            creation_time: t,
            last_write_time: t,
            mft_change_time: t,
            last_access_time: t,
            ..Meta::default()
        }
    }
}

/// A data stream: its bytes, and for sparse files the byte ranges that hold data (the rest
/// reads as zeros and takes no clusters).
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub content: Content,
    pub sparse: Option<Vec<std::ops::Range<u64>>>,
}

impl From<Content> for Stream {
    fn from(content: Content) -> Self {
        Stream {
            content,
            sparse: None,
        }
    }
}

/// Which $FILE_NAME name space an index entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameSpace {
    Posix = 0,
    Win32 = 1,
    Dos = 2,
    Win32AndDos = 3,
}

/// One name in a directory: the child it names and its name space.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry {
    pub node: NodeId,
    pub space: NameSpace,
}

/// One link of a file object: parent, long name, optional distinct DOS name.
#[derive(Debug, Clone)]
pub struct Link {
    pub parent: NodeId,
    pub name: Vec<u16>,
    pub dos_name: Option<Vec<u16>>,
}

impl Link {
    /// Name spaces of this link's $FILE_NAME attributes.
    pub fn spaces(&self) -> Vec<(NameSpace, &[u16])> {
        match &self.dos_name {
            None => vec![(NameSpace::Posix, &self.name[..])],
            Some(d) if *d == upcase::upcase(&self.name) => {
                vec![(NameSpace::Win32AndDos, &self.name[..])]
            }
            Some(d) => vec![(NameSpace::Win32, &self.name[..]), (NameSpace::Dos, &d[..])],
        }
    }
}

/// A file object.
#[derive(Debug, Clone)]
pub struct Node {
    pub is_dir: bool,
    pub meta: Meta,
    /// The unnamed $DATA stream (always empty for directories).
    pub data: Stream,
    /// Named $DATA streams, by name.
    pub streams: BTreeMap<String, Stream>,
    pub links: Vec<Link>,
    /// Directory entries keyed by (upcased name, name): iteration order is the NTFS
    /// collation order. DOS names of Win32+DOS pairs have their own entries.
    children: BTreeMap<(Vec<u16>, Vec<u16>), DirEntry>,
}

impl Node {
    fn new(is_dir: bool, meta: Meta) -> Node {
        Node {
            is_dir,
            meta,
            data: Stream::default(),
            streams: BTreeMap::new(),
            links: Vec::new(),
            children: BTreeMap::new(),
        }
    }

    /// Directory entries in NTFS collation order: (name, entry).
    pub fn entries(&self) -> impl Iterator<Item = (&[u16], &DirEntry)> {
        self.children.iter().map(|((_, n), e)| (&n[..], e))
    }

    pub fn entry_count(&self) -> usize {
        self.children.len()
    }
}

/// The tree.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    security: Vec<Arc<[u8]>>,
    security_lookup: HashMap<Arc<[u8]>, SecurityId>,
    case_sensitive: bool,
    windows_names: bool,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new(Meta::default())
    }
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn show(n: &[u16]) -> String {
    String::from_utf16_lossy(n)
}

/// Check a long (POSIX/Win32) name: non-empty, ≤ 255 units, none of NUL / \ :, not . or ..
pub fn check_name(name: &[u16]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_UNITS {
        return Err("longer than 255 UTF-16 code units");
    }
    if name == [u16::from(b'.')] || name == [u16::from(b'.'), u16::from(b'.')] {
        return Err("'.' and '..' are not names");
    }
    for &c in name {
        match c {
            0 => return Err("contains NUL"),
            0x2F => return Err("contains '/'"),
            0x5C => return Err("contains '\\'"),
            0x3A => return Err("contains ':' (the stream separator)"),
            _ => {}
        }
    }
    Ok(())
}

/// Why Windows would reject `name` even in the POSIX name space, if it would: chkdsk
/// renames or moves such files (docs/facts-ntfs.md §8, chkdsk pitfall 2).
pub fn windows_name_problem(name: &[u16]) -> Option<&'static str> {
    if name.iter().any(|&c| c < 0x20) {
        return Some("contains a control character");
    }
    if name
        .iter()
        .any(|&c| matches!(c, 0x22 | 0x2A | 0x3C | 0x3E | 0x3F | 0x7C))
    {
        return Some("contains one of \" * < > ? |");
    }
    if matches!(name.last(), Some(0x20 | 0x2E)) {
        return Some("ends with a space or a dot");
    }
    let s = String::from_utf16_lossy(name).to_ascii_uppercase();
    let stem = s.split('.').next().unwrap_or("").trim_end();
    const DEVICES: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];
    let numbered = |p: &str| {
        stem.len() == 4
            && stem.starts_with(p)
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0'
    };
    if DEVICES.contains(&stem) || numbered("COM") || numbered("LPT") {
        return Some("is a DOS device name");
    }
    None
}

/// Check a DOS 8.3 name: 1–8 characters, optional '.' and 1–3 more, upper case, no
/// characters DOS forbids.
pub fn check_dos_name(name: &[u16]) -> Result<(), &'static str> {
    let s = String::from_utf16(name).map_err(|_| "not valid UTF-16")?;
    let (base, ext) = match s.split_once('.') {
        Some((b, e)) => (b, Some(e)),
        None => (&s[..], None),
    };
    if base.is_empty() || base.chars().count() > 8 {
        return Err("8.3 base name must be 1 to 8 characters");
    }
    if let Some(e) = ext {
        if e.is_empty() || e.chars().count() > 3 || e.contains('.') {
            return Err("8.3 extension must be 1 to 3 characters after a single '.'");
        }
    }
    for c in s.chars() {
        if (c as u32) <= 0x20 || "\"*+,/:;<=>?[\\]|".contains(c) || (c as u32) > 0xFFFF {
            return Err("character not allowed in an 8.3 name");
        }
    }
    if name != upcase::upcase(name).as_slice() {
        return Err("8.3 names are upper case");
    }
    Ok(())
}

impl Tree {
    /// An empty tree whose root directory has `root_meta`.
    pub fn new(root_meta: Meta) -> Tree {
        Tree {
            nodes: vec![Node::new(true, root_meta)],
            security: Vec::new(),
            security_lookup: HashMap::new(),
            case_sensitive: false,
            windows_names: false,
        }
    }

    /// Allow names that differ only in case in one directory (stored in the POSIX name
    /// space). Off by default: Windows treats such names as duplicates.
    pub fn set_case_sensitive(&mut self, on: bool) {
        self.case_sensitive = on;
    }

    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    /// Also refuse names that are valid NTFS but that Windows rejects ([`windows_name_problem`]).
    /// Off by default; worth turning on for trees built from host folders.
    pub fn set_windows_names(&mut self, on: bool) {
        self.windows_names = on;
    }

    pub const ROOT: NodeId = NodeId(0);

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i), n))
    }

    /// The deduplicated descriptor table, indexed by [`SecurityId`].
    pub fn security_descriptors(&self) -> &[Arc<[u8]>] {
        &self.security
    }

    /// Add a self-relative security descriptor (or find an identical one).
    pub fn add_security(&mut self, sd: &[u8]) -> Result<SecurityId, Error> {
        if let Some(id) = self.security_lookup.get(sd) {
            return Ok(*id);
        }
        if sd.len() < 20 || sd.len() > MAX_SECURITY_DESCRIPTOR || sd[0] != 1 {
            return Err(Error::Invalid {
                path: "<security descriptor>".into(),
                why: format!(
                    "a self-relative descriptor of revision 1 and 20..={MAX_SECURITY_DESCRIPTOR} bytes is required, got {} bytes",
                    sd.len()
                ),
            });
        }
        let id = SecurityId(self.security.len() as u32);
        let a: Arc<[u8]> = sd.into();
        self.security.push(a.clone());
        self.security_lookup.insert(a, id);
        Ok(id)
    }

    /// Backslash path of a node (its first link), for messages.
    pub fn path_of(&self, id: NodeId) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        while let Some(l) = self.nodes[cur.0].links.first() {
            parts.push(show(&l.name));
            cur = l.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        format!("\\{}", parts.join("\\"))
    }

    fn child_path(&self, parent: NodeId, name: &[u16]) -> String {
        let p = self.path_of(parent);
        if p == "\\" {
            format!("\\{}", show(name))
        } else {
            format!("{p}\\{}", show(name))
        }
    }

    /// Find a child by name (case-insensitive; in a case-sensitive tree an exact match wins).
    pub fn child(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        let n = utf16(name);
        let up = upcase::upcase(&n);
        let dir = &self.nodes[parent.0];
        if let Some(e) = dir.children.get(&(up.clone(), n)) {
            return Some(e.node);
        }
        dir.children
            .range((up.clone(), Vec::new())..)
            .next()
            .filter(|((u, _), _)| *u == up)
            .map(|(_, e)| e.node)
    }

    /// Look up a path ('\\' or '/' separated) from the root.
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut cur = Tree::ROOT;
        for part in path.split(['\\', '/']).filter(|p| !p.is_empty()) {
            cur = self.child(cur, part)?;
        }
        Some(cur)
    }

    fn name_taken(&self, parent: NodeId, name: &[u16], exact_only: bool) -> bool {
        let up = upcase::upcase(name);
        let dir = &self.nodes[parent.0];
        if exact_only {
            // Case-sensitive tree: a same-case duplicate, or a DOS name equal ignoring case.
            dir.children.contains_key(&(up.clone(), name.to_vec()))
                || dir
                    .children
                    .range((up.clone(), Vec::new())..)
                    .take_while(|((u, _), _)| *u == up)
                    .any(|(_, e)| e.space == NameSpace::Dos)
        } else {
            dir.children
                .range((up.clone(), Vec::new())..)
                .next()
                .is_some_and(|((u, _), _)| *u == up)
        }
    }

    fn check_new_link(
        &self,
        parent: NodeId,
        name: &[u16],
        dos_name: Option<&[u16]>,
    ) -> Result<(), Error> {
        let pnode = &self.nodes[parent.0];
        if !pnode.is_dir {
            return Err(Error::NotDir {
                path: self.path_of(parent),
            });
        }
        check_name(name).map_err(|why| Error::BadName {
            path: self.path_of(parent),
            name: show(name),
            why,
        })?;
        if self.windows_names {
            if let Some(why) = windows_name_problem(name) {
                return Err(Error::BadName {
                    path: self.path_of(parent),
                    name: show(name),
                    why,
                });
            }
        }
        if let Some(d) = dos_name {
            check_dos_name(d).map_err(|why| Error::BadName {
                path: self.child_path(parent, name),
                name: show(d),
                why,
            })?;
            if self.case_sensitive && d != upcase::upcase(name).as_slice() {
                // A separate DOS name must not collide with any name ignoring case.
                if self.name_taken(parent, d, false) {
                    return Err(Error::Exists {
                        path: self.child_path(parent, d),
                    });
                }
            }
        }
        let exact = self.case_sensitive && dos_name.is_none();
        if self.name_taken(parent, name, exact) {
            return Err(Error::Exists {
                path: self.child_path(parent, name),
            });
        }
        if let Some(d) = dos_name {
            if d != name && self.name_taken(parent, d, false) {
                return Err(Error::Exists {
                    path: self.child_path(parent, d),
                });
            }
            if d != upcase::upcase(name).as_slice() && upcase::upcase(d) == upcase::upcase(name) {
                return Err(Error::Invalid {
                    path: self.child_path(parent, name),
                    why: "the DOS name equals the long name ignoring case but is not its upper-case form".into(),
                });
            }
        }
        Ok(())
    }

    fn insert_link(&mut self, parent: NodeId, node: NodeId, name: Vec<u16>, dos: Option<Vec<u16>>) {
        let link = Link {
            parent,
            name,
            dos_name: dos,
        };
        for (space, n) in link.spaces() {
            self.nodes[parent.0]
                .children
                .insert((upcase::upcase(n), n.to_vec()), DirEntry { node, space });
        }
        self.nodes[node.0].links.push(link);
    }

    fn add_node(
        &mut self,
        parent: NodeId,
        name: &str,
        dos_name: Option<&str>,
        is_dir: bool,
        meta: Meta,
    ) -> Result<NodeId, Error> {
        let d = dos_name.map(utf16);
        self.add_utf16(parent, &utf16(name), d.as_deref(), is_dir, meta)
    }

    /// Add a file or directory named in UTF-16, as WIM images and NTFS store names (so
    /// names that are not valid Unicode survive unchanged).
    pub fn add_utf16(
        &mut self,
        parent: NodeId,
        name: &[u16],
        dos_name: Option<&[u16]>,
        is_dir: bool,
        meta: Meta,
    ) -> Result<NodeId, Error> {
        self.check_new_link(parent, name, dos_name)?;
        self.check_meta(&meta, || self.child_path(parent, name))?;
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node::new(is_dir, meta));
        self.insert_link(parent, id, name.to_vec(), dos_name.map(<[u16]>::to_vec));
        Ok(id)
    }

    /// `path` is only built when something is wrong.
    fn check_meta(&self, meta: &Meta, path: impl Fn() -> String) -> Result<(), Error> {
        if let Some(r) = &meta.reparse {
            if r.data.len() + 8 > MAX_REPARSE_BYTES {
                return Err(Error::Invalid {
                    path: path(),
                    why: format!(
                        "reparse data of {} bytes exceeds the NTFS limit of {} bytes including the 8-byte header",
                        r.data.len(),
                        MAX_REPARSE_BYTES
                    ),
                });
            }
        }
        if let Some(s) = meta.security {
            if s.0 as usize >= self.security.len() {
                return Err(Error::Invalid {
                    path: path(),
                    why: format!("security id {} is not in the tree's table", s.0),
                });
            }
        }
        Ok(())
    }

    /// Add a directory.
    pub fn add_dir(&mut self, parent: NodeId, name: &str, meta: Meta) -> Result<NodeId, Error> {
        self.add_node(parent, name, None, true, meta)
    }

    /// Add a regular file with unnamed data.
    pub fn add_file(
        &mut self,
        parent: NodeId,
        name: &str,
        meta: Meta,
        data: impl Into<Stream>,
    ) -> Result<NodeId, Error> {
        let id = self.add_node(parent, name, None, false, meta)?;
        self.set_data(id, data)?;
        Ok(id)
    }

    /// Add a file or directory with an explicit DOS (8.3) name.
    pub fn add_with_dos_name(
        &mut self,
        parent: NodeId,
        name: &str,
        dos_name: &str,
        is_dir: bool,
        meta: Meta,
    ) -> Result<NodeId, Error> {
        self.add_node(parent, name, Some(dos_name), is_dir, meta)
    }

    /// Replace a file's unnamed data.
    pub fn set_data(&mut self, id: NodeId, data: impl Into<Stream>) -> Result<(), Error> {
        let s: Stream = data.into();
        if self.nodes[id.0].is_dir && !s.content.is_empty() {
            return Err(Error::Invalid {
                path: self.path_of(id),
                why: "a directory has no unnamed data".into(),
            });
        }
        check_sparse(&s, || self.path_of(id))?;
        self.nodes[id.0].data = s;
        Ok(())
    }

    /// Add a named data stream.
    pub fn add_stream(
        &mut self,
        id: NodeId,
        name: &str,
        data: impl Into<Stream>,
    ) -> Result<(), Error> {
        let n = utf16(name);
        let path = self.path_of(id);
        check_name(&n).map_err(|why| Error::BadName {
            path: path.clone(),
            name: name.into(),
            why,
        })?;
        let s: Stream = data.into();
        check_sparse(&s, || path.clone())?;
        let node = &mut self.nodes[id.0];
        if node
            .streams
            .keys()
            .any(|k| upcase::upcase(&utf16(k)) == upcase::upcase(&n))
        {
            return Err(Error::Exists {
                path: format!("{path}:{name}"),
            });
        }
        node.streams.insert(name.to_string(), s);
        Ok(())
    }

    /// Set metadata after checking it.
    pub fn set_meta(&mut self, id: NodeId, meta: Meta) -> Result<(), Error> {
        self.check_meta(&meta, || self.path_of(id))?;
        self.nodes[id.0].meta = meta;
        Ok(())
    }

    /// Add another name for an existing file (a hard link). Directories cannot be linked.
    pub fn add_hard_link(
        &mut self,
        target: NodeId,
        parent: NodeId,
        name: &str,
        dos_name: Option<&str>,
    ) -> Result<(), Error> {
        let d = dos_name.map(utf16);
        self.add_hard_link_utf16(target, parent, &utf16(name), d.as_deref())
    }

    /// [`Tree::add_hard_link`] with UTF-16 names.
    pub fn add_hard_link_utf16(
        &mut self,
        target: NodeId,
        parent: NodeId,
        name: &[u16],
        dos_name: Option<&[u16]>,
    ) -> Result<(), Error> {
        if self.nodes[target.0].is_dir {
            return Err(Error::Invalid {
                path: self.path_of(target),
                why: "directories cannot have hard links".into(),
            });
        }
        self.check_new_link(parent, name, dos_name)?;
        let count: usize = self.nodes[target.0]
            .links
            .iter()
            .map(|l| l.spaces().len())
            .sum::<usize>()
            + if dos_name.is_some() { 2 } else { 1 };
        if count > MAX_LINKS {
            return Err(Error::Invalid {
                path: self.path_of(target),
                why: format!("more than {MAX_LINKS} names on one file"),
            });
        }
        self.insert_link(parent, target, name.to_vec(), dos_name.map(<[u16]>::to_vec));
        Ok(())
    }

    /// Make sure a directory path exists, creating missing directories with `meta`.
    pub fn mkdir_p(&mut self, path: &str, meta: &Meta) -> Result<NodeId, Error> {
        let mut cur = Tree::ROOT;
        for part in path.split(['\\', '/']).filter(|p| !p.is_empty()) {
            cur = match self.child(cur, part) {
                Some(c) if self.nodes[c.0].is_dir => c,
                Some(c) => {
                    return Err(Error::NotDir {
                        path: self.path_of(c),
                    })
                }
                None => self.add_dir(cur, part, meta.clone())?,
            };
        }
        Ok(cur)
    }

    /// Put every child of `other`'s root under directory `path` of this tree (created if
    /// missing, with `other`'s root metadata). Hard-link groups and descriptors carry over;
    /// any name that already exists is an error, and on error this tree is unchanged.
    pub fn graft(&mut self, path: &str, other: &Tree) -> Result<NodeId, Error> {
        let mut staged = self.clone();
        let at = staged.graft_inner(path, other)?;
        *self = staged;
        Ok(at)
    }

    fn graft_inner(&mut self, path: &str, other: &Tree) -> Result<NodeId, Error> {
        let mut sd_map = Vec::new();
        for sd in &other.security {
            sd_map.push(self.add_security(sd)?);
        }
        let remap = |m: &Meta| -> Meta {
            let mut m = m.clone();
            m.security = m.security.map(|s| sd_map[s.0 as usize]);
            m
        };
        let existed = self.lookup(path).is_some();
        let at = self.mkdir_p(path, &remap(&other.nodes[0].meta))?;
        if !existed {
            self.nodes[at.0].meta = remap(&other.nodes[0].meta);
        }
        let mut map: HashMap<usize, NodeId> = HashMap::new();
        map.insert(0, at);
        // Walk `other` depth first in collation order, so new ids are deterministic.
        let mut stack = vec![NodeId(0)];
        while let Some(dir) = stack.pop() {
            let entries: Vec<(Vec<u16>, DirEntry)> = other.nodes[dir.0]
                .entries()
                .map(|(n, e)| (n.to_vec(), *e))
                .collect();
            for (name, e) in entries.iter().rev() {
                if e.space == NameSpace::Dos {
                    continue;
                }
                let src = &other.nodes[e.node.0];
                let link = src
                    .links
                    .iter()
                    .find(|l| l.parent == dir && l.name == *name)
                    .cloned()
                    .ok_or_else(|| Error::Invalid {
                        path: other.path_of(e.node),
                        why: "directory entry without a matching link".into(),
                    })?;
                let parent = map[&dir.0];
                self.check_new_link(parent, &link.name, link.dos_name.as_deref())?;
                if let Some(&existing) = map.get(&e.node.0) {
                    self.insert_link(parent, existing, link.name, link.dos_name);
                    continue;
                }
                let id = NodeId(self.nodes.len());
                let mut n = Node::new(src.is_dir, remap(&src.meta));
                n.data = src.data.clone();
                n.streams = src.streams.clone();
                self.nodes.push(n);
                self.insert_link(parent, id, link.name, link.dos_name);
                map.insert(e.node.0, id);
                if src.is_dir {
                    stack.push(e.node);
                }
            }
        }
        Ok(at)
    }
}

/// `path` is only built when something is wrong.
fn check_sparse(s: &Stream, path: impl Fn() -> String) -> Result<(), Error> {
    if let Some(r) = &s.sparse {
        let len = s.content.len();
        let mut prev = 0;
        for range in r {
            if range.start < prev || range.end < range.start || range.end > len {
                return Err(Error::Invalid {
                    path: path(),
                    why: format!(
                        "sparse data ranges must be sorted, disjoint and inside the {len}-byte stream; got {range:?}"
                    ),
                });
            }
            prev = range.end;
        }
    }
    Ok(())
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_duplicates_found_ignoring_case() {
        let mut t = Tree::default();
        let d = t.add_dir(Tree::ROOT, "Windows", Meta::default()).unwrap();
        assert!(matches!(
            t.add_dir(Tree::ROOT, "WINDOWS", Meta::default()),
            Err(Error::Exists { .. })
        ));
        for bad in ["a/b", "a\\b", "a:b", "a\0b", "", ".", ".."] {
            assert!(
                matches!(
                    t.add_file(d, bad, Meta::default(), Content::Empty),
                    Err(Error::BadName { .. })
                ),
                "{bad:?}"
            );
        }
        let long: String = "x".repeat(256);
        assert!(t
            .add_file(d, &long, Meta::default(), Content::Empty)
            .is_err());
        t.add_file(d, &"x".repeat(255), Meta::default(), Content::Empty)
            .unwrap();
        assert_eq!(t.lookup("windows").unwrap(), d);
    }

    #[test]
    fn utf16_names_keep_unpaired_surrogates() {
        let mut t = Tree::default();
        let odd = [0x0061u16, 0xD800, 0x0062];
        let id = t
            .add_utf16(Tree::ROOT, &odd, None, false, Meta::default())
            .unwrap();
        assert_eq!(t.node(id).links[0].name, odd);
        assert!(t
            .add_utf16(
                Tree::ROOT,
                &[0x0041, 0xD800, 0x0042],
                None,
                false,
                Meta::default()
            )
            .is_err());
        assert!(t
            .add_utf16(Tree::ROOT, &[0x0061, 0x003A], None, false, Meta::default())
            .is_err());
    }

    #[test]
    fn windows_name_rules_are_opt_in() {
        let n = |s: &str| s.encode_utf16().collect::<Vec<_>>();
        for bad in [
            "a?", "a*b", "x<", "pipe|", "quote\"", "dot.", "space ", "CON", "aux.txt", "Com1.log",
            "lpt9", "tab\t",
        ] {
            assert!(windows_name_problem(&n(bad)).is_some(), "{bad:?}");
        }
        for good in [
            "console",
            "com0",
            "COM10",
            "auxiliary.txt",
            "a.b",
            ".profile",
            "😀",
        ] {
            assert_eq!(windows_name_problem(&n(good)), None, "{good:?}");
        }
        let mut t = Tree::default();
        t.add_file(Tree::ROOT, "what?", Meta::default(), Content::Empty)
            .unwrap();
        t.set_windows_names(true);
        assert!(matches!(
            t.add_file(Tree::ROOT, "why?", Meta::default(), Content::Empty),
            Err(Error::BadName { .. })
        ));
    }

    #[test]
    fn case_sensitive_trees_keep_both_names() {
        let mut t = Tree::default();
        t.set_case_sensitive(true);
        t.add_file(Tree::ROOT, "abc", Meta::default(), Content::Empty)
            .unwrap();
        t.add_file(Tree::ROOT, "ABC", Meta::default(), Content::Empty)
            .unwrap();
        assert!(t
            .add_file(Tree::ROOT, "abc", Meta::default(), Content::Empty)
            .is_err());
        let names: Vec<String> = t.node(Tree::ROOT).entries().map(|(n, _)| show(n)).collect();
        assert_eq!(names, ["ABC", "abc"]);
    }

    #[test]
    fn dos_names_pair_or_collapse() {
        let mut t = Tree::default();
        let a = t
            .add_with_dos_name(
                Tree::ROOT,
                "Program Files",
                "PROGRA~1",
                true,
                Meta::default(),
            )
            .unwrap();
        let b = t
            .add_with_dos_name(Tree::ROOT, "Boot.ini", "BOOT.INI", false, Meta::default())
            .unwrap();
        assert!(t
            .add_with_dos_name(Tree::ROOT, "x", "progra~1", false, Meta::default())
            .is_err());
        assert!(t
            .add_with_dos_name(
                Tree::ROOT,
                "Program Filez",
                "PROGRA~1",
                false,
                Meta::default()
            )
            .is_err());
        assert_eq!(t.node(a).links[0].spaces().len(), 2);
        assert_eq!(t.node(b).links[0].spaces()[0].0, NameSpace::Win32AndDos);
        assert_eq!(t.node(Tree::ROOT).entry_count(), 3);
    }

    #[test]
    fn graft_merges_and_reports_conflicts() {
        let mut base = Tree::default();
        let f = base
            .add_file(
                Tree::ROOT,
                "f",
                Meta::default(),
                Content::bytes(b"x".to_vec()),
            )
            .unwrap();
        base.add_hard_link(f, Tree::ROOT, "g", None).unwrap();
        let sd = base
            .add_security(&[
                1, 0, 4, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ])
            .unwrap();
        base.node_mut(f).meta.security = Some(sd);
        let mut host = Tree::default();
        host.add_dir(Tree::ROOT, "ProgramData", Meta::default())
            .unwrap();
        let at = host.graft("ProgramData\\Images\\X\\Files", &base).unwrap();
        assert_eq!(host.node(at).entry_count(), 2);
        let ff = host.lookup("programdata/images/x/files/F").unwrap();
        assert_eq!(host.node(ff).links.len(), 2);
        assert_eq!(host.node(ff).meta.security, Some(SecurityId(0)));
        let before = host.len();
        assert!(matches!(
            host.graft("ProgramData\\Images\\X\\Files", &base),
            Err(Error::Exists { .. })
        ));
        assert_eq!(host.len(), before);
    }
}
