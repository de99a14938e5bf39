//! VHDX checked by qemu-img (qemu-utils): our writer's output passes `qemu-img check` and converts
//! to the raw image we meant; qemu-img's own VHDX files read back through our reader equal the raw
//! data they were made from; identical writes give identical files; a 100 GiB disk costs its data;
//! and the hostile catalogue in tests/hostile/vhdx/ gives errors, never panics.

mod common;

#[path = "hostile/vhdx/cases.rs"]
mod hostile;

use common::{read, run, run_ok, tempdir, tool};
use nanoforge::core::{Guid, ReadAt, WriteAt};
use nanoforge::formats::vhdx::{VhdxOptions, VhdxReader, VhdxWriter};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MIB: u64 = 1 << 20;

/// Deterministic non-zero-heavy bytes (xorshift), different for each `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// The writes of the matrix test, in the order applied: out of order, unaligned, crossing block
/// boundaries, zeros into unwritten and into written blocks, many small contiguous writes, and
/// the very last sector.
fn scattered_writes(size: u64, sector: u64) -> Vec<(u64, Vec<u8>)> {
    let mut w = vec![
        (size - sector, pattern(1, sector as usize)),
        (5 * MIB, pattern(2, 3 * MIB as usize)),
        (0, pattern(3, 4096)),
        (3 * 512 + 7, pattern(4, 1000)),
        (MIB - 100, pattern(5, 300)),
        (33 * MIB - 4096, pattern(6, 8192)),
        (40 * MIB, vec![0u8; 64 * 1024]),
        (5 * MIB + 1000, vec![0u8; 2000]),
        (64 * MIB + 3, pattern(7, 5)),
    ];
    for i in 0..64u64 {
        w.push((20 * MIB + i * 4096, pattern(100 + i, 4096)));
    }
    w
}

fn write_image(path: &Path, opts: &VhdxOptions, writes: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    let mut w: Box<VhdxWriter> = Box::new(VhdxWriter::create(f, opts).unwrap());
    for (at, data) in writes {
        w.write_at(*at, data).unwrap();
    }
    w.finish().unwrap();
}

fn expected_raw(size: u64, writes: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut raw = vec![0u8; size as usize];
    for (at, data) in writes {
        raw[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    raw
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if got == want {
        return;
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i:#x}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        );
    }
}

fn qemu_info(path: &Path) -> serde_json::Value {
    let out = run_ok(
        tool("qemu-img")
            .args(["info", "--output=json", "-f", "vhdx"])
            .arg(path),
    );
    serde_json::from_str(&out).unwrap()
}

fn qemu_check(path: &Path) {
    let out = run(tool("qemu-img").args(["check", "-f", "vhdx"]).arg(path));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "qemu-img check failed on {}: {text}",
        path.display()
    );
    assert!(
        text.contains("No errors were found"),
        "qemu-img check: {text}"
    );
}

fn qemu_to_raw(path: &Path, raw: &Path) -> Vec<u8> {
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(path)
            .arg(raw),
    );
    read(raw)
}

/// The whole virtual disk as libvhdi (python3-libvhdi, Debian's Python binding of the libyal
/// library) reads it: a second reader, independent of qemu.
fn libvhdi_to_raw(path: &Path, raw: &Path) -> Vec<u8> {
    const SCRIPT: &str = "import sys, pyvhdi\n\
        f = pyvhdi.file(); f.open(sys.argv[1]); n = f.get_media_size(); f.seek(0)\n\
        with open(sys.argv[2], 'wb') as out:\n\
        \x20   while n > 0:\n\
        \x20       b = f.read(min(n, 1 << 22)); out.write(b); n -= len(b)\n";
    // Debian installs the binding for the system interpreter, whatever else is first in PATH.
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.is_file(),
        "/usr/bin/python3 is missing; install python3 and python3-libvhdi"
    );
    run_ok(
        std::process::Command::new(python)
            .args(["-c", SCRIPT])
            .arg(path)
            .arg(raw),
    );
    read(raw)
}

fn read_all(r: &VhdxReader) -> Vec<u8> {
    let mut buf = vec![0u8; r.size() as usize];
    r.read_at(0, &mut buf).unwrap();
    buf
}

