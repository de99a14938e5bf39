//! File contents as references: bytes in memory, a host file, or a blob in some container
//! (a WIM, a CAB) that a [`ContentSource`] opens on demand.
//!
//! The NTFS writer pulls contents in layout order and may open many of them ahead of time
//! on worker threads ([`Prefetcher`]), so sources must be `Send + Sync` and cheap to open
//! concurrently.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Something that can produce the bytes of many blobs, named by an id.
pub trait ContentSource: Send + Sync {
    /// A reader over blob `id`'s bytes (already decompressed).
    fn open(&self, id: u64) -> io::Result<Box<dyn Read + Send>>;

    /// All of blob `id`'s bytes, expected to be `len` long (the caller checks). Sources
    /// that can produce the bytes without a reader's copy override this.
    fn read_all(&self, id: u64, len: u64) -> io::Result<Vec<u8>> {
        read_to_vec(self.open(id)?, len)
    }
}

/// Everything `r` gives, in a buffer sized for the `len` bytes it should give, reading one
/// byte past them at most (so a longer source shows as too long without being read whole).
pub fn read_to_vec(r: impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    r.take(len.saturating_add(1)).read_to_end(&mut out)?;
    Ok(out)
}

/// Where a stream's bytes come from.
#[derive(Clone, Default)]
pub enum Content {
    #[default]
    Empty,
    Bytes(Arc<[u8]>),
    /// A host file and the length it must have when read.
    HostFile(PathBuf, u64),
    Source {
        source: Arc<dyn ContentSource>,
        id: u64,
        len: u64,
    },
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Empty => write!(f, "Empty"),
            Content::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Content::HostFile(p, len) => write!(f, "HostFile({}, {len})", p.display()),
            Content::Source { id, len, .. } => write!(f, "Source(id {id}, {len} bytes)"),
        }
    }
}

impl Content {
    pub fn bytes(b: impl Into<Vec<u8>>) -> Content {
        let v: Vec<u8> = b.into();
        if v.is_empty() {
            Content::Empty
        } else {
            Content::Bytes(v.into())
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Empty => 0,
            Content::Bytes(b) => b.len() as u64,
            Content::HostFile(_, len) => *len,
            Content::Source { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader over the bytes. It may yield more or fewer bytes than `len()` if the
    /// source changed; callers check.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Content::Empty => Ok(Box::new(io::empty())),
            Content::Bytes(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
            Content::HostFile(p, _) => Ok(Box::new(File::open(p).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
            })?)),
            Content::Source { source, id, .. } => source.open(*id),
        }
    }

    /// Read exactly `len()` bytes into a new buffer.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = self.len();
        let out = match self {
            Content::Source { source, id, .. } => source.read_all(*id, len)?,
            _ => read_to_vec(self.open()?, len)?,
        };
        if out.len() as u64 != len {
            return Err(length_mismatch(self, out.len() as u64));
        }
        Ok(out)
    }
}

/// The error for a source whose bytes do not match its declared length.
pub fn length_mismatch(c: &Content, actual: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "content {c:?} yielded {actual} bytes but declared {}; the source changed after the tree was built",
            c.len()
        ),
    )
}

/// Most items fetched ahead and not yet consumed: each may hold an open file or a
/// decompressor, so this keeps their number well under common file-descriptor limits.
pub const MAX_IN_FLIGHT: u64 = 256;

/// A content fetched ahead of time: the whole bytes when small, else an opened reader.
pub enum Fetched {
    Buffered(Vec<u8>),
    Reader(Box<dyn Read + Send>),
}

