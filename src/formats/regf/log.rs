//! Recovery of a dirty hive from new-format transaction logs (spec, "Format of
//! transaction log files", "New format"; "Dirty state of a hive"; "Multiple transaction
//! log files"). Old-format logs ("DIRT" dirty vectors) are refused with a message.

use super::base::{
    BaseBlock, BASE_BLOCK_SIZE, FILE_TYPE_LOG_NEW, FILE_TYPE_LOG_OLD, FILE_TYPE_PRIMARY,
};
use super::{le32, le64, Error, Result, HBIN_PAGE};

/// Marvin32 seed of log entry hashes, the hexadecimal bytes 82 EF 4D 88 7A 4E 55 C5 of
/// the spec ("Log entries", note 3) as one 64-bit number; the low half seeds the first
/// state word. Checked against the hashes in logs written by Windows.
pub const MARVIN32_LOG_SEED: u64 = 0x82EF_4D88_7A4E_55C5;
/// Log entries start at the second 512-byte sector.
const LOG_ENTRIES_START: usize = 512;
/// Log entries are aligned to 512 bytes.
const LOG_ENTRY_ALIGN: usize = 512;
/// Fixed header of a log entry.
const LOG_ENTRY_HEADER: usize = 40;
/// Largest hive bins data size a log entry may ask for: the same bound as cell offsets.
const MAX_BINS_SIZE: u32 = 0x7FFF_F000;

/// Marvin32 (the keyed hash of Windows' `RtlComputeMarvin32`), as used for log entries.
pub fn marvin32(seed: u64, data: &[u8]) -> u64 {
    fn block(lo: &mut u32, hi: &mut u32) {
        *hi ^= *lo;
        *lo = lo.rotate_left(20);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(9);
        *hi ^= *lo;
        *lo = lo.rotate_left(27);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    }
    let mut lo = seed as u32;
    let mut hi = (seed >> 32) as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        lo = lo.wrapping_add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        block(&mut lo, &mut hi);
    }
    let rest = chunks.remainder();
    let mut fin: u32 = 0x80;
    for &b in rest.iter().rev() {
        fin = (fin << 8) | b as u32;
    }
    lo = lo.wrapping_add(fin);
    block(&mut lo, &mut hi);
    block(&mut lo, &mut hi);
    ((hi as u64) << 32) | lo as u64
}

/// A hive recovered from its logs.
#[derive(Debug, Clone)]
pub struct LogRecovery {
    /// The recovered primary file: base block fixed up, dirty pages applied.
    pub data: Vec<u8>,
    /// Log entries applied.
    pub entries_applied: usize,
    /// Sequence number of the first entry applied.
    pub first_sequence: u32,
    /// Sequence number of the last entry applied.
    pub last_sequence: u32,
    /// The primary file's secondary sequence number: the entry recovery expects first.
    /// When `first_sequence` is higher, the logs no longer hold the entries in between
    /// (spec note 7 would stop; we apply what follows, per note 5, and say so).
    pub expected_sequence: u32,
}

struct Entry<'a> {
    log: usize,
    offset: usize,
    sequence: u32,
    flags: u32,
    bins_size: u32,
    /// (page offset in the hive bins data, page bytes).
    pages: Vec<(u32, &'a [u8])>,
}

fn log_err(log: usize, structure: &'static str, offset: usize, detail: impl Into<String>) -> Error {
    Error::Log {
        log,
        structure,
        offset: offset as u64,
        detail: detail.into(),
    }
}

/// Valid entries of one log, in file order, up to the first invalid one.
fn entries(log: usize, data: &[u8]) -> Result<Vec<Entry<'_>>> {
    let bb = BaseBlock::parse(data).map_err(|e| log_err(log, "base block", 0, e.to_string()))?;
    if !BaseBlock::checksum_ok(data) {
        return Err(log_err(
            log,
            "base block",
            508,
            "checksum does not match; the log is damaged",
        ));
    }
    if bb.file_type == FILE_TYPE_LOG_OLD || data.get(512..516) == Some(b"DIRT".as_slice()) {
        return Err(log_err(log, "base block", 28, "old-format log (dirty vector); only new-format logs (Windows 8.1 and later, \"HvLE\" entries) are supported"));
    }
    if bb.file_type != FILE_TYPE_LOG_NEW {
        return Err(log_err(
            log,
            "base block",
            28,
            format!(
                "file type is {}, expected 6 (new-format transaction log)",
                bb.file_type
            ),
        ));
    }
    let mut out = Vec::new();
    let mut at = LOG_ENTRIES_START;
    while let Some(h) = data.get(at..at + LOG_ENTRY_HEADER) {
        if &h[0..4] != b"HvLE" {
            break;
        }
        let size = le32(h, 4) as usize;
        let Some(entry) = data.get(at..at.saturating_add(size)) else {
            break;
        };
        if size < LOG_ENTRY_HEADER || !size.is_multiple_of(LOG_ENTRY_ALIGN) {
            break;
        }
        let bins_size = le32(h, 16);
        let count = le32(h, 20) as usize;
        let hash1 = le64(h, 24);
        let hash2 = le64(h, 32);
        // Spec note 8: a wrong hash or bins size ends recovery at this entry.
        if !(bins_size as usize).is_multiple_of(HBIN_PAGE) || bins_size > MAX_BINS_SIZE {
            break;
        }
        if marvin32(MARVIN32_LOG_SEED, &entry[LOG_ENTRY_HEADER..]) != hash1
            || marvin32(MARVIN32_LOG_SEED, &entry[..32]) != hash2
        {
            break;
        }
        let refs_end = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(LOG_ENTRY_HEADER));
        let Some(refs_end) = refs_end.filter(|&e| e <= size) else {
            break;
        };
        let mut pages = Vec::with_capacity(count);
        let mut page_at = refs_end;
        let mut ok = true;
        for i in 0..count {
            let r = LOG_ENTRY_HEADER + i * 8;
            let off = le32(entry, r);
            let len = le32(entry, r + 4) as usize;
            let fits_entry = page_at.checked_add(len).filter(|&e| e <= size);
            let fits_hive = (off as u64 + len as u64) <= bins_size as u64;
            match fits_entry {
                Some(end) if fits_hive => {
                    pages.push((off, &entry[page_at..end]));
                    page_at = end;
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            return Err(log_err(log, "log entry", at, "a dirty page lies outside its entry or outside the hive bins data, although the hashes match"));
        }
        out.push(Entry {
            log,
            offset: at,
            sequence: le32(h, 12),
            flags: le32(h, 8),
            bins_size,
            pages,
        });
        at += size;
    }
    Ok(out)
}

