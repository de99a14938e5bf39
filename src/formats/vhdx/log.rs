//! The VHDX log (MS-VHDX 2.3): finding the active sequence of entries and replaying it in
//! memory, so a disk whose last metadata updates were not yet applied reads as it should
//! without writing to the file.
//!
//! An entry (2.3.1) is a 64-byte header, 32-byte descriptors filling whole 4 KiB sectors, then
//! one 4 KiB data sector per data descriptor. The entry with the highest sequence number is the
//! head; its Tail field points at the oldest entry still needed. Replay applies the entries from
//! the tail to the head in order (2.3.3): data descriptors write 4 KiB, zero descriptors write
//! zeros, and the file is treated as at least LastFileOffset long.

use super::layout::*;
use super::{io_err, Error};
use crate::core::checksum::crc32c_with_zeroed_field;
use crate::core::Guid;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Log entries are made of 4 KiB sectors (2.3.1).
const LOG_SECTOR: u64 = 4096;
const ENTRY_HEADER_SIZE: usize = 64;
const DESCRIPTOR_SIZE: usize = 32;
/// Logs longer than this are not read into memory: Hyper-V and qemu make 1 MiB logs.
const MAX_LOG_LENGTH: u64 = 64 << 20;
const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
const ZERO_DESCRIPTOR_SIGNATURE: &[u8; 4] = b"zero";
const DATA_DESCRIPTOR_SIGNATURE: &[u8; 4] = b"desc";

/// One write the log asks for: `data` at `offset`, or zeros when `data` is None.
#[derive(Debug)]
struct Patch {
    offset: u64,
    len: u64,
    data: Option<Box<[u8]>>,
}

/// The VHDX file as the reader sees it: the bytes on disk with the replayed log laid over them.
#[derive(Debug)]
pub struct Source {
    file: File,
    /// Bytes really in the file.
    real_len: u64,
    /// Length after replay: at least the head entry's LastFileOffset; the rest reads as zeros.
    pub len: u64,
    /// In log order; later patches win.
    patches: Vec<Patch>,
}

impl Source {
    pub fn new(file: File) -> Result<Source, Error> {
        let real_len = file
            .metadata()
            .map_err(io_err("reading the file size"))?
            .len();
        Ok(Source {
            file,
            real_len,
            len: real_len,
            patches: Vec::new(),
        })
    }

    /// Whether a log replay changed anything.
    pub fn replayed(&self) -> bool {
        !self.patches.is_empty() || self.len != self.real_len
    }

    /// Fill `buf` from `offset`; the caller has checked `offset + buf.len() <= self.len`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let real_end = end.min(self.real_len).max(offset);
        let split = (real_end - offset) as usize;
        self.file.read_exact_at(&mut buf[..split], offset)?;
        buf[split..].fill(0);
        for p in &self.patches {
            let lo = p.offset.max(offset);
            let hi = (p.offset + p.len).min(end);
            if lo >= hi {
                continue;
            }
            let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
            match &p.data {
                Some(d) => {
                    dst.copy_from_slice(&d[(lo - p.offset) as usize..(hi - p.offset) as usize])
                }
                None => dst.fill(0),
            }
        }
        Ok(())
    }
}

/// A log entry that passed every check of 2.3.1.
struct Entry {
    /// Offset of the entry within the log.
    at: u64,
    length: u64,
    tail: u64,
    sequence_number: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    patches: Vec<Patch>,
}

