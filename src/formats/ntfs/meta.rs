//! Fixed metadata contents: the boot sector, $AttrDef, the system security descriptors,
//! $UpCase:$Info and the $LogFile size rule.
//!
//! Facts: docs/facts-ntfs.md §1 (boot sector), §2.3 ($LogFile), §2.5 ($AttrDef), §2.6
//! ($UpCase:$Info), §2.7 ($Secure descriptors and hash).

use crate::tree::upcase;

/// Boot sector fields that depend on the volume.
pub struct BootParams {
    pub sector_size: u32,
    pub cluster_size: u32,
    pub hidden_sectors: u64,
    /// Sectors in the volume minus one: the last one holds the backup boot sector.
    pub total_sectors: u64,
    pub mft_lcn: u64,
    pub mftmirr_lcn: u64,
    pub record_size: u32,
    pub index_block_size: u32,
    pub serial: u64,
}

/// The "clusters per record" byte: the count when the record spans whole clusters,
/// otherwise −log2(bytes) (facts §1, offsets 0x40 and 0x44).
fn clusters_per(size: u32, cluster: u32) -> u8 {
    if size >= cluster {
        (size / cluster) as u8
    } else {
        (-(size.trailing_zeros() as i32)) as i8 as u8
    }
}

/// The 512-byte boot sector ($Boot's first sector; the backup is identical).
pub fn boot_sector(p: &BootParams) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
    b[3..11].copy_from_slice(b"NTFS    ");
    b[0x0B..0x0D].copy_from_slice(&(p.sector_size as u16).to_le_bytes());
    let spc = p.cluster_size / p.sector_size;
    // Up to 128 sectors the count itself, above it 2^(256 − value) sectors.
    b[0x0D] = if spc <= 128 {
        spc as u8
    } else {
        (256 - spc.trailing_zeros()) as u8
    };
    b[0x15] = 0xF8;
    b[0x18..0x1A].copy_from_slice(&63u16.to_le_bytes());
    b[0x1A..0x1C].copy_from_slice(&255u16.to_le_bytes());
    b[0x1C..0x20]
        .copy_from_slice(&(p.hidden_sectors.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    b[0x24] = 0x80;
    b[0x26] = 0x80;
    b[0x28..0x30].copy_from_slice(&p.total_sectors.to_le_bytes());
    b[0x30..0x38].copy_from_slice(&p.mft_lcn.to_le_bytes());
    b[0x38..0x40].copy_from_slice(&p.mftmirr_lcn.to_le_bytes());
    b[0x40] = clusters_per(p.record_size, p.cluster_size);
    b[0x44] = clusters_per(p.index_block_size, p.cluster_size);
    b[0x48..0x50].copy_from_slice(&p.serial.to_le_bytes());
    // Bootstrap: this volume is not booted through its boot sector (UEFI loads the boot
    // manager from the ESP), so the code only reports a boot failure to the BIOS (INT 18h)
    // and halts.
    b[0x54..0x59].copy_from_slice(&[0xCD, 0x18, 0xF4, 0xEB, 0xFD]);
    b[0x1FE] = 0x55;
    b[0x1FF] = 0xAA;
    b
}

/// $AttrDef: 16 slots of 160 bytes, the last all zero (facts §2.5).
pub fn attrdef() -> Vec<u8> {
    const DEFS: &[(&str, u32, u32, i64, i64)] = &[
        ("$STANDARD_INFORMATION", 0x10, 0x40, 48, 72),
        ("$ATTRIBUTE_LIST", 0x20, 0x80, 0, -1),
        ("$FILE_NAME", 0x30, 0x42, 68, 578),
        ("$OBJECT_ID", 0x40, 0x40, 0, 256),
        ("$SECURITY_DESCRIPTOR", 0x50, 0x80, 0, -1),
        ("$VOLUME_NAME", 0x60, 0x40, 2, 256),
        ("$VOLUME_INFORMATION", 0x70, 0x40, 12, 12),
        ("$DATA", 0x80, 0x00, 0, -1),
        ("$INDEX_ROOT", 0x90, 0x40, 0, -1),
        ("$INDEX_ALLOCATION", 0xA0, 0x80, 0, -1),
        ("$BITMAP", 0xB0, 0x80, 0, -1),
        ("$REPARSE_POINT", 0xC0, 0x80, 0, 16384),
        ("$EA_INFORMATION", 0xD0, 0x40, 8, 8),
        ("$EA", 0xE0, 0x00, 0, 65536),
        ("$LOGGED_UTILITY_STREAM", 0x100, 0x80, 0, 65536),
    ];
    let mut out = vec![0u8; 16 * 160];
    for (i, &(name, ty, flags, min, max)) in DEFS.iter().enumerate() {
        let e = &mut out[i * 160..(i + 1) * 160];
        for (j, c) in name.encode_utf16().enumerate() {
            e[j * 2..j * 2 + 2].copy_from_slice(&c.to_le_bytes());
        }
        e[0x80..0x84].copy_from_slice(&ty.to_le_bytes());
        e[0x8C..0x90].copy_from_slice(&flags.to_le_bytes());
        e[0x90..0x98].copy_from_slice(&min.to_le_bytes());
        e[0x98..0xA0].copy_from_slice(&max.to_le_bytes());
    }
    out
}

/// $UpCase:$Info: length, CRC-64 of the table, OS version fields left 0 as mkntfs does.
pub fn upcase_info() -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[0..4].copy_from_slice(&32u32.to_le_bytes());
    v[8..16].copy_from_slice(&upcase::crc64(&upcase::table_bytes()).to_le_bytes());
    v
}

