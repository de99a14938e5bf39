//! The WIM reader checked against wimlib-imagex: fixtures are captured at test time from a
//! generated folder with every compression type, chunk sizes, solid resources, several
//! images and a split set; our header/XML fields, path listings, extracted trees and
//! verification results must equal wimlib's.
mod common;

use common::{run, run_ok, tool};
use nanoforge::formats::wim::{extract, Error, Wim};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Deterministic, poorly compressible bytes: a fixed arithmetic scramble of the position
/// (no random generator, so fixtures are identical on every run).
fn scrambled(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            let x = i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(salt.wrapping_mul(40_503));
            ((x ^ (x >> 15)).wrapping_mul(2_246_822_519) >> 24) as u8
        })
        .collect()
}

/// Compressible text with some structure (and E8 bytes, to exercise LZX's call translation).
fn text(len: usize, salt: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0usize;
    while v.len() < len {
        v.extend_from_slice(
            format!(
                "line {i} of file {salt}: the quick brown fox {}\n",
                i * salt % 97
            )
            .as_bytes(),
        );
        if i.is_multiple_of(50) {
            v.extend_from_slice(&[0xE8, (i % 256) as u8, 0x10, 0x00, 0x00]);
        }
        i += 1;
    }
    v.truncate(len);
    v
}

const MARKER: &[u8] = b"UNIQUE-MARKER-FILE-CONTENT-0123456789";

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let mut n = 0usize;
    for d in 0..8 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(dir.join("sub/deeper/deepest")).unwrap();
        for f in 0..30usize {
            n += 1;
            let data = match f % 5 {
                0 => Vec::new(),
                1 | 2 => text(100 + n * 131 % 20000, n),
                3 => scrambled(50 + n * 977 % 70000, n as u32),
                _ => {
                    let mut v = text(3000, n);
                    v.extend(scrambled(3000, n as u32));
                    v
                }
            };
            let sub = if f.is_multiple_of(3) {
                dir.join("sub")
            } else {
                dir.clone()
            };
            std::fs::write(sub.join(format!("file{f:02}.dat")), data).unwrap();
        }
        std::fs::write(dir.join("sub/deeper/deepest/leaf.txt"), text(777, d)).unwrap();
    }
    // Several chunks in one blob (parallel chunk decoding), mixed content.
    let mut big = text(1_500_000, 7);
    big.extend(scrambled(600_000, 99));
    big.extend(text(900_000, 8));
    std::fs::write(root.join("big.bin"), big).unwrap();
    // Duplicate content (one blob, several files).
    std::fs::write(root.join("dup1.txt"), text(5000, 1)).unwrap();
    std::fs::write(root.join("dup2.txt"), text(5000, 1)).unwrap();
    std::fs::write(root.join("marker.txt"), MARKER).unwrap();
    std::fs::create_dir(root.join("empty_dir")).unwrap();
    std::fs::write(root.join("linked.txt"), text(4321, 3)).unwrap();
    std::fs::hard_link(root.join("linked.txt"), root.join("dir0/hardlink.txt")).unwrap();
    std::os::unix::fs::symlink("../linked.txt", root.join("dir1/symlink")).unwrap();
    std::os::unix::fs::symlink("sub/deeper", root.join("dir2/dirlink")).unwrap();
}

