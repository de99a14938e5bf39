//! WIM → NTFS checked through wimlib: a WIM rich in Windows metadata (made by wimlib from
//! an NTFS volume) is applied by us and by wimlib's own apply (mkntfs + wimlib-imagex
//! apply); both volumes are recaptured by wimlib and compared with `dir --detailed`.
//! Also: `disk create --windows-wim` boots under OVMF and GRUB's NTFS driver reads a
//! marker from the Windows partition; base images land in the image store.

mod common;

use common::*;
use common::{scrambled as pattern, test_sd as sd};
use nanoforge::core::MemDisk;
use nanoforge::core::ReadAt;
use nanoforge::formats::ntfs::{write_volume, NtfsOptions};
use nanoforge::tree::{Content, Meta, Reparse, Tree};
use std::path::{Path, PathBuf};

const T: u64 = 133_000_000_000_000_000;

/// A Windows-like tree with every kind of metadata a WIM carries.
fn rich_tree(marker: &str) -> Tree {
    let mut t = Tree::new(Meta::at(T));
    let a = t.add_security(&sd(544, 0x1F01FF)).unwrap();
    let b = t.add_security(&sd(545, 0x120089)).unwrap();
    let m = |sec, attrs| Meta {
        attributes: attrs,
        security: Some(sec),
        ..Meta::at(T + 10_000_000)
    };
    t.set_meta(Tree::ROOT, m(a, 0x16)).unwrap();
    let win = t.add_dir(Tree::ROOT, "Windows", m(a, 0x10)).unwrap();
    let sys = t.add_dir(win, "System32", m(a, 0x10)).unwrap();
    t.add_file(
        sys,
        "nanoforge-marker.txt",
        m(b, 0x20),
        Content::bytes(marker.as_bytes().to_vec()),
    )
    .unwrap();
    let cfg = t.add_dir(sys, "config", m(a, 0x10)).unwrap();
    for h in ["SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"] {
        t.add_file(
            cfg,
            h,
            m(a, 0x20),
            Content::bytes(pattern(70_000, h.len() as u32)),
        )
        .unwrap();
    }
    for i in 0..300 {
        let data = if i % 3 == 0 {
            pattern(i * 97, i as u32)
        } else {
            format!("file {i}\r\n").repeat(i).into_bytes()
        };
        t.add_file(
            sys,
            &format!("lib{i:03}.dll"),
            m(b, 0x20),
            Content::bytes(data),
        )
        .unwrap();
    }
    let pf = t
        .add_with_dos_name(Tree::ROOT, "Program Files", "PROGRA~1", true, m(a, 0x11))
        .unwrap();
    t.add_with_dos_name(
        pf,
        "Long Application Name.exe",
        "LONGAP~1.EXE",
        false,
        m(b, 0x20),
    )
    .unwrap();
    let target = t
        .add_file(
            sys,
            "linked.dll",
            m(b, 0x20),
            Content::bytes(pattern(9000, 5)),
        )
        .unwrap();
    for i in 0..5 {
        t.add_hard_link(target, win, &format!("link{i}.dll"), None)
            .unwrap();
    }
    let zone = t
        .add_file(
            win,
            "zone.exe",
            m(b, 0x20),
            Content::bytes(pattern(5000, 9)),
        )
        .unwrap();
    t.add_stream(
        zone,
        "Zone.Identifier",
        Content::bytes(b"[ZoneTransfer]\r\nZoneId=3\r\n".to_vec()),
    )
    .unwrap();
    t.add_stream(zone, "big", Content::bytes(pattern(200_000, 10)))
        .unwrap();
    // A junction and a symbolic link (MS-FSCC 2.1.2.5 and 2.1.2.4 reparse buffers).
    let mount = |sub: &str, print: &str| {
        let s: Vec<u8> = sub.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let p: Vec<u8> = print.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut v = Vec::new();
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&(s.len() as u16).to_le_bytes());
        v.extend_from_slice(&((s.len() + 2) as u16).to_le_bytes());
        v.extend_from_slice(&(p.len() as u16).to_le_bytes());
        v.extend_from_slice(&s);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&p);
        v.extend_from_slice(&[0, 0]);
        v
    };
    let j = Meta {
        reparse: Some(Reparse {
            tag: 0xA000_0003,
            data: mount("\\??\\C:\\Windows", "C:\\Windows"),
        }),
        ..m(a, 0x410)
    };
    t.add_dir(Tree::ROOT, "Documents and Settings", j).unwrap();
    let mut sl = mount("\\??\\C:\\Windows\\zone.exe", "C:\\Windows\\zone.exe");
    sl.extend_from_slice(&[0; 4]);
    let len = sl.len();
    // Symlink buffers carry a 4-byte flags field after the four name fields.
    let mut sym = sl[..8].to_vec();
    sym.extend_from_slice(&0u32.to_le_bytes());
    sym.extend_from_slice(&sl[8..len - 4]);
    let s = Meta {
        reparse: Some(Reparse {
            tag: 0xA000_000C,
            data: sym,
        }),
        ..m(b, 0x420)
    };
    t.add_file(win, "zone-link.exe", s, Content::Empty).unwrap();
    t
}

