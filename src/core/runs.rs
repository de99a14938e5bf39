//! A file image held in memory as runs: bytes as written, and long runs of one repeated
//! byte kept as (byte, length). Used for files we generate and then place inside a volume
//! (the container store's blank.vhdx, whose empty NTFS log is tens of MiB of 0xFF): the
//! image costs memory for its few MiB of real data only, and is read straight from memory
//! by the volume writer instead of going through a scratch file.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

/// Writes at least this long made of one repeated byte are kept as a repeat.
const MIN_REPEAT: usize = 4096;

/// The byte `data` repeats throughout, if it is one byte repeated.
fn repeated(data: &[u8]) -> Option<u8> {
    let v = *data.first()?;
    let pattern = [v; 256];
    data.chunks(pattern.len())
        .all(|c| c == &pattern[..c.len()])
        .then_some(v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Bytes(Vec<u8>),
    Repeat(u8, u64),
}

impl Run {
    fn len(&self) -> u64 {
        match self {
            Run::Bytes(b) => b.len() as u64,
            Run::Repeat(_, n) => *n,
        }
    }

    /// The part of this run from `from` to `to` (offsets within the run).
    fn slice(&self, from: u64, to: u64) -> Run {
        match self {
            Run::Bytes(b) => Run::Bytes(b[from as usize..to as usize].to_vec()),
            Run::Repeat(v, _) => Run::Repeat(*v, to - from),
        }
    }
}

/// A file's bytes as runs keyed by offset. Bytes never written read as zeros, up to
/// [`RunImage::len`]. Cloning is cheap (the runs are shared until written again).
#[derive(Debug, Clone, Default)]
pub struct RunImage {
    runs: Arc<BTreeMap<u64, Run>>,
    len: u64,
}

impl RunImage {
    pub fn new() -> RunImage {
        RunImage::default()
    }

    /// The file's length: past the last write, or as [`RunImage::set_len`] made it.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held in memory for written data (repeats count nothing).
    pub fn stored_bytes(&self) -> u64 {
        self.runs
            .values()
            .map(|r| match r {
                Run::Bytes(b) => b.len() as u64,
                Run::Repeat(..) => 0,
            })
            .sum()
    }

    /// Truncate or extend (with zeros) to `len` bytes.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.cut(len, u64::MAX);
        }
        self.len = len;
    }

    /// Write `data` at `at`, replacing whatever was there.
    pub fn write_at(&mut self, at: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = at + data.len() as u64;
        self.cut(at, end);
        let run = match repeated(data) {
            Some(v) if data.len() >= MIN_REPEAT => Run::Repeat(v, data.len() as u64),
            _ => Run::Bytes(data.to_vec()),
        };
        let runs = Arc::make_mut(&mut self.runs);
        // Extend the run ending exactly here when it is of the same kind.
        let merged = match runs.range_mut(..at).next_back() {
            Some((&start, prev)) if start + prev.len() == at => match (prev, &run) {
                (Run::Bytes(p), Run::Bytes(b)) => {
                    p.extend_from_slice(b);
                    true
                }
                (Run::Repeat(pv, pn), Run::Repeat(v, n)) if pv == v => {
                    *pn += n;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !merged {
            runs.insert(at, run);
        }
        self.len = self.len.max(end);
    }

    /// Remove everything in `from..to`, keeping the parts of runs outside it.
    fn cut(&mut self, from: u64, to: u64) {
        let hit: Vec<u64> = {
            let before = self
                .runs
                .range(..from)
                .next_back()
                .filter(|(&s, r)| s + r.len() > from)
                .map(|(&s, _)| s);
            before
                .into_iter()
                .chain(self.runs.range(from..to).map(|(&s, _)| s))
                .collect()
        };
        if hit.is_empty() {
            return;
        }
        let runs = Arc::make_mut(&mut self.runs);
        for start in hit {
            let run = runs.remove(&start).expect("the run was just found");
            let end = start + run.len();
            if start < from {
                runs.insert(start, run.slice(0, from - start));
            }
            if end > to {
                runs.insert(to, run.slice(to - start, end - start));
            }
        }
    }

    /// Fill `buf` from offset `at`; reading past [`RunImage::len`] is an error.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = at
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {at} past the end of a {}-byte image",
                        buf.len(),
                        self.len
                    ),
                )
            })?;
        buf.fill(0);
        let first = self.runs.range(..=at).next_back().map_or(at, |(&s, _)| s);
        for (&start, run) in self.runs.range(first..end) {
            let run_end = start + run.len();
            let (from, to) = (start.max(at), run_end.min(end));
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - at) as usize..(to - at) as usize];
            match run {
                Run::Bytes(b) => {
                    dst.copy_from_slice(&b[(from - start) as usize..(to - start) as usize])
                }
                Run::Repeat(v, _) => dst.fill(*v),
            }
        }
        Ok(())
    }

    /// A reader over the whole image.
    pub fn reader(&self) -> RunReader {
        RunReader {
            image: self.clone(),
            pos: 0,
        }
    }
}

