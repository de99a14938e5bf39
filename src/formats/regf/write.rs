//! Writing a fresh, compact hive from the model (spec, "Format of primary files").
//!
//! Layout: the base block, then hive bins of 4 KiB (larger only for a cell that needs it),
//! cells in pre-order of the key tree (key node, its security record when first used,
//! class name, values list, values and data, subkey lists, then the subkeys). Subkey
//! lists are hash leaves ("lh") sorted by upper-cased name, under an index root ("ri")
//! when a key has more subkeys than one 4 KiB bin can list. Identical security
//! descriptors share one "sk" cell with an exact reference count; all "sk" cells form
//! one circular doubly linked list in allocation order. Nothing here reads the clock:
//! timestamps come from the model.

use std::collections::HashMap;
use std::sync::Arc;

use super::base::{BASE_BLOCK_SIZE, FILE_TYPE_PRIMARY};
use super::model::{Hive, Key};
use super::names::{cmp_names, encode_name, lh_hash, utf16_len};
use super::read::{
    KeyNode, KeySecurity, KeyValue, DATA_INLINE, HBIN_HEADER, NO_CELL, VALUE_COMP_NAME,
};
use super::{
    key_flags, Error, Result, BIG_DATA_SEGMENT, HBIN_PAGE, MAX_KEY_NAME_CHARS, MAX_VALUE_NAME_CHARS,
};

/// Most elements in one hash leaf: 4 + 4 + 8·507 = 4064 bytes, exactly what a 4 KiB bin
/// holds after its 32-byte header, so every leaf fits one page. Keys with more subkeys
/// get an index root over several leaves.
pub const MAX_LEAF_ELEMENTS: usize = 507;
/// Most leaves under one index root (its element count is 16 bits).
const MAX_ROOT_ELEMENTS: usize = u16::MAX as usize;
/// Most big data segments (16-bit count).
const MAX_SEGMENTS: usize = u16::MAX as usize;
/// Largest hive bins data: cell offsets are 32-bit and 0xFFFFFFFF means "none".
const MAX_BINS_SIZE: u64 = 0x7FFF_F000;

/// The security descriptor of a new hive's root: owner Administrators, group SYSTEM,
/// DACL granting KEY_ALL_ACCESS (0xF003F) to Administrators and to SYSTEM, in the order
/// Windows lays out self-relative descriptors (header, DACL, owner SID, group SID).
pub fn default_security_descriptor() -> Vec<u8> {
    // S-1-5-32-544 (BUILTIN\Administrators) and S-1-5-18 (LOCAL SYSTEM).
    let admins: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 0x20, 0, 0, 0, 0x20, 2, 0, 0];
    let system: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 0x12, 0, 0, 0];
    let ace = |sid: &[u8]| {
        let mut a = vec![0u8, 0]; // ACCESS_ALLOWED_ACE_TYPE, no inheritance flags
        a.extend_from_slice(&((8 + sid.len()) as u16).to_le_bytes());
        a.extend_from_slice(&0x000F_003Fu32.to_le_bytes());
        a.extend_from_slice(sid);
        a
    };
    let aces = [ace(&admins), ace(&system)].concat();
    let mut acl = vec![2u8, 0]; // ACL_REVISION
    acl.extend_from_slice(&((8 + aces.len()) as u16).to_le_bytes());
    acl.extend_from_slice(&2u16.to_le_bytes());
    acl.extend_from_slice(&0u16.to_le_bytes());
    acl.extend(aces);
    let dacl_off = 20u32;
    let owner_off = dacl_off + acl.len() as u32;
    let group_off = owner_off + admins.len() as u32;
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&0x8004u16.to_le_bytes()); // SE_SELF_RELATIVE | SE_DACL_PRESENT
    for v in [owner_off, group_off, 0, dacl_off] {
        sd.extend_from_slice(&v.to_le_bytes());
    }
    sd.extend(acl);
    sd.extend_from_slice(&admins);
    sd.extend_from_slice(&system);
    sd
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Sequential cell allocator: hands out offsets, remembers the bins.
struct Alloc {
    /// (start, size, end of the last allocated cell) of every bin, relative to the hive
    /// bins data.
    bins: Vec<(u32, u32, u64)>,
    pos: u64,
    bin_end: u64,
}

