//! The built-in demo media: a miniature installation media set that follows the real
//! structure (docs/domain.md §2: `NanoServer\NanoServer.wim` with a Standard and a Datacenter
//! image, `NanoServer\Packages\*.cab` with their language packs in `Packages\<lang>\`), plus a
//! container base image WIM under `BaseImages\`. Every byte is made here by nanoforge's own
//! writers (WIM, registry hives, BCD, cabinets); nothing is Microsoft's. Every file that
//! stands in for a Windows binary says so in its own bytes.
//!
//! The boot manager stand-in (`Windows\Boot\EFI\bootmgfw.efi`) is a GRUB EFI image built with
//! `grub-mkimage` when it is installed: booted by UEFI firmware from a built disk it prints
//! what it finds on the disk (the SYSTEM hive, the BCD store on the ESP, one file of each
//! package, the container store's metadata.json) so a whole build can be boot-checked.
//! Without grub-mkimage the stand-in is a text file and the image does not boot.
//!
//! Deterministic: fixed times, GUIDs from fixed seeds, sorted contents.

use crate::core::guid::Guid;
use crate::formats::bcd::{self, Device};
use crate::formats::regf::{Hive, Value};
use crate::formats::wim::write::{self as wim_write, CaptureOptions, Compression, ImageSpec};
use crate::servicing::synth::{self, SynthKind};
use crate::tree::{Content, Meta, SecurityId, Tree};
use std::io;
use std::path::Path;

/// 2016-10-12 00:00:00 UTC (the Windows Server 2016 release date) as FILETIME: the time of
/// every demo file, so the demo media never depend on the clock.
pub const DEMO_TIME: u64 = 131_207_040_000_000_000;
/// Language of the demo language packs.
pub const DEMO_LANGUAGE: &str = "en-us";
/// Build number of the demo images (Windows Server 2016 RTM).
pub const DEMO_BUILD: u32 = 14393;
/// The demo base image, relative to the media root.
pub const DEMO_BASE_IMAGE: &str = "BaseImages/NanoServer-demo.wim";
/// What the GRUB stand-in prints first.
pub const BOOT_MARKER: &str = "NANOFORGE DEMO BOOT MANAGER STAND-IN";

/// Options of the demo media.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Do not build the GRUB stand-in even when grub-mkimage is there.
    pub no_grub: bool,
}

/// What the demo media hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    pub files: Vec<String>,
    pub bootable: bool,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("demo media: {what}: {e}"))
}

/// A tree builder with one security descriptor for everything.
struct Builder {
    tree: Tree,
    sec: SecurityId,
}

impl Builder {
    fn new() -> io::Result<Builder> {
        let mut tree = Tree::new(Meta::at(DEMO_TIME));
        // O:BA G:SY D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)
        let sec = tree
            .add_security(&demo_sd())
            .map_err(|e| io_err("security descriptor", e))?;
        let mut root = Meta::at(DEMO_TIME);
        root.security = Some(sec);
        let id = crate::tree::Tree::ROOT;
        tree.set_meta(id, root).map_err(|e| io_err("root", e))?;
        Ok(Builder { tree, sec })
    }

    fn meta(&self, attributes: u32) -> Meta {
        let mut m = Meta::at(DEMO_TIME);
        m.attributes = attributes;
        m.security = Some(self.sec);
        m
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        let m = self.meta(0x10);
        self.tree
            .mkdir_p(path, &m)
            .map(|_| ())
            .map_err(|e| io_err(path, e))
    }

    fn file(&mut self, path: &str, data: Vec<u8>) -> io::Result<()> {
        let (dir, name) = path.rsplit_once('\\').unwrap_or(("", path));
        let dm = self.meta(0x10);
        let parent = if dir.is_empty() {
            Tree::ROOT
        } else {
            self.tree.mkdir_p(dir, &dm).map_err(|e| io_err(path, e))?
        };
        let m = self.meta(0x20);
        self.tree
            .add_file(parent, name, m, Content::bytes(data))
            .map(|_| ())
            .map_err(|e| io_err(path, e))
    }
}

