//! A write-behind file sink for image writers: positioned writes are gathered into large
//! contiguous runs and handed to a writer thread, so the caller never waits on the disk.
//!
//! When the filesystem allows it, the 4 KiB-aligned bulk of each run is written with
//! `O_DIRECT` (open(2), "O_DIRECT"; Linux since 2.4.10): the data goes from our buffer to
//! the device without being copied into the page cache first, which on a multi-gigabyte
//! image saves the kernel's copy, the later writeback and the memory pressure of gigabytes
//! of dirty pages. The unaligned head and tail of a run, and everything on filesystems
//! that refuse `O_DIRECT` (tmpfs, some FUSE mounts: `open` or the first write fails with
//! EINVAL), go through the ordinary descriptor. Linux keeps the two views coherent: a
//! direct write flushes and invalidates cached pages of its range (open(2), NOTES).
//!
//! On request the writer thread also computes the SHA-256 of the file as it goes (FIPS
//! 180-4), which is possible while runs arrive in ascending file order: the bytes between
//! runs are holes and read as zeros. A run that goes back invalidates it.
//!
//! Alignment: 4096 bytes for offsets, lengths and buffer addresses, which satisfies every
//! logical block size Linux block devices use (512 or 4096).

use sha2::Digest;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment `O_DIRECT` needs for offsets, lengths and memory (see the module notes).
const ALIGN: usize = 4096;
/// Bytes gathered before a run is handed to the writer thread.
const RUN_BYTES: usize = 4 << 20;
/// Runs queued to the writer thread besides the one it is writing: with the one being
/// filled that makes three buffers, 12 MiB in all (four when hashing). Larger runs did not
/// write faster here, and their first-touch page faults cost small images about a tenth.
const QUEUE: usize = 1;

/// How a [`FileSink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `O_DIRECT` for aligned runs when the filesystem allows it, else buffered.
    Direct,
    /// Through the page cache only: what `Direct` falls back to where `O_DIRECT` is
    /// refused, selectable so that path can be exercised anywhere.
    Buffered,
}

/// A heap buffer whose usable part starts on an [`ALIGN`] boundary.
pub(crate) struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        Self::with_len(RUN_BYTES)
    }

    /// A zeroed buffer of `len` usable bytes.
    pub(crate) fn with_len(len: usize) -> AlignedBuf {
        let mem = vec![0u8; len + ALIGN];
        // `align_offset` may report usize::MAX when it cannot tell; start at 0 then (the
        // buffer is still correct, only direct writes of it fall back to buffered).
        let start = match mem.as_ptr().align_offset(ALIGN) {
            n if n < ALIGN => n,
            _ => 0,
        };
        AlignedBuf { mem, start, len }
    }

    pub(crate) fn slice(&self, len: usize) -> &[u8] {
        &self.mem[self.start..self.start + len]
    }

    pub(crate) fn slice_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }

    /// Whether the usable part really starts on an [`ALIGN`] boundary.
    pub(crate) fn is_aligned(&self) -> bool {
        self.mem[self.start..].as_ptr().align_offset(ALIGN) == 0
    }
}

struct Run {
    at: u64,
    len: usize,
    buf: AlignedBuf,
}

/// Write-behind sink over one file. Writes are applied in the order given; call
/// [`FileSink::flush`] before touching the file by other means, and
/// [`FileSink::finish`] at the end to learn of any error.
pub struct FileSink {
    file: File,
    to_writer: Option<SyncSender<Run>>,
    /// Buffers the writer thread hands back, and the error that stopped it.
    from_writer: Receiver<io::Result<AlignedBuf>>,
    worker: Option<JoinHandle<Option<RunDigest>>>,
    /// The writer thread's digest once it has stopped.
    digest: Option<RunDigest>,
    /// The run being gathered.
    cur: Option<Run>,
    /// Runs handed to the writer thread and not yet returned.
    in_flight: usize,
    /// Whether a hashing thread holds buffers too.
    hashing: bool,
    /// Buffers allocated so far (at most [`QUEUE`] + 2, + 1 when hashing).
    made: usize,
    spare: Vec<AlignedBuf>,
}

