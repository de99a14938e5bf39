//! LZMS, the codec of solid ("ESD") WIM resources. Microsoft publishes no specification;
//! the format is recorded in docs/facts-wim.md 8.3 (from the structural description that
//! accompanies wimlib's decoder): a forward range-coded stream of adaptive binary decisions
//! and a backward stream of adaptively rebuilt canonical Huffman codes and verbatim bits,
//! LZ and "delta" matches with delayed-update repeat queues, then an x86 address filter.
//! One WIM chunk is one independent ("raw") LZMS block.

use super::huffman::HuffTable;
use super::{lz_copy, CodecError, Decompress};

const CODEC: &str = "LZMS";
/// Largest buffer LZMS can address (F 8.3 limits).
const MAX_BUFFER: usize = 1 << 30;
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
#[derive(Clone, Copy)]
struct Prob {
    zeros: u32,
    history: u64,
}

impl Prob {
    const INIT: Prob = Prob {
        zeros: PROB_INIT_ZEROS,
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
        let prob = p.zeros.clamp(1, 63);
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

    #[inline(always)]
    fn refill(&mut self) {
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

/// An adaptive Huffman code rebuilt from symbol frequencies every `period` symbols.
struct AdaptiveCode {
    freqs: Vec<u32>,
    lens: Vec<u8>,
    table: HuffTable,
    until_rebuild: u32,
    period: u32,
    /// `frequency << SYM_BITS | symbol`, sorted: u32 keys sort faster than wider ones.
    scratch: Vec<u32>,
    sort_tmp: Vec<u32>,
    node_freq: Vec<u32>,
    node_parent: Vec<usize>,
    depth: Vec<u32>,
}

impl AdaptiveCode {
    fn new(max_syms: usize, table_bits: u32, period: u32) -> Self {
        AdaptiveCode {
            freqs: Vec::with_capacity(max_syms),
            lens: Vec::with_capacity(max_syms),
            table: HuffTable::new(table_bits, MAX_CODEWORD_LEN),
            until_rebuild: period,
            period,
            scratch: Vec::with_capacity(max_syms),
            sort_tmp: Vec::with_capacity(max_syms),
            node_freq: Vec::with_capacity(max_syms),
            node_parent: Vec::with_capacity(max_syms),
            depth: Vec::with_capacity(max_syms),
        }
    }

    fn reset(&mut self, num_syms: usize) -> Result<(), CodecError> {
        self.freqs.clear();
        self.freqs.resize(num_syms, 1);
        self.lens.clear();
        self.lens.resize(num_syms, 0);
        self.build()
    }

    /// Build the canonical code the format prescribes: the Huffman tree of the two-queue
    /// method over symbols sorted by (frequency, symbol), leaves winning frequency ties,
    /// then lengths handed out longest-first in that sorted order.
    fn build(&mut self) -> Result<(), CodecError> {
        let n = self.freqs.len();
        self.until_rebuild = self.period;
        if n == 0 {
            return self.table.build(&[]).map_err(bad_code);
        }
        if n == 1 {
            self.lens[0] = 1;
            return self.table.build(&self.lens).map_err(bad_code);
        }
        let a = &mut self.scratch;
        a.clear();
        a.extend(
            self.freqs
                .iter()
                .enumerate()
                .map(|(s, &f)| (f.min(MAX_SORT_FREQ) << SYM_BITS) | s as u32),
        );
        sort_by_freq(a, &mut self.sort_tmp);
        // Internal nodes: frequency and parent index.
        let node_freq = &mut self.node_freq;
        node_freq.clear();
        node_freq.resize(n - 1, 0);
        let node_parent = &mut self.node_parent;
        node_parent.clear();
        node_parent.resize(n - 1, 0);
        let (mut i, mut b, mut e) = (0usize, 0usize, 0usize);
        while e < n - 1 {
            // Two picks of the lighter of the next leaf and the next internal node.
            let mut sum = 0u32;
            for _ in 0..2 {
                let f = if i < n && (b == e || (a[i] >> SYM_BITS) <= node_freq[b]) {
                    i += 1;
                    a[i - 1] >> SYM_BITS
                } else {
                    node_parent[b] = e;
                    b += 1;
                    node_freq[b - 1]
                };
                sum = sum.saturating_add(f);
            }
            node_freq[e] = sum;
            e += 1;
        }
        // Length counts from internal node depths (root = node n-2 at depth 0).
        let mut counts = [0u32; MAX_CODEWORD_LEN as usize + 2];
        counts[1] = 2;
        let depth = &mut self.depth;
        depth.clear();
        depth.resize(n - 1, 0);
        for node in (0..n - 2).rev() {
            let d = depth[node_parent[node]] + 1;
            depth[node] = d;
            let mut len = d as usize;
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
        let mut k = 0usize;
        for len in (1..=MAX_CODEWORD_LEN as usize).rev() {
            for _ in 0..counts[len] {
                self.lens[(a[k] & SYM_MASK) as usize] = len as u8;
                k += 1;
            }
        }
        self.table.build(&self.lens).map_err(bad_code)
    }

    #[inline(always)]
    fn decode(&mut self, r: &mut BackBits) -> Result<usize, CodecError> {
        if r.count < MAX_CODEWORD_LEN {
            r.refill();
        }
        let (sym, len) = self
            .table
            .lookup((r.buf >> (64 - MAX_CODEWORD_LEN)) as u32)
            .ok_or(CodecError::BadCodeword { codec: CODEC })?;
        r.buf <<= len;
        r.count -= len;
        let sym = sym as usize;
        self.freqs[sym] += 1;
        self.until_rebuild -= 1;
        if self.until_rebuild == 0 {
            self.build()?;
            for f in self.freqs.iter_mut() {
                *f = (*f >> 1) + 1;
            }
        }
        Ok(sym)
    }
}

fn bad_code(e: super::huffman::BuildError) -> CodecError {
    CodecError::BadHuffmanCode {
        codec: CODEC,
        what: e.describe(),
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
    /// never needs clearing between chunks.
    last_target_usages: Vec<(u32, i64)>,
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
        self.literal.reset(NUM_LITERAL_SYMS)?;
        self.lz_offset.reset(nslots)?;
        self.length.reset(NUM_LENGTH_SYMS)?;
        self.delta_offset.reset(nslots)?;
        self.delta_power.reset(NUM_DELTA_POWER_SYMS)?;

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
fn x86_filter_undo(data: &mut [u8], last_target_usages: &mut [(u32, i64)], generation: u32) {
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
        if g == generation && i as i64 - last <= X86_ID_WINDOW {
            last_x86_pos = i as i64;
        }
        last_target_usages[t] = (generation, i as i64);
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
    fn naive_x86_filter_undo(data: &mut [u8], usages: &mut [(u32, i64)], generation: u32) {
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
            if g == generation && i as i64 - last <= X86_ID_WINDOW {
                last_x86_pos = i as i64;
            }
            usages[t] = (generation, i as i64);
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
                let mut uw = vec![(0u32, 0i64); 65536];
                naive_x86_filter_undo(&mut want, &mut uw, 1);
                let mut got = data;
                let mut ug = vec![(0u32, 0i64); 65536];
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
}
