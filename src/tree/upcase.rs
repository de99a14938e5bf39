//! The NTFS upcase table (Windows 7 and later, "version 6.1") and the file-name collation
//! built on it.
//!
//! Facts: docs/facts-ntfs.md §2.6 ($UpCase) and §5 ($I30 collation, COLLATION_FILE_NAME).
//! The table is the one mkntfs writes and Windows 10 build 19041 formats with (MD5
//! 7ff498a44e45e77374cc7c962b1b92f2); tests compare it with an mkntfs volume's $UpCase.

use std::cmp::Ordering;
use std::sync::OnceLock;

/// The table as runs of code units that share one delta: `(first, count, step, delta)` maps
/// `first + i·step` to `first + i·step + delta` for `i < count`. Every code unit not covered
/// maps to itself. This is a compact encoding of the 6.1 table, 973 changed entries in 134 runs.
const RUNS: &[(u16, u16, u16, i32)] = &[
    (0x0061, 26, 1, -32),
    (0x00e0, 23, 1, -32),
    (0x00f8, 7, 1, -32),
    (0x00ff, 1, 1, 121),
    (0x0101, 24, 2, -1),
    (0x0133, 3, 2, -1),
    (0x013a, 8, 2, -1),
    (0x014b, 23, 2, -1),
    (0x017a, 3, 2, -1),
    (0x0180, 1, 1, 195),
    (0x0183, 2, 2, -1),
    (0x0188, 1, 1, -1),
    (0x018c, 1, 1, -1),
    (0x0192, 1, 1, -1),
    (0x0195, 1, 1, 97),
    (0x0199, 1, 1, -1),
    (0x019a, 1, 1, 163),
    (0x019e, 1, 1, 130),
    (0x01a1, 3, 2, -1),
    (0x01a8, 1, 1, -1),
    (0x01ad, 1, 1, -1),
    (0x01b0, 1, 1, -1),
    (0x01b4, 2, 2, -1),
    (0x01b9, 1, 1, -1),
    (0x01bd, 1, 1, -1),
    (0x01bf, 1, 1, 56),
    (0x01c6, 1, 1, -2),
    (0x01c9, 1, 1, -2),
    (0x01cc, 1, 1, -2),
    (0x01ce, 8, 2, -1),
    (0x01dd, 1, 1, -79),
    (0x01df, 9, 2, -1),
    (0x01f3, 1, 1, -2),
    (0x01f5, 1, 1, -1),
    (0x01f9, 20, 2, -1),
    (0x0223, 9, 2, -1),
    (0x023c, 1, 1, -1),
    (0x0242, 1, 1, -1),
    (0x0247, 5, 2, -1),
    (0x0250, 1, 1, 10783),
    (0x0251, 1, 1, 10780),
    (0x0253, 1, 1, -210),
    (0x0254, 1, 1, -206),
    (0x0256, 2, 1, -205),
    (0x0259, 1, 1, -202),
    (0x025b, 1, 1, -203),
    (0x0260, 1, 1, -205),
    (0x0263, 1, 1, -207),
    (0x0268, 1, 1, -209),
    (0x0269, 1, 1, -211),
    (0x026b, 1, 1, 10743),
    (0x026f, 1, 1, -211),
    (0x0271, 1, 1, 10749),
    (0x0272, 1, 1, -213),
    (0x0275, 1, 1, -214),
    (0x027d, 1, 1, 10727),
    (0x0280, 1, 1, -218),
    (0x0283, 1, 1, -218),
    (0x0288, 1, 1, -218),
    (0x0289, 1, 1, -69),
    (0x028a, 2, 1, -217),
    (0x028c, 1, 1, -71),
    (0x0292, 1, 1, -219),
    (0x0371, 2, 2, -1),
    (0x0377, 1, 1, -1),
    (0x037b, 3, 1, 130),
    (0x03ac, 1, 1, -38),
    (0x03ad, 3, 1, -37),
    (0x03b1, 17, 1, -32),
    (0x03c3, 9, 1, -32),
    (0x03cc, 1, 1, -64),
    (0x03cd, 2, 1, -63),
    (0x03d7, 1, 1, -8),
    (0x03d9, 12, 2, -1),
    (0x03f2, 1, 1, 7),
    (0x03f8, 1, 1, -1),
    (0x03fb, 1, 1, -1),
    (0x0430, 32, 1, -32),
    (0x0450, 16, 1, -80),
    (0x0461, 17, 2, -1),
    (0x048b, 27, 2, -1),
    (0x04c2, 7, 2, -1),
    (0x04cf, 1, 1, -15),
    (0x04d1, 42, 2, -1),
    (0x0561, 38, 1, -48),
    (0x1d79, 1, 1, 35332),
    (0x1d7d, 1, 1, 3814),
    (0x1e01, 75, 2, -1),
    (0x1ea1, 48, 2, -1),
    (0x1f00, 8, 1, 8),
    (0x1f10, 6, 1, 8),
    (0x1f20, 8, 1, 8),
    (0x1f30, 8, 1, 8),
    (0x1f40, 6, 1, 8),
    (0x1f51, 4, 2, 8),
    (0x1f60, 8, 1, 8),
    (0x1f70, 2, 1, 74),
    (0x1f72, 4, 1, 86),
    (0x1f76, 2, 1, 100),
    (0x1f78, 2, 1, 128),
    (0x1f7a, 2, 1, 112),
    (0x1f7c, 2, 1, 126),
    (0x1f80, 8, 1, 8),
    (0x1f90, 8, 1, 8),
    (0x1fa0, 8, 1, 8),
    (0x1fb0, 2, 1, 8),
    (0x1fb3, 1, 1, 9),
    (0x1fc3, 1, 1, 9),
    (0x1fd0, 2, 1, 8),
    (0x1fe0, 2, 1, 8),
    (0x1fe5, 1, 1, 7),
    (0x1ff3, 1, 1, 9),
    (0x214e, 1, 1, -28),
    (0x2170, 16, 1, -16),
    (0x2184, 1, 1, -1),
    (0x24d0, 26, 1, -26),
    (0x2c30, 47, 1, -48),
    (0x2c61, 1, 1, -1),
    (0x2c65, 1, 1, -10795),
    (0x2c66, 1, 1, -10792),
    (0x2c68, 3, 2, -1),
    (0x2c73, 1, 1, -1),
    (0x2c76, 1, 1, -1),
    (0x2c81, 50, 2, -1),
    (0x2d00, 38, 1, -7264),
    (0xa641, 16, 2, -1),
    (0xa663, 6, 2, -1),
    (0xa681, 12, 2, -1),
    (0xa723, 7, 2, -1),
    (0xa733, 31, 2, -1),
    (0xa77a, 2, 2, -1),
    (0xa77f, 5, 2, -1),
    (0xa78c, 1, 1, -1),
    (0xff41, 26, 1, -32),
];

