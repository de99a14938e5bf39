//! Index B+ trees: $INDEX_ROOT values, INDX blocks, index entries for $I30 and view indexes.
//!
//! Facts: docs/facts-ntfs.md §5. Entries arrive sorted in the index's collation; the tree
//! is built bottom-up with every leaf at the same depth, and a large index keeps only an
//! END entry in the root that points at the top block.

use super::record::{align8, apply_fixups};

/// Bytes in one index block (mkntfs and Windows).
pub const INDEX_BLOCK_SIZE: usize = 4096;
/// Where entries start in an INDX block: header 0x18, index header 0x10, update sequence
/// array (9 × 2) at 0x28, aligned to 8.
const BLOCK_ENTRIES_AT: usize = 0x40;
/// Entry bytes (END included) one block holds.
const BLOCK_ROOM: usize = INDEX_BLOCK_SIZE - BLOCK_ENTRIES_AT;

pub const INDEX_ENTRY_NODE: u16 = 1;
pub const INDEX_ENTRY_END: u16 = 2;

pub const COLLATION_FILE_NAME: u32 = 0x01;
pub const COLLATION_NTOFS_ULONG: u32 = 0x10;
pub const COLLATION_NTOFS_SID: u32 = 0x11;
pub const COLLATION_NTOFS_SECURITY_HASH: u32 = 0x12;
pub const COLLATION_NTOFS_ULONGS: u32 = 0x13;

/// An $I30 entry: file reference, key = the $FILE_NAME value.
pub fn file_name_entry(mref: u64, key: &[u8]) -> Vec<u8> {
    let len = align8(16 + key.len());
    let mut e = vec![0u8; len];
    e[0..8].copy_from_slice(&mref.to_le_bytes());
    e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
    e[10..12].copy_from_slice(&(key.len() as u16).to_le_bytes());
    e[16..16 + key.len()].copy_from_slice(key);
    e
}

/// A view-index entry: key, then data at an 8-aligned... offset given by the layouts in
/// facts §2.7/§2.8 (`data_offset`), then `pad` bytes counted in the length only.
pub fn view_entry(key: &[u8], data_offset: usize, data: &[u8], pad: &[u8]) -> Vec<u8> {
    let len = align8(data_offset + data.len() + pad.len());
    let mut e = vec![0u8; len];
    e[0..2].copy_from_slice(&(data_offset as u16).to_le_bytes());
    e[2..4].copy_from_slice(&(data.len() as u16).to_le_bytes());
    e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
    e[10..12].copy_from_slice(&(key.len() as u16).to_le_bytes());
    e[16..16 + key.len()].copy_from_slice(key);
    e[data_offset..data_offset + data.len()].copy_from_slice(data);
    e[data_offset + data.len()..data_offset + data.len() + pad.len()].copy_from_slice(pad);
    e
}

fn end_entry(child: Option<u64>) -> Vec<u8> {
    let len: u16 = if child.is_some() { 24 } else { 16 };
    let mut e = vec![0u8; usize::from(len)];
    e[8..10].copy_from_slice(&len.to_le_bytes());
    let mut flags = INDEX_ENTRY_END;
    if let Some(v) = child {
        flags |= INDEX_ENTRY_NODE;
        e[16..24].copy_from_slice(&v.to_le_bytes());
    }
    e[12..14].copy_from_slice(&flags.to_le_bytes());
    e
}

fn with_child(entry: &[u8], child: Option<u64>) -> Vec<u8> {
    let mut e = entry.to_vec();
    if let Some(v) = child {
        let len = e.len() + 8;
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        let flags = u16::from_le_bytes([e[12], e[13]]) | INDEX_ENTRY_NODE;
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&v.to_le_bytes());
    }
    e
}

/// A built index.
pub struct BuiltIndex {
    /// Root entries (END included).
    pub root_entries: Vec<u8>,
    pub large: bool,
    /// INDX blocks in VCN order, fixups applied.
    pub blocks: Vec<Vec<u8>>,
}

/// Bytes of the root entries of a small index.
pub fn small_root_len(entries: &[Vec<u8>]) -> usize {
    entries.iter().map(Vec::len).sum::<usize>() + 16
}

/// Build a small index (everything in the root).
pub fn build_small(entries: &[Vec<u8>]) -> BuiltIndex {
    let mut root = Vec::new();
    for e in entries {
        root.extend_from_slice(e);
    }
    root.extend_from_slice(&end_entry(None));
    BuiltIndex {
        root_entries: root,
        large: false,
        blocks: Vec::new(),
    }
}

/// Build a large index; `vcn_of(i)` gives block i's VCN.
pub fn build_large(entries: &[Vec<u8>], vcn_of: impl Fn(usize) -> u64) -> BuiltIndex {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut items: Vec<(Vec<u8>, Option<u64>)> =
        entries.iter().map(|e| (e.clone(), None)).collect();
    let mut last: Option<u64> = None;
    loop {
        let internal = last.is_some();
        let end_len = if internal { 24 } else { 16 };
        let size = |it: &(Vec<u8>, Option<u64>)| it.0.len() + if it.1.is_some() { 8 } else { 0 };
        let mut seps: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
        let mut cur: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
        let mut cur_len = 0;
        let mut nodes = 0usize;
        let close = |cur: Vec<(Vec<u8>, Option<u64>)>,
                     end_child: Option<u64>,
                     blocks: &mut Vec<Vec<u8>>| {
            let vcn = vcn_of(blocks.len());
            let mut body = Vec::new();
            for (e, c) in &cur {
                body.extend_from_slice(&with_child(e, *c));
            }
            body.extend_from_slice(&end_entry(end_child));
            blocks.push(indx_block(vcn, &body, internal));
            vcn
        };
        let n = items.len();
        let mut i = 0;
        while i < n {
            let it = &items[i];
            let sz = size(it);
            if cur_len + sz + end_len > BLOCK_ROOM && !cur.is_empty() {
                if i == n - 1 {
                    // Never leave the last node empty: promote the previous entry instead.
                    let prev = cur.pop().expect("non-empty");
                    let vcn = close(std::mem::take(&mut cur), prev.1, &mut blocks);
                    nodes += 1;
                    seps.push((prev.0, Some(vcn)));
                    cur_len = 0;
                    continue;
                }
                let vcn = close(std::mem::take(&mut cur), it.1, &mut blocks);
                nodes += 1;
                seps.push((it.0.clone(), Some(vcn)));
                cur_len = 0;
                i += 1;
                continue;
            }
            cur_len += sz;
            cur.push(it.clone());
            i += 1;
        }
        let vcn = close(cur, last, &mut blocks);
        nodes += 1;
        if nodes == 1 {
            return BuiltIndex {
                root_entries: end_entry(Some(vcn)),
                large: true,
                blocks,
            };
        }
        items = seps;
        last = Some(vcn);
    }
}

