//! Generator of the hostile WIM catalogue (see README.md next to this file). Each case
//! patches a small WIM captured by wimlib-imagex at test time and names the error text the
//! reader must answer with.

use sha1::{Digest, Sha1};

pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// Text the error message must contain.
    pub expect: &'static str,
}

fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// (entry offset, reshdr offset, size_in_wim, flags, uncompressed size) of blob-table entries.
fn blob_entries(w: &[u8]) -> Vec<(usize, u64, u64, u8, u64)> {
    let off = u64at(w, 0x38) as usize;
    let size = (u64at(w, 0x30) & 0x00FF_FFFF_FFFF_FFFF) as usize;
    (0..size / 50)
        .map(|i| {
            let e = off + 50 * i;
            (
                e,
                u64at(w, e + 8),
                u64at(w, e) & 0x00FF_FFFF_FFFF_FFFF,
                w[e + 7],
                u64at(w, e + 16),
            )
        })
        .collect()
}

/// The (uncompressed) metadata resource of image 1: (blob entry offset, data offset, size).
fn metadata(w: &[u8]) -> (usize, usize, usize) {
    let (e, off, size, _, _) = *blob_entries(w)
        .iter()
        .find(|x| x.3 & 0x02 != 0)
        .expect("metadata entry");
    (e, off as usize, size as usize)
}

/// Apply `patch` to the metadata bytes, then store their new SHA-1 in the blob table so
/// only the structural fault remains.
fn patch_metadata(
    w: &[u8],
    patch: impl FnOnce(&mut [u8], &nanoforge::formats::wim::ImageTree),
) -> Vec<u8> {
    let mut w = w.to_vec();
    let (e, off, size) = metadata(&w);
    let tree = nanoforge::formats::wim::ImageTree::parse(&w[off..off + size], 1)
        .expect("pristine metadata parses");
    patch(&mut w[off..off + size], &tree);
    let h: [u8; 20] = Sha1::digest(&w[off..off + size]).into();
    w[e + 30..e + 50].copy_from_slice(&h);
    w
}

fn dentry_at(tree: &nanoforge::formats::wim::ImageTree, path: &str) -> usize {
    tree.entries[tree
        .lookup(path)
        .unwrap_or_else(|| panic!("{path} in fixture"))]
    .offset as usize
}

fn set_name(m: &mut [u8], at: usize, name: &str) {
    for (k, u) in name.encode_utf16().enumerate() {
        m[at + 0x66 + 2 * k..at + 0x68 + 2 * k].copy_from_slice(&u.to_le_bytes());
    }
}

/// All cases. `none` is an uncompressed WIM of the hostile tree, `lzx` the same with LZX.
pub fn cases(none: &[u8], lzx: &[u8]) -> Vec<Case> {
    let mut v = Vec::new();
    v.push(Case {
        name: "truncated_header",
        bytes: none[..100].to_vec(),
        expect: "shorter than the 208-byte header",
    });
    let mut b = none.to_vec();
    put64(&mut b, 0x38, none.len() as u64 - 10);
    v.push(Case {
        name: "blob_table_past_eof",
        bytes: b,
        expect: "runs past the end",
    });

    // The LZX blob with the most chunks.
    let big = *blob_entries(lzx)
        .iter()
        .filter(|x| x.3 & 0x04 != 0 && x.3 & 0x02 == 0)
        .max_by_key(|x| x.4)
        .unwrap();
    let (e, off, _, _, usize_) = big;
    assert!(usize_ > 3 * 32768, "fixture needs a blob of several chunks");
    let mut b = lzx.to_vec();
    let t = off as usize;
    let (a0, a1) = (u32at(&b, t), u32at(&b, t + 4));
    put32(&mut b, t, a1);
    put32(&mut b, t + 4, a0);
    v.push(Case {
        name: "chunk_table_decreasing",
        bytes: b,
        expect: "offsets must increase",
    });
    let mut b = lzx.to_vec();
    put32(&mut b, t + 4, 0xFFFF_FF00);
    v.push(Case {
        name: "chunk_overruns_resource",
        bytes: b,
        expect: "chunk table",
    });
    let mut b = lzx.to_vec();
    put64(&mut b, e + 16, 1 << 50);
    v.push(Case {
        name: "huge_chunk_count",
        bytes: b,
        expect: "need a table larger than",
    });

    let mut b = none.to_vec();
    let pos = b
        .windows(super::MARKER.len())
        .position(|w| w == super::MARKER)
        .expect("marker in WIM");
    b[pos] ^= 1;
    v.push(Case {
        name: "wrong_sha1",
        bytes: b,
        expect: "/marker.txt",
    });

    v.push(Case {
        name: "dentry_cycle",
        bytes: patch_metadata(none, |m, t| {
            let root_list = t.entries[0]
                .children
                .iter()
                .map(|&c| t.entries[c].offset)
                .min()
                .unwrap();
            put64(m, dentry_at(t, "/sub") + 0x10, root_list);
        }),
        expect: "cycle",
    });
    v.push(Case {
        name: "name_dotdot",
        bytes: patch_metadata(none, |m, t| set_name(m, dentry_at(t, "/ab"), "..")),
        expect: "is \".\" or \"..\"",
    });
    v.push(Case {
        name: "name_slash",
        bytes: patch_metadata(none, |m, t| set_name(m, dentry_at(t, "/cd"), "c/")),
        expect: "contains '/'",
    });
    v.push(Case {
        name: "name_duplicate",
        bytes: patch_metadata(none, |m, t| set_name(m, dentry_at(t, "/cd"), "ab")),
        expect: "appears twice",
    });
    v.push(Case {
        name: "security_id_out_of_range",
        bytes: patch_metadata(none, |m, t| put32(m, dentry_at(t, "/ab") + 0x0C, 1000)),
        expect: "security id 1000 is out of range",
    });
    v.push(Case {
        name: "huge_security_count",
        bytes: patch_metadata(none, |m, _| put32(m, 4, 0x7FFF_FFFF)),
        expect: "security descriptors cannot fit",
    });
    v.push(Case {
        name: "huge_extra_streams",
        bytes: patch_metadata(none, |m, t| {
            m[dentry_at(t, "/ab") + 0x60..][..2].copy_from_slice(&[0xFF, 0xFF])
        }),
        expect: "extra streams exceed",
    });
    let mut b = none.to_vec();
    put32(&mut b, 0x2C, 60000);
    v.push(Case {
        name: "huge_image_count",
        bytes: b,
        expect: "metadata resources for 60000 images",
    });
    let mut b = none.to_vec();
    let big_size = u64at(&b, 0x30) | 0x00F0_0000_0000_0000;
    put64(&mut b, 0x30, big_size);
    v.push(Case {
        name: "huge_blob_table",
        bytes: b,
        expect: "runs past the end",
    });
    v
}
