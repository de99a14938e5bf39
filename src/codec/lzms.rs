//! LZMS, the codec of solid ("ESD") WIM resources. Microsoft publishes no specification;
//! the format is recorded in docs/facts-wim.md 8.3 (from the structural description that
//! accompanies wimlib's decoder): a forward range-coded stream of adaptive binary decisions
//! and a backward stream of adaptively rebuilt canonical Huffman codes and verbatim bits,
//! LZ and "delta" matches with delayed-update repeat queues, then an x86 address filter.
//! One WIM chunk is one independent ("raw") LZMS block.

use super::{lz_copy, CodecError, Decompress};

const CODEC: &str = "LZMS";
/// Largest buffer LZMS can address (F 8.3 limits).
const MAX_BUFFER: usize = 1 << 30;
const _: () = assert!(MAX_BUFFER <= u32::MAX as usize);
const MAX_CODEWORD_LEN: u32 = 15;
const NUM_LITERAL_SYMS: usize = 256;
const NUM_LENGTH_SYMS: usize = 54;
const NUM_DELTA_POWER_SYMS: usize = 8;
const MAX_OFFSET_SYMS: usize = 799;
/// Rebuild periods of the adaptive codes (symbols decoded between rebuilds).
const LITERAL_REBUILD: u32 = 1024;
const LZ_OFFSET_REBUILD: u32 = 1024;
const LENGTH_REBUILD: u32 = 512;
const DELTA_OFFSET_REBUILD: u32 = 1024;
const DELTA_POWER_REBUILD: u32 = 512;
/// Initial probability entry: 48 zero bits among the last 64 (history 0x55555555).
const PROB_INIT_ZEROS: u32 = 48;
const PROB_INIT_HISTORY: u64 = 0x0000_0000_5555_5555;
const _: () = assert!(PROB_INIT_ZEROS >= 1 && PROB_INIT_ZEROS <= 63);
/// x86 filter windows: translations within 1023 bytes of a likely instruction (511 for
/// E8), and two uses of one 16-bit target within 65535 bytes mark a likely instruction.
const X86_MAX_TRANSLATION_OFFSET: i64 = 1023;
const X86_ID_WINDOW: i64 = 65535;

/// Run lengths of equal extra-bit counts ("bits×count", F 8.3).
const OFFSET_EXTRA_RUNS: &[(u32, usize)] = &[
    (0, 8),
    (2, 9),
    (3, 7),
    (4, 10),
    (5, 15),
    (6, 15),
    (7, 20),
    (8, 20),
    (9, 30),
    (10, 33),
    (11, 40),
    (12, 42),
    (13, 45),
    (14, 60),
    (15, 73),
    (16, 80),
    (17, 85),
    (18, 95),
    (19, 105),
    (20, 6),
    (30, 1),
];
const LENGTH_EXTRA_RUNS: &[(u32, usize)] = &[
    (0, 26),
    (1, 4),
    (2, 6),
    (3, 4),
    (4, 5),
    (5, 2),
    (6, 1),
    (7, 1),
    (8, 1),
    (9, 1),
    (10, 1),
    (16, 1),
    (30, 1),
];

fn slot_tables(runs: &[(u32, usize)]) -> (Vec<u32>, Vec<u32>) {
    let mut base = Vec::new();
    let mut extra = Vec::new();
    let mut b = 1u32;
    for &(bits, count) in runs {
        for _ in 0..count {
            base.push(b);
            extra.push(bits);
            b = b.wrapping_add(1 << bits);
        }
    }
    (base, extra)
}

/// One adaptive probability: zero count over the last 64 decisions, and their history.
/// `prob` is the zero count clamped to 1..=63, kept ready so that a decision's
/// multiply does not wait for the clamp.
#[derive(Clone, Copy)]
struct Prob {
    zeros: u32,
    prob: u32,
    history: u64,
}

impl Prob {
    const INIT: Prob = Prob {
        zeros: PROB_INIT_ZEROS,
        prob: PROB_INIT_ZEROS,
        history: PROB_INIT_HISTORY,
    };
}

/// A repeat match: two adaptive bits pick entry 0, 1 or 2 of the recent-offsets queue,
/// which is taken out (the entries behind it move up).
#[inline(always)]
fn take_repeat<T: Copy>(rd: &mut RangeDecoder, rep: &mut [Decision<64>; 2], q: &mut [T; 4]) -> T {
    let r = if rd.bit(&mut rep[0]) == 0 {
        0
    } else if rd.bit(&mut rep[1]) == 0 {
        1
    } else {
        2
    };
    let v = q[r];
    q.copy_within(r + 1.., r);
    v
}

/// A decision class: 2^k probability entries indexed by the last k bits of the class.
struct Decision<const N: usize> {
    state: usize,
    probs: [Prob; N],
}

impl<const N: usize> Decision<N> {
    fn new() -> Self {
        Decision {
            state: 0,
            probs: [Prob::INIT; N],
        }
    }
}

/// Forward range decoder over 16-bit little-endian words.
struct RangeDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        let w = |i: usize| u32::from(u16::from_le_bytes([data[i], data[i + 1]]));
        RangeDecoder {
            data,
            pos: 4,
            range: 0xFFFF_FFFF,
            code: (w(0) << 16) | w(2),
        }
    }

    #[inline(always)]
    fn bit<const N: usize>(&mut self, d: &mut Decision<N>) -> u32 {
        let p = &mut d.probs[d.state];
        let prob = p.prob;
        if self.range <= 0xFFFF {
            self.range <<= 16;
            self.code <<= 16;
            if let Some(b) = self.data.get(self.pos..self.pos + 2) {
                self.code |= u32::from(u16::from_le_bytes([b[0], b[1]]));
                self.pos += 2;
            }
        }
        let bound = (self.range >> 6) * prob;
        let bit = if self.code < bound {
            self.range = bound;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            1
        };
        let oldest = (p.history >> 63) as u32;
        p.zeros = p.zeros + oldest - bit;
        p.prob = p.zeros.clamp(1, 63);
        p.history = (p.history << 1) | u64::from(bit);
        d.state = ((d.state << 1) | bit as usize) & (N - 1);
        bit
    }
}

/// Backward bit reader: 16-bit little-endian words from the end towards the start, bits
/// most-significant first; words before the start read as zero.
struct BackBits<'a> {
    data: &'a [u8],
    /// Byte index one past the next word to load.
    pos: usize,
    buf: u64,
    count: u32,
}