impl Alloc {
    fn cell(&mut self, data_len: usize) -> Result<u32> {
        let size = align8(data_len + 4) as u64;
        if self.pos + size > self.bin_end {
            let start = self.bin_end;
            let bin = (HBIN_HEADER as u64 + size).div_ceil(HBIN_PAGE as u64) * HBIN_PAGE as u64;
            if start + bin > MAX_BINS_SIZE {
                return Err(Error::Limit(format!(
                    "the hive would exceed {MAX_BINS_SIZE:#x} bytes of hive bins"
                )));
            }
            if let Some(last) = self.bins.last_mut() {
                last.2 = self.pos;
            }
            self.bins.push((start as u32, bin as u32, 0));
            self.pos = start + HBIN_HEADER as u64;
            self.bin_end = start + bin;
        }
        let off = self.pos as u32;
        self.pos += size;
        Ok(off)
    }

    /// Close the last bin.
    fn finish(&mut self) {
        if let Some(last) = self.bins.last_mut() {
            last.2 = self.pos;
        }
    }
}

enum DataPlan {
    Inline,
    Cell(u32),
    Big {
        db: u32,
        list: u32,
        segments: Vec<u32>,
    },
}

/// Cells planned for one key. Plans form a flat list in pre-order (no recursion, so the
/// deepest tree the format allows needs no more stack than a flat one).
struct KeyPlan<'a> {
    key: &'a Key,
    /// Key node offset of the parent, NO_CELL for the root.
    parent: u32,
    nk: u32,
    sk: u32,
    class: u32,
    values_list: u32,
    values: Vec<(u32, DataPlan)>,
    /// Hash leaves, in order; `root` is the index root over them when there are several.
    leaves: Vec<u32>,
    root: u32,
    /// Indices of subkeys in sorted order, and the indices of their plans in that order.
    order: Vec<usize>,
    children: Vec<usize>,
}

/// A key waiting to be planned: the key, the descriptor it inherits, its depth, the
/// index of its parent's plan.
type Pending<'a> = (&'a Key, Arc<[u8]>, usize, Option<usize>);

struct Planner {
    alloc: Alloc,
    /// Descriptor bytes → index into `sks`.
    sk_index: HashMap<Arc<[u8]>, usize>,
    /// (offset, descriptor, reference count) in allocation order.
    sks: Vec<(u32, Arc<[u8]>, u32)>,
}

fn sorted_order(key: &Key) -> Result<Vec<usize>> {
    let mut order: Vec<usize> = (0..key.subkeys.len()).collect();
    order.sort_by(|&a, &b| cmp_names(&key.subkeys[a].name, &key.subkeys[b].name));
    for w in order.windows(2) {
        if cmp_names(&key.subkeys[w[0]].name, &key.subkeys[w[1]].name).is_eq() {
            return Err(Error::Limit(format!(
                "key '{}' has two subkeys named '{}' (names are case-insensitive)",
                key.name, key.subkeys[w[1]].name
            )));
        }
    }
    Ok(order)
}