/// The 65,536-entry upcase table, built once.
pub fn table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<u16> = (0..=u16::MAX).collect();
        for &(first, count, step, delta) in RUNS {
            for i in 0..count {
                let c = usize::from(first) + usize::from(i) * usize::from(step);
                // The runs are constants whose targets all lie inside the BMP.
                t[c] = (c as i32 + delta) as u16;
            }
        }
        t
    })
}

/// The table as the 131,072 little-endian bytes of `$UpCase:$DATA`.
pub fn table_bytes() -> Vec<u8> {
    table().iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// One code unit upcased.
pub fn upcase_unit(c: u16) -> u16 {
    table()[usize::from(c)]
}

/// A UTF-16 name upcased unit by unit (surrogates map to themselves, as on NTFS).
pub fn upcase(name: &[u16]) -> Vec<u16> {
    let t = table();
    name.iter().map(|&c| t[usize::from(c)]).collect()
}

/// COLLATION_FILE_NAME: compare upcased code units (a prefix sorts first), then the raw
/// code units, so "ABC" < "abc".
pub fn collate_names(a: &[u16], b: &[u16]) -> Ordering {
    let t = table();
    let ua = a.iter().map(|&c| t[usize::from(c)]);
    let ub = b.iter().map(|&c| t[usize::from(c)]);
    ua.cmp(ub).then_with(|| a.cmp(b))
}

/// The CRC-64 stored in `$UpCase:$Info`: reflected, polynomial constant
/// 0x9A6C9329AC4BC9B5, initial value and final xor all ones (facts §2.6).
pub fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x9A6C_9329_AC4B_C9B5;
    let mut crc = u64::MAX;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_known_values() {
        assert_eq!(crc64(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(crc64(&table_bytes()), 0xDADC_7E77_6B1B_690C);
    }

    #[test]
    fn table_basics() {
        assert_eq!(upcase_unit(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(upcase_unit(0x00ff), 0x0178);
        assert_eq!(upcase_unit(0x03c2), 0x03c2);
        assert_eq!(upcase_unit(0xd800), 0xd800);
        let n = |s: &str| s.encode_utf16().collect::<Vec<_>>();
        assert_eq!(collate_names(&n("ABC"), &n("abc")), Ordering::Less);
        assert_eq!(collate_names(&n("abc"), &n("ABCD")), Ordering::Less);
        assert_eq!(collate_names(&n("$Volume"), &n(".")), Ordering::Less);
        assert_eq!(collate_names(&n("_"), &n("a")), Ordering::Greater);
    }
}
