//! LZX as used in WIM resources: the block format of [MS-PATCH] 2.3 (verbatim, aligned
//! offset and uncompressed blocks), 2.4 (pretree-coded codeword lengths), 2.5/2.6 (matches,
//! repeated offsets R0–R2) and the E8 call translation of 2.2.2, restricted as WIM uses it
//! (docs/facts-wim.md 8.2): no stream header, every chunk an independent stream with a window
//! equal to the chunk size (2^15 for Microsoft, up to 2^21), block size coded as one "default
//! size" bit or 16 (+8 for windows of 2^16 and more) bits, E8 translation always on with the
//! fixed file size 12000000 and positions relative to the chunk.

use super::huffman::{HuffTable, ENTRY_LEN_BITS, MISS};
use super::{lz_copy, CodecError, Decompress};

const CODEC: &str = "LZX";
const NUM_CHARS: usize = 256;
const NUM_LEN_HEADERS: u32 = 8;
const NUM_PRIMARY_LENS: u32 = 7;
const MIN_MATCH: u32 = 2;
const LEN_SYMBOLS: usize = 249;
const PRE_SYMBOLS: usize = 20;
const ALIGNED_SYMBOLS: usize = 8;
const MAX_MAIN_SYMBOLS: usize = NUM_CHARS + 50 * 8;
/// Maximum codeword lengths ([MS-PATCH] 2.4: main/length 16, pretree 15 (4-bit lengths),
/// aligned 7 (3-bit lengths)).
const MAIN_MAX_LEN: u32 = 16;
const PRE_MAX_LEN: u32 = 15;
const ALIGNED_MAX_LEN: u32 = 7;
/// Primary table widths: most main and length codewords are this short, and the tables
/// (rebuilt for every block) stay small enough to build quickly.
const MAIN_TABLE_BITS: u32 = 11;
const LEN_TABLE_BITS: u32 = 10;
const ALIGNED_TABLE_BITS: u32 = ALIGNED_MAX_LEN;
const DEFAULT_BLOCK_SIZE: usize = 32768;
/// The E8 translation size WIM always uses (facts-wim.md 8.2).
const E8_FILE_SIZE: i32 = 12_000_000;
/// Smallest and largest window (= chunk) orders: 2^15 per MS, 2^21 as wimlib extension.
const MIN_WINDOW_ORDER: u32 = 15;
const MAX_WINDOW_ORDER: u32 = 21;
/// Runs in the pretree-coded lengths may overshoot the end of their pass by at most
/// 20+31-1 entries; the scratch array has that much slack.
const READ_LENS_OVERRUN: usize = 50;

/// LZX chunk decoder for one window (chunk) size.
pub struct LzxDecoder {
    window_order: u32,
    num_main_syms: usize,
    max_chunk: usize,
    main_lens: Vec<u8>,
    len_lens: Vec<u8>,
    aligned_lens: [u8; ALIGNED_SYMBOLS],
    pre_lens: [u8; PRE_SYMBOLS],
    main: HuffTable,
    length: HuffTable,
    aligned: HuffTable,
    pre: HuffTable,
    /// Per offset slot (indexed by `slot & 63`): extra bit count and base offset + 2.
    extra_bits: [u32; 64],
    slot_base: [u32; 64],
    /// The chunk's input with the bytes of every 16-bit word swapped, so the MSB-first
    /// word stream reads as a big-endian byte stream, plus [`STREAM_PAD`] zero bytes.
    stream: Vec<u8>,
}

/// Zero bytes after the swapped input: a refill loads 8 bytes at once.
const STREAM_PAD: usize = 8;

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

