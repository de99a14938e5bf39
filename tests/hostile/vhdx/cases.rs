//! Hostile VHDX catalogue: each case damages one structure of a small valid VHDX made by our
//! writer and names the words the reader's error must contain. README.md next to this file lists
//! the cases. Offsets are those of the base image (see `write_base`):
//!
//! 0x0 file identifier, 0x10000 header 1 (sequence 1), 0x20000 header 2 (sequence 2, current),
//! 0x30000 / 0x40000 region tables (entry 0 BAT at 3 MiB, entry 1 metadata at 2 MiB),
//! 0x100000 log (empty), 0x200000 metadata table, 0x210000 metadata items, 0x300000 BAT,
//! 0x400000 block 0, 0x500000 block 5; 8 MiB virtual, 1 MiB blocks, 512-byte sectors.

use nanoforge::core::checksum::crc32c_with_zeroed_field;
use nanoforge::core::{Guid, WriteAt};
use nanoforge::formats::vhdx::{VhdxOptions, VhdxWriter};
use std::fs::File;
use std::path::Path;

const H1: usize = 0x10000;
const H2: usize = 0x20000;
const RT1: usize = 0x30000;
const RT2: usize = 0x40000;
const LOG: usize = 0x100000;
const MT: usize = 0x200000;
const ITEMS: usize = 0x210000;
const BAT: usize = 0x300000;

pub struct Case {
    pub name: &'static str,
    pub mutate: fn(&mut Vec<u8>),
    /// Words the error message must contain, or None when the file must open.
    pub expect: Option<&'static [&'static str]>,
}

/// The base image every case starts from.
pub fn write_base(path: &Path) {
    let opts = VhdxOptions::new(8 << 20, b"hostile");
    let mut w = Box::new(VhdxWriter::create(File::create(path).unwrap(), &opts).unwrap());
    w.write_at(0, &[0x11; 4096]).unwrap();
    w.write_at(5 << 20, &[0x55; 4096]).unwrap();
    w.finish().unwrap();
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn guid(s: &str) -> [u8; 16] {
    s.parse::<Guid>().unwrap().to_mixed_endian()
}

fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    let crc = crc32c_with_zeroed_field(&b[at..at + len], 4);
    put32(b, at + 4, crc);
}

/// Recompute the checksums of both headers and both region tables.
pub fn fix_checksums(b: &mut [u8]) {
    fix_crc(b, H1, 4096);
    fix_crc(b, H2, 4096);
    fix_crc(b, RT1, 65536);
    fix_crc(b, RT2, 65536);
}

/// Apply `f` to both headers, then fix their checksums.
fn both_headers(b: &mut [u8], f: impl Fn(&mut [u8], usize)) {
    f(b, H1);
    f(b, H2);
    fix_checksums(b);
}

/// Apply `f` to both region tables, then fix their checksums.
fn both_region_tables(b: &mut [u8], f: impl Fn(&mut [u8], usize)) {
    f(b, RT1);
    f(b, RT2);
    fix_checksums(b);
}

const LOG_GUID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";

/// A log descriptor (MS-VHDX 2.3.1.2, 2.3.1.3): 4 KiB of data, or zeros, at a file offset.
pub enum Desc {
    Data { file_offset: u64, sector: Vec<u8> },
    Zero { file_offset: u64, len: u64 },
}

/// Set both headers' LogGuid to the catalogue's log GUID.
pub fn set_log_guid(b: &mut [u8]) {
    both_headers(b, |b, h| b[h + 48..h + 64].copy_from_slice(&guid(LOG_GUID)));
}

