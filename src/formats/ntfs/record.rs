//! MFT records and attributes: encoding, mapping pairs, update sequence fixups.
//!
//! Facts: docs/facts-ntfs.md §3 (records, attribute headers, fixups, attribute order),
//! §6 (mapping pairs), §7 (attribute list entries).

use std::cmp::Ordering;

use crate::tree::upcase;

/// Bytes in one MFT record on 512-byte-sector volumes (mkntfs and Windows, facts §1); a
/// record is never smaller than a sector.
pub const RECORD_SIZE: usize = 1024;

/// Where the first attribute starts: header (0x30) + update sequence array, aligned.
pub fn attrs_offset(record_size: usize) -> usize {
    align8(0x30 + 2 * (record_size / 512 + 1))
}

/// Room for attributes in one record: everything but the header and the 8-byte end marker.
pub fn record_room(record_size: usize) -> usize {
    record_size - attrs_offset(record_size) - 8
}
/// The update sequence number we write everywhere. Any value but 0 and 0xFFFF works; one
/// fixed value keeps $MFTMirr a byte copy of $MFT and the output reproducible.
pub const USN: u16 = 1;

pub const AT_STANDARD_INFORMATION: u32 = 0x10;
pub const AT_ATTRIBUTE_LIST: u32 = 0x20;
pub const AT_FILE_NAME: u32 = 0x30;
pub const AT_OBJECT_ID: u32 = 0x40;
pub const AT_VOLUME_NAME: u32 = 0x60;
pub const AT_VOLUME_INFORMATION: u32 = 0x70;
pub const AT_DATA: u32 = 0x80;
pub const AT_INDEX_ROOT: u32 = 0x90;
pub const AT_INDEX_ALLOCATION: u32 = 0xA0;
pub const AT_BITMAP: u32 = 0xB0;
pub const AT_REPARSE_POINT: u32 = 0xC0;

/// Attribute flag: sparse.
pub const ATTR_IS_SPARSE: u16 = 0x8000;

/// A run of a non-resident attribute: `lcn` None is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub lcn: Option<u64>,
    pub len: u64,
}

/// A non-resident attribute's description.
#[derive(Debug, Clone)]
pub struct NonResident {
    /// Runs in VCN order. Before layout, data runs hold `Some(0)` as a placeholder; the
    /// layout rewrites them (each attribute's data runs go in one contiguous area).
    pub runs: Vec<Run>,
    pub data_size: u64,
    pub init_size: u64,
    /// Upper bound for any LCN on the volume, used to size mapping pairs before layout.
    pub max_lcn: u64,
    /// Cluster size in bytes (one VCN).
    pub cluster: u64,
    /// What fills the clusters: an index into the plan's fill table.
    pub fill: Option<usize>,
}

impl NonResident {
    pub fn vcns(&self) -> u64 {
        self.runs.iter().map(|r| r.len).sum()
    }

    /// Clusters that hold data (not holes).
    pub fn data_clusters(&self) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.lcn.is_some())
            .map(|r| r.len)
            .sum()
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Resident { value: Vec<u8>, indexed: bool },
    NonResident(NonResident),
}

/// One attribute of a file.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ty: u32,
    pub name: Vec<u16>,
    pub flags: u16,
    pub body: Body,
}

impl Attr {
    pub fn resident(ty: u32, name: &str, value: Vec<u8>) -> Attr {
        Attr {
            ty,
            name: name.encode_utf16().collect(),
            flags: 0,
            body: Body::Resident {
                value,
                indexed: ty == AT_FILE_NAME,
            },
        }
    }

    pub fn non_resident(ty: u32, name: &str, nr: NonResident) -> Attr {
        Attr {
            ty,
            name: name.encode_utf16().collect(),
            flags: 0,
            body: Body::NonResident(nr),
        }
    }

    fn header_len(&self) -> usize {
        match &self.body {
            Body::Resident { .. } => 0x18,
            Body::NonResident(_) if self.flags & ATTR_IS_SPARSE != 0 => 0x48,
            Body::NonResident(_) => 0x40,
        }
    }

    /// Encoded length in a record. Before layout it is an upper bound (mapping pairs
    /// sized for the largest LCN), after layout exact.
    pub fn len(&self) -> usize {
        let name_end = self.header_len() + self.name.len() * 2;
        match &self.body {
            Body::Resident { value, .. } => align8(align8(name_end) + value.len()),
            Body::NonResident(nr) => align8(align8(name_end) + mapping_pairs_len(nr)),
        }
    }