impl LzxDecoder {
    /// A decoder for chunks up to `max_chunk` bytes (a power of two in 2^15..2^21 when
    /// coming from a WIM; other sizes round up to the next window order).
    pub fn new(max_chunk: usize) -> Result<Self, CodecError> {
        let mut order = MIN_WINDOW_ORDER;
        while (1usize << order) < max_chunk {
            order += 1;
        }
        if order > MAX_WINDOW_ORDER {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                len: max_chunk,
                max: 1 << MAX_WINDOW_ORDER,
            });
        }
        let num_main_syms = NUM_CHARS + num_offset_slots(order) * NUM_LEN_HEADERS as usize;
        let mut extra_bits = [0u32; 64];
        let mut slot_base = [0u32; 64];
        let mut base = 0u32;
        for s in 0..50 {
            let e = if s < 4 { 0 } else { (s as u32 / 2 - 1).min(17) };
            extra_bits[s] = e;
            slot_base[s] = base;
            base += 1 << e;
        }
        Ok(LzxDecoder {
            window_order: order,
            num_main_syms,
            max_chunk: 1 << order,
            main_lens: vec![0; MAX_MAIN_SYMBOLS + READ_LENS_OVERRUN],
            len_lens: vec![0; LEN_SYMBOLS + READ_LENS_OVERRUN],
            aligned_lens: [0; ALIGNED_SYMBOLS],
            pre_lens: [0; PRE_SYMBOLS],
            main: HuffTable::new(MAIN_TABLE_BITS, MAIN_MAX_LEN),
            length: HuffTable::new(LEN_TABLE_BITS, MAIN_MAX_LEN),
            aligned: HuffTable::new(ALIGNED_TABLE_BITS, ALIGNED_MAX_LEN),
            pre: HuffTable::new(PRE_TABLE_BITS, PRE_MAX_LEN),
            extra_bits,
            slot_base,
            stream: Vec::new(),
        })
    }
}

fn bad_code(e: super::huffman::BuildError) -> CodecError {
    CodecError::BadHuffmanCode {
        codec: CODEC,
        what: e.describe(),
    }
}

/// Copy `input` into `stream` with the two bytes of every 16-bit word swapped, then
/// [`STREAM_PAD`] zero bytes. A trailing odd byte is dropped: the word reader of
/// [MS-PATCH] 2.2 never sees half a word, and bits past the end read as zero.
fn swap_words<'a>(input: &[u8], stream: &'a mut Vec<u8>) -> &'a [u8] {
    let n = input.len() & !1;
    // Grown, never cleared: every byte of the returned slice is written below.
    if stream.len() < n + STREAM_PAD {
        stream.resize(n + STREAM_PAD, 0);
    }
    let stream = &mut stream[..n + STREAM_PAD];
    let (body, pad) = stream.split_at_mut(n);
    pad.fill(0);
    let src = &input[..n];
    let mut dst = body.chunks_exact_mut(8);
    for (d, s) in (&mut dst).zip(src.chunks_exact(8)) {
        let mut x = [0u8; 8];
        x.copy_from_slice(s);
        let v = u64::from_le_bytes(x);
        let v = ((v >> 8) & 0x00FF_00FF_00FF_00FF) | ((v & 0x00FF_00FF_00FF_00FF) << 8);
        d.copy_from_slice(&v.to_le_bytes());
    }
    let tail = src.chunks_exact(8).remainder();
    for (d, s) in dst
        .into_remainder()
        .chunks_exact_mut(2)
        .zip(tail.chunks_exact(2))
    {
        d[0] = s[1];
        d[1] = s[0];
    }
    stream
}

/// MSB-first bit reader over the word-swapped stream (a big-endian byte stream).
///
/// `buf` holds `count` valid bits at its top, and the bits below them are zero or the
/// stream's own next bits. A refill loads 8 bytes at `pos`, ORs them in below the valid
/// bits and keeps as many whole bytes as fit, leaving 56..=63 valid bits with no branch on
/// the fill level (the libdeflate scheme). Bytes past the end of the stream read as zero.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

