//! `ProgramData\Microsoft\Windows\Images\blank.vhdx`: the empty scratch disk the container
//! host keeps once per store (a dynamic 20 GB VHDX with 1 MB blocks holding one empty NTFS
//! volume, per the project's domain notes, section 7), made with our VHDX, GPT and NTFS
//! writers.

use crate::core::block::{MemDisk, WriteAt};
use crate::core::guid::Guid;
use crate::core::sink::Mode;
use crate::formats::gpt::{self, Role, TableCopy};
use crate::formats::ntfs::{self, NtfsOptions};
use crate::formats::vhdx::{VhdxOptions, VhdxWriter};
use crate::tree::{Meta, Tree};
use std::fs::File;
use std::io;

/// 20 GB as the Containers module asked for it: PowerShell's `20GB` literal is 20 × 2^30.
pub const BLANK_SIZE: u64 = 20 << 30;
/// 1 MB blocks.
pub const BLANK_BLOCK: u32 = 1 << 20;

/// Write blank.vhdx into `file`. GUIDs and the volume serial derive from `seed`.
pub fn write_blank_vhdx(file: File, seed: &[u8], time: u64) -> io::Result<()> {
    let layout = gpt::plan_single_data_layout(BLANK_SIZE, 512, seed)?;
    let part = layout
        .partition(Role::Windows)
        .expect("the single layout has a data partition");
    let mut opts = VhdxOptions::new(BLANK_SIZE, seed);
    opts.block_size = BLANK_BLOCK;
    // Written into a scratch file the build reads back at once: through the page cache
    // and without a sync.
    let w = VhdxWriter::create_with(file, &opts, Mode::Buffered, false)?.scratch();
    let mut out: Box<dyn WriteAt> = Box::new(w);
    let table: MemDisk = gpt::build_gpt(&layout)?;
    let first = part.offset();
    gpt::write_table(&layout, &table, TableCopy::Primary, out.as_mut())?;
    let tree = Tree::new(Meta::at(time));
    let serial = Guid::derive_u64(seed, "ntfs:serial");
    let nopts = NtfsOptions {
        size: part.size(),
        sector_size: 512,
        hidden_sectors: part.first_lba,
        serial,
        time,
        ..NtfsOptions::default()
    };
    ntfs::write_volume(&tree, &nopts, out.as_mut(), first)?;
    gpt::write_table(&layout, &table, TableCopy::Backup, out.as_mut())?;
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::block::ReadAt;
    use crate::formats::vhdx::VhdxReader;

    #[test]
    fn blank_vhdx_is_deterministic_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.vhdx");
        let b = dir.path().join("b.vhdx");
        write_blank_vhdx(File::create(&a).unwrap(), b"seed", 133_000_000_000_000_000).unwrap();
        write_blank_vhdx(File::create(&b).unwrap(), b"seed", 133_000_000_000_000_000).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let r = VhdxReader::open(File::open(&a).unwrap()).unwrap();
        assert_eq!(r.info().virtual_size, BLANK_SIZE);
        assert_eq!(r.info().block_size, BLANK_BLOCK);
        let parts = gpt::read_partitions(&r).unwrap().unwrap().2;
        assert_eq!(parts.len(), 1);
        let mut boot = [0u8; 512];
        r.read_at(parts[0].offset, &mut boot).unwrap();
        assert_eq!(&boot[3..11], b"NTFS    ");
    }
}