struct Fixtures {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// (name, path) of single-file WIMs.
    wims: Vec<(String, PathBuf)>,
    multi: PathBuf,
    split: Vec<PathBuf>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = common::tempdir();
        let dir = tmp.path().to_path_buf();
        let src = dir.join("src");
        make_tree(&src);
        let src2 = dir.join("src2");
        std::fs::create_dir_all(src2.join("other")).unwrap();
        std::fs::write(src2.join("other/x.txt"), text(12345, 5)).unwrap();
        std::fs::write(src2.join("y.bin"), scrambled(40000, 5)).unwrap();
        let variants: &[(&str, &[&str])] = &[
            ("none", &["--compress=none"]),
            ("xpress", &["--compress=xpress"]),
            ("xpress4k", &["--compress=xpress", "--chunk-size=4K"]),
            ("lzx", &["--compress=lzx"]),
            ("lzx128k", &["--compress=lzx", "--chunk-size=128K"]),
            ("lzms", &["--compress=lzms"]),
            ("lzms32k", &["--compress=lzms", "--chunk-size=32K"]),
            ("solid_lzms", &["--solid"]),
            ("solid_lzms128k", &["--solid", "--solid-chunk-size=128K"]),
            ("solid_xpress", &["--solid", "--solid-compress=xpress"]),
            ("solid_lzx", &["--solid", "--solid-compress=lzx"]),
            ("integrity", &["--compress=xpress", "--check"]),
        ];
        let mut wims = Vec::new();
        for (name, opts) in variants {
            let out = dir.join(format!("{name}.wim"));
            run_ok(
                tool("wimlib-imagex")
                    .arg("capture")
                    .arg(&src)
                    .arg(&out)
                    .arg("Image One")
                    .arg("first image")
                    .args(*opts),
            );
            wims.push((name.to_string(), out));
        }
        let multi = dir.join("multi.wim");
        run_ok(
            tool("wimlib-imagex")
                .arg("capture")
                .arg(&src)
                .arg(&multi)
                .arg("Base")
                .arg("base image")
                .arg("--compress=lzx"),
        );
        run_ok(
            tool("wimlib-imagex")
                .arg("append")
                .arg(&src2)
                .arg(&multi)
                .arg("Second")
                .arg("second image"),
        );
        run_ok(
            tool("wimlib-imagex")
                .arg("append")
                .arg(&src)
                .arg(&multi)
                .arg("Third")
                .arg("--boot"),
        );
        let split_src = dir.join("forsplit.wim");
        run_ok(
            tool("wimlib-imagex")
                .arg("capture")
                .arg(&src)
                .arg(&split_src)
                .arg("Split")
                .arg("--compress=lzx"),
        );
        run_ok(
            tool("wimlib-imagex")
                .arg("split")
                .arg(&split_src)
                .arg(dir.join("part.swm"))
                .arg("1"),
        );
        let mut split: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "swm"))
            .collect();
        split.sort();
        assert!(
            split.len() >= 3,
            "expected several split parts, got {split:?}"
        );
        Fixtures {
            _tmp: tmp,
            dir,
            wims,
            multi,
            split,
        }
    })
}

/// `key: value` pairs of `wimlib-imagex info` (header block and per-image blocks).
fn wimlib_info(args: &[&Path]) -> (BTreeMap<String, String>, Vec<BTreeMap<String, String>>) {
    // `info` reads part 1 only (it takes no --ref); the header and XML are all there.
    let mut cmd = tool("wimlib-imagex");
    cmd.arg("info").arg(args[0]);
    let out = run_ok(&mut cmd);
    let mut head = BTreeMap::new();
    let mut images: Vec<BTreeMap<String, String>> = Vec::new();
    for line in out.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k == "Index" {
            images.push(BTreeMap::new());
        }
        match images.last_mut() {
            Some(m) => {
                m.insert(k, v);
            }
            None => {
                head.insert(k, v);
            }
        }
    }
    (head, images)
}

fn check_info(wim: &Wim, wim_path: &Path, extra: &[&Path]) {
    let mut args = vec![wim_path];
    args.extend_from_slice(extra);
    let (head, images) = wimlib_info(&args);
    let h = wim.header();
    let guid: String = h.guid.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(head["GUID"], format!("0x{guid}"));
    assert_eq!(head["Version"], h.version.to_string());
    assert_eq!(head["Image Count"], wim.image_count().to_string());
    assert_eq!(head["Compression"], wim.codec().name());
    assert_eq!(head["Chunk Size"], format!("{} bytes", h.chunk_size));
    assert_eq!(
        head["Part Number"],
        format!("{}/{}", h.part_number, h.total_parts)
    );
    assert_eq!(head["Boot Index"], h.boot_index.to_string());
    assert_eq!(images.len(), wim.images().len());
    for (theirs, ours) in images.iter().zip(wim.images()) {
        assert_eq!(theirs["Index"], ours.index.to_string());
        let some = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
        assert_eq!(some(theirs.get("Name")), ours.name);
        assert_eq!(some(theirs.get("Description")), ours.description);
        assert_eq!(
            theirs["Directory Count"],
            ours.dir_count.unwrap().to_string()
        );
        assert_eq!(theirs["File Count"], ours.file_count.unwrap().to_string());
        assert_eq!(theirs["Total Bytes"], ours.total_bytes.unwrap().to_string());
        assert_eq!(
            theirs["Hard Link Bytes"],
            ours.hard_link_bytes.unwrap().to_string()
        );
        assert!(ours.creation_time.is_some() && ours.last_modification_time.is_some());
    }
}

