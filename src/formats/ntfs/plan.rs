//! The volume plan: MFT record numbers, every record's attributes, index trees, cluster
//! layout. `system.rs` adds the metadata files and `write.rs` the writing pass.
//!
//! Facts: docs/facts-ntfs.md §3 (attribute order), §4 ($STANDARD_INFORMATION, $FILE_NAME and
//! which copy must be right), §5 (directory indexes), §6 (runs), §7 ($ATTRIBUTE_LIST), §8
//! (name spaces, link counts, reparse points, object ids).

use std::collections::HashMap;

use rayon::prelude::*;

use super::index::{self, BuiltIndex, INDEX_BLOCK_SIZE};
use super::record::{self, Attr, Body, NonResident, RecordHeader, Run, UNPLACED};
use super::record::{
    ATTR_IS_SPARSE, AT_ATTRIBUTE_LIST, AT_BITMAP, AT_DATA, AT_FILE_NAME, AT_INDEX_ALLOCATION,
    AT_INDEX_ROOT, AT_OBJECT_ID, AT_REPARSE_POINT, AT_STANDARD_INFORMATION, MFT_RECORD_IN_USE,
    MFT_RECORD_IS_DIRECTORY,
};
use super::{Error, NtfsOptions, NtfsReport};
use crate::tree::{self, Content, NameSpace, Node, NodeId, Stream, Tree, ATTR_DIRECTORY};

/// First record number for tree files; 0–23 are reserved and 24–26 are $Extend files.
pub(super) const FIRST_USER_RECORD: u64 = 27;
/// Resident $DATA up to this size stays in the record if the record has room (Windows
/// keeps small files resident; larger ones always get clusters).
pub(super) const RESIDENT_MAX: usize = 700;
/// Largest $ATTRIBUTE_LIST: Windows crashes on larger ones (facts §7).
pub(super) const MAX_ATTR_LIST: usize = 0x40000;
/// Largest index $BITMAP kept resident (2048 blocks, an 8 MiB directory index); larger
/// ones get clusters so the directory's record never overflows.
pub(super) const MAX_INDEX_BITMAP: usize = 256;
/// Largest $VOLUME_NAME in characters.
pub(super) const MAX_LABEL: usize = 128;
/// Security ids: the two system descriptors (facts §2.7), then our default, then the tree's.
pub(super) const SECID_SYSTEM: u32 = 0x100;
pub(super) const SECID_SYSTEM_RW: u32 = 0x101;
pub(super) const SECID_DEFAULT: u32 = 0x102;
pub(super) const SECID_TREE_FIRST: u32 = 0x103;
/// $SDS: entries live in 256 KiB blocks, each mirrored in the following block.
pub(super) const SDS_BLOCK: u64 = 0x40000;

/// File attribute bits.
pub(super) const FA_HIDDEN_SYSTEM: u32 = 0x6;
pub(super) const FA_SPARSE: u32 = 0x200;
pub(super) const FA_REPARSE: u32 = 0x400;
pub(super) const FA_DUP_DIRECTORY: u32 = 0x1000_0000;
pub(super) const FA_DUP_VIEW_INDEX: u32 = 0x2000_0000;

/// What fills an allocated area.
pub(super) enum Fill {
    /// The $MFT:$BITMAP, generated when written from the records in use.
    MftBitmap,
    MftMirr,
    Mft,
    Bytes(Vec<u8>),
    Repeat(u8),
    Bitmap,
    /// A stream's content; the data runs in VCN order are written contiguously.
    Stream {
        node: NodeId,
        name: Option<String>,
        runs: Vec<(u64, u64)>,
    },
}

pub(super) struct Rec {
    pub(super) header: RecordHeader,
    pub(super) attrs: Vec<Attr>,
}

pub(super) struct Job {
    pub(super) lcn: u64,
    pub(super) clusters: u64,
    pub(super) fill: usize,
}

pub struct Plan {
    pub(super) cs: u64,
    pub(super) rs: usize,
    pub(super) sector: u64,
    pub(super) size: u64,
    pub(super) nr_clusters: u64,
    pub(super) opts: NtfsOptions,
    pub(super) records: Vec<Option<Rec>>,
    pub(super) fills: Vec<Fill>,
    pub(super) jobs: Vec<Job>,
    pub(super) mft_lcn: u64,
    pub(super) mftmirr_lcn: u64,
    pub(super) used_clusters: u64,
    pub(super) files: u64,
    pub(super) dirs: u64,
    pub(super) data_bytes: u64,
    /// The tree root's entries, merged with the metadata files' when record 5 is built.
    pub(super) root_entries: Vec<(Vec<u16>, Vec<u8>)>,
    /// Contents small enough to be resident, read ahead in parallel: (node, stream) → bytes.
    pub(super) small: HashMap<StreamKey, Vec<u8>>,
}

