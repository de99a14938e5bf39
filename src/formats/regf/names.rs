//! Key and value names: 8-bit ("compressed") or UTF-16LE storage, upper-casing, the
//! hash-leaf hash (spec, "Hash leaf", note; "Index leaf": lists sorted by upper-cased
//! name, compared by character code).

use std::cmp::Ordering;

/// Upper-case one UTF-16 code unit the way the registry compares names: one unit maps
/// to one unit. Mappings that would change the length (ß → SS) or leave the BMP keep
/// the unit unchanged, as Windows' fixed upcase table does; surrogates map to themselves.
pub fn upcase_unit(c: u16) -> u16 {
    if c < 0x80 {
        return (c as u8).to_ascii_uppercase() as u16;
    }
    let Some(ch) = char::from_u32(c as u32) else {
        return c;
    };
    let mut up = ch.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) if (u as u32) <= 0xFFFF => u as u16,
        _ => c,
    }
}

/// Hash of a name for hash leaves: H = 37·H + upcase(unit), over UTF-16 units.
pub fn lh_hash(name: &str) -> u32 {
    name.encode_utf16().fold(0u32, |h, c| {
        h.wrapping_mul(37).wrapping_add(upcase_unit(c) as u32)
    })
}

/// Compare two names as the registry orders subkeys: upper-cased UTF-16 code units.
pub fn cmp_names(a: &str, b: &str) -> Ordering {
    a.encode_utf16()
        .map(upcase_unit)
        .cmp(b.encode_utf16().map(upcase_unit))
}

/// Case-insensitive name equality (registry rules).
pub fn eq_names(a: &str, b: &str) -> bool {
    cmp_names(a, b) == Ordering::Equal
}

/// True when a name can be stored in 8-bit form (every character below U+0100).
pub fn compressible(name: &str) -> bool {
    name.chars().all(|c| (c as u32) < 0x100)
}

/// Stored bytes of a name: 8-bit when possible, else UTF-16LE. Returns (bytes, compressed).
pub fn encode_name(name: &str) -> (Vec<u8>, bool) {
    if compressible(name) {
        (name.chars().map(|c| c as u32 as u8).collect(), true)
    } else {
        (utf16le(name), false)
    }
}

/// UTF-16LE bytes of a string, no terminator.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Length in UTF-16 units.
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Decode a stored name. 8-bit names are Latin-1. UTF-16 names with unpaired
/// surrogates or an odd length are refused when `strict`, else decoded lossily.
pub fn decode_name(raw: &[u8], compressed: bool, strict: bool) -> Result<String, String> {
    if compressed {
        return Ok(raw.iter().map(|&b| b as char).collect());
    }
    if !raw.len().is_multiple_of(2) && strict {
        return Err(format!("UTF-16 name has odd length {}", raw.len()));
    }
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    match String::from_utf16(&units) {
        Ok(s) => Ok(s),
        Err(_) if !strict => Ok(String::from_utf16_lossy(&units)),
        Err(_) => Err("UTF-16 name has an unpaired surrogate".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_definition() {
        // "ab" → upper "AB": 37·65 + 66.
        assert_eq!(lh_hash("ab"), 37 * 65 + 66);
        assert_eq!(lh_hash("AB"), lh_hash("ab"));
        assert_eq!(lh_hash(""), 0);
    }

    #[test]
    fn ordering_is_uppercase_code_units() {
        // '_' (0x5f) sorts after upper-case letters but before lower-case ones; upper-casing
        // puts "a" (→ 'A') before "_".
        assert_eq!(cmp_names("a", "_"), Ordering::Less);
        assert_eq!(cmp_names("Zeta", "alpha"), Ordering::Greater);
        assert!(eq_names("Straße", "STRAßE"));
        assert_eq!(upcase_unit('é' as u16), 'É' as u16);
        assert_eq!(upcase_unit(0xD800), 0xD800);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(encode_name("Abc"), (b"Abc".to_vec(), true));
        assert_eq!(encode_name("é"), (vec![0xE9], true));
        let (b, c) = encode_name("ключ");
        assert!(!c);
        assert_eq!(decode_name(&b, false, true).unwrap(), "ключ");
        assert_eq!(decode_name(&[0xE9], true, true).unwrap(), "é");
        assert!(decode_name(&[0x00, 0xD8], false, true).is_err());
        assert!(decode_name(&[0x00, 0xD8], false, false).is_ok());
    }
}
