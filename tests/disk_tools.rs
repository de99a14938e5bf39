//! `disk create`, `convert` and `inspect` checked by tools we did not write: qemu-img,
//! sgdisk, sfdisk, fsck.fat and mtools.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// Make an ESP source folder with nested folders and long names.
fn esp_dir(root: &Path) -> PathBuf {
    let d = root.join("esp");
    std::fs::create_dir_all(d.join("EFI/Boot")).unwrap();
    std::fs::create_dir_all(d.join("EFI/Microsoft/Boot/en-US")).unwrap();
    std::fs::write(d.join("EFI/Boot/bootx64.efi"), pattern(300_000, 7)).unwrap();
    std::fs::write(
        d.join("EFI/Microsoft/Boot/en-US/A long file name.txt"),
        b"long name content\r\n",
    )
    .unwrap();
    std::fs::write(d.join("EFI/Microsoft/Boot/BCD"), pattern(65_536, 3)).unwrap();
    d
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + salt as usize) % 251) as u8)
        .collect()
}

fn create(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    create_sized(dir, name, "1GiB", extra)
}

fn create_sized(dir: &Path, name: &str, size: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let esp = esp_dir(dir);
    let mut c = nanoforge();
    c.args([
        "disk",
        "create",
        "--size",
        size,
        "--seed",
        "test-seed",
        "--esp-dir",
    ])
    .arg(&esp)
    .args(extra)
    .arg("-o")
    .arg(&out);
    run_ok(&mut c);
    out
}

/// The smallest disk the Windows layout accepts, rounded up: keeps byte comparisons quick.
const SMALL: &str = "320MiB";

/// Raw bytes of any image, through qemu-img.
fn to_raw(img: &Path, fmt: &str, dir: &Path) -> PathBuf {
    let raw = dir.join(format!(
        "{}.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", fmt, "-O", "raw"])
            .arg(img)
            .arg(&raw),
    );
    raw
}

#[test]
fn gpt_passes_sgdisk_and_matches_the_stored_sfdisk_dump() {
    for (ss, expected) in [
        ("512", "sfdisk-1GiB-512.txt"),
        ("4096", "fdisk-1GiB-4096.txt"),
    ] {
        let t = tempdir();
        // qemu-img 7.2 cannot open 4096-byte-sector VHDX, so the table is checked on a raw
        // build (every container holds the same disk: see the test below).
        let raw = create(t.path(), "d.img", &["--sector-size", ss]);
        if ss == "512" {
            // sgdisk assumes 512-byte sectors on plain files.
            let v = run_ok(tool("sgdisk").arg("-v").arg(&raw));
            assert!(
                v.contains("No problems found") && !v.contains("Caution"),
                "sgdisk -v:\n{v}"
            );
        }
        // sfdisk reads plain files with 512-byte sectors only; fdisk -b states the size.
        let dump = if ss == "512" {
            run_ok(tool("sfdisk").arg("-d").arg(&raw))
        } else {
            run_ok(
                tool("fdisk")
                    .args([
                        "-b",
                        "4096",
                        "-l",
                        "-o",
                        "Device,Start,End,Sectors,Type-UUID,UUID,Name",
                    ])
                    .arg(&raw),
            )
        };
        // The device column carries the temporary path; name it IMAGE and fold spacing.
        let dump: String = dump
            .replace(raw.to_str().unwrap(), "IMAGE")
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        let want_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/expected")
            .join(expected);
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        if std::env::var_os("NANOFORGE_BLESS").is_some() {
            std::fs::write(&want_path, &dump).unwrap();
        }
        assert_eq!(
            dump,
            want,
            "partition dump differs from {} (NANOFORGE_BLESS=1 rewrites it after review)",
            want_path.display()
        );
    }
}