#[test]
fn our_vhdx_passes_qemu_check_and_converts_to_the_raw_we_meant() {
    let dir = tempdir();
    // 70 MiB + 12 KiB: a multiple of both sector sizes, of neither block size.
    let size = 70 * MIB + 12 * 1024;
    for fixed in [false, true] {
        for sector in [512u32, 4096] {
            for block in [1u32 << 20, 32 << 20] {
                let what = format!("fixed={fixed} sector={sector} block={block}");
                let opts = VhdxOptions {
                    virtual_size: size,
                    block_size: block,
                    logical_sector_size: sector,
                    physical_sector_size: 4096,
                    fixed,
                    ..VhdxOptions::new(size, what.as_bytes())
                };
                let writes = scattered_writes(size, u64::from(sector));
                let want = expected_raw(size, &writes);
                let path = dir.path().join("t.vhdx");
                write_image(&path, &opts, &writes);

                if sector == 512 {
                    // qemu 7.2 reads only 512-byte logical sectors (block/vhdx.c refuses others
                    // with ENOTSUP); libvhdi below covers 4096.
                    qemu_check(&path);
                    let info = qemu_info(&path);
                    assert_eq!(info["format"], "vhdx", "{what}");
                    assert_eq!(info["virtual-size"], size, "{what}");
                    assert_eq!(info["cluster-size"], block, "{what}");
                    let raw = qemu_to_raw(&path, &dir.path().join("t.raw"));
                    assert_same(&format!("qemu-img convert, {what}"), &raw, &want);
                }
                let info = run_ok(tool("vhdiinfo").arg(&path));
                for line in [
                    format!("Disk type\t\t: {}", if fixed { "Fixed" } else { "Dynamic" }),
                    format!("({size} bytes)"),
                    format!("Bytes per sector\t: {sector} bytes"),
                    // libvhdi shows the DataWriteGuid as the identifier.
                    format!("Identifier\t\t: {}", opts.data_write_guid),
                ] {
                    assert!(
                        info.contains(&line),
                        "{what}: vhdiinfo lacks {line:?}:\n{info}"
                    );
                }
                let raw = libvhdi_to_raw(&path, &dir.path().join("v.raw"));
                assert_same(&format!("libvhdi, {what}"), &raw, &want);

                let r = VhdxReader::open(File::open(&path).unwrap()).unwrap();
                let i = r.info();
                assert_eq!(
                    (
                        i.virtual_size,
                        i.block_size,
                        i.logical_sector_size,
                        i.physical_sector_size,
                        i.fixed,
                        i.has_parent
                    ),
                    (size, block, sector, 4096, fixed, false),
                    "{what}"
                );
                assert_eq!(
                    (i.file_write_guid, i.data_write_guid, i.page83),
                    (opts.file_write_guid, opts.data_write_guid, opts.page83)
                );
                assert_same(&format!("our reader, {what}"), &read_all(&r), &want);
                // Every byte written with data lies in a reported data range.
                let ranges = r.data_ranges().unwrap();
                for (at, d) in writes.iter().filter(|(_, d)| d.iter().any(|&b| b != 0)) {
                    for p in [*at, at + d.len() as u64 - 1] {
                        assert!(
                            ranges.iter().any(|rg| rg.contains(&p)),
                            "{what}: {p:#x} outside data_ranges"
                        );
                    }
                }

                // Bytes never written are holes, fixed or not: the file holds about the data
                // (3.3 MiB here) plus a few pages of metadata.
                let data: u64 = writes.iter().map(|(_, d)| d.len() as u64).sum();
                let meta = std::fs::metadata(&path).unwrap();
                assert!(
                    meta.blocks() * 512 <= data + 2 * MIB,
                    "{what}: {} bytes allocated",
                    meta.blocks() * 512
                );
                if fixed {
                    let bat = (size.div_ceil(u64::from(block)) * 8).next_multiple_of(MIB);
                    let blocks = size.div_ceil(u64::from(block));
                    assert_eq!(
                        meta.len(),
                        3 * MIB + bat + blocks * u64::from(block),
                        "{what}: file length"
                    );
                } else {
                    // Only blocks holding non-zero data are allocated: the 64 KiB of zeros at
                    // 40 MiB allocate nothing.
                    let blocks: std::collections::BTreeSet<u64> = writes
                        .iter()
                        .filter(|(_, d)| d.iter().any(|&b| b != 0))
                        .flat_map(|(at, d)| {
                            (at / u64::from(block))..=((at + d.len() as u64 - 1) / u64::from(block))
                        })
                        .collect();
                    let len = std::fs::metadata(&path).unwrap().len();
                    let bat = (size.div_ceil(u64::from(block)) * 8).next_multiple_of(MIB);
                    assert_eq!(
                        len,
                        3 * MIB + bat + blocks.len() as u64 * u64::from(block),
                        "{what}: file length"
                    );
                }
            }
        }
    }
}

