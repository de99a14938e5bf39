//! Canonical Huffman decoding tables ([MS-XCA] 2.1.4.1 / [MS-PATCH] 2.4: codewords are
//! assigned in order of (length, symbol), read most-significant bit first).
//!
//! A primary table indexed by the first `table_bits` bits resolves every codeword of that
//! length or shorter in one lookup; longer codewords (rare by construction) fall back to a
//! canonical walk over lengths. Incomplete codes are accepted: unassigned bit patterns are
//! reported when met, which lets the caller turn them into an error.

/// Longest codeword any WIM codec uses (LZX main and length codes).
pub const MAX_CODEWORD_LEN: usize = 16;
/// Largest primary index any decoder asks for; the table is allocated at this size so a
/// compile-time index width (see [`HuffTable::decode_top`]) needs no bounds check.
pub const MAX_TABLE_BITS: u32 = 12;
/// Most symbols a code may have: a primary entry keeps the symbol in 11 bits, and the
/// all-ones value is reserved for [`MISS`] (LZMS, the largest WIM alphabet, has 799).
pub const MAX_SYMBOLS: usize = (1 << 11) - 1;
/// Primary entry for a bit pattern the table does not resolve: a longer codeword (see
/// [`HuffTable::lookup_long`]) or no codeword at all. Read as `symbol << 5 | length` it has
/// symbol 2047, above every real symbol, so a decoder that tests "symbol below N" first
/// meets it only on its slower path.
pub const MISS: u16 = u16::MAX;

/// Decoding table for one canonical Huffman code.
pub struct HuffTable {
    /// `symbol << 5 | length`, or [`MISS`]; only the first `1 << table_bits` entries are used.
    table: Box<[u16; 1 << MAX_TABLE_BITS]>,
    table_bits: u32,
    max_len: u32,
    first_code: [u32; MAX_CODEWORD_LEN + 2],
    count: [u32; MAX_CODEWORD_LEN + 2],
    first_index: [u32; MAX_CODEWORD_LEN + 2],
    sorted: Vec<u16>,
}

/// Why a set of codeword lengths is not a usable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// More codewords than the code space holds (Kraft sum > 1).
    OverSubscribed,
    /// A length exceeds the code's maximum.
    TooLong,
    /// More symbols than [`MAX_SYMBOLS`].
    TooManySymbols,
}

impl BuildError {
    pub fn describe(self) -> &'static str {
        match self {
            BuildError::OverSubscribed => "over-subscribed codeword lengths",
            BuildError::TooLong => "codeword longer than the maximum",
            BuildError::TooManySymbols => "more symbols than a decoding table holds",
        }
    }
}

impl HuffTable {
    /// A table for codes of at most `max_len` bits, with a `table_bits` primary index.
    pub fn new(table_bits: u32, max_len: u32) -> Self {
        debug_assert!(table_bits <= max_len && max_len as usize <= MAX_CODEWORD_LEN);
        debug_assert!(table_bits <= MAX_TABLE_BITS);
        HuffTable {
            table: Box::new([MISS; 1 << MAX_TABLE_BITS]),
            table_bits,
            max_len,
            first_code: [0; MAX_CODEWORD_LEN + 2],
            count: [0; MAX_CODEWORD_LEN + 2],
            first_index: [0; MAX_CODEWORD_LEN + 2],
            sorted: Vec::new(),
        }
    }