impl<'a> BackBits<'a> {
    fn new(data: &'a [u8]) -> Self {
        BackBits {
            data,
            pos: data.len(),
            buf: 0,
            count: 0,
        }
    }

    /// Top the buffer up to at least 49 bits. Away from the start this takes all whole
    /// words that fit from one 8-byte load: read little-endian, the 8 bytes before `pos`
    /// hold the next four words in reading order from the top down, so they go in with
    /// one shift. The bits below `count` are then the following words' own bits, which a
    /// later refill ORs in again unchanged.
    #[inline(always)]
    fn refill(&mut self) {
        if self.count > 48 {
            return;
        }
        if let Some(w) = self
            .pos
            .checked_sub(8)
            .and_then(|start| self.data.get(start..self.pos))
        {
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            let words = (64 - self.count) / 16;
            self.buf |= u64::from_le_bytes(v) >> self.count;
            self.pos -= 2 * words as usize;
            self.count += 16 * words;
            return;
        }
        self.refill_slow();
    }

    /// Word by word near the start of the input, zeros once it is exhausted.
    #[cold]
    fn refill_slow(&mut self) {
        while self.count <= 48 {
            let w = if self.pos >= 2 {
                self.pos -= 2;
                u16::from_le_bytes([self.data[self.pos], self.data[self.pos + 1]])
            } else {
                0
            };
            self.buf |= u64::from(w) << (48 - self.count);
            self.count += 16;
        }
    }

    #[inline(always)]
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < n {
            self.refill();
        }
        let v = (self.buf >> (64 - n)) as u32;
        self.buf <<= n;
        self.count -= n;
        v
    }
}

/// Symbol bits of a sort key: every adaptive code has at most 1024 symbols.
const SYM_BITS: u32 = 10;
const SYM_MASK: u32 = (1 << SYM_BITS) - 1;
/// 64-bit words of a bitmap over the symbols of one code.
const SYM_WORDS: usize = (1 << SYM_BITS) / 64;
const _: () = assert!(MAX_OFFSET_SYMS <= 1 << SYM_BITS);
/// Frequencies stay below 2 * period + 2 = 2050 (halved at every rebuild), so 12 bits sort
/// them; the cap only keeps the key arithmetic total.
const FREQ_DIGIT_BITS: u32 = 6;
const MAX_SORT_FREQ: u32 = (1 << (2 * FREQ_DIGIT_BITS)) - 1;
const _: () = assert!(2 * LITERAL_REBUILD + 2 <= MAX_SORT_FREQ);

/// Sort keys `frequency << SYM_BITS | symbol`, given in symbol order, by (frequency,
/// symbol): a stable radix sort on the two 6-bit digits of the frequency, which costs a
/// few passes over the symbols instead of a comparison sort at every rebuild.
fn sort_by_freq(a: &mut Vec<u32>, tmp: &mut Vec<u32>) {
    const DIGITS: usize = 1 << FREQ_DIGIT_BITS;
    tmp.clear();
    tmp.resize(a.len(), 0);
    for shift in [SYM_BITS, SYM_BITS + FREQ_DIGIT_BITS] {
        let mut start = [0u32; DIGITS + 1];
        for &k in a.iter() {
            start[((k >> shift) as usize & (DIGITS - 1)) + 1] += 1;
        }
        for d in 1..=DIGITS {
            start[d] += start[d - 1];
        }
        for &k in a.iter() {
            let d = (k >> shift) as usize & (DIGITS - 1);
            tmp[start[d] as usize] = k;
            start[d] += 1;
        }
        std::mem::swap(a, tmp);
    }
}

/// Widest primary decode-table index; codewords longer than a table's index width are
/// resolved by a canonical walk over the longer lengths (rare: they are the rarest symbols).
const MAX_TABLE_BITS: u32 = 10;
const TABLE_SIZE: usize = 1 << MAX_TABLE_BITS;
/// Table entry: `symbol << ENTRY_LEN_BITS | length`; 0 marks a prefix of a longer codeword.
const ENTRY_LEN_BITS: u32 = 4;
const _: () = assert!(MAX_CODEWORD_LEN < 1 << ENTRY_LEN_BITS);
const _: () = assert!((MAX_OFFSET_SYMS as u32) << ENTRY_LEN_BITS <= u16::MAX as u32);
/// Sort key of the leaf that ends the leaf queue, and weight of the node that ends the
/// node queue: both heavier than any real node (at most 1024 symbols of frequency at most
/// MAX_SORT_FREQ), so the merge never takes them.
const LEAF_SENTINEL: u32 = u32::MAX;
const NODE_SENTINEL: u32 = u32::MAX;
const _: () = assert!((MAX_SORT_FREQ << SYM_BITS) < LEAF_SENTINEL >> SYM_BITS);

/// Frequencies below this are sorted in one counting pass (the usual case: the halving at
/// every rebuild keeps frequencies near the symbols' share of one period); larger ones
/// by the two-digit radix sort.
const SMALL_FREQS: usize = 256;

/// `keys` := `frequency << SYM_BITS | symbol` sorted by (frequency, symbol), for
/// frequencies at most `max` < [`SMALL_FREQS`]: a stable counting sort. The symbols are
/// split into two halves counted and placed side by side, so consecutive updates of one
/// counter (equal frequencies are common) form two independent chains instead of one.
fn counting_sort_small(freqs: &[u32], max: usize, keys: &mut Vec<u32>) {
    let n = freqs.len();
    let half = n / 2;
    let (lo, hi) = freqs.split_at(half);
    let mut count_lo = [0u32; SMALL_FREQS];
    let mut count_hi = [0u32; SMALL_FREQS];
    for (&a, &b) in lo.iter().zip(hi) {
        count_lo[a as usize % SMALL_FREQS] += 1;
        count_hi[b as usize % SMALL_FREQS] += 1;
    }
    if let Some(&b) = hi.get(half) {
        count_hi[b as usize % SMALL_FREQS] += 1;
    }
    // Start of each frequency's run: the low half's symbols first, then the high half's.
    let mut at = 0u32;
    for f in 0..=max.min(SMALL_FREQS - 1) {
        let c = count_lo[f];
        count_lo[f] = at;
        at += c;
        let c = count_hi[f];
        count_hi[f] = at;
        at += c;
    }
    keys.clear();
    keys.resize(n, 0);
    for (k, (&a, &b)) in lo.iter().zip(hi).enumerate() {
        let slot = &mut count_lo[a as usize % SMALL_FREQS];
        if let Some(key) = keys.get_mut(*slot as usize) {
            *key = (a << SYM_BITS) | k as u32;
        }
        *slot += 1;
        let slot = &mut count_hi[b as usize % SMALL_FREQS];
        if let Some(key) = keys.get_mut(*slot as usize) {
            *key = (b << SYM_BITS) | (half + k) as u32;
        }
        *slot += 1;
    }
    if let Some(&b) = hi.get(half) {
        let slot = count_hi[b as usize % SMALL_FREQS];
        if let Some(key) = keys.get_mut(slot as usize) {
            *key = (b << SYM_BITS) | (2 * half) as u32;
        }
    }
}