fn indx_block(vcn: u64, entries: &[u8], internal: bool) -> Vec<u8> {
    let mut b = vec![0u8; INDEX_BLOCK_SIZE];
    b[0..4].copy_from_slice(b"INDX");
    b[4..6].copy_from_slice(&0x28u16.to_le_bytes());
    b[6..8].copy_from_slice(&((INDEX_BLOCK_SIZE / 512 + 1) as u16).to_le_bytes());
    b[0x10..0x18].copy_from_slice(&vcn.to_le_bytes());
    let entries_offset = (BLOCK_ENTRIES_AT - 0x18) as u32;
    b[0x18..0x1C].copy_from_slice(&entries_offset.to_le_bytes());
    b[0x1C..0x20].copy_from_slice(&(entries_offset + entries.len() as u32).to_le_bytes());
    b[0x20..0x24].copy_from_slice(&((INDEX_BLOCK_SIZE - 0x18) as u32).to_le_bytes());
    b[0x24] = u8::from(internal);
    b[BLOCK_ENTRIES_AT..BLOCK_ENTRIES_AT + entries.len()].copy_from_slice(entries);
    apply_fixups(&mut b, 0x28);
    b
}

/// An $INDEX_ROOT value.
pub fn root_value(
    indexed_type: u32,
    collation: u32,
    clusters_per_block: u8,
    built: &BuiltIndex,
) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[0..4].copy_from_slice(&indexed_type.to_le_bytes());
    v[4..8].copy_from_slice(&collation.to_le_bytes());
    v[8..12].copy_from_slice(&(INDEX_BLOCK_SIZE as u32).to_le_bytes());
    v[12] = clusters_per_block;
    let len = (16 + built.root_entries.len()) as u32;
    v[16..20].copy_from_slice(&16u32.to_le_bytes());
    v[20..24].copy_from_slice(&len.to_le_bytes());
    v[24..28].copy_from_slice(&len.to_le_bytes());
    v[28] = u8::from(built.large);
    v.extend_from_slice(&built.root_entries);
    v
}

/// Size of an $INDEX_ROOT value whose entries take `entries_len` bytes.
pub fn root_value_len(entries_len: usize) -> usize {
    32 + entries_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: &[u8]) -> u32 {
        u32::from_le_bytes([e[16], e[17], e[18], e[19]])
    }

    /// Walk a built tree in order, checking every node and returning the keys.
    fn walk(built: &BuiltIndex) -> Vec<u32> {
        fn node(
            blocks: &[Vec<u8>],
            entries: &[u8],
            out: &mut Vec<u32>,
            depth: usize,
            leaf_depths: &mut Vec<usize>,
        ) {
            let mut p = 0;
            loop {
                let len = u16::from_le_bytes([entries[p + 8], entries[p + 9]]) as usize;
                let flags = u16::from_le_bytes([entries[p + 12], entries[p + 13]]);
                if flags & INDEX_ENTRY_NODE != 0 {
                    let vcn = u64::from_le_bytes(entries[p + len - 8..p + len].try_into().unwrap())
                        as usize;
                    let mut b = blocks[vcn].clone();
                    // undo fixups
                    for i in 0..8 {
                        let s = [b[0x2A + 2 * i], b[0x2B + 2 * i]];
                        b[(i + 1) * 512 - 2..(i + 1) * 512].copy_from_slice(&s);
                    }
                    let il = u32::from_le_bytes(b[0x1C..0x20].try_into().unwrap()) as usize;
                    node(blocks, &b[0x40..0x18 + il], out, depth + 1, leaf_depths);
                } else if flags & INDEX_ENTRY_END != 0 {
                    leaf_depths.push(depth);
                }
                if flags & INDEX_ENTRY_END != 0 {
                    return;
                }
                out.push(key_of(&entries[p..]));
                p += len;
            }
        }
        let mut out = Vec::new();
        let mut depths = Vec::new();
        node(&built.blocks, &built.root_entries, &mut out, 0, &mut depths);
        assert!(
            depths.iter().all(|&d| d == depths[0]),
            "unbalanced: {depths:?}"
        );
        out
    }

    #[test]
    fn large_indexes_keep_every_key_in_order_and_balanced() {
        for n in [1usize, 40, 41, 100, 5000, 30000] {
            let entries: Vec<Vec<u8>> = (0..n as u32)
                .map(|i| view_entry(&i.to_le_bytes(), 0x14, &[0u8; 0x60], &[]))
                .collect();
            let built = build_large(&entries, |i| i as u64);
            assert_eq!(walk(&built), (0..n as u32).collect::<Vec<_>>(), "n={n}");
        }
    }
}