/// Parse the entry at `at` in the circular `log`, or None when it is not a valid entry.
fn parse_entry(log: &[u8], at: u64, log_guid: Guid) -> Option<Entry> {
    let log_len = log.len() as u64;
    let bytes = |from: u64, n: u64| -> Vec<u8> {
        (0..n)
            .map(|i| log[((at + from + i) % log_len) as usize])
            .collect()
    };
    let head = bytes(0, ENTRY_HEADER_SIZE as u64);
    if &head[..4] != LOG_ENTRY_SIGNATURE {
        return None;
    }
    let length = u64::from(le32(&head, 8));
    let tail = u64::from(le32(&head, 12));
    let sequence_number = le64(&head, 16);
    let count = u64::from(le32(&head, 24));
    if length == 0
        || !length.is_multiple_of(LOG_SECTOR)
        || length > log_len
        || sequence_number == 0
        || guid_at(&head, 32) != log_guid
        || !tail.is_multiple_of(LOG_SECTOR)
        || tail >= log_len
    {
        return None;
    }
    let descriptor_sectors =
        (ENTRY_HEADER_SIZE as u64 + count * DESCRIPTOR_SIZE as u64).div_ceil(LOG_SECTOR);
    if descriptor_sectors * LOG_SECTOR > length {
        return None;
    }
    let entry = bytes(0, length);
    if crc32c_with_zeroed_field(&entry, 4) != le32(&entry, 4) {
        return None;
    }
    let mut patches = Vec::new();
    let mut data_sector = descriptor_sectors * LOG_SECTOR;
    for i in 0..count as usize {
        let d = &entry[ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE..][..DESCRIPTOR_SIZE];
        let file_offset = le64(d, 16);
        if le64(d, 24) != sequence_number || !file_offset.is_multiple_of(LOG_SECTOR) {
            return None;
        }
        if &d[..4] == ZERO_DESCRIPTOR_SIGNATURE {
            let zero_length = le64(d, 8);
            if !zero_length.is_multiple_of(LOG_SECTOR)
                || file_offset.checked_add(zero_length).is_none()
            {
                return None;
            }
            patches.push(Patch {
                offset: file_offset,
                len: zero_length,
                data: None,
            });
        } else if &d[..4] == DATA_DESCRIPTOR_SIGNATURE {
            if data_sector + LOG_SECTOR > length || file_offset.checked_add(LOG_SECTOR).is_none() {
                return None;
            }
            let s = &entry[data_sector as usize..(data_sector + LOG_SECTOR) as usize];
            let seq = u64::from(le32(s, 4)) << 32 | u64::from(le32(s, 4092));
            if &s[..4] != DATA_SECTOR_SIGNATURE || seq != sequence_number {
                return None;
            }
            // The sector's first 8 and last 4 bytes live in the descriptor (2.3.1.3).
            let mut sector = vec![0u8; LOG_SECTOR as usize];
            sector[..8].copy_from_slice(&d[8..16]);
            sector[8..4092].copy_from_slice(&s[8..4092]);
            sector[4092..].copy_from_slice(&d[4..8]);
            patches.push(Patch {
                offset: file_offset,
                len: LOG_SECTOR,
                data: Some(sector.into_boxed_slice()),
            });
            data_sector += LOG_SECTOR;
        } else {
            return None;
        }
    }
    Some(Entry {
        at,
        length,
        tail,
        sequence_number,
        flushed_file_offset: le64(&head, 48),
        last_file_offset: le64(&head, 56),
        patches,
    })
}