/// Write a tree as a bare NTFS volume file.
fn volume(dir: &Path, name: &str, tree: &Tree) -> PathBuf {
    let opts = NtfsOptions {
        size: 64 << 20,
        serial: 7,
        time: T,
        ..NtfsOptions::default()
    };
    let mut disk = MemDisk::new(opts.size);
    write_volume(tree, &opts, &mut disk, 0).unwrap();
    let p = dir.join(name);
    let mut buf = vec![0u8; opts.size as usize];
    disk.read_at(0, &mut buf).unwrap();
    std::fs::write(&p, buf).unwrap();
    p
}

fn capture_with_acls(src: &Path, wim: &Path) {
    run_ok(
        tool("wimlib-imagex")
            .arg("capture")
            .arg(src)
            .arg(wim)
            .args(["img", "--compress=lzx"]),
    );
}

/// Lines of `dir --detailed` that describe where a blob sits in that WIM file (offset,
/// compressed size and flags, part number, reference count): they depend on how and in what
/// order the WIM was written, not on the volume, so they are left out. Everything else is
/// compared: paths, short names, attributes, security descriptors, the three times, reparse
/// tags and data hashes, link counts, and every stream's name, hash and size.
const LAYOUT_FIELDS: [&str; 5] = [
    "Offset in WIM",
    "Compressed size",
    "Part Number",
    "Reference Count",
    "Flags",
];

/// Hard-link group ids are the volume's MFT record numbers, which differ between writers;
/// they are renumbered in order of first appearance, so the grouping itself is compared.
fn detailed(wim: &Path) -> String {
    let mut groups: Vec<String> = Vec::new();
    run_ok(
        tool("wimlib-imagex")
            .arg("dir")
            .arg(wim)
            .arg("1")
            .arg("--detailed"),
    )
    .lines()
    .filter(|l| !LAYOUT_FIELDS.iter().any(|f| l.trim_start().starts_with(f)))
    .map(|l| match l.split_once("Link Group ID       = ") {
        Some((_, id)) => {
            let n = groups.iter().position(|g| g == id).unwrap_or_else(|| {
                groups.push(id.to_string());
                groups.len() - 1
            });
            format!("Link Group ID = #{n}\n")
        }
        None => format!("{l}\n"),
    })
    .collect()
}

/// Renumber `Link Group ID = #n` lines in order of first appearance (after filtering).
fn renumber_groups(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    text.lines()
        .map(|l| match l.strip_prefix("Link Group ID = ") {
            Some(id) => {
                let n = seen.iter().position(|g| g == id).unwrap_or_else(|| {
                    seen.push(id.to_string());
                    seen.len() - 1
                });
                format!("Link Group ID = #{n}\n")
            }
            None => format!("{l}\n"),
        })
        .collect()
}

/// Compare two listings and show a diff when they differ.
fn assert_same(dir: &Path, a: &str, b: &str, what: &str) {
    if a == b {
        return;
    }
    let (pa, pb) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let d = run(tool("diff").arg("-u").arg(&pa).arg(&pb));
    let text = String::from_utf8_lossy(&d.stdout);
    panic!("{what}:\n{}", text.chars().take(6000).collect::<String>());
}

