//! LZX compressor for WIM chunks: the LZX bitstream of [MS-PATCH] 2.2–2.6 (verbatim blocks,
//! pretree-coded main and length trees, position slots and extra bits, E8 call translation
//! of 2.2.2) with the WIM rules of docs/facts-wim.md 8.2: every chunk is an independent
//! stream, no stream header, E8 translation always on with the fixed file size 12000000 and
//! positions relative to the chunk, 1-bit "default block size" flag (32768) otherwise 16
//! (plus 8 for windows of 2^16 and more) size bits, window = chunk size (2^15..2^21).
//!
//! Each chunk becomes one verbatim block (so no match crosses a block end), found by a
//! greedy hash-chain parse; repeat offsets are not used (always legal: explicit offsets
//! update R0–R2 the same way for the decoder). Codeword lengths are delta-coded against the
//! all-zero lengths of the chunk start using pretree symbols 0–16 only.

use super::xpress_enc::{build_lengths, canonical_codes};

const NUM_CHARS: usize = 256;
/// Matches of 2..=257 bytes ([MS-PATCH] 2.1.5): 7 primary lengths plus a 249-symbol tree.
const MIN_MATCH: usize = 2;
const MAX_MATCH: usize = 257;
const NUM_PRIMARY_LENS: usize = 7;
const LEN_SYMBOLS: usize = 249;
const PRE_SYMBOLS: usize = 20;
/// Codeword length limits of [MS-PATCH] 2.2 (main and length 16, pretree 15).
const MAIN_MAX_LEN: u8 = 16;
const PRE_MAX_LEN: u8 = 15;
/// Block type 1 = verbatim ([MS-PATCH] 2.3.1).
const BLOCK_VERBATIM: u32 = 1;
/// Block size signalled by the single "default size" bit (facts-wim.md 8.2).
const DEFAULT_BLOCK_SIZE: usize = 32768;
/// The E8 translation size WIM always uses (facts-wim.md 8.2).
const E8_FILE_SIZE: i64 = 12_000_000;
/// Window orders a WIM chunk size may have (facts-wim.md 1, LZX chunk sizes 2^15..2^21).
const MIN_WINDOW_ORDER: u32 = 15;
const MAX_WINDOW_ORDER: u32 = 21;

fn num_offset_slots(order: u32) -> usize {
    match order {
        15 => 30,
        16 => 32,
        17 => 34,
        18 => 36,
        19 => 38,
        20 => 42,
        _ => 50,
    }
}

/// Extra bits of a position slot: clamp(slot/2 − 1, 0, 17) ([MS-PATCH] 2.2.3 table).
fn extra_bits(slot: usize) -> u32 {
    ((slot / 2).saturating_sub(1)).min(17) as u32
}

/// Base match offset of each slot (slot 3 = offset 1; slots 0–2 are repeat offsets).
fn slot_bases() -> [i64; 51] {
    let mut b = [0i64; 51];
    b[0] = -2;
    for s in 0..50 {
        b[s + 1] = b[s] + (1i64 << extra_bits(s));
    }
    b
}

/// Apply E8 call translation in the compress direction ([MS-PATCH] 2.2.2 with the WIM
/// fixed file size); the decoder's undo pass restores the original bytes.
pub fn do_e8(data: &mut [u8]) {
    let n = data.len();
    if n <= 10 {
        return;
    }
    let mut i = 0usize;
    while i < n - 10 {
        if data[i] != 0xE8 {
            i += 1;
            continue;
        }
        let r = i64::from(i32::from_le_bytes([
            data[i + 1],
            data[i + 2],
            data[i + 3],
            data[i + 4],
        ]));
        let pos = i as i64;
        let v = if r >= -pos && r < E8_FILE_SIZE - pos {
            Some(r + pos)
        } else if r >= E8_FILE_SIZE - pos && r < E8_FILE_SIZE {
            Some(r - E8_FILE_SIZE)
        } else {
            None
        };
        if let Some(v) = v {
            data[i + 1..i + 5].copy_from_slice(&(v as i32).to_le_bytes());
        }
        i += 5;
    }
}

/// MSB-first bits packed into 16-bit little-endian words ([MS-PATCH] 2.2).
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | u64::from(v & ((1u32 << n) - 1));
        self.n += n;
        while self.n >= 16 {
            let w = (self.acc >> (self.n - 16)) as u16;
            self.n -= 16;
            self.out.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let w = (self.acc << (16 - self.n)) as u16;
            self.out.extend_from_slice(&w.to_le_bytes());
        }
        self.out
    }
}

/// Write codeword lengths `lens` (previous lengths all zero) as one pretree-coded pass.
fn put_lens(b: &mut Bits, lens: &[u8]) {
    let syms: Vec<usize> = lens.iter().map(|&l| (17 - l as usize) % 17).collect();
    let mut freqs = [0u32; PRE_SYMBOLS];
    for &s in &syms {
        freqs[s] += 1;
    }
    let plens = build_lengths(&freqs, PRE_MAX_LEN);
    let pcodes = canonical_codes(&plens);
    for &l in &plens {
        b.put(u32::from(l), 4);
    }
    for &s in &syms {
        b.put(pcodes[s], u32::from(plens[s]));
    }
}

/// Compress one chunk for a WIM whose LZX chunk size (= window) is `chunk_size`. Returns
/// `None` when the chunk does not shrink (the writer stores it raw) or the sizes are invalid.
pub fn compress_chunk(data: &[u8], chunk_size: usize) -> Option<Vec<u8>> {
    encode(data, chunk_size, true)
}

