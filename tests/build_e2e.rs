//! `nanoforge build` end to end on the demo media: the container-host image boots under OVMF
//! and its GRUB stand-in shows what the build installed; builds are reproducible; every
//! failure exits non-zero with one line and leaves nothing behind; the `.wim` output equals
//! the disk's Windows volume.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .join(name)
}

/// Run a build in `dir` (relative output names stay relative, so reports can be compared).
fn build(dir: &Path, args: &[&str]) -> std::process::Output {
    run(nanoforge().current_dir(dir).arg("build").args(args))
}

fn build_ok(dir: &Path, args: &[&str]) {
    let o = build(dir, args);
    assert!(
        o.status.success(),
        "build {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Files in `dir`, sorted (to prove nothing was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Bytes printed by GRUB's `hexdump` between two marker lines. Like `hexdump -C`, a line
/// `*` stands for repeats of the line before it up to the next offset.
fn hexdump_bytes(out: &str, begin: &str, end: &str) -> Vec<u8> {
    let start = out
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin:?} in:\n{out}"));
    let stop = out[start..].find(end).expect("end marker") + start;
    let mut bytes: Vec<u8> = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut repeat = false;
    for line in out[start + begin.len()..stop].lines() {
        let line = line.trim_end_matches('\r');
        if line.trim() == "*" {
            repeat = true;
            continue;
        }
        let body = line.split('|').next().unwrap_or("");
        let mut toks = body.split_whitespace();
        let Some(off) = toks.next() else { continue };
        let Ok(off) = usize::from_str_radix(off, 16) else {
            continue;
        };
        if repeat {
            while bytes.len() < off {
                bytes.extend_from_slice(&last);
            }
            repeat = false;
        }
        assert_eq!(off, bytes.len(), "hexdump offsets are contiguous");
        last = toks
            .map(|t| u8::from_str_radix(t, 16).expect("hex byte"))
            .collect();
        bytes.extend_from_slice(&last);
    }
    bytes
}

/// `sha256sum` of a file, as lowercase hex.
fn sha256sum(p: &Path) -> String {
    let out = run_ok(tool("sha256sum").arg(p));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn between<'a>(out: &'a str, begin: &str, end: &str) -> &'a str {
    let start = out
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin:?} in:\n{out}"))
        + begin.len();
    let stop = out[start..].find(end).expect("end marker") + start;
    out[start..stop].trim()
}

#[test]
fn demo_container_host_boots_with_everything_installed() {
    require("grub-mkimage");
    require("hivexget");
    let dir = tempdir();
    let d = dir.path();
    let t = template("container-host.toml");
    build_ok(
        d,
        &[
            t.to_str().unwrap(),
            "--media",
            "demo",
            "--computer-name",
            "NANO-E2E",
            "--size",
            "2GiB",
            "-o",
            "host.vhdx",
        ],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&read(&d.join("host.vhdx.report.json"))).unwrap();
    // The output digest the writer computed on the way equals coreutils' over the file.
    assert_eq!(
        report["output_sha256"].as_str().unwrap(),
        sha256sum(&d.join("host.vhdx"))
    );
    let out = common::boot::boot(&d.join("host.vhdx"), "vhdx", d);
    assert!(
        out.contains("NANOFORGE DEMO BOOT MANAGER STAND-IN"),
        "{out}"
    );
    assert!(out.contains("NANOFORGE DEMO BOOT DONE"), "{out}");
    // The BCD store bcdboot would write is on the ESP.
    let esp_listing = between(&out, "esp=", "windows=");
    assert!(esp_listing.contains("BCD"), "{esp_listing}");
    // The computer name, read by hivex from the SYSTEM hive bytes GRUB found and printed.
    let hive = hexdump_bytes(&out, "BEGIN SYSTEM HIVE", "END SYSTEM HIVE");
    assert!(hive.starts_with(b"regf"), "SYSTEM hive as printed by GRUB");
    let hf = d.join("SYSTEM");
    std::fs::write(&hf, &hive).unwrap();
    let name = run_ok(tool("hivexget").arg(&hf).args([
        "\\ControlSet001\\Control\\ComputerName\\ComputerName",
        "ComputerName",
    ]));
    assert_eq!(name.trim(), "NANO-E2E");
    // One file installed by each of the four packages.
    let files = out.matches("BEGIN PACKAGE FILE").count();
    assert_eq!(files, 4, "{out}");
    for chunk in out.split("BEGIN PACKAGE FILE").skip(1) {
        let body = chunk.split("END PACKAGE FILE").next().unwrap();
        assert!(
            body.contains("nanoforge demo data"),
            "a package file was not found or is wrong: {body}"
        );
    }
    // The base image's metadata.json.
    let meta = between(&out, "BEGIN METADATA", "END METADATA");
    // GRUB's terminal wraps at 80 columns: join the lines back.
    let json: String = meta[meta.find('{').expect("a JSON object")..=meta.rfind('}').unwrap()]
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["Name"], "NanoServer");
    assert_eq!(v["Version"], "10.0.14393.0");
    // The report names the four packages and no secret.
    let pk: Vec<&str> = report["servicing"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in ["Guest", "Compute", "OEM-Drivers", "Containers"] {
        assert!(pk.contains(&want), "{pk:?}");
    }
}