#[test]
fn our_apply_and_wimlibs_apply_recapture_identically() {
    let t = tempdir();
    let src_vol = volume(t.path(), "src.ntfs", &rich_tree("marker-7d1e"));
    let src_wim = t.path().join("src.wim");
    capture_with_acls(&src_vol, &src_wim);
    // Ours.
    let ours = t.path().join("ours.ntfs");
    run_ok(
        nanoforge()
            .args(["wim", "apply"])
            .arg(&src_wim)
            .arg("1")
            .arg("--ntfs-image")
            .arg(&ours),
    );
    let fix = run_ok(tool("ntfsfix").arg("-n").arg(&ours));
    assert!(fix.contains("processed successfully"), "{fix}");
    // wimlib's: mkntfs on a sparse file, then apply.
    let theirs = t.path().join("theirs.ntfs");
    std::fs::File::create(&theirs)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run_ok(tool("mkntfs").args(["-F", "-Q", "-q"]).arg(&theirs));
    run_ok(
        tool("wimlib-imagex")
            .arg("apply")
            .arg(&src_wim)
            .arg("1")
            .arg(&theirs),
    );
    let (re_ours, re_theirs) = (t.path().join("re-ours.wim"), t.path().join("re-theirs.wim"));
    capture_with_acls(&ours, &re_ours);
    capture_with_acls(&theirs, &re_theirs);
    let (a, b, c) = (detailed(&src_wim), detailed(&re_ours), detailed(&re_theirs));
    assert!(
        a.contains("Zone.Identifier") && a.contains("PROGRA~1") && a.contains("Reparse Tag"),
        "fixture lacks metadata:\n{a}"
    );
    assert_same(
        t.path(),
        &a,
        &b,
        "our volume recaptures differently from the source WIM",
    );
    assert_same(
        t.path(),
        &c,
        &b,
        "wimlib's volume and ours recapture differently",
    );
}

/// A base image WIM: image 1 the container OS, image 2 a utility VM, with the XML fields the
/// store is named from.
fn base_wim(dir: &Path) -> PathBuf {
    let vol = volume(dir, "base.ntfs", &rich_tree("base-image"));
    let uvm = volume(dir, "uvm.ntfs", &rich_tree("utility-vm"));
    let wim = dir.join("base.wim");
    capture_with_acls(&vol, &wim);
    run_ok(
        tool("wimlib-imagex")
            .arg("append")
            .arg(&uvm)
            .arg(&wim)
            .arg("uvm"),
    );
    run_ok(tool("wimlib-imagex").arg("info").arg(&wim).arg("1").args([
        "--image-property",
        "NAME=NanoServer",
        "--image-property",
        "WINDOWS/VERSION/MAJOR=10",
        "--image-property",
        "WINDOWS/VERSION/MINOR=0",
        "--image-property",
        "WINDOWS/VERSION/BUILD=10586",
        "--image-property",
        "WINDOWS/VERSION/SPBUILD=8",
        "--image-property",
        "WINDOWS/EDITIONID=ServerDatacenterNano",
    ]));
    wim
}

const STORE: &str = "ProgramData/Microsoft/Windows/Images/CN=Microsoft_NanoServer_10.0.10586.8";