/// Find the active sequence in the log at `log_offset` (2.3.2) and lay it over `src`.
/// Returns the number of entries replayed.
pub fn replay(
    src: &mut Source,
    log_offset: u64,
    log_length: u64,
    log_guid: Guid,
) -> Result<u64, Error> {
    let bad = |detail: String| Error::Corrupt {
        structure: "log",
        offset: log_offset,
        detail,
    };
    if log_length > MAX_LOG_LENGTH {
        return Err(Error::Unsupported {
            structure: "log",
            offset: log_offset,
            detail: format!(
                "LogLength {log_length:#x} is over the {MAX_LOG_LENGTH:#x} bytes this reader replays; replay it with Hyper-V or `qemu-img check -r all`"
            ),
        });
    }
    let end = log_offset + log_length;
    if end > src.real_len {
        return Err(bad(format!(
            "the log ends at {end:#x}, past the end of the file at {:#x}; the file is truncated",
            src.real_len
        )));
    }
    let mut log = vec![0u8; log_length as usize];
    src.file
        .read_exact_at(&mut log, log_offset)
        .map_err(io_err(format!("reading the log at {log_offset:#x}")))?;

    let mut head: Option<Entry> = None;
    let mut at = 0;
    while at < log_length {
        match parse_entry(&log, at, log_guid) {
            Some(e) => {
                let next = at + e.length;
                if head
                    .as_ref()
                    .is_none_or(|h| e.sequence_number > h.sequence_number)
                {
                    head = Some(e);
                }
                // Entries never overlap, so the scan can skip over a valid one.
                at = next;
            }
            None => at += LOG_SECTOR,
        }
    }
    let Some(head) = head else {
        return Ok(0);
    };

    // Walk from the head's tail to the head: every entry valid, sequence numbers consecutive.
    let mut sequence = Vec::new();
    let mut at = head.tail;
    loop {
        if at == head.at {
            break;
        }
        let Some(e) = parse_entry(&log, at, log_guid) else {
            return Err(bad(format!(
                "the newest entry (sequence {}) has its tail at log offset {:#x}, where no valid entry follows the chain; the log is damaged",
                head.sequence_number, at
            )));
        };
        at = (at + e.length) % log_length;
        sequence.push(e);
        if sequence.len() as u64 > log_length / LOG_SECTOR {
            return Err(bad(
                "the log's entries form a loop; the log is damaged".into()
            ));
        }
    }
    sequence.push(head);
    for pair in sequence.windows(2) {
        if pair[0].sequence_number.checked_add(1) != Some(pair[1].sequence_number) {
            return Err(bad(format!(
                "entry at log offset {:#x} has sequence {} after {}, expected {}; the log is damaged",
                pair[1].at,
                pair[1].sequence_number,
                pair[0].sequence_number,
                pair[0].sequence_number.wrapping_add(1)
            )));
        }
    }
    let count = sequence.len() as u64;
    for e in sequence {
        if e.flushed_file_offset > src.real_len {
            return Err(bad(format!(
                "entry at log offset {:#x} says the file was flushed up to {:#x} but it ends at {:#x}; the file is truncated",
                e.at, e.flushed_file_offset, src.real_len
            )));
        }
        src.len = src.len.max(e.last_file_offset);
        src.patches.extend(e.patches);
    }
    // Patches may also reach past the file's end; the file grows to hold them.
    for p in &src.patches {
        src.len = src.len.max(p.offset + p.len);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: Guid = Guid::from_bytes([7; 16]);

    /// One entry with a single data descriptor writing `fill` over 4 KiB at `file_offset`.
    fn entry(seq: u64, tail: u32, file_offset: u64, fill: u8) -> Vec<u8> {
        let mut e = vec![0u8; 8192];
        e[..4].copy_from_slice(LOG_ENTRY_SIGNATURE);
        e[8..12].copy_from_slice(&8192u32.to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&1u32.to_le_bytes());
        e[32..48].copy_from_slice(&GUID.to_mixed_endian());
        let d = 64;
        e[d..d + 4].copy_from_slice(DATA_DESCRIPTOR_SIGNATURE);
        e[d + 4..d + 8].fill(fill);
        e[d + 8..d + 16].fill(fill);
        e[d + 16..d + 24].copy_from_slice(&file_offset.to_le_bytes());
        e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
        e[4096..4100].copy_from_slice(DATA_SECTOR_SIGNATURE);
        e[4100..4104].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
        e[4104..8188].fill(fill);
        e[8188..8192].copy_from_slice(&(seq as u32).to_le_bytes());
        let crc = crc32c_with_zeroed_field(&e, 4);
        e[4..8].copy_from_slice(&crc.to_le_bytes());
        e
    }

    fn source_with_log(log: &[u8]) -> (tempfile::NamedTempFile, Source) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let f = t.reopen().unwrap();
        f.set_len(4 * MIB).unwrap();
        f.write_all_at(log, MIB).unwrap();
        let src = Source::new(t.reopen().unwrap()).unwrap();
        (t, src)
    }

    #[test]
    fn a_sequence_wrapping_round_the_log_is_replayed_in_order() {
        let mut log = vec![0u8; MIB as usize];
        let len = log.len();
        // Entry 41 in the last sector and the first (it wraps), entry 42 right after it; both
        // write 0x300000, so 42 must win. Entry 40 is stale: older than the tail.
        let e41 = entry(41, (len - 4096) as u32, 0x300000, 0xA1);
        log[len - 4096..].copy_from_slice(&e41[..4096]);
        log[..4096].copy_from_slice(&e41[4096..]);
        log[4096..12288].copy_from_slice(&entry(42, (len - 4096) as u32, 0x300000, 0xA2));
        log[65536..65536 + 8192].copy_from_slice(&entry(40, 65536, 0x200000, 0xA0));
        let (_t, mut src) = source_with_log(&log);
        assert_eq!(replay(&mut src, MIB, MIB, GUID).unwrap(), 2);
        let mut b = vec![0u8; 8192];
        src.read(0x300000 - 4096, &mut b).unwrap();
        assert!(b[..4096].iter().all(|&v| v == 0));
        assert!(b[4096..].iter().all(|&v| v == 0xA2));
        src.read(0x200000, &mut b).unwrap();
        assert!(b.iter().all(|&v| v == 0), "the stale entry was replayed");
    }

    #[test]
    fn entries_of_another_log_guid_are_not_replayed() {
        let mut log = vec![0u8; MIB as usize];
        log[..8192].copy_from_slice(&entry(1, 0, 0x300000, 0xA1));
        let (_t, mut src) = source_with_log(&log);
        assert_eq!(
            replay(&mut src, MIB, MIB, Guid::from_bytes([8; 16])).unwrap(),
            0
        );
        assert!(!src.replayed());
    }
}