/// Reads a [`RunImage`] from the start.
pub struct RunReader {
    image: RunImage,
    pos: u64,
}

impl Read for RunReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.image.len - self.pos) as usize;
        self.image.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl crate::tree::ContentSource for RunImage {
    fn open(&self, _id: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.reader()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image against a plain byte vector given the same writes.
    fn check(writes: &[(u64, Vec<u8>)], len: Option<u64>) {
        let mut img = RunImage::new();
        let mut plain: Vec<u8> = Vec::new();
        for (at, data) in writes {
            img.write_at(*at, data);
            let end = *at as usize + data.len();
            if plain.len() < end {
                plain.resize(end, 0);
            }
            plain[*at as usize..end].copy_from_slice(data);
        }
        if let Some(l) = len {
            img.set_len(l);
            plain.resize(l as usize, 0);
        }
        assert_eq!(img.len(), plain.len() as u64);
        let mut all = Vec::new();
        img.reader().read_to_end(&mut all).unwrap();
        assert!(all == plain);
        for (at, n) in [
            (0u64, 1usize),
            (4095, 3),
            (5000, 9000),
            (plain.len() as u64 - 1, 1),
        ] {
            let mut buf = vec![0xAA; n];
            if at as usize + n <= plain.len() {
                img.read_at(at, &mut buf).unwrap();
                assert!(
                    buf[..] == plain[at as usize..at as usize + n],
                    "read at {at}"
                );
            }
        }
        assert!(img.read_at(plain.len() as u64, &mut [0u8; 1]).is_err());
    }

    #[test]
    fn reads_back_what_was_written() {
        let ff = vec![0xFFu8; 3 * MIN_REPEAT];
        let text: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Sequential, with a gap, an overwrite across runs, a write inside a repeat.
        check(
            &[
                (0, text.clone()),
                (10_000, ff.clone()),
                (10_000 + ff.len() as u64, ff.clone()),
                (40_000, text.clone()),
                (9_000, vec![1u8; 2000]),
                (15_000, vec![5u8; 100]),
                (0, vec![0xFFu8; MIN_REPEAT]),
            ],
            None,
        );
        check(&[(100, text.clone()), (5_000, ff.clone())], Some(7_000));
        check(&[(0, text)], Some(20_000));
    }

    #[test]
    fn repeats_cost_no_memory() {
        let mut img = RunImage::new();
        img.write_at(0, &[1, 2, 3]);
        for i in 0..64u64 {
            img.write_at(3 + i * (1 << 20), &vec![0xFFu8; 1 << 20]);
        }
        assert_eq!(img.len(), 3 + (64 << 20));
        assert_eq!(img.stored_bytes(), 3);
        assert_eq!(img.runs.len(), 2);
    }
}