#[test]
fn windows_wim_and_base_image_boot_and_land_in_the_store() {
    let t = tempdir();
    let os_vol = volume(
        t.path(),
        "os.ntfs",
        &rich_tree("windows-partition-marker-51c3"),
    );
    let os_wim = t.path().join("os.wim");
    capture_with_acls(&os_vol, &os_wim);
    let base = base_wim(t.path());
    let esp = t.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/Boot")).unwrap();
    let efi = common::boot::grub_image(
        t.path(),
        &format!(
            "search --file --set=root /Windows/System32/nanoforge-marker.txt\necho NTFS-ROOT-FOUND\n\
             cat ($root)/Windows/System32/nanoforge-marker.txt\necho\ncat \"($root)/{STORE}/metadata.json\""
        ),
    );
    std::fs::copy(&efi, esp.join("EFI/Boot/bootx64.efi")).unwrap();
    let img = t.path().join("host.vhdx");
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "2GiB", "--esp-dir"])
            .arg(&esp)
            .arg("--windows-wim")
            .arg(format!("{}:1", os_wim.display()))
            .arg("--base-image")
            .arg(&base)
            .arg("-o")
            .arg(&img),
    );
    run_ok(tool("qemu-img").arg("check").arg(&img));
    // GRUB's own NTFS driver finds the Windows partition and reads what we wrote.
    let serial = common::boot::boot(&img, "vhdx", t.path());
    assert!(
        serial.contains("windows-partition-marker-51c3"),
        "marker not read by GRUB:\n{serial}"
    );
    assert!(
        serial.contains("\"Name\":\"NanoServer\""),
        "metadata.json not read by GRUB:\n{serial}"
    );
    // inspect summarises the volume and the store.
    let text = run_ok(nanoforge().arg("inspect").arg(&img));
    assert!(
        text.contains("NTFS") && text.contains("Windows\\") && text.contains("ProgramData\\"),
        "{text}"
    );

    // Cut the Windows partition out (partition 3) and check it from outside.
    let raw = t.path().join("host.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&img)
            .arg(&raw),
    );
    let j: serde_json::Value =
        serde_json::from_str(&run_ok(nanoforge().args(["inspect", "--json"]).arg(&img))).unwrap();
    let p3 = &j["partitions"][2];
    let (off, size) = (p3["offset"].as_u64().unwrap(), p3["size"].as_u64().unwrap());
    let vol = t.path().join("windows.ntfs");
    run_ok(
        tool("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", vol.display()))
            .args([
                "bs=1M",
                &format!("skip={}", off >> 20),
                &format!("count={}", size >> 20),
                "status=none",
                "conv=sparse",
            ]),
    );
    let fix = run_ok(tool("ntfsfix").arg("-n").arg(&vol));
    assert!(fix.contains("processed successfully"), "{fix}");
    let cat = |path: &str| -> Vec<u8> {
        let o = run(tool("ntfscat").arg(&vol).arg(path));
        assert!(
            o.status.success(),
            "ntfscat {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let meta: serde_json::Value =
        serde_json::from_slice(&cat(&format!("{STORE}/metadata.json"))).unwrap();
    let o = meta.as_object().unwrap();
    assert_eq!(o.len(), 5);
    assert_eq!(o["Name"], "NanoServer");
    assert_eq!(o["Version"], "10.0.10586.8");
    assert_eq!(o["Path"], format!("C:\\{}", STORE.replace('/', "\\")));
    assert!(o["Size"].as_u64().unwrap() > 0);
    assert!(o["CreatedTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        cat(&format!("{STORE}/version.wcx")),
        b"BuildNumber=10586\r\nProductName=ServerDatacenterNano\r\n"
    );
    for (src, dst) in [
        ("SYSTEM", "System_Base"),
        ("SOFTWARE", "Software_Base"),
        ("SAM", "Sam_Base"),
        ("SECURITY", "Security_Base"),
        ("DEFAULT", "DefaultUser_Base"),
    ] {
        assert_eq!(
            cat(&format!("{STORE}/Hives/{dst}")),
            cat(&format!("{STORE}/Files/Windows/System32/config/{src}")),
            "{dst}"
        );
    }
    assert_eq!(
        cat(&format!(
            "{STORE}/BaseOs/Windows/System32/nanoforge-marker.txt"
        )),
        b"utility-vm"
    );
    // blank.vhdx: a valid dynamic VHDX whose partition holds a clean NTFS volume.
    let blank = t.path().join("blank.vhdx");
    std::fs::write(
        &blank,
        cat("ProgramData/Microsoft/Windows/Images/blank.vhdx"),
    )
    .unwrap();
    run_ok(tool("qemu-img").arg("check").arg(&blank));
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        tool("qemu-img").args(["info", "--output=json"]).arg(&blank),
    ))
    .unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(20 << 30));
    assert_eq!(info["cluster-size"].as_u64(), Some(1 << 20));
    let braw = t.path().join("blank.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&blank)
            .arg(&braw),
    );
    let bj: serde_json::Value =
        serde_json::from_str(&run_ok(nanoforge().args(["inspect", "--json"]).arg(&blank))).unwrap();
    assert_eq!(bj["partitions"].as_array().unwrap().len(), 1);
    let (boff, bsize) = (
        bj["partitions"][0]["offset"].as_u64().unwrap(),
        bj["partitions"][0]["size"].as_u64().unwrap(),
    );
    let bvol = t.path().join("blank.ntfs");
    run_ok(
        tool("dd")
            .arg(format!("if={}", braw.display()))
            .arg(format!("of={}", bvol.display()))
            .args([
                "bs=1M",
                &format!("skip={}", boff >> 20),
                &format!("count={}", bsize >> 20),
                "status=none",
                "conv=sparse",
            ]),
    );
    let fix = run_ok(tool("ntfsfix").arg("-n").arg(&bvol));
    assert!(fix.contains("processed successfully"), "{fix}");

    // The Files subtree recaptured by wimlib equals the base WIM's image 1.
    let re = t.path().join("re.wim");
    capture_with_acls(&vol, &re);
    let sep = "----------------------------------------------------------------------------\n";
    let files = renumber_groups(
        &detailed(&re)
            .split(sep)
            .filter(|e| e.contains(&format!("Full Path           = \"/{STORE}/Files")))
            .map(|e| {
                e.replace(&format!("/{STORE}/Files\""), "/\"")
                    .replace(&format!("/{STORE}/Files/"), "/")
            })
            .collect::<Vec<_>>()
            .join(sep),
    );
    let source = renumber_groups(
        &detailed(&base)
            .split(sep)
            .filter(|e| e.contains("Full Path"))
            .collect::<Vec<_>>()
            .join(sep),
    );
    assert_same(
        t.path(),
        &source,
        &files,
        "the store's Files subtree differs from the base image",
    );
}

