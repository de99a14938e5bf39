//! VHD and raw images checked against qemu-img (qemu-utils) and vhdiinfo (libvhdi-utils).
//!
//! qemu's vpc driver has no consistency check (`qemu-img check` answers "This image format
//! does not support checks"), so the dynamic layout is checked by two independent readers
//! instead: qemu-img (info, convert) and libvhdi's vhdiinfo, plus our own file-size
//! arithmetic for block allocation.

mod common;

#[path = "hostile/vhd/cases.rs"]
mod hostile;

use common::{read, run, run_ok, tempdir, tool};
use nanoforge::core::block::{copy_sparse, ReadAt, WriteAt};
use nanoforge::core::Guid;
use nanoforge::formats::raw::{RawReader, RawWriter};
use nanoforge::formats::vhd::{DiskType, SizeSource, VhdOptions, VhdReader, VhdWriter};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// 37 MiB + 3 sectors: not a multiple of the 2 MiB block, nor of any CHS geometry.
const SIZE: u64 = 37 * MIB + 3 * 512;

/// Scattered writes in no particular order, including the very last sector, a write across
/// a block boundary, an all-zero write to an untouched block, and a zero overwrite.
fn writes() -> Vec<(u64, Vec<u8>)> {
    let pattern = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    };
    vec![
        (SIZE - 512, pattern(1, 512)),
        (20 * MIB + 12345, pattern(2, 70_000)),
        (0, pattern(3, 4096)),
        (4 * MIB - 1000, pattern(4, 5000)),
        (30 * MIB, vec![0u8; 2 * MIB as usize]),
        (20 * MIB + 20_000, vec![0u8; 1000]),
        (2 * MIB + 512, pattern(5, 512)),
    ]
}

/// The raw disk those writes mean.
fn expected() -> Vec<u8> {
    let mut v = vec![0u8; SIZE as usize];
    for (off, data) in writes() {
        v[off as usize..off as usize + data.len()].copy_from_slice(&data);
    }
    v
}

fn opts(dynamic: bool) -> VhdOptions {
    let mut o = VhdOptions::new(SIZE, Guid::derive(b"vhd test", "unique-id"), 0x2a5b_1c00);
    o.dynamic = dynamic;
    o
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .unwrap()
}

fn write_vhd(p: &Path, o: &VhdOptions) {
    let mut w = Box::new(VhdWriter::create(open_rw(p), o).unwrap());
    for (off, data) in writes() {
        w.write_at(off, &data).unwrap();
    }
    w.finish().unwrap();
}

fn qemu_info(p: &Path) -> serde_json::Value {
    let out = run_ok(
        tool("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(p),
    );
    serde_json::from_str(&out).unwrap()
}

fn qemu_to_raw(p: &Path, raw: &Path) -> Vec<u8> {
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(p)
            .arg(raw),
    );
    read(raw)
}

fn vhdiinfo(p: &Path) -> String {
    run_ok(tool("vhdiinfo").arg(p))
}

fn read_all(r: &dyn ReadAt) -> Vec<u8> {
    let mut v = vec![0u8; r.size() as usize];
    r.read_at(0, &mut v).unwrap();
    v
}

