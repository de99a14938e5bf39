//! XPRESS compressor for WIM chunks: the LZ77+Huffman format of [MS-XCA] section 2.1
//! (compression stream format: 256-byte table of 4-bit codeword lengths, symbols 0–255
//! literals, 256–511 matches with 4-bit length header and 4-bit offset log2, length escapes
//! of one byte then one u16) as decoded by [MS-XCA] 2.2.4; WIM specifics (one table per
//! chunk of at most 65536 bytes, end-of-data symbol 256 after the last item) from
//! docs/facts-wim.md 8.1.
//!
//! Match finding is a greedy hash-chain search over 3-byte prefixes; codeword lengths come
//! from [`build_lengths`], a length-limited Huffman construction shared with the LZX encoder.
//! The bit writer mirrors the decoder of [MS-XCA] 2.2.4: the decoder loads a 16-bit word
//! whenever fewer than 16 look-ahead bits remain and reads extra length bytes from the input
//! position after the words loaded so far, so the encoder reserves a word slot at exactly
//! the point where the decoder will load it and fills it once its 16 bits are known.

use std::collections::VecDeque;

/// 512 symbols, 4 bits each ([MS-XCA] 2.1.4).
const NUM_SYMBOLS: usize = 512;
/// Longest XPRESS codeword ([MS-XCA] 2.1.4: lengths are 4-bit values, 0 = unused).
const MAX_LEN: u8 = 15;
/// Shortest match the format can express ([MS-XCA] 2.2.4: "MatchLength + 3").
const MIN_MATCH: usize = 3;
/// Largest offset: a 4-bit log2 plus that many extra bits ([MS-XCA] 2.1.4.3).
const MAX_OFFSET: usize = 65535;
/// Largest chunk one table may cover ([MS-XCA] 2.2.4 reloads the table every 65536 bytes).
pub const MAX_CHUNK: usize = 65536;
/// Hash-chain search depth: a speed/ratio trade-off, not a format limit.
const MAX_CHAIN: usize = 24;
/// Matches this long end the chain search early (good enough; not a format limit).
const NICE_LEN: usize = 128;

/// Canonical-Huffman codeword lengths for `freqs`, no length above `max_len`; symbols with
/// frequency 0 get length 0. When fewer than two symbols are used, a second symbol is given
/// length 1 so the code is complete (decoders reject incomplete codes; facts-wim.md 8.0).
pub(crate) fn build_lengths(freqs: &[u32], max_len: u8) -> Vec<u8> {
    let n = freqs.len();
    let mut lens = vec![0u8; n];
    let mut used: Vec<usize> = (0..n).filter(|&s| freqs[s] > 0).collect();
    if used.len() < 2 {
        let a = used.first().copied().unwrap_or(0);
        let b = if a == 0 { 1 } else { 0 };
        lens[a] = 1;
        lens[b] = 1;
        return lens;
    }
    // Plain Huffman tree over (freq, symbol) order, deterministic tie-breaking.
    used.sort_by_key(|&s| (freqs[s], s));
    let m = used.len();
    // Nodes 0..m are leaves in sorted order; internal nodes follow. Two-queue construction.
    let mut weight: Vec<u64> = used.iter().map(|&s| u64::from(freqs[s])).collect();
    let mut parent = vec![0usize; 2 * m - 1];
    let (mut leaf, mut inner) = (0usize, m);
    for next in m..2 * m - 1 {
        let mut pick = || {
            if leaf < m && (inner >= next || weight[leaf] <= weight[inner]) {
                leaf += 1;
                leaf - 1
            } else {
                inner += 1;
                inner - 1
            }
        };
        let a = pick();
        let b = pick();
        weight.push(weight[a] + weight[b]);
        parent[a] = next;
        parent[b] = next;
    }
    // Depths: root is the last node.
    let mut depth = vec![0u32; 2 * m - 1];
    for i in (0..2 * m - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    let max = u32::from(max_len);
    let mut count = vec![0u32; max as usize + 1];
    for d in depth.iter().take(m) {
        count[(*d).min(max) as usize] += 1;
    }
    // Repair the Kraft sum after clamping: move leaves down from shorter lengths.
    let target = 1u64 << max;
    let mut total: u64 = (1..=max)
        .map(|l| u64::from(count[l as usize]) << (max - l))
        .sum();
    while total > target {
        count[max as usize] -= 1;
        let mut l = max - 1;
        while count[l as usize] == 0 {
            l -= 1;
        }
        count[l as usize] -= 1;
        count[l as usize + 1] += 2;
        total -= 1;
    }
    // Longest codes go to the least frequent symbols (used[] ascends by frequency).
    let mut it = used.iter();
    for l in (1..=max).rev() {
        for _ in 0..count[l as usize] {
            lens[*it.next().expect("count sums to m")] = l as u8;
        }
    }
    lens
}

/// Canonical codewords for `lens` (assigned in (length, symbol) order).
pub(crate) fn canonical_codes(lens: &[u8]) -> Vec<u32> {
    let max = lens.iter().copied().max().unwrap_or(0) as usize;
    let mut count = vec![0u32; max + 2];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = vec![0u32; max + 2];
    let mut code = 0u32;
    for l in 1..=max {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                0
            } else {
                let c = next[l as usize];
                next[l as usize] += 1;
                c
            }
        })
        .collect()
}