fn check_dir(wim: &Wim, wim_path: &Path, extra: &[&Path], index: usize) {
    let mut cmd = tool("wimlib-imagex");
    cmd.arg("dir").arg(wim_path).arg(index.to_string());
    for e in extra {
        cmd.arg(format!("--ref={}", e.display()));
    }
    let theirs: Vec<String> = run_ok(&mut cmd).lines().map(str::to_string).collect();
    let ours = wim.dir_lines(index, false).unwrap();
    assert_eq!(
        ours,
        theirs,
        "path list of image {index} of {}",
        wim_path.display()
    );
    assert_eq!(wim.dir_lines(index, true).unwrap().len(), theirs.len());
}

/// Everything observable about a tree on Linux: type, contents, link target, mtime, and
/// which paths share an inode.
fn snapshot(root: &Path) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let desc = if md.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if md.is_dir() {
                stack.push(path.clone());
                format!("dir mtime={}", md.mtime())
            } else {
                inodes.entry(md.ino()).or_default().push(rel.clone());
                let data = std::fs::read(&path).unwrap();
                let h = data.iter().fold(0xcbf29ce484222325u64, |a, &b| {
                    (a ^ u64::from(b)).wrapping_mul(0x100000001b3)
                });
                format!("file len={} fnv={h:x} mtime={}", data.len(), md.mtime())
            };
            out.insert(rel, desc);
        }
    }
    let mut groups: Vec<Vec<String>> = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

fn check_extract(wim: &Wim, wim_path: &Path, extra: &[&Path], index: usize, work: &Path) {
    let theirs = work.join(format!("wimlib-{index}"));
    let ours = work.join(format!("ours-{index}"));
    std::fs::create_dir_all(work).unwrap();
    let mut cmd = tool("wimlib-imagex");
    cmd.arg("apply")
        .arg(wim_path)
        .arg(index.to_string())
        .arg(&theirs);
    for e in extra {
        cmd.arg(format!("--ref={}", e.display()));
    }
    run_ok(&mut cmd);
    let rep = extract(wim, index, &ours).unwrap();
    let (a, ga) = snapshot(&theirs);
    let (b, gb) = snapshot(&ours);
    assert_eq!(a.len(), b.len(), "entry counts differ");
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k} differs after extraction");
    }
    assert_eq!(ga, gb, "hard-link groups differ");
    assert!(rep.files > 0 && rep.directories > 0);
}

fn check_verify(wim: &Wim, wim_path: &Path) {
    let rep = wim.verify().unwrap();
    assert!(rep.blobs > 0);
    let out = run(tool("wimlib-imagex").arg("verify").arg(wim_path));
    assert!(
        out.status.success(),
        "wimlib's verify disagrees on {}",
        wim_path.display()
    );
}