#[test]
fn builds_are_reproducible_and_the_seed_changes_every_guid() {
    let a = tempdir();
    let b = tempdir();
    let t = template("hyperv-guest.toml");
    let args = [
        t.to_str().unwrap(),
        "--media",
        "demo",
        "--size",
        "1GiB",
        "-o",
        "nano.vhdx",
    ];
    build_ok(a.path(), &args);
    build_ok(b.path(), &args);
    assert!(
        read(&a.path().join("nano.vhdx")) == read(&b.path().join("nano.vhdx")),
        "two builds of the same inputs differ"
    );
    let (ra, rb) = (
        String::from_utf8(read(&a.path().join("nano.vhdx.report.json"))).unwrap(),
        String::from_utf8(read(&b.path().join("nano.vhdx.report.json"))).unwrap(),
    );
    assert!(ra == rb, "reports differ:\n{ra}\n----\n{rb}");
    // Different seeds: every GUID of the disk differs (raw output so sgdisk reads it).
    let guids = |seed: &str| -> Vec<String> {
        let o = format!("s-{seed}.img");
        build_ok(
            a.path(),
            &[
                t.to_str().unwrap(),
                "--media",
                "demo",
                "--size",
                "1GiB",
                "--seed",
                seed,
                "-o",
                &o,
            ],
        );
        let img = a.path().join(&o);
        let mut v = Vec::new();
        let disk = run_ok(tool("sgdisk").arg("-p").arg(&img));
        v.push(
            disk.lines()
                .find(|l| l.starts_with("Disk identifier (GUID)"))
                .unwrap()
                .to_string(),
        );
        for n in 1..=3 {
            let i = run_ok(tool("sgdisk").arg(format!("-i{n}")).arg(&img));
            v.push(
                i.lines()
                    .find(|l| l.starts_with("Partition unique GUID"))
                    .unwrap()
                    .to_string(),
            );
        }
        v
    };
    let (x, y) = (guids("one"), guids("two"));
    assert_eq!(x.len(), 4);
    for (p, q) in x.iter().zip(&y) {
        assert_ne!(p, q);
    }
}