/// Valid bits after a refill: enough for a main symbol (16), a length symbol (16) and the
/// largest offset field (17 extra bits, or 14 verbatim bits and a 7-bit aligned symbol).
const REFILL_BITS: u32 = 56;

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut r = Bits {
            data,
            pos: 0,
            buf: 0,
            count: 0,
        };
        r.refill();
        r
    }

    #[inline(always)]
    fn refill(&mut self) {
        let w = match self.data.get(self.pos..self.pos + 8) {
            Some(b) => {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                u64::from_be_bytes(x)
            }
            None => 0,
        };
        self.buf |= w >> self.count;
        self.pos += (63 - self.count as usize) >> 3;
        self.count |= REFILL_BITS;
    }

    /// Top `n` bits (0..=32) without consuming.
    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        ((self.buf >> 32) >> (32 - n)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// Consume the codeword of a primary table entry (`symbol << 6 | length`): the shift
    /// takes its count modulo 64, which is the length, so no masking step lengthens the
    /// dependency chain from one table access to the next.
    #[inline(always)]
    fn consume_entry(&mut self, e: u16) {
        self.buf = self.buf.wrapping_shl(u32::from(e));
        self.count -= u32::from(e) & 63;
    }

    /// Read `n` bits (0..=32) from the buffer without refilling: the caller knows at least
    /// `n` bits are buffered.
    #[inline(always)]
    fn take(&mut self, n: u32) -> u32 {
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Read `n` bits (0..=32), refilling as needed.
    #[inline(always)]
    fn bits(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        self.take(n)
    }

    /// Number of bits consumed from the start of the stream.
    fn consumed_bits(&self) -> u64 {
        self.pos as u64 * 8 - u64::from(self.count)
    }

    /// Restart reading at byte `pos` (after raw bytes were taken from the stream).
    fn reset_at(&mut self, pos: usize) {
        self.pos = pos;
        self.buf = 0;
        self.count = 0;
        self.refill();
    }
}

/// Resolve one codeword from a buffer holding at least `t.max_len()` bits.
#[inline(always)]
fn decode_buffered<const TB: u32>(t: &HuffTable, r: &mut Bits) -> Result<u32, CodecError> {
    let e = t.entry::<TB>(r.buf);
    let (sym, len) = if e != MISS {
        (u32::from(e >> ENTRY_LEN_BITS), u32::from(e) & 63)
    } else {
        t.lookup_long((r.buf >> (64 - t.max_len())) as u32)
            .ok_or(CodecError::BadCodeword { codec: CODEC })?
    };
    r.consume(len);
    Ok(sym)
}

/// Primary index width of the pretree table.
const PRE_TABLE_BITS: u32 = 6;

/// [MS-PATCH] 2.4: a pretree of 20 4-bit lengths, then `lens[start..end]` as deltas from
/// their previous values with run-length codes 17, 18 and 19.
fn read_lens(
    r: &mut Bits,
    pre: &mut HuffTable,
    pre_lens: &mut [u8; PRE_SYMBOLS],
    lens: &mut [u8],
    start: usize,
    end: usize,
) -> Result<(), CodecError> {
    for l in pre_lens.iter_mut() {
        *l = r.bits(4) as u8;
    }
    pre.build(pre_lens).map_err(bad_code)?;
    let delta = |old: u8, s: u32| -> u8 { ((u32::from(old) + 17 - s) % 17) as u8 };
    let mut i = start;
    while i < end {
        // At most two pretree codewords (15 bits each) and 5 raw bits per entry.
        r.refill();
        let sym = decode_buffered::<PRE_TABLE_BITS>(pre, r)?;
        match sym {
            0..=16 => {
                lens[i] = delta(lens[i], sym);
                i += 1;
            }
            17 | 18 => {
                let run = if sym == 17 {
                    4 + r.take(4)
                } else {
                    20 + r.take(5)
                } as usize;
                lens[i..i + run].fill(0);
                i += run;
            }
            _ => {
                let run = 4 + r.take(1) as usize;
                let s = decode_buffered::<PRE_TABLE_BITS>(pre, r)?;
                if s > 17 {
                    return Err(CodecError::Invalid {
                        codec: CODEC,
                        what: format!("pretree run value symbol {s} is out of range"),
                    });
                }
                let v = delta(lens[i], s % 17);
                lens[i..i + run].fill(v);
                i += run;
            }
        }
    }
    Ok(())
}

impl Decompress for LzxDecoder {
    fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        let size = out.len();
        if size > self.max_chunk {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                len: size,
                max: self.max_chunk,
            });
        }
        let mut stream = std::mem::take(&mut self.stream);
        let res = self.decode_chunk(input, swap_words(input, &mut stream), out);
        self.stream = stream;
        res
    }
}

