//! XPRESS as used in WIM: the LZ77+Huffman format of [MS-XCA] section 2.1 (compression
//! stream format) and 2.2.4 (decompression), one 256-byte table of 4-bit codeword lengths
//! per chunk (a WIM chunk never exceeds the 65536-byte block the table covers), symbols
//! 0–255 literals and 256–511 matches. Facts: docs/facts-wim.md 8.1.
//!
//! The bit reader follows [MS-XCA] 2.2.4 exactly: a 32-bit window refilled one 16-bit word
//! at a time whenever fewer than 16 bits remain, and extra length bytes taken from the input
//! position just after the words loaded so far.

use super::huffman::HuffTable;
use super::{lz_copy, CodecError, Decompress};

const CODEC: &str = "XPRESS";
/// 512 symbols, 4 bits each ([MS-XCA] 2.1.4).
const TABLE_BYTES: usize = 256;
const NUM_SYMBOLS: usize = 512;
const MAX_LEN: u32 = 15;
const TABLE_BITS: u32 = 11;
/// Minimum match length ([MS-XCA] 2.2.4: "MatchLength + 3").
const MIN_MATCH: usize = 3;

/// XPRESS chunk decoder.
pub struct XpressDecoder {
    lens: [u8; NUM_SYMBOLS],
    table: HuffTable,
}

impl Default for XpressDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl XpressDecoder {
    pub fn new() -> Self {
        XpressDecoder {
            lens: [0; NUM_SYMBOLS],
            table: HuffTable::new(TABLE_BITS, MAX_LEN),
        }
    }
}

#[inline(always)]
fn word(input: &[u8], pos: usize) -> u32 {
    match input.get(pos..pos + 2) {
        Some(b) => u32::from(u16::from_le_bytes([b[0], b[1]])),
        None => 0,
    }
}

impl Decompress for XpressDecoder {
    fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        if out.is_empty() {
            return Ok(());
        }
        if input.len() < TABLE_BYTES {
            return Err(CodecError::TooShort {
                codec: CODEC,
                len: input.len(),
                min: TABLE_BYTES,
            });
        }
        for (i, &b) in input[..TABLE_BYTES].iter().enumerate() {
            self.lens[2 * i] = b & 15;
            self.lens[2 * i + 1] = b >> 4;
        }
        self.table
            .build(&self.lens)
            .map_err(|e| CodecError::BadHuffmanCode {
                codec: CODEC,
                what: e.describe(),
            })?;

        let mut pos = TABLE_BYTES;
        let mut next_bits: u32 = (word(input, pos) << 16) | word(input, pos + 2);
        pos += 4;
        let mut extra: i32 = 16;
        let size = out.len();
        let mut op = 0usize;
        while op < size {
            let (sym, len) = self
                .table
                .lookup(next_bits >> (32 - MAX_LEN))
                .ok_or(CodecError::BadCodeword { codec: CODEC })?;
            next_bits <<= len;
            extra -= len as i32;
            if extra < 0 {
                next_bits |= word(input, pos) << (-extra) as u32;
                pos += 2;
                extra += 16;
            }
            if sym < 256 {
                out[op] = sym as u8;
                op += 1;
                continue;
            }
            let m = sym - 256;
            let mut length = (m & 15) as usize;
            let log2 = m >> 4;
            if length == 15 {
                let b = *input.get(pos).ok_or_else(|| truncated(pos))?;
                pos += 1;
                if b == 255 {
                    let mut l = word(input, pos) as usize;
                    if pos + 2 > input.len() {
                        return Err(truncated(pos));
                    }
                    pos += 2;
                    if l == 0 {
                        let b4 = input.get(pos..pos + 4).ok_or_else(|| truncated(pos))?;
                        l = u32::from_le_bytes([b4[0], b4[1], b4[2], b4[3]]) as usize;
                        pos += 4;
                    }
                    if l < 15 {
                        return Err(CodecError::Invalid {
                            codec: CODEC,
                            what: format!("escaped match length {l} is below 15"),
                        });
                    }
                    length = l - 15;
                } else {
                    length = b as usize;
                }
                length += 15;
            }
            length += MIN_MATCH;
            let mut offset = 1usize << log2;
            if log2 != 0 {
                offset |= (next_bits >> (32 - log2)) as usize;
                next_bits <<= log2;
                extra -= log2 as i32;
                if extra < 0 {
                    next_bits |= word(input, pos) << (-extra) as u32;
                    pos += 2;
                    extra += 16;
                }
            }
            if offset > op {
                return Err(CodecError::BadOffset {
                    codec: CODEC,
                    offset: offset as u64,
                    pos: op,
                });
            }
            if length > size - op {
                return Err(CodecError::Overrun {
                    codec: CODEC,
                    what: "match",
                    len: length as u64,
                    pos: op,
                    size,
                });
            }
            lz_copy(out, op, offset, length);
            op += length;
        }
        Ok(())
    }
}

fn truncated(pos: usize) -> CodecError {
    CodecError::Invalid {
        codec: CODEC,
        what: format!("match length bytes at input offset {pos:#x} lie past the end"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built stream: literals 'a','b' (8-bit codes would need a table; here all
    /// 512 symbols get length 9 so code(sym) = sym), then match sym 256+16*1+0 (len 3, offset 2).
    #[test]
    fn literals_and_overlapping_match() {
        let mut input = vec![0x99u8; TABLE_BYTES];
        // Bitstream of 9-bit codes: 'a'(97), 'b'(98), match 272 with 1 offset bit = 0
        // (offset 2, length 3), then end symbol 256.
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        push(97, 9);
        push(98, 9);
        push(272, 9);
        push(0, 1);
        push(256, 9);
        while !bits.len().is_multiple_of(16) || bits.len() < 64 {
            bits.push(0);
        }
        for w in bits.chunks(16) {
            let v = w.iter().fold(0u16, |a, &b| (a << 1) | u16::from(b));
            input.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0u8; 5];
        XpressDecoder::new().decompress(&input, &mut out).unwrap();
        assert_eq!(&out, b"ababa");
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut d = XpressDecoder::new();
        let mut out = [0u8; 100];
        assert!(d.decompress(&[0u8; 10], &mut out).is_err());
        // All lengths 15 is over-subscribed.
        assert!(d.decompress(&[0xFFu8; 300], &mut out).is_err());
    }
}