    /// Number of bits the caller must peek for [`HuffTable::lookup`].
    #[inline(always)]
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Rebuild from codeword lengths (0 = symbol unused).
    pub fn build(&mut self, lens: &[u8]) -> Result<(), BuildError> {
        if lens.len() > MAX_SYMBOLS {
            return Err(BuildError::TooManySymbols);
        }
        let max = self.max_len as usize;
        let mut count = [0u32; MAX_CODEWORD_LEN + 2];
        for &l in lens {
            if l as usize > max {
                return Err(BuildError::TooLong);
            }
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut left: i64 = 1;
        for &c in count.iter().take(max + 1).skip(1) {
            left = (left << 1) - i64::from(c);
            if left < 0 {
                return Err(BuildError::OverSubscribed);
            }
        }
        let mut first_code = [0u32; MAX_CODEWORD_LEN + 2];
        let mut first_index = [0u32; MAX_CODEWORD_LEN + 2];
        let mut code = 0u32;
        let mut index = 0u32;
        for l in 1..=max {
            first_code[l] = code;
            first_index[l] = index;
            code = (code + count[l]) << 1;
            index += count[l];
        }
        self.sorted.clear();
        self.sorted.resize(index as usize, 0);
        let mut next = first_index;
        for (sym, &l) in lens.iter().enumerate() {
            if l != 0 {
                // `next[l]` stays below `first_index[l + 1] <= index`: counted above.
                if let Some(slot) = self.sorted.get_mut(next[l as usize] as usize) {
                    *slot = sym as u16;
                }
                next[l as usize] += 1;
            }
        }
        // Canonical codewords of up to `table_bits` bits, taken in (length, symbol) order,
        // cover consecutive primary ranges starting at 0; what follows belongs to longer
        // codewords or to no codeword.
        let tb = self.table_bits as usize;
        let table = &mut self.table[..1 << tb];
        let mut at = 0usize;
        for l in 1..=tb {
            let span = 1usize << (tb - l);
            let lo = first_index[l] as usize;
            let hi = lo + count[l] as usize;
            for &sym in &self.sorted[lo..hi] {
                let e = (sym << 5) | l as u16;
                table[at..at + span].fill(e);
                at += span;
            }
        }
        table[at..].fill(MISS);
        self.first_code = first_code;
        self.first_index = first_index;
        self.count = count;
        Ok(())
    }

    /// The primary entry for the top `TB` bits of a 64-bit MSB-first bit buffer:
    /// `symbol << 5 | length` for a codeword of at most `TB` bits, else [`MISS`] (then
    /// call [`HuffTable::lookup_long`]). `TB` must equal this table's `table_bits`; being
    /// a constant, the index needs no bounds check.
    #[inline(always)]
    pub fn entry<const TB: u32>(&self, buf: u64) -> u16 {
        debug_assert_eq!(TB, self.table_bits);
        self.table[(buf >> (64 - TB)) as usize & ((1 << MAX_TABLE_BITS) - 1)]
    }

    /// Resolve the codeword at the top of `bits` (the next `max_len` bits of the stream,
    /// MSB first). Returns `(symbol, length)`, or `None` for an unassigned pattern.
    #[inline(always)]
    pub fn lookup(&self, bits: u32) -> Option<(u32, u32)> {
        let i = (bits >> (self.max_len - self.table_bits)) as usize;
        let e = self.table[i & ((1 << MAX_TABLE_BITS) - 1)];
        if e != MISS {
            return Some((u32::from(e >> 5), u32::from(e & 31)));
        }
        self.lookup_long(bits)
    }

    /// Like [`HuffTable::lookup`], reading the codeword from the top of a 64-bit MSB-first
    /// bit buffer holding at least `max_len` valid bits. `TB` must equal this table's
    /// `table_bits`; being a constant, the primary index needs no bounds check.
    #[inline(always)]
    pub fn decode_top<const TB: u32>(&self, buf: u64) -> Option<(u32, u32)> {
        debug_assert_eq!(TB, self.table_bits);
        let e = self.entry::<TB>(buf);
        if e != MISS {
            return Some((u32::from(e >> 5), u32::from(e & 31)));
        }
        self.lookup_long((buf >> (64 - self.max_len)) as u32)
    }

    /// The codeword longer than `table_bits` at the top of `bits` (the next `max_len`
    /// bits), by a walk over the canonical code; `None` for an unassigned pattern.
    #[cold]
    pub fn lookup_long(&self, bits: u32) -> Option<(u32, u32)> {
        for l in self.table_bits + 1..=self.max_len {
            let code = bits >> (self.max_len - l);
            let li = l as usize;
            let rel = code.wrapping_sub(self.first_code[li]);
            if code >= self.first_code[li] && rel < self.count[li] {
                let sym = self.sorted[(self.first_index[li] + rel) as usize];
                return Some((u32::from(sym), l));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_codes_resolve() {
        // Lengths 1,2,3,3 => codes 0, 10, 110, 111.
        let mut t = HuffTable::new(2, 3);
        t.build(&[1, 2, 3, 3]).unwrap();
        assert_eq!(t.lookup(0b000), Some((0, 1)));
        assert_eq!(t.lookup(0b011), Some((0, 1)));
        assert_eq!(t.lookup(0b100), Some((1, 2)));
        assert_eq!(t.lookup(0b110), Some((2, 3)));
        assert_eq!(t.lookup(0b111), Some((3, 3)));
    }

    #[test]
    fn rejects_oversubscribed_and_reports_gaps() {
        let mut t = HuffTable::new(2, 3);
        assert_eq!(t.build(&[1, 1, 1]), Err(BuildError::OverSubscribed));
        assert_eq!(t.build(&[4]), Err(BuildError::TooLong));
        t.build(&[1, 0, 0]).unwrap();
        assert_eq!(t.lookup(0b100), None);
        t.build(&[0, 0]).unwrap();
        assert_eq!(t.lookup(0), None);
    }
}