/// Flip bytes inside the stored data of `path` (located with `wimlib-imagex dir --detailed`)
/// and expect our verification to fail naming that path.
fn check_corruption(wim_path: &Path, target: &str, work: &Path) {
    let out = run_ok(
        tool("wimlib-imagex")
            .arg("dir")
            .arg(wim_path)
            .arg("1")
            .arg("--detailed")
            .arg(format!("--path={target}")),
    );
    let field = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        line.split('=')
            .nth(1)
            .unwrap()
            .trim()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (offset, csize) = (field("Offset in WIM"), field("Compressed size"));
    let mut bytes = std::fs::read(wim_path).unwrap();
    let copy = work.join(format!(
        "corrupt-{}",
        wim_path.file_name().unwrap().to_string_lossy()
    ));
    let mid = (offset + csize / 2) as usize;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0x5A;
    }
    std::fs::write(&copy, &bytes).unwrap();
    let wim = Wim::open(&copy).unwrap();
    // Reading the blob whole (as volume writers do for small files) fails as well.
    let tree = wim.image(1).unwrap();
    let hash = tree.entries[tree.lookup(target).unwrap()].data_hash();
    assert!(
        !matches!(wim.read_plain_blob(&hash), Ok(Some(_))),
        "a whole read of the corrupted {target} succeeded"
    );
    let err = wim
        .verify()
        .expect_err("verify must fail on a corrupted copy");
    let msg = err.to_string();
    assert!(msg.contains(target), "error does not name {target}: {msg}");
    assert!(
        matches!(err, Error::HashMismatch { .. } | Error::BlobData { .. }),
        "{err:?}"
    );
}

#[test]
fn single_image_wims_match_wimlib() {
    let f = fixtures();
    for (name, path) in &f.wims {
        let wim = Wim::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_info(&wim, path, &[]);
        check_dir(&wim, path, &[], 1);
        let work = f.dir.join(format!("work-{name}"));
        check_extract(&wim, path, &[], 1, &work);
        check_verify(&wim, path);
        if *name == "integrity" {
            assert!(wim.check_integrity().unwrap(), "integrity table not found");
        }
    }
}

#[test]
fn corrupted_blobs_name_their_paths() {
    let f = fixtures();
    let work = f.dir.join("work-corrupt");
    std::fs::create_dir_all(&work).unwrap();
    for name in ["none", "xpress", "lzx", "lzms"] {
        let path = &f.wims.iter().find(|(n, _)| n == name).unwrap().1;
        check_corruption(path, "/big.bin", &work);
    }
    let none = &f.wims.iter().find(|(n, _)| n == "none").unwrap().1;
    check_corruption(none, "/marker.txt", &work);
}

#[test]
fn multi_image_wim_matches_wimlib() {
    let f = fixtures();
    let wim = Wim::open(&f.multi).unwrap();
    assert_eq!(wim.image_count(), 3);
    assert_eq!(wim.header().boot_index, 3);
    check_info(&wim, &f.multi, &[]);
    for i in 1..=3 {
        check_dir(&wim, &f.multi, &[], i);
    }
    check_extract(&wim, &f.multi, &[], 2, &f.dir.join("work-multi"));
    check_verify(&wim, &f.multi);
    assert!(matches!(wim.image(4), Err(Error::NoImage { .. })));
}

#[test]
fn split_wim_matches_wimlib() {
    let f = fixtures();
    let wim = Wim::open_split(&f.split).unwrap();
    let refs: Vec<&Path> = f.split[1..].iter().map(|p| p.as_path()).collect();
    check_info(&wim, &f.split[0], &refs);
    check_dir(&wim, &f.split[0], &refs, 1);
    check_extract(&wim, &f.split[0], &refs, 1, &f.dir.join("work-split"));
    wim.verify().unwrap();
    // A part alone is refused, and so is a set with a part missing.
    assert!(matches!(Wim::open(&f.split[0]), Err(Error::Split(_))));
    assert!(Wim::open_split(&f.split[..f.split.len() - 1]).is_err());
}

#[test]
fn streaming_blob_reader_checks_hashes() {
    let f = fixtures();
    let path = &f.wims.iter().find(|(n, _)| n == "lzx").unwrap().1;
    let wim = Wim::open(path).unwrap();
    let tree = wim.image(1).unwrap();
    let big = tree.lookup("/big.bin").unwrap();
    let hash = tree.entries[big].data_hash();
    let mut r = wim.open_blob(&hash).unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut data).unwrap();
    let src = fixtures().dir.join("src/big.bin");
    assert_eq!(data, std::fs::read(src).unwrap());
    // Decoded straight into one buffer: the same bytes.
    assert!(wim.read_plain_blob(&hash).unwrap().unwrap() == data);
}

