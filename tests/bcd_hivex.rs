//! BCD stores checked with hivex: stores we build are exported by `hivexregedit --export`
//! and their objects and element bytes compared with the layouts in the module's sources
//! (device elements field by field); the real system store (real-hives fixture) is listed
//! by `nanoforge bcd show` with the values hivex reads from it; `nanoforge reg` export and
//! merge are compared with hivexregedit; and the boot files step is booted under OVMF
//! with a GRUB image standing in for bootmgfw.efi.

mod common;

use common::hives::{fixture, normalise, utf16z_hex, utf8_or_latin1};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nanoforge::core::Guid;
use nanoforge::formats::bcd::{self, BuildOptions, Device};
use nanoforge::pipeline::boot::boot_files;
use nanoforge::tree::{Content, Meta, Tree};

// ---------------------------------------------------------------------------------------
// Fixtures and export normalisation (the same approach as tests/regf_hivex.rs)

fn hivex_export(hive: &Path, key: &str) -> String {
    let mut cmd = common::tool("hivexregedit");
    cmd.arg("--export").arg(hive).arg(key);
    let o = common::run(&mut cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    utf8_or_latin1(&o.stdout)
}

// ---------------------------------------------------------------------------------------
// Helpers

const ESP_PART: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01";
const WIN_PART: &str = "99999999-8888-4777-8666-555555555502";
const DISK: &str = "11111111-2222-4333-8444-555555555503";
const BOOTMGR: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";

/// GUID text to the Windows on-disk byte order, computed here independently of the
/// crate: the first three groups little-endian, the last two as written.
fn mixed_endian(text: &str) -> Vec<u8> {
    let t = text.trim_matches(|c| c == '{' || c == '}');
    let groups: Vec<&str> = t.split('-').collect();
    assert_eq!(groups.len(), 5, "{text}");
    let bytes = |g: &str| -> Vec<u8> {
        (0..g.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&g[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let mut b = bytes(g);
        if i < 3 {
            b.reverse();
        }
        out.extend(b);
    }
    out
}

fn gpt(disk: &str, part: &str) -> Device {
    Device::GptPartition {
        disk: disk.parse().unwrap(),
        partition: part.parse().unwrap(),
    }
}

fn options(seed: &[u8]) -> BuildOptions {
    BuildOptions::new(
        gpt(DISK, ESP_PART),
        gpt(DISK, WIN_PART),
        seed,
        0x01da_1234_5678_9abc,
    )
}

/// Normalised hivex export as key path → (value name → normalised data).
fn blocks(export: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    for l in normalise(export) {
        if l.starts_with('[') {
            cur = l[1..l.len() - 1].to_string();
            out.insert(cur.clone(), BTreeMap::new());
        } else {
            let (n, v) = l.split_once('=').unwrap();
            out.get_mut(&cur).unwrap().insert(n.into(), v.into());
        }
    }
    out
}

/// The data bytes of an element as hivex printed them, with their registry type.
fn element(b: &BTreeMap<String, BTreeMap<String, String>>, obj: &str, id: &str) -> (u32, Vec<u8>) {
    let key = format!("Objects\\{obj}\\Elements\\{id}");
    let v = b
        .get(&key)
        .unwrap_or_else(|| panic!("hivex shows no key {key}"))
        .get("\"Element\"")
        .unwrap_or_else(|| panic!("hivex shows no Element value under {key}"));
    let (t, h) = v.strip_prefix("hex(").unwrap().split_once("):").unwrap();
    let data = if h.is_empty() {
        Vec::new()
    } else {
        h.split(',')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect()
    };
    (u32::from_str_radix(t, 16).unwrap(), data)
}

fn object_type(b: &BTreeMap<String, BTreeMap<String, String>>, obj: &str) -> u32 {
    let v = &b[&format!("Objects\\{obj}\\Description")]["\"Type\""];
    let h: Vec<u8> = v
        .strip_prefix("hex(4):")
        .unwrap()
        .split(',')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    u32::from_le_bytes(h.try_into().unwrap())
}

fn sz(s: &str) -> (u32, Vec<u8>) {
    let mut b: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    b.extend([0, 0]);
    (1, b)
}

fn multi_sz(items: &[&str]) -> (u32, Vec<u8>) {
    let mut b = Vec::new();
    for s in items {
        b.extend(s.encode_utf16().flat_map(|u| u.to_le_bytes()));
        b.extend([0, 0]);
    }
    b.extend([0, 0]);
    (7, b)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Check a GPT partition device element field by field (facts-bcd.md §4.2: DiscUtils
/// PartitionRecord, ntloader bcd.h, the real ESP store).
fn check_gpt_device(d: &[u8], disk: &str, part: &str, what: &str) {
    assert_eq!(d.len(), 0x58, "{what}: element length");
    assert_eq!(&d[0x00..0x10], &[0; 16], "{what}: options GUID");
    assert_eq!(le32(d, 0x10), 6, "{what}: device type partition");
    assert_eq!(le32(d, 0x14), 0, "{what}: flags");
    assert_eq!(le32(d, 0x18), 0x48, "{what}: descriptor size");
    assert_eq!(le32(d, 0x1c), 0, "{what}: reserved");
    assert_eq!(
        &d[0x20..0x30],
        &mixed_endian(part)[..],
        "{what}: partition GUID"
    );
    assert_eq!(le32(d, 0x30), 0, "{what}: block-io type hard disk");
    assert_eq!(le32(d, 0x34), 0, "{what}: partition style GPT");
    assert_eq!(&d[0x38..0x48], &mixed_endian(disk)[..], "{what}: disk GUID");
    assert_eq!(&d[0x48..0x58], &[0; 16], "{what}: trailing zeros");
}

fn write(dir: &Path, name: &str, b: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

// ---------------------------------------------------------------------------------------
// Stores we build

#[test]
fn built_store_has_bcdboot_objects_per_hivex() {
    let t = common::tempdir();
    let o = options(b"bcd-test");
    let bytes = bcd::build(&o).unwrap();
    assert_eq!(
        bytes,
        bcd::build(&o).unwrap(),
        "a store built twice differs"
    );
    let store = write(t.path(), "BCD", &bytes);
    let b = blocks(&hivex_export(&store, "\\"));
    let loader = o.loader_guid().braced();
    assert_eq!(loader, Guid::derive(b"bcd-test", "bcd:osloader").braced());

    assert_eq!(
        b["Description"]["\"KeyName\""],
        format!("hex(1):{}", utf16z_hex("BCD00000000"))
    );
    assert_eq!(object_type(&b, BOOTMGR), 0x1010_0002);
    assert_eq!(object_type(&b, &loader), 0x1020_0003);

    let (ty, dev) = element(&b, BOOTMGR, "11000001");
    assert_eq!(ty, 3, "device elements are REG_BINARY");
    check_gpt_device(&dev, DISK, ESP_PART, "{bootmgr} device");
    assert_eq!(
        element(&b, BOOTMGR, "12000002"),
        sz("\\EFI\\Microsoft\\Boot\\bootmgfw.efi")
    );
    assert_eq!(element(&b, BOOTMGR, "12000005"), sz("en-US"));
    assert_eq!(element(&b, BOOTMGR, "23000003"), sz(&loader));
    assert_eq!(element(&b, BOOTMGR, "24000001"), multi_sz(&[&loader]));
    assert_eq!(
        element(&b, BOOTMGR, "14000006"),
        multi_sz(&["{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}"])
    );
    assert_eq!(
        element(&b, BOOTMGR, "25000004"),
        (3, 30u64.to_le_bytes().to_vec())
    );

    for id in ["11000001", "21000001"] {
        let (ty, dev) = element(&b, &loader, id);
        assert_eq!(ty, 3);
        check_gpt_device(&dev, DISK, WIN_PART, &format!("loader {id}"));
    }
    assert_eq!(
        element(&b, &loader, "12000002"),
        sz("\\Windows\\system32\\winload.efi")
    );
    assert_eq!(element(&b, &loader, "22000002"), sz("\\Windows"));
    assert_eq!(element(&b, &loader, "12000005"), sz("en-US"));
    assert_eq!(
        element(&b, &loader, "25000020"),
        (3, vec![0; 8]),
        "nx OptIn"
    );
    assert_eq!(
        element(&b, &loader, "250000c2"),
        (3, vec![1, 0, 0, 0, 0, 0, 0, 0]),
        "bootmenupolicy Standard"
    );
    assert_eq!(
        element(&b, &loader, "14000006"),
        multi_sz(&["{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}"])
    );
    // Global objects as in BCD-Template (facts-bcd.md §5.2).
    assert_eq!(
        element(&b, "{4636856e-540f-4170-a130-a84776f4c654}", "15000011"),
        (3, vec![4, 0, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(
        element(&b, "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}", "16000020"),
        (3, vec![0])
    );

    // `nanoforge bcd show` lists them.
    let shown = common::run_ok(common::nanoforge().args(["bcd", "show"]).arg(&store));
    for want in [
        "Windows Boot Manager".to_string(),
        "identifier              {bootmgr}".into(),
        format!("device                  partition={{{ESP_PART}}} (GPT disk {{{DISK}}})"),
        "path                    \\EFI\\Microsoft\\Boot\\bootmgfw.efi".into(),
        "default                 {default}".into(),
        "displayorder            {default}".into(),
        "timeout                 30".into(),
        "Windows Boot Loader".into(),
        "identifier              {default}".into(),
        format!("osdevice                partition={{{WIN_PART}}} (GPT disk {{{DISK}}})"),
        "path                    \\Windows\\system32\\winload.efi".into(),
        "systemroot              \\Windows".into(),
        "locale                  en-US".into(),
        "nx                      OptIn".into(),
        "bootmenupolicy          Standard".into(),
        "inherit                 {bootloadersettings}".into(),
    ] {
        assert!(shown.contains(&want), "bcd show lacks {want:?}:\n{shown}");
    }
}

#[test]
fn settings_land_where_bcdedit_puts_them_per_hivex() {
    let t = common::tempdir();
    let mut o = options(b"bcd-settings");
    o.timeout = Some(3);
    o.test_signing = true;
    o.ems = Some(bcd::Ems {
        port: 2,
        baud: 57_600,
    });
    o.debugger = Some(bcd::Debugger::Serial {
        port: 1,
        baud: 115_200,
    });
    o.windows = Device::Locate {
        element: 0x1200_0002,
    };
    let store = write(t.path(), "BCD", &bcd::build(&o).unwrap());
    let b = blocks(&hivex_export(&store, "\\"));
    let loader = o.loader_guid().braced();
    let dbg = "{4636856e-540f-4170-a130-a84776f4c654}";
    let ems = "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}";
    let q = |v: u64| (3, v.to_le_bytes().to_vec());
    assert_eq!(element(&b, BOOTMGR, "25000004"), q(3));
    assert_eq!(
        element(&b, &loader, "16000049"),
        (3, vec![1]),
        "testsigning"
    );
    assert_eq!(element(&b, &loader, "260000b0"), (3, vec![1]), "ems");
    assert_eq!(element(&b, &loader, "260000a0"), (3, vec![1]), "debug");
    assert_eq!(element(&b, ems, "15000022"), q(2));
    assert_eq!(element(&b, ems, "15000023"), q(57_600));
    assert_eq!(element(&b, dbg, "15000011"), q(0), "debugtype serial");
    assert_eq!(element(&b, dbg, "15000013"), q(1));
    assert_eq!(element(&b, dbg, "15000014"), q(115_200));
    // locate device (mistyprojects device_locate.htm): type 8, element id at desc+0x14.
    let (_, d) = element(&b, &loader, "21000001");
    assert_eq!(le32(&d, 0x10), 8);
    assert_eq!(le32(&d, 0x20), 0, "locate kind: path from an element");
    assert_eq!(le32(&d, 0x24), 0x1200_0002);
    assert_eq!(le32(&d, 0x28), 0, "no parent descriptor");
    let shown = common::run_ok(common::nanoforge().args(["bcd", "show"]).arg(&store));
    for want in [
        "osdevice                locate=custom:12000002",
        "testsigning             Yes",
        "debugtype               Serial",
        "baudrate                115200",
        "emsport                 2",
        "timeout                 3",
    ] {
        assert!(shown.contains(want), "bcd show lacks {want:?}:\n{shown}");
    }
}

// ---------------------------------------------------------------------------------------
// The real system store

/// Decode a GPT device element the test's own way: (partition GUID, disk GUID) text.
fn device_guids(d: &[u8]) -> (String, String) {
    let text = |b: &[u8]| {
        let mut v = b.to_vec();
        v[0..4].reverse();
        v[4..6].reverse();
        v[6..8].reverse();
        let h: String = v.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    (text(&d[0x20..0x30]), text(&d[0x38..0x48]))
}

fn utf16_text(b: &[u8]) -> String {
    let u: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&u).unwrap()
}

#[test]
fn real_store_is_listed_with_what_hivex_reads() {
    let p = fixture("BCD");
    let b = blocks(&hivex_export(&p, "\\"));
    let shown = common::run_ok(common::nanoforge().args(["bcd", "show"]).arg(&p));
    // {bootmgr} holds the elements bcdboot writes (facts-bcd.md §5.3).
    let bm_ids: Vec<&str> = b
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("Objects\\{BOOTMGR}\\Elements\\")))
        .collect();
    assert_eq!(
        bm_ids,
        [
            "11000001", "12000002", "12000004", "12000005", "14000006", "23000003", "23000006",
            "24000001", "24000010", "25000004"
        ]
    );
    let (_, dev) = element(&b, BOOTMGR, "11000001");
    let (part, disk) = device_guids(&dev);
    let (_, def) = element(&b, BOOTMGR, "23000003");
    let loader = utf16_text(&def);
    let (_, resume) = element(&b, BOOTMGR, "23000006");
    let resume = utf16_text(&resume);
    let (_, ldev) = element(&b, &loader, "21000001");
    let (lpart, ldisk) = device_guids(&ldev);
    let (_, sysroot) = element(&b, &loader, "22000002");
    let (_, lpath) = element(&b, &loader, "12000002");
    let (_, desc) = element(&b, &loader, "12000004");
    assert_eq!(object_type(&b, &loader), 0x1020_0003);
    // The bootmgr section, in bcdedit's order of elements.
    let section = shown
        .split("\n\n")
        .find(|s| s.contains("identifier              {bootmgr}"))
        .expect("no {bootmgr} section");
    let want = format!(
        "Windows Boot Manager\n--------------------\n\
         identifier              {{bootmgr}}\n\
         device                  partition={{{part}}} (GPT disk {{{disk}}})\n\
         path                    \\EFI\\Microsoft\\Boot\\bootmgfw.efi\n\
         description             Windows Boot Manager\n\
         locale                  en-US\n\
         inherit                 {{globalsettings}}\n\
         default                 {{default}}\n\
         resumeobject            {resume}\n\
         displayorder            {{default}}\n\
         toolsdisplayorder       {{memdiag}}\n\
         timeout                 30"
    );
    assert_eq!(section.trim_end(), want);
    let section = shown
        .split("\n\n")
        .find(|s| s.contains("identifier              {default}"))
        .expect("no {default} loader section");
    for want in [
        "Windows Boot Loader".to_string(),
        format!("device                  partition={{{lpart}}} (GPT disk {{{ldisk}}})"),
        format!("osdevice                partition={{{lpart}}} (GPT disk {{{ldisk}}})"),
        format!("path                    {}", utf16_text(&lpath)),
        format!("systemroot              {}", utf16_text(&sysroot)),
        format!("description             {}", utf16_text(&desc)),
        format!("resumeobject            {resume}"),
        "nx                      OptIn".into(),
        "bootmenupolicy          Standard".into(),
        "allowedinmemorysettings 0x15000075".into(),
    ] {
        assert!(section.contains(&want), "loader lacks {want:?}:\n{section}");
    }
    // The Windows partition is on the ESP's disk, like in every bcdboot-made store.
    assert_eq!(ldisk, disk);
    assert!(
        shown.contains("ramdisk=["),
        "WinRE ramdisk device:\n{shown}"
    );
}

// ---------------------------------------------------------------------------------------
// nanoforge reg

#[test]
fn reg_export_equals_hivexregedit() {
    let p = fixture("BCD");
    let ours = common::run_ok(common::nanoforge().args(["reg", "export"]).arg(&p));
    assert_eq!(normalise(&ours), normalise(&hivex_export(&p, "\\")));
    let key = format!("Objects\\{BOOTMGR}");
    let ours = common::run_ok(
        common::nanoforge()
            .args(["reg", "export"])
            .arg(&p)
            .arg(&key),
    );
    let theirs = hivex_export(&p, &format!("\\{key}"));
    assert_eq!(normalise(&ours), normalise(&theirs));
    // -o writes regedit's UTF-16LE with a byte order mark.
    let t = common::tempdir();
    let out = t.path().join("x.reg");
    common::run_ok(
        common::nanoforge()
            .args(["reg", "export"])
            .arg(&p)
            .arg(&key)
            .arg("-o")
            .arg(&out),
    );
    let raw = common::read(&out);
    assert_eq!(&raw[..2], &[0xff, 0xfe]);
    assert_eq!(normalise(&utf16_text_all(&raw[2..])), normalise(&theirs));
}

fn utf16_text_all(b: &[u8]) -> String {
    let u: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&u).unwrap()
}

#[test]
fn reg_new_and_merge_are_atomic() {
    let t = common::tempdir();
    let h = t.path().join("new.hive");
    common::run_ok(common::nanoforge().args(["reg", "new"]).arg(&h));
    let good = write(
        t.path(),
        "good.reg",
        b"Windows Registry Editor Version 5.00\r\n\r\n[\\Software\\Test]\r\n\"Name\"=\"value\"\r\n\"Count\"=dword:0000002a\r\n",
    );
    common::run_ok(
        common::nanoforge()
            .args(["reg", "merge"])
            .arg(&h)
            .arg(&good),
    );
    let b = blocks(&hivex_export(&h, "\\"));
    assert_eq!(
        b["Software\\Test"]["\"Name\""],
        format!("hex(1):{}", utf16z_hex("value"))
    );
    assert_eq!(b["Software\\Test"]["\"Count\""], "hex(4):2a,00,00,00");
    let before = common::read(&h);
    let bad = write(
        t.path(),
        "bad.reg",
        b"Windows Registry Editor Version 5.00\r\n\r\n[\\Software\\Other]\r\n\"X\"=dword:nothex\r\n",
    );
    let o = common::run(common::nanoforge().args(["reg", "merge"]).arg(&h).arg(&bad));
    assert!(!o.status.success(), "a bad .reg file was accepted");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("left unchanged"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        common::read(&h),
        before,
        "the hive changed on a failed merge"
    );
    let left: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

// ---------------------------------------------------------------------------------------
// Boot files step, booted

fn windows_tree(bootmgfw: Vec<u8>) -> Tree {
    let mut t = Tree::new(Meta::default());
    let m = Meta::default();
    let efi = t.mkdir_p("Windows\\Boot\\EFI", &m).unwrap();
    t.add_file(efi, "bootmgfw.efi", m.clone(), Content::bytes(bootmgfw))
        .unwrap();
    t.add_file(
        efi,
        "memtest.efi",
        m.clone(),
        Content::bytes(b"memtest".to_vec()),
    )
    .unwrap();
    let lang = t.add_dir(efi, "en-US", m.clone()).unwrap();
    t.add_file(
        lang,
        "bootmgfw.efi.mui",
        m.clone(),
        Content::bytes(b"mui".to_vec()),
    )
    .unwrap();
    let fonts = t.mkdir_p("Windows\\Boot\\Fonts", &m).unwrap();
    t.add_file(
        fonts,
        "segmono_boot.ttf",
        m,
        Content::bytes(b"font".to_vec()),
    )
    .unwrap();
    t
}

#[test]
fn boot_files_need_bootmgfw() {
    let mut t = Tree::new(Meta::default());
    t.mkdir_p("Windows\\Boot\\EFI", &Meta::default()).unwrap();
    let e = boot_files(&t, &options(b"x")).unwrap_err().to_string();
    assert!(e.contains("Windows\\Boot\\EFI\\bootmgfw.efi"), "{e}");
}

#[test]
fn boot_files_boot_under_ovmf() {
    let t = common::tempdir();
    let seed = "bcd-boot-test";
    // The disk's GUIDs, from the plan of the same command.
    let esp = t.path().join("esp");
    std::fs::create_dir_all(&esp).unwrap();
    let img = t.path().join("boot.vhdx");
    let create = |dry: bool| {
        let mut c = common::nanoforge();
        c.args([
            "disk",
            "create",
            "--size",
            "2GiB",
            "--seed",
            seed,
            "--esp-dir",
        ])
        .arg(&esp)
        .arg("-o")
        .arg(&img);
        if dry {
            c.args(["--dry-run", "--json"]);
        }
        common::run_ok(&mut c)
    };
    let plan: serde_json::Value = serde_json::from_str(&create(true)).unwrap();
    let parts = plan["layout"]["partitions"].as_array().unwrap();
    let guid_of = |role: &str| {
        parts.iter().find(|p| p["role"] == role).unwrap()["part_guid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let disk = plan["layout"]["disk_guid"].as_str().unwrap().to_string();
    let (esp_part, win_part) = (guid_of("esp"), guid_of("windows"));

    let efi = common::boot::grub_image(
        t.path(),
        "search --file --set=root /EFI/Microsoft/Boot/BCD\necho NANOFORGE-BCD-MARKER\nls ($root)/EFI/Microsoft/Boot/",
    );
    let tree = windows_tree(common::read(&efi));
    let opts = BuildOptions::new(
        gpt(&disk, &esp_part),
        gpt(&disk, &win_part),
        seed.as_bytes(),
        0x01da_0000_0000_0000,
    );
    let files = boot_files(&tree, &opts).unwrap();
    assert_eq!(
        files,
        boot_files(&tree, &opts).unwrap(),
        "not deterministic"
    );
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "EFI/Boot/bootx64.efi",
            "EFI/Microsoft/Boot/BCD",
            "EFI/Microsoft/Boot/Fonts/segmono_boot.ttf",
            "EFI/Microsoft/Boot/bootmgfw.efi",
            "EFI/Microsoft/Boot/en-US/bootmgfw.efi.mui",
            "EFI/Microsoft/Boot/memtest.efi",
        ]
    );
    assert_eq!(files["EFI/Boot/bootx64.efi"], common::read(&efi));
    for (p, b) in &files {
        let dest = esp.join(p);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, b).unwrap();
    }
    create(false);
    let serial = common::boot::boot(&img, "vhdx", t.path());
    assert!(
        serial.contains("NANOFORGE-BCD-MARKER"),
        "no marker on the serial console:\n{serial}"
    );
    assert!(
        serial.contains("BCD") && serial.contains("bootmgfw.efi"),
        "GRUB did not list EFI/Microsoft/Boot:\n{serial}"
    );
    // inspect reads the store back from the image: its ESP device is the real ESP.
    let shown = common::run_ok(common::nanoforge().arg("inspect").arg(&img));
    assert!(
        shown.contains(&format!(
            "device                  partition={{{esp_part}}} (GPT disk {{{disk}}})"
        )),
        "{shown}"
    );
}

/// A store built from a template keeps the template's global objects and frame, drops
/// what bcdboot does not carry over (firmware entries, old loaders), and points the boot
/// manager and memdiag at the new ESP. The real system store stands in for BCD-Template.
#[test]
fn store_from_a_template_per_hivex() {
    let t = common::tempdir();
    let real = common::read(&fixture("BCD"));
    let mut o = options(b"bcd-template");
    o.template = Some(real.clone());
    let bytes = bcd::build(&o).unwrap();
    assert_eq!(
        bytes,
        bcd::build(&o).unwrap(),
        "a store built twice differs"
    );
    let store = write(t.path(), "BCD", &bytes);
    let ours = blocks(&hivex_export(&store, "\\"));
    let theirs = blocks(&hivex_export(&fixture("BCD"), "\\"));
    let loader = o.loader_guid().braced();
    let objects: Vec<&str> = ours
        .keys()
        .filter_map(|k| k.strip_prefix("Objects\\"))
        .filter(|k| !k.contains('\\'))
        .collect();
    let mut want = vec![
        "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}",
        "{1afa9c49-16ab-4a5c-901b-212802da9460}",
        "{4636856e-540f-4170-a130-a84776f4c654}",
        "{5189b25c-5558-4bf2-bca4-289b11bd29e2}",
        "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}",
        "{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}",
        "{7ff607e0-4395-11db-b0de-0800200c9a66}",
        BOOTMGR,
        "{b2721d73-1db4-4c62-bf78-c548a880142d}",
        &loader,
    ];
    want.sort();
    assert_eq!(objects, want);
    // Global objects are carried over byte for byte.
    for (k, v) in &theirs {
        if k.starts_with("Objects\\{7ff607e0") || k.starts_with("Objects\\{7ea2e1ac") {
            assert_eq!(ours.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(
        ours["Description"]["\"GuidCache\""],
        theirs["Description"]["\"GuidCache\""]
    );
    let (_, dev) = element(&ours, "{b2721d73-1db4-4c62-bf78-c548a880142d}", "11000001");
    check_gpt_device(&dev, DISK, ESP_PART, "{memdiag} device");
    let (_, dev) = element(&ours, BOOTMGR, "11000001");
    check_gpt_device(&dev, DISK, ESP_PART, "{bootmgr} device");
    assert_eq!(
        element(&ours, BOOTMGR, "24000010"),
        multi_sz(&["{b2721d73-1db4-4c62-bf78-c548a880142d}"])
    );
    assert_eq!(element(&ours, BOOTMGR, "24000001"), multi_sz(&[&loader]));
    assert!(
        !ours.contains_key(&format!("Objects\\{BOOTMGR}\\Elements\\23000006")),
        "resumeobject points at an object that was not carried over"
    );
}