/// An adaptive Huffman code rebuilt from symbol frequencies every `period` symbols.
///
/// The decode table is private to LZMS rather than the shared canonical table: LZMS
/// rebuilds a code every 512 or 1024 symbols, so the rebuild (which always yields a
/// complete code of at most 15 bits) dominates, and it can skip the validation, reuse the
/// per-length counts the tree already gives, and index the table with only as many bits
/// as the longest codeword needs.
struct AdaptiveCode {
    freqs: Vec<u32>,
    until_rebuild: u32,
    period: u32,
    /// `frequency << SYM_BITS | symbol`, sorted, then two [`LEAF_SENTINEL`]s.
    keys: Vec<u32>,
    sort_tmp: Vec<u32>,
    node_freq: Vec<u32>,
    node_parent: Vec<u32>,
    depth: Vec<u32>,
    /// Index width of `table` for the current code (1..=`max_table_bits`).
    table_bits: u32,
    max_table_bits: u32,
    table: Box<[u16; TABLE_SIZE]>,
    /// Symbols in canonical order (length, symbol), for codewords longer than the table.
    sorted: Vec<u16>,
    first_code: [u32; MAX_CODEWORD_LEN as usize + 1],
    first_index: [u32; MAX_CODEWORD_LEN as usize + 1],
    count: [u32; MAX_CODEWORD_LEN as usize + 1],
}

impl AdaptiveCode {
    fn new(max_syms: usize, table_bits: u32, period: u32) -> Self {
        debug_assert!((1..=MAX_TABLE_BITS).contains(&table_bits));
        AdaptiveCode {
            freqs: Vec::with_capacity(max_syms),
            until_rebuild: period,
            period,
            keys: Vec::with_capacity(max_syms + 2),
            sort_tmp: Vec::with_capacity(max_syms),
            node_freq: Vec::with_capacity(max_syms),
            node_parent: Vec::with_capacity(max_syms),
            depth: Vec::with_capacity(max_syms),
            table_bits: 1,
            max_table_bits: table_bits,
            table: Box::new([0; TABLE_SIZE]),
            sorted: Vec::with_capacity(max_syms),
            first_code: [0; MAX_CODEWORD_LEN as usize + 1],
            first_index: [0; MAX_CODEWORD_LEN as usize + 1],
            count: [0; MAX_CODEWORD_LEN as usize + 1],
        }
    }

    fn reset(&mut self, num_syms: usize) {
        self.freqs.clear();
        self.freqs.resize(num_syms, 1);
        self.build();
    }

    /// Build the canonical code the format prescribes: the Huffman tree of the two-queue
    /// method over symbols sorted by (frequency, symbol), leaves winning frequency ties,
    /// then lengths handed out longest-first in that sorted order.
    fn build(&mut self) {
        let n = self.freqs.len();
        self.until_rebuild = self.period;
        let mut counts = [0u32; MAX_CODEWORD_LEN as usize + 1];
        self.sort_leaves();
        if n == 1 {
            // One symbol: codeword "0"; the pattern "1" stays unassigned.
            counts[1] = 1;
        } else if n >= 2 {
            self.merge_tree();
            self.length_counts(&mut counts);
        }
        self.fill_table(&counts);
    }

    /// `keys` := the symbols sorted by (frequency, symbol), then two leaf sentinels.
    fn sort_leaves(&mut self) {
        let n = self.freqs.len();
        let max = self.freqs.iter().copied().max().unwrap_or(0);
        if max as usize >= SMALL_FREQS {
            let a = &mut self.keys;
            a.clear();
            a.extend(
                self.freqs
                    .iter()
                    .enumerate()
                    .map(|(s, &f)| (f.min(MAX_SORT_FREQ) << SYM_BITS) | s as u32),
            );
            sort_by_freq(a, &mut self.sort_tmp);
        } else {
            counting_sort_small(&self.freqs, max as usize, &mut self.keys);
        }
        self.keys.truncate(n);
        self.keys.extend([LEAF_SENTINEL; 2]);
    }

    /// The two-queue merge: leaves come from `keys` in order, internal nodes in order of
    /// creation; each step joins the two lightest, a leaf winning a tie. Records each
    /// internal node's weight and parent.
    ///
    /// The picks are data-dependent, so they are made without branches, and the heads of
    /// both queues and the entries behind them are kept in registers: a pick is one
    /// compare and two selects, and the loads that refill the heads run alongside. Both
    /// queues end in sentinels heavier than any real weight, so the merge never takes one.
    fn merge_tree(&mut self) {
        let n = self.keys.len() - 2;
        let keys = &self.keys[..n + 2];
        let node_freq = &mut self.node_freq;
        node_freq.clear();
        node_freq.resize(n, NODE_SENTINEL);
        let node_parent = &mut self.node_parent;
        node_parent.clear();
        node_parent.resize(n - 1, 0);
        let (mut i, mut b) = (0usize, 0usize);
        let (mut leaf, mut leaf_next) = (keys[0] >> SYM_BITS, keys[1] >> SYM_BITS);
        let (mut node, mut node_next) = (NODE_SENTINEL, NODE_SENTINEL);
        for e in 0..n - 1 {
            let mut sum = 0u32;
            for _ in 0..2 {
                let take_leaf = leaf <= node;
                sum = sum.wrapping_add(leaf.min(node));
                // Harmless when a leaf is taken: node b's parent is written again when
                // node b itself is taken.
                node_parent[b] = e as u32;
                i += usize::from(take_leaf);
                b += usize::from(!take_leaf);
                leaf = if take_leaf { leaf_next } else { leaf };
                node = if take_leaf { node } else { node_next };
                // i <= n and b <= e: both reads stay inside the queues.
                leaf_next = keys[i + 1] >> SYM_BITS;
                node_next = node_freq[b + 1];
            }
            node_freq[e] = sum;
            // Heads read before node e had its weight.
            if b == e {
                node = sum;
            } else if b + 1 == e {
                node_next = sum;
            }
        }
    }