#[test]
fn qemu_made_vhdx_reads_back_equal_to_its_source() {
    let dir = tempdir();
    // 99 MiB: not a multiple of 32 MiB.
    let size = 99 * MIB;
    let src = dir.path().join("src.raw");
    {
        let f = File::create(&src).unwrap();
        f.set_len(size).unwrap();
        for (i, at) in [
            0,
            3 * MIB + 512,
            31 * MIB,
            32 * MIB,
            50 * MIB + 4096,
            size - 4096,
        ]
        .into_iter()
        .enumerate()
        {
            let len = (300 * 1024).min(size - at) as usize;
            f.write_all_at(&pattern(i as u64 + 1, len), at).unwrap();
        }
    }
    let want = read(&src);
    // block_state_zero=on makes qemu mark unwritten blocks PAYLOAD_BLOCK_ZERO instead of
    // NOT_PRESENT (fixed disks start with every block in that state).
    for (subformat, block, log, zero) in [
        ("dynamic", "1M", "1M", "off"),
        ("dynamic", "32M", "2M", "off"),
        ("dynamic", "1M", "1M", "on"),
        ("fixed", "1M", "1M", "off"),
        ("fixed", "32M", "1M", "off"),
        ("fixed", "32M", "1M", "on"),
    ] {
        let what = format!("{subformat} block_size={block} log_size={log} block_state_zero={zero}");
        let img = dir.path().join("q.vhdx");
        let _ = std::fs::remove_file(&img);
        let o = format!(
            "subformat={subformat},block_size={block},log_size={log},block_state_zero={zero}"
        );
        run_ok(
            tool("qemu-img")
                .args(["create", "-q", "-f", "vhdx", "-o", &o])
                .arg(&img)
                .arg(size.to_string()),
        );
        run_ok(
            tool("qemu-img")
                .args(["convert", "-n", "-f", "raw", "-O", "vhdx"])
                .arg(&src)
                .arg(&img),
        );
        let from_qemu = qemu_to_raw(&img, &dir.path().join("q.raw"));
        assert_same(&format!("qemu's own round trip, {what}"), &from_qemu, &want);

        let r =
            VhdxReader::open(File::open(&img).unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let i = r.info();
        let block_bytes = if block == "1M" { 1 << 20 } else { 32 << 20 };
        assert_eq!(
            (i.virtual_size, i.block_size, i.fixed, i.logical_sector_size),
            (size, block_bytes, subformat == "fixed", 512),
            "{what}"
        );
        assert_same(&format!("our reader, {what}"), &read_all(&r), &want);
        let ranges = r.data_ranges().unwrap();
        for at in [0, 3 * MIB + 512, 31 * MIB, 50 * MIB + 4096, size - 1] {
            assert!(
                ranges.iter().any(|rg| rg.contains(&at)),
                "{what}: {at:#x} not in data_ranges {ranges:?}"
            );
        }
    }
}

/// Ranges reserved up front put the BAT out first, so an ascending writer gets the file's
/// SHA-256 from the writer (equal to coreutils' `sha256sum`); a write outside them still
/// lands (qemu-img reads what was written) but the writer then cannot vouch for a digest.
#[test]
fn reserved_ranges_give_the_file_digest_on_the_way() {
    let dir = tempdir();
    let size = 96 * MIB;
    let inside = vec![
        (0, pattern(1, 4096)),
        (3 * MIB + 512, pattern(2, 2 * MIB as usize)),
        (6 * MIB, vec![0u8; MIB as usize]),
        (9 * MIB + 4096, pattern(3, 5000)),
        (size - 512, pattern(4, 512)),
    ];
    let reserve = [0..4096, 3 * MIB..10 * MIB, size - 512..size];
    let outside = (40 * MIB, pattern(5, 7000));
    for (name, extra) in [("in.vhdx", None), ("out.vhdx", Some(&outside))] {
        let p = dir.path().join(name);
        let mut opts = VhdxOptions::new(size, b"digest");
        opts.block_size = MIB as u32;
        let f = File::create(&p).unwrap();
        let mut w: Box<dyn WriteAt> = Box::new(VhdxWriter::create_with(f, &opts, true).unwrap());
        w.reserve(&reserve).unwrap();
        let mut writes = inside.clone();
        if let Some(e) = extra {
            writes.insert(4, e.clone());
        }
        for (at, data) in &writes {
            w.write_at(*at, data).unwrap();
        }
        let digest = w.finish_digest().unwrap();
        qemu_check(&p);
        let raw = qemu_to_raw(&p, &dir.path().join("raw"));
        assert_same(name, &raw, &expected_raw(size, &writes));
        let sum = run_ok(tool("sha256sum").arg(&p));
        let want = sum.split_whitespace().next().unwrap().to_string();
        let got = digest.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match extra {
            None => assert_eq!(got.as_deref(), Some(want.as_str()), "{name}"),
            Some(_) => assert_eq!(got, None, "{name}: a write outside the reserve"),
        }
    }
}

#[test]
fn identical_writes_give_identical_files() {
    let dir = tempdir();
    let size = 70 * MIB + 12 * 1024;
    for fixed in [false, true] {
        let opts = VhdxOptions {
            fixed,
            ..VhdxOptions::new(size, b"determinism")
        };
        let writes = scattered_writes(size, 512);
        let (a, b) = (dir.path().join("a.vhdx"), dir.path().join("b.vhdx"));
        write_image(&a, &opts, &writes);
        write_image(&b, &opts, &writes);
        assert!(read(&a) == read(&b), "fixed={fixed}: two runs differ");
        // Other GUIDs give other bytes: the GUIDs are really parameters.
        let c = dir.path().join("c.vhdx");
        write_image(
            &c,
            &VhdxOptions {
                page83: Guid::derive(b"other", "p"),
                ..opts.clone()
            },
            &writes,
        );
        assert!(read(&a) != read(&c));
    }
}

#[test]
fn a_100_gib_disk_costs_its_data_and_a_64_tib_disk_costs_nothing_up_front() {
    let dir = tempdir();
    let size = 100 << 30;
    let path = dir.path().join("big.vhdx");
    let mut writes = Vec::new();
    // 64 MiB of data: 60 blocks spread over the disk plus 4 MiB in small pieces.
    for i in 0..60u64 {
        writes.push((i * (size / 60) / MIB * MIB, pattern(i, MIB as usize)));
    }
    for i in 0..1024u64 {
        writes.push((size - 4096 - i * 65536 * 16, pattern(1000 + i, 4096)));
    }
    let data: u64 = writes.iter().map(|(_, d)| d.len() as u64).sum();
    let opts = VhdxOptions::new(size, b"streaming");
    write_image(&path, &opts, &writes);
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(allocated >= data, "allocated {allocated} < data {data}");
    assert!(
        allocated <= data + 8 * MIB,
        "allocated {allocated} bytes for {data} bytes of data"
    );
    qemu_check(&path);
    let r = VhdxReader::open(File::open(&path).unwrap()).unwrap();
    for (at, d) in writes.iter().step_by(37) {
        let mut b = vec![0u8; d.len()];
        r.read_at(*at, &mut b).unwrap();
        assert!(b == *d, "data at {at:#x}");
    }

    // 64 TiB, the format's maximum: one sector written at the very end.
    let path = dir.path().join("max.vhdx");
    let size = 64u64 << 40;
    write_image(
        &path,
        &VhdxOptions::new(size, b"max"),
        &[(size - 512, pattern(9, 512))],
    );
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated <= 4 * MIB,
        "allocated {allocated} bytes for one sector of a 64 TiB disk"
    );
}