fn check_ours(dynamic: bool) {
    let dir = tempdir();
    let p = dir.path().join("ours.vhd");
    let o = opts(dynamic);
    write_vhd(&p, &o);

    let info = qemu_info(&p);
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE), "{info}");
    assert_eq!(info["format"], "vpc");
    if dynamic {
        assert_eq!(info["cluster-size"].as_u64(), Some(2 * MIB), "{info}");
    }
    let raw = qemu_to_raw(&p, &dir.path().join("out.raw"));
    assert!(
        raw == expected(),
        "qemu-img's raw conversion differs from what we wrote"
    );

    let v = vhdiinfo(&p);
    assert!(v.contains(&format!("({SIZE} bytes)")), "{v}");
    assert!(v.contains(&o.unique_id.to_string()), "{v}");
    assert!(v.contains(if dynamic { "Dynamic" } else { "Fixed" }), "{v}");

    let len = std::fs::metadata(&p).unwrap().len();
    if dynamic {
        // Blocks holding non-zero data: 0, 1 and 2 (the write across 4 MiB), 10 and 18
        // (the last). Metadata: footer copy, header, BAT of 19 entries in one sector, up to
        // 0x800; each block is then a 512-byte bitmap ending on a 4 KiB boundary and 2 MiB
        // of data; then the footer.
        assert_eq!(len, 4096 + 5 * 2 * MIB + 4 * 4096 + 512);
        let bytes = read(&p);
        let bat: Vec<u32> = bytes[0x600..0x600 + 19 * 4]
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        let allocated: Vec<usize> = (0..19).filter(|&i| bat[i] != u32::MAX).collect();
        assert_eq!(allocated, vec![0, 1, 2, 10, 18]);
        for i in allocated {
            assert_eq!(
                (u64::from(bat[i]) * 512 + 512) % 4096,
                0,
                "block {i} data not 4 KiB-aligned"
            );
        }
        let head = read(&p);
        assert_eq!(
            head[..512],
            head[head.len() - 512..],
            "footer copy differs from the footer"
        );
    } else {
        assert_eq!(len, SIZE + 512);
        // Sparse: only the written sectors are stored (filesystem blocks of up to 64 KiB).
        let stored = std::fs::metadata(&p).unwrap().blocks() * 512;
        assert!(stored < 2 * MIB, "fixed VHD stores {stored} bytes");
    }

    // Our reader agrees with qemu-img.
    let r = VhdReader::open(File::open(&p).unwrap()).unwrap();
    assert_eq!(r.info().virtual_size, SIZE);
    assert_eq!(r.info().creator_app, *b"win ");
    assert!(read_all(&r) == raw);
    if dynamic {
        // qemu-img's allocation map (from its reading of our BAT) equals our data ranges.
        let map = run_ok(
            tool("qemu-img")
                .args(["map", "-f", "vpc", "--output=json"])
                .arg(&p),
        );
        let map: serde_json::Value = serde_json::from_str(&map).unwrap();
        let mut qemu_ranges: Vec<std::ops::Range<u64>> = Vec::new();
        for e in map.as_array().unwrap().iter().filter(|e| e["data"] == true) {
            let start = e["start"].as_u64().unwrap();
            let end = start + e["length"].as_u64().unwrap();
            match qemu_ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => qemu_ranges.push(start..end),
            }
        }
        let ours = r.data_ranges().unwrap();
        assert_eq!(qemu_ranges, ours, "qemu-img map: {map}");
        assert_eq!(ours, vec![0..6 * MIB, 20 * MIB..22 * MIB, 36 * MIB..SIZE]);
    }
}

#[test]
fn dynamic_vhd_is_read_by_qemu_and_libvhdi_as_written() {
    check_ours(true);
}

#[test]
fn fixed_vhd_is_read_by_qemu_and_libvhdi_as_written() {
    check_ours(false);
}

#[test]
fn identical_writes_give_identical_files() {
    let dir = tempdir();
    for dynamic in [true, false] {
        let a = dir.path().join("a.vhd");
        let b = dir.path().join("b.vhd");
        write_vhd(&a, &opts(dynamic));
        write_vhd(&b, &opts(dynamic));
        assert!(read(&a) == read(&b), "dynamic={dynamic}: two runs differ");
    }
}