    /// Codeword counts per length from the internal node depths (root = node n-2).
    fn length_counts(&mut self, counts: &mut [u32; MAX_CODEWORD_LEN as usize + 1]) {
        let n = self.keys.len() - 2;
        let depth = &mut self.depth;
        depth.clear();
        depth.resize(n - 1, 0);
        // Internal nodes per depth; depths reach n - 2 at most in a degenerate tree. Nodes
        // come deepest-last, so depths form runs: a run is counted in a register and added
        // once, which keeps the per-node work free of read-after-write through memory.
        let mut per_depth = [0u32; MAX_CODEWORD_LEN as usize + 1];
        let mut deepest = 0u32;
        let (mut run_depth, mut run) = (0usize, 0u32);
        for node in (0..n - 2).rev() {
            let d = depth[self.node_parent[node] as usize] + 1;
            depth[node] = d;
            deepest = deepest.max(d);
            let d = d.min(MAX_CODEWORD_LEN) as usize;
            if d != run_depth {
                per_depth[run_depth] += run;
                (run_depth, run) = (d, 0);
            }
            run += 1;
        }
        per_depth[run_depth] += run;
        if deepest < MAX_CODEWORD_LEN {
            // Each internal node at depth d - 1 has two children at depth d; the internal
            // ones among them are not leaves.
            counts[1] = 2 - per_depth[1];
            for len in 2..=MAX_CODEWORD_LEN as usize {
                counts[len] = 2 * per_depth[len - 1] - per_depth[len];
            }
            return;
        }
        // A node too deep for a 15-bit codeword: the format's length limiting turns a
        // leaf of the longest length below 15 that exists into two of the next length.
        *counts = [0; MAX_CODEWORD_LEN as usize + 1];
        counts[1] = 2;
        for node in (0..n - 2).rev() {
            let mut len = depth[node] as usize;
            if len >= MAX_CODEWORD_LEN as usize {
                len = MAX_CODEWORD_LEN as usize;
                loop {
                    len -= 1;
                    if counts[len] != 0 {
                        break;
                    }
                }
            }
            counts[len] -= 1;
            counts[len + 1] += 2;
        }
    }

    /// Fill the decode table from the per-length `counts` (a complete code, or the
    /// one-codeword code of a single symbol, or no code): the lengths go longest-first to
    /// the symbols in `keys` order, so each length's symbols are one run of `keys`.
    fn fill_table(&mut self, counts: &[u32; MAX_CODEWORD_LEN as usize + 1]) {
        let longest = (1..=MAX_CODEWORD_LEN)
            .rev()
            .find(|&l| counts[l as usize] != 0)
            .unwrap_or(1);
        let tb = longest.min(self.max_table_bits);
        self.table_bits = tb;
        // Canonical order: codewords of each length follow those of the shorter lengths.
        let mut code = 0u32;
        let mut index = 0u32;
        for (l, &c) in counts.iter().enumerate().skip(1) {
            self.first_code[l] = code;
            self.first_index[l] = index;
            code = (code + c) << 1;
            index += c;
        }
        self.count = *counts;
        // Within a length, canonical order is symbol order: the run's symbols are marked
        // in a bitmap and read back in order, with no per-symbol branch on the length.
        let n = self.freqs.len();
        let mut marks = [0u64; SYM_WORDS];
        let words = n.div_ceil(64).min(SYM_WORDS);
        let mut run_end = n.min(self.keys.len());
        let table = &mut self.table[..1 << tb];
        let sorted = &mut self.sorted;
        sorted.clear();
        sorted.resize(index as usize, 0);
        let mut next = 0usize;
        let mut pos = 0usize;
        for l in 1..=MAX_CODEWORD_LEN {
            let c = counts[l as usize] as usize;
            if c == 0 {
                continue;
            }
            let run_start = run_end.saturating_sub(c);
            for &key in &self.keys[run_start..run_end] {
                let s = (key & SYM_MASK) as usize;
                marks[(s / 64) % SYM_WORDS] |= 1 << (s % 64);
            }
            run_end = run_start;
            for (w, m) in marks[..words].iter_mut().enumerate() {
                let mut bits = std::mem::take(m);
                while bits != 0 {
                    let sym = (w * 64) as u16 + bits.trailing_zeros() as u16;
                    bits &= bits - 1;
                    if let Some(slot) = sorted.get_mut(next) {
                        *slot = sym;
                    }
                    next += 1;
                    if l <= tb {
                        let e = (sym << ENTRY_LEN_BITS) | l as u16;
                        // Codeword of length l: the 2^(tb - l) entries it prefixes.
                        match tb - l {
                            0 => set_span::<1>(table, pos, e),
                            1 => set_span::<2>(table, pos, e),
                            2 => set_span::<4>(table, pos, e),
                            3 => set_span::<8>(table, pos, e),
                            4 => set_span::<16>(table, pos, e),
                            w => {
                                if let Some(span) = table.get_mut(pos..pos + (1 << w)) {
                                    span.fill(e);
                                }
                            }
                        }
                        pos += 1 << (tb - l);
                    }
                }
            }
        }
        // Prefixes of longer codewords, or patterns no codeword starts with.
        if let Some(rest) = table.get_mut(pos..) {
            rest.fill(0);
        }
    }

    #[inline(always)]
    fn decode(&mut self, r: &mut BackBits) -> Result<usize, CodecError> {
        if r.count < MAX_CODEWORD_LEN {
            r.refill();
        }
        let (sym, len) = self.lookup(r.buf)?;
        r.buf <<= len;
        r.count -= len;
        self.freqs[sym] += 1;
        self.until_rebuild -= 1;
        if self.until_rebuild == 0 {
            self.build();
            for f in self.freqs.iter_mut() {
                *f = (*f >> 1) + 1;
            }
        }
        Ok(sym)
    }