/// A self-relative security descriptor: owner BA, group SY, DACL granting SY and BA full
/// access and BU read/execute, all inheritable (MS-DTYP §2.4.6).
fn demo_sd() -> Vec<u8> {
    fn sid(auth: u8, subs: &[u32]) -> Vec<u8> {
        let mut v = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, auth];
        for s in subs {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }
    let ba = sid(5, &[32, 544]);
    let bu = sid(5, &[32, 545]);
    let sy = sid(5, &[18]);
    let ace = |mask: u32, s: &[u8]| {
        let mut v = vec![0u8, 0x03]; // ACCESS_ALLOWED, OBJECT_INHERIT | CONTAINER_INHERIT
        v.extend_from_slice(&((8 + s.len()) as u16).to_le_bytes());
        v.extend_from_slice(&mask.to_le_bytes());
        v.extend_from_slice(s);
        v
    };
    let aces = [ace(0x1f01ff, &sy), ace(0x1f01ff, &ba), ace(0x1200a9, &bu)];
    let body: Vec<u8> = aces.concat();
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&((8 + body.len()) as u16).to_le_bytes());
    acl.extend_from_slice(&(aces.len() as u16).to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    acl.extend_from_slice(&body);
    let owner_off = 20u32;
    let group_off = owner_off + ba.len() as u32;
    let dacl_off = group_off + sy.len() as u32;
    let mut sd = vec![1u8, 0];
    // SE_SELF_RELATIVE | SE_DACL_PROTECTED | SE_DACL_PRESENT
    sd.extend_from_slice(&(0x8000u16 | 0x1000 | 0x0004).to_le_bytes());
    sd.extend_from_slice(&owner_off.to_le_bytes());
    sd.extend_from_slice(&group_off.to_le_bytes());
    sd.extend_from_slice(&0u32.to_le_bytes());
    sd.extend_from_slice(&dacl_off.to_le_bytes());
    sd.extend_from_slice(&ba);
    sd.extend_from_slice(&sy);
    sd.extend_from_slice(&acl);
    sd
}

fn hive_bytes(h: &Hive) -> io::Result<Vec<u8>> {
    h.to_bytes().map_err(|e| io_err("hive", e))
}

fn set(h: &mut Hive, key: &str, v: Value) -> io::Result<()> {
    h.create_key(key, DEMO_TIME).map_err(|e| io_err(key, e))?;
    h.set_value(key, v).map_err(|e| io_err(key, e))
}

/// The SYSTEM hive of a freshly installed image: one control set, selected.
fn system_hive() -> io::Result<Vec<u8>> {
    let mut h = Hive::new_empty("SYSTEM", DEMO_TIME);
    for n in ["Current", "Default", "LastKnownGood"] {
        set(&mut h, "Select", Value::dword(n, 1))?;
    }
    set(&mut h, "Select", Value::dword("Failed", 0))?;
    let cs = "ControlSet001";
    set(
        &mut h,
        &format!("{cs}\\Control\\ComputerName\\ComputerName"),
        Value::sz("ComputerName", "MINWINPC"),
    )?;
    set(
        &mut h,
        &format!("{cs}\\Control\\ComputerName\\ActiveComputerName"),
        Value::sz("ComputerName", "MINWINPC"),
    )?;
    set(
        &mut h,
        &format!("{cs}\\Services\\Tcpip\\Parameters"),
        Value::sz("Hostname", "MINWINPC"),
    )?;
    set(
        &mut h,
        &format!("{cs}\\Control\\Session Manager"),
        Value::sz("nanoforge demo", "synthetic hive made by nanoforge"),
    )?;
    for k in ["Control\\Class", "Enum", "Hardware Profiles\\Current"] {
        h.create_key(&format!("{cs}\\{k}"), DEMO_TIME)
            .map_err(|e| io_err(k, e))?;
    }
    h.create_key("DriverDatabase\\DriverPackages", DEMO_TIME)
        .map_err(|e| io_err("DriverDatabase", e))?;
    set(&mut h, "Setup", Value::dword("SystemSetupInProgress", 0))?;
    hive_bytes(&h)
}

fn software_hive(edition: &str, product: &str) -> io::Result<Vec<u8>> {
    let mut h = Hive::new_empty("SOFTWARE", DEMO_TIME);
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    for v in [
        Value::sz("ProductName", product),
        Value::sz("EditionID", edition),
        Value::sz("InstallationType", "Nano Server"),
        Value::sz("CurrentBuild", &DEMO_BUILD.to_string()),
        Value::sz("CurrentBuildNumber", &DEMO_BUILD.to_string()),
        Value::sz("CurrentVersion", "6.3"),
        Value::dword("CurrentMajorVersionNumber", 10),
        Value::dword("CurrentMinorVersionNumber", 0),
        Value::sz("SystemRoot", "C:\\Windows"),
        Value::sz("nanoforge demo", "synthetic hive made by nanoforge"),
    ] {
        set(&mut h, cv, v)?;
    }
    h.create_key(
        "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Packages",
        DEMO_TIME,
    )
    .map_err(|e| io_err("CBS", e))?;
    h.create_key(
        "Microsoft\\Windows\\CurrentVersion\\AppModelUnlock",
        DEMO_TIME,
    )
    .map_err(|e| io_err("AppModelUnlock", e))?;
    hive_bytes(&h)
}