fn encode(data: &[u8], chunk_size: usize, bail: bool) -> Option<Vec<u8>> {
    let mut order = MIN_WINDOW_ORDER;
    while (1usize << order) < chunk_size {
        order += 1;
    }
    if data.is_empty() || data.len() > chunk_size || order > MAX_WINDOW_ORDER {
        return None;
    }
    let window = 1usize << order;
    let nslots = num_offset_slots(order);
    let nmain = NUM_CHARS + 8 * nslots;
    let bases = slot_bases();
    let mut buf = data.to_vec();
    do_e8(&mut buf);
    let items = super::xpress_enc::parse_items(&buf, MIN_MATCH + 1, MAX_MATCH, window - 3);

    // Symbols: (main symbol, length symbol or none, slot).
    let mut main_f = vec![0u32; nmain];
    let mut len_f = vec![0u32; LEN_SYMBOLS];
    let mut coded = Vec::with_capacity(items.len());
    for it in &items {
        match *it {
            super::xpress_enc::Item::Lit(c) => {
                main_f[c as usize] += 1;
                coded.push((c as usize, None, 0usize, 0u32));
            }
            super::xpress_enc::Item::Match { len, offset } => {
                let off = offset as i64;
                let slot = (3..nslots).rev().find(|&s| bases[s] <= off).unwrap_or(3);
                let extra = (off - bases[slot]) as u32;
                let hdr = (len - MIN_MATCH).min(NUM_PRIMARY_LENS);
                let sym = NUM_CHARS + slot * 8 + hdr;
                main_f[sym] += 1;
                let ls = (hdr == NUM_PRIMARY_LENS).then(|| len - MIN_MATCH - NUM_PRIMARY_LENS);
                if let Some(l) = ls {
                    len_f[l] += 1;
                }
                coded.push((sym, ls, slot, extra));
            }
        }
    }
    let main_lens = build_lengths(&main_f, MAIN_MAX_LEN);
    let main_codes = canonical_codes(&main_lens);
    let len_lens = build_lengths(&len_f, MAIN_MAX_LEN);
    let len_codes = canonical_codes(&len_lens);

    let mut b = Bits {
        out: Vec::with_capacity(data.len()),
        acc: 0,
        n: 0,
    };
    b.put(BLOCK_VERBATIM, 3);
    if data.len() == DEFAULT_BLOCK_SIZE {
        b.put(1, 1);
    } else {
        b.put(0, 1);
        if order >= 16 {
            b.put((data.len() >> 8) as u32, 16);
            b.put((data.len() & 0xFF) as u32, 8);
        } else {
            b.put(data.len() as u32, 16);
        }
    }
    put_lens(&mut b, &main_lens[..NUM_CHARS]);
    put_lens(&mut b, &main_lens[NUM_CHARS..]);
    put_lens(&mut b, &len_lens);
    for &(sym, ls, slot, extra) in &coded {
        b.put(main_codes[sym], u32::from(main_lens[sym]));
        if sym >= NUM_CHARS {
            if let Some(l) = ls {
                b.put(len_codes[l], u32::from(len_lens[l]));
            }
            let e = extra_bits(slot);
            if e > 16 {
                b.put(extra >> 16, e - 16);
                b.put(extra & 0xFFFF, 16);
            } else {
                b.put(extra, e);
            }
        }
        if bail && b.out.len() >= data.len() {
            return None;
        }
    }
    let out = b.finish();
    (!bail || out.len() < data.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lzx::{undo_e8, LzxDecoder};
    use crate::codec::xpress_enc::tests::samples;
    use crate::codec::Decompress;

    #[test]
    fn round_trip_through_decoder() {
        for chunk in [32768usize, 131072] {
            let mut dec = LzxDecoder::new(chunk).unwrap();
            for (name, data) in samples() {
                let mut shrunk = 0;
                for piece in data.chunks(chunk) {
                    if let Some(c) = compress_chunk(piece, chunk) {
                        let mut out = vec![0u8; piece.len()];
                        dec.decompress(&c, &mut out)
                            .unwrap_or_else(|e| panic!("{name}/{chunk}: {e}"));
                        assert!(out == piece, "{name}/{chunk}: round trip differs");
                        shrunk += 1;
                    }
                    let forced = encode(piece, chunk, false).unwrap();
                    let mut out = vec![0u8; piece.len()];
                    dec.decompress(&forced, &mut out)
                        .unwrap_or_else(|e| panic!("{name}/{chunk} forced: {e}"));
                    assert!(out == piece, "{name}/{chunk} forced: round trip differs");
                }
                match name {
                    "random" => assert_eq!(shrunk, 0, "random data must not shrink"),
                    "one" | "short" => {}
                    _ => assert!(shrunk > 0, "{name}/{chunk}: nothing compressed"),
                }
            }
        }
    }

    #[test]
    fn e8_translation_is_undone_by_decoder_pass() {
        let mut d = vec![0u8; 4000];
        for (k, v) in [
            (0usize, 5i32),
            (100, -50),
            (200, 11_999_990),
            (300, -400),
            (400, 12_000_001),
        ] {
            d[k] = 0xE8;
            d[k + 1..k + 5].copy_from_slice(&v.to_le_bytes());
        }
        let orig = d.clone();
        do_e8(&mut d);
        assert_ne!(d, orig);
        undo_e8(&mut d);
        assert_eq!(d, orig);
    }
}