/// One LZ77 item found by the match finder.
#[derive(Clone, Copy)]
pub(crate) enum Item {
    Lit(u8),
    Match { len: usize, offset: usize },
}

/// Greedy hash-chain parse of `data` with offsets up to `max_offset` and lengths in
/// `min_len..=max_len`.
pub(crate) fn parse_items(
    data: &[u8],
    min_len: usize,
    max_len: usize,
    max_offset: usize,
) -> Vec<Item> {
    const HASH_BITS: u32 = 15;
    let mut head = vec![u32::MAX; 1 << HASH_BITS];
    let mut prev = vec![u32::MAX; data.len()];
    let hash = |p: usize| -> usize {
        let v = u32::from(data[p]) | u32::from(data[p + 1]) << 8 | u32::from(data[p + 2]) << 16;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    };
    let insert = |p: usize, head: &mut [u32], prev: &mut [u32]| {
        if p + 3 <= data.len() {
            let h = hash(p);
            prev[p] = head[h];
            head[h] = p as u32;
        }
    };
    let mut items = Vec::with_capacity(data.len() / 2);
    let mut p = 0;
    while p < data.len() {
        let limit = max_len.min(data.len() - p);
        let (mut best_len, mut best_off) = (0usize, 0usize);
        if limit >= min_len && p + 3 <= data.len() {
            let mut cand = head[hash(p)];
            let mut chain = 0;
            while cand != u32::MAX && chain < MAX_CHAIN {
                let c = cand as usize;
                let off = p - c;
                if off > max_offset {
                    break;
                }
                if data[c + best_len.min(limit - 1)] == data[p + best_len.min(limit - 1)] {
                    let l = data[c..c + limit]
                        .iter()
                        .zip(&data[p..p + limit])
                        .take_while(|(a, b)| a == b)
                        .count();
                    if l > best_len {
                        best_len = l;
                        best_off = off;
                        if l >= NICE_LEN.min(limit) {
                            break;
                        }
                    }
                }
                cand = prev[c];
                chain += 1;
            }
        }
        if best_len >= min_len {
            items.push(Item::Match {
                len: best_len,
                offset: best_off,
            });
            for q in p..p + best_len {
                insert(q, &mut head, &mut prev);
            }
            p += best_len;
        } else {
            items.push(Item::Lit(data[p]));
            insert(p, &mut head, &mut prev);
            p += 1;
        }
    }
    items
}

/// The [MS-XCA] 2.2.4 bit layout seen from the writer: word slots reserved where the
/// decoder loads them, literal bytes appended in between.
struct BitOut {
    out: Vec<u8>,
    slots: VecDeque<usize>,
    acc: u32,
    nacc: u32,
    total: u64,
    loaded: u64,
}

impl BitOut {
    fn new(prefix: usize) -> Self {
        let mut out = vec![0u8; prefix + 4];
        out.truncate(prefix + 4);
        BitOut {
            out,
            slots: VecDeque::from([prefix, prefix + 2]),
            acc: 0,
            nacc: 0,
            total: 0,
            loaded: 2,
        }
    }

    /// Append `n` (0..=16) bits as one decoder "consume" step.
    fn put(&mut self, v: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | (v & ((1 << n) - 1));
        self.nacc += n;
        self.total += u64::from(n);
        if self.total > 16 * (self.loaded - 1) {
            self.slots.push_back(self.out.len());
            self.out.extend_from_slice(&[0, 0]);
            self.loaded += 1;
        }
        while self.nacc >= 16 {
            let w = (self.acc >> (self.nacc - 16)) as u16;
            self.nacc -= 16;
            let at = self
                .slots
                .pop_front()
                .expect("slot reserved before its word");
            self.out[at..at + 2].copy_from_slice(&w.to_le_bytes());
        }
    }

    fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.nacc > 0 {
            let w = (self.acc << (16 - self.nacc)) as u16;
            let at = self.slots.pop_front().expect("slot for the last word");
            self.out[at..at + 2].copy_from_slice(&w.to_le_bytes());
        }
        self.out
    }
}

/// Compress one chunk (at most [`MAX_CHUNK`] bytes). Returns `None` when the result would not
/// be smaller than the input; the WIM writer then stores the chunk raw (facts-wim.md 2).
pub fn compress_chunk(data: &[u8]) -> Option<Vec<u8>> {
    encode(data, true)
}