    /// The symbol whose codeword starts the MSB-first bit buffer `buf`, and its length.
    #[inline(always)]
    fn lookup(&self, buf: u64) -> Result<(usize, u32), CodecError> {
        let e = self.table[(buf >> (64 - self.table_bits)) as usize & (TABLE_SIZE - 1)];
        if e != 0 {
            return Ok((
                usize::from(e >> ENTRY_LEN_BITS),
                u32::from(e) & ((1 << ENTRY_LEN_BITS) - 1),
            ));
        }
        self.decode_long(buf)
    }

    /// A codeword longer than the table index: walk the canonical lengths beyond it.
    #[cold]
    fn decode_long(&self, buf: u64) -> Result<(usize, u32), CodecError> {
        for l in self.table_bits + 1..=MAX_CODEWORD_LEN {
            let code = (buf >> (64 - l)) as u32;
            let li = l as usize;
            let rel = code.wrapping_sub(self.first_code[li]);
            if code >= self.first_code[li] && rel < self.count[li] {
                let sym = self.sorted[(self.first_index[li] + rel) as usize];
                return Ok((usize::from(sym), l));
            }
        }
        Err(CodecError::BadCodeword { codec: CODEC })
    }
}

/// `table[start..start + N] = e` (nothing if out of range, which a complete code never is).
#[inline(always)]
fn set_span<const N: usize>(table: &mut [u16], start: usize, e: u16) {
    if let Some(span) = table.get_mut(start..start + N) {
        span.copy_from_slice(&[e; N]);
    }
}

/// LZMS chunk decoder.
pub struct LzmsDecoder {
    max: usize,
    offset_base: Vec<u32>,
    offset_extra: Vec<u32>,
    length_base: Vec<u32>,
    length_extra: Vec<u32>,
    literal: AdaptiveCode,
    lz_offset: AdaptiveCode,
    length: AdaptiveCode,
    delta_offset: AdaptiveCode,
    delta_power: AdaptiveCode,
    /// Last position each 16-bit target was used, stamped with `generation` so the table
    /// never needs clearing between chunks. Positions fit in 32 bits (`MAX_BUFFER`), which
    /// keeps the table at 512 KiB, mostly cache-resident.
    last_target_usages: Vec<(u32, u32)>,
    generation: u32,
}

impl LzmsDecoder {
    /// A decoder for chunks of up to `max_chunk` bytes.
    pub fn new(max_chunk: usize) -> Result<Self, CodecError> {
        if max_chunk > MAX_BUFFER {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                len: max_chunk,
                max: MAX_BUFFER,
            });
        }
        let (offset_base, offset_extra) = slot_tables(OFFSET_EXTRA_RUNS);
        let (length_base, length_extra) = slot_tables(LENGTH_EXTRA_RUNS);
        Ok(LzmsDecoder {
            max: max_chunk,
            offset_base,
            offset_extra,
            length_base,
            length_extra,
            literal: AdaptiveCode::new(NUM_LITERAL_SYMS, 10, LITERAL_REBUILD),
            lz_offset: AdaptiveCode::new(MAX_OFFSET_SYMS, 10, LZ_OFFSET_REBUILD),
            length: AdaptiveCode::new(NUM_LENGTH_SYMS, 10, LENGTH_REBUILD),
            delta_offset: AdaptiveCode::new(MAX_OFFSET_SYMS, 10, DELTA_OFFSET_REBUILD),
            delta_power: AdaptiveCode::new(NUM_DELTA_POWER_SYMS, 8, DELTA_POWER_REBUILD),
            last_target_usages: vec![(0, 0); 65536],
            generation: 0,
        })
    }

    fn num_offset_slots(&self, size: usize) -> usize {
        if size < 2 {
            return 0;
        }
        let v = (size - 1) as u64;
        // Number of slots whose base is <= size-1.
        self.offset_base
            .iter()
            .take_while(|&&b| u64::from(b) <= v)
            .count()
    }
}