fn small_hive(root: &str) -> io::Result<Vec<u8>> {
    let mut h = Hive::new_empty(root, DEMO_TIME);
    set(
        &mut h,
        "nanoforge",
        Value::sz("demo", "synthetic hive made by nanoforge"),
    )?;
    hive_bytes(&h)
}

fn bcd_template() -> io::Result<Vec<u8>> {
    let opts = bcd::BuildOptions::new(Device::Boot, Device::Boot, b"nanoforge demo bcd", DEMO_TIME);
    bcd::build(&opts).map_err(|e| io_err("BCD-Template", e))
}

fn text(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in s.lines() {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One file each demo package installs (inside the Windows volume), for the boot check.
pub fn marker_path(kind: SynthKind) -> &'static str {
    match kind {
        SynthKind::Guest => "Windows\\System32\\nfdemoguest.dll",
        SynthKind::Compute => "Windows\\System32\\nfdemovmms.exe",
        SynthKind::Containers => "Windows\\System32\\nfdemocontainer.dll",
        SynthKind::OemDrivers => "Windows\\System32\\drivers\\nfdemonet.sys",
    }
}

/// The GRUB script of the boot manager stand-in. Paths it reads are fixed by the demo
/// packages (one payload file each) and the container store's layout.
pub fn grub_script() -> String {
    let mut s = String::new();
    s.push_str(
        "insmod serial\nserial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         insmod part_gpt\ninsmod fat\ninsmod ntfs\ninsmod regexp\n",
    );
    s.push_str(&format!("echo \"{BOOT_MARKER}\"\n"));
    s.push_str("search --no-floppy --set=esp --file /EFI/Microsoft/Boot/BCD\n");
    s.push_str("echo \"esp=$esp\"\nls -l ($esp)/EFI/Microsoft/Boot/\n");
    s.push_str("search --no-floppy --set=win --file /Windows/System32/config/SYSTEM\n");
    s.push_str("echo \"windows=$win\"\n");
    s.push_str("echo \"BEGIN SYSTEM HIVE\"\nhexdump --length=16777216 ($win)/Windows/System32/config/SYSTEM\necho \"END SYSTEM HIVE\"\n");
    for kind in SynthKind::ALL {
        let path = marker_path(kind).replace('\\', "/");
        s.push_str(&format!(
            "echo \"BEGIN PACKAGE FILE {path}\"\ncat ($win)/{path}\necho \"\"\necho \"END PACKAGE FILE\"\n"
        ));
    }
    s.push_str(
        "for f in ($win)/ProgramData/Microsoft/Windows/Images/*/metadata.json; do\n  \
         echo \"BEGIN METADATA $f\"\n  cat $f\n  echo \"\"\n  echo \"END METADATA\"\ndone\n",
    );
    s.push_str("echo \"NANOFORGE DEMO BOOT DONE\"\nhalt\n");
    s
}

/// A one-file POSIX ustar archive (POSIX.1-2008 `pax` "ustar Interchange Format"): the
/// memdisk GRUB reads its script from. Fixed owner, mode and time, so it is deterministic.
fn ustar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}", w = width - 1);
        h[at..at + width - 1].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Build the GRUB stand-in with grub-mkimage (deterministic for one GRUB installation), or