/// $LogFile size for a volume, a cluster multiple.
///
/// Up to 200 MiB the mkntfs rule (facts §2.3). Above it, the size Windows 10's format gives:
/// volume / 800 + 3.5 MiB, rounded up to a cluster, at most 64 MiB. That line passes exactly
/// through both sizes Windows is known to have written: 20,676,608 bytes for the
/// 13,603,176,448-byte volume of facts §2.3 (Windows 10 19041), and 36,352 KiB for a
/// 26,214,399 KiB volume in a chkdsk report (pastebin.com/cH2JVeAP). chkdsk reports of large
/// volumes all show the 64 MiB cap. mkntfs gives 64 MiB from 12 GiB up, so below about
/// 47 GiB our log is smaller than mkntfs'.
pub fn logfile_size(volume: u64, cluster: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let s = if volume < 2 * MIB {
        256 * 1024
    } else if volume < 4_000_000 {
        512 * 1024
    } else if volume <= 200 * MIB {
        2 * MIB
    } else {
        return (volume / 800 + 3 * MIB + MIB / 2)
            .min(64 * MIB)
            .div_ceil(cluster)
            * cluster;
    };
    (s / cluster).max(1) * cluster
}

/// A SID in binary form: revision 1, authority, sub-authorities.
fn sid(authority: u8, subs: &[u32]) -> Vec<u8> {
    let mut v = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, authority];
    for s in subs {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

/// An access-allowed ACE.
fn ace(flags: u8, mask: u32, sid: &[u8]) -> Vec<u8> {
    let mut v = vec![0, flags];
    v.extend_from_slice(&((8 + sid.len()) as u16).to_le_bytes());
    v.extend_from_slice(&mask.to_le_bytes());
    v.extend_from_slice(sid);
    v
}

/// A self-relative descriptor: header, DACL, owner, group (the order mkntfs uses).
fn descriptor(aces: &[Vec<u8>], owner: &[u8], group: &[u8]) -> Vec<u8> {
    let acl_len = 8 + aces.iter().map(Vec::len).sum::<usize>();
    let dacl_off = 20u32;
    let owner_off = dacl_off + acl_len as u32;
    let group_off = owner_off + owner.len() as u32;
    let mut v = vec![1, 0];
    v.extend_from_slice(&0x8004u16.to_le_bytes()); // SE_SELF_RELATIVE | SE_DACL_PRESENT
    v.extend_from_slice(&owner_off.to_le_bytes());
    v.extend_from_slice(&group_off.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&dacl_off.to_le_bytes());
    v.extend_from_slice(&[2, 0]);
    v.extend_from_slice(&(acl_len as u16).to_le_bytes());
    v.extend_from_slice(&(aces.len() as u16).to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    for a in aces {
        v.extend_from_slice(a);
    }
    v.extend_from_slice(owner);
    v.extend_from_slice(group);
    v
}

/// The descriptors mkntfs gives system files: owner and group Administrators, DACL
/// SYSTEM and Administrators with `mask` (0x120089 for id 0x100, 0x12019F for id 0x101).
pub fn system_descriptor(mask: u32) -> Vec<u8> {
    let admins = sid(5, &[32, 544]);
    descriptor(
        &[ace(0, mask, &sid(5, &[18])), ace(0, mask, &admins)],
        &admins,
        &admins,
    )
}

/// The descriptor for tree nodes that carry none: owner Administrators, group SYSTEM,
/// Everyone full control inherited by files and folders (what Windows gives a new root).
pub fn default_descriptor() -> Vec<u8> {
    descriptor(
        &[ace(0x03, 0x001F_01FF, &sid(1, &[0]))],
        &sid(5, &[32, 544]),
        &sid(5, &[18]),
    )
}

/// The $Secure hash of a descriptor: h = word + rotl(h, 3) over its u32 words.
pub fn security_hash(sd: &[u8]) -> u32 {
    sd.chunks_exact(4).fold(0u32, |h, w| {
        u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_add(h.rotate_left(3))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfile_size_follows_windows_above_200_mib() {
        assert_eq!(logfile_size(13_603_176_448, 4096), 20_676_608);
        assert_eq!(logfile_size(26_214_399 * 1024, 4096), 36_352 * 1024);
        assert_eq!(logfile_size(1 << 40, 4096), 64 << 20);
        assert_eq!(logfile_size(64 << 20, 4096), 2 << 20);
        assert_eq!(logfile_size(1 << 20, 4096), 256 << 10);
        assert_eq!(logfile_size(13_603_176_448, 65536) % 65536, 0);
    }

    #[test]
    fn system_descriptors_match_mkntfs_hashes() {
        let a = system_descriptor(0x0012_0089);
        let b = system_descriptor(0x0012_019F);
        assert_eq!(a.len(), 0x68);
        assert_eq!(security_hash(&a), 0xF80312F0);
        assert_eq!(security_hash(&b), 0x00B32451);
    }

    #[test]
    fn boot_sector_fields() {
        let b = boot_sector(&BootParams {
            sector_size: 512,
            cluster_size: 65536,
            hidden_sectors: 2048,
            total_sectors: 1000,
            mft_lcn: 4,
            mftmirr_lcn: 2,
            record_size: 1024,
            index_block_size: 4096,
            serial: 7,
        });
        assert_eq!(b[0x0D], 128);
        assert_eq!(b[0x40], 0xF6);
        assert_eq!(b[0x44], 0xF4);
        assert_eq!(&b[0x1FE..], &[0x55, 0xAA]);
        let b = boot_sector(&BootParams {
            sector_size: 512,
            cluster_size: 512,
            hidden_sectors: 0,
            total_sectors: 1000,
            mft_lcn: 4,
            mftmirr_lcn: 2,
            record_size: 1024,
            index_block_size: 4096,
            serial: 7,
        });
        assert_eq!((b[0x0D], b[0x40], b[0x44]), (1, 2, 8));
    }
}
