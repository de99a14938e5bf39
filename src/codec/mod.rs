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