impl LzxDecoder {
    /// Decode the blocks of one chunk; `stream` is `input` after [`swap_words`].
    fn decode_chunk(
        &mut self,
        input: &[u8],
        stream: &[u8],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        let size = out.len();
        let mut r = Bits::new(stream);
        let mut rq = [1u32; 3];
        self.main_lens.fill(0);
        self.len_lens.fill(0);
        let nmain = self.num_main_syms;
        let mut may_have_e8 = false;
        let mut op = 0usize;
        while op < size {
            let block_type = r.bits(3);
            let block_size = if r.bits(1) == 1 {
                DEFAULT_BLOCK_SIZE
            } else {
                let mut s = r.bits(16) as usize;
                if self.window_order >= 16 {
                    s = (s << 8) | r.bits(8) as usize;
                }
                s
            };
            if block_size == 0 || block_size > size - op {
                return Err(CodecError::Overrun {
                    codec: CODEC,
                    what: "block",
                    len: block_size as u64,
                    pos: op,
                    size,
                });
            }
            match block_type {
                1 | 2 => {
                    let aligned = block_type == 2;
                    if aligned {
                        for l in self.aligned_lens.iter_mut() {
                            *l = r.bits(3) as u8;
                        }
                        self.aligned.build(&self.aligned_lens).map_err(bad_code)?;
                    }
                    read_lens(
                        &mut r,
                        &mut self.pre,
                        &mut self.pre_lens,
                        &mut self.main_lens,
                        0,
                        NUM_CHARS,
                    )?;
                    read_lens(
                        &mut r,
                        &mut self.pre,
                        &mut self.pre_lens,
                        &mut self.main_lens,
                        NUM_CHARS,
                        nmain,
                    )?;
                    self.main
                        .build(&self.main_lens[..nmain])
                        .map_err(bad_code)?;
                    read_lens(
                        &mut r,
                        &mut self.pre,
                        &mut self.pre_lens,
                        &mut self.len_lens,
                        0,
                        LEN_SYMBOLS,
                    )?;
                    self.length
                        .build(&self.len_lens[..LEN_SYMBOLS])
                        .map_err(bad_code)?;
                    if self.main_lens[0xE8] != 0 {
                        may_have_e8 = true;
                    }
                    if aligned {
                        self.block::<true>(&mut r, out, op, op + block_size, &mut rq)?;
                    } else {
                        self.block::<false>(&mut r, out, op, op + block_size, &mut rq)?;
                    }
                }
                3 => {
                    may_have_e8 = true;
                    // Align to 16 bits; an already aligned stream skips a whole word
                    // ([MS-PATCH] 2.3.2.1: "1 to 16 bits" of padding).
                    let mut p = ((r.consumed_bits() / 16 + 1) * 2) as usize;
                    let hdr = input.get(p..p + 12).ok_or_else(|| CodecError::Invalid {
                        codec: CODEC,
                        what: format!(
                            "uncompressed block header at input offset {p:#x} lies past the end"
                        ),
                    })?;
                    for (k, q) in rq.iter_mut().enumerate() {
                        *q = u32::from_le_bytes([
                            hdr[4 * k],
                            hdr[4 * k + 1],
                            hdr[4 * k + 2],
                            hdr[4 * k + 3],
                        ]);
                        if *q == 0 {
                            return Err(CodecError::Invalid {
                                codec: CODEC,
                                what: "uncompressed block has a zero repeated offset".into(),
                            });
                        }
                    }
                    p += 12;
                    let data = input.get(p..p + block_size).ok_or_else(|| CodecError::Invalid {
                        codec: CODEC,
                        what: format!("uncompressed block of {block_size} bytes at input offset {p:#x} lies past the end"),
                    })?;
                    out[op..op + block_size].copy_from_slice(data);
                    p += block_size + (block_size & 1);
                    r.reset_at(p);
                    op += block_size;
                    continue;
                }
                t => {
                    return Err(CodecError::Invalid {
                        codec: CODEC,
                        what: format!("block type {t} is not 1, 2 or 3"),
                    });
                }
            }
            op += block_size;
        }
        if may_have_e8 {
            undo_e8(out);
        }
        Ok(())
    }