#[path = "hostile/wim/cases.rs"]
mod hostile;

/// Small WIMs of a tree made for the hostile cases, one per capture option.
fn hostile_fixture(opts: &[&str]) -> Vec<u8> {
    static TREE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, src) = TREE.get_or_init(|| {
        let t = common::tempdir();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("ab"), b"first file").unwrap();
        std::fs::write(src.join("cd"), b"second file").unwrap();
        std::fs::write(src.join("marker.txt"), MARKER).unwrap();
        std::fs::write(src.join("sub/x.txt"), text(3000, 2)).unwrap();
        let mut big = text(200_000, 4);
        big.extend(scrambled(100_000, 4));
        std::fs::write(src.join("big.bin"), big).unwrap();
        (t, src)
    });
    let out = src
        .parent()
        .unwrap()
        .join(format!("h{}.wim", opts.join("").replace(['-', '='], "")));
    if !out.exists() {
        run_ok(
            tool("wimlib-imagex")
                .arg("capture")
                .arg(src)
                .arg(&out)
                .args(opts),
        );
    }
    std::fs::read(&out).unwrap()
}

/// Open, list, read and verify a WIM held in memory; the first error.
fn exercise(bytes: &[u8], dir: &Path, name: &str) -> Result<(), Error> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let wim = Wim::open(&p)?;
    for i in 1..=wim.image_count() {
        wim.image(i)?;
        wim.dir_lines(i, true)?;
    }
    wim.verify()?;
    Ok(())
}

#[test]
fn hostile_catalogue_gives_clear_errors() {
    let none = hostile_fixture(&["--compress=none"]);
    let lzx = hostile_fixture(&["--compress=lzx"]);
    let dir = common::tempdir();
    exercise(&none, dir.path(), "pristine-none").unwrap();
    exercise(&lzx, dir.path(), "pristine-lzx").unwrap();
    for case in hostile::cases(&none, &lzx) {
        let r = std::panic::catch_unwind(|| exercise(&case.bytes, dir.path(), case.name));
        let r = r.unwrap_or_else(|_| panic!("{} panicked", case.name));
        let e = r.expect_err(case.name).to_string();
        assert!(
            e.contains(case.expect),
            "{}: error {e:?} lacks {:?}",
            case.name,
            case.expect
        );
        assert!(
            !e.contains('\n'),
            "{}: error is not one line: {e}",
            case.name
        );
    }
}

#[test]
fn replay_mutated_fixtures_never_panic() {
    let dir = common::tempdir();
    let fixtures = [
        hostile_fixture(&["--compress=none"]),
        hostile_fixture(&["--compress=xpress"]),
        hostile_fixture(&["--compress=lzx"]),
        hostile_fixture(&["--compress=lzms"]),
        hostile_fixture(&["--solid"]),
    ];
    let mut errors = 0;
    for (f, base) in fixtures.iter().enumerate() {
        for k in 0..60u64 {
            let mut b = base.clone();
            // Half the positions in the header and tables at either end, half anywhere.
            let x = k
                .wrapping_mul(2_654_435_761)
                .wrapping_add(f as u64 * 40_503);
            let len = b.len() as u64;
            let pos = match k % 3 {
                0 => (x % 208) as usize,
                1 => (len - 1 - x % len.min(4096)) as usize,
                _ => (x % len) as usize,
            };
            let n = b.len();
            match k % 4 {
                0 => b[pos] ^= (x >> 8) as u8 | 1,
                1 => b[pos..(pos + 4).min(n)].fill(0xFF),
                2 => b[pos..(pos + 8).min(n)].fill(0),
                _ => b.truncate(pos),
            }
            let name = format!("m{f}-{k}");
            match std::panic::catch_unwind(|| exercise(&b, dir.path(), &name)) {
                Ok(Err(_)) => errors += 1,
                Ok(Ok(())) => {}
                Err(_) => panic!("mutation {k} of fixture {f} (position {pos}) panicked"),
            }
        }
    }
    assert!(errors > 0, "no mutation was detected at all");
}