#[test]
fn hostile_catalogue_gives_errors_naming_the_structure() {
    let dir = tempdir();
    let base_path = dir.path().join("base.vhdx");
    hostile::write_base(&base_path);
    let base = read(&base_path);
    // The base itself is fine.
    VhdxReader::open(File::open(&base_path).unwrap()).unwrap();
    let path = dir.path().join("case.vhdx");
    for case in hostile::cases() {
        let mut bytes = base.clone();
        (case.mutate)(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let result = VhdxReader::open(File::open(&path).unwrap());
        match (result, case.expect) {
            (Ok(_), None) => {}
            (Ok(_), Some(want)) => panic!(
                "{}: opened, expected an error containing {want:?}",
                case.name
            ),
            (Err(e), None) => panic!("{}: expected to open, got: {e}", case.name),
            (Err(e), Some(want)) => {
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n'),
                    "{}: message is not one line: {msg}",
                    case.name
                );
                for w in want {
                    assert!(
                        msg.contains(w),
                        "{}: message {msg:?} lacks {w:?}",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
fn random_corruption_of_the_metadata_never_panics() {
    let dir = tempdir();
    let base_path = dir.path().join("base.vhdx");
    hostile::write_base(&base_path);
    let base = read(&base_path);
    let path = dir.path().join("fuzz.vhdx");
    let mut x: u64 = 0x1234_5678;
    for round in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..1 + round % 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Aim at the structures: header section, metadata table and items, BAT.
            let at = match x % 4 {
                0 => (x >> 8) % (320 * 1024),
                1 => 2 * MIB + (x >> 8) % 256,
                2 => 2 * MIB + 65536 + (x >> 8) % 64,
                _ => 3 * MIB + (x >> 8) % 64,
            } as usize;
            bytes[at] ^= (x >> 40) as u8 | 1;
        }
        hostile::fix_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(r) = VhdxReader::open(File::open(&path).unwrap()) {
            let mut b = vec![0u8; (r.size().min(4 * MIB)) as usize];
            let _ = r.read_at(0, &mut b);
            let _ = r.data_ranges();
        }
    }
}

/// Turn the hostile base image into one whose log holds two entries to replay, as after a crash
/// when the file grew by one block but the BAT update had not reached the BAT: entry 10 points
/// block 1 at 0x600000, entry 11 fills its first 4 KiB and zeros the first 4 KiB of block 5.
/// Returns the 4 KiB written to block 1.
fn add_log(bytes: &mut Vec<u8>) -> Vec<u8> {
    bytes.resize(0x700000, 0);
    hostile::set_log_guid(bytes);
    let bat_at = 0x300000;
    let mut bat = bytes[bat_at..bat_at + 4096].to_vec();
    bat[8..16].copy_from_slice(&((6u64 << 20) | 6).to_le_bytes());
    let sector = pattern(77, 4096);
    let data = |file_offset: u64, sector: Vec<u8>| hostile::Desc::Data {
        file_offset,
        sector,
    };
    let n = hostile::put_log_entry(
        bytes,
        0,
        10,
        0,
        0x700000,
        0x700000,
        &[data(bat_at as u64, bat)],
    );
    let zero = hostile::Desc::Zero {
        file_offset: 0x500000,
        len: 4096,
    };
    hostile::put_log_entry(
        bytes,
        n,
        11,
        0,
        0x700000,
        0x700000,
        &[data(0x600000, sector.clone()), zero],
    );
    sector
}

#[test]
fn a_log_left_to_replay_reads_as_qemu_replays_it() {
    let dir = tempdir();
    let base_path = dir.path().join("base.vhdx");
    hostile::write_base(&base_path);
    let mut bytes = read(&base_path);
    let sector = add_log(&mut bytes);
    let dirty = dir.path().join("dirty.vhdx");
    std::fs::write(&dirty, &bytes).unwrap();

    let mut want = vec![0u8; 8 << 20];
    want[..4096].fill(0x11);
    want[MIB as usize..MIB as usize + 4096].copy_from_slice(&sector);
    let r = VhdxReader::open(File::open(&dirty).unwrap()).unwrap();
    assert!(r.log_replayed());
    assert_same("our in-memory replay", &read_all(&r), &want);
    assert!(read(&dirty) == bytes, "the reader wrote to the file");

    // qemu refuses the dirty file read-only, replays it with `check -r all`, and then agrees.
    let replayed = dir.path().join("replayed.vhdx");
    std::fs::copy(&dirty, &replayed).unwrap();
    let out = run(tool("qemu-img").args(["info", "-f", "vhdx"]).arg(&replayed));
    assert!(
        !out.status.success(),
        "qemu-img opened a VHDX with a log to replay read-only"
    );
    run_ok(
        tool("qemu-img")
            .args(["check", "-r", "all", "-f", "vhdx"])
            .arg(&replayed),
    );
    qemu_check(&replayed);
    let raw = qemu_to_raw(&replayed, &dir.path().join("r.raw"));
    assert_same("qemu's replay", &raw, &want);
    let r = VhdxReader::open(File::open(&replayed).unwrap()).unwrap();
    assert!(!r.log_replayed());
    assert_same("our reader after qemu's replay", &read_all(&r), &want);
}

#[test]
fn random_corruption_of_a_log_never_panics() {
    let dir = tempdir();
    let base_path = dir.path().join("base.vhdx");
    hostile::write_base(&base_path);
    let mut base = read(&base_path);
    add_log(&mut base);
    let path = dir.path().join("fuzz.vhdx");
    let log = 0x100000usize;
    let mut x: u64 = 0x9876_5432;
    for round in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Aim at the entry headers and descriptors of both entries, and the data sectors.
            let at = log + [0, 4096, 8192, 12288][(x % 4) as usize] + ((x >> 8) % 128) as usize;
            bytes[at] ^= (x >> 40) as u8 | 1;
        }
        // Keep the entries' checksums right so the damage reaches the descriptor checks.
        for (at, len) in [(0usize, 8192usize), (8192, 8192)] {
            let e = &mut bytes[log + at..log + at + len];
            let crc = nanoforge::core::checksum::crc32c_with_zeroed_field(e, 4);
            e[4..8].copy_from_slice(&crc.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(r) = VhdxReader::open(File::open(&path).unwrap()) {
            let mut b = vec![0u8; r.size() as usize];
            let _ = r.read_at(0, &mut b);
        }
    }
}