/// qemu-img's own images (made by converting a raw file with scattered data) read by us
/// equal qemu-img's raw conversion of them; copying through RawWriter stays sparse.
#[test]
fn we_read_qemu_img_vhds() {
    let dir = tempdir();
    let src = dir.path().join("src.raw");
    let size = 9 * MIB + 7 * 512;
    {
        let mut w = Box::new(RawWriter::create(open_rw(&src), size).unwrap());
        for (off, data) in [
            (0u64, vec![0x11u8; 1000]),
            (5 * MIB + 3, vec![0x22; 9000]),
            (size - 512, vec![0x33; 512]),
        ] {
            w.write_at(off, &data).unwrap();
        }
        w.finish().unwrap();
    }
    let variants: [(&str, &str, DiskType, SizeSource); 4] = [
        (
            "dynamic.vhd",
            "subformat=dynamic",
            DiskType::Dynamic,
            SizeSource::Geometry,
        ),
        (
            "fixed.vhd",
            "subformat=fixed",
            DiskType::Fixed,
            SizeSource::Geometry,
        ),
        (
            "dynamic-force.vhd",
            "subformat=dynamic,force_size=on",
            DiskType::Dynamic,
            SizeSource::CurrentSize,
        ),
        (
            "fixed-force.vhd",
            "subformat=fixed,force_size=on",
            DiskType::Fixed,
            SizeSource::CurrentSize,
        ),
    ];
    for (name, o, disk_type, source) in variants {
        let vhd = dir.path().join(name);
        run_ok(
            tool("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vpc", "-o", o])
                .arg(&src)
                .arg(&vhd),
        );
        let info = qemu_info(&vhd);
        let qemu_raw = qemu_to_raw(&vhd, &dir.path().join("q.raw"));
        let r =
            VhdReader::open(File::open(&vhd).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = r.info();
        assert_eq!(
            Some(ours.virtual_size),
            info["virtual-size"].as_u64(),
            "{name}"
        );
        assert_eq!(ours.disk_type, disk_type, "{name}");
        assert_eq!(ours.size_source, source, "{name}");
        assert!(
            read_all(&r) == qemu_raw,
            "{name}: our reading differs from qemu-img's"
        );
        let ranges = r.data_ranges().unwrap();
        for off in [0, 5 * MIB + 3, size - 1] {
            assert!(
                ranges.iter().any(|x| x.contains(&off)),
                "{name}: {off:#x} not in {ranges:?}"
            );
        }

        // Copy to a sparse raw file and compare.
        let copy = dir.path().join("copy.raw");
        let mut w = Box::new(RawWriter::create(open_rw(&copy), ours.virtual_size).unwrap());
        // 64 KiB chunks: each chunk with data is stored whole.
        copy_sparse(&r, w.as_mut(), 0, 64 << 10, |_| {}).unwrap();
        w.finish().unwrap();
        assert!(read(&copy) == qemu_raw, "{name}: sparse copy differs");
        let stored = std::fs::metadata(&copy).unwrap().blocks() * 512;
        assert!(stored <= 512 << 10, "{name}: copy stores {stored} bytes");
    }
}

#[test]
fn raw_writer_is_sparse_and_reader_finds_the_data() {
    let dir = tempdir();
    let p = dir.path().join("disk.raw");
    let size = 256 * MIB;
    let extents = [
        (3 * MIB, 64 * 1024usize),
        (100 * MIB + 4096, 8192),
        (size - 4096, 4096),
    ];
    let mut w = Box::new(RawWriter::create(open_rw(&p), size).unwrap());
    for &(off, len) in extents.iter().rev() {
        w.write_at(off, &vec![0xA5u8; len]).unwrap();
    }
    w.write_at(50 * MIB, &vec![0u8; 8 * MIB as usize]).unwrap();
    w.finish().unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.len(), size);
    let data: u64 = extents.iter().map(|e| e.1 as u64).sum();
    let stored = meta.blocks() * 512;
    assert!(
        stored >= data && stored <= data + MIB,
        "stored {stored} for {data} bytes of data"
    );

    let r = RawReader::open(File::open(&p).unwrap()).unwrap();
    let ranges = r.data_ranges().unwrap();
    let covered: u64 = ranges.iter().map(|x| x.end - x.start).sum();
    assert!(covered <= data + MIB, "{ranges:?}");
    for &(off, len) in &extents {
        assert!(
            ranges
                .iter()
                .any(|x| x.start <= off && off + len as u64 <= x.end),
            "{off:#x} not in {ranges:?}"
        );
    }
    // qemu-img sees the same allocation map.
    let map = run_ok(
        tool("qemu-img")
            .args(["map", "-f", "raw", "--output=json"])
            .arg(&p),
    );
    let map: serde_json::Value = serde_json::from_str(&map).unwrap();
    let qemu_data: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(qemu_data, covered, "qemu-img map: {map}");
}