/// `None` when GRUB's EFI tools are not installed. The embedded early config hands over to
/// normal mode (full scripting) on a memdisk holding [`grub_script`].
fn grub_standin(no_grub: bool) -> io::Result<Option<Vec<u8>>> {
    if no_grub || !Path::new("/usr/lib/grub/x86_64-efi/kernel.img").exists() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("early.cfg");
    std::fs::write(&cfg, "normal (memdisk)/demo.cfg\n")?;
    let tar = dir.path().join("memdisk.tar");
    std::fs::write(&tar, ustar("demo.cfg", grub_script().as_bytes()))?;
    let out = dir.path().join("bootx64.efi");
    let status = std::process::Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "(memdisk)", "-c"])
        .arg(&cfg)
        .arg("-m")
        .arg(&tar)
        .arg("-o")
        .arg(&out)
        .args([
            "normal",
            "serial",
            "terminal",
            "echo",
            "ls",
            "cat",
            "search",
            "search_fs_file",
            "part_gpt",
            "fat",
            "ntfs",
            "halt",
            "hexdump",
            "test",
            "regexp",
            "configfile",
            "memdisk",
            "tar",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match status {
        Ok(o) if o.status.success() => Ok(Some(std::fs::read(&out)?)),
        Ok(o) => Err(io_err(
            "grub-mkimage",
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        )),
        Err(_) => Ok(None),
    }
}

/// The Windows tree of one demo edition.
fn windows_tree(edition: &str, product: &str, bootmgr: &[u8]) -> io::Result<Tree> {
    let mut b = Builder::new()?;
    let cfg = "Windows\\System32\\config";
    b.file(&format!("{cfg}\\SYSTEM"), system_hive()?)?;
    b.file(
        &format!("{cfg}\\SOFTWARE"),
        software_hive(edition, product)?,
    )?;
    for (name, root) in [
        ("SAM", "SAM"),
        ("SECURITY", "SECURITY"),
        ("DEFAULT", "DEFAULT"),
        ("COMPONENTS", "COMPONENTS"),
    ] {
        b.file(&format!("{cfg}\\{name}"), small_hive(root)?)?;
    }
    b.file(&format!("{cfg}\\BCD-Template"), bcd_template()?)?;
    b.file("Windows\\Boot\\EFI\\bootmgfw.efi", bootmgr.to_vec())?;
    b.file(
        "Windows\\System32\\nanoforge-demo.txt",
        text(&format!(
            "nanoforge demo image: {product}\nEvery file here is synthetic, made by nanoforge; \
             this is not Windows and does not boot Windows.\n"
        )),
    )?;
    for d in [
        "Windows\\WinSxS\\Manifests",
        "Windows\\servicing\\Packages",
        "Windows\\System32\\drivers",
        "Windows\\System32\\DriverStore\\FileRepository",
        "Windows\\INF",
        "Windows\\Panther",
        "Windows\\Setup\\Scripts",
        "Program Files",
        "ProgramData\\Microsoft\\Windows",
        "Users\\Default",
    ] {
        b.dir(d)?;
    }
    Ok(b.tree)
}

/// The container base image: a Nano-like tree with the five hives the store copies.
fn base_tree() -> io::Result<Tree> {
    let mut b = Builder::new()?;
    let cfg = "Windows\\System32\\config";
    b.file(&format!("{cfg}\\SYSTEM"), system_hive()?)?;
    b.file(
        &format!("{cfg}\\SOFTWARE"),
        software_hive(
            "ServerDatacenterNano",
            "Nano Server container base (nanoforge demo)",
        )?,
    )?;
    for (name, root) in [
        ("SAM", "SAM"),
        ("SECURITY", "SECURITY"),
        ("DEFAULT", "DEFAULT"),
    ] {
        b.file(&format!("{cfg}\\{name}"), small_hive(root)?)?;
    }
    b.file(
        "Windows\\System32\\nanoforge-demo.txt",
        text("nanoforge demo container base image: synthetic files made by nanoforge.\n"),
    )?;
    b.dir("Users\\ContainerAdministrator")?;
    b.dir("ProgramData")?;
    Ok(b.tree)
}

fn options(name: &str, edition: &str, seed: &str) -> CaptureOptions {
    CaptureOptions {
        compression: Compression::Lzx,
        image_name: name.to_string(),
        description: Some(format!("{name}: nanoforge demo image, synthetic")),
        edition_id: Some(edition.to_string()),
        version: Some((10, 0, DEMO_BUILD, 0)),
        languages: vec![DEMO_LANGUAGE.to_string()],
        time: DEMO_TIME,
        guid: *Guid::derive(b"nanoforge demo media", seed).as_bytes(),
        flags: Some(edition.to_string()),
        display_name: Some(name.to_string()),
        // PROCESSOR_ARCHITECTURE_AMD64.
        arch: Some(9),
        product_name: Some("Microsoft Windows Operating System (nanoforge demo)".into()),
        installation_type: Some("Nano Server".into()),
        ..CaptureOptions::default()
    }
}

fn write_wim(path: &Path, images: &[(&Tree, CaptureOptions)]) -> io::Result<()> {
    let specs: Vec<ImageSpec> = images
        .iter()
        .map(|(t, o)| ImageSpec {
            tree: t,
            options: o.clone(),
        })
        .collect();
    let mut f = std::fs::File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    wim_write::write_wim(&mut f, &specs, 1, &|_| {})
        .map_err(|e| io_err(&path.display().to_string(), e))?;
    Ok(())
}

/// Write the demo media into `dir` (created when missing; existing files of the same names
/// are replaced).
pub fn write_media(dir: &Path, opts: &DemoOptions) -> io::Result<DemoReport> {
    let grub = grub_standin(opts.no_grub)?;
    let bootable = grub.is_some();
    let bootmgr = grub.unwrap_or_else(|| {
        text(
            "nanoforge demo boot manager stand-in (grub-mkimage was not available, so this \
              image does not boot)",
        )
    });
    let ns = dir.join("NanoServer");
    let pkgs = ns.join("Packages");
    let lang = pkgs.join(DEMO_LANGUAGE);
    std::fs::create_dir_all(&lang)?;
    std::fs::create_dir_all(dir.join("BaseImages"))?;
    let mut files = Vec::new();

    let std_tree = windows_tree(
        "ServerStandardNano",
        "Nano Server Standard (nanoforge demo)",
        &bootmgr,
    )?;
    let dc_tree = windows_tree(
        "ServerDatacenterNano",
        "Nano Server Datacenter (nanoforge demo)",
        &bootmgr,
    )?;
    write_wim(
        &ns.join("NanoServer.wim"),
        &[
            (
                &std_tree,
                options("Nano Server Standard (demo)", "ServerStandardNano", "std"),
            ),
            (
                &dc_tree,
                options(
                    "Nano Server Datacenter (demo)",
                    "ServerDatacenterNano",
                    "dc",
                ),
            ),
        ],
    )?;
    files.push("NanoServer/NanoServer.wim".to_string());

    for kind in SynthKind::ALL {
        let neutral = synth::synthetic_package(kind, None);
        let name = kind.package_name();
        synth::write_cab(&pkgs.join(format!("{name}.cab")), &neutral)?;
        files.push(format!("NanoServer/Packages/{name}.cab"));
        let lp = synth::synthetic_package(kind, Some(DEMO_LANGUAGE));
        synth::write_cab(&lang.join(format!("{name}_{DEMO_LANGUAGE}.cab")), &lp)?;
        files.push(format!(
            "NanoServer/Packages/{DEMO_LANGUAGE}/{name}_{DEMO_LANGUAGE}.cab"
        ));
    }

    let base = base_tree()?;
    let mut bo = options("NanoServer", "ServerDatacenterNano", "base");
    bo.description = Some("nanoforge demo container base image, synthetic".into());
    write_wim(&dir.join(DEMO_BASE_IMAGE), &[(&base, bo)])?;
    files.push(DEMO_BASE_IMAGE.to_string());
    std::fs::write(
        dir.join("README-DEMO.txt"),
        text(
            "nanoforge demo media. Every file in this folder was made by nanoforge's own writers \
             and is synthetic: it is not Microsoft's and installs nothing real. It follows the \
             layout of the Windows Server 2016 media so `nanoforge build --media demo` can be \
             run and boot-checked anywhere.",
        ),
    )?;
    files.push("README-DEMO.txt".to_string());
    Ok(DemoReport { files, bootable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_sd_parses_as_self_relative() {
        let sd = demo_sd();
        assert_eq!(sd[0], 1);
        let owner = u32::from_le_bytes(sd[4..8].try_into().unwrap()) as usize;
        assert_eq!(&sd[owner..owner + 8], &[1, 2, 0, 0, 0, 0, 0, 5]);
        let dacl = u32::from_le_bytes(sd[16..20].try_into().unwrap()) as usize;
        let acl_size = u16::from_le_bytes([sd[dacl + 2], sd[dacl + 3]]) as usize;
        assert_eq!(dacl + acl_size, sd.len());
    }

    #[test]
    fn hives_parse_back() {
        for b in [
            system_hive().unwrap(),
            software_hive("E", "P").unwrap(),
            bcd_template().unwrap(),
        ] {
            Hive::parse(&b).unwrap();
        }
        let s = Hive::parse(&system_hive().unwrap()).unwrap();
        assert!(s
            .key("ControlSet001\\Control\\ComputerName\\ComputerName")
            .is_some());
    }
}