    /// Decode one verbatim (`ALIGNED` false) or aligned block into `out[op..end]`.
    ///
    /// Bit budget: a refill leaves at least [`REFILL_BITS`] (56) bits. An item starts with
    /// one refill; a literal takes at most 16 bits, so a second main symbol can follow
    /// without another. A match refills once more after its main symbol: the length symbol
    /// (16) and the largest offset field (21) fit.
    fn block<const ALIGNED: bool>(
        &self,
        reader: &mut Bits,
        out: &mut [u8],
        mut op: usize,
        end: usize,
        rq: &mut [u32; 3],
    ) -> Result<(), CodecError> {
        let mut r = *reader;
        let size = out.len();
        if end > size {
            return Err(CodecError::Overrun {
                codec: CODEC,
                what: "block",
                len: end.saturating_sub(op) as u64,
                pos: op,
                size,
            });
        }
        while op < end {
            r.refill();
            let mut e = self.main.entry::<MAIN_TABLE_BITS>(r.buf);
            if e < LITERAL_LIMIT {
                // Literals, the common case, resolved by one table access each.
                r.consume_entry(e);
                out[op] = (e >> ENTRY_LEN_BITS) as u8;
                op += 1;
                if op == end {
                    break;
                }
                e = self.main.entry::<MAIN_TABLE_BITS>(r.buf);
                if e < LITERAL_LIMIT {
                    r.consume_entry(e);
                    out[op] = (e >> ENTRY_LEN_BITS) as u8;
                    op += 1;
                    if op == end {
                        break;
                    }
                    e = self.main.entry::<MAIN_TABLE_BITS>(r.buf);
                    if e < LITERAL_LIMIT {
                        r.consume_entry(e);
                        out[op] = (e >> ENTRY_LEN_BITS) as u8;
                        op += 1;
                        continue;
                    }
                }
            }
            let sym = if e != MISS {
                r.consume_entry(e);
                u32::from(e >> ENTRY_LEN_BITS)
            } else {
                let (sym, len) = self
                    .main
                    .lookup_long((r.buf >> (64 - MAIN_MAX_LEN)) as u32)
                    .ok_or(CodecError::BadCodeword { codec: CODEC })?;
                r.consume(len);
                if sym < NUM_CHARS as u32 {
                    out[op] = sym as u8;
                    op += 1;
                    continue;
                }
                sym
            };
            r.refill();
            let m = sym - NUM_CHARS as u32;
            let mut mlen = m % NUM_LEN_HEADERS;
            let slot = (m / NUM_LEN_HEADERS) as usize;
            if mlen == NUM_PRIMARY_LENS {
                mlen += decode_buffered::<LEN_TABLE_BITS>(&self.length, &mut r)?;
            }
            let mlen = (mlen + MIN_MATCH) as usize;
            let offset = if slot < 3 {
                rq.swap(slot, 0);
                rq[0]
            } else {
                let e = self.extra_bits[slot & 63];
                let mut o = self.slot_base[slot & 63];
                if ALIGNED && e >= 3 {
                    o += r.take(e - 3) << 3;
                    o += decode_buffered::<ALIGNED_TABLE_BITS>(&self.aligned, &mut r)?;
                } else {
                    o += r.take(e);
                }
                let o = o - 2;
                rq[2] = rq[1];
                rq[1] = rq[0];
                rq[0] = o;
                o
            } as usize;
            if mlen > end - op {
                return Err(CodecError::Overrun {
                    codec: CODEC,
                    what: "match",
                    len: mlen as u64,
                    pos: op,
                    size,
                });
            }
            if offset > op {
                return Err(CodecError::BadOffset {
                    codec: CODEC,
                    offset: offset as u64,
                    pos: op,
                });
            }
            if offset >= FAST_COPY && mlen + FAST_COPY <= size - op {
                copy_fast(out, op, offset, mlen);
            } else {
                lz_copy(out, op, offset, mlen);
            }
            op += mlen;
        }
        *reader = r;
        Ok(())
    }
}

/// Main-table entries below this are literals (`symbol << 6 | length`, symbol < 256).
const LITERAL_LIMIT: u16 = (NUM_CHARS as u16) << ENTRY_LEN_BITS;

/// Step of [`copy_fast`]: most matches (2..=257 bytes, mostly under 16) take one step.
const FAST_COPY: usize = 16;