/// Write a log entry at `pos` within the log; returns its length.
pub fn put_log_entry(
    b: &mut [u8],
    pos: usize,
    seq: u64,
    tail: u32,
    flushed: u64,
    last: u64,
    descs: &[Desc],
) -> usize {
    let desc_sectors = (64 + 32 * descs.len()).div_ceil(4096);
    let data_count = descs
        .iter()
        .filter(|d| matches!(d, Desc::Data { .. }))
        .count();
    let len = (desc_sectors + data_count) * 4096;
    let mut e = vec![0u8; len];
    e[..4].copy_from_slice(b"loge");
    put32(&mut e, 8, len as u32);
    put32(&mut e, 12, tail);
    put64(&mut e, 16, seq);
    put32(&mut e, 24, descs.len() as u32);
    e[32..48].copy_from_slice(&guid(LOG_GUID));
    put64(&mut e, 48, flushed);
    put64(&mut e, 56, last);
    let mut data_at = desc_sectors * 4096;
    for (i, d) in descs.iter().enumerate() {
        let at = 64 + 32 * i;
        match d {
            Desc::Zero { file_offset, len } => {
                e[at..at + 4].copy_from_slice(b"zero");
                put64(&mut e, at + 8, *len);
                put64(&mut e, at + 16, *file_offset);
            }
            Desc::Data {
                file_offset,
                sector,
            } => {
                e[at..at + 4].copy_from_slice(b"desc");
                e[at + 4..at + 8].copy_from_slice(&sector[4092..4096]);
                e[at + 8..at + 16].copy_from_slice(&sector[..8]);
                put64(&mut e, at + 16, *file_offset);
                e[data_at..data_at + 4].copy_from_slice(b"data");
                put32(&mut e, data_at + 4, (seq >> 32) as u32);
                e[data_at + 8..data_at + 4092].copy_from_slice(&sector[8..4092]);
                put32(&mut e, data_at + 4092, seq as u32);
                data_at += 4096;
            }
        }
        put64(&mut e, at + 24, seq);
    }
    fix_crc(&mut e, 0, len);
    b[LOG + pos..LOG + pos + len].copy_from_slice(&e);
    len
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "truncated inside the header section",
            mutate: |b| b.truncate(100 * 1024),
            expect: Some(&["file identifier", "truncated"]),
        },
        Case {
            name: "truncated inside the last data block",
            mutate: |b| b.truncate(0x500000 + 100),
            expect: Some(&["BAT", "past the end of the file"]),
        },
        Case {
            name: "truncated before the BAT region ends",
            mutate: |b| b.truncate(0x380000),
            expect: Some(&["region table", "BAT region", "truncated"]),
        },
        Case {
            name: "wrong file signature",
            mutate: |b| b[..8].copy_from_slice(b"vhdxfilf"),
            expect: Some(&["file identifier", "vhdxfile"]),
        },
        Case {
            name: "both header checksums bad",
            mutate: |b| {
                b[H1 + 100] ^= 1;
                b[H2 + 100] ^= 1;
            },
            expect: Some(&["header", "checksum"]),
        },
        Case {
            name: "current header damaged: the other header is used",
            mutate: |b| b[H2 + 9] ^= 0x40,
            expect: None,
        },
        Case {
            name: "both header signatures wrong",
            mutate: |b| both_headers(b, |b, h| b[h..h + 4].copy_from_slice(b"HEAD")),
            expect: Some(&["header", "signature"]),
        },
        Case {
            name: "header version 2",
            mutate: |b| both_headers(b, |b, h| put16(b, h + 66, 2)),
            expect: Some(&["header", "Version"]),
        },
        Case {
            name: "equal sequence numbers, different headers",
            mutate: |b| {
                put64(b, H2 + 8, 1);
                b[H2 + 16] ^= 1;
                fix_checksums(b);
            },
            expect: Some(&["header", "SequenceNumber"]),
        },
        Case {
            name: "log offset not 1 MiB aligned",
            mutate: |b| both_headers(b, |b, h| put64(b, h + 72, 0x100800)),
            expect: Some(&["log", "1 MiB"]),
        },
        Case {
            name: "log entry flushed past the end of the file",
            mutate: |b| {
                set_log_guid(b);
                put_log_entry(b, 0, 1, 0, 0x10000000, 0x600000, &[]);
            },
            expect: Some(&["log", "flushed", "truncated"]),
        },
        Case {
            name: "log head whose tail points at no entry",
            mutate: |b| {
                set_log_guid(b);
                put_log_entry(b, 0, 1, 0x2000, 0x600000, 0x600000, &[]);
            },
            expect: Some(&["log", "tail", "damaged"]),
        },
        Case {
            name: "log sequence with a gap",
            mutate: |b| {
                set_log_guid(b);
                let n = put_log_entry(b, 0, 5, 0, 0x600000, 0x600000, &[]);
                put_log_entry(b, n, 7, 0, 0x600000, 0x600000, &[]);
            },
            expect: Some(&["log", "sequence 7 after 5"]),
        },
        Case {
            name: "log entry with a bad checksum is no entry: nothing to replay",
            mutate: |b| {
                set_log_guid(b);
                put_log_entry(b, 0, 1, 0, 0x600000, 0x600000, &[]);
                b[LOG + 100] ^= 1;
            },
            expect: None,
        },
        Case {
            name: "log that rewrites the BAT to point past the end of the file",
            mutate: |b| {
                set_log_guid(b);
                let mut bat = b[BAT..BAT + 4096].to_vec();
                put64(&mut bat, 8, (0x7F0 << 20) | 6);
                put_log_entry(
                    b,
                    0,
                    1,
                    0,
                    0x600000,
                    0x600000,
                    &[Desc::Data {
                        file_offset: BAT as u64,
                        sector: bat,
                    }],
                );
            },
            expect: Some(&["BAT", "past the end of the file"]),
        },
        Case {
            name: "LogGuid set but no valid log entry: nothing to replay",
            mutate: |b| set_log_guid(b),
            expect: None,
        },
        Case {
            name: "both region table checksums bad",
            mutate: |b| {
                b[RT1 + 40] ^= 1;
                b[RT2 + 40] ^= 1;
            },
            expect: Some(&["region table", "checksum"]),
        },
        Case {
            name: "first region table bad: the second copy is used",
            mutate: |b| b[RT1 + 40] ^= 1,
            expect: None,
        },
        Case {
            name: "region table entry count over 2047",
            mutate: |b| both_region_tables(b, |b, t| put32(b, t + 8, 5000)),
            expect: Some(&["region table", "EntryCount"]),
        },
        Case {
            name: "BAT region overlaps the metadata region",
            mutate: |b| both_region_tables(b, |b, t| put64(b, t + 32, 0x200000)),
            expect: Some(&["region table", "overlaps"]),
        },
        Case {
            name: "BAT region overlaps the log",
            mutate: |b| both_region_tables(b, |b, t| put64(b, t + 32, 0x100000)),
            expect: Some(&["region table", "overlaps", "log"]),
        },
        Case {
            name: "BAT region inside the header section",
            mutate: |b| both_region_tables(b, |b, t| put64(b, t + 32, 0)),
            expect: Some(&["region table", "overlaps", "header section"]),
        },
        Case {
            name: "BAT region not 1 MiB aligned",
            mutate: |b| both_region_tables(b, |b, t| put64(b, t + 32, 0x301000)),
            expect: Some(&["region table", "1 MiB"]),
        },
        Case {
            name: "BAT region offset overflows",
            mutate: |b| both_region_tables(b, |b, t| put64(b, t + 32, u64::MAX - 0xFFFFF)),
            expect: Some(&["region table", "BAT region"]),
        },
        Case {
            name: "BAT region length past the end of the file",
            mutate: |b| both_region_tables(b, |b, t| put32(b, t + 40, 0xFFF0_0000)),
            expect: Some(&["region table", "past the end of the file"]),
        },
        Case {
            name: "unknown required region",
            mutate: |b| {
                both_region_tables(b, |b, t| {
                    put32(b, t + 8, 3);
                    b[t + 80..t + 96]
                        .copy_from_slice(&guid("11111111-2222-4333-8444-555555555555"));
                    put64(b, t + 96, 0x600000);
                    put32(b, t + 104, 0x100000);
                    put32(b, t + 108, 1);
                })
            },
            expect: Some(&["region table", "required region"]),
        },
        Case {
            name: "metadata region missing",
            mutate: |b| both_region_tables(b, |b, t| put32(b, t + 8, 1)),
            expect: Some(&["region table", "metadata", "missing"]),
        },
        Case {
            name: "BAT region listed twice",
            mutate: |b| both_region_tables(b, |b, t| b.copy_within(t + 16..t + 32, t + 48)),
            expect: Some(&["region table", "repeats"]),
        },
        Case {
            name: "metadata table signature wrong",
            mutate: |b| b[MT..MT + 8].copy_from_slice(b"metadatx"),
            expect: Some(&["metadata table", "signature"]),
        },
        Case {
            name: "metadata table entry count over 2047",
            mutate: |b| put16(b, MT + 10, 4000),
            expect: Some(&["metadata table", "EntryCount"]),
        },
        Case {
            name: "unknown required metadata item",
            mutate: |b| {
                b[MT + 32 + 2 * 32..MT + 32 + 2 * 32 + 16]
                    .copy_from_slice(&guid("99999999-8888-4777-8666-555555555555"))
            },
            expect: Some(&["metadata table", "unknown required metadata item"]),
        },
        Case {
            name: "required metadata item missing",
            mutate: |b| put16(b, MT + 10, 4),
            expect: Some(&["metadata table", "physical sector size", "missing"]),
        },
        Case {
            name: "metadata item listed twice",
            mutate: |b| b.copy_within(MT + 32..MT + 64, MT + 32 + 32),
            expect: Some(&["metadata table", "twice"]),
        },
        Case {
            name: "metadata item outside the metadata region",
            mutate: |b| put32(b, MT + 32 + 16, 0x100000),
            expect: Some(&["metadata table", "inside"]),
        },
        Case {
            name: "metadata item inside the metadata table",
            mutate: |b| put32(b, MT + 32 + 16, 0x100),
            expect: Some(&["metadata table", "64 KiB"]),
        },
        Case {
            name: "metadata item length offset overflow",
            mutate: |b| {
                put32(b, MT + 32 + 16, 0xFFFF_FFF0);
                put32(b, MT + 32 + 20, 0xFFFF_FFF0);
            },
            expect: Some(&["metadata table"]),
        },
        Case {
            name: "file parameters item too short",
            mutate: |b| put32(b, MT + 32 + 20, 4),
            expect: Some(&["file parameters", "length"]),
        },
        Case {
            name: "block size not a power of two",
            mutate: |b| put32(b, ITEMS, 3 << 20),
            expect: Some(&["file parameters", "BlockSize"]),
        },
        Case {
            name: "block size 512 MiB",
            mutate: |b| put32(b, ITEMS, 512 << 20),
            expect: Some(&["file parameters", "BlockSize"]),
        },
        Case {
            name: "virtual disk size overflows",
            mutate: |b| put64(b, ITEMS + 8, u64::MAX - 511),
            expect: Some(&["virtual disk size", "64 TiB"]),
        },
        Case {
            name: "virtual disk size not a sector multiple",
            mutate: |b| put64(b, ITEMS + 8, (8 << 20) + 1),
            expect: Some(&["virtual disk size", "512-byte"]),
        },
        Case {
            name: "virtual disk size larger than the BAT describes",
            mutate: |b| put64(b, ITEMS + 8, 64 << 40),
            expect: Some(&["BAT", "entries"]),
        },
        Case {
            name: "logical sector size 1024",
            mutate: |b| put32(b, ITEMS + 32, 1024),
            expect: Some(&["logical sector size", "1024"]),
        },
        Case {
            name: "physical sector size 0",
            mutate: |b| put32(b, ITEMS + 36, 0),
            expect: Some(&["physical sector size"]),
        },
        Case {
            name: "differencing disk with a parent locator",
            mutate: |b| {
                put32(b, ITEMS + 4, 2);
                let e = MT + 32 + 5 * 32;
                b[e..e + 16].copy_from_slice(&guid("a8d35f2d-b30b-454d-abf7-d3d84834ab0c"));
                let key: Vec<u8> = "absolute_win32_path"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect();
                let value: Vec<u8> = "C:\\vms\\parent.vhdx"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect();
                let loc = ITEMS + 0x100;
                put32(b, e + 16, 0x10100);
                put32(b, e + 20, (32 + key.len() + value.len()) as u32);
                put32(b, e + 24, 4);
                put16(b, MT + 10, 6);
                b[loc..loc + 16].copy_from_slice(&guid("b04aefb7-d19e-4a81-b789-25b8e9445913"));
                put16(b, loc + 18, 1);
                put32(b, loc + 20, 32);
                put32(b, loc + 24, 32 + key.len() as u32);
                put16(b, loc + 28, key.len() as u16);
                put16(b, loc + 30, value.len() as u16);
                b[loc + 32..loc + 32 + key.len()].copy_from_slice(&key);
                b[loc + 32 + key.len()..loc + 32 + key.len() + value.len()].copy_from_slice(&value);
            },
            expect: Some(&["differencing disk", "C:\\vms\\parent.vhdx"]),
        },
        Case {
            name: "differencing disk without a parent locator",
            mutate: |b| put32(b, ITEMS + 4, 2),
            expect: Some(&["differencing disk", "not named"]),
        },
        Case {
            name: "BAT entry past the end of the file",
            mutate: |b| put64(b, BAT, (1 << 40) | 6),
            expect: Some(&["BAT", "past the end of the file"]),
        },
        Case {
            name: "BAT entry inside the metadata region",
            mutate: |b| put64(b, BAT, (2 << 20) | 6),
            expect: Some(&["BAT", "inside the metadata region"]),
        },
        Case {
            name: "BAT entry inside the header section",
            mutate: |b| put64(b, BAT, 6),
            expect: Some(&["BAT", "header section"]),
        },
        Case {
            name: "BAT entry with reserved state 4",
            mutate: |b| put64(b, BAT, (4 << 20) | 4),
            expect: Some(&["BAT", "unknown state 4"]),
        },
        Case {
            name: "partially present block without a sector bitmap",
            mutate: |b| put64(b, BAT, (4 << 20) | 7),
            expect: Some(&["BAT", "sector bitmap"]),
        },
        Case {
            name: "sector bitmap block past the end of the file",
            mutate: |b| {
                // Chunk 0's sector bitmap entry follows its 4096 payload entries.
                put64(b, BAT, (4 << 20) | 7);
                put64(b, BAT + 4096 * 8, (1 << 40) | 6);
            },
            expect: Some(&[
                "BAT",
                "sector bitmap entry of chunk 0",
                "past the end of the file",
            ]),
        },
        Case {
            name: "junk in an unused sector bitmap entry is ignored",
            mutate: |b| put64(b, BAT + 4096 * 8, (1 << 40) | 5),
            expect: None,
        },
        Case {
            name: "BAT entry offset at the top of the 64-bit range",
            mutate: |b| put64(b, BAT, 0xFFFF_FFFF_FFF0_0006),
            expect: Some(&["BAT", "past the end of the file"]),
        },
    ]
}