#[test]
fn esp_is_clean_fat32_and_holds_our_files() {
    let t = tempdir();
    let img = create(t.path(), "d.img", &[]);
    // Cut the ESP out (partition 1 starts at 1 MiB, 260 MiB long).
    let esp = t.path().join("esp.fat");
    run_ok(
        tool("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", esp.display()))
            .args(["bs=1M", "skip=1", "count=260", "status=none"]),
    );
    let fsck = run_ok(tool("fsck.fat").args(["-n", "-v"]).arg(&esp));
    assert!(
        fsck.contains("32 bit entries") && fsck.contains("2048 hidden sectors"),
        "{fsck}"
    );
    let listing = run_ok(tool("mdir").args(["-/", "-b", "-i"]).arg(&esp).arg("::"));
    for p in [
        "::/EFI/Boot/bootx64.efi",
        "::/EFI/Microsoft/Boot/en-US/A long file name.txt",
        "::/EFI/Microsoft/Boot/BCD",
    ] {
        assert!(
            listing.lines().any(|l| l == p),
            "{p} missing from:\n{listing}"
        );
    }
    let got = std::process::Command::new(require("mtype"))
        .args(["-i"])
        .arg(&esp)
        .arg("::/EFI/Boot/bootx64.efi")
        .output()
        .unwrap();
    assert!(got.status.success());
    assert_eq!(got.stdout, pattern(300_000, 7));
    // Our own inspect sees the same files.
    let j = run_ok(nanoforge().args(["inspect", "--json"]).arg(&img));
    assert!(
        j.contains("EFI/Microsoft/Boot/en-US/A long file name.txt"),
        "{j}"
    );
}

#[test]
fn every_container_holds_the_same_disk_and_builds_are_reproducible() {
    let t = tempdir();
    let raw = create_sized(t.path(), "d.img", SMALL, &[]);
    let reference = read(&raw);
    for (name, fmt, extra) in [
        ("d.vhdx", "vhdx", &[][..]),
        ("f.vhdx", "vhdx", &["--fixed"][..]),
        ("b.vhdx", "vhdx", &["--block-size", "32MiB"][..]),
        ("d.vhd", "vpc", &[][..]),
        ("f.vhd", "vpc", &["--fixed"][..]),
    ] {
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let x = create_sized(&a, name, SMALL, extra);
        let y = create_sized(&b, name, SMALL, extra);
        assert!(read(&x) == read(&y), "{name}: two builds differ");
        if fmt == "vhdx" {
            // qemu-img 7.2 has no check for VHD; the byte comparison below covers it.
            run_ok(tool("qemu-img").arg("check").arg(&x));
        }
        let r = to_raw(&x, fmt, t.path());
        assert!(
            read(&r) == reference,
            "{name}: content differs from the raw build"
        );
        // And back through our convert.
        let back = t.path().join(format!("{name}.img"));
        run_ok(nanoforge().arg("convert").arg(&x).arg(&back));
        assert!(
            read(&back) == reference,
            "{name}: our convert to raw differs"
        );
    }
}

#[test]
fn different_seeds_change_every_guid() {
    let t = tempdir();
    let a = t.path().join("a.img");
    let b = t.path().join("b.img");
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "1GiB", "--seed", "one", "-o"])
            .arg(&a),
    );
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "1GiB", "--seed", "two", "-o"])
            .arg(&b),
    );
    let ja = run_ok(nanoforge().args(["inspect", "--json"]).arg(&a));
    let jb = run_ok(nanoforge().args(["inspect", "--json"]).arg(&b));
    let guids = |j: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        let mut g = vec![v["disk_guid"].as_str().unwrap().to_string()];
        for p in v["partitions"].as_array().unwrap() {
            g.push(p["part_guid"].as_str().unwrap().to_string());
        }
        g
    };
    let (ga, gb) = (guids(&ja), guids(&jb));
    assert_eq!(ga.len(), 4);
    for (x, y) in ga.iter().zip(&gb) {
        assert_ne!(x, y);
    }
}

#[test]
fn failures_are_one_clear_line_and_leave_nothing() {
    let t = tempdir();
    let out = t.path().join("small.vhdx");
    let o = run(nanoforge()
        .args(["disk", "create", "--size", "100MiB", "-o"])
        .arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("too small") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(t.path()).unwrap().count(),
        0,
        "something was left behind"
    );
    // An existing output is kept unless --force.
    std::fs::write(&out, b"keep me").unwrap();
    let o = run(nanoforge()
        .args(["disk", "create", "--size", "1GiB", "-o"])
        .arg(&out));
    assert!(!o.status.success());
    assert_eq!(read(&out), b"keep me");
    // Unwritable folder.
    let o = run(nanoforge().args([
        "disk",
        "create",
        "--size",
        "1GiB",
        "-o",
        "/proc/nope/x.vhdx",
    ]));
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
}