impl Decompress for LzmsDecoder {
    fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        let size = out.len();
        if size > self.max {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                len: size,
                max: self.max,
            });
        }
        if input.len() < 4 || !input.len().is_multiple_of(2) {
            return Err(CodecError::Invalid {
                codec: CODEC,
                what: format!("compressed size {} is odd or below 4 bytes", input.len()),
            });
        }
        let nslots = self.num_offset_slots(size);
        self.literal.reset(NUM_LITERAL_SYMS);
        self.lz_offset.reset(nslots);
        self.length.reset(NUM_LENGTH_SYMS);
        self.delta_offset.reset(nslots);
        self.delta_power.reset(NUM_DELTA_POWER_SYMS);

        let mut rd = RangeDecoder::new(input);
        let mut bits = BackBits::new(input);
        let mut main = Decision::<16>::new();
        let mut matchd = Decision::<32>::new();
        let mut lz = Decision::<64>::new();
        let mut delta = Decision::<64>::new();
        let mut lz_rep = [Decision::<64>::new(), Decision::<64>::new()];
        let mut delta_rep = [Decision::<64>::new(), Decision::<64>::new()];
        let mut lz_q: [u32; 4] = [1, 2, 3, 4];
        let mut delta_q: [(u32, u32); 4] = [(0, 1), (0, 2), (0, 3), (0, 4)];
        // Pending front insertions, delayed by one item, and where they were made.
        let mut lz_pending: u32 = 0;
        let mut lz_pending_at = usize::MAX;
        let mut delta_pending: Option<(u32, u32)> = None;
        let mut delta_pending_at = usize::MAX;

        let mut op = 0usize;
        while op < size {
            if rd.bit(&mut main) == 0 {
                out[op] = self.literal.decode(&mut bits)? as u8;
                op += 1;
                continue;
            }
            if rd.bit(&mut matchd) == 0 {
                // LZ match.
                if lz_pending != 0 && op != lz_pending_at {
                    lz_q = [lz_pending, lz_q[0], lz_q[1], lz_q[2]];
                    lz_pending = 0;
                }
                let offset = if rd.bit(&mut lz) == 0 {
                    let slot = self.lz_offset.decode(&mut bits)?;
                    self.offset_base[slot].wrapping_add(bits.bits(self.offset_extra[slot]))
                } else {
                    take_repeat(&mut rd, &mut lz_rep, &mut lz_q)
                };
                if lz_pending != 0 {
                    lz_q = [lz_pending, lz_q[0], lz_q[1], lz_q[2]];
                }
                lz_pending = offset;
                let length = self.read_length(&mut bits)?;
                let offset = offset as usize;
                if length > size - op {
                    return Err(CodecError::Overrun {
                        codec: CODEC,
                        what: "match",
                        len: length as u64,
                        pos: op,
                        size,
                    });
                }
                if offset > op || offset == 0 {
                    return Err(CodecError::BadOffset {
                        codec: CODEC,
                        offset: offset as u64,
                        pos: op,
                    });
                }
                lz_copy(out, op, offset, length);
                op += length;
                lz_pending_at = op;
            } else {
                // Delta match.
                if let Some(p) = delta_pending {
                    if op != delta_pending_at {
                        delta_q = [p, delta_q[0], delta_q[1], delta_q[2]];
                        delta_pending = None;
                    }
                }
                let (power, raw) = if rd.bit(&mut delta) == 0 {
                    let power = self.delta_power.decode(&mut bits)? as u32;
                    let slot = self.delta_offset.decode(&mut bits)?;
                    (
                        power,
                        self.offset_base[slot].wrapping_add(bits.bits(self.offset_extra[slot])),
                    )
                } else {
                    take_repeat(&mut rd, &mut delta_rep, &mut delta_q)
                };
                if let Some(p) = delta_pending {
                    delta_q = [p, delta_q[0], delta_q[1], delta_q[2]];
                }
                delta_pending = Some((power, raw));
                let length = self.read_length(&mut bits)?;
                let span = 1usize << power;
                let offset = (raw as usize)
                    .checked_shl(power)
                    .filter(|o| o >> power == raw as usize);
                let offset = match offset {
                    Some(o) if o.checked_add(span).is_some_and(|e| e <= op) => o,
                    _ => {
                        return Err(CodecError::BadOffset {
                            codec: CODEC,
                            offset: u64::from(raw) << power.min(31),
                            pos: op,
                        })
                    }
                };
                if length > size - op {
                    return Err(CodecError::Overrun {
                        codec: CODEC,
                        what: "delta match",
                        len: length as u64,
                        pos: op,
                        size,
                    });
                }
                for _ in 0..length {
                    out[op] = out[op - offset]
                        .wrapping_add(out[op - span])
                        .wrapping_sub(out[op - offset - span]);
                    op += 1;
                }
                delta_pending_at = op;
            }
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.last_target_usages.fill((0, 0));
            self.generation = 1;
        }
        x86_filter_undo(out, &mut self.last_target_usages, self.generation);
        Ok(())
    }
}

impl LzmsDecoder {
    #[inline(always)]
    fn read_length(&mut self, bits: &mut BackBits) -> Result<usize, CodecError> {
        let slot = self.length.decode(bits)?;
        Ok(self.length_base[slot] as usize + bits.bits(self.length_extra[slot]) as usize)
    }
}

/// Bytes examined per step when looking for the next instruction the x86 filter may
/// have translated.
const X86_SCAN: usize = 16;

/// Offset in the group of the first byte that may start a translated instruction (E8/E9,
/// or one of the prefix bytes 48, 4C, F0, FF followed by one of the second bytes 8B, 8D,
/// 83, 15: a superset of the exact patterns, which the caller then checks), or `None`.
/// The flags are computed for all bytes with non-short-circuit operators, so the loop
/// compiles to vector compares; the first flag is found with one trailing-zero count.
#[inline(always)]
fn x86_first_candidate(w: &[u8; X86_SCAN], next: &[u8; X86_SCAN]) -> Option<usize> {
    let mut flags = [0u8; X86_SCAN];
    for (k, f) in flags.iter_mut().enumerate() {
        let (b, n) = (w[k], next[k]);
        let call = (b & 0xFE) == 0xE8;
        let prefix = (b == 0x48) | (b == 0x4C) | (b == 0xF0) | (b == 0xFF);
        let second = (n == 0x8B) | (n == 0x8D) | (n == 0x83) | (n == 0x15);
        *f = u8::from(call | (prefix & second));
    }
    let v = u128::from_le_bytes(flags);
    (v != 0).then(|| (v.trailing_zeros() / 8) as usize)
}