impl FileSink {
    /// A sink over `file` (opened for writing), writing as `mode` says.
    pub fn new(file: File, mode: Mode) -> io::Result<FileSink> {
        Self::start(file, mode, false)
    }

    /// [`FileSink::new`] for an empty file, also hashing the file as it is written (see
    /// [`FileSink::finish_digest`]).
    pub fn with_digest(file: File, mode: Mode) -> io::Result<FileSink> {
        Self::start(file, mode, true)
    }

    fn start(file: File, mode: Mode, digest: bool) -> io::Result<FileSink> {
        let hashing = digest;
        let digest = digest.then(RunDigest::default);
        let direct = match mode {
            Mode::Direct => open_direct(&file),
            Mode::Buffered => None,
        };
        let plain = file.try_clone()?;
        let (to_writer, runs) = mpsc::sync_channel::<Run>(QUEUE);
        let (back, from_writer) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("image-writer".into())
            .spawn(move || write_runs(plain, direct, runs, back, digest))?;
        Ok(FileSink {
            file,
            to_writer: Some(to_writer),
            from_writer,
            worker: Some(worker),
            digest: None,
            cur: None,
            in_flight: 0,
            hashing,
            made: 0,
            spare: Vec::new(),
        })
    }

    /// The file, for reads or metadata changes once [`FileSink::flush`] has returned.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Write `data` at file offset `at` (later, in order with every other write).
    pub fn write_at(&mut self, mut at: u64, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let joins = self
                .cur
                .as_ref()
                .is_some_and(|r| r.at + r.len as u64 == at && r.len < RUN_BYTES);
            if !joins {
                self.submit()?;
                let buf = self.take_buf()?;
                self.cur = Some(Run { at, len: 0, buf });
            }
            let Some(run) = self.cur.as_mut() else {
                return Err(io::Error::other("image writer: no run to fill"));
            };
            let n = (RUN_BYTES - run.len).min(data.len());
            run.buf.slice_mut()[run.len..run.len + n].copy_from_slice(&data[..n]);
            run.len += n;
            at += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Wait until every write so far is in the file (not necessarily on stable storage).
    pub fn flush(&mut self) -> io::Result<()> {
        self.submit()?;
        while self.in_flight > 0 {
            let b = self.recv()?;
            self.spare.push(b);
        }
        Ok(())
    }

    /// Flush and stop the writer thread; [`FileSink::file`] is then free for any use.
    pub fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        self.stop();
        Ok(())
    }

    /// [`FileSink::finish`], then the SHA-256 of the file once it is `file_len` bytes long,
    /// when every write came in ascending order (and the sink was made to hash).
    pub fn finish_digest(&mut self, file_len: u64) -> io::Result<Option<[u8; 32]>> {
        self.finish()?;
        Ok(self.digest.take().and_then(|d| d.finalize(file_len)))
    }

    fn submit(&mut self) -> io::Result<()> {
        let Some(run) = self.cur.take() else {
            return Ok(());
        };
        if run.len == 0 {
            self.spare.push(run.buf);
            return Ok(());
        }
        let tx = self
            .to_writer
            .as_ref()
            .ok_or_else(|| io::Error::other("image writer already stopped"))?;
        if tx.send(run).is_err() {
            // The thread stopped on an error: it is waiting in the return channel.
            return Err(self.recv().err().unwrap_or_else(stopped));
        }
        self.in_flight += 1;
        Ok(())
    }