    /// Sort key: type, then name in file-name collation, then (resident) value.
    pub fn order(&self, other: &Attr) -> Ordering {
        self.ty
            .cmp(&other.ty)
            .then_with(|| upcase::collate_names(&self.name, &other.name))
            .then_with(|| match (&self.body, &other.body) {
                (Body::Resident { value: a, .. }, Body::Resident { value: b, .. }) => a.cmp(b),
                _ => Ordering::Equal,
            })
    }

    /// Encode into `out` with `instance`.
    pub fn encode(&self, instance: u16, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.len();
        out.resize(start + len, 0);
        let a = &mut out[start..];
        a[0..4].copy_from_slice(&self.ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[9] = self.name.len() as u8;
        let hl = self.header_len();
        a[10..12].copy_from_slice(&(hl as u16).to_le_bytes());
        a[12..14].copy_from_slice(&self.flags.to_le_bytes());
        a[14..16].copy_from_slice(&instance.to_le_bytes());
        for (i, c) in self.name.iter().enumerate() {
            a[hl + 2 * i..hl + 2 * i + 2].copy_from_slice(&c.to_le_bytes());
        }
        let body_off = align8(hl + self.name.len() * 2);
        match &self.body {
            Body::Resident { value, indexed } => {
                a[8] = 0;
                a[0x10..0x14].copy_from_slice(&(value.len() as u32).to_le_bytes());
                a[0x14..0x16].copy_from_slice(&(body_off as u16).to_le_bytes());
                a[0x16] = u8::from(*indexed);
                a[body_off..body_off + value.len()].copy_from_slice(value);
            }
            Body::NonResident(nr) => {
                a[8] = 1;
                let vcns = nr.vcns();
                a[0x10..0x18].copy_from_slice(&0u64.to_le_bytes());
                a[0x18..0x20].copy_from_slice(&(vcns as i64 - 1).to_le_bytes());
                a[0x20..0x22].copy_from_slice(&(body_off as u16).to_le_bytes());
                let cs_alloc = nr.cluster;
                a[0x28..0x30].copy_from_slice(&(vcns * cs_alloc).to_le_bytes());
                a[0x30..0x38].copy_from_slice(&nr.data_size.to_le_bytes());
                a[0x38..0x40].copy_from_slice(&nr.init_size.to_le_bytes());
                if hl == 0x48 {
                    a[0x40..0x48].copy_from_slice(&(nr.data_clusters() * cs_alloc).to_le_bytes());
                }
                let mp = mapping_pairs(&nr.runs);
                a[body_off..body_off + mp.len()].copy_from_slice(&mp);
            }
        }
    }
}

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes needed to hold `v` as a signed little-endian number.
fn signed_bytes(v: i64) -> usize {
    for n in 1..8 {
        let lim = 1i64 << (8 * n - 1);
        if v >= -lim && v < lim {
            return n;
        }
    }
    8
}

/// Mapping pairs for `runs` (facts §6).
pub fn mapping_pairs(runs: &[Run]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev: i64 = 0;
    for r in runs {
        let lb = signed_bytes(r.len as i64);
        match r.lcn {
            Some(lcn) => {
                let delta = lcn as i64 - prev;
                let db = signed_bytes(delta);
                out.push((db << 4 | lb) as u8);
                out.extend_from_slice(&(r.len as i64).to_le_bytes()[..lb]);
                out.extend_from_slice(&delta.to_le_bytes()[..db]);
                prev = lcn as i64;
            }
            None => {
                out.push(lb as u8);
                out.extend_from_slice(&(r.len as i64).to_le_bytes()[..lb]);
            }
        }
    }
    out.push(0);
    out
}

/// Upper bound of the mapping pairs' length before LCNs are known.
fn mapping_pairs_len(nr: &NonResident) -> usize {
    let worst = signed_bytes(nr.max_lcn as i64);
    let placeholder = nr.runs.iter().any(|r| r.lcn == Some(u64::MAX));
    if placeholder {
        1 + nr
            .runs
            .iter()
            .map(|r| 1 + signed_bytes(r.len as i64) + if r.lcn.is_some() { worst } else { 0 })
            .sum::<usize>()
    } else {
        mapping_pairs(&nr.runs).len()
    }
}

/// Placeholder LCN for data runs before layout.
pub const UNPLACED: u64 = u64::MAX;

/// Apply the update sequence to a multi-sector structure in place (facts §3).
pub fn apply_fixups(buf: &mut [u8], usa_ofs: usize) {
    let count = buf.len() / 512;
    buf[usa_ofs..usa_ofs + 2].copy_from_slice(&USN.to_le_bytes());
    for i in 0..count {
        let end = (i + 1) * 512 - 2;
        let saved = [buf[end], buf[end + 1]];
        buf[usa_ofs + 2 + 2 * i..usa_ofs + 4 + 2 * i].copy_from_slice(&saved);
        buf[end..end + 2].copy_from_slice(&USN.to_le_bytes());
    }
}

/// Record header fields.
pub struct RecordHeader {
    pub number: u64,
    pub seq: u16,
    pub link_count: u16,
    pub flags: u16,
    /// Base record reference for extension records, 0 for base records.
    pub base: u64,
}

pub const MFT_RECORD_IN_USE: u16 = 0x1;
pub const MFT_RECORD_IS_DIRECTORY: u16 = 0x2;
pub const MFT_RECORD_IS_4: u16 = 0x4;
pub const MFT_RECORD_IS_VIEW_INDEX: u16 = 0x8;

/// Encode a whole record (fixups applied). `attrs` must be sorted and fit.
pub fn encode_record(h: &RecordHeader, attrs: &[Attr], record_size: usize) -> Vec<u8> {
    let ao = attrs_offset(record_size);
    let mut r = Vec::with_capacity(record_size);
    r.extend_from_slice(b"FILE");
    r.extend_from_slice(&0x30u16.to_le_bytes());
    r.extend_from_slice(&((record_size / 512 + 1) as u16).to_le_bytes());
    r.extend_from_slice(&0u64.to_le_bytes()); // lsn
    r.extend_from_slice(&h.seq.to_le_bytes());
    r.extend_from_slice(&h.link_count.to_le_bytes());
    r.extend_from_slice(&(ao as u16).to_le_bytes());
    r.extend_from_slice(&h.flags.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes()); // bytes in use, below
    r.extend_from_slice(&(record_size as u32).to_le_bytes());
    r.extend_from_slice(&h.base.to_le_bytes());
    r.extend_from_slice(&(attrs.len() as u16).to_le_bytes()); // next attribute instance
    r.extend_from_slice(&0u16.to_le_bytes());
    r.extend_from_slice(&(h.number as u32).to_le_bytes());
    r.resize(ao, 0);
    for (i, a) in attrs.iter().enumerate() {
        a.encode(i as u16, &mut r);
    }
    r.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    let in_use = r.len() as u32;
    assert!(
        r.len() <= record_size,
        "record {} overflows: {} bytes",
        h.number,
        r.len()
    );
    r[0x18..0x1C].copy_from_slice(&in_use.to_le_bytes());
    r.resize(record_size, 0);
    apply_fixups(&mut r, 0x30);
    r
}

/// One $ATTRIBUTE_LIST entry (facts §7).
pub fn attr_list_entry(ty: u32, name: &[u16], mref: u64, instance: u16, out: &mut Vec<u8>) {
    let len = align8(0x1A + name.len() * 2);
    let start = out.len();
    out.resize(start + len, 0);
    let e = &mut out[start..];
    e[0..4].copy_from_slice(&ty.to_le_bytes());
    e[4..6].copy_from_slice(&(len as u16).to_le_bytes());
    e[6] = name.len() as u8;
    e[7] = 0x1A;
    e[16..24].copy_from_slice(&mref.to_le_bytes());
    e[24..26].copy_from_slice(&instance.to_le_bytes());
    for (i, c) in name.iter().enumerate() {
        e[0x1A + 2 * i..0x1C + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_pairs_match_windows_examples() {
        assert_eq!(
            mapping_pairs(&[Run {
                lcn: Some(786432),
                len: 64
            }]),
            [0x31, 0x40, 0x00, 0x00, 0x0C, 0x00]
        );
        assert_eq!(
            mapping_pairs(&[
                Run {
                    lcn: Some(786431),
                    len: 1
                },
                Run {
                    lcn: Some(37),
                    len: 1
                }
            ]),
            [0x31, 0x01, 0xFF, 0xFF, 0x0B, 0x31, 0x01, 0x26, 0x00, 0xF4, 0x00]
        );
        assert_eq!(
            mapping_pairs(&[Run {
                lcn: None,
                len: 3_321_087
            }]),
            [0x03, 0xFF, 0xAC, 0x32, 0x00]
        );
    }

    #[test]
    fn fixups_save_sector_tails() {
        let mut b = vec![0xABu8; 1024];
        b[0x30..0x36].fill(0);
        apply_fixups(&mut b, 0x30);
        assert_eq!(&b[0x30..0x36], &[1, 0, 0xAB, 0xAB, 0xAB, 0xAB]);
        assert_eq!(&b[510..512], &[1, 0]);
        assert_eq!(&b[1022..1024], &[1, 0]);
    }
}
