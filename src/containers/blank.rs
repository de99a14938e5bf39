//! `ProgramData\Microsoft\Windows\Images\blank.vhdx`: the empty scratch disk the container
//! host keeps once per store (a dynamic 20 GB VHDX with 1 MB blocks holding one empty NTFS
//! volume, per the project's domain notes, section 7), made with our VHDX, GPT and NTFS
//! writers.

use crate::core::block::MemDisk;
use crate::core::guid::Guid;
use crate::core::runs::RunImage;
use crate::formats::gpt::{self, Role, TableCopy};
use crate::formats::ntfs::{self, NtfsOptions};
use crate::formats::vhdx::{VhdxOptions, VhdxWriter};
use crate::tree::{Meta, Tree};
use std::io;

/// 20 GB as the Containers module asked for it: PowerShell's `20GB` literal is 20 × 2^30.
pub const BLANK_SIZE: u64 = 20 << 30;
/// 1 MB blocks.
pub const BLANK_BLOCK: u32 = 1 << 20;

/// blank.vhdx, built in memory (its few MiB of metadata; the empty log's 0xFF runs cost
/// nothing). GUIDs and the volume serial derive from `seed`.
pub fn blank_vhdx(seed: &[u8], time: u64) -> io::Result<RunImage> {
    let layout = gpt::plan_single_data_layout(BLANK_SIZE, 512, seed)?;
    let part = layout
        .partition(Role::Windows)
        .expect("the single layout has a data partition");
    let mut opts = VhdxOptions::new(BLANK_SIZE, seed);
    opts.block_size = BLANK_BLOCK;
    let mut out = VhdxWriter::in_memory(&opts)?;
    let table: MemDisk = gpt::build_gpt(&layout)?;
    let first = part.offset();
    gpt::write_table(&layout, &table, TableCopy::Primary, &mut out)?;
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
    ntfs::write_volume(&tree, &nopts, &mut out, first)?;
    gpt::write_table(&layout, &table, TableCopy::Backup, &mut out)?;
    out.into_image()
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
        let bytes = |img: &RunImage| {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut img.reader(), &mut v).unwrap();
            v
        };
        let first = blank_vhdx(b"seed", 133_000_000_000_000_000).unwrap();
        let second = blank_vhdx(b"seed", 133_000_000_000_000_000).unwrap();
        assert!(bytes(&first) == bytes(&second));
        // Only the metadata is held: the log's 0xFF is kept as runs.
        assert!(
            first.stored_bytes() < 8 << 20,
            "{} bytes held",
            first.stored_bytes()
        );
        std::fs::write(&a, bytes(&first)).unwrap();
        let r = VhdxReader::open(std::fs::File::open(&a).unwrap()).unwrap();
        assert_eq!(r.info().virtual_size, BLANK_SIZE);
        assert_eq!(r.info().block_size, BLANK_BLOCK);
        let parts = gpt::read_partitions(&r).unwrap().unwrap().2;
        assert_eq!(parts.len(), 1);
        let mut boot = [0u8; 512];
        r.read_at(parts[0].offset, &mut boot).unwrap();
        assert_eq!(&boot[3..11], b"NTFS    ");
    }
}
