//! Decompressors for the codecs used by WIM resources: XPRESS (LZ77+Huffman), LZX and LZMS.
//!
//! Sources: [MS-XCA] 2.1/2.2 (LZ77+Huffman), [MS-PATCH] 2.1–2.6 (LZX DELTA, of which WIM uses
//! the plain subset), and the WIM format notes in docs/facts-wim.md (sections 8.0–8.3) which
//! record the WIM-specific rules (fixed E8 translation size, one independent stream per chunk,
//! LZMS structure).
//!
//! Every decoder implements [`Decompress`]: one call decodes one independent chunk into an
//! output buffer of exactly the expected size. Corrupt input yields a [`CodecError`], never a
//! panic; reading past the end of the input yields zero bits (like the reference decoders), so
//! a stream can never make a decoder run longer than its output size allows.

pub mod huffman;
pub mod lzms;
pub mod lzx;
pub mod lzx_enc;
pub mod xpress;
pub mod xpress_enc;

use thiserror::Error;

/// A corrupt compressed chunk.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The Huffman code lengths do not form a prefix code.
    #[error("{codec}: invalid Huffman code ({what})")]
    BadHuffmanCode {
        codec: &'static str,
        what: &'static str,
    },
    /// A bit pattern matched no codeword.
    #[error("{codec}: bit pattern matches no codeword")]
    BadCodeword { codec: &'static str },
    /// A match refers to data before the start of the chunk.
    #[error(
        "{codec}: match offset {offset} reaches before the chunk start at output position {pos}"
    )]
    BadOffset {
        codec: &'static str,
        offset: u64,
        pos: usize,
    },
    /// A match or block runs past the end of the output.
    #[error(
        "{codec}: {what} of {len} bytes at output position {pos} runs past the end ({size} bytes)"
    )]
    Overrun {
        codec: &'static str,
        what: &'static str,
        len: u64,
        pos: usize,
        size: usize,
    },
    /// Any other structural violation.
    #[error("{codec}: {what}")]
    Invalid { codec: &'static str, what: String },
    /// The input is too short to hold even the fixed headers.
    #[error("{codec}: input of {len} bytes is too short (needs at least {min})")]
    TooShort {
        codec: &'static str,
        len: usize,
        min: usize,
    },
    /// The output buffer is larger than this decoder instance supports.
    #[error("{codec}: chunk of {len} bytes exceeds the decoder's maximum of {max}")]
    TooLarge {
        codec: &'static str,
        len: usize,
        max: usize,
    },
}

/// One decoder instance; reuse it for many chunks (it keeps its tables allocated).
pub trait Decompress: Send {
    /// Decode one independent chunk `input` into `out`, which must be filled exactly.
    fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError>;
}

/// The codecs a WIM resource may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Codec {
    /// Stored.
    None,
    /// XPRESS, the LZ77+Huffman variant of [MS-XCA] 2.1.
    Xpress,
    /// LZX with WIM's fixed E8 translation size.
    Lzx,
    /// LZMS.
    Lzms,
}

impl Codec {
    /// A new decoder for chunks of up to `max_chunk` bytes (`None` for stored data).
    pub fn decoder(self, max_chunk: usize) -> Result<Option<Box<dyn Decompress>>, CodecError> {
        Ok(match self {
            Codec::None => None,
            Codec::Xpress => Some(Box::new(xpress::XpressDecoder::new())),
            Codec::Lzx => Some(Box::new(lzx::LzxDecoder::new(max_chunk)?)),
            Codec::Lzms => Some(Box::new(lzms::LzmsDecoder::new(max_chunk)?)),
        })
    }

    /// Lower-case name as wimlib prints it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "None",
            Codec::Xpress => "XPRESS",
            Codec::Lzx => "LZX",
            Codec::Lzms => "LZMS",
        }
    }
}

/// Bytes moved per step by the word-wise match copy.
const COPY_WORD: usize = 8;