/// Copy a match in 16-byte steps. The caller guarantees `offset >= 16` (each step reads
/// only bytes already final) and `pos + len + 16 <= out.len()`: the last step may write up
/// to 15 bytes past the match, which stay inside `out` and are overwritten later (a chunk's
/// output is filled completely).
#[inline(always)]
fn copy_fast(out: &mut [u8], pos: usize, offset: usize, len: usize) {
    let mut s = pos - offset;
    let mut d = pos;
    let stop = pos + len;
    loop {
        let mut w = [0u8; FAST_COPY];
        w.copy_from_slice(&out[s..s + FAST_COPY]);
        out[d..d + FAST_COPY].copy_from_slice(&w);
        d += FAST_COPY;
        if d >= stop {
            break;
        }
        s += FAST_COPY;
    }
}

/// Undo E8 call translation ([MS-PATCH] 2.2.2) with the fixed WIM file size.
pub fn undo_e8(data: &mut [u8]) {
    let n = data.len();
    if n <= 10 {
        return;
    }
    let limit = n - 10;
    let mut i = 0usize;
    while i < limit {
        // Find the next E8 eight bytes at a time: XOR turns E8 bytes into zero bytes, and
        // the classic zero-byte test flags the lowest one exactly (a false flag can only sit
        // above a true one, which trailing_zeros never picks).
        if let Some(w) = data.get(i..i + 8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            let x = u64::from_le_bytes(b) ^ 0xE8E8_E8E8_E8E8_E8E8;
            let hit = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
            if hit == 0 {
                i += 8;
                continue;
            }
            i += (hit.trailing_zeros() / 8) as usize;
            if i >= limit {
                break;
            }
        } else if data[i] != 0xE8 {
            i += 1;
            continue;
        }
        let v = i32::from_le_bytes([data[i + 1], data[i + 2], data[i + 3], data[i + 4]]);
        let pos = i as i32;
        if (0..E8_FILE_SIZE).contains(&v) {
            data[i + 1..i + 5].copy_from_slice(&(v - pos).to_le_bytes());
        } else if v < 0 && v >= -pos {
            data[i + 1..i + 5].copy_from_slice(&(v + E8_FILE_SIZE).to_le_bytes());
        }
        i += 5;
    }
}

#[cfg(test)]
mod tests {
    use super::super::lz_copy;
    use super::*;