/// Undo the x86 address translation (F 8.3, "x86 filter").
fn x86_filter_undo(data: &mut [u8], last_target_usages: &mut [(u32, u32)], generation: u32) {
    let size = data.len();
    if size <= 17 {
        return;
    }
    let tail = size - 16;
    let mut last_x86_pos: i64 = -X86_MAX_TRANSLATION_OFFSET - 1;
    let mut i = 1usize;
    while i < tail {
        // Skip bytes that cannot start a translated instruction, a group at a time.
        if let Some(w) = data.get(i..i + X86_SCAN + 1) {
            // The group and the group shifted by one byte, each loaded in one piece.
            let mut g = [0u8; X86_SCAN];
            let mut n = [0u8; X86_SCAN];
            g.copy_from_slice(&w[..X86_SCAN]);
            n.copy_from_slice(&w[1..]);
            let Some(k) = x86_first_candidate(&g, &n) else {
                i += X86_SCAN;
                continue;
            };
            i += k;
            if i >= tail {
                break;
            }
        }
        let b = data[i];
        let (opcode_len, max_off) = match b {
            0x48 if data[i + 1] == 0x8B && (data[i + 2] == 0x05 || data[i + 2] == 0x0D) => {
                (3, X86_MAX_TRANSLATION_OFFSET)
            }
            0x48 | 0x4C if data[i + 1] == 0x8D && data[i + 2] & 7 == 5 => {
                (3, X86_MAX_TRANSLATION_OFFSET)
            }
            0xE8 => (1, X86_MAX_TRANSLATION_OFFSET / 2),
            0xE9 => {
                i += 5;
                continue;
            }
            0xF0 if data[i + 1] == 0x83 && data[i + 2] == 0x05 => (3, X86_MAX_TRANSLATION_OFFSET),
            0xFF if data[i + 1] == 0x15 => (2, X86_MAX_TRANSLATION_OFFSET),
            _ => {
                i += 1;
                continue;
            }
        };
        let o = i + opcode_len;
        if i as i64 - last_x86_pos <= max_off {
            let n = u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
            data[o..o + 4].copy_from_slice(&n.wrapping_sub(i as u32).to_le_bytes());
        }
        let target16 =
            (i as u32).wrapping_add(u32::from(u16::from_le_bytes([data[o], data[o + 1]]))) as u16;
        i += opcode_len + 3;
        let t = usize::from(target16);
        let (g, last) = last_target_usages[t];
        if g == generation && i as i64 - i64::from(last) <= X86_ID_WINDOW {
            last_x86_pos = i as i64;
        }
        last_target_usages[t] = (generation, i as u32);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tables_match_the_published_limits() {
        let (ob, oe) = slot_tables(OFFSET_EXTRA_RUNS);
        assert_eq!(ob.len(), MAX_OFFSET_SYMS);
        // Largest representable offset and length (F 8.3).
        assert_eq!(u64::from(ob[798]) + (1u64 << oe[798]) - 1, 1_180_427_428);
        let (lb, le) = slot_tables(LENGTH_EXTRA_RUNS);
        assert_eq!(lb.len(), NUM_LENGTH_SYMS);
        assert_eq!(u64::from(lb[53]) + (1u64 << le[53]) - 1, 1_073_809_578);
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = LzmsDecoder::new(1 << 16).unwrap();
        let mut out = vec![0u8; 1 << 16];
        let mut x = 0x9E37_79B9u32;
        for len in [4usize, 6, 64, 1000, 20000] {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = d.decompress(&input, &mut out);
        }
        assert!(d.decompress(&[1, 2, 3], &mut out).is_err());
    }
    /// The byte-at-a-time filter the group scan must match.
    fn naive_x86_filter_undo(data: &mut [u8], usages: &mut [(u32, u32)], generation: u32) {
        let size = data.len();
        if size <= 17 {
            return;
        }
        let tail = size - 16;
        let mut last_x86_pos: i64 = -X86_MAX_TRANSLATION_OFFSET - 1;
        let mut i = 1usize;
        while i < tail {
            let (opcode_len, max_off) = match data[i] {
                0x48 if data[i + 1] == 0x8B && (data[i + 2] == 0x05 || data[i + 2] == 0x0D) => {
                    (3, X86_MAX_TRANSLATION_OFFSET)
                }
                0x48 | 0x4C if data[i + 1] == 0x8D && data[i + 2] & 7 == 5 => {
                    (3, X86_MAX_TRANSLATION_OFFSET)
                }
                0xE8 => (1, X86_MAX_TRANSLATION_OFFSET / 2),
                0xE9 => {
                    i += 5;
                    continue;
                }
                0xF0 if data[i + 1] == 0x83 && data[i + 2] == 0x05 => {
                    (3, X86_MAX_TRANSLATION_OFFSET)
                }
                0xFF if data[i + 1] == 0x15 => (2, X86_MAX_TRANSLATION_OFFSET),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let o = i + opcode_len;
            if i as i64 - last_x86_pos <= max_off {
                let n = u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
                data[o..o + 4].copy_from_slice(&n.wrapping_sub(i as u32).to_le_bytes());
            }
            let target16 = (i as u32)
                .wrapping_add(u32::from(u16::from_le_bytes([data[o], data[o + 1]])))
                as u16;
            i += opcode_len + 3;
            let t = usize::from(target16);
            let (g, last) = usages[t];
            if g == generation && i as i64 - i64::from(last) <= X86_ID_WINDOW {
                last_x86_pos = i as i64;
            }
            usages[t] = (generation, i as u32);
            i += 1;
        }
    }

    #[test]
    fn x86_group_scan_equals_bytewise_scan() {
        // Data dense in opcode and second bytes, so every pattern, near miss, run of
        // candidates and the last positions before the 16-byte tail are exercised.
        const BYTES: [u8; 12] = [
            0x48, 0x4C, 0xE8, 0xE9, 0xF0, 0xFF, 0x8B, 0x8D, 0x83, 0x15, 0x05, 0x0D,
        ];
        let mut x = 0x2545_F491u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for len in [0usize, 17, 18, 19, 33, 34, 50, 1000, 70000] {
            for dense in [1u32, 3, 50] {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r % dense == 0 {
                            BYTES[(r >> 8) as usize % BYTES.len()]
                        } else {
                            (r >> 16) as u8
                        }
                    })
                    .collect();
                let mut want = data.clone();
                let mut uw = vec![(0u32, 0u32); 65536];
                naive_x86_filter_undo(&mut want, &mut uw, 1);
                let mut got = data;
                let mut ug = vec![(0u32, 0u32); 65536];
                x86_filter_undo(&mut got, &mut ug, 1);
                assert_eq!(got, want, "len {len} density {dense}");
                assert_eq!(ug, uw, "len {len} density {dense}");
            }
        }
    }
    #[test]
    fn radix_sort_equals_comparison_sort() {
        let mut x = 0x1357_9BDFu32;
        let mut tmp = Vec::new();
        for n in [0usize, 1, 2, 8, 54, 256, 799] {
            for max in [1u32, 3, 64, 2050, MAX_SORT_FREQ] {
                let mut keys: Vec<u32> = (0..n as u32)
                    .map(|s| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        ((x % max + 1).min(MAX_SORT_FREQ) << SYM_BITS) | s
                    })
                    .collect();
                let mut want = keys.clone();
                want.sort_unstable();
                sort_by_freq(&mut keys, &mut tmp);
                assert_eq!(keys, want, "n {n} max {max}");
            }
        }
    }

    /// Symbols sorted by (frequency, symbol) as `frequency << SYM_BITS | symbol` keys.
    fn sorted_keys(freqs: &[u32]) -> Vec<u32> {
        let mut want: Vec<u32> = freqs
            .iter()
            .enumerate()
            .map(|(s, &f)| (f << SYM_BITS) | s as u32)
            .collect();
        want.sort_unstable();
        want
    }

    #[test]
    fn counting_sort_equals_comparison_sort() {
        let mut x = 0x0BAD_F00Du32;
        let mut keys = Vec::new();
        // Odd and even counts (the two halves differ by one), and the largest frequency
        // the counting sort takes.
        for n in [0usize, 1, 2, 3, 7, 54, 255, 256, 799] {
            for max in [1u32, 2, 9, SMALL_FREQS as u32 - 1] {
                let freqs: Vec<u32> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x % max + 1
                    })
                    .map(|f| f.min(SMALL_FREQS as u32 - 1))
                    .collect();
                let top = freqs.iter().copied().max().unwrap_or(0) as usize;
                counting_sort_small(&freqs, top, &mut keys);
                assert_eq!(keys, sorted_keys(&freqs), "n {n} max {max}");
            }
        }
    }

    /// Codeword lengths by the format's construction, written plainly: the two-queue
    /// tree with branches, then the per-node length counting with its length limit.
    fn reference_lens(freqs: &[u32]) -> Vec<u8> {
        let n = freqs.len();
        let mut lens = vec![0u8; n];
        if n < 2 {
            lens.iter_mut().for_each(|l| *l = 1);
            return lens;
        }
        let a = sorted_keys(freqs);
        let leaf = |i: usize| a[i] >> SYM_BITS;
        let mut node_freq = vec![0u32; n - 1];
        let mut parent = vec![0usize; n - 1];
        let (mut i, mut b) = (0, 0);
        for e in 0..n - 1 {
            let mut sum = 0;
            for _ in 0..2 {
                if i < n && (b == e || leaf(i) <= node_freq[b]) {
                    sum += leaf(i);
                    i += 1;
                } else {
                    sum += node_freq[b];
                    parent[b] = e;
                    b += 1;
                }
            }
            node_freq[e] = sum;
        }
        let max = MAX_CODEWORD_LEN as usize;
        let mut counts = [0u32; MAX_CODEWORD_LEN as usize + 2];
        counts[1] = 2;
        let mut depth = vec![0usize; n - 1];
        for node in (0..n - 2).rev() {
            depth[node] = depth[parent[node]] + 1;
            let mut len = depth[node];
            if len >= max {
                len = max - 1;
                while counts[len] == 0 {
                    len -= 1;
                }
            }
            counts[len] -= 1;
            counts[len + 1] += 2;
        }
        let mut k = 0;
        for len in (1..=max).rev() {
            for _ in 0..counts[len] {
                lens[(a[k] & SYM_MASK) as usize] = len as u8;
                k += 1;
            }
        }
        lens
    }

    /// The canonical codeword (length, symbol order) matching the top 15 bits, if any.
    fn reference_decode(lens: &[u8], top: u32) -> Option<(usize, u32)> {
        let mut code = 0u32;
        for len in 1..=MAX_CODEWORD_LEN {
            for (sym, _) in lens
                .iter()
                .enumerate()
                .filter(|&(_, &l)| u32::from(l) == len)
            {
                if top >> (MAX_CODEWORD_LEN - len) == code {
                    return Some((sym, len));
                }
                code += 1;
            }
            code <<= 1;
        }
        None
    }

    /// The adaptive code's table (both the table and the walk beyond it) decodes every
    /// 15-bit pattern as the plainly built canonical code does.
    fn check_code(freqs: &[u32], table_bits: u32) {
        let mut code = AdaptiveCode::new(MAX_OFFSET_SYMS, table_bits, 1024);
        code.reset(freqs.len());
        code.freqs.copy_from_slice(freqs);
        code.build();
        let lens = reference_lens(freqs);
        for top in 0..1u32 << MAX_CODEWORD_LEN {
            let got = code.lookup(u64::from(top) << (64 - MAX_CODEWORD_LEN)).ok();
            assert_eq!(
                got,
                reference_decode(&lens, top),
                "{} symbols, pattern {top:#x}",
                freqs.len()
            );
        }
    }

    #[test]
    fn adaptive_code_equals_plain_construction() {
        let mut x = 0x5EED_1234u32;
        let mut rand = |m: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % m
        };
        // No symbol, one symbol (one codeword, the other pattern unassigned), two.
        check_code(&[], 10);
        check_code(&[5], 10);
        check_code(&[3, 9], 10);
        for n in [3usize, 8, 54, 256, 799] {
            // Flat frequencies (short codes, counting sort), skewed ones (codewords
            // longer than the table, radix sort) and many ties.
            let flat: Vec<u32> = (0..n).map(|_| rand(12) + 1).collect();
            check_code(&flat, 10);
            let skewed: Vec<u32> = (0..n)
                .map(|s| (rand(2 * LITERAL_REBUILD + 2) >> (s % 12)).max(1))
                .collect();
            check_code(&skewed, 10);
            check_code(&skewed, 8);
            check_code(&vec![1; n], 10);
        }
        // Fibonacci frequencies give a tree deeper than 15: the length limit applies
        // (17 of them stay below the largest frequency a period can reach).
        let mut fib = vec![1u32, 1];
        while fib.len() < 17 {
            fib.push(fib[fib.len() - 1] + fib[fib.len() - 2]);
        }
        assert!(reference_lens(&fib).contains(&15));
        check_code(&fib, 10);
        fib.extend([1; 40]);
        check_code(&fib, 10);
    }

    #[test]
    fn back_bits_equal_word_by_word_reading() {
        let mut x = 0xC0FF_EE11u32;
        let mut next = |m: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % m
        };
        // Inputs shorter than, equal to and longer than one 8-byte load, read past their
        // start (zeros), in reads of every width the decoder uses.
        for len in [0usize, 2, 4, 6, 8, 10, 16, 18, 100, 1002] {
            let data: Vec<u8> = (0..len).map(|_| next(256) as u8).collect();
            // The reference stream: words from the end, most-significant bit first.
            let mut stream: Vec<u32> = Vec::new();
            for w in data.rchunks_exact(2) {
                let w = u16::from_le_bytes([w[0], w[1]]);
                stream.extend((0..16).rev().map(|b| u32::from(w >> b) & 1));
            }
            let mut r = BackBits::new(&data);
            let mut at = 0usize;
            let bit_at = |i: usize| stream.get(i).copied().unwrap_or(0);
            while at < stream.len() + 64 {
                let n = next(31);
                if n % 4 == 0 {
                    // A codeword peek: the top 15 bits after the decoder's refill.
                    if r.count < MAX_CODEWORD_LEN {
                        r.refill();
                    }
                    let want = (0..MAX_CODEWORD_LEN as usize)
                        .fold(0u64, |v, k| (v << 1) | u64::from(bit_at(at + k)));
                    assert_eq!(r.buf >> (64 - MAX_CODEWORD_LEN), want, "len {len} at {at}");
                }
                let want = (0..n as usize).fold(0u32, |v, k| (v << 1) | bit_at(at + k));
                assert_eq!(r.bits(n), want, "len {len} at {at} width {n}");
                at += n as usize;
            }
        }
    }
}
