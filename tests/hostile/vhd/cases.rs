//! Generator of the hostile VHD catalogue (see README.md next to this file).
//!
//! Each case starts from a valid image made by our writer and damages one structure, then
//! repairs the checksums it did not mean to break, so the reader meets exactly one fault.
//! Offsets follow the VHD specification's footer and dynamic header layouts.

/// One hostile image and the words its error must contain.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// Lower-case words that must all appear in the error message.
    pub expect: &'static [&'static str],
}

const FOOTER: usize = 512;
const HEADER_AT: usize = 512;

/// Ones' complement of the byte sum with the checksum field counted as zero.
fn checksum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if i < field || i >= field + 4 {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

fn fix_footer(b: &mut [u8], at: usize) {
    let s = checksum(&b[at..at + FOOTER], 64);
    b[at + 64..at + 68].copy_from_slice(&s.to_be_bytes());
}

fn fix_header(b: &mut [u8]) {
    let s = checksum(&b[HEADER_AT..HEADER_AT + 1024], 36);
    b[HEADER_AT + 36..HEADER_AT + 40].copy_from_slice(&s.to_be_bytes());
}

/// Apply `f` to both footers of a dynamic image (copy at 0 and the last sector) and
/// repair their checksums.
fn both_footers(mut b: Vec<u8>, f: impl Fn(&mut [u8])) -> Vec<u8> {
    let end = b.len() - FOOTER;
    for at in [0, end] {
        f(&mut b[at..at + FOOTER]);
        fix_footer(&mut b, at);
    }
    b
}

fn last_footer(mut b: Vec<u8>, f: impl Fn(&mut [u8])) -> Vec<u8> {
    let end = b.len() - FOOTER;
    f(&mut b[end..]);
    fix_footer(&mut b, end);
    b
}

fn header(mut b: Vec<u8>, f: impl Fn(&mut [u8])) -> Vec<u8> {
    f(&mut b[HEADER_AT..HEADER_AT + 1024]);
    fix_header(&mut b);
    b
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// All cases, from a valid dynamic image (with at least one allocated block in entry 0)
/// and a valid fixed image.
pub fn cases(dynamic: &[u8], fixed: &[u8]) -> Vec<Case> {
    let d = || dynamic.to_vec();
    let f = || fixed.to_vec();
    let table_offset =
        u64::from_be_bytes(dynamic[HEADER_AT + 16..HEADER_AT + 24].try_into().unwrap()) as usize;
    assert_ne!(
        be32(dynamic, table_offset),
        0xFFFF_FFFF,
        "block 0 must be allocated"
    );
    let mut out = vec![
        Case {
            name: "empty-file",
            bytes: Vec::new(),
            expect: &["footer", "truncated"],
        },
        Case {
            name: "shorter-than-a-footer",
            bytes: fixed[fixed.len() - 300..].to_vec(),
            expect: &["footer", "truncated"],
        },
        Case {
            name: "fixed-wrong-cookie",
            bytes: {
                let mut b = f();
                let n = b.len();
                b[n - FOOTER..n - FOOTER + 8].copy_from_slice(b"conectiy");
                b
            },
            expect: &["footer", "cookie", "conectix"],
        },
        Case {
            name: "fixed-bad-footer-checksum",
            bytes: {
                let mut b = f();
                let n = b.len();
                b[n - FOOTER + 100] ^= 0x55;
                b
            },
            expect: &["footer", "checksum"],
        },
        Case {
            name: "dynamic-both-footers-bad-checksum",
            bytes: {
                let mut b = d();
                let n = b.len();
                b[n - FOOTER + 40] ^= 1;
                b[40] ^= 1;
                b
            },
            expect: &["footer", "checksum"],
        },
        Case {
            name: "dynamic-header-wrong-cookie",
            bytes: header(d(), |h| h[0..8].copy_from_slice(b"cxsparsf")),
            expect: &["dynamic header", "cookie", "cxsparse"],
        },
        Case {
            name: "dynamic-header-bad-checksum",
            bytes: {
                let mut b = d();
                b[HEADER_AT + 600] ^= 0xFF;
                b
            },
            expect: &["dynamic header", "checksum"],
        },
        Case {
            name: "dynamic-header-past-eof",
            bytes: both_footers(d(), |x| {
                x[16..24].copy_from_slice(&(u64::MAX - 100).to_be_bytes())
            }),
            expect: &["dynamic header", "truncated"],
        },
        Case {
            name: "bat-past-eof",
            bytes: {
                let n = dynamic.len() as u64;
                header(d(), |h| h[16..24].copy_from_slice(&(n - 4).to_be_bytes()))
            },
            expect: &["bat", "truncated"],
        },
        Case {
            name: "bat-entry-past-eof",
            bytes: {
                let mut b = d();
                b[table_offset..table_offset + 4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
                b
            },
            expect: &["bat entry 0", "past the end"],
        },
        Case {
            name: "truncated-dynamic",
            // The last block and the final footer are cut off: the copy at offset 0 is used
            // and the BAT then points past the end of the file.
            bytes: dynamic[..dynamic.len() - 4096].to_vec(),
            expect: &["bat entry", "past the end"],
        },
        Case {
            name: "current-size-overflows",
            bytes: last_footer(f(), |x| x[48..56].copy_from_slice(&u64::MAX.to_be_bytes())),
            expect: &["footer", "disk size"],
        },
        Case {
            name: "current-size-not-sector-multiple",
            bytes: last_footer(f(), |x| x[48..56].copy_from_slice(&1001u64.to_be_bytes())),
            expect: &["footer", "disk size"],
        },
        Case {
            name: "fixed-size-past-eof",
            bytes: {
                let n = fixed.len() as u64;
                last_footer(f(), |x| {
                    x[48..56].copy_from_slice(&(n * 2).next_multiple_of(512).to_be_bytes())
                })
            },
            expect: &["fixed disk data", "truncated"],
        },
        Case {
            name: "max-table-entries-huge",
            bytes: header(d(), |h| h[28..32].copy_from_slice(&u32::MAX.to_be_bytes())),
            expect: &["dynamic header", "max table entries"],
        },
        Case {
            name: "max-table-entries-too-few",
            bytes: header(d(), |h| h[28..32].copy_from_slice(&1u32.to_be_bytes())),
            expect: &["dynamic header", "max table entries"],
        },
        Case {
            name: "block-size-zero",
            bytes: header(d(), |h| h[32..36].copy_from_slice(&0u32.to_be_bytes())),
            expect: &["dynamic header", "block size"],
        },
        Case {
            name: "block-size-not-power-of-two",
            bytes: header(d(), |h| {
                h[32..36].copy_from_slice(&3_000_000u32.to_be_bytes())
            }),
            expect: &["dynamic header", "block size"],
        },
        Case {
            name: "differencing-disk",
            bytes: both_footers(d(), |x| x[60..64].copy_from_slice(&4u32.to_be_bytes())),
            expect: &["footer", "differencing"],
        },
        Case {
            name: "unknown-disk-type",
            bytes: last_footer(f(), |x| x[60..64].copy_from_slice(&7u32.to_be_bytes())),
            expect: &["footer", "disk type"],
        },
        Case {
            name: "file-format-version-2",
            bytes: last_footer(f(), |x| {
                x[12..16].copy_from_slice(&0x0002_0000u32.to_be_bytes())
            }),
            expect: &["footer", "file format version"],
        },
    ];
    out.sort_by_key(|c| c.name);
    out
}
