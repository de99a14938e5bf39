//! Checksums: CRC-32 (IEEE 802.3, reflected, as GPT headers use: UEFI 2.10 section 5.3.2)
//! and CRC-32C (Castagnoli, as VHDX headers, region tables and log entries use: MS-VHDX
//! section 2.2.2.1), and SHA-256 of files (FIPS 180-4) for input pinning and reports.

/// CRC-32 (polynomial 0x04C11DB7 reflected), the GPT header and entry-array checksum.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// CRC-32C (polynomial 0x1EDC6F41 reflected), the VHDX checksum.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC-32C of `data` computed as if the 4 bytes at `field` were zero: the VHDX rule for
/// structures that carry their own checksum (MS-VHDX 2.2.2.1, 2.2.3.1).
pub fn crc32c_with_zeroed_field(data: &[u8], field: usize) -> u32 {
    let c = crc32c::crc32c(&data[..field]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &data[field + 4..])
}

/// Bytes per read when hashing a file, and reads queued ahead of the hasher.
const HASH_READ: usize = 4 << 20;
const HASH_AHEAD: usize = 2;

/// SHA-256 of a file as lowercase hex, with its length; `progress` is told each block read.
///
/// A reader thread keeps [`HASH_AHEAD`] large reads ahead of the hashing, so the cost is
/// about the larger of the read time and the hash time, not their sum.
pub fn sha256_file(
    path: &std::path::Path,
    progress: &dyn Fn(u64),
) -> std::io::Result<(u64, String)> {
    sha256_file_with(path, progress, false)
}

/// [`sha256_file`] for a file known not to be in the page cache (an image just written
/// with `O_DIRECT`): it is read with `O_DIRECT` where the filesystem allows, which skips
/// the page cache's copy (see `core::sink`).
pub fn sha256_file_uncached(
    path: &std::path::Path,
    progress: &dyn Fn(u64),
) -> std::io::Result<(u64, String)> {
    sha256_file_with(path, progress, true)
}

fn sha256_file_with(
    path: &std::path::Path,
    progress: &dyn Fn(u64),
    uncached: bool,
) -> std::io::Result<(u64, String)> {
    use crate::core::sink::{is_direct_refusal, open_direct_read, AlignedBuf};
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let plain = std::fs::File::open(path).map_err(named)?;
    // Small files get a buffer their size (and one byte more, to see the end in one read).
    let size = plain.metadata().map_err(named)?.len();
    let cap = usize::try_from(size + 1)
        .unwrap_or(HASH_READ)
        .next_multiple_of(4096)
        .min(HASH_READ);
    let mut direct = if uncached {
        open_direct_read(path)
    } else {
        None
    };
    // Advice only: a filesystem that ignores it still reads correctly.
    let _ = rustix::fs::fadvise(&plain, 0, None, rustix::fs::Advice::Sequential);
    type Piece = std::io::Result<(AlignedBuf, usize)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(HASH_AHEAD);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<AlignedBuf>();
    let reader = std::thread::spawn(move || {
        let mut at = 0u64;
        loop {
            let mut buf = back_rx
                .try_recv()
                .unwrap_or_else(|_| AlignedBuf::with_len(cap));
            let mut n = 0;
            let r = loop {
                let aligned = buf.is_aligned() && n == 0;
                let dst = &mut buf.slice_mut()[n..];
                let got = match direct.as_ref().filter(|_| aligned) {
                    Some(d) => match d.read_at(dst, at) {
                        Err(e) if is_direct_refusal(&e) => {
                            direct = None;
                            plain.read_at(dst, at)
                        }
                        r => r,
                    },
                    None => plain.read_at(dst, at),
                };
                match got {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        at += k as u64;
                        if n == cap {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let last = n == 0 || r.is_err();
            if tx.send(r.map(|_| (buf, n))).is_err() || last {
                return;
            }
        }
    });
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    let mut result = Ok(());
    for piece in rx {
        match piece {
            Ok((_, 0)) => break,
            Ok((b, k)) => {
                h.update(b.slice(k));
                n += k as u64;
                progress(k as u64);
                let _ = back_tx.send(b);
            }
            Err(e) => {
                result = Err(named(e));
                break;
            }
        }
    }
    let _ = reader.join();
    result?;
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // The standard check value: CRC of the ASCII digits "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 appendix B.4: 32 bytes of zeros and of 0xFF.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn zeroed_field_equals_explicit_zeroing() {
        let mut data: Vec<u8> = (0..64u8).collect();
        let got = crc32c_with_zeroed_field(&data, 4);
        data[4..8].fill(0);
        assert_eq!(got, crc32c(&data));
    }

    #[test]
    fn file_sha256_matches_the_known_answer_across_read_sizes() {
        use sha2::Digest;
        let dir = std::env::temp_dir().join(format!("nf-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Empty, shorter than one read, exactly one read, and several reads plus a tail.
        for len in [0usize, 3, HASH_READ, 2 * HASH_READ + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let p = dir.join(format!("{len}"));
            std::fs::write(&p, &data).unwrap();
            let want: String = sha2::Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let seen = std::cell::Cell::new(0u64);
            let got = sha256_file(&p, &|k| seen.set(seen.get() + k)).unwrap();
            assert_eq!(got, (len as u64, want.clone()), "length {len}");
            assert_eq!(seen.get(), len as u64);
            let got = sha256_file_uncached(&p, &|_| {}).unwrap();
            assert_eq!(got, (len as u64, want), "length {len}, uncached");
        }
        // "abc", FIPS 180-2 appendix B.1.
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p, &|_| {}).unwrap().1,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.join("missing"), &|_| {}).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