    fn take_buf(&mut self) -> io::Result<AlignedBuf> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        // Queued, being written, being filled, and with a digest one being hashed.
        if self.made < QUEUE + 2 + usize::from(self.hashing) {
            self.made += 1;
            return Ok(AlignedBuf::new());
        }
        self.recv()
    }

    /// One buffer back from the writer thread (or its error).
    fn recv(&mut self) -> io::Result<AlignedBuf> {
        let r = self.from_writer.recv().map_err(|_| stopped())?;
        self.in_flight = self.in_flight.saturating_sub(1);
        r
    }

    fn stop(&mut self) {
        self.to_writer = None;
        if let Some(w) = self.worker.take() {
            self.digest = w.join().ok().flatten();
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped() -> io::Error {
    io::Error::other("image writer thread stopped unexpectedly")
}

/// `path` opened for reading with `O_DIRECT`, or None when the system refuses it.
pub(crate) fn open_direct_read(path: &std::path::Path) -> Option<File> {
    use rustix::fs::{Mode as FileMode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        FileMode::empty(),
    )
    .ok()
    .map(File::from)
}

/// Whether an I/O error is the EINVAL `O_DIRECT` gives for a request it cannot serve.
pub(crate) fn is_direct_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// A second, `O_DIRECT` descriptor for the same file, or None when the system refuses one.
fn open_direct(file: &File) -> Option<File> {
    use rustix::fs::{Mode as FileMode, OFlags};
    // A new open file description of the same file: setting O_DIRECT on a duplicate
    // descriptor would change the caller's descriptor too.
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::open(
        path.as_str(),
        OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        FileMode::empty(),
    )
    .ok()
    .map(File::from)
}

/// SHA-256 of a file written in ascending order: `upto` bytes hashed so far.
#[derive(Default)]
struct RunDigest {
    h: sha2::Sha256,
    upto: u64,
    broken: bool,
}

impl RunDigest {
    fn add(&mut self, at: u64, data: &[u8]) {
        if self.broken || at < self.upto {
            self.broken = true;
            return;
        }
        self.zeros_to(at);
        self.h.update(data);
        self.upto += data.len() as u64;
    }

    fn zeros_to(&mut self, end: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while self.upto < end {
            let n = (end - self.upto).min(ZEROS.len() as u64);
            self.h.update(&ZEROS[..n as usize]);
            self.upto += n;
        }
    }

    fn finalize(mut self, file_len: u64) -> Option<[u8; 32]> {
        if self.broken || file_len < self.upto {
            return None;
        }
        self.zeros_to(file_len);
        Some(self.h.finalize().into())
    }
}

/// The writer thread: write each run, hand its buffer back, stop at the first error.
/// With a digest to compute, buffers go on to a hashing thread once written, which hands
/// them back: the hash of one run overlaps the write of the next.
fn write_runs(
    plain: File,
    mut direct: Option<File>,
    runs: Receiver<Run>,
    back: mpsc::Sender<io::Result<AlignedBuf>>,
    digest: Option<RunDigest>,
) -> Option<RunDigest> {
    let hasher = digest.map(|mut d| {
        let (to_hash, written) = mpsc::channel::<Run>();
        let back = back.clone();
        let worker = std::thread::Builder::new()
            .name("image-hasher".into())
            .spawn(move || {
                for run in written {
                    d.add(run.at, run.buf.slice(run.len));
                    if back.send(Ok(run.buf)).is_err() {
                        return None;
                    }
                }
                Some(d)
            });
        (to_hash, worker)
    });
    let (to_hash, worker) = match hasher {
        Some((tx, Ok(w))) => (Some(tx), Some(w)),
        Some((_, Err(e))) => {
            let _ = back.send(Err(e));
            return None;
        }
        None => (None, None),
    };
    for run in runs {
        let r = write_run(&plain, &mut direct, &run);
        let sent = match (r, &to_hash) {
            (Ok(()), Some(h)) => h.send(run).is_ok(),
            (Ok(()), None) => back.send(Ok(run.buf)).is_ok(),
            (Err(e), _) => {
                let _ = back.send(Err(e));
                false
            }
        };
        if !sent {
            return None;
        }
    }
    drop(to_hash);
    worker.and_then(|w| w.join().ok().flatten())
}

fn write_run(plain: &File, direct: &mut Option<File>, run: &Run) -> io::Result<()> {
    let data = run.buf.slice(run.len);
    let Some(d) = direct.as_ref().filter(|_| run.buf.is_aligned()) else {
        return plain.write_all_at(data, run.at);
    };
    // The head up to the first aligned offset and the tail after the last one go through
    // the page cache; the middle goes direct. The head's length is a multiple of nothing,
    // so the middle starts on an aligned memory address only when `at` is aligned itself.
    let head = match (run.at % ALIGN as u64) as usize {
        0 => 0,
        r => (ALIGN - r).min(data.len()),
    };
    if head > 0 {
        plain.write_all_at(&data[..head], run.at)?;
        // The middle would start at an unaligned address: write it all buffered.
        return plain.write_all_at(&data[head..], run.at + head as u64);
    }
    let mid = data.len() / ALIGN * ALIGN;
    if mid > 0 {
        match d.write_all_at(&data[..mid], run.at) {
            Ok(()) => {}
            Err(e) if is_direct_refusal(&e) => {
                // The filesystem accepted the open but not the write: go buffered for good.
                *direct = None;
                return plain.write_all_at(data, run.at);
            }
            Err(e) => return Err(e),
        }
    }
    plain.write_all_at(&data[mid..], run.at + mid as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn check(mode: Mode, dir: &std::path::Path) {
        let p = dir.join(format!("{mode:?}.bin"));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let mut s = FileSink::new(f, mode).unwrap();
        let mut expect = vec![0u8; 40 << 20];
        let mut put = |s: &mut FileSink, at: usize, data: Vec<u8>| {
            expect[at..at + data.len()].copy_from_slice(&data);
            s.write_at(at as u64, &data).unwrap();
        };
        // Aligned and unaligned starts, runs longer than one buffer, a rewrite of bytes
        // written before, and small scattered writes.
        put(
            &mut s,
            0,
            (0..20u32 << 20).map(|i| (i % 251) as u8).collect(),
        );
        put(&mut s, 100, vec![7; 5000]);
        put(
            &mut s,
            (21 << 20) + 13,
            (0..9u32 << 20).map(|i| (i % 13) as u8).collect(),
        );
        put(&mut s, 4096 * 3, vec![9; 4096]);
        for k in 0..100 {
            put(&mut s, (35 << 20) + k * 10_000, vec![k as u8 + 1; 777]);
        }
        s.flush().unwrap();
        put(&mut s, 8192, vec![3; 10]);
        s.finish().unwrap();
        s.file().set_len(40 << 20).unwrap();
        let mut got = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut got).unwrap();
        assert!(
            got == expect,
            "{mode:?}: file differs from what was written"
        );
    }

    #[test]
    fn writes_land_in_order_in_both_modes() {
        let dir = std::env::temp_dir().join(format!("nf-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        check(Mode::Direct, &dir);
        check(Mode::Buffered, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_digest_covers_holes_and_refuses_writes_that_go_back() {
        let dir = std::env::temp_dir().join(format!("nf-sink-d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |name: &str| {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(name))
                .unwrap()
        };
        let mut s = FileSink::with_digest(open("a"), Mode::Direct).unwrap();
        s.write_at(5000, &[1u8; 3 << 20]).unwrap();
        s.write_at(20 << 20, &[2u8; 100]).unwrap();
        let got = s
            .finish_digest(30 << 20)
            .unwrap()
            .expect("ascending writes hash");
        s.file().set_len(30 << 20).unwrap();
        let want: [u8; 32] = sha2::Sha256::digest(std::fs::read(dir.join("a")).unwrap()).into();
        assert_eq!(got, want);

        let mut s = FileSink::with_digest(open("b"), Mode::Buffered).unwrap();
        s.write_at(9 << 20, &[1u8; 10]).unwrap();
        s.write_at(0, &[1u8; 10]).unwrap();
        assert_eq!(
            s.finish_digest(10 << 20).unwrap(),
            None,
            "a write went back"
        );
        let mut s = FileSink::new(open("c"), Mode::Buffered).unwrap();
        s.write_at(0, &[1u8; 10]).unwrap();
        assert_eq!(s.finish_digest(10).unwrap(), None, "not asked to hash");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_error_is_reported() {
        // A descriptor opened read-only: every write fails, and the caller hears of it.
        let p = std::env::temp_dir().join(format!("nf-sink-ro-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let mut s = FileSink::new(File::open(&p).unwrap(), Mode::Buffered).unwrap();
        let mut failed = s.write_at(0, &[1u8; 100]).is_err();
        failed |= s.flush().is_err();
        assert!(failed, "a write to a read-only descriptor must fail");
        std::fs::remove_file(&p).unwrap();
    }
}