    /// Pack (value, nbits) pairs MSB-first into 16-bit little-endian words.
    fn pack(fields: &[(u32, u32)]) -> Vec<u8> {
        let mut bits = Vec::new();
        for &(v, n) in fields {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1);
            }
        }
        while !bits.len().is_multiple_of(16) {
            bits.push(0);
        }
        bits.chunks(16)
            .flat_map(|w| (w.iter().fold(0u32, |a, &b| (a << 1) | b) as u16).to_le_bytes())
            .collect()
    }

    #[test]
    fn uncompressed_block() {
        // Type 3, size 5 (not default: 0 then 16 bits), then pad to 16 bits.
        let mut input = pack(&[(3, 3), (0, 1), (5, 16)]);
        for r in [1u32, 1, 1] {
            input.extend_from_slice(&r.to_le_bytes());
        }
        input.extend_from_slice(b"hello\0");
        let mut d = LzxDecoder::new(32768).unwrap();
        let mut out = [0u8; 5];
        d.decompress(&input, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }

    #[test]
    fn e8_translation_roundtrip_value() {
        let mut d = vec![0u8; 32];
        d[4] = 0xE8;
        // Absolute target 100 at position 4 => relative 96.
        d[5..9].copy_from_slice(&100i32.to_le_bytes());
        undo_e8(&mut d);
        assert_eq!(i32::from_le_bytes([d[5], d[6], d[7], d[8]]), 96);
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = LzxDecoder::new(32768).unwrap();
        let mut out = vec![0u8; 32768];
        let mut x = 0x1234_5678u32;
        for len in [0usize, 1, 2, 7, 100, 5000] {
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
    }
    /// The byte-at-a-time definitions the fast paths must match.
    fn naive_copy(out: &mut [u8], pos: usize, offset: usize, len: usize) {
        for k in 0..len {
            out[pos + k] = out[pos + k - offset];
        }
    }

    fn naive_undo_e8(data: &mut [u8]) {
        if data.len() <= 10 {
            return;
        }
        let mut i = 0;
        while i < data.len() - 10 {
            if data[i] == 0xE8 {
                let v = i32::from_le_bytes([data[i + 1], data[i + 2], data[i + 3], data[i + 4]]);
                let pos = i as i32;
                if (0..E8_FILE_SIZE).contains(&v) {
                    data[i + 1..i + 5].copy_from_slice(&(v - pos).to_le_bytes());
                } else if v < 0 && v >= -pos {
                    data[i + 1..i + 5].copy_from_slice(&(v + E8_FILE_SIZE).to_le_bytes());
                }
                i += 5;
            } else {
                i += 1;
            }
        }
    }

    fn xorshift(x: &mut u32) -> u32 {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x
    }

    /// `copy` against a byte-by-byte copy for every offset, length and distance from the
    /// buffer end given; bytes after the match may be scratch, the match and all before it
    /// must be exact.
    fn check_copy(
        copy: fn(&mut [u8], usize, usize, usize),
        size: usize,
        seed: u32,
        offsets: std::ops::RangeInclusive<usize>,
        lens: std::ops::RangeInclusive<usize>,
        tails: std::ops::RangeInclusive<usize>,
    ) {
        let mut x = seed;
        let base: Vec<u8> = (0..size).map(|_| xorshift(&mut x) as u8).collect();
        for offset in offsets {
            for len in lens.clone() {
                for tail in tails.clone() {
                    let Some(pos) = size.checked_sub(len + tail) else {
                        continue;
                    };
                    if offset > pos {
                        continue;
                    }
                    let mut want = base.clone();
                    naive_copy(&mut want, pos, offset, len);
                    let mut got = base.clone();
                    copy(&mut got, pos, offset, len);
                    assert_eq!(
                        got[..pos + len],
                        want[..pos + len],
                        "offset {offset} len {len} tail {tail}"
                    );
                }
            }
        }
    }

    #[test]
    fn match_copy_equals_bytewise_copy() {
        // Offsets below, at and above the 8-byte word; lengths short, long, overlapping;
        // matches ending exactly at the buffer end and up to 9 bytes before it (where the
        // word path must not be taken or must stay inside the buffer).
        check_copy(lz_copy, 200, 7, 1..=24, 2..=90, 0..=9);
    }

    #[test]
    fn e8_scan_equals_bytewise_scan() {
        let mut x = 99u32;
        for len in [
            0usize, 1, 10, 11, 12, 15, 16, 17, 18, 19, 24, 25, 100, 4096, 32768,
        ] {
            for density in [2u32, 8, 64] {
                // Many E8 bytes, including runs of them and ones in the last 10 bytes.
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = xorshift(&mut x);
                        if r.is_multiple_of(density) {
                            0xE8
                        } else {
                            (r >> 8) as u8
                        }
                    })
                    .collect();
                let mut want = data.clone();
                naive_undo_e8(&mut want);
                let mut got = data;
                undo_e8(&mut got);
                assert_eq!(got, want, "len {len} density {density}");
            }
        }
        // An E8 as the last byte that may be translated, and one just past it.
        for at in [0usize, 7, 8, 21, 22, 23] {
            let mut d = vec![0u8; 32];
            d[at] = 0xE8;
            d[at + 1] = 0x40;
            let mut want = d.clone();
            naive_undo_e8(&mut want);
            undo_e8(&mut d);
            assert_eq!(d, want, "E8 at {at}");
        }
    }

    #[test]
    fn word_reader_equals_bitwise_reader() {
        // Reads of 1..=17 bits, refills at every fill level, zeros past the end, and a
        // restart in the middle (uncompressed blocks).
        let mut x = 5u32;
        for len in [0usize, 1, 2, 3, 6, 7, 8, 9, 10, 16, 17, 64] {
            let data: Vec<u8> = (0..len).map(|_| xorshift(&mut x) as u8).collect();
            let bit = |k: u64| -> u32 {
                let w = (k / 16) as usize * 2;
                match data.get(w..w + 2) {
                    Some(b) => (u32::from(u16::from_le_bytes([b[0], b[1]])) >> (15 - k % 16)) & 1,
                    None => 0,
                }
            };
            // A reused buffer holding stale bytes must not leak them into the stream.
            let mut stream = vec![0xAA; 100];
            let mut r = Bits::new(swap_words(&data, &mut stream));
            let mut at = 0u64;
            for step in 0..200u32 {
                let n = 1 + (xorshift(&mut x) % 17);
                let want = (0..u64::from(n)).fold(0u32, |a, k| (a << 1) | bit(at + k));
                assert_eq!(r.bits(n), want, "len {len} step {step} at {at}");
                at += u64::from(n);
                assert_eq!(r.consumed_bits(), at);
                if step == 50 {
                    at = (at / 16 + 1) * 16;
                    r.reset_at((at / 8) as usize);
                }
            }
        }
    }

    #[test]
    fn fast_copy_equals_bytewise_copy() {
        // Offsets from the 16-byte step up, lengths within one step and across several,
        // and matches ending exactly 16 bytes before the end (the nearest the caller allows).
        check_copy(copy_fast, 300, 11, 16..=40, 2..=120, 16..=20);
    }

    /// Compress with the crate's encoder, then decode.
    fn round_trip(data: &[u8]) {
        let c = crate::codec::lzx_enc::compress_chunk(data, 32768)
            .unwrap_or_else(|| panic!("{} bytes did not compress", data.len()));
        let mut d = LzxDecoder::new(32768).unwrap();
        let mut out = vec![0x5Au8; data.len()];
        d.decompress(&c, &mut out).unwrap();
        assert!(out == data, "round trip of {} bytes differs", data.len());
    }

    #[test]
    fn periodic_matches_up_to_the_chunk_end() {
        // A period of p bytes gives matches at offset p overlapping themselves (p < length);
        // random tails of 0..=40 bytes put the last match at and near the chunk end, where
        // the fast copies must give way to the exact ones; a full chunk ends in a match.
        let mut x = 3u32;
        for period in 1..=20usize {
            let unit: Vec<u8> = (0..period).map(|_| xorshift(&mut x) as u8).collect();
            let reps = 1200 / period;
            for tail in [0usize, 1, 15, 16, 17, 31, 32, 33, 40] {
                let mut data: Vec<u8> = unit.iter().copied().cycle().take(period * reps).collect();
                data.extend((0..tail).map(|_| xorshift(&mut x) as u8));
                round_trip(&data);
            }
            let full: Vec<u8> = (0..32768)
                .map(|i| {
                    if i < 3000 {
                        xorshift(&mut x) as u8
                    } else {
                        unit[i % period]
                    }
                })
                .collect();
            round_trip(&full);
        }
    }

    #[test]
    fn truncated_and_padded_input() {
        // Bits past the end of the input read as zero: a truncated chunk decodes exactly
        // like the same bytes followed by zeros (or fails the same way), whatever refill
        // the end falls into; a trailing odd byte is never part of a word.
        let mut x = 21u32;
        let data: Vec<u8> = (0..6000)
            .map(|i| {
                if i % 7 == 0 {
                    xorshift(&mut x) as u8
                } else {
                    (i / 50) as u8
                }
            })
            .collect();
        let c = crate::codec::lzx_enc::compress_chunk(&data, 32768).unwrap();
        let mut d = LzxDecoder::new(32768).unwrap();
        let mut steps: Vec<usize> = (0..64)
            .chain(c.len().saturating_sub(64)..=c.len())
            .collect();
        steps.extend((0..c.len()).step_by(97));
        for cut in steps {
            let cut_even = cut & !1;
            let mut a = vec![0u8; data.len()];
            let ra = d.decompress(&c[..cut], &mut a);
            let mut padded = c[..cut_even].to_vec();
            padded.extend_from_slice(&[0; 20]);
            let mut b = vec![0u8; data.len()];
            let rb = d.decompress(&padded, &mut b);
            assert_eq!(ra.is_ok(), rb.is_ok(), "cut {cut}: {ra:?} vs {rb:?}");
            if ra.is_ok() {
                assert!(a == b, "cut {cut}: outputs differ");
            }
            if cut == c.len() {
                assert!(ra.is_ok() && a == data, "the whole chunk must decode");
            }
        }
    }
}
