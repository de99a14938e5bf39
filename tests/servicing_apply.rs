//! Offline servicing end to end, checked by tools we did not write: SDDL against the
//! descriptors mkntfs writes; synthetic package cabs from our writer and from `gcab -c`
//! listed by `cabextract -l` (and tested by `cabextract -t`); Guest, Compute and Containers
//! with their language packs applied to a small tree with fresh SYSTEM/SOFTWARE hives,
//! written as an NTFS volume, then read back with `ntfscat`, `ntfsls`, `ntfsinfo`,
//! `ntfssecaudit` (ntfs-3g) and the hives with `hivexregedit --export`. Also: request
//! errors, damaged packages and hostile cabs.
mod common;
use common::FileDisk;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use nanoforge::formats::ntfs::{write_volume, NtfsOptions};
use nanoforge::formats::regf::{Hive, Value};
use nanoforge::servicing::catalog::Catalog;
use nanoforge::servicing::media::Media;
use nanoforge::servicing::project::{
    apply_packages, load, LoadedPackage, ProjectOptions, ServicingReport,
};
use nanoforge::servicing::resolve::{resolve, Part, Request, ResolvedPackage};
use nanoforge::servicing::synth::{self, SynthKind};
use nanoforge::servicing::{cab, sddl};
use nanoforge::tree::{Content, Meta, Tree};

/// FILETIME of 2023-11-14 22:13:20 UTC (SOURCE_DATE_EPOCH 1700000000 elsewhere).
const TS: u64 = 133_444_736_000_000_000;
const LANG: &str = "en-US";
const PKT: &str = "6e616e6f666f7267";
const SVCHOST: &str = "Microsoft\\Windows NT\\CurrentVersion\\Svchost";

// ---------------------------------------------------------------------------------------
// Helpers

/// Cab members: stored name and bytes.
type Members = Vec<(String, Vec<u8>)>;

fn identity(kind: SynthKind, lang: Option<&str>) -> String {
    format!(
        "{}~{PKT}~amd64~{}~10.0.14393.0",
        kind.package_name(),
        lang.unwrap_or("")
    )
}

/// `cabextract -l` as sorted (size, `/` name).
fn cabextract_list(p: &Path) -> Vec<(u64, String)> {
    let text = common::run_ok(common::tool("cabextract").arg("-l").arg(p));
    let mut v: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('|').map(str::trim);
            let size = cols.next()?.parse::<u64>().ok()?;
            let _date = cols.next()?;
            Some((size, cols.next()?.replace('\\', "/")))
        })
        .collect();
    v.sort();
    v
}

fn our_list(p: &Path) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = cab::list(p)
        .unwrap()
        .iter()
        .map(|e| (e.size, e.name.replace('\\', "/")))
        .collect();
    v.sort();
    v
}

/// A media folder with the synthetic cabs of `kinds` (neutral, and language packs when
/// `with_lang`).
fn make_media(root: &Path, kinds: &[SynthKind], with_lang: bool) {
    let pk = root.join("NanoServer/Packages");
    std::fs::create_dir_all(pk.join(LANG)).unwrap();
    std::fs::write(root.join("NanoServer/NanoServer.wim"), b"placeholder").unwrap();
    for k in kinds {
        synth::write_cab(
            &pk.join(k.cab_path(None)),
            &synth::synthetic_package(*k, None),
        )
        .unwrap();
        if with_lang {
            let rel = k.cab_path(Some(LANG)).replace('\\', "/");
            synth::write_cab(&pk.join(rel), &synth::synthetic_package(*k, Some(LANG))).unwrap();
        }
    }
}

fn request(p: &[&str], edition: &str) -> Request {
    Request {
        packages: p.iter().map(|s| s.to_string()).collect(),
        edition: edition.into(),
        release: "RTM".into(),
    }
}

fn base_tree() -> Tree {
    let mut t = Tree::new(Meta::at(TS));
    t.mkdir_p("Windows\\System32\\config", &Meta::at(TS))
        .unwrap();
    t
}

fn fresh_hives() -> (Hive, Hive) {
    let mut sys = Hive::new_empty("SYSTEM", TS);
    sys.create_key("Select", TS).unwrap();
    sys.set_value("Select", Value::dword("Current", 1)).unwrap();
    sys.create_key("ControlSet001\\Control", TS).unwrap();
    (sys, Hive::new_empty("SOFTWARE", TS))
}