/// A stream of a node: (node index, stream name or None for the unnamed one).
pub(super) type StreamKey = (usize, Option<String>);

pub(super) fn mref(number: u64, seq: u16) -> u64 {
    number | (u64::from(seq) << 48)
}

pub(super) fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

pub(super) fn si_value(times: [u64; 4], fa: u32, secid: u32) -> Vec<u8> {
    let mut v = vec![0u8; 72];
    for (i, t) in times.iter().enumerate() {
        v[i * 8..i * 8 + 8].copy_from_slice(&t.to_le_bytes());
    }
    v[32..36].copy_from_slice(&fa.to_le_bytes());
    v[52..56].copy_from_slice(&secid.to_le_bytes());
    v
}

#[allow(clippy::too_many_arguments)]
pub(super) fn fn_value(
    parent: u64,
    times: [u64; 4],
    alloc: u64,
    data: u64,
    fa: u32,
    ext: u32,
    name: &[u16],
    space: u8,
) -> Vec<u8> {
    let mut v = vec![0u8; 0x42 + name.len() * 2];
    v[0..8].copy_from_slice(&parent.to_le_bytes());
    for (i, t) in times.iter().enumerate() {
        v[8 + i * 8..16 + i * 8].copy_from_slice(&t.to_le_bytes());
    }
    v[0x28..0x30].copy_from_slice(&alloc.to_le_bytes());
    v[0x30..0x38].copy_from_slice(&data.to_le_bytes());
    v[0x38..0x3C].copy_from_slice(&fa.to_le_bytes());
    v[0x3C..0x40].copy_from_slice(&ext.to_le_bytes());
    v[0x40] = name.len() as u8;
    v[0x41] = space;
    for (i, c) in name.iter().enumerate() {
        v[0x42 + 2 * i..0x44 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    v
}

/// Compare keys as sequences of u32 (COLLATION_NTOFS_ULONGS).
pub(super) fn ulongs(k: &[u8]) -> Vec<u32> {
    k.chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect()
}

/// Per-node facts the parent's index needs.
#[derive(Clone, Copy, Default)]
pub(super) struct Dup {
    pub(super) alloc: u64,
    pub(super) data: u64,
    pub(super) fa: u32,
    pub(super) ext: u32,
}

impl Plan {
    pub fn new(tree: &Tree, opts: &NtfsOptions) -> Result<Plan, Error> {
        let o = opts;
        if !matches!(o.sector_size, 512 | 4096) {
            return Err(Error::Options(format!(
                "sector size must be 512 or 4096, got {}",
                o.sector_size
            )));
        }
        if !o.cluster_size.is_power_of_two()
            || !(512..=65536).contains(&o.cluster_size)
            || o.cluster_size < o.sector_size
        {
            return Err(Error::Options(format!(
                "cluster size must be a power of two in 512..=65536 and at least the sector size {}, got {}",
                o.sector_size, o.cluster_size
            )));
        }
        if o.size < (1 << 20) || !o.size.is_multiple_of(u64::from(o.sector_size)) {
            return Err(Error::Options(format!(
                "volume size must be at least 1 MiB and a multiple of the {}-byte sector, got {}",
                o.sector_size, o.size
            )));
        }
        if o.label.encode_utf16().count() > MAX_LABEL {
            return Err(Error::Options(format!(
                "the label {:?} is longer than {MAX_LABEL} UTF-16 code units",
                o.label
            )));
        }
        let cs = u64::from(o.cluster_size);
        let sector = u64::from(o.sector_size);
        let nr_clusters = (o.size / sector - 1) * sector / cs;
        if nr_clusters > u64::from(u32::MAX) {
            return Err(Error::Options(format!(
                "{nr_clusters} clusters exceed the 2^32-1 NTFS tools accept; use clusters larger than {cs} bytes"
            )));
        }
        let rs = record::RECORD_SIZE.max(o.sector_size as usize);
        let mut p = Plan {
            cs,
            rs,
            sector,
            size: o.size,
            nr_clusters,
            opts: o.clone(),
            records: Vec::new(),
            fills: Vec::new(),
            jobs: Vec::new(),
            mft_lcn: 0,
            mftmirr_lcn: 0,
            used_clusters: 0,
            files: 0,
            dirs: 0,
            data_bytes: 0,
            root_entries: Vec::new(),
            small: HashMap::new(),
        };
        p.build(tree)?;
        Ok(p)
    }

    pub fn report(&self) -> NtfsReport {
        NtfsReport {
            cluster_size: self.cs as u32,
            total_clusters: self.nr_clusters,
            used_clusters: self.used_clusters,
            mft_records: self.mft_records(),
            files: self.files,
            directories: self.dirs,
            data_bytes: self.data_bytes,
        }
    }

    pub(super) fn mft_clusters(&self) -> u64 {
        (self.records.len() as u64 * self.rs as u64).div_ceil(self.cs)
    }

    pub(super) fn mft_records(&self) -> u64 {
        self.mft_clusters() * self.cs / self.rs as u64
    }

    pub(super) fn add_fill(&mut self, f: Fill) -> usize {
        self.fills.push(f);
        self.fills.len() - 1
    }

    /// A non-resident attribute whose clusters the layout places, holding `fill`.
    pub(super) fn placed(&mut self, ty: u32, name: &str, data_size: u64, fill: Fill) -> Attr {
        let clusters = data_size.div_ceil(self.cs);
        let f = self.add_fill(fill);
        Attr::non_resident(
            ty,
            name,
            NonResident {
                runs: vec![Run {
                    lcn: Some(UNPLACED),
                    len: clusters,
                }],
                data_size,
                init_size: data_size,
                max_lcn: self.nr_clusters,
                cluster: self.cs,
                fill: Some(f),
            },
        )
    }

    /// $DATA for a tree stream, resident or not.
    pub(super) fn data_attr(
        &mut self,
        node: NodeId,
        name: Option<&str>,
        s: &Stream,
        resident: bool,
    ) -> Result<Attr, Error> {
        let len = s.content.len();
        let aname = name.unwrap_or("");
        if resident {
            // Resident values were read ahead (see `read_small`); they live in the record.
            let v = if len == 0 {
                Vec::new()
            } else {
                self.small
                    .remove(&(node.0, name.map(str::to_string)))
                    .expect("every resident candidate was read ahead")
            };
            return Ok(Attr::resident(AT_DATA, aname, v));
        }
        let vcns = len.div_ceil(self.cs);
        let runs: Vec<Run> = match &s.sparse {
            None => vec![Run {
                lcn: Some(UNPLACED),
                len: vcns,
            }],
            Some(ranges) => {
                let mut runs: Vec<Run> = Vec::new();
                let mut pos = 0u64;
                for r in ranges.iter().filter(|r| r.end > r.start) {
                    let a = r.start / self.cs;
                    let b = r.end.div_ceil(self.cs);
                    let a = a.max(pos);
                    if b <= a {
                        continue;
                    }
                    if a > pos {
                        runs.push(Run {
                            lcn: None,
                            len: a - pos,
                        });
                    }
                    match runs.last_mut() {
                        Some(last) if last.lcn.is_some() => last.len += b - a,
                        _ => runs.push(Run {
                            lcn: Some(UNPLACED),
                            len: b - a,
                        }),
                    }
                    pos = b;
                }
                if vcns > pos {
                    runs.push(Run {
                        lcn: None,
                        len: vcns - pos,
                    });
                }
                runs
            }
        };
        let mut vcn = 0;
        let mut data_runs = Vec::new();
        for r in &runs {
            if r.lcn.is_some() {
                data_runs.push((vcn, r.len));
            }
            vcn += r.len;
        }
        let f = self.add_fill(Fill::Stream {
            node,
            name: name.map(str::to_string),
            runs: data_runs,
        });
        let mut a = Attr::non_resident(
            AT_DATA,
            aname,
            NonResident {
                runs,
                data_size: len,
                init_size: len,
                max_lcn: self.nr_clusters,
                cluster: self.cs,
                fill: Some(f),
            },
        );
        if s.sparse.is_some() {
            a.flags |= ATTR_IS_SPARSE;
        }
        Ok(a)
    }

    /// Read every content that may become resident, on the rayon pool: a WIM source
    /// decompresses them in parallel instead of one by one while records are built.
    pub(super) fn read_small(&mut self, tree: &Tree) -> Result<(), Error> {
        let mut small: Vec<(NodeId, Option<&String>, &Content)> = Vec::new();
        for (id, n) in tree.nodes() {
            let fits = |s: &Stream| {
                s.sparse.is_none() && (1..=RESIDENT_MAX as u64).contains(&s.content.len())
            };
            if !n.is_dir && fits(&n.data) {
                small.push((id, None, &n.data.content));
            }
            for (k, s) in n.streams.iter().filter(|(_, s)| fits(s)) {
                small.push((id, Some(k), &s.content));
            }
        }
        let read: Vec<Result<(StreamKey, Vec<u8>), Error>> = small
            .par_iter()
            .map(|(id, k, c)| {
                let v = c.read_all().map_err(|e| Error::Content {
                    path: match k {
                        Some(k) => format!("{}:{k}", tree.path_of(*id)),
                        None => tree.path_of(*id),
                    },
                    source: e,
                })?;
                Ok(((id.0, k.cloned()), v))
            })
            .collect();
        for r in read {
            let (k, v) = r?;
            self.small.insert(k, v);
        }
        Ok(())
    }

    pub(super) fn build(&mut self, tree: &Tree) -> Result<(), Error> {
        validate(tree)?;
        self.read_small(tree)?;
        // 1. Record numbers: each directory's children get consecutive numbers, then its
        //    subdirectories are visited in collation order.
        let mut number: Vec<u64> = vec![u64::MAX; tree.len()];
        number[0] = 5;
        let mut next = FIRST_USER_RECORD;
        let mut order: Vec<NodeId> = Vec::new();
        let mut stack = vec![Tree::ROOT];
        while let Some(d) = stack.pop() {
            let mut subdirs = Vec::new();
            for (_, e) in tree.node(d).entries() {
                if number[e.node.0] == u64::MAX {
                    number[e.node.0] = next;
                    next += 1;
                    order.push(e.node);
                    if tree.node(e.node).is_dir {
                        subdirs.push(e.node);
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        let base_end = next;
        // Nodes not reachable from the root cannot be written.
        if let Some((id, _)) = tree.nodes().find(|(id, _)| number[id.0] == u64::MAX) {
            return Err(Error::Unsupported {
                path: tree.path_of(id),
                why: "node is not linked into the tree".into(),
            });
        }
        let refof = |id: NodeId| -> u64 {
            let n = number[id.0];
            mref(n, if n == 5 { 5 } else { 1 })
        };
        // System names reserved in the root.
        for sys in super::system::SYSTEM_NAMES {
            if tree.child(Tree::ROOT, sys).is_some() {
                return Err(Error::Unsupported {
                    path: format!("\\{sys}"),
                    why: "this name is reserved for an NTFS metadata file; rename it".into(),
                });
            }
        }
        let secid_of = |n: &Node| -> u32 {
            n.meta
                .security
                .map(|s| SECID_TREE_FIRST + s.0)
                .unwrap_or(SECID_DEFAULT)
        };
        let times = |n: &Node| -> [u64; 4] {
            let m = &n.meta;
            [
                m.creation_time,
                m.last_write_time,
                m.mft_change_time,
                m.last_access_time,
            ]
        };
        let fa_of = |n: &Node| -> u32 {
            let mut fa = n.meta.attributes & !(ATTR_DIRECTORY | 0x80);
            if n.meta.reparse.is_some() {
                fa |= FA_REPARSE;
            }
            if n.data.sparse.is_some() || n.streams.values().any(|s| s.sparse.is_some()) {
                fa |= FA_SPARSE;
            }
            fa
        };
        self.records = (0..base_end).map(|_| None).collect();
        let mut ext_next = base_end;
        let mut dups: Vec<Dup> = vec![Dup::default(); tree.len()];
        let mut objids: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut reparses: Vec<Vec<u8>> = Vec::new();

        // A directory's facts in its parent's index do not depend on its contents.
        for (id, n) in tree.nodes().filter(|(_, n)| n.is_dir) {
            dups[id.0] = Dup {
                alloc: 0,
                data: 0,
                fa: fa_of(n) | FA_DUP_DIRECTORY,
                ext: n.meta.reparse.as_ref().map(|r| r.tag).unwrap_or(0),
            };
        }
        // 2. Files and directories, files first so directory indexes know their sizes.
        let room = record::record_room(self.rs);
        let mut dir_order: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|id| tree.node(*id).is_dir)
            .collect();
        dir_order.insert(0, Tree::ROOT);
        let file_order: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|id| !tree.node(*id).is_dir)
            .collect();
        for pass in 0..2 {
            let list = if pass == 0 { &file_order } else { &dir_order };
            for &id in list {
                let n = tree.node(id);
                let num = number[id.0];
                let fa = fa_of(n);
                let tag = n.meta.reparse.as_ref().map(|r| r.tag).unwrap_or(0);
                if n.is_dir {
                    self.dirs += 1;
                } else {
                    self.files += 1;
                }
                let mut attrs = vec![Attr::resident(
                    AT_STANDARD_INFORMATION,
                    "",
                    si_value(times(n), fa, secid_of(n)),
                )];
                if let Some(oid) = n.meta.object_id {
                    attrs.push(Attr::resident(AT_OBJECT_ID, "", oid.to_vec()));
                    let mut data = refof(id).to_le_bytes().to_vec();
                    data.extend_from_slice(&[0u8; 16]);
                    data.extend_from_slice(&oid);
                    data.extend_from_slice(&[0u8; 16]);
                    objids.push((oid.to_vec(), index::view_entry(&oid, 0x20, &data, &[])));
                }
                if let Some(r) = &n.meta.reparse {
                    let mut v = r.tag.to_le_bytes().to_vec();
                    v.extend_from_slice(&(r.data.len() as u16).to_le_bytes());
                    v.extend_from_slice(&[0, 0]);
                    v.extend_from_slice(&r.data);
                    if v.len() > room / 2 {
                        let len = v.len() as u64;
                        attrs.push(self.placed(AT_REPARSE_POINT, "", len, Fill::Bytes(v)));
                    } else {
                        attrs.push(Attr::resident(AT_REPARSE_POINT, "", v));
                    }
                    let mut key = r.tag.to_le_bytes().to_vec();
                    key.extend_from_slice(&refof(id).to_le_bytes());
                    reparses.push(index::view_entry(&key, 0x1C, &[], &[0; 4]));
                }
                // Streams: resident when small, unless the record overflows.
                let mut streams: Vec<(Option<&str>, &Stream)> = Vec::new();
                if !n.is_dir {
                    streams.push((None, &n.data));
                }
                for (k, s) in &n.streams {
                    streams.push((Some(k.as_str()), s));
                }
                let mut resident: Vec<bool> = streams
                    .iter()
                    .map(|(_, s)| s.sparse.is_none() && s.content.len() as usize <= RESIDENT_MAX)
                    .collect();
                for (_, s) in &streams {
                    self.data_bytes += s.content.len();
                }
                // Names.
                let mut fn_names: Vec<(u64, &[u16], NameSpace)> = Vec::new();
                for l in &n.links {
                    for (space, name) in l.spaces() {
                        fn_names.push((refof(l.parent), name, space));
                    }
                }
                let link_count = fn_names.len() as u16;
                let fn_len: usize = fn_names
                    .iter()
                    .map(|(_, nm, _)| record::align8(0x18 + 0x42 + nm.len() * 2))
                    .sum();
                // Directory index, sized before deciding residency of named streams.
                let mut index_attrs: Vec<Attr> = Vec::new();
                if n.is_dir {
                    let mut entries: Vec<(Vec<u16>, Vec<u8>)> = Vec::new();
                    for (name, e) in n.entries() {
                        let c = tree.node(e.node);
                        let d = dups[e.node.0];
                        let key = fn_value(
                            refof(id),
                            times(c),
                            d.alloc,
                            d.data,
                            d.fa,
                            d.ext,
                            name,
                            e.space as u8,
                        );
                        entries.push((name.to_vec(), index::file_name_entry(refof(e.node), &key)));
                    }
                    if id == Tree::ROOT {
                        // System files and '.' are added with the root's own record below.
                        self.root_entries = entries;
                        continue;
                    }
                    let others: usize = attrs.iter().map(Attr::len).sum::<usize>() + fn_len;
                    let e: Vec<Vec<u8>> = entries.into_iter().map(|(_, e)| e).collect();
                    index_attrs = self.index_attrs(
                        "$I30",
                        0x30,
                        index::COLLATION_FILE_NAME,
                        &e,
                        room.saturating_sub(others),
                    )?;
                }
                // Decide residency: demote the largest resident streams until the record fits.
                loop {
                    let mut total = attrs.iter().map(Attr::len).sum::<usize>() + fn_len;
                    total += index_attrs.iter().map(Attr::len).sum::<usize>();
                    for (i, (nm, s)) in streams.iter().enumerate() {
                        let nl = nm.map(|x| x.encode_utf16().count()).unwrap_or(0);
                        total += if resident[i] {
                            record::align8(record::align8(0x18 + nl * 2) + s.content.len() as usize)
                        } else {
                            record::align8(0x40 + nl * 2) + 24
                        };
                    }
                    if total <= room {
                        break;
                    }
                    let big = (0..streams.len())
                        .filter(|&i| resident[i] && streams[i].1.content.len() > 64)
                        .max_by_key(|&i| (streams[i].1.content.len(), std::cmp::Reverse(i)));
                    match big {
                        Some(i) => resident[i] = false,
                        None => break,
                    }
                }
                let mut dup = Dup {
                    alloc: 0,
                    data: 0,
                    fa: if n.is_dir { fa | FA_DUP_DIRECTORY } else { fa },
                    ext: tag,
                };
                for (i, (nm, s)) in streams.iter().enumerate() {
                    let a = self.data_attr(id, *nm, s, resident[i])?;
                    if nm.is_none() {
                        let len = s.content.len();
                        dup.data = len;
                        dup.alloc = match &a.body {
                            Body::Resident { .. } => (len + 7) & !7,
                            Body::NonResident(nr) if s.sparse.is_some() => {
                                nr.data_clusters() * self.cs
                            }
                            Body::NonResident(nr) => nr.vcns() * self.cs,
                        };
                    }
                    attrs.push(a);
                }
                dups[id.0] = dup;
                for (parent, name, space) in &fn_names {
                    let v = fn_value(
                        *parent,
                        times(n),
                        dup.alloc,
                        dup.data,
                        dup.fa,
                        dup.ext,
                        name,
                        *space as u8,
                    );
                    attrs.push(Attr::resident(AT_FILE_NAME, "", v));
                }
                attrs.extend(index_attrs);
                let flags = MFT_RECORD_IN_USE | if n.is_dir { MFT_RECORD_IS_DIRECTORY } else { 0 };
                self.pack(num, 1, flags, link_count, attrs, &mut ext_next, &|| {
                    tree.path_of(id)
                })?;
            }
        }
        self.small = HashMap::new();
        self.records.resize_with(ext_next as usize, || None);
        self.system_records(tree, &dups, objids, reparses)?;
        self.layout()
    }
}

impl Plan {
    pub(super) fn block_vcn_units(&self) -> u64 {
        // Index block VCNs count clusters when a block spans whole clusters, else 512-byte
        // units (facts §5).
        if INDEX_BLOCK_SIZE as u64 >= self.cs {
            INDEX_BLOCK_SIZE as u64 / self.cs
        } else {
            INDEX_BLOCK_SIZE as u64 / 512
        }
    }

    /// $INDEX_ROOT (+ $INDEX_ALLOCATION and $BITMAP when the entries do not fit `room`).
    pub(super) fn index_attrs(
        &mut self,
        name: &str,
        indexed_type: u32,
        collation: u32,
        entries: &[Vec<u8>],
        room: usize,
    ) -> Result<Vec<Attr>, Error> {
        let units = self.block_vcn_units();
        let name_len = name.encode_utf16().count();
        let small_len = record::align8(
            record::align8(0x18 + name_len * 2)
                + index::root_value_len(index::small_root_len(entries)),
        );
        let (built, large): (BuiltIndex, bool) = if small_len <= room {
            (index::build_small(entries), false)
        } else {
            (index::build_large(entries, |i| i as u64 * units), true)
        };
        let mut out = vec![Attr::resident(
            AT_INDEX_ROOT,
            name,
            index::root_value(indexed_type, collation, units as u8, &built),
        )];
        if large {
            let blocks = built.blocks.len();
            let mut bitmap = vec![0u8; blocks.div_ceil(64) * 8];
            for i in 0..blocks {
                bitmap[i / 8] |= 1 << (i % 8);
            }
            let bytes: Vec<u8> = built.blocks.concat();
            // The allocation is sized in clusters; blocks smaller than a cluster share one.
            let data_size = bytes.len() as u64;
            out.push(self.placed(AT_INDEX_ALLOCATION, name, data_size, Fill::Bytes(bytes)));
            if bitmap.len() > MAX_INDEX_BITMAP {
                let len = bitmap.len() as u64;
                out.push(self.placed(AT_BITMAP, name, len, Fill::Bytes(bitmap)));
            } else {
                out.push(Attr::resident(AT_BITMAP, name, bitmap));
            }
        }
        Ok(out)
    }

    /// Put `attrs` into record `num`, spilling into extension records with an
    /// $ATTRIBUTE_LIST when they do not fit (facts §7).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack(
        &mut self,
        num: u64,
        seq: u16,
        flags: u16,
        link_count: u16,
        mut attrs: Vec<Attr>,
        ext_next: &mut u64,
        path: &dyn Fn() -> String,
    ) -> Result<(), Error> {
        attrs.sort_by(|a, b| a.order(b));
        let room = record::record_room(self.rs);
        let total: usize = attrs.iter().map(Attr::len).sum();
        let base_header = RecordHeader {
            number: num,
            seq,
            link_count,
            flags,
            base: 0,
        };
        if total <= room {
            self.set_record(
                num,
                Rec {
                    header: base_header,
                    attrs,
                },
            );
            return Ok(());
        }
        if let Some(a) = attrs.iter().find(|a| a.len() > room) {
            return Err(Error::Unsupported {
                path: path(),
                why: format!(
                    "attribute {:#x} of {} bytes does not fit an MFT record",
                    a.ty,
                    a.len()
                ),
            });
        }
        let al_len: usize = attrs
            .iter()
            .map(|a| record::align8(0x1A + a.name.len() * 2))
            .sum();
        if al_len > MAX_ATTR_LIST {
            return Err(Error::Unsupported {
                path: path(),
                why: format!(
                    "its attribute list of {al_len} bytes exceeds the {MAX_ATTR_LIST}-byte limit"
                ),
            });
        }
        let si = attrs.remove(0);
        let resident_al = record::align8(0x18 + al_len);
        let nonresident_al = 0x40 + 24;
        let al_is_resident = si.len() + resident_al + 8 * 16 <= room;
        let mut used = si.len()
            + if al_is_resident {
                resident_al
            } else {
                nonresident_al
            };
        let mut base_attrs = vec![si];
        let mut rest = attrs.into_iter().peekable();
        while let Some(a) = rest.peek() {
            if used + a.len() > room {
                break;
            }
            used += a.len();
            base_attrs.push(rest.next().expect("peeked"));
        }
        let mut groups: Vec<Vec<Attr>> = Vec::new();
        let mut gused = room + 1;
        for a in rest {
            if gused + a.len() > room {
                groups.push(Vec::new());
                gused = 0;
            }
            gused += a.len();
            groups.last_mut().expect("pushed").push(a);
        }
        // The list: base attributes (instances after SI = 0 and the list = 1), then each
        // extension record's.
        let mut al = Vec::new();
        let base_ref = mref(num, seq);
        for (i, a) in base_attrs.iter().enumerate() {
            let inst = if i == 0 { 0 } else { i as u16 + 1 };
            record::attr_list_entry(a.ty, &a.name, base_ref, inst, &mut al);
        }
        let mut ext_recs = Vec::new();
        for g in groups {
            let n = *ext_next;
            *ext_next += 1;
            for (i, a) in g.iter().enumerate() {
                record::attr_list_entry(a.ty, &a.name, mref(n, 1), i as u16, &mut al);
            }
            ext_recs.push(Rec {
                header: RecordHeader {
                    number: n,
                    seq: 1,
                    link_count: 0,
                    flags: MFT_RECORD_IN_USE,
                    base: base_ref,
                },
                attrs: g,
            });
        }
        let al_attr = if al_is_resident {
            Attr::resident(AT_ATTRIBUTE_LIST, "", al)
        } else {
            let len = al.len() as u64;
            self.placed(AT_ATTRIBUTE_LIST, "", len, Fill::Bytes(al))
        };
        base_attrs.insert(1, al_attr);
        self.set_record(
            num,
            Rec {
                header: base_header,
                attrs: base_attrs,
            },
        );
        for r in ext_recs {
            self.set_record(r.header.number, r);
        }
        Ok(())
    }

    pub(super) fn set_record(&mut self, num: u64, r: Rec) {
        let i = num as usize;
        if self.records.len() <= i {
            self.records.resize_with(i + 1, || None);
        }
        self.records[i] = Some(r);
    }

    /// Place every non-resident attribute, in record order, right after $Boot.
    pub(super) fn layout(&mut self) -> Result<(), Error> {
        let boot_clusters = 8192u64.div_ceil(self.cs);
        self.jobs.push(Job {
            lcn: 0,
            clusters: boot_clusters,
            fill: usize::MAX,
        });
        let mut cur = boot_clusters;
        for (num, rec) in self.records.iter_mut().enumerate() {
            let Some(rec) = rec else { continue };
            for a in &mut rec.attrs {
                let Body::NonResident(nr) = &mut a.body else {
                    continue;
                };
                if !nr.runs.iter().any(|r| r.lcn == Some(UNPLACED)) {
                    continue;
                }
                let start = cur;
                for r in &mut nr.runs {
                    if r.lcn == Some(UNPLACED) {
                        r.lcn = Some(cur);
                        cur += r.len;
                    }
                }
                if num == 0 && a.ty == AT_DATA {
                    self.mft_lcn = start;
                }
                if num == 1 && a.ty == AT_DATA {
                    self.mftmirr_lcn = start;
                }
                self.jobs.push(Job {
                    lcn: start,
                    clusters: cur - start,
                    fill: nr.fill.expect("placed attributes have a fill"),
                });
            }
        }
        if cur > self.nr_clusters {
            let short = cur - self.nr_clusters;
            return Err(Error::VolumeFull {
                needed: cur,
                available: self.nr_clusters,
                cluster_size: self.cs as u32,
                min_size: self.size + (short + short / 64 + 1) * self.cs,
            });
        }
        self.used_clusters = cur;
        Ok(())
    }
}

/// Re-check what the tree API checks, since nodes can be edited in place: names, link
/// counts, reparse data, descriptor ids, sparse ranges.
pub(super) fn validate(tree: &Tree) -> Result<(), Error> {
    let bad = |id: NodeId, why: String| Error::Invalid {
        path: tree.path_of(id),
        why,
    };
    let nsd = tree.security_descriptors().len();
    for (id, n) in tree.nodes() {
        let mut names = 0usize;
        for l in &n.links {
            tree::check_name(&l.name).map_err(|w| {
                bad(
                    id,
                    format!("name {:?}: {w}", String::from_utf16_lossy(&l.name)),
                )
            })?;
            if let Some(d) = &l.dos_name {
                tree::check_dos_name(d).map_err(|w| {
                    bad(
                        id,
                        format!("DOS name {:?}: {w}", String::from_utf16_lossy(d)),
                    )
                })?;
            }
            names += l.spaces().len();
        }
        if names > tree::MAX_LINKS {
            return Err(bad(
                id,
                format!("{names} names exceed the {} NTFS allows", tree::MAX_LINKS),
            ));
        }
        if n.is_dir && n.links.len() > 1 {
            return Err(bad(id, "a directory has more than one name".into()));
        }
        if let Some(r) = &n.meta.reparse {
            if r.data.len() + 8 > tree::MAX_REPARSE_BYTES {
                return Err(bad(
                    id,
                    format!(
                        "reparse data of {} bytes exceeds {} bytes with its header",
                        r.data.len(),
                        tree::MAX_REPARSE_BYTES
                    ),
                ));
            }
        }
        if let Some(s) = n.meta.security {
            if s.0 as usize >= nsd {
                return Err(bad(
                    id,
                    format!("security id {} is outside the table of {nsd}", s.0),
                ));
            }
        }
        if n.is_dir && !n.data.content.is_empty() {
            return Err(bad(id, "a directory has unnamed data".into()));
        }
        for (k, s) in std::iter::once((&String::new(), &n.data)).chain(n.streams.iter()) {
            if !k.is_empty() {
                tree::check_name(&utf16(k))
                    .map_err(|w| bad(id, format!("stream name {k:?}: {w}")))?;
            }
            if let Some(r) = &s.sparse {
                let mut prev = 0;
                for x in r {
                    if x.start < prev || x.end < x.start || x.end > s.content.len() {
                        return Err(bad(
                            id,
                            format!("sparse range {x:?} is out of order or past the stream end"),
                        ));
                    }
                    prev = x.end;
                }
            }
        }
    }
    Ok(())
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Plan({} records, {} clusters used)",
            self.records.len(),
            self.used_clusters
        )
    }
}