/// Apply new-format transaction logs (.LOG1 then .LOG2) to a dirty primary file.
///
/// Entries with a sequence number below the primary's secondary sequence number were
/// applied already and are skipped; the rest are applied in ascending sequence order,
/// starting from the lowest and stopping at the first gap (spec notes 5, 7). When the
/// lowest is above the expected number, [`LogRecovery::first_sequence`] says so. A
/// primary base block with a bad checksum is replaced by the newest log's base block
/// (note 6).
pub fn recover(primary: &[u8], logs: &[&[u8]]) -> Result<LogRecovery> {
    let mut data = primary.to_vec();
    if data.len() < BASE_BLOCK_SIZE {
        return Err(super::corrupt(
            "base block",
            0,
            format!("file is {} bytes, shorter than a base block", data.len()),
        ));
    }
    let mut all = Vec::new();
    let mut errors = Vec::new();
    let mut best_base: Option<(u32, &[u8])> = None;
    for (i, log) in logs.iter().enumerate() {
        match entries(i + 1, log) {
            Ok(es) => {
                let seq = le32(log, 8);
                if best_base.is_none_or(|(s, _)| seq > s) {
                    best_base = Some((seq, &log[..512]));
                }
                all.extend(es);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !BaseBlock::checksum_ok(&data) {
        let Some((_, bb)) = best_base else {
            return Err(super::corrupt(
                "base block",
                508,
                format!(
                    "checksum is wrong and no usable log holds a copy of the base block ({})",
                    errors.join("; ")
                ),
            ));
        };
        data[..512].copy_from_slice(bb);
        data[28..32].copy_from_slice(&FILE_TYPE_PRIMARY.to_le_bytes());
    }
    let secondary = le32(&data, 8);
    all.retain(|e| e.sequence >= secondary);
    // LOG1 before LOG2 for equal sequence numbers (spec, "Multiple transaction log files").
    all.sort_by_key(|e| (e.sequence, e.log, e.offset));
    all.dedup_by_key(|e| e.sequence);
    let mut applied = 0usize;
    let first_sequence = all.first().map_or(secondary, |e| e.sequence);
    let mut last = None::<u32>;
    let mut flags = None;
    for e in &all {
        if let Some(l) = last {
            if e.sequence != l.wrapping_add(1) {
                break;
            }
        }
        let new_len = BASE_BLOCK_SIZE + e.bins_size as usize;
        if data.len() < new_len {
            data.resize(new_len, 0);
        }
        for (off, page) in &e.pages {
            let at = BASE_BLOCK_SIZE + *off as usize;
            data[at..at + page.len()].copy_from_slice(page);
        }
        data[40..44].copy_from_slice(&e.bins_size.to_le_bytes());
        flags = Some(e.flags);
        last = Some(e.sequence);
        applied += 1;
    }
    let Some(last_sequence) = last else {
        let why = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        return Err(Error::Log {
            log: 0,
            structure: "log entries",
            offset: LOG_ENTRIES_START as u64,
            detail: format!("the hive is dirty but no valid log entry has a sequence number of {secondary} or more{why}; the logs do not belong to this hive"),
        });
    };
    data[4..8].copy_from_slice(&last_sequence.to_le_bytes());
    data[8..12].copy_from_slice(&last_sequence.to_le_bytes());
    if let Some(f) = flags {
        // Spec note 11: the base block takes the Flags field of the entry applied.
        data[144..148].copy_from_slice(&f.to_le_bytes());
    }
    let sum = super::checksum(&data);
    data[508..512].copy_from_slice(&sum.to_le_bytes());
    Ok(LogRecovery {
        data,
        entries_applied: applied,
        first_sequence,
        last_sequence,
        expected_sequence: secondary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marvin32_is_keyed_and_length_sensitive() {
        let a = marvin32(MARVIN32_LOG_SEED, b"abc");
        assert_ne!(a, marvin32(MARVIN32_LOG_SEED, b"abc\0"));
        assert_ne!(a, marvin32(0, b"abc"));
        assert_eq!(a, marvin32(MARVIN32_LOG_SEED, b"abc"));
    }

    #[test]
    fn refuses_garbage_logs() {
        let mut primary = super::super::Hive::new_empty("R", 1).to_bytes().unwrap();
        primary[4] = 9; // dirty
        let sum = crate::formats::regf::checksum(&primary);
        primary[508..512].copy_from_slice(&sum.to_le_bytes());
        let e = recover(&primary, &[&[0u8; 1024]]).unwrap_err().to_string();
        assert!(e.contains("no valid log entry"), "{e}");
    }
}