/// Reads the contents of a fixed sequence of [`Content`]s ahead of the consumer on worker
/// threads, handing them back strictly in order. Memory stays bounded: at most `budget`
/// bytes of buffered contents are in flight; contents larger than `max_buffered` are only
/// opened ahead (their reader is returned) and streamed by the consumer; and at most
/// [`MAX_IN_FLIGHT`] items are fetched but not yet consumed, which bounds open files.
pub struct Prefetcher {
    rx: mpsc::Receiver<(usize, io::Result<Fetched>)>,
    pending: BTreeMap<usize, io::Result<Fetched>>,
    next: usize,
    /// (buffered bytes, items) reserved by workers and not yet released by the consumer.
    budget: Arc<(Mutex<(u64, u64)>, Condvar)>,
    sizes: Vec<u64>,
    workers: Vec<thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Prefetcher {
    /// Start `threads` workers over `items` (in consumption order).
    pub fn new(items: Vec<Content>, threads: usize, budget: u64, max_buffered: u64) -> Prefetcher {
        let sizes: Vec<u64> = items
            .iter()
            .map(|c| if c.len() <= max_buffered { c.len() } else { 0 })
            .collect();
        let (tx, rx) = mpsc::channel();
        let queue = Arc::new(Mutex::new(items.into_iter().enumerate()));
        let budget_state = Arc::new((Mutex::new((0u64, 0u64)), Condvar::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let queue = queue.clone();
            let budget_state = budget_state.clone();
            let stop = stop.clone();
            workers.push(thread::spawn(move || loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                // Take the next item and reserve its bytes while holding the queue lock,
                // so reservations happen in order and the consumer's next item always
                // gets served first.
                let (idx, content) = {
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    let Some((idx, content)) = q.next() else {
                        return;
                    };
                    let want = if content.len() <= max_buffered {
                        content.len()
                    } else {
                        0
                    };
                    let (lock, cv) = &*budget_state;
                    let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while (used.0 > 0 && used.0 + want > budget) || used.1 >= MAX_IN_FLIGHT {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        used = cv.wait(used).unwrap_or_else(|e| e.into_inner());
                    }
                    used.0 += want;
                    used.1 += 1;
                    (idx, content)
                };
                let res = if content.len() <= max_buffered {
                    content.read_all().map(Fetched::Buffered)
                } else {
                    content.open().map(Fetched::Reader)
                };
                if tx.send((idx, res)).is_err() {
                    return;
                }
            }));
        }
        Prefetcher {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            budget: budget_state,
            sizes,
            workers,
            stop,
        }
    }

    /// The next content in order. Call [`Prefetcher::release`] after using a buffer.
    pub fn next_item(&mut self) -> io::Result<Fetched> {
        let idx = self.next;
        loop {
            if let Some(r) = self.pending.remove(&idx) {
                self.next += 1;
                return r;
            }
            match self.rx.recv() {
                Ok((i, r)) => {
                    self.pending.insert(i, r);
                }
                Err(_) => {
                    return Err(io::Error::other("content prefetch workers stopped early"));
                }
            }
        }
    }

    /// Return the budget of the item just consumed.
    pub fn release(&self) {
        let idx = self.next.wrapping_sub(1);
        let n = self.sizes.get(idx).copied().unwrap_or(0);
        let (lock, cv) = &*self.budget;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        used.0 = used.0.saturating_sub(n);
        used.1 = used.1.saturating_sub(1);
        cv.notify_all();
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        {
            let (lock, cv) = &*self.budget;
            let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
            *used = (0, 0);
            cv.notify_all();
        }
        // Drain so no worker blocks on a full channel (the channel is unbounded, but
        // workers may still be reading); then join.
        while self.rx.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose opens take a while and that records how many run at once.
    struct Slow {
        now: std::sync::atomic::AtomicUsize,
        max: std::sync::atomic::AtomicUsize,
    }

    impl ContentSource for Slow {
        fn open(&self, id: u64) -> io::Result<Box<dyn Read + Send>> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(n, SeqCst);
            thread::sleep(std::time::Duration::from_millis(5));
            self.now.fetch_sub(1, SeqCst);
            Ok(Box::new(io::Cursor::new(vec![id as u8; 10])))
        }
    }

    #[test]
    fn prefetcher_opens_sources_in_parallel() {
        let slow = Arc::new(Slow {
            now: Default::default(),
            max: Default::default(),
        });
        let items: Vec<Content> = (0..40)
            .map(|id| Content::Source {
                source: slow.clone(),
                id,
                len: 10,
            })
            .collect();
        let mut p = Prefetcher::new(items, 4, 1 << 20, 1 << 20);
        for id in 0..40u64 {
            match p.next_item().unwrap() {
                Fetched::Buffered(b) => assert_eq!(b, vec![id as u8; 10]),
                Fetched::Reader(_) => panic!("small items are buffered"),
            }
            p.release();
        }
        assert!(
            slow.max.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "no two opens overlapped"
        );
    }

    #[test]
    fn prefetcher_bounds_items_in_flight() {
        // Every item is "large", so only readers are fetched ahead: without a bound on
        // items they would all be opened at once.
        let n = MAX_IN_FLIGHT as usize * 3;
        let items: Vec<Content> = (0..n).map(|i| Content::bytes(vec![i as u8; 16])).collect();
        let mut p = Prefetcher::new(items, 4, 1 << 20, 8);
        for i in 0..n {
            let Fetched::Reader(mut r) = p.next_item().unwrap() else {
                panic!("large items come as readers")
            };
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(v, vec![i as u8; 16]);
            p.release();
            let (lock, _) = &*p.budget;
            assert!(lock.lock().unwrap().1 <= MAX_IN_FLIGHT);
        }
    }

    #[test]
    fn prefetcher_returns_items_in_order_within_budget() {
        let items: Vec<Content> = (0..200u32)
            .map(|i| Content::bytes(vec![i as u8; (i as usize % 7) * 100]))
            .collect();
        let mut p = Prefetcher::new(items.clone(), 3, 1000, 500);
        for (i, c) in items.iter().enumerate() {
            let got = match p.next_item().unwrap() {
                Fetched::Buffered(b) => b,
                Fetched::Reader(mut r) => {
                    let mut v = Vec::new();
                    r.read_to_end(&mut v).unwrap();
                    v
                }
            };
            p.release();
            assert_eq!(got, c.read_all().unwrap(), "item {i}");
        }
    }
}