#[test]
fn hostile_vhds_give_one_line_errors() {
    let dir = tempdir();
    let mut o = VhdOptions::new(6 * MIB, Guid::derive(b"hostile", "vhd"), 1);
    o.block_size = 1 << 20;
    let dyn_path = dir.path().join("d.vhd");
    let fix_path = dir.path().join("f.vhd");
    for (p, dynamic) in [(&dyn_path, true), (&fix_path, false)] {
        o.dynamic = dynamic;
        let mut w = Box::new(VhdWriter::create(open_rw(p), &o).unwrap());
        w.write_at(0, &[0x5Au8; 4096]).unwrap();
        w.write_at(6 * MIB - 512, &[0x6Bu8; 512]).unwrap();
        w.finish().unwrap();
        // The bases themselves are valid for qemu-img and for us.
        assert_eq!(qemu_info(p)["virtual-size"].as_u64(), Some(6 * MIB));
        VhdReader::open(File::open(p).unwrap()).unwrap();
    }
    let cases = hostile::cases(&read(&dyn_path), &read(&fix_path));
    assert!(cases.len() >= 20);
    for case in cases {
        let p = dir.path().join(format!("{}.vhd", case.name));
        std::fs::write(&p, &case.bytes).unwrap();
        let err = match VhdReader::open(File::open(&p).unwrap()) {
            Ok(_) => panic!("{}: opened without error", case.name),
            Err(e) => e.to_string(),
        };
        eprintln!("{}: {err}", case.name);
        assert!(!err.contains('\n'), "{}: not one line: {err}", case.name);
        let lower = err.to_lowercase();
        for word in case.expect {
            assert!(
                lower.contains(word),
                "{}: error lacks '{word}': {err}",
                case.name
            );
        }
        // qemu-img must not be more lenient about the structures we refuse outright.
        if case.name.contains("cookie") || case.name == "empty-file" {
            assert!(
                !run(tool("qemu-img").args(["info", "-f", "vpc"]).arg(&p))
                    .status
                    .success(),
                "{}",
                case.name
            );
        }
    }
}

/// At the VHD limit (2040 GiB) and above the largest CHS geometry (127 GiB), qemu-img and
/// vhdiinfo see exactly our size, and the first and last sectors hold what we wrote.
#[test]
fn largest_sizes_are_exact() {
    use nanoforge::formats::vhd::MAX_VIRTUAL_SIZE;
    let dir = tempdir();
    for (size, dynamic) in [
        (MAX_VIRTUAL_SIZE, true),
        (MAX_VIRTUAL_SIZE, false),
        ((200 << 30) + 512, true),
    ] {
        let p = dir.path().join("big.vhd");
        let mut o = VhdOptions::new(size, Guid::derive(b"big", "vhd"), 0);
        o.dynamic = dynamic;
        let mut w = Box::new(VhdWriter::create(open_rw(&p), &o).unwrap());
        w.write_at(0, &[0x66u8; 512]).unwrap();
        w.write_at(size - 512, &[0x77u8; 512]).unwrap();
        w.finish().unwrap();
        assert_eq!(
            qemu_info(&p)["virtual-size"].as_u64(),
            Some(size),
            "{size} dynamic={dynamic}"
        );
        assert!(
            vhdiinfo(&p).contains(&format!("({size} bytes)")),
            "{size} dynamic={dynamic}"
        );
        let last = (size - 512).to_string();
        let mid = (size / 2).to_string();
        for (pattern, offset) in [("0x66", "0"), ("0x77", last.as_str()), ("0", mid.as_str())] {
            let out = run_ok(
                tool("qemu-io")
                    .args([
                        "-f",
                        "vpc",
                        "-c",
                        &format!("read -P {pattern} {offset} 512"),
                    ])
                    .arg(&p),
            );
            assert!(
                !out.contains("failed"),
                "{size} dynamic={dynamic} at {offset}: {out}"
            );
        }
        let r = VhdReader::open(File::open(&p).unwrap()).unwrap();
        assert_eq!(r.info().virtual_size, size);
        let mut b = [0u8; 512];
        r.read_at(size - 512, &mut b).unwrap();
        assert_eq!(b, [0x77u8; 512]);
    }
    let too_big = VhdOptions::new(MAX_VIRTUAL_SIZE + 512, Guid::ZERO, 0);
    let err = VhdWriter::create(open_rw(&dir.path().join("x.vhd")), &too_big)
        .err()
        .expect("over the limit");
    assert!(err.to_string().contains("2040 GiB"), "{err}");
}
