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
/// Bits of a primary entry that hold the codeword length: 6, so that a shift by the whole
/// entry (which x86 and ARM take modulo 64) shifts by the length with no masking step.
pub const ENTRY_LEN_BITS: u32 = 6;
/// Most symbols a code may have: a primary entry keeps the symbol in the 10 bits above the
/// length, and the all-ones value is reserved for [`MISS`] (LZMS, the largest WIM
/// alphabet, has 799 symbols).
pub const MAX_SYMBOLS: usize = (1 << (16 - ENTRY_LEN_BITS)) - 1;
/// Primary entry for a bit pattern the table does not resolve: a longer codeword (see
/// [`HuffTable::lookup_long`]) or no codeword at all. Read as `symbol << 6 | length` it has
/// symbol 1023, above every real symbol, so a decoder that tests "symbol below N" first
/// meets it only on its slower path.
pub const MISS: u16 = u16::MAX;

/// Decoding table for one canonical Huffman code.
pub struct HuffTable {
    /// `symbol << 6 | length`, or [`MISS`]; only the first `1 << table_bits` entries are used.
    table: Box<[u16; 1 << MAX_TABLE_BITS]>,
    table_bits: u32,
    max_len: u32,
    first_code: [u32; MAX_CODEWORD_LEN + 2],
    count: [u32; MAX_CODEWORD_LEN + 2],
    first_index: [u32; MAX_CODEWORD_LEN + 2],
    /// Used symbols in (length, symbol) order; the first `first_index[max_len + 1]` are
    /// valid. Sized to a power of two so a masked index needs no bounds check.
    sorted: Box<[u16; SORTED_SLOTS]>,
}

/// Capacity of [`HuffTable::sorted`]: the next power of two above [`MAX_SYMBOLS`].
const SORTED_SLOTS: usize = MAX_SYMBOLS + 1;

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
            sorted: Box::new([0; SORTED_SLOTS]),
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
        // Four interleaved histograms keep consecutive equal lengths from waiting on each
        // other's increments; lengths above the maximum all land in the last bucket.
        const BUCKETS: usize = MAX_CODEWORD_LEN + 2;
        let mut lanes = [[0u32; BUCKETS]; 4];
        let quads = lens.chunks_exact(4);
        for &l in quads.remainder() {
            lanes[0][usize::from(l).min(BUCKETS - 1)] += 1;
        }
        for q in quads {
            for (lane, &l) in lanes.iter_mut().zip(q) {
                lane[usize::from(l).min(BUCKETS - 1)] += 1;
            }
        }
        let mut count = [0u32; BUCKETS];
        for (l, c) in count.iter_mut().enumerate() {
            *c = lanes[0][l] + lanes[1][l] + lanes[2][l] + lanes[3][l];
        }
        if count[max + 1..].iter().any(|&c| c != 0) {
            return Err(BuildError::TooLong);
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
        // Counting sort by length, without a branch on unused symbols: those are written
        // after the used ones (`next[0]` starts at their count) and never read. Every
        // index stays below `lens.len() <= MAX_SYMBOLS`, so the mask changes none.
        let mut next = first_index;
        next[0] = index;
        for (sym, &l) in lens.iter().enumerate() {
            let l = usize::from(l).min(BUCKETS - 1);
            self.sorted[next[l] as usize & (SORTED_SLOTS - 1)] = sym as u16;
            next[l] += 1;
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
                let e = (sym << ENTRY_LEN_BITS) | l as u16;
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
    /// `symbol << 6 | length` for a codeword of at most `TB` bits, else [`MISS`] (then
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
            return Some((u32::from(e >> ENTRY_LEN_BITS), u32::from(e) & 63));
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
            return Some((u32::from(e >> ENTRY_LEN_BITS), u32::from(e) & 63));
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

    /// The codeword at the top of `bits` by the definition: canonical codes assigned in
    /// (length, symbol) order, compared bit by bit.
    fn naive_lookup(lens: &[u8], max_len: u32, bits: u32) -> Option<(u32, u32)> {
        let mut code = 0u32;
        for l in 1..=max_len {
            for (sym, &sl) in lens.iter().enumerate() {
                if u32::from(sl) == l {
                    if bits >> (max_len - l) == code {
                        return Some((sym as u32, l));
                    }
                    code += 1;
                }
            }
            code <<= 1;
        }
        None
    }

    #[test]
    fn table_equals_canonical_definition() {
        // Random complete and incomplete codes with short and long codewords: every
        // pattern resolves as the definition says, through the primary table or the walk.
        let mut x = 17u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..60 {
            let n = 2 + (next() % 300) as usize;
            let max_len = 16u32;
            let mut lens: Vec<u8> = (0..n)
                .map(|_| {
                    if next() % 4 == 0 {
                        0
                    } else {
                        (1 + next() % 16) as u8
                    }
                })
                .collect();
            // Lengthen codewords until the code is no longer over-subscribed.
            loop {
                let kraft: u64 = lens
                    .iter()
                    .filter(|&&l| l != 0)
                    .map(|&l| 1u64 << (16 - l))
                    .sum();
                if kraft <= 1 << 16 {
                    break;
                }
                let i = (next() as usize) % n;
                if lens[i] != 0 && lens[i] < 16 {
                    lens[i] += 1;
                }
            }
            let mut t = HuffTable::new(10, max_len);
            t.build(&lens).unwrap();
            for bits in (0..1u32 << 16).step_by(7) {
                assert_eq!(
                    t.lookup(bits),
                    naive_lookup(&lens, max_len, bits),
                    "round {round} bits {bits:#06x}"
                );
            }
        }
    }

    #[test]
    fn entry_format() {
        let mut t = HuffTable::new(2, 3);
        t.build(&[1, 2, 3, 3]).unwrap();
        // Codeword 10 (symbol 1, 2 bits) at the top of the buffer.
        let e = t.entry::<2>(0b10 << 62);
        assert_eq!((e >> ENTRY_LEN_BITS, e & 63), (1, 2));
        // 11x is a 3-bit codeword: not in the 2-bit primary table.
        assert_eq!(t.entry::<2>(0b11 << 62), MISS);
        assert_eq!(
            t.build(&vec![1; MAX_SYMBOLS + 1]),
            Err(BuildError::TooManySymbols)
        );
    }
}