/// Resolve, load and apply, the way the build pipeline chains them.
fn service(
    media_root: &Path,
    req: &Request,
    tree: &mut Tree,
    sys: &mut Hive,
    soft: &mut Hive,
) -> Result<ServicingReport, String> {
    let media = Media::open(media_root, None).map_err(|e| e.to_string())?;
    let cat = Catalog::embedded().unwrap();
    let resolved = resolve(req, &cat, &media).map_err(|e| e.to_string())?;
    let loaded: Vec<LoadedPackage> = resolved
        .iter()
        .map(load)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let opts = ProjectOptions {
        timestamp: TS,
        ..ProjectOptions::default()
    };
    apply_packages(tree, sys, soft, &loaded, &opts).map_err(|e| e.to_string())
}

/// State to compare before and after a failed servicing run.
fn snapshot(tree: &Tree, sys: &Hive, soft: &Hive) -> (usize, Vec<u8>, Vec<u8>) {
    (
        tree.len(),
        sys.to_bytes().unwrap(),
        soft.to_bytes().unwrap(),
    )
}

fn write_image(dir: &Path, tree: &Tree) -> PathBuf {
    let size = 64u64 << 20;
    let p = dir.join("vol.img");
    let f = File::create(&p).unwrap();
    f.set_len(size).unwrap();
    let opts = NtfsOptions {
        size,
        serial: 0x0123_4567_89AB_CDEF,
        label: "Nano".into(),
        time: TS,
        ..NtfsOptions::default()
    };
    write_volume(tree, &opts, &mut FileDisk(f, size), 0).unwrap();
    p
}

fn ntfscat(img: &Path, path: &str) -> Option<Vec<u8>> {
    let out = common::run(common::tool("ntfscat").arg(img).arg(path));
    out.status.success().then_some(out.stdout)
}

fn ntfsinfo(img: &Path, path: &str) -> String {
    common::run_ok(common::tool("ntfsinfo").arg("-F").arg(path).arg(img))
}

fn utf16_text(bytes: &[u8]) -> String {
    let u: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&u).unwrap()
}

/// `hivexregedit --export` parsed into lower-cased key path → value name → normal form:
/// `sz:`, `expand_sz:`, `multi_sz:a|b`, `dword:xxxxxxxx`, `qword:N`, `hex:..`, `hex(N):..`.
fn hivex_export(bytes: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    let dir = common::tempdir();
    let p = dir.path().join("hive");
    std::fs::write(&p, bytes).unwrap();
    let text = common::run_ok(
        common::tool("hivexregedit")
            .arg("--export")
            .arg(&p)
            .arg("\\"),
    );
    let joined = text.replace("\\\r\n", "").replace("\\\n", "");
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    let hex = |h: &str| -> Vec<u8> {
        h.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect()
    };
    for l in joined.lines().map(|l| l.trim_end_matches('\r')) {
        if l.starts_with('[') && l.ends_with(']') {
            cur = l[1..l.len() - 1].to_ascii_lowercase();
            out.entry(cur.clone()).or_default();
            continue;
        }
        let (name, rhs) = if let Some(r) = l.strip_prefix("@=") {
            (String::new(), r)
        } else if let Some(rest) = l.strip_prefix('"') {
            let (n, r) = rest.split_once("\"=").expect("value line");
            (n.to_string(), r)
        } else {
            continue;
        };
        let shown = if let Some(h) = rhs.strip_prefix("hex(1):") {
            format!("sz:{}", utf16_text(&hex(h)).trim_end_matches('\0'))
        } else if let Some(h) = rhs.strip_prefix("hex(2):") {
            format!("expand_sz:{}", utf16_text(&hex(h)).trim_end_matches('\0'))
        } else if let Some(h) = rhs.strip_prefix("hex(7):") {
            let t = utf16_text(&hex(h));
            let items: Vec<&str> = t.split('\0').filter(|s| !s.is_empty()).collect();
            format!("multi_sz:{}", items.join("|"))
        } else if let Some(h) = rhs.strip_prefix("hex(b):") {
            let b = hex(h);
            format!("qword:{:#x}", u64::from_le_bytes(b.try_into().unwrap()))
        } else if let Some(s) = rhs.strip_prefix('"') {
            format!("sz:{}", s.trim_end_matches('"'))
        } else {
            rhs.to_string()
        };
        out.get_mut(&cur).unwrap().insert(name, shown);
    }
    out
}

fn value<'a>(e: &'a BTreeMap<String, BTreeMap<String, String>>, key: &str, name: &str) -> &'a str {
    e.get(&key.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("hivexregedit shows no key {key}"))
        .get(name)
        .unwrap_or_else(|| panic!("hivexregedit shows no value {key}!{name}"))
}

