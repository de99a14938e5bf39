//! Offline driver injection checked by tools we did not write: two driver packages made
//! here (a viostor-like boot-start SCSI miniport, a netkvm-like demand-start network
//! driver) are read from a host folder, injected into a small image, written as an NTFS
//! volume, and then read back with ntfs-3g (`ntfsls`, `ntfscat`) and the SYSTEM hive pulled
//! out of the volume with `ntfscat` and exported with `hivexregedit --export`; `ntfsfix -n`
//! finds the volume clean. The package hash is recomputed with `sha256sum`, the DriverVer
//! date with `date`.
mod common;
use common::FileDisk;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use nanoforge::formats::ntfs::{write_volume, NtfsOptions};
use nanoforge::formats::regf::{Hive, Value};
use nanoforge::servicing::drivers::{from_dir, inject, DriverReport, InjectOptions};
use nanoforge::tree::{Content, Meta, Tree};

/// FILETIME of 2023-11-14 22:13:20 UTC.
const TS: u64 = 133_444_736_000_000_000;

const VIOSTOR_INF: &str = r#"; A viostor-like package: boot-start SCSI miniport for virtio-blk.
[Version]
Signature   = "$WINDOWS NT$"
Class       = SCSIAdapter
ClassGUID   = {4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider    = %VENDOR%
DriverVer   = 06/21/2016,62.72.104.12600
CatalogFile = viostor.cat

[DestinationDirs]
DefaultDestDir = 12 ; DIRID_DRIVERS

[SourceDisksNames]
1 = %DiskId1%,,,\amd64

[SourceDisksFiles]
viostor.sys = 1,,

[Manufacturer]
%VENDOR% = VirtioScsi, NTx86, NTamd64.10.0, NTamd64.10.0...17763

[VirtioScsi.NTx86]
%VirtioScsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00

[VirtioScsi.NTamd64.10.0]
%VirtioScsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, \
                          PCI\VEN_1AF4&DEV_1001

[VirtioScsi.NTamd64.10.0...17763]
%VirtioScsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01

[scsi_inst]
CopyFiles = VioStor_Files

[VioStor_Files]
viostor.sys,,,2

[scsi_inst.HW]
AddReg = msi_addreg

[scsi_inst.Services]
AddService = viostor, 0x00000002, scsi_Service_Inst, scsi_EventLog_Inst

[scsi_Service_Inst]
ServiceType    = 1 ; SERVICE_KERNEL_DRIVER
StartType      = 0 ; SERVICE_BOOT_START
ErrorControl   = 1 ; SERVICE_ERROR_NORMAL
ServiceBinary  = %12%\viostor.sys
LoadOrderGroup = SCSI miniport
AddReg         = pnpsafe_pci_addreg

[scsi_EventLog_Inst]
AddReg = scsi_EventLog_AddReg

[scsi_EventLog_AddReg]
HKR,,EventMessageFile,%REG_EXPAND_SZ%,"%%SystemRoot%%\System32\IoLogMsg.dll"
HKR,,TypesSupported,%REG_DWORD%,7

[pnpsafe_pci_addreg]
HKR, "Parameters\PnpInterface", "5", %REG_DWORD%, 0x00000001
HKR, "Parameters", "BusType", %REG_DWORD%, 0x00000001

[msi_addreg]
HKR, "Interrupt Management", 0x00000010
HKR, "Interrupt Management\MessageSignaledInterruptProperties", 0x00000010
HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, %REG_DWORD%, 1
HKR, "Interrupt Management\MessageSignaledInterruptProperties", MessageNumberLimit, %REG_DWORD%, 256

[Strings]
VENDOR = "Red Hat, Inc."
DiskId1 = "Red Hat VirtIO SCSI controller Installation Disk #1"
VirtioScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"
REG_EXPAND_SZ = 0x00020000
REG_DWORD = 0x00010001
"#;

const NETKVM_INF: &str = r#"; A netkvm-like package: demand-start network driver.
[Version]
Signature   = "$Windows NT$"
Class       = Net
ClassGUID   = {4d36e972-e325-11ce-bfc1-08002be10318}
Provider    = %VENDOR%
DriverVer   = 03/15/2017,100.75.104.14100
CatalogFile = netkvm.cat
PnpLockdown = 1

[DestinationDirs]
DefaultDestDir = 12

[SourceDisksNames]
1 = %DiskId1%,,,""

[SourceDisksFiles]
netkvm.sys = 1,,

[Manufacturer]
%VENDOR% = NetKVM, NTamd64.10.0

[NetKVM.NTamd64.10.0]
%NetKVM.DeviceDesc% = kvmnet6.ndi, PCI\VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00, PCI\VEN_1AF4&DEV_1000

[kvmnet6.ndi]
Characteristics = 0x84 ; NCF_PHYSICAL | NCF_HAS_UI
BusType         = 5
AddReg          = kvmnet6.Reg, Parameters
CopyFiles       = @netkvm.sys

[kvmnet6.ndi.Services]
AddService = netkvm, 2, kvmnet6.Service, kvmnet6.EventLog

[kvmnet6.Reg]
HKR, Ndi,            Service,    0, "netkvm"
HKR, Ndi\Interfaces, UpperRange, 0, "ndis5"
HKR, Ndi\Interfaces, LowerRange, 0, "ethernet"

[Parameters]
HKR, Ndi\params\MTU, ParamDesc, 0, %MTU%
HKR, Ndi\params\MTU, default,   0, "1500"
HKR, ,               MTU,       0, "1500"

[kvmnet6.Service]
DisplayName    = %NetKVM.Service.DispName%
ServiceType    = 1 ; SERVICE_KERNEL_DRIVER
StartType      = 3 ; SERVICE_DEMAND_START
ErrorControl   = 1
ServiceBinary  = %12%\netkvm.sys
LoadOrderGroup = NDIS
AddReg         = TextModeFlags.Reg

[kvmnet6.EventLog]
AddReg = kvmnet6.AddEventLog.Reg

[kvmnet6.AddEventLog.Reg]
HKR, , EventMessageFile, 0x00020000, "%%SystemRoot%%\System32\netevent.dll"
HKR, , TypesSupported,   0x00010001, 7

[TextModeFlags.Reg]
HKR, , TextModeFlags, 0x00010001, 0x0001

[Strings]
VENDOR = "Red Hat, Inc."
DiskId1 = "Red Hat VirtIO Ethernet Adapter Driver Disk #1"
NetKVM.DeviceDesc = "Red Hat VirtIO Ethernet Adapter"
NetKVM.Service.DispName = "Red Hat VirtIO Ethernet Adapter Service"
MTU = "Init.MTUSize"
"#;

// ---------------------------------------------------------------------------------------
// Fixture folder

/// UTF-16LE with a byte order mark and CRLF line ends, as many vendors ship INFs.
fn utf16_crlf(text: &str) -> Vec<u8> {
    let mut b = vec![0xFF, 0xFE];
    b.extend(
        text.replace('\n', "\r\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    b
}

/// The driver folder: viostor\{viostor.inf (UTF-16), viostor.cat, amd64\VIOSTOR.SYS} and
/// netkvm\{netkvm.inf (UTF-8), netkvm.cat, NetKVM.sys}.
fn driver_folder(root: &Path) {
    let v = root.join("viostor");
    std::fs::create_dir_all(v.join("amd64")).unwrap();
    std::fs::write(v.join("viostor.inf"), utf16_crlf(VIOSTOR_INF)).unwrap();
    std::fs::write(v.join("viostor.cat"), common::scrambled(3000, 1)).unwrap();
    // Windows matches names case-insensitively; so must the package reader.
    std::fs::write(v.join("amd64").join("VIOSTOR.SYS"), viostor_sys()).unwrap();
    let n = root.join("netkvm");
    std::fs::create_dir_all(&n).unwrap();
    std::fs::write(n.join("netkvm.inf"), NETKVM_INF).unwrap();
    std::fs::write(n.join("netkvm.cat"), common::scrambled(2000, 2)).unwrap();
    std::fs::write(n.join("NetKVM.sys"), netkvm_sys()).unwrap();
}

fn viostor_sys() -> Vec<u8> {
    let mut b = b"MZ".to_vec();
    b.extend(common::scrambled(70_000, 3));
    b
}

fn netkvm_sys() -> Vec<u8> {
    let mut b = b"MZ".to_vec();
    b.extend(common::scrambled(150_000, 4));
    b
}

fn image() -> (Tree, Hive) {
    let mut t = Tree::new(Meta::at(TS));
    t.mkdir_p("Windows\\System32\\config", &Meta::at(TS))
        .unwrap();
    t.mkdir_p("Windows\\System32\\drivers", &Meta::at(TS))
        .unwrap();
    let mut h = Hive::new_empty("SYSTEM", TS);
    h.create_key("Select", TS).unwrap();
    h.set_value("Select", Value::dword("Current", 1)).unwrap();
    h.create_key("ControlSet001\\Services", TS).unwrap();
    (t, h)
}

fn opts() -> InjectOptions {
    InjectOptions {
        timestamp: TS,
        ..InjectOptions::default()
    }
}

/// Inject every package of the folder into a fresh image.
fn inject_all(dir: &Path, o: &InjectOptions) -> (Tree, Hive, Vec<DriverReport>) {
    let (mut tree, mut sys) = image();
    let pkgs = from_dir(dir).unwrap_or_else(|e| panic!("from_dir: {e}"));
    let reports = pkgs
        .iter()
        .map(|p| inject(&mut tree, &mut sys, p, o).unwrap_or_else(|e| panic!("inject: {e}")))
        .collect();
    (tree, sys, reports)
}

// ---------------------------------------------------------------------------------------
// Oracles

/// Put the hive into the tree as Windows\System32\config\SYSTEM and write the volume.
fn write_image(dir: &Path, mut tree: Tree, sys: &Hive) -> std::path::PathBuf {
    let config = tree.lookup("Windows\\System32\\config").unwrap();
    tree.add_file(
        config,
        "SYSTEM",
        Meta::at(TS),
        Content::bytes(sys.to_bytes().unwrap()),
    )
    .unwrap();
    let o = NtfsOptions {
        size: 48 << 20,
        serial: 0x0123_4567_89AB_CDEF,
        label: "Nano".into(),
        time: TS,
        ..NtfsOptions::default()
    };
    let p = dir.join("volume.img");
    let f = File::create(&p).unwrap();
    f.set_len(o.size).unwrap();
    write_volume(&tree, &o, &mut FileDisk(f, o.size), 0).unwrap();
    p
}

fn ntfscat(img: &Path, path: &str) -> Vec<u8> {
    let out = common::run(common::tool("ntfscat").arg(img).arg(path));
    assert!(
        out.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ntfsls(img: &Path, path: &str) -> Vec<String> {
    let out = common::run_ok(common::tool("ntfsls").arg("-p").arg(path).arg(img));
    let mut v: Vec<String> = out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l != "." && l != "..")
        .collect();
    v.sort();
    v
}

/// Decode hivexregedit's `hex(t):..` text forms into something readable: strings as
/// `sz:`/`expand:`, string lists as `multi:a|b`; other types stay as exported.
fn shown(rhs: &str) -> String {
    let text = |h: &str| -> Vec<String> {
        let b: Vec<u8> = h
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| u8::from_str_radix(x.trim(), 16).unwrap())
            .collect();
        let u: Vec<u16> = b
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        let mut parts: Vec<String> = u
            .split(|&c| c == 0)
            .map(|s| String::from_utf16(s).unwrap())
            .collect();
        while parts.last().is_some_and(|s| s.is_empty()) {
            parts.pop();
        }
        parts
    };
    let rhs = rhs.replace("\\\n", "").replace(' ', "");
    if let Some(h) = rhs.strip_prefix("hex(1):") {
        format!("sz:{}", text(h).join(""))
    } else if let Some(h) = rhs.strip_prefix("hex(2):") {
        format!("expand:{}", text(h).join(""))
    } else if let Some(h) = rhs.strip_prefix("hex(7):") {
        format!("multi:{}", text(h).join("|"))
    } else if let Some(h) = rhs.strip_prefix("hex(3):") {
        format!("hex:{h}")
    } else if let Some(s) = rhs.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        format!("sz:{s}")
    } else {
        rhs
    }
}

type Export = BTreeMap<String, BTreeMap<String, String>>;

/// `hivexregedit --export` of the whole hive: lower-cased key path (without the leading
/// `\`) -> value name (`@` for the default) -> [`shown`] data.
fn hivex_export(hive_file: &Path) -> Export {
    let text = common::run_ok(
        common::tool("hivexregedit")
            .arg("--export")
            .arg(hive_file)
            .arg("\\"),
    );
    // Join continued lines first.
    let text = text.replace("\r\n", "\n").replace("\\\n", "");
    let mut out: Export = BTreeMap::new();
    let mut cur = String::new();
    for l in text.lines() {
        if l.starts_with('[') && l.ends_with(']') {
            cur = l[1..l.len() - 1]
                .trim_start_matches('\\')
                .to_ascii_lowercase();
            out.entry(cur.clone()).or_default();
        } else if let Some(rest) = l.strip_prefix("@=") {
            out.get_mut(&cur).unwrap().insert("@".into(), shown(rest));
        } else if let Some(rest) = l.strip_prefix('"') {
            let (name, rhs) = rest.split_once("\"=").expect("value line");
            out.get_mut(&cur).unwrap().insert(name.into(), shown(rhs));
        }
    }
    out
}

fn val<'a>(e: &'a Export, key: &str, name: &str) -> &'a str {
    e.get(&key.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("hivexregedit shows no key {key}"))
        .get(name)
        .unwrap_or_else(|| panic!("hivexregedit shows no value {key}!{name}"))
}

