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

/// SHA-256 of a file as lowercase hex, with its length; `progress` is told each block read.
pub fn sha256_file(
    path: &std::path::Path,
    progress: &dyn Fn(u64),
) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(named)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(named)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress(k as u64);
    }
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
}
