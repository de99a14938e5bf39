//! Byte sizes as users write them: `10GiB`, `512MiB`, `4G`, `100M`, `4096`.
//!
//! Both `G` and `GiB` mean 2^30 (as qemu-img and Microsoft's tools read them); `GB` means
//! 10^9 for those who mean it.

use std::fmt;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{input}' is not a size: {why} (examples: 10GiB, 512MiB, 4G, 1048576)")]
pub struct ParseSizeError {
    input: String,
    why: &'static str,
}

/// Parse a size with an optional unit suffix (case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, ParseSizeError> {
    let err = |why| ParseSizeError { input: s.to_string(), why };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err("unknown unit; use B, KiB, MiB, GiB, TiB (or K, M, G, T)")),
    };
    if let Some((int, frac)) = num.split_once('.') {
        // Fractions like 1.5GiB: exact in integers via the decimal digits.
        let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err("bad number"))? };
        if frac.is_empty() || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(err("bad fraction"));
        }
        let scale = 10u64.pow(frac.len() as u32);
        let f: u64 = frac.parse().map_err(|_| err("bad fraction"))?;
        let whole = int.checked_mul(mult).ok_or_else(|| err("too large"))?;
        let part = (f as u128 * mult as u128 / scale as u128) as u64;
        return whole.checked_add(part).ok_or_else(|| err("too large"));
    }
    let n: u64 = num.parse().map_err(|_| err("too large"))?;
    n.checked_mul(mult).ok_or_else(|| err("too large"))
}

/// A byte count printed in binary units for humans.
#[derive(Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, div) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if v >= div {
                return if v % div == 0 {
                    write!(f, "{} {unit}", v / div)
                } else {
                    write!(f, "{:.2} {unit}", v as f64 / div as f64)
                };
            }
        }
        write!(f, "{v} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB"), Ok(10 * GIB));
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("4G"), Ok(4 * GIB));
        assert_eq!(parse_size("4g"), Ok(4 * GIB));
        assert_eq!(parse_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("20000000T").is_err());
        assert_eq!(Bytes(10 * GIB).to_string(), "10 GiB");
        assert_eq!(Bytes(1536 * MIB).to_string(), "1.50 GiB");
    }
}