/// Encode `data`; with `bail`, give up as soon as the output reaches the input size.
fn encode(data: &[u8], bail: bool) -> Option<Vec<u8>> {
    if data.is_empty() || data.len() > MAX_CHUNK {
        return None;
    }
    let items = parse_items(data, MIN_MATCH, data.len(), MAX_OFFSET);
    let sym_of = |it: &Item| -> (usize, usize, usize) {
        match *it {
            Item::Lit(b) => (b as usize, 0, 0),
            Item::Match { len, offset } => {
                let log2 = (usize::BITS - 1 - offset.leading_zeros()) as usize;
                let hdr = (len - MIN_MATCH).min(15);
                (256 + (log2 << 4) + hdr, log2, hdr)
            }
        }
    };
    let mut freqs = vec![0u32; NUM_SYMBOLS];
    for it in &items {
        freqs[sym_of(it).0] += 1;
    }
    freqs[256] += 1; // end of data
    let lens = build_lengths(&freqs, MAX_LEN);
    let codes = canonical_codes(&lens);
    let mut w = BitOut::new(256);
    for i in 0..256 {
        w.out[i] = lens[2 * i] | (lens[2 * i + 1] << 4);
    }
    for it in &items {
        let (sym, log2, hdr) = sym_of(it);
        w.put(codes[sym], u32::from(lens[sym]));
        if let Item::Match { len, offset } = *it {
            if hdr == 15 {
                let v = len - MIN_MATCH;
                if v - 15 < 255 {
                    w.byte((v - 15) as u8);
                } else {
                    w.byte(255);
                    for b in (v as u16).to_le_bytes() {
                        w.byte(b);
                    }
                }
            }
            w.put((offset - (1 << log2)) as u32, log2 as u32);
        }
        if bail && w.out.len() >= data.len() {
            return None;
        }
    }
    w.put(codes[256], u32::from(lens[256]));
    let out = w.finish();
    (!bail || out.len() < data.len()).then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::xpress::XpressDecoder;
    use crate::codec::Decompress;

    /// Deterministic test data generators (xorshift, no RNG crate needed).
    pub(crate) fn samples() -> Vec<(&'static str, Vec<u8>)> {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let random: Vec<u8> = (0..70000).map(|_| rnd() as u8).collect();
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| format!("line {i}: the quick brown fox {} jumps\n", i % 17).into_bytes())
            .collect();
        let mut e8 = Vec::new();
        for i in 0..40000u32 {
            e8.push(0xE8);
            e8.extend_from_slice(&((i * 7919) % 30000).to_le_bytes());
            e8.push((rnd() & 3) as u8);
        }
        let mut mixed = text.clone();
        mixed.extend_from_slice(&random[..20000]);
        mixed.extend(std::iter::repeat_n(0u8, 20000));
        let long_run: Vec<u8> = std::iter::repeat_n(b'a', 65536).collect();
        vec![
            ("random", random),
            ("zeros", vec![0; 65536]),
            ("text", text),
            ("e8", e8),
            ("mixed", mixed),
            ("run", long_run),
            ("one", vec![7]),
            ("short", b"abcabcabcabcabc".to_vec()),
        ]
    }

    #[test]
    fn round_trip_through_decoder() {
        let mut dec = XpressDecoder::new();
        for (name, data) in samples() {
            for chunk in [4096usize, 32768, 65536] {
                let mut shrunk = 0;
                for piece in data.chunks(chunk) {
                    if let Some(c) = compress_chunk(piece) {
                        assert!(c.len() < piece.len());
                        let mut out = vec![0u8; piece.len()];
                        dec.decompress(&c, &mut out)
                            .unwrap_or_else(|e| panic!("{name}/{chunk}: {e}"));
                        assert!(out == piece, "{name}/{chunk}: round trip differs");
                        shrunk += 1;
                    }
                }
                if name == "random" {
                    assert_eq!(shrunk, 0, "random data must not shrink");
                } else if name != "one" && name != "short" {
                    assert!(shrunk > 0, "{name}/{chunk}: nothing compressed");
                }
            }
        }
    }

    #[test]
    fn forced_encoding_round_trips_even_when_larger() {
        let mut dec = XpressDecoder::new();
        for (name, data) in samples() {
            for piece in data.chunks(65536) {
                let c = encode(piece, false).expect("non-empty chunk");
                let mut out = vec![0u8; piece.len()];
                dec.decompress(&c, &mut out)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(out == piece, "{name}: round trip differs");
            }
        }
    }

    #[test]
    fn lengths_are_limited_and_complete() {
        // Fibonacci frequencies force a deep tree.
        let mut f = vec![1u32, 1];
        for i in 2..40 {
            let v = f[i - 1].saturating_add(f[i - 2]);
            f.push(v);
        }
        for max in [7u8, 15, 16] {
            let lens = build_lengths(&f, max);
            assert!(lens.iter().all(|&l| l >= 1 && l <= max));
            let kraft: u64 = lens.iter().map(|&l| 1u64 << (max - l)).sum();
            assert_eq!(kraft, 1u64 << max);
        }
        let single = build_lengths(&[0, 0, 5, 0], 15);
        assert_eq!(single.iter().filter(|&&l| l == 1).count(), 2);
    }
}