/// `ntfssecaudit -v` of one file: the hex dump of its security descriptor, as bytes.
fn ntfssecaudit_descriptor(img: &Path, path: &str) -> Vec<u8> {
    let out = common::run(common::tool("ntfssecaudit").arg("-v").arg(img).arg(path));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut bytes = Vec::new();
    for l in text.lines() {
        // Hex dump lines: a 6-digit offset, then up to four groups of 4 bytes in stored
        // order ("000000  01000490 48000000 …").
        let mut it = l.split_whitespace();
        let Some(off) = it.next() else { continue };
        if off.len() != 6 || !off.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        if usize::from_str_radix(off, 16).unwrap() != bytes.len() {
            continue;
        }
        for group in it {
            assert!(
                group.len() % 2 == 0 && group.chars().all(|c| c.is_ascii_hexdigit()),
                "unexpected ntfssecaudit line {l:?}"
            );
            for i in (0..group.len()).step_by(2) {
                bytes.push(u8::from_str_radix(&group[i..i + 2], 16).unwrap());
            }
        }
    }
    assert!(
        !bytes.is_empty(),
        "ntfssecaudit -v {path} printed no descriptor:\n{text}"
    );
    bytes
}

fn member<'a>(m: &'a [(String, Vec<u8>)], suffix: &str) -> (&'a str, &'a [u8]) {
    let (n, b) = m
        .iter()
        .find(|(n, _)| {
            n.to_ascii_lowercase()
                .ends_with(&suffix.to_ascii_lowercase())
        })
        .unwrap_or_else(|| panic!("no member ending {suffix}"));
    (n.as_str(), b.as_slice())
}

// ---------------------------------------------------------------------------------------
// Cabinets