/// First 16 hex digits of `sha256sum` of a file.
fn sha256_prefix(p: &Path) -> String {
    let out = common::run_ok(common::tool("sha256sum").arg(p));
    out[..16].to_string()
}

/// FILETIME of a date at 00:00 UTC, from `date`.
fn filetime_of(date: &str) -> u64 {
    let out = common::run_ok(common::tool("date").args(["-u", "-d", date, "+%s"]));
    let secs: u64 = out.trim().parse().unwrap();
    (secs + 11_644_473_600) * 10_000_000
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A GUID's Windows byte order (Data1..3 little-endian), from its text.
fn guid_le(text: &str) -> Vec<u8> {
    let h: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut v = Vec::new();
    v.extend(b[0..4].iter().rev());
    v.extend(b[4..6].iter().rev());
    v.extend(b[6..8].iter().rev());
    v.extend(&b[8..16]);
    v
}

/// The 48-byte DriverPackages!Version value facts-drivers.md §3.3 describes.
fn expected_version(class: &str, date: &str, ver: [u64; 4]) -> String {
    let mut v = vec![0x00, 0xFF, 0x09, 0x00, 0, 0, 0, 0];
    v.extend(guid_le(class));
    v.extend(filetime_of(date).to_le_bytes());
    v.extend(((ver[0] << 48) | (ver[1] << 32) | (ver[2] << 16) | ver[3]).to_le_bytes());
    v.extend([0u8; 8]);
    format!("hex:{}", hex(&v))
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn drivers_land_in_the_volume_and_the_system_hive() {
    let tmp = common::tempdir();
    let src = tmp.path().join("drivers");
    driver_folder(&src);
    let (tree, sys, reports) = inject_all(&src, &opts());
    // from_dir walks folders in name order: netkvm first, then viostor.
    assert_eq!(reports.len(), 2);
    let (net, vio) = (&reports[0], &reports[1]);
    assert_eq!(
        (net.inf.as_str(), vio.inf.as_str()),
        ("netkvm.inf", "viostor.inf")
    );
    assert_eq!(net.published_name, "oem0.inf");
    assert_eq!(vio.published_name, "oem1.inf");

    // The package ids: <inf>_amd64_<first 16 hex digits of SHA-256 of the INF>.
    let vio_id = format!(
        "viostor.inf_amd64_{}",
        sha256_prefix(&src.join("viostor/viostor.inf"))
    );
    let net_id = format!(
        "netkvm.inf_amd64_{}",
        sha256_prefix(&src.join("netkvm/netkvm.inf"))
    );
    assert_eq!(vio.package_id, vio_id);
    assert_eq!(net.package_id, net_id);

    let img = write_image(tmp.path(), tree, &sys);
    let fix = common::run(common::tool("ntfsfix").arg("-n").arg(&img));
    assert!(
        fix.status.success(),
        "ntfsfix -n: {}",
        String::from_utf8_lossy(&fix.stdout)
    );

    // Files, as ntfs-3g reads them.
    let store = "/Windows/System32/DriverStore/FileRepository";
    assert_eq!(
        ntfsls(&img, &format!("{store}/{vio_id}")),
        ["amd64", "viostor.cat", "viostor.inf"]
    );
    assert_eq!(
        ntfsls(&img, &format!("{store}/{vio_id}/amd64")),
        ["viostor.sys"]
    );
    assert_eq!(
        ntfsls(&img, &format!("{store}/{net_id}")),
        ["netkvm.cat", "netkvm.inf", "netkvm.sys"]
    );
    assert_eq!(
        ntfscat(&img, &format!("{store}/{vio_id}/viostor.inf")),
        utf16_crlf(VIOSTOR_INF)
    );
    assert_eq!(
        ntfscat(&img, "/Windows/System32/drivers/viostor.sys"),
        viostor_sys()
    );
    assert_eq!(
        ntfscat(&img, "/Windows/System32/drivers/netkvm.sys"),
        netkvm_sys()
    );
    assert_eq!(
        ntfscat(&img, "/Windows/INF/oem1.inf"),
        utf16_crlf(VIOSTOR_INF)
    );
    assert_eq!(
        ntfscat(&img, "/Windows/INF/oem0.inf"),
        NETKVM_INF.as_bytes()
    );

    // The SYSTEM hive, pulled out of the volume.
    let hive_file = tmp.path().join("SYSTEM");
    std::fs::write(&hive_file, ntfscat(&img, "/Windows/System32/config/SYSTEM")).unwrap();
    let e = hivex_export(&hive_file);

    // The boot-start service.
    let svc = "ControlSet001\\Services\\viostor";
    assert_eq!(val(&e, svc, "Start"), "dword:00000000");
    assert_eq!(val(&e, svc, "Type"), "dword:00000001");
    assert_eq!(val(&e, svc, "ErrorControl"), "dword:00000001");
    assert_eq!(
        val(&e, svc, "ImagePath"),
        "expand:System32\\drivers\\viostor.sys"
    );
    assert_eq!(val(&e, svc, "Group"), "sz:SCSI miniport");
    assert_eq!(val(&e, svc, "Owners"), "multi:oem1.inf");
    assert_eq!(
        val(&e, &format!("{svc}\\Parameters"), "BusType"),
        "dword:00000001"
    );
    assert_eq!(
        val(&e, &format!("{svc}\\Parameters\\PnpInterface"), "5"),
        "dword:00000001"
    );
    let ev = "ControlSet001\\Services\\EventLog\\System\\viostor";
    assert_eq!(
        val(&e, ev, "EventMessageFile"),
        "expand:%SystemRoot%\\System32\\IoLogMsg.dll"
    );
    assert_eq!(val(&e, ev, "TypesSupported"), "dword:00000007");
    // The demand-start network service is left to Plug and Play.
    assert!(!e.contains_key("controlset001\\services\\netkvm"));
    assert!(net.services.iter().all(|s| !s.created));
    assert!(vio.services.iter().all(|s| s.created));

    // DriverDatabase.
    let db = "DriverDatabase";
    assert_eq!(val(&e, db, "OemInfMap"), "hex:c0");
    assert_eq!(
        val(&e, db, "UpdateDate"),
        format!("hex:{}", hex(&TS.to_le_bytes()))
    );
    let inf_key = format!("{db}\\DriverInfFiles\\oem1.inf");
    assert_eq!(val(&e, &inf_key, "@"), format!("multi:{vio_id}"));
    assert_eq!(val(&e, &inf_key, "Active"), format!("sz:{vio_id}"));
    assert_eq!(val(&e, &inf_key, "Configurations"), "multi:scsi_inst");
    let ids = format!("{db}\\DeviceIds\\PCI");
    assert_eq!(
        val(
            &e,
            &format!("{ids}\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"),
            "oem1.inf"
        ),
        "hex:01,ff,00,00"
    );
    assert_eq!(
        val(&e, &format!("{ids}\\VEN_1AF4&DEV_1001"), "oem1.inf"),
        "hex:02,ff,00,00"
    );
    assert_eq!(
        val(&e, &format!("{ids}\\VEN_1AF4&DEV_1000"), "oem0.inf"),
        "hex:02,ff,00,00"
    );
    // The models section for a newer build (...17763) is not used on 14393.
    assert!(!e.contains_key(
        &format!("{ids}\\ven_1af4&dev_1042&subsys_11001af4&rev_01").to_ascii_lowercase()
    ));
    assert!(vio
        .not_applied
        .iter()
        .any(|s| s.contains("VirtioScsi.NTamd64.10.0...17763")));
    assert_eq!(
        val(
            &e,
            &format!("{db}\\DeviceIds\\{{4d36e97b-e325-11ce-bfc1-08002be10318}}"),
            "oem1.inf"
        ),
        "hex(0):"
    );
    let pkg = format!("{db}\\DriverPackages\\{vio_id}");
    assert_eq!(val(&e, &pkg, "@"), "sz:oem1.inf");
    assert_eq!(val(&e, &pkg, "InfName"), "sz:viostor.inf");
    assert_eq!(val(&e, &pkg, "Catalog"), "sz:viostor.cat");
    assert_eq!(val(&e, &pkg, "Provider"), "sz:Red Hat, Inc.");
    assert_eq!(
        val(&e, &pkg, "Version"),
        expected_version(
            "4D36E97B-E325-11CE-BFC1-08002BE10318",
            "2016-06-21",
            [62, 72, 104, 12600]
        )
    );
    let cfg = format!("{pkg}\\Configurations\\scsi_inst");
    assert_eq!(val(&e, &cfg, "Service"), "sz:viostor");
    assert_eq!(val(&e, &cfg, "ConfigFlags"), "dword:00000000");
    assert_eq!(
        val(
            &e,
            &format!("{cfg}\\Device\\Interrupt Management\\MessageSignaledInterruptProperties"),
            "MessageNumberLimit"
        ),
        "dword:00000100"
    );
    assert_eq!(
        val(
            &e,
            &format!("{cfg}\\Services\\viostor\\Parameters"),
            "BusType"
        ),
        "dword:00000001"
    );
    let desc = format!("{pkg}\\Descriptors\\PCI\\VEN_1AF4&DEV_1001");
    assert_eq!(val(&e, &desc, "Configuration"), "sz:scsi_inst");
    assert_eq!(val(&e, &desc, "Description"), "sz:%virtioscsi.devicedesc%");
    assert_eq!(val(&e, &desc, "Manufacturer"), "sz:%vendor%");
    assert_eq!(
        val(&e, &format!("{pkg}\\Strings"), "virtioscsi.devicedesc"),
        "sz:Red Hat VirtIO SCSI controller"
    );

    // The network package: software-key AddReg kept under Configurations\...\Driver.
    let npkg = format!("{db}\\DriverPackages\\{net_id}");
    assert_eq!(
        val(&e, &npkg, "Version"),
        expected_version(
            "4d36e972-e325-11ce-bfc1-08002be10318",
            "2017-03-15",
            [100, 75, 104, 14100]
        )
    );
    let ncfg = format!("{npkg}\\Configurations\\kvmnet6.ndi");
    assert_eq!(val(&e, &ncfg, "Service"), "sz:netkvm");
    assert_eq!(val(&e, &format!("{ncfg}\\Driver"), "MTU"), "sz:1500");
    assert_eq!(
        val(&e, &format!("{ncfg}\\Driver\\Ndi"), "Service"),
        "sz:netkvm"
    );
    assert_eq!(
        val(
            &e,
            &format!("{ncfg}\\Driver\\Ndi\\params\\MTU"),
            "ParamDesc"
        ),
        "sz:Init.MTUSize"
    );
    assert_eq!(
        val(&e, &format!("{ncfg}\\Services\\netkvm"), "TextModeFlags"),
        "dword:00000001"
    );
    // What was not done is said.
    for want in [
        "Characteristics",
        "BusType = 5",
        "PnpLockdown",
        "netkvm.cat",
        "service netkvm",
    ] {
        assert!(
            net.not_applied.iter().any(|s| s.contains(want)),
            "{want:?} missing from {:#?}",
            net.not_applied
        );
    }
    assert_eq!(
        vio.device_ids,
        [
            "PCI\\VEN_1AF4&DEV_1001",
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"
        ]
    );
    assert_eq!(
        vio.files,
        [
            "Windows\\INF\\oem1.inf",
            "Windows\\System32\\drivers\\viostor.sys"
        ]
    );
}

#[test]
fn injection_is_deterministic_and_all_services_creates_the_rest() {
    let tmp = common::tempdir();
    let src = tmp.path().join("drivers");
    driver_folder(&src);
    let (_, a, ra) = inject_all(&src, &opts());
    let (_, b, rb) = inject_all(&src, &opts());
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    assert_eq!(ra, rb);
    assert_eq!(
        serde_json::to_string(&ra).unwrap(),
        serde_json::to_string(&rb).unwrap()
    );

    let all = InjectOptions {
        all_services: true,
        ..opts()
    };
    let (_, sys, reports) = inject_all(&src, &all);
    assert!(reports[0].services.iter().all(|s| s.created));
    let hive_file = tmp.path().join("SYSTEM");
    std::fs::write(&hive_file, sys.to_bytes().unwrap()).unwrap();
    let e = hivex_export(&hive_file);
    let svc = "ControlSet001\\Services\\netkvm";
    assert_eq!(val(&e, svc, "Start"), "dword:00000003");
    assert_eq!(val(&e, svc, "Group"), "sz:NDIS");
    assert_eq!(
        val(&e, svc, "DisplayName"),
        "sz:Red Hat VirtIO Ethernet Adapter Service"
    );
    assert_eq!(
        val(&e, svc, "ImagePath"),
        "expand:System32\\drivers\\netkvm.sys"
    );
    assert_eq!(val(&e, svc, "TextModeFlags"), "dword:00000001");
    assert_eq!(
        val(
            &e,
            "ControlSet001\\Services\\EventLog\\System\\netkvm",
            "EventMessageFile"
        ),
        "expand:%SystemRoot%\\System32\\netevent.dll"
    );
}

#[test]
fn broken_packages_are_refused_with_the_inf_and_file_named() {
    let tmp = common::tempdir();
    let src = tmp.path().join("drivers");
    driver_folder(&src);
    std::fs::remove_file(src.join("viostor/amd64/VIOSTOR.SYS")).unwrap();
    let e = from_dir(&src).unwrap_err().to_string();
    assert!(
        e.contains("viostor.inf references viostor.sys (expected at amd64\\viostor.sys"),
        "{e}"
    );

    // An INF with an unterminated quote names the file and line.
    std::fs::write(src.join("viostor/amd64/viostor.sys"), viostor_sys()).unwrap();
    let bad = NETKVM_INF.replace("\"Red Hat VirtIO Ethernet Adapter\"", "\"Red Hat");
    std::fs::write(src.join("netkvm/netkvm.inf"), bad).unwrap();
    let e = from_dir(&src).unwrap_err().to_string();
    assert!(
        e.contains("netkvm.inf line 67: unterminated quoted string"),
        "{e}"
    );

    // An INF whose only models section is for x86 injects nothing, and says why.
    std::fs::write(
        src.join("netkvm/netkvm.inf"),
        NETKVM_INF.replace("NetKVM, NTamd64.10.0", "NetKVM, NTx86"),
    )
    .unwrap();
    let (mut tree, mut sys) = image();
    let (t0, s0) = (tree.len(), sys.clone());
    let pkgs = from_dir(&src).unwrap();
    let e = inject(&mut tree, &mut sys, &pkgs[0], &opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("netkvm.inf: no device line applies to amd64 10.0 build 14393"),
        "{e}"
    );
    assert_eq!((tree.len(), &sys), (t0, &s0));
}
