//! The single writing pass: every planned area in LCN order, then the backup boot sector.

use std::io::Read;

use super::index::INDEX_BLOCK_SIZE;
use super::meta;
use super::record;
use super::{Error, NtfsReport};
use crate::core::WriteAt;
use crate::tree::content::{length_mismatch, Fetched, Prefetcher};
use crate::tree::{Content, NodeId, Stream, Tree};

use super::plan::*;

impl Plan {
    pub(super) fn encode(&self, num: u64) -> Vec<u8> {
        match self.records.get(num as usize).and_then(Option::as_ref) {
            Some(r) => record::encode_record(&r.header, &r.attrs, self.rs),
            None => vec![0u8; self.rs],
        }
    }

    pub(super) fn bitmap(&self) -> Vec<u8> {
        let len = self.nr_clusters.div_ceil(64) * 8;
        let mut b = vec![0u8; len as usize];
        let mut set = |i: u64| b[(i / 8) as usize] |= 1 << (i % 8);
        for i in 0..self.used_clusters {
            set(i);
        }
        // Bits past the last cluster are set, covering the backup boot sector (facts §1).
        for i in self.nr_clusters..len * 8 {
            set(i);
        }
        b
    }

    pub(super) fn mft_bitmap(&self) -> Vec<u8> {
        let n = self.mft_records();
        let mut b = vec![0u8; (n.div_ceil(64) * 8) as usize];
        for (i, r) in self.records.iter().enumerate() {
            if r.is_some() {
                b[i / 8] |= 1 << (i % 8);
            }
        }
        b
    }

    /// The single writing pass.
    pub fn write(
        &mut self,
        tree: &Tree,
        out: &mut dyn WriteAt,
        base: u64,
    ) -> Result<NtfsReport, Error> {
        let cs = self.cs;
        let boot = meta::boot_sector(&meta::BootParams {
            sector_size: self.sector as u32,
            cluster_size: cs as u32,
            hidden_sectors: self.opts.hidden_sectors,
            total_sectors: self.size / self.sector - 1,
            mft_lcn: self.mft_lcn,
            mftmirr_lcn: self.mftmirr_lcn,
            record_size: self.rs as u32,
            index_block_size: INDEX_BLOCK_SIZE as u32,
            serial: self.opts.serial,
        });
        let need = base.checked_add(self.size).filter(|&e| e <= out.size());
        if need.is_none() {
            return Err(Error::Options(format!(
                "the target is {} bytes but the volume needs {} bytes at offset {base:#x}",
                out.size(),
                self.size
            )));
        }
        let contents: Vec<Content> = self
            .jobs
            .iter()
            .filter_map(|j| match self.fills.get(j.fill) {
                Some(Fill::Stream { node, name, .. }) => {
                    Some(stream_of(tree, *node, name.as_deref()).content.clone())
                }
                _ => None,
            })
            .collect();
        let mut pf = Prefetcher::new(
            contents,
            self.opts.prefetch_threads,
            self.opts.prefetch_bytes,
            8 << 20,
        );
        let opts_progress = self.opts.progress.clone();
        let w = |out: &mut dyn WriteAt, off: u64, data: &[u8]| -> Result<(), Error> {
            out.write_at(off, data).map_err(|e| Error::Write {
                offset: off,
                source: e,
            })
        };
        // One copy buffer for all streams, and zeros to pad a last cluster.
        let mut buf = vec![0u8; 1 << 20];
        let zeros = vec![0u8; cs as usize];
        for j in &self.jobs {
            let off = base + j.lcn * cs;
            let len = (j.clusters * cs) as usize;
            if j.fill == usize::MAX {
                let mut b = vec![0u8; len];
                b[..512].copy_from_slice(&boot);
                w(out, off, &b)?;
                continue;
            }
            match &self.fills[j.fill] {
                Fill::MftMirr => {
                    let n = (len / self.rs) as u64;
                    let mut b = Vec::with_capacity(len);
                    for i in 0..n {
                        b.extend_from_slice(&self.encode(i));
                    }
                    b.resize(len, 0);
                    w(out, off, &b)?;
                }
                Fill::Mft => {
                    let n = (len / self.rs) as u64;
                    let per = ((1usize << 20) / self.rs) as u64;
                    let mut i = 0;
                    while i < n {
                        let end = (i + per).min(n);
                        let mut b = Vec::with_capacity(((end - i) as usize) * self.rs);
                        for k in i..end {
                            b.extend_from_slice(&self.encode(k));
                        }
                        w(out, off + i * self.rs as u64, &b)?;
                        i = end;
                    }
                }
                Fill::MftBitmap => {
                    let mut b = self.mft_bitmap();
                    b.resize(len, 0);
                    w(out, off, &b)?;
                }
                Fill::Bytes(v) => {
                    let mut b = v.clone();
                    b.resize(len, 0);
                    w(out, off, &b)?;
                }
                Fill::Repeat(x) => {
                    let chunk = vec![*x; (1usize << 20).min(len)];
                    let mut done = 0;
                    while done < len {
                        let n = chunk.len().min(len - done);
                        w(out, off + done as u64, &chunk[..n])?;
                        done += n;
                    }
                }
                Fill::Bitmap => {
                    let mut b = self.bitmap();
                    b.resize(len, 0);
                    w(out, off, &b)?;
                }
                Fill::Stream { node, name, runs } => {
                    let s = stream_of(tree, *node, name.as_deref());
                    // The path is only built when something goes wrong.
                    let cerr = |e: std::io::Error| Error::Content {
                        path: match name {
                            Some(n) => format!("{}:{n}", tree.path_of(*node)),
                            None => tree.path_of(*node),
                        },
                        source: e,
                    };
                    let size = s.content.len();
                    match pf.next_item().map_err(cerr)? {
                        Fetched::Buffered(mut b) => {
                            // Already checked to hold exactly `size` bytes.
                            if let [(0, n)] = runs[..] {
                                b.resize((n * cs) as usize, 0);
                                w(out, off, &b)?;
                            } else {
                                let mut disk = off;
                                for &(vcn, n) in runs {
                                    let start = (vcn * cs) as usize;
                                    let end = (((vcn + n) * cs).min(size)) as usize;
                                    w(out, disk, &b[start..end])?;
                                    let pad = (n * cs) as usize - (end - start);
                                    if pad > 0 {
                                        w(out, disk + (end - start) as u64, &zeros[..pad])?;
                                    }
                                    disk += n * cs;
                                }
                            }
                        }
                        Fetched::Reader(reader) => {
                            copy_runs(
                                reader,
                                size,
                                runs,
                                cs,
                                off,
                                &mut buf,
                                &zeros,
                                &mut |o, d| w(out, o, d),
                            )
                            .map_err(|e| match e {
                                CopyError::Read(e) => cerr(e),
                                CopyError::Short(pos) => cerr(length_mismatch(&s.content, pos)),
                                CopyError::Write(e) => e,
                            })?;
                        }
                    }
                    pf.release();
                    opts_progress.report(size);
                }
            }
        }
        // Backup boot sector in the volume's last sector.
        w(out, base + self.size - self.sector, &{
            let mut b = vec![0u8; self.sector as usize];
            b[..512].copy_from_slice(&boot);
            b
        })?;
        Ok(self.report())
    }
}

