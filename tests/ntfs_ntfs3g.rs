//! The NTFS writer checked by independent readers: ntfs-3g's ntfsfix, ntfsls, ntfscat and
//! ntfsinfo, and wimlib-imagex capturing the volume through libntfs-3g.

mod common;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nanoforge::core::WriteAt;
use nanoforge::formats::ntfs::{write_volume, NtfsOptions, NtfsReport};
use nanoforge::tree::{Content, Meta, Tree};

/// A plain file as a write target.
struct FileDisk(File, u64);

impl WriteAt for FileDisk {
    fn size(&self) -> u64 {
        self.1
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        nanoforge::core::block::check_range(offset, data.len(), self.1)?;
        self.0.write_all_at(data, offset)
    }
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.sync_all()
    }
}

const T: u64 = 133_000_000_000_000_000;

fn opts(size: u64) -> NtfsOptions {
    NtfsOptions {
        size,
        serial: 0x1234_5678_9ABC_DEF0,
        label: "Nano".into(),
        time: T,
        ..NtfsOptions::default()
    }
}

fn write_image(dir: &Path, name: &str, tree: &Tree, o: &NtfsOptions) -> (PathBuf, NtfsReport) {
    let p = dir.join(name);
    let f = File::create(&p).unwrap();
    f.set_len(o.size).unwrap();
    let mut d = FileDisk(f, o.size);
    let r = write_volume(tree, o, &mut d, 0).unwrap();
    (p, r)
}

fn ntfsfix_clean(img: &Path) {
    let out = common::run(common::tool("ntfsfix").arg("-n").arg(img));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ntfsfix -n failed:\n{text}");
    assert!(
        !text.contains("FAILED") && !text.to_lowercase().contains("corrupt"),
        "ntfsfix -n:\n{text}"
    );
}

fn ls(img: &Path, path: &str) -> Vec<String> {
    let out = common::run_ok(
        common::tool("ntfsls")
            .arg("-a")
            .arg("-p")
            .arg(path)
            .arg(img),
    );
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && l != "." && l != "..")
        .collect()
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    let out = common::run(common::tool("ntfscat").arg(img).arg(path));
    assert!(
        out.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn basic_volume_is_clean_and_reads_back() {
    let tmp = common::tempdir();
    let mut t = Tree::new(Meta::at(T));
    let d = t.add_dir(Tree::ROOT, "Windows", Meta::at(T)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    t.add_file(d, "big.bin", Meta::at(T), Content::bytes(big.clone()))
        .unwrap();
    t.add_file(
        d,
        "small.txt",
        Meta::at(T),
        Content::bytes(b"hello".to_vec()),
    )
    .unwrap();
    t.add_file(Tree::ROOT, "empty", Meta::at(T), Content::Empty)
        .unwrap();
    let (img, _) = write_image(tmp.path(), "v.img", &t, &opts(64 << 20));
    ntfsfix_clean(&img);
    let root = ls(&img, "/");
    assert!(
        root.contains(&"Windows".to_string()) && root.contains(&"empty".to_string()),
        "{root:?}"
    );
    assert_eq!(ls(&img, "/Windows"), ["big.bin", "small.txt"]);
    assert_eq!(cat(&img, "/Windows/big.bin"), big);
    assert_eq!(cat(&img, "/Windows/small.txt"), b"hello");
    assert_eq!(cat(&img, "/empty"), b"");
}