impl Planner {
    /// Plan every key of the tree under `root`, in pre-order.
    fn tree<'a>(&mut self, root: &'a Key, default_sd: Arc<[u8]>) -> Result<Vec<KeyPlan<'a>>> {
        let mut plans: Vec<KeyPlan<'a>> = Vec::new();
        let mut stack: Vec<Pending<'a>> = vec![(root, default_sd, 0, None)];
        while let Some((key, inherited, depth, parent)) = stack.pop() {
            let parent_nk = parent.map_or(NO_CELL, |p| plans[p].nk);
            let plan = self.key(key, &inherited, depth, parent_nk)?;
            let me = plans.len();
            if let Some(p) = parent {
                plans[p].children.push(me);
            }
            let sd = key.security.clone().unwrap_or(inherited);
            for &i in plan.order.iter().rev() {
                stack.push((&key.subkeys[i], sd.clone(), depth + 1, Some(me)));
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    fn key<'a>(
        &mut self,
        key: &'a Key,
        inherited: &Arc<[u8]>,
        depth: usize,
        parent: u32,
    ) -> Result<KeyPlan<'a>> {
        if depth > super::MAX_DEPTH {
            return Err(Error::Limit(format!(
                "keys nest deeper than {} levels",
                super::MAX_DEPTH
            )));
        }
        if key.name.is_empty() && depth > 0 || utf16_len(&key.name) > MAX_KEY_NAME_CHARS {
            return Err(Error::Limit(format!(
                "key name '{}' must be 1 to {MAX_KEY_NAME_CHARS} characters",
                key.name
            )));
        }
        let (name, _) = encode_name(&key.name);
        let nk = self.alloc.cell(super::read::KEY_NODE_FIXED + name.len())?;
        let sd = key.security.clone().unwrap_or_else(|| inherited.clone());
        let sk = match self.sk_index.get(&sd) {
            Some(&i) => {
                self.sks[i].2 += 1;
                self.sks[i].0
            }
            None => {
                let off = self
                    .alloc
                    .cell(super::read::KEY_SECURITY_FIXED + sd.len())?;
                self.sk_index.insert(sd.clone(), self.sks.len());
                self.sks.push((off, sd.clone(), 1));
                off
            }
        };
        let class = match &key.class_name {
            Some(c) if !c.is_empty() => {
                if c.len() > u16::MAX as usize {
                    return Err(Error::Limit(format!(
                        "class name of key '{}' exceeds 65535 bytes",
                        key.name
                    )));
                }
                self.alloc.cell(c.len())?
            }
            _ => NO_CELL,
        };
        let values_list = if key.values.is_empty() {
            NO_CELL
        } else {
            self.alloc.cell(4 * key.values.len())?
        };
        let mut values = Vec::with_capacity(key.values.len());
        for v in &key.values {
            if utf16_len(&v.name) > MAX_VALUE_NAME_CHARS {
                return Err(Error::Limit(format!(
                    "value name in key '{}' exceeds {MAX_VALUE_NAME_CHARS} characters",
                    key.name
                )));
            }
            let (vname, _) = encode_name(&v.name);
            let vk = self
                .alloc
                .cell(super::read::KEY_VALUE_FIXED + vname.len())?;
            let n = v.data.len();
            let data = if n <= 4 {
                DataPlan::Inline
            } else if n <= BIG_DATA_SEGMENT {
                DataPlan::Cell(self.alloc.cell(n)?)
            } else {
                let count = n.div_ceil(BIG_DATA_SEGMENT);
                if count > MAX_SEGMENTS || n > 0x7FFF_FFFF {
                    return Err(Error::Limit(format!(
                        "value '{}' of {n} bytes is too large for a hive",
                        v.name
                    )));
                }
                let db = self.alloc.cell(8)?;
                let list = self.alloc.cell(4 * count)?;
                let mut segments = Vec::with_capacity(count);
                // Every segment cell is full size, the last one zero-padded, as Windows
                // writes them (readers such as hivex take cell size - 8 per segment).
                for _ in 0..count {
                    segments.push(self.alloc.cell(BIG_DATA_SEGMENT)?);
                }
                DataPlan::Big { db, list, segments }
            };
            values.push((vk, data));
        }
        let order = sorted_order(key)?;
        let mut leaves = Vec::new();
        let mut root = NO_CELL;
        if !order.is_empty() {
            let chunks = order.len().div_ceil(MAX_LEAF_ELEMENTS);
            if chunks > MAX_ROOT_ELEMENTS {
                return Err(Error::Limit(format!(
                    "key '{}' has too many subkeys ({})",
                    key.name,
                    order.len()
                )));
            }
            if chunks > 1 {
                root = self.alloc.cell(4 + 4 * chunks)?;
            }
            for chunk in order.chunks(MAX_LEAF_ELEMENTS) {
                leaves.push(self.alloc.cell(4 + 8 * chunk.len())?);
            }
        }
        Ok(KeyPlan {
            key,
            parent,
            children: Vec::with_capacity(order.len()),
            nk,
            sk,
            class,
            values_list,
            values,
            leaves,
            root,
            order,
        })
    }
}