/// A build that must fail: non-zero exit, one line on stderr naming `needle`, and `dir`
/// unchanged.
fn fails(dir: &Path, args: &[&str], needle: &str) {
    let before = listing(dir);
    let o = build(dir, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert_eq!(listing(dir), before, "{args:?} left files behind");
}

#[test]
fn failures_are_one_line_and_leave_nothing() {
    let dir = tempdir();
    let d = dir.path();
    let media = d.join("media");
    run_ok(nanoforge().args(["media", "demo", "--no-grub"]).arg(&media));
    let m = media.to_str().unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    fails(
        &out,
        &["--media", "/nonexistent/media", "-o", "x.vhdx"],
        "/nonexistent/media",
    );
    fails(
        &out,
        &["--media", m, "--package", "Nope", "-o", "x.vhdx"],
        "Nope",
    );
    fails(
        &out,
        &[
            "--media",
            m,
            "--edition",
            "Standard",
            "--package",
            "ShieldedVM",
            "-o",
            "x.vhdx",
        ],
        "ShieldedVM",
    );
    fails(
        &out,
        &["--media", m, "--edition", "Enterprise", "-o", "x.vhdx"],
        "Enterprise",
    );
    fails(
        &out,
        &["--media", m, "--size", "120MiB", "-o", "x.vhdx"],
        "--size",
    );
    fails(&out, &["--media", m, "-o", "x.qcow2"], ".vhdx");
    std::fs::write(out.join("taken.vhdx"), b"the user's file").unwrap();
    fails(&out, &["--media", m, "-o", "taken.vhdx"], "--force");
    assert_eq!(read(&out.join("taken.vhdx")), b"the user's file");
    std::fs::remove_file(out.join("taken.vhdx")).unwrap();
    std::fs::write(out.join("afile"), b"x").unwrap();
    fails(&out, &["--media", m, "-o", "afile/x.vhdx"], "afile");
    std::fs::remove_file(out.join("afile")).unwrap();

    // A missing language pack.
    let lp = media.join("NanoServer/Packages/en-us/Microsoft-NanoServer-Compute-Package_en-us.cab");
    let saved = read(&lp);
    std::fs::remove_file(&lp).unwrap();
    fails(
        &out,
        &["--media", m, "--compute", "-o", "x.vhdx"],
        "Compute",
    );
    std::fs::write(&lp, saved).unwrap();

    // A corrupt WIM: damage the blob table's first bytes.
    let wim = media.join("NanoServer/NanoServer.wim");
    let mut bytes = read(&wim);
    let table = u64::from_le_bytes(bytes[0x38..0x40].try_into().unwrap()) as usize;
    for b in &mut bytes[table..table + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&wim, &bytes).unwrap();
    fails(&out, &["--media", m, "-o", "x.vhdx"], "NanoServer.wim");
}

#[test]
fn an_interrupted_build_leaves_nothing() {
    let dir = tempdir();
    let d = dir.path();
    // A large (sparse) docker tarball makes the write phase last long enough to interrupt.
    let inputs = tempdir();
    let tar = inputs.path().join("image.tar");
    std::fs::File::create(&tar)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let mut child = nanoforge()
        .current_dir(d)
        .args([
            "build",
            "--media",
            "demo",
            "--size",
            "10GiB",
            "--docker-image",
        ])
        .arg(&tar)
        .args(["-o", "big.vhdx"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary output exists, then interrupt.
    let start = std::time::Instant::now();
    let mut saw_partial = false;
    while !saw_partial {
        saw_partial = listing(d).iter().any(|n| n.contains("big.vhdx"));
        if child.try_wait().unwrap().is_some() || start.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(saw_partial, "the build ended before it started writing");
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(listing(d), Vec::<String>::new());
}

#[test]
fn wim_output_equals_the_disk_windows_volume() {
    let dir = tempdir();
    let d = dir.path();
    let t = template("container-host.toml");
    let common = [
        t.to_str().unwrap(),
        "--media",
        "demo",
        "--size",
        "1GiB",
        "--seed",
        "w",
    ];
    build_ok(d, &[&common[..], &["-o", "host.wim"]].concat());
    build_ok(d, &[&common[..], &["-o", "host.img"]].concat());
    run_ok(tool("wimlib-imagex").arg("verify").arg(d.join("host.wim")));
    let part = d.join("windows.ntfs");
    windows_partition(&d.join("host.img"), &part);
    let (a, b) = (d.join("from-wim"), d.join("from-disk"));
    run_ok(
        tool("wimlib-imagex")
            .arg("apply")
            .arg(d.join("host.wim"))
            .arg("1")
            .arg(&a),
    );
    run_ok(
        tool("wimlib-imagex")
            .arg("capture")
            .arg(&part)
            .arg(d.join("vol.wim")),
    );
    run_ok(
        tool("wimlib-imagex")
            .arg("apply")
            .arg(d.join("vol.wim"))
            .arg("1")
            .arg(&b),
    );
    run_ok(
        tool("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(&a)
            .arg(&b),
    );
}

/// The Windows partition (the third) of a raw disk, cut out to a file.
fn windows_partition(img: &Path, to: &Path) {
    let info = run_ok(tool("sgdisk").arg("-i3").arg(img));
    let field = |name: &str| -> u64 {
        let l = info.lines().find(|l| l.starts_with(name)).unwrap();
        l.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, last) = (field("First sector"), field("Last sector"));
    let bytes = read(img);
    std::fs::write(
        to,
        &bytes[(first * 512) as usize..((last + 1) * 512) as usize],
    )
    .unwrap();
}

fn ntfscat(vol: &Path, path: &str) -> Vec<u8> {
    let o = run(tool("ntfscat").arg(vol).arg(path));
    assert!(
        o.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn docker_tarball_first_boot_setup_and_secrets() {
    let dir = tempdir();
    let d = dir.path();
    let tar = d.join("app.tar");
    std::fs::write(&tar, b"pretend docker save tarball\n").unwrap();
    let pw = d.join("pw.txt");
    std::fs::write(&pw, "S3cret-Pa55word!\n").unwrap();
    let t = template("container-host.toml");
    let args = [
        t.to_str().unwrap(),
        "--media",
        "demo",
        "--size",
        "1GiB",
        "--docker-image",
        tar.to_str().unwrap(),
        "--admin-password-file",
        pw.to_str().unwrap(),
        "-v",
        "-o",
        "host.img",
    ];
    let o = build(d, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dry = build(d, &[&args[..], &["--dry-run", "--json"]].concat());
    assert!(dry.status.success());
    let report = String::from_utf8(read(&d.join("host.img.report.json"))).unwrap();
    // A raw output is hashed by reading it back: the same digest as coreutils'.
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        json["output_sha256"].as_str().unwrap(),
        sha256sum(&d.join("host.img"))
    );
    for text in [
        report.as_str(),
        &String::from_utf8_lossy(&o.stdout),
        &String::from_utf8_lossy(&o.stderr),
        &String::from_utf8_lossy(&dry.stdout),
    ] {
        assert!(!text.contains("S3cret-Pa55word!"), "the password leaked");
    }
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let steps = v["windows_only_steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s.as_str().unwrap().contains("code-integrity")),
        "{steps:?}"
    );
    let vol = d.join("win.ntfs");
    windows_partition(&d.join("host.img"), &vol);
    assert_eq!(
        ntfscat(&vol, "ProgramData/nanoforge/docker/app.tar"),
        read(&tar)
    );
    let script =
        String::from_utf8(ntfscat(&vol, "Windows/Setup/Scripts/SetupComplete.cmd")).unwrap();
    assert!(
        script.contains("docker load -i \"C:\\ProgramData\\nanoforge\\docker\\app.tar\""),
        "{script}"
    );
    assert!(script.contains("sc.exe start vmms"), "{script}");
    // The store holds the demo base image.
    let meta = ntfscat(
        &vol,
        "ProgramData/Microsoft/Windows/Images/CN=Microsoft_NanoServer_10.0.14393.0/metadata.json",
    );
    let m: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(m["Name"], "NanoServer");
}

#[test]
fn unapplied_package_elements_fail_or_are_allowed_or_staged_for_first_boot() {
    let dir = tempdir();
    let d = dir.path();
    let media = d.join("media");
    run_ok(nanoforge().args(["media", "demo", "--no-grub"]).arg(&media));
    // Give the Containers package an element offline servicing does not apply.
    let cab = media.join("NanoServer/Packages/Microsoft-NanoServer-Containers-Package.cab");
    let x = d.join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(tool("cabextract").arg("-q").arg("-d").arg(&x).arg(&cab));
    let mut members: Vec<String> = Vec::new();
    let mut stack = vec![x.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                members.push(e.strip_prefix(&x).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    members.sort();
    let manifest = members.iter().find(|m| m.ends_with(".manifest")).unwrap();
    let mpath = x.join(manifest);
    let text = String::from_utf8(read(&mpath)).unwrap();
    let text = text.replace(
        "</assembly>",
        "  <migration scope=\"Upgrade\" />\r\n</assembly>",
    );
    std::fs::write(&mpath, text).unwrap();
    std::fs::remove_file(&cab).unwrap();
    run_ok(
        tool("gcab")
            .current_dir(&x)
            .arg("-c")
            .arg(&cab)
            .args(&members),
    );

    let m = media.to_str().unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    fails(
        &out,
        &["--media", m, "--containers", "-o", "a.img"],
        "--allow-partial-servicing",
    );
    build_ok(
        &out,
        &[
            "--media",
            m,
            "--containers",
            "--allow-partial-servicing",
            "--size",
            "1GiB",
            "-o",
            "b.img",
        ],
    );
    let r: serde_json::Value =
        serde_json::from_slice(&read(&out.join("b.img.report.json"))).unwrap();
    let not_applied: Vec<String> = r["servicing"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["not_applied"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        not_applied.iter().any(|n| n.contains("migration")),
        "{not_applied:?}"
    );
    build_ok(
        &out,
        &[
            "--media",
            m,
            "--containers",
            "--first-boot-servicing",
            "--size",
            "1GiB",
            "-o",
            "c.img",
        ],
    );
    let vol = d.join("c.ntfs");
    windows_partition(&out.join("c.img"), &vol);
    assert_eq!(
        ntfscat(
            &vol,
            "Windows/servicing/nanoforge-staged/Microsoft-NanoServer-Containers-Package.cab"
        ),
        read(&cab)
    );
    let script =
        String::from_utf8(ntfscat(&vol, "Windows/Setup/Scripts/SetupComplete.cmd")).unwrap();
    assert!(
        script.contains("dism.exe /online /add-package")
            && script.contains("Microsoft-NanoServer-Containers-Package.cab"),
        "{script}"
    );
}

/// A small boot-start storage driver package (VirtIO-like ids) in `dir`.
fn storage_driver(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("vstor.inf"),
        "[Version]\r\nSignature = \"$Windows NT$\"\r\nClass = SCSIAdapter\r\n\
         ClassGUID = {4D36E97B-E325-11CE-BFC1-08002BE10318}\r\nProvider = %P%\r\n\
         DriverVer = 01/02/2017,1.2.3.4\r\nCatalogFile = vstor.cat\r\n\r\n\
         [DestinationDirs]\r\nDefaultDestDir = 12\r\n\r\n[SourceDisksNames]\r\n1 = %D%\r\n\r\n\
         [SourceDisksFiles]\r\nvstor.sys = 1\r\n\r\n[Manufacturer]\r\n%P% = M, NTamd64.10.0\r\n\r\n\
         [M.NTamd64.10.0]\r\n%Dev% = vstor_inst, PCI\\VEN_1AF4&DEV_1001\r\n\r\n\
         [vstor_inst]\r\nCopyFiles = vstor_files\r\n\r\n[vstor_files]\r\nvstor.sys\r\n\r\n\
         [vstor_inst.Services]\r\nAddService = vstor, 2, vstor_svc\r\n\r\n[vstor_svc]\r\n\
         ServiceType = 1\r\nStartType = 0\r\nErrorControl = 1\r\nServiceBinary = %12%\\vstor.sys\r\n\
         LoadOrderGroup = SCSI miniport\r\n\r\n[Strings]\r\nP = \"test vendor\"\r\nD = \"disk\"\r\n\
         Dev = \"test storage controller\"\r\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vstor.sys"),
        b"test driver image, not a real driver\n",
    )
    .unwrap();
    std::fs::write(dir.join("vstor.cat"), b"test catalog\n").unwrap();
}

#[test]
fn kvm_guest_gets_its_driver_folder_injected() {
    let dir = tempdir();
    let d = dir.path();
    let drv = d.join("drivers/vstor/amd64");
    storage_driver(&drv);
    let t = template("kvm-guest.toml");
    build_ok(
        d,
        &[
            t.to_str().unwrap(),
            "--media",
            "demo",
            "--size",
            "1GiB",
            "--driver",
            d.join("drivers").to_str().unwrap(),
            "-o",
            "kvm.img",
        ],
    );
    let vol = d.join("kvm.ntfs");
    windows_partition(&d.join("kvm.img"), &vol);
    assert_eq!(
        ntfscat(&vol, "Windows/System32/drivers/vstor.sys"),
        read(&drv.join("vstor.sys"))
    );
    let hive = d.join("SYSTEM");
    std::fs::write(&hive, ntfscat(&vol, "Windows/System32/config/SYSTEM")).unwrap();
    let start = run_ok(
        tool("hivexget")
            .arg(&hive)
            .args(["\\ControlSet001\\Services\\vstor", "Start"]),
    );
    assert_eq!(start.trim(), "0");
    // The report names the injected package.
    let r: serde_json::Value =
        serde_json::from_slice(&read(&d.join("kvm.img.report.json"))).unwrap();
    let infs: Vec<&str> = r["servicing"]["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["inf"].as_str().unwrap())
        .collect();
    assert!(infs.contains(&"vstor.inf"), "{infs:?}");
    // The template's EMS settings reach the BCD store on the ESP (read back through mtools).
    let esp_first: u64 = {
        let info = run_ok(tool("sgdisk").arg("-i1").arg(d.join("kvm.img")));
        let l = info
            .lines()
            .find(|l| l.starts_with("First sector"))
            .unwrap();
        l.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let bcd = d.join("BCD");
    run_ok(
        tool("mcopy")
            .arg("-i")
            .arg(format!(
                "{}@@{}",
                d.join("kvm.img").display(),
                esp_first * 512
            ))
            .arg("::/EFI/Microsoft/Boot/BCD")
            .arg(&bcd),
    );
    let export = run_ok(tool("hivexregedit").arg("--export").arg(&bcd).arg("\\"));
    // EMS port (element 0x15000022) = 1 and baud rate (0x15000023) = 115200 (0x1c200).
    for (element, value) in [
        ("15000022", "01,00,00,00,00,00,00,00"),
        ("15000023", "00,c2,01,00,00,00,00,00"),
    ] {
        let at = export
            .find(&format!("\\Elements\\{element}]"))
            .unwrap_or_else(|| panic!("no element {element} in the BCD store"));
        assert!(
            export[at..].lines().nth(1).unwrap().contains(value),
            "{element}"
        );
    }
}