/// Where copied bytes go: (disk offset, bytes).
type Sink<'a> = &'a mut dyn FnMut(u64, &[u8]) -> Result<(), Error>;

enum CopyError {
    Read(std::io::Error),
    /// The reader ended after this many bytes.
    Short(u64),
    Write(Error),
}

/// Stream a content of `size` bytes from `reader`, writing its data runs (VCN, clusters)
/// one after another from disk offset `off`, skipping holes, padding each run to whole
/// clusters, and checking that the content ends exactly at `size`.
#[allow(clippy::too_many_arguments)]
fn copy_runs(
    mut reader: Box<dyn Read + Send>,
    size: u64,
    runs: &[(u64, u64)],
    cs: u64,
    off: u64,
    buf: &mut [u8],
    zeros: &[u8],
    write: Sink<'_>,
) -> Result<(), CopyError> {
    let mut pos = 0u64;
    let mut read_to = |reader: &mut Box<dyn Read + Send>,
                       pos: &mut u64,
                       until: u64,
                       mut sink: Option<(&mut u64, Sink<'_>)>|
     -> Result<(), CopyError> {
        while *pos < until {
            let k = ((until - *pos) as usize).min(buf.len());
            reader
                .read_exact(&mut buf[..k])
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => CopyError::Short(*pos),
                    _ => CopyError::Read(e),
                })?;
            if let Some((disk, w)) = sink.as_mut() {
                w(**disk, &buf[..k]).map_err(CopyError::Write)?;
                **disk += k as u64;
            }
            *pos += k as u64;
        }
        Ok(())
    };
    let mut disk = off;
    for &(vcn, n) in runs {
        let start = vcn * cs;
        let end = ((vcn + n) * cs).min(size);
        read_to(&mut reader, &mut pos, start, None)?;
        read_to(&mut reader, &mut pos, end, Some((&mut disk, write)))?;
        let pad = (vcn + n) * cs - end;
        if pad > 0 {
            write(disk, &zeros[..pad as usize]).map_err(CopyError::Write)?;
            disk += pad;
        }
    }
    read_to(&mut reader, &mut pos, size, None)?;
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(CopyError::Short(size + 1)),
        Err(e) => Err(CopyError::Read(e)),
    }
}

fn stream_of<'a>(tree: &'a Tree, node: NodeId, name: Option<&str>) -> &'a Stream {
    let n = tree.node(node);
    match name {
        None => &n.data,
        Some(k) => &n.streams[k],
    }
}