struct Emitter {
    bins: Vec<u8>,
}

impl Emitter {
    /// Write an allocated cell: negative size, then data, zero padding.
    fn put(&mut self, off: u32, data: &[u8]) {
        self.put_sized(off, data, data.len());
    }

    /// Write an allocated cell planned for `len` data bytes holding `data` (≤ len).
    fn put_sized(&mut self, off: u32, data: &[u8], len: usize) {
        let size = align8(len + 4);
        let at = off as usize;
        self.bins[at..at + 4].copy_from_slice(&(-(size as i32)).to_le_bytes());
        self.bins[at + 4..at + 4 + data.len()].copy_from_slice(data);
    }

    fn key(&mut self, plan: &KeyPlan, plans: &[KeyPlan]) {
        let key = plan.key;
        let (parent, is_root) = (plan.parent, plan.parent == NO_CELL);
        let (name, compressed) = encode_name(&key.name);
        let mut flags = key.flags & !(key_flags::COMP_NAME | key_flags::HIVE_ENTRY);
        if compressed {
            flags |= key_flags::COMP_NAME;
        }
        if is_root {
            flags |= key_flags::HIVE_ENTRY;
        }
        let subs = &key.subkeys;
        let largest_name = subs
            .iter()
            .map(|k| 2 * utf16_len(&k.name))
            .max()
            .unwrap_or(0) as u32;
        let node = KeyNode {
            flags,
            last_written_timestamp: key.last_written,
            spare: key.spare,
            parent,
            number_of_subkeys: subs.len() as u32,
            number_of_volatile_subkeys: 0,
            subkeys_list_offset: if plan.root != NO_CELL {
                plan.root
            } else {
                plan.leaves.first().copied().unwrap_or(NO_CELL)
            },
            volatile_subkeys_list_offset: NO_CELL,
            number_of_key_values: key.values.len() as u32,
            key_values_list_offset: plan.values_list,
            key_security_offset: plan.sk,
            class_name_offset: plan.class,
            largest_subkey_name_length: (largest_name & 0xFFFF)
                | ((key.user_virt_debug as u32) << 16),
            largest_subkey_class_name_length: subs
                .iter()
                .map(|k| k.class_name.as_ref().map_or(0, |c| c.len()))
                .max()
                .unwrap_or(0) as u32,
            largest_value_name_length: key
                .values
                .iter()
                .map(|v| 2 * utf16_len(&v.name))
                .max()
                .unwrap_or(0) as u32,
            largest_value_data_size: key.values.iter().map(|v| v.data.len()).max().unwrap_or(0)
                as u32,
            work_var: key.work_var,
            class_name_length: key.class_name.as_ref().map_or(0, |c| c.len() as u16),
            key_name: name,
        };
        self.put(plan.nk, &node.to_bytes());
        if plan.class != NO_CELL {
            self.put(plan.class, key.class_name.as_deref().unwrap_or_default());
        }
        if plan.values_list != NO_CELL {
            let list: Vec<u8> = plan
                .values
                .iter()
                .flat_map(|(vk, _)| vk.to_le_bytes())
                .collect();
            self.put(plan.values_list, &list);
        }
        for (v, (vk_off, data)) in key.values.iter().zip(&plan.values) {
            let (vname, compressed) = encode_name(&v.name);
            let n = v.data.len();
            let (data_size, data_offset) = match data {
                DataPlan::Inline => {
                    let mut b = [0u8; 4];
                    b[..n].copy_from_slice(&v.data);
                    (DATA_INLINE | n as u32, u32::from_le_bytes(b))
                }
                DataPlan::Cell(off) => {
                    self.put(*off, &v.data);
                    (n as u32, *off)
                }
                DataPlan::Big { db, list, segments } => {
                    let mut rec = b"db".to_vec();
                    rec.extend_from_slice(&(segments.len() as u16).to_le_bytes());
                    rec.extend_from_slice(&list.to_le_bytes());
                    self.put(*db, &rec);
                    let l: Vec<u8> = segments.iter().flat_map(|s| s.to_le_bytes()).collect();
                    self.put(*list, &l);
                    for (i, s) in segments.iter().enumerate() {
                        let a = i * BIG_DATA_SEGMENT;
                        self.put_sized(
                            *s,
                            &v.data[a..(a + BIG_DATA_SEGMENT).min(n)],
                            BIG_DATA_SEGMENT,
                        );
                    }
                    (n as u32, *db)
                }
            };
            let rec = KeyValue {
                data_size,
                data_offset,
                data_type: v.data_type,
                flags: (v.flags & !VALUE_COMP_NAME) | if compressed { VALUE_COMP_NAME } else { 0 },
                spare: v.spare,
                name: vname,
            };
            self.put(*vk_off, &rec.to_bytes());
        }
        if !plan.order.is_empty() {
            for (leaf, chunk) in plan.leaves.iter().zip(
                plan.order
                    .chunks(MAX_LEAF_ELEMENTS)
                    .zip(plan.children.chunks(MAX_LEAF_ELEMENTS)),
            ) {
                let mut rec = b"lh".to_vec();
                rec.extend_from_slice(&(chunk.0.len() as u16).to_le_bytes());
                for (&i, &child) in chunk.0.iter().zip(chunk.1) {
                    rec.extend_from_slice(&plans[child].nk.to_le_bytes());
                    rec.extend_from_slice(&lh_hash(&subs[i].name).to_le_bytes());
                }
                self.put(*leaf, &rec);
            }
            if plan.root != NO_CELL {
                let mut rec = b"ri".to_vec();
                rec.extend_from_slice(&(plan.leaves.len() as u16).to_le_bytes());
                for l in &plan.leaves {
                    rec.extend_from_slice(&l.to_le_bytes());
                }
                self.put(plan.root, &rec);
            }
        }
    }
}