#[test]
fn synthetic_cabs_from_our_writer_and_gcab_list_the_same_as_cabextract() {
    let tmp = common::tempdir();
    for kind in SynthKind::ALL {
        for lang in [None, Some(LANG)] {
            let members = synth::synthetic_package(kind, lang);
            let ours = tmp.path().join("ours.cab");
            synth::write_cab(&ours, &members).unwrap();
            // Deterministic: the same members give the same bytes.
            let again = tmp.path().join("again.cab");
            synth::write_cab(&again, &members).unwrap();
            assert_eq!(common::read(&ours), common::read(&again), "{kind:?}");
            let t = common::run_ok(common::tool("cabextract").arg("-t").arg(&ours));
            assert!(t.contains("All done, no errors"), "{t}");

            let src = tmp.path().join(format!("src-{kind:?}-{lang:?}"));
            let mut rel = Vec::new();
            for (n, b) in &members {
                let r = n.replace('\\', "/");
                let p = src.join(&r);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b).unwrap();
                rel.push(r);
            }
            // gcab without and with MSZIP compression.
            let plain = tmp.path().join("gcab.cab");
            let zipped = tmp.path().join("gcab-z.cab");
            for (flag, out) in [("-c", &plain), ("-cz", &zipped)] {
                let _ = std::fs::remove_file(out);
                common::run_ok(
                    common::tool("gcab")
                        .current_dir(&src)
                        .arg(flag)
                        .arg(out)
                        .args(&rel),
                );
            }
            let mut want: Vec<(u64, String)> = members
                .iter()
                .map(|(n, b)| (b.len() as u64, n.replace('\\', "/")))
                .collect();
            want.sort();
            for cabfile in [&ours, &plain, &zipped] {
                assert_eq!(cabextract_list(cabfile), want, "{kind:?} {lang:?}");
                assert_eq!(our_list(cabfile), want, "{kind:?} {lang:?}");
                let got = cab::extract_all(cabfile).unwrap();
                let want_bytes: Vec<(String, Vec<u8>)> = {
                    let mut v: Vec<_> = members
                        .iter()
                        .map(|(n, b)| (n.replace('\\', "/"), b.clone()))
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(got, want_bytes);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Security descriptors

/// Our SDDL parser gives the bytes of descriptors made by others: the two mkntfs writes
/// into every new volume's $Secure:$SDS (read back with ntfscat), and the hand-built one in
/// tests/common.
#[test]
fn sddl_matches_descriptors_written_by_mkntfs_and_the_test_helper() {
    let tmp = common::tempdir();
    let img = tmp.path().join("mk.img");
    File::create(&img).unwrap().set_len(16 << 20).unwrap();
    common::run_ok(common::tool("mkntfs").args(["-F", "-f", "-q"]).arg(&img));
    let out = common::run(
        common::tool("ntfscat")
            .args(["-a", "0x80", "-n", "$SDS"])
            .arg(&img)
            .arg("$Secure"),
    );
    assert!(out.status.success(), "ntfscat $Secure:$SDS failed");
    let sds = out.stdout;
    // Two entries at 0x0 and 0x80; each a 20-byte header (length at +16) and the descriptor.
    for (at, mask) in [(0usize, "0x120089"), (0x80, "0x12019f")] {
        let len = u32::from_le_bytes(sds[at + 16..at + 20].try_into().unwrap()) as usize;
        let theirs = &sds[at + 20..at + len];
        let ours = sddl::parse(&format!("O:BAG:BAD:(A;;{mask};;;SY)(A;;{mask};;;BA)")).unwrap();
        assert_eq!(ours, theirs, "mkntfs descriptor at {at:#x}");
    }
    assert_eq!(
        sddl::parse("O:BAG:BAD:(A;;0x1200a9;;;BU)").unwrap(),
        common::test_sd(544, 0x1200a9)
    );
    assert_eq!(
        sddl::parse("O:S-1-5-32-551G:BAD:(A;;FA;;;BU)").unwrap(),
        common::test_sd(551, 0x001F_01FF)
    );
}

// ---------------------------------------------------------------------------------------
// Applying packages

#[test]
fn guest_compute_containers_with_language_packs_land_in_the_volume_and_hives() {
    let tmp = common::tempdir();
    let kinds = [SynthKind::Guest, SynthKind::Compute, SynthKind::Containers];
    make_media(tmp.path(), &kinds, true);
    let mut tree = base_tree();
    let (mut sys, mut soft) = fresh_hives();
    // A svchost group the image already has: the package appends its service to it.
    soft.create_key(SVCHOST, TS).unwrap();
    soft.set_value(SVCHOST, Value::multi_sz("nfdemogroup", &["nfdemoexisting"]))
        .unwrap();
    let report = service(
        tmp.path(),
        &request(&["Containers", "Guest", "Compute", "guest"], "Standard"),
        &mut tree,
        &mut sys,
        &mut soft,
    )
    .unwrap();

    // The report: six packages, neutral before language pack, drivers handed over.
    let ids: Vec<&str> = report
        .packages
        .iter()
        .map(|p| p.identity.as_str())
        .collect();
    let mut want = Vec::new();
    for k in [SynthKind::Containers, SynthKind::Guest, SynthKind::Compute] {
        want.push(identity(k, None));
        want.push(identity(k, Some(LANG)));
    }
    assert_eq!(ids, want);
    assert!(report.fully_applied(), "{:#?}", report.packages);
    assert_eq!(report.driver_payloads.len(), 1);
    let d = &report.driver_payloads[0];
    assert_eq!(d.inf, "nfdemostor.inf");
    assert_eq!(d.package, identity(SynthKind::Guest, None));
    let names: Vec<&str> = d.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["nfdemostor.inf", "nfdemostor.cat", "nfdemostor.sys"]
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"driver_payloads\"") && json.contains("nfdemostor.sys"));

    // Hives go into the tree, the tree becomes a volume.
    let cfg = tree.lookup("Windows\\System32\\config").unwrap();
    tree.add_file(
        cfg,
        "SYSTEM",
        Meta::at(TS),
        Content::bytes(sys.to_bytes().unwrap()),
    )
    .unwrap();
    tree.add_file(
        cfg,
        "SOFTWARE",
        Meta::at(TS),
        Content::bytes(soft.to_bytes().unwrap()),
    )
    .unwrap();
    let img = write_image(tmp.path(), &tree);
    // ntfs-3g's security audit: every descriptor in $SDS, $SII and $SDH agrees. (Its scan
    // of the mirror half reads past the end of the stream on our volumes and reports the
    // bytes it finds there; that half is not asserted here.)
    let audit = common::run(common::tool("ntfssecaudit").arg("-a").arg(&img));
    let audit_text = String::from_utf8_lossy(&audit.stdout);
    for line in [
        "0 errors in $SDS-1",
        "0 errors in $SII",
        "0 errors in $SDH",
        "All keys are present in all lists",
    ] {
        assert!(audit_text.contains(line), "{line}:\n{audit_text}");
    }

    // Files at their destinations, hard-linked to the WinSxS copies.
    let cabs: BTreeMap<(String, bool), Members> = kinds
        .iter()
        .flat_map(|k| {
            [
                (
                    (k.short_name().to_string(), false),
                    synth::synthetic_package(*k, None),
                ),
                (
                    (k.short_name().to_string(), true),
                    synth::synthetic_package(*k, Some(LANG)),
                ),
            ]
        })
        .collect();
    let expect_files = [
        ("Guest", false, "nfdemoguest.dll", "Windows/System32"),
        ("Compute", false, "nfdemovmms.exe", "Windows/System32"),
        (
            "Compute",
            false,
            "nfdemovsp.sys",
            "Windows/System32/Drivers",
        ),
        (
            "Containers",
            false,
            "nfdemocontainer.dll",
            "Windows/System32",
        ),
        (
            "Containers",
            false,
            "README.txt",
            "ProgramData/NanoforgeDemo/Containers",
        ),
        (
            "Guest",
            true,
            "nfdemoguest.dll.mui",
            "Windows/System32/en-US",
        ),
        (
            "Compute",
            true,
            "nfdemovmms.exe.mui",
            "Windows/System32/en-US",
        ),
        (
            "Containers",
            true,
            "nfdemocontainer.dll.mui",
            "Windows/System32/en-US",
        ),
    ];
    for (pkg, lang, file, dest) in expect_files {
        let m = &cabs[&(pkg.to_string(), lang)];
        let (stored, bytes) = member(m, &format!("\\{file}"));
        let keyform = stored.split('\\').next().unwrap();
        let at_dest = format!("/{dest}/{file}");
        assert_eq!(ntfscat(&img, &at_dest).as_deref(), Some(bytes), "{at_dest}");
        let in_store = format!("/Windows/WinSxS/{keyform}/{file}");
        assert_eq!(
            ntfscat(&img, &in_store).as_deref(),
            Some(bytes),
            "{in_store}"
        );
        let info = ntfsinfo(&img, &at_dest);
        assert!(
            info.contains("Number of Hard Links:\t 2 (0x2)"),
            "{at_dest}:\n{info}"
        );
        let (mname, mbytes) = member(m, &format!("{keyform}.manifest"));
        assert_eq!(
            ntfscat(&img, &format!("/Windows/WinSxS/Manifests/{mname}")).as_deref(),
            Some(mbytes)
        );
    }
    // The driver's files are in the store only: the injector places them.
    let guest = &cabs[&("Guest".to_string(), false)];
    let (sys_member, sys_bytes) = member(guest, "\\nfdemostor.sys");
    assert_eq!(
        ntfscat(
            &img,
            &format!("/Windows/WinSxS/{}", sys_member.replace('\\', "/"))
        )
        .as_deref(),
        Some(sys_bytes)
    );
    assert_eq!(
        ntfscat(&img, "/Windows/System32/Drivers/nfdemostor.sys"),
        None
    );

    // Package store: every .mum and .cat.
    let listing = common::run_ok(
        common::tool("ntfsls")
            .arg("-p")
            .arg("/Windows/servicing/Packages")
            .arg(&img),
    );
    let mut got: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "." && *l != "..")
        .collect();
    got.sort();
    let mut expect: Vec<String> = want
        .iter()
        .flat_map(|id| [format!("{id}.cat"), format!("{id}.mum")])
        .collect();
    expect.sort();
    assert_eq!(got, expect);
    for k in kinds {
        for lang in [None, Some(LANG)] {
            let m = &cabs[&(k.short_name().to_string(), lang.is_some())];
            let id = identity(k, lang);
            assert_eq!(
                ntfscat(&img, &format!("/Windows/servicing/Packages/{id}.mum")).as_deref(),
                Some(member(m, "update.mum").1)
            );
        }
    }

    // Security descriptors from the manifests' SDDL, as ntfs-3g reads them.
    for (path, text) in [
        (
            "/ProgramData/NanoforgeDemo/Containers",
            "O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)",
        ),
        (
            "/ProgramData/NanoforgeDemo",
            "O:BAG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;GRGX;;;BU)",
        ),
        (
            "/Windows/System32/nfdemovmms.exe",
            "O:BAG:SYD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;GRGX;;;BU)",
        ),
    ] {
        assert_eq!(
            ntfssecaudit_descriptor(&img, path),
            sddl::parse(text).unwrap(),
            "{path}"
        );
    }

    // The hives as hivex reads them from the volume.
    let sys_x = hivex_export(&ntfscat(&img, "/Windows/System32/config/SYSTEM").unwrap());
    let svc = "\\ControlSet001\\Services\\nfdemovmms";
    assert_eq!(value(&sys_x, svc, "Start"), "dword:00000002");
    assert_eq!(value(&sys_x, svc, "DelayedAutoStart"), "dword:00000001");
    assert_eq!(value(&sys_x, svc, "Type"), "dword:00000010");
    assert_eq!(value(&sys_x, svc, "ErrorControl"), "dword:00000001");
    assert_eq!(value(&sys_x, svc, "ServiceSidType"), "dword:00000001");
    assert_eq!(
        value(&sys_x, svc, "ImagePath"),
        "expand_sz:%SystemRoot%\\System32\\nfdemovmms.exe"
    );
    assert_eq!(value(&sys_x, svc, "ObjectName"), "sz:LocalSystem");
    assert_eq!(
        value(&sys_x, svc, "DisplayName"),
        "sz:nanoforge demo VM management"
    );
    assert_eq!(
        value(&sys_x, svc, "DependOnService"),
        "multi_sz:RpcSs|nfdemovsp"
    );
    assert_eq!(
        value(&sys_x, svc, "RequiredPrivileges"),
        "multi_sz:SeChangeNotifyPrivilege|SeCreateGlobalPrivilege"
    );
    let vsp = "\\ControlSet001\\Services\\nfdemovsp";
    assert_eq!(value(&sys_x, vsp, "Start"), "dword:00000001");
    assert_eq!(value(&sys_x, vsp, "Type"), "dword:00000001");
    assert_eq!(value(&sys_x, vsp, "ErrorControl"), "dword:00000003");
    assert_eq!(value(&sys_x, vsp, "Group"), "sz:System Bus Extender");
    assert_eq!(
        value(&sys_x, &format!("{svc}\\Parameters"), "MaxVMs"),
        "dword:00000040"
    );
    let hvsi = "\\ControlSet001\\Services\\nfdemohvsi";
    assert_eq!(value(&sys_x, hvsi, "Type"), "dword:00000020");
    assert_eq!(value(&sys_x, hvsi, "Start"), "dword:00000003");
    assert_eq!(
        value(&sys_x, hvsi, "ObjectName"),
        "sz:NT AUTHORITY\\LocalService"
    );
    assert_eq!(
        value(&sys_x, &format!("{hvsi}\\Parameters"), "ServiceDll"),
        "expand_sz:%SystemRoot%\\System32\\nfdemohvsi.dll"
    );
    assert!(!sys_x.keys().any(|k| k.starts_with("\\currentcontrolset")));
    assert!(!sys_x.contains_key("\\controlset001\\services\\nfdemostor"));

    let soft_x = hivex_export(&ntfscat(&img, "/Windows/System32/config/SOFTWARE").unwrap());
    assert_eq!(
        value(&soft_x, &format!("\\{SVCHOST}"), "nfdemogroup"),
        "multi_sz:nfdemoexisting|nfdemohvsi"
    );
    let comp = "\\Nanoforge\\Demo\\Compute";
    assert_eq!(value(&soft_x, comp, "Name"), "sz:nanoforge demo compute");
    assert_eq!(
        value(&soft_x, comp, "Home"),
        "sz:C:\\Program Files\\NanoforgeDemo"
    );
    assert_eq!(
        value(&soft_x, comp, "Path"),
        "expand_sz:%SystemRoot%\\System32\\nfdemovmms.exe"
    );
    assert_eq!(
        value(&soft_x, comp, "Features"),
        "multi_sz:vm|switch|storage"
    );
    assert_eq!(value(&soft_x, comp, "Version"), "dword:0000000a");
    assert_eq!(value(&soft_x, comp, "Capacity"), "qword:0x100000000");
    assert_eq!(value(&soft_x, comp, "Signature"), "hex(3):4e,41,4e,4f");
    assert_eq!(value(&soft_x, comp, "Marker"), "hex(0):");
    assert_eq!(
        value(&soft_x, "\\Nanoforge\\Demo\\Guest", "Library"),
        "expand_sz:%SystemRoot%\\System32\\nfdemoguest.dll"
    );
    assert_eq!(
        value(&soft_x, "\\Nanoforge\\Demo\\Containers", "StoreRoot"),
        "sz:C:\\ProgramData\\NanoforgeDemo\\Containers"
    );
    let cbs = "\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing";
    for k in kinds {
        for lang in [None, Some(LANG)] {
            let id = identity(k, lang);
            let key = format!("{cbs}\\Packages\\{id}");
            assert_eq!(value(&soft_x, &key, "CurrentState"), "dword:00000070");
            assert_eq!(
                value(&soft_x, &key, "InstallClient"),
                "sz:DISM Package Manager Provider"
            );
            assert_eq!(value(&soft_x, &key, "InstallName"), format!("sz:{id}"));
            assert_eq!(
                value(&soft_x, &key, "InstallLocation"),
                format!("sz:{}", k.cab_path(lang))
            );
            assert_eq!(
                value(&soft_x, &key, "InstallTimeHigh"),
                format!("dword:{:08x}", TS >> 32)
            );
            assert_eq!(
                value(&soft_x, &key, "InstallTimeLow"),
                format!("dword:{:08x}", TS & 0xFFFF_FFFF)
            );
            assert_eq!(value(&soft_x, &key, "Visibility"), "dword:00000001");
            assert_eq!(
                value(&soft_x, &format!("{key}\\Owners"), &id),
                "dword:00020070"
            );
            let index = format!(
                "{cbs}\\PackageIndex\\{}~{PKT}~amd64~{}~0.0.0.0",
                k.package_name(),
                lang.unwrap_or("")
            );
            assert_eq!(value(&soft_x, &index, &id), "hex(0):");
        }
    }
}

#[test]
fn duplicates_are_applied_once_and_language_packs_follow_their_package() {
    let tmp = common::tempdir();
    make_media(tmp.path(), &[SynthKind::Compute], true);
    let media = Media::open(tmp.path(), None).unwrap();
    let resolved = resolve(
        &request(&["Compute"], "Standard"),
        &Catalog::embedded().unwrap(),
        &media,
    )
    .unwrap();
    let loaded: Vec<LoadedPackage> = resolved.iter().map(|r| load(r).unwrap()).collect();
    // Language pack first, then the neutral package twice.
    let input = vec![loaded[1].clone(), loaded[0].clone(), loaded[0].clone()];
    let mut tree = base_tree();
    let (mut sys, mut soft) = fresh_hives();
    let opts = ProjectOptions {
        timestamp: TS,
        ..ProjectOptions::default()
    };
    let r = apply_packages(&mut tree, &mut sys, &mut soft, &input, &opts).unwrap();
    let ids: Vec<&str> = r.packages.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(
        ids,
        [
            identity(SynthKind::Compute, None),
            identity(SynthKind::Compute, Some(LANG))
        ]
    );
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    // Applying again to the serviced image changes nothing and says why.
    let before = snapshot(&tree, &sys, &soft);
    let r2 = apply_packages(&mut tree, &mut sys, &mut soft, &input, &opts).unwrap();
    assert!(r2.packages.is_empty());
    assert_eq!(r2.skipped.len(), 3, "{:?}", r2.skipped);
    assert_eq!(
        r2.skipped
            .iter()
            .filter(|s| s.contains("already installed"))
            .count(),
        2,
        "{:?}",
        r2.skipped
    );
    assert_eq!(snapshot(&tree, &sys, &soft), before);
    // A language pack alone, without its neutral package, is refused.
    let (mut t3, (mut s3, mut w3)) = (base_tree(), fresh_hives());
    let e = apply_packages(&mut t3, &mut s3, &mut w3, &input[..1], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs its neutral package") && !e.contains('\n'),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Errors before anything is written

#[test]
fn request_errors_leave_tree_and_hives_untouched() {
    let tmp = common::tempdir();
    make_media(tmp.path(), &[SynthKind::Guest, SynthKind::Compute], true);
    // Compute without its language pack.
    std::fs::remove_file(
        tmp.path()
            .join("NanoServer/Packages")
            .join(SynthKind::Compute.cab_path(Some(LANG)).replace('\\', "/")),
    )
    .unwrap();
    let mut tree = base_tree();
    let (mut sys, mut soft) = fresh_hives();
    let before = snapshot(&tree, &sys, &soft);
    for (req, want) in [
        (request(&["Guest", "Compute"], "Standard"), "language pack"),
        (request(&["Guest", "Nope"], "Standard"), "\"Nope\""),
        (request(&["Guest", "ShieldedVM"], "Standard"), "Datacenter"),
        (request(&["Guest", "NPDS"], "Standard"), "needs Defender"),
    ] {
        let e = service(tmp.path(), &req, &mut tree, &mut sys, &mut soft).unwrap_err();
        assert!(e.contains(want) && !e.contains('\n'), "{want}: {e}");
        assert_eq!(snapshot(&tree, &sys, &soft), before);
    }
}

#[test]
fn damaged_packages_are_refused_before_anything_changes() {
    let tmp = common::tempdir();
    make_media(tmp.path(), &[SynthKind::Guest, SynthKind::Compute], true);
    let pk = tmp.path().join("NanoServer/Packages");
    let mut tree = base_tree();
    let (mut sys, mut soft) = fresh_hives();
    let before = snapshot(&tree, &sys, &soft);

    // A payload that does not match its manifest's SHA-256.
    let mut m = synth::synthetic_package(SynthKind::Compute, None);
    let i = m
        .iter()
        .position(|(n, _)| n.ends_with("\\nfdemovmms.exe"))
        .unwrap();
    m[i].1.extend_from_slice(b"tampered");
    synth::write_cab(&pk.join(SynthKind::Compute.cab_path(None)), &m).unwrap();
    let e = service(
        tmp.path(),
        &request(&["Guest", "Compute"], "Standard"),
        &mut tree,
        &mut sys,
        &mut soft,
    )
    .unwrap_err();
    assert!(
        e.contains("nfdemovmms.exe")
            && e.contains("Nanoforge-Demo-Compute-Services")
            && e.contains("digest"),
        "{e}"
    );
    assert_eq!(snapshot(&tree, &sys, &soft), before);

    // A compressed (DCM) manifest is named and refused.
    let mut m = synth::synthetic_package(SynthKind::Compute, None);
    let i = m
        .iter()
        .position(|(n, _)| n.ends_with(".manifest"))
        .unwrap();
    m[i].1 = b"DCM\x01PA30 compressed".to_vec();
    let name = m[i].0.clone();
    synth::write_cab(&pk.join(SynthKind::Compute.cab_path(None)), &m).unwrap();
    let e = service(
        tmp.path(),
        &request(&["Compute"], "Standard"),
        &mut tree,
        &mut sys,
        &mut soft,
    )
    .unwrap_err();
    assert!(e.contains(&name) && e.contains("DCM"), "{e}");
    assert_eq!(snapshot(&tree, &sys, &soft), before);

    // A destination the image already has.
    synth::write_cab(
        &pk.join(SynthKind::Compute.cab_path(None)),
        &synth::synthetic_package(SynthKind::Compute, None),
    )
    .unwrap();
    let s32 = tree.lookup("Windows\\System32").unwrap();
    tree.add_file(
        s32,
        "nfdemovmms.exe",
        Meta::at(TS),
        Content::bytes(b"base".to_vec()),
    )
    .unwrap();
    let before = snapshot(&tree, &sys, &soft);
    let e = service(
        tmp.path(),
        &request(&["Guest", "Compute"], "Standard"),
        &mut tree,
        &mut sys,
        &mut soft,
    )
    .unwrap_err();
    assert!(
        e.contains("nfdemovmms.exe") && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(snapshot(&tree, &sys, &soft), before);
}

// ---------------------------------------------------------------------------------------
// Hostile cabinets

fn load_err(path: &Path) -> String {
    let r = ResolvedPackage {
        name: "Guest".into(),
        part: Part::Neutral,
        path: path.to_path_buf(),
    };
    match load(&r) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_cabs_give_one_line_errors() {
    let tmp = common::tempdir();
    let members = synth::synthetic_package(SynthKind::Guest, None);
    let good = tmp.path().join("good.cab");
    synth::write_cab(&good, &members).unwrap();
    let bytes = common::read(&good);

    // A flipped byte inside the compressed data: the CFDATA checksum no longer matches.
    let bad = tmp.path().join("badsum.cab");
    let mut b = bytes.clone();
    let at = b.len() - 40;
    b[at] ^= 0x55;
    std::fs::write(&bad, &b).unwrap();
    let ext = common::run(common::tool("cabextract").arg("-t").arg(&bad));
    assert!(!ext.status.success(), "cabextract accepted the damaged cab");
    let e = load_err(&bad);
    assert!(
        e.contains("badsum.cab") && e.contains("Checksum") && !e.contains('\n'),
        "{e}"
    );

    // The folder cut short.
    let cut = tmp.path().join("truncated.cab");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let e = load_err(&cut);
    assert!(e.contains("truncated.cab") && !e.contains('\n'), "{e}");

    // Entry names that would leave the extraction folder.
    for (i, evil) in [
        "..\\evil.txt",
        "\\Windows\\System32\\evil.dll",
        "C:\\evil.txt",
        "a\\..\\..\\evil.txt",
    ]
    .iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("traversal{i}.cab"));
        let mut m = members.clone();
        m.push((evil.to_string(), b"demo".to_vec()));
        synth::write_cab(&p, &m).unwrap();
        let e = load_err(&p);
        assert!(
            e.contains("unsafe name") && e.contains(&format!("{evil:?}")) && !e.contains('\n'),
            "{e}"
        );
    }

    // Not a cabinet at all.
    let junk = tmp.path().join("junk.cab");
    std::fs::write(&junk, b"MSCF but not really").unwrap();
    let e = load_err(&junk);
    assert!(e.contains("junk.cab") && !e.contains('\n'), "{e}");
}