/// Copy a match of `len` bytes from `offset` bytes back; overlapping copies repeat the
/// pattern (LZ77 semantics). The caller has checked `offset <= pos` and `pos + len <= out.len()`.
///
/// When `offset >= 8` and at least 8 bytes of `out` follow the match, the copy moves 8-byte
/// words and may write up to 7 bytes past the match end: those bytes lie inside `out` and are
/// overwritten by the following symbols (a decoder fills its output completely). Each word
/// reads bytes at least 8 positions behind the ones it writes, so it only reads final bytes.
#[inline(always)]
pub(crate) fn lz_copy(out: &mut [u8], pos: usize, offset: usize, len: usize) {
    let src = pos - offset;
    let end = pos + len;
    if offset >= COPY_WORD && end + COPY_WORD <= out.len() {
        if offset >= len && len > 4 * COPY_WORD {
            out.copy_within(src..src + len, pos);
            return;
        }
        let mut s = src;
        let mut d = pos;
        while d < end {
            let mut w = [0u8; COPY_WORD];
            w.copy_from_slice(&out[s..s + COPY_WORD]);
            out[d..d + COPY_WORD].copy_from_slice(&w);
            s += COPY_WORD;
            d += COPY_WORD;
        }
    } else if offset == 1 {
        let b = out[src];
        out[pos..end].fill(b);
    } else if offset >= len {
        out.copy_within(src..src + len, pos);
    } else if len <= 4 * COPY_WORD {
        // Short overlapping match: byte by byte is the LZ77 definition.
        let w = &mut out[src..end];
        for i in offset..w.len() {
            w[i] = w[i - offset];
        }
    } else {
        // Overlapping: copy in runs of `offset` bytes, each run doubling the available pattern.
        let mut done = 0;
        while done < len {
            let n = (len - done).min(offset + done);
            out.copy_within(src..src + n, pos + done);
            done += n;
        }
    }
}

/// MSB-first bit reader over 16-bit little-endian words (the LZX and LZMS backward streams
/// read words this way; [MS-PATCH] 2.2 "bitstream", facts-wim.md 8.0).
///
/// `Copy` so a hot loop can work on a local copy the compiler keeps in registers.
#[derive(Clone, Copy)]
pub(crate) struct WordBits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

impl<'a> WordBits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        let mut r = WordBits {
            data,
            pos: 0,
            buf: 0,
            count: 0,
        };
        r.refill();
        r
    }

    /// Keep at least 48 valid bits buffered; missing words read as zero.
    ///
    /// The fast path loads four words at once and keeps as many whole words as fit; the
    /// bits of a partly kept word sit below `count` and are ORed in again, identical, by
    /// the next refill (bits below `count` are always either zero or the stream's own).
    #[inline(always)]
    pub(crate) fn refill(&mut self) {
        if self.count > 48 {
            return;
        }
        if let Some(b) = self.data.get(self.pos..self.pos + 8) {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            // Little-endian words w0..w3 become w0:w1:w2:w3, most significant first.
            let y = u64::from_le_bytes(x).rotate_left(32);
            let v = ((y >> 16) & 0x0000_FFFF_0000_FFFF) | ((y & 0x0000_FFFF_0000_FFFF) << 16);
            self.buf |= v >> self.count;
            let words = (64 - self.count) / 16;
            self.pos += 2 * words as usize;
            self.count += 16 * words;
            return;
        }
        while self.count <= 48 {
            let w = match self.data.get(self.pos..self.pos + 2) {
                Some(b) => {
                    self.pos += 2;
                    u16::from_le_bytes([b[0], b[1]])
                }
                None => {
                    // Past the end: zeros (position advances so accounting stays exact).
                    self.pos += 2;
                    0
                }
            };
            self.buf |= u64::from(w) << (48 - self.count);
            self.count += 16;
        }
    }

    /// Top `n` bits (1..=32) without consuming; the caller refilled.
    #[inline(always)]
    pub(crate) fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    pub(crate) fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// Read `n` bits (0..=32), refilling as needed.
    #[inline(always)]
    pub(crate) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < n {
            self.refill();
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Number of bits consumed from the start of the data.
    pub(crate) fn consumed_bits(&self) -> u64 {
        self.pos as u64 * 8 - u64::from(self.count)
    }

    /// Restart reading at byte `pos` (after raw bytes were taken from the stream).
    pub(crate) fn reset_at(&mut self, pos: usize) {
        self.pos = pos;
        self.buf = 0;
        self.count = 0;
        self.refill();
    }
}