impl Hive {
    /// Serialize to a fresh hive file. Same model, same bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut p = Planner {
            alloc: Alloc {
                bins: Vec::new(),
                pos: 0,
                bin_end: 0,
            },
            sk_index: HashMap::new(),
            sks: Vec::new(),
        };
        let default_sd: Arc<[u8]> = Arc::from(default_security_descriptor());
        let plans = p.tree(&self.root, default_sd)?;
        let total = p.alloc.bin_end as usize;
        let mut e = Emitter {
            bins: vec![0u8; total],
        };
        // Bin headers, and one free cell over each bin's unused tail.
        for (i, &(start, size, _)) in p.alloc.bins.iter().enumerate() {
            let s = start as usize;
            e.bins[s..s + 4].copy_from_slice(b"hbin");
            e.bins[s + 4..s + 8].copy_from_slice(&start.to_le_bytes());
            e.bins[s + 8..s + 12].copy_from_slice(&size.to_le_bytes());
            if i == 0 {
                e.bins[s + 20..s + 28]
                    .copy_from_slice(&self.base_block.last_written_timestamp.to_le_bytes());
            }
        }
        p.alloc.finish();
        for &(start, size, used) in &p.alloc.bins {
            let end = start as u64 + size as u64;
            if used < end {
                let at = used as usize;
                e.bins[at..at + 4].copy_from_slice(&((end - used) as i32).to_le_bytes());
            }
        }
        let n = p.sks.len();
        for (i, (off, sd, refs)) in p.sks.iter().enumerate() {
            let rec = KeySecurity {
                reserved: 0,
                flink: p.sks[(i + 1) % n].0,
                blink: p.sks[(i + n - 1) % n].0,
                reference_count: *refs,
                security_descriptor: sd.to_vec(),
            };
            e.put(*off, &rec.to_bytes());
        }
        for plan in &plans {
            e.key(plan, &plans);
        }

        let mut bb = self.base_block.clone();
        let seq = bb
            .primary_sequence_number
            .max(bb.secondary_sequence_number)
            .max(1);
        bb.primary_sequence_number = seq;
        bb.secondary_sequence_number = seq;
        bb.major_version = 1;
        bb.minor_version = bb.minor_version.clamp(5, 6);
        bb.file_type = FILE_TYPE_PRIMARY;
        bb.file_format = 1;
        bb.root_cell_offset = plans[0].nk;
        bb.hive_bins_data_size = total as u32;
        if bb.clustering_factor == 0 {
            bb.clustering_factor = 1;
        }
        let mut out = bb.to_bytes();
        debug_assert_eq!(out.len(), BASE_BLOCK_SIZE);
        out.extend(e.bins);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{export_reg, Hive, Value, MAX_DEPTH};
    use super::*;

    fn written(h: &Hive) -> Vec<u8> {
        let a = h.to_bytes().unwrap();
        assert_eq!(a, h.to_bytes().unwrap(), "writes are deterministic");
        a
    }

    /// The deepest tree the format allows is written, read back and exported on an
    /// ordinary (2 MiB stack) test thread; one level more is refused.
    #[test]
    fn deepest_tree_round_trips() {
        let path: Vec<String> = (0..MAX_DEPTH).map(|i| format!("k{i}")).collect();
        let mut h = Hive::new_empty("R", 1);
        h.create_key(&path.join("\\"), 2).unwrap();
        let back = Hive::parse(&written(&h)).unwrap();
        assert!(back.root == h.root);
        assert_eq!(
            export_reg(&back, None).unwrap().matches('[').count(),
            MAX_DEPTH + 1
        );
        h.create_key(&format!("{}\\one-too-many", path.join("\\")), 2)
            .unwrap();
        assert!(h.to_bytes().is_err());
    }

    /// Layout facts: root cell at 0x20, 4 KiB bins with a free tail, inline / cell / big
    /// data by size, an index root above 507 subkeys, one shared security record.
    #[test]
    fn layout() {
        let mut h = Hive::new_empty("R", 5);
        h.create_key("A", 5).unwrap();
        for (i, n) in [
            0usize,
            4,
            5,
            BIG_DATA_SEGMENT,
            BIG_DATA_SEGMENT + 1,
            3 * BIG_DATA_SEGMENT,
        ]
        .iter()
        .enumerate()
        {
            h.set_value("A", Value::binary(&format!("v{i}"), &vec![i as u8 + 1; *n]))
                .unwrap();
        }
        for i in 0..=MAX_LEAF_ELEMENTS {
            h.create_key(&format!("Many\\{i:04}"), 5).unwrap();
        }
        let b = written(&h);
        let bb = super::super::BaseBlock::parse(&b).unwrap();
        bb.validate(&b).unwrap();
        assert_eq!((bb.root_cell_offset, bb.minor_version), (0x20, 5));
        assert_eq!(b.len(), BASE_BLOCK_SIZE + bb.hive_bins_data_size as usize);
        assert_eq!(&b[4096..4100], b"hbin");
        assert_eq!(
            u32::from_le_bytes(b[4096 + 8..4096 + 12].try_into().unwrap()),
            4096
        );
        let back = Hive::parse(&b).unwrap();
        assert!(back.root == h.root);
        let count = |sig: &[u8]| b.windows(2).filter(|w| *w == sig).count();
        assert!(count(b"ri") >= 1 && count(b"db") >= 2);
        // One "sk" record, referenced by every key (root, A, Many and its subkeys).
        let sk = b.windows(4).position(|w| w == b"sk\0\0").unwrap();
        let refs = u32::from_le_bytes(b[sk + 12..sk + 16].try_into().unwrap()) as usize;
        assert_eq!(refs, h.root.count_keys());
        assert_eq!(
            u32::from_le_bytes(b[sk + 4..sk + 8].try_into().unwrap()) as usize,
            sk - 4 - 4096
        );
    }

    #[test]
    fn refuses_duplicate_names_and_long_names() {
        let mut h = Hive::new_empty("R", 5);
        h.root.subkeys.push(super::super::Key::new("a", 1));
        h.root.subkeys.push(super::super::Key::new("A", 1));
        assert!(h
            .to_bytes()
            .unwrap_err()
            .to_string()
            .contains("two subkeys"));
        let mut h = Hive::new_empty("R", 5);
        h.root
            .subkeys
            .push(super::super::Key::new(&"x".repeat(256), 1));
        assert!(h.to_bytes().is_err());
    }
}
