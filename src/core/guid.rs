//! GUIDs: one type for the mixed-endian on-disk form (GPT, VHDX, BCD) and the
//! registry-style text form `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
//!
//! GUIDs we write are derived from a seed and a purpose string with HMAC-SHA256, the way
//! systemd-repart derives partition UUIDs (systemd repart.d(5), "UUID=" and
//! `--seed=`): the first 16 bytes of HMAC-SHA256(key = seed, message = purpose), then the
//! RFC 9562 version-4 and variant bits so the result is a well-formed random-style GUID.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;

/// A GUID held as its canonical text-order bytes (RFC 9562 big-endian field order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// From text-order bytes (as printed, left to right).
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Guid(b)
    }

    /// Text-order bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From the Microsoft on-disk form: Data1, Data2, Data3 little-endian, Data4 as is.
    pub fn from_mixed_endian(b: [u8; 16]) -> Self {
        let mut t = b;
        t[0..4].reverse();
        t[4..6].reverse();
        t[6..8].reverse();
        Guid(t)
    }

    /// The Microsoft on-disk form (GPT entries, VHDX headers, BCD device elements).
    pub fn to_mixed_endian(&self) -> [u8; 16] {
        let mut t = self.0;
        t[0..4].reverse();
        t[4..6].reverse();
        t[6..8].reverse();
        t
    }

    /// Derive a GUID from a seed and a purpose ("gpt-disk", "partition:esp", ...).
    /// The same seed and purpose always give the same GUID; different purposes differ.
    pub fn derive(seed: &[u8], purpose: &str) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut b = [0u8; 16];
        b.copy_from_slice(&out[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// A 64-bit value (volume serials) derived like [`Guid::derive`]: its first 8 bytes.
    pub fn derive_u64(seed: &[u8], purpose: &str) -> u64 {
        let g = Guid::derive(seed, purpose);
        u64::from_le_bytes(g.0[..8].try_into().expect("8 of 16 bytes"))
    }

    pub fn to_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.0)
    }

    pub fn from_uuid(u: &uuid::Uuid) -> Self {
        Guid(*u.as_bytes())
    }

    /// Registry form with braces, lower case as bcdedit prints it.
    pub fn braced(&self) -> String {
        format!("{{{self}}}")
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Error for text that is not a GUID.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a GUID: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, braces optional")]
pub struct ParseGuidError(String);

impl FromStr for Guid {
    type Err = ParseGuidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(t);
        let dashes_ok = t.len() == 36 && [8, 13, 18, 23].iter().all(|&i| t.as_bytes()[i] == b'-');
        let hex: String = t.chars().filter(|&c| c != '-').collect();
        if !dashes_ok || hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ParseGuidError(s.to_string()));
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| ParseGuidError(s.to_string()))?;
        }
        Ok(Guid(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_mixed_endian_forms() {
        // The EFI system partition type GUID and its on-disk bytes (UEFI 2.10, table 5.7).
        let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(
            g.to_mixed_endian(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_mixed_endian(g.to_mixed_endian()), g);
        assert_eq!(g.braced(), "{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}");
        assert_eq!(
            "{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}"
                .parse::<Guid>()
                .unwrap(),
            g
        );
        assert!("c12a7328f81f11d2ba4b00a0c93ec93b".parse::<Guid>().is_err());
        assert!("x12a7328-f81f-11d2-ba4b-00a0c93ec93b"
            .parse::<Guid>()
            .is_err());
    }

    #[test]
    fn derived_guids_are_stable_distinct_and_version_4() {
        let a = Guid::derive(b"seed", "gpt-disk");
        assert_eq!(a, Guid::derive(b"seed", "gpt-disk"));
        assert_ne!(a, Guid::derive(b"seed", "partition:esp"));
        assert_ne!(a, Guid::derive(b"other", "gpt-disk"));
        assert_eq!(a.as_bytes()[6] >> 4, 4);
        assert_eq!(a.as_bytes()[8] >> 6, 2);
        // Known answer: HMAC-SHA256(key "seed", "gpt-disk"), first 16 bytes, v4 bits set.
        assert_eq!(a.to_string(), known_answer());
    }

    fn known_answer() -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"seed").unwrap();
        mac.update(b"gpt-disk");
        let h = mac.finalize().into_bytes();
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b).to_string()
    }
}