#[test]
fn two_base_images_share_one_store_and_duplicates_are_refused() {
    let t = tempdir();
    let os_vol = volume(t.path(), "os.ntfs", &rich_tree("two-bases"));
    let os_wim = t.path().join("os.wim");
    capture_with_acls(&os_vol, &os_wim);
    let with_uvm = base_wim(t.path());
    // A second base image without a utility VM, with another version.
    let plain = t.path().join("plain.wim");
    capture_with_acls(
        &volume(t.path(), "plain.ntfs", &rich_tree("second-base")),
        &plain,
    );
    run_ok(
        tool("wimlib-imagex")
            .arg("info")
            .arg(&plain)
            .arg("1")
            .args([
                "--image-property",
                "NAME=WindowsServerCore",
                "--image-property",
                "WINDOWS/VERSION/MAJOR=10",
                "--image-property",
                "WINDOWS/VERSION/MINOR=0",
                "--image-property",
                "WINDOWS/VERSION/BUILD=14300",
                "--image-property",
                "WINDOWS/EDITIONID=ServerDatacenterCore",
            ]),
    );
    let img = t.path().join("two.img");
    let mut c = nanoforge();
    c.args(["disk", "create", "--size", "1GiB", "--windows-wim"])
        .arg(format!("{}:1", os_wim.display()));
    c.arg("--base-image")
        .arg(&with_uvm)
        .arg("--base-image")
        .arg(&plain)
        .arg("-o")
        .arg(&img);
    run_ok(&mut c);
    let text = run_ok(nanoforge().arg("inspect").arg(&img));
    assert!(
        text.contains("CN=Microsoft_NanoServer_10.0.10586.8"),
        "{text}"
    );
    assert!(
        text.contains("CN=Microsoft_WindowsServerCore_10.0.14300.0"),
        "{text}"
    );
    // The same image twice gives the same store name: refused before anything is written.
    let dup = t.path().join("dup.img");
    let o = run(nanoforge()
        .args(["disk", "create", "--size", "1GiB", "--base-image"])
        .arg(&plain)
        .arg("--base-image")
        .arg(&plain)
        .arg("-o")
        .arg(&dup));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("store name") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!dup.exists());
}

#[test]
fn a_disk_without_base_images_has_no_store() {
    let t = tempdir();
    let os_vol = volume(t.path(), "os.ntfs", &rich_tree("no-store"));
    let os_wim = t.path().join("os.wim");
    capture_with_acls(&os_vol, &os_wim);
    let img = t.path().join("plain.img");
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "1GiB", "--windows-wim"])
            .arg(format!("{}:1", os_wim.display()))
            .arg("-o")
            .arg(&img),
    );
    let text = run_ok(nanoforge().arg("inspect").arg(&img));
    assert!(
        text.contains("Windows\\") && !text.contains("ProgramData"),
        "{text}"
    );
}
