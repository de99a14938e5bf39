//! Synthetic servicing packages: demo stand-ins for the Nano Server Guest, Compute,
//! Containers and OEM-Drivers packages and their language packs, following the real schema
//! closely, and a deterministic cabinet writer.
//!
//! They hold no Microsoft bytes: every payload says it is demo data, the catalog is a
//! labelled placeholder, and the public key token is `6e616e6f666f7267` (ASCII
//! "nanoforg"), never Microsoft's. Only the cab file names and the package names in
//! `update.mum` match the real ones (`packages-manifest/*.toml`), so the catalog finds them.
//!
//! Schema (facts-cbs.md and the real manifests it cites):
//! - `update.mum`: `<assembly xmlns="urn:schemas-microsoft-com:asm.v3">` with the package's
//!   `assemblyIdentity` (name, version, processorArchitecture, language, publicKeyToken;
//!   domain.md §6), `<package identifier releaseType>`, for language packs `<parent
//!   buildCompare="EQ" integrate="separate" disposition="detect">` naming the neutral
//!   package, and `<update name><component><assemblyIdentity …/></component></update>` per
//!   component (the shape `mum.rs` reads).
//! - one component manifest per component, stored as `<keyform>.manifest` at the cab root,
//!   with the payload under `<keyform>\` (the layout of Windows update cabs [I]); identities
//!   carry `versionScope="nonSxS"` and, for drivers, `type="dualModeDriver"` (facts-cbs.md
//!   §4.2, §4.4 #9); files have `destinationPath` with `$(runtime.*)` (§6.1), a
//!   `<securityDescriptor name>` defined in the manifest's `trustInfo` (§6.2) and an
//!   xmldsig SHA-256 `<hash>` as real manifests do; services use
//!   `memberships/categoryMembership/categoryInstance/serviceData` (§7.1); drivers carry
//!   `<infFile/>` and their `Services\<driver>` key as plain registry keys (§7.1, the stornvme
//!   shape in facts-drivers.md §2.3).
//! - `update.cat`: a placeholder, not a signed catalog.
//!
//! Kinds: Guest (a boot-start storage driver: .inf + .sys + service key, plus one plain
//! component), Compute (three services, one of them in a svchost group, and registry values
//! of every common type), Containers (files, directories and registry keys with SDDL
//! descriptors), OemDrivers (a network
//! driver). The language pack of each holds one resources component with a `.mui` file.

use super::keyform::{self, AssemblyIdentity};
use sha2::Digest as _;
use std::io::{self, Write};
use std::path::Path;

/// Version given to every synthetic identity (the Server 2016 RTM build).
pub const VERSION: &str = "10.0.14393.0";
/// Public key token of the synthetic packages: ASCII "nanoforg" in hex, not Microsoft's.
pub const PUBLIC_KEY_TOKEN: &str = "6e616e6f666f7267";
/// Member date and time written into cabs (FAT format has 2-second resolution and starts
/// in 1980; a fixed value keeps the cab bytes reproducible).
pub const CAB_DATETIME: (i32, u8, u8) = (2016, 10, 1);

/// Which package to synthesise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthKind {
    Guest,
    Compute,
    Containers,
    OemDrivers,
}

impl SynthKind {
    /// All kinds.
    pub const ALL: [SynthKind; 4] = [
        SynthKind::Guest,
        SynthKind::Compute,
        SynthKind::Containers,
        SynthKind::OemDrivers,
    ];

    /// Short name in the package catalog.
    pub fn short_name(self) -> &'static str {
        match self {
            SynthKind::Guest => "Guest",
            SynthKind::Compute => "Compute",
            SynthKind::Containers => "Containers",
            SynthKind::OemDrivers => "OEM-Drivers",
        }
    }

    /// Package name (= cab base name, `packages-manifest/<short>.toml`).
    pub fn package_name(self) -> String {
        format!("Microsoft-NanoServer-{}-Package", self.short_name())
    }

    /// Cab path below `NanoServer\Packages` for the RTM/TP5 naming
    /// (`{cab}.cab`, `{lang}\{cab}_{lang}.cab`; catalog.rs `lang_pack_path`).
    pub fn cab_path(self, language: Option<&str>) -> String {
        match language {
            None => format!("{}.cab", self.package_name()),
            Some(l) => format!("{l}\\{}_{l}.cab", self.package_name()),
        }
    }
}

/// Standard base64 (RFC 4648 §4) for xmldsig DigestValue.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for ch in data.chunks(3) {
        let n = ch.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - ch.len()));
        for i in 0..=ch.len() {
            s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in ch.len()..3 {
            s.push('=');
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Demo payload text: says what it is, with CRLF line ends like Windows text files.
fn demo_bytes(what: &str) -> Vec<u8> {
    format!(
        "nanoforge demo data: {what}.\r\nThis is not Microsoft software and does nothing; it \
         exists to exercise offline servicing.\r\n"
    )
    .into_bytes()
}

const SD_FILE: &str = "O:BAG:SYD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;GRGX;;;BU)";
const SD_DIR: &str = "O:BAG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;GRGX;;;BU)";
const SD_KEY: &str = "O:BAG:SYD:P(A;CI;KA;;;SY)(A;CI;KA;;;BA)(A;CI;KR;;;BU)";
const SD_CONTAINER_DIR: &str = "O:SYG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// A component under construction.
struct Comp {
    name: String,
    language: String,
    type_: Option<&'static str>,
    files: Vec<(String, String, Vec<u8>, bool)>,
    /// Raw XML blocks after the files (directories, registryKeys, memberships).
    extra: String,
    sddl: Vec<(&'static str, &'static str)>,
}

impl Comp {
    fn new(name: &str, language: &str) -> Comp {
        Comp {
            name: name.into(),
            language: language.into(),
            type_: None,
            files: Vec::new(),
            extra: String::new(),
            sddl: vec![("NANOFORGE_DEMO_FILE_SDDL", SD_FILE)],
        }
    }

    fn file(mut self, name: &str, dest: &str, bytes: Vec<u8>) -> Comp {
        self.files.push((name.into(), dest.into(), bytes, false));
        self
    }

    fn inf(mut self, name: &str, dest: &str, bytes: Vec<u8>) -> Comp {
        self.files.push((name.into(), dest.into(), bytes, true));
        self
    }

    fn identity(&self) -> AssemblyIdentity {
        AssemblyIdentity {
            name: self.name.clone(),
            version: VERSION.into(),
            processor_architecture: "amd64".into(),
            language: self.language.clone(),
            public_key_token: PUBLIC_KEY_TOKEN.into(),
            type_: self.type_.unwrap_or("").into(),
            version_scope: "nonSxS".into(),
        }
    }

    fn identity_xml(&self) -> String {
        format!(
            "<assemblyIdentity name=\"{}\" version=\"{VERSION}\" processorArchitecture=\"amd64\" \
             language=\"{}\" buildType=\"release\" publicKeyToken=\"{PUBLIC_KEY_TOKEN}\" \
             versionScope=\"nonSxS\"{} />",
            self.name,
            self.language,
            self.type_
                .map(|t| format!(" type=\"{t}\""))
                .unwrap_or_default()
        )
    }

    /// (manifest member, bytes) and payload members.
    fn members(&self) -> Vec<(String, Vec<u8>)> {
        let kf = keyform::keyform(&self.identity()).expect("synthetic identities are ASCII");
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\r\n");
        x.push_str(
            "<assembly xmlns=\"urn:schemas-microsoft-com:asm.v3\" manifestVersion=\"1.0\" \
             copyright=\"nanoforge demo data, not a Microsoft component\">\r\n",
        );
        x.push_str(&format!("  {}\r\n", self.identity_xml()));
        let mut out = Vec::new();
        for (name, dest, bytes, inf) in &self.files {
            x.push_str(&format!(
                "  <file name=\"{name}\" destinationPath=\"{}\" sourceName=\"{name}\" \
                 importPath=\"$(build.nttree)\\\">\r\n",
                xml_escape(dest)
            ));
            x.push_str("    <securityDescriptor name=\"NANOFORGE_DEMO_FILE_SDDL\" />\r\n");
            if *inf {
                x.push_str("    <infFile xmlns=\"urn:schemas-microsoft-com:asm.v3\" />\r\n");
            }
            x.push_str(&format!(
                "    <asmv2:hash xmlns:asmv2=\"urn:schemas-microsoft-com:asm.v2\" \
                 xmlns:dsig=\"http://www.w3.org/2000/09/xmldsig#\">\r\n      <dsig:Transforms>\
                 \r\n        <dsig:Transform Algorithm=\"urn:schemas-microsoft-com:HashTransforms.Identity\" />\
                 \r\n      </dsig:Transforms>\r\n      <dsig:DigestMethod \
                 Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha256\" />\r\n      \
                 <dsig:DigestValue>{}</dsig:DigestValue>\r\n    </asmv2:hash>\r\n  </file>\r\n",
                base64(&sha2::Sha256::digest(bytes))
            ));
            out.push((format!("{kf}\\{name}"), bytes.clone()));
        }
        x.push_str(&self.extra);
        x.push_str(
            "  <trustInfo>\r\n    <security>\r\n      <accessControl>\r\n        \
             <securityDescriptorDefinitions>\r\n",
        );
        for (n, s) in &self.sddl {
            x.push_str(&format!(
                "          <securityDescriptorDefinition name=\"{n}\" sddl=\"{s}\" \
                 operationHint=\"replace\" />\r\n"
            ));
        }
        x.push_str(
            "        </securityDescriptorDefinitions>\r\n      </accessControl>\r\n    \
             </security>\r\n  </trustInfo>\r\n</assembly>\r\n",
        );
        out.push((format!("{kf}.manifest"), x.into_bytes()));
        out
    }
}

fn reg_key(key: &str, values: &[(&str, &str, &str)], sd: Option<&str>) -> String {
    let mut x = format!("    <registryKey keyName=\"{}\">\r\n", xml_escape(key));
    for (n, t, v) in values {
        x.push_str(&format!(
            "      <registryValue name=\"{}\" valueType=\"{t}\" value=\"{}\" />\r\n",
            xml_escape(n),
            xml_escape(v)
        ));
    }
    if let Some(s) = sd {
        x.push_str(&format!("      <securityDescriptor name=\"{s}\" />\r\n"));
    }
    x.push_str("    </registryKey>\r\n");
    x
}

fn service_block(attrs: &str) -> String {
    format!(
        "    <categoryMembership>\r\n      <id name=\"Microsoft.Windows.Categories.Services\" \
         version=\"{VERSION}\" publicKeyToken=\"{PUBLIC_KEY_TOKEN}\" typeName=\"Service\" />\r\n      \
         <categoryInstance>\r\n        <serviceData {attrs} />\r\n      </categoryInstance>\r\n    \
         </categoryMembership>\r\n"
    )
}

/// Registration of a service in a svchost group (facts-cbs.md §7.1, the SvcHost membership).
fn svchost_block(group: &str, service: &str) -> String {
    format!(
        "    <categoryMembership>\r\n      <id name=\"Microsoft.Windows.Categories\" \
         version=\"1.0.0.0\" publicKeyToken=\"{PUBLIC_KEY_TOKEN}\" typeName=\"SvcHost\" />\r\n      \
         <categoryInstance subcategory=\"{group}\">\r\n        \
         <serviceGroup position=\"last\" serviceName=\"{service}\" />\r\n      \
         </categoryInstance>\r\n    </categoryMembership>\r\n"
    )
}

/// An INF for a demo driver that never matches a device (vendor FFFF is not assigned).
fn demo_inf(base: &str, class: &str, class_guid: &str, start: u32, group: &str) -> Vec<u8> {
    let text = format!(
        "; nanoforge demo data: not a Microsoft driver; the hardware ID below matches no device.\r\n\
         [Version]\r\nSignature=\"$WINDOWS NT$\"\r\nClass={class}\r\nClassGuid={class_guid}\r\n\
         Provider=%Provider%\r\nDriverVer=10/01/2016,{VERSION}\r\nCatalogFile={base}.cat\r\n\
         PnpLockdown=1\r\n\r\n[DestinationDirs]\r\nDefaultDestDir = 12\r\n\r\n\
         [SourceDisksNames]\r\n1 = %DiskName%\r\n\r\n[SourceDisksFiles]\r\n{base}.sys = 1\r\n\r\n\
         [Manufacturer]\r\n%Provider% = Demo, NTamd64\r\n\r\n[Demo.NTamd64]\r\n\
         %Device.Desc% = Demo_Inst, PCI\\VEN_FFFF&DEV_0001\r\n\r\n[Demo_Inst]\r\n\
         CopyFiles = Demo_Files\r\n\r\n[Demo_Files]\r\n{base}.sys\r\n\r\n\
         [Demo_Inst.Services]\r\nAddService = {base}, 0x00000002, Demo_Service\r\n\r\n\
         [Demo_Service]\r\nServiceType = 1\r\nStartType = {start}\r\nErrorControl = 1\r\n\
         ServiceBinary = %12%\\{base}.sys\r\nLoadOrderGroup = {group}\r\n\r\n[Strings]\r\n\
         Provider = \"nanoforge demo\"\r\nDiskName = \"nanoforge demo media\"\r\n\
         Device.Desc = \"nanoforge demo device {base} (does nothing)\"\r\n"
    );
    text.into_bytes()
}

/// A driver component in the dual-mode shape: .inf in the FileRepository, .sys in drivers,
/// the Services key as plain registry keys.
fn driver_comp(
    name: &str,
    base: &str,
    store_hash: &str,
    inf: Vec<u8>,
    svc: &[(&str, &str, &str)],
) -> Comp {
    let mut c = Comp::new(name, "neutral")
        .inf(
            &format!("{base}.inf"),
            &format!(
                "$(runtime.system32)\\DriverStore\\FileRepository\\{base}.inf_amd64_{store_hash}\\"
            ),
            inf,
        )
        .file(
            &format!("{base}.cat"),
            &format!(
                "$(runtime.system32)\\DriverStore\\FileRepository\\{base}.inf_amd64_{store_hash}\\"
            ),
            demo_bytes(&format!("placeholder catalog of {base}.inf, not signed")),
        )
        .file(
            &format!("{base}.sys"),
            "$(runtime.drivers)\\",
            demo_bytes(&format!("{base}.sys, not a driver image")),
        );
    c.type_ = Some("dualModeDriver");
    c.extra = format!(
        "  <registryKeys>\r\n{}  </registryKeys>\r\n",
        reg_key(
            &format!("HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\{base}"),
            svc,
            Some("NANOFORGE_DEMO_FILE_SDDL"),
        )
    );
    c
}

fn components(kind: SynthKind) -> Vec<Comp> {
    match kind {
        SynthKind::Guest => {
            let inf = demo_inf(
                "nfdemostor",
                "SCSIAdapter",
                "{4D36E97B-E325-11CE-BFC1-08002BE10318}",
                0,
                "SCSI miniport",
            );
            let drv = driver_comp(
                "dual_nfdemostor.inf",
                "nfdemostor",
                "6e666465736f7230",
                inf,
                &[
                    ("DisplayName", "REG_SZ", "nanoforge demo storage driver"),
                    ("ErrorControl", "REG_DWORD", "0x00000003"),
                    ("Group", "REG_SZ", "SCSI Miniport"),
                    (
                        "ImagePath",
                        "REG_EXPAND_SZ",
                        "System32\\drivers\\nfdemostor.sys",
                    ),
                    ("Owners", "REG_MULTI_SZ", "\"nfdemostor.inf\""),
                    ("Start", "REG_DWORD", "0x00000000"),
                    ("Type", "REG_DWORD", "0x00000001"),
                ],
            );
            let mut integ = Comp::new("Nanoforge-Demo-Guest-Integration", "neutral").file(
                "nfdemoguest.dll",
                "$(runtime.system32)\\",
                demo_bytes("guest integration library"),
            );
            integ.extra = format!(
                "  <registryKeys>\r\n{}  </registryKeys>\r\n",
                reg_key(
                    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Nanoforge\\Demo\\Guest",
                    &[
                        ("Enabled", "REG_DWORD", "0x00000001"),
                        (
                            "Library",
                            "REG_EXPAND_SZ",
                            "$(runtime.system32)\\nfdemoguest.dll"
                        ),
                    ],
                    None,
                )
            );
            vec![drv, integ]
        }
        SynthKind::Compute => {
            let mut c = Comp::new("Nanoforge-Demo-Compute-Services", "neutral")
                .file(
                    "nfdemovmms.exe",
                    "$(runtime.system32)\\",
                    demo_bytes("virtual machine management service stand-in"),
                )
                .file(
                    "nfdemovsp.sys",
                    "$(runtime.drivers)\\",
                    demo_bytes("virtualization service provider stand-in"),
                )
                .file(
                    "nfdemohvsi.dll",
                    "$(runtime.system32)\\",
                    demo_bytes("shared-process service stand-in"),
                );
            c.extra = format!(
                "  <memberships>\r\n{}{}{}{}  </memberships>\r\n  <registryKeys>\r\n{}{}{}  </registryKeys>\r\n",
                service_block(
                    "name=\"nfdemovmms\" displayName=\"nanoforge demo VM management\" \
                     description=\"Demo service; not Hyper-V\" errorControl=\"normal\" \
                     start=\"delayedAuto\" type=\"win32OwnProcess\" \
                     imagePath=\"%SystemRoot%\\System32\\nfdemovmms.exe\" objectName=\"LocalSystem\" \
                     dependOnService=\"RpcSs,nfdemovsp\" requiredPrivileges=\"SeChangeNotifyPrivilege,SeCreateGlobalPrivilege\" \
                     sidType=\"unrestricted\" startAfterInstall=\"none\""
                ),
                service_block(
                    "name=\"nfdemovsp\" displayName=\"nanoforge demo VSP\" errorControl=\"critical\" \
                     start=\"system\" type=\"kernelDriver\" imagePath=\"System32\\drivers\\nfdemovsp.sys\" \
                     group=\"System Bus Extender\""
                ),
                service_block(
                    "name=\"nfdemohvsi\" displayName=\"nanoforge demo shared service\" errorControl=\"normal\" \
                     start=\"demand\" type=\"win32ShareProcess\" \
                     imagePath=\"%SystemRoot%\\System32\\svchost.exe -k nfdemogroup\" \
                     objectName=\"NT AUTHORITY\\LocalService\""
                ),
                svchost_block("nfdemogroup", "nfdemohvsi"),
                reg_key(
                    "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\nfdemohvsi\\Parameters",
                    &[(
                        "ServiceDll",
                        "REG_EXPAND_SZ",
                        "%SystemRoot%\\System32\\nfdemohvsi.dll",
                    )],
                    None,
                ),
                reg_key(
                    "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\nfdemovmms\\Parameters",
                    &[
                        ("ConfigPath", "REG_EXPAND_SZ", "%ProgramData%\\NanoforgeDemo\\Compute"),
                        ("MaxVMs", "REG_DWORD", "0x00000040"),
                    ],
                    None,
                ),
                reg_key(
                    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Nanoforge\\Demo\\Compute",
                    &[
                        ("Name", "REG_SZ", "nanoforge demo compute"),
                        ("Home", "REG_SZ", "$(runtime.programFiles)\\NanoforgeDemo"),
                        ("Path", "REG_EXPAND_SZ", "%SystemRoot%\\System32\\nfdemovmms.exe"),
                        ("Features", "REG_MULTI_SZ", "\"vm\",\"switch\",\"storage\""),
                        ("Version", "REG_DWORD", "0x0000000A"),
                        ("Capacity", "REG_QWORD", "0x0000000100000000"),
                        ("Signature", "REG_BINARY", "4E414E4F"),
                        ("Marker", "REG_NONE", ""),
                    ],
                    None,
                ),
            );
            vec![c]
        }
        SynthKind::Containers => {
            let mut c = Comp::new("Nanoforge-Demo-Containers", "neutral")
                .file(
                    "nfdemocontainer.dll",
                    "$(runtime.system32)\\",
                    demo_bytes("container support library stand-in"),
                )
                .file(
                    "README.txt",
                    "$(runtime.programData)\\NanoforgeDemo\\Containers\\",
                    demo_bytes("container image store placeholder"),
                );
            c.sddl.push(("NANOFORGE_DEMO_DIR_SDDL", SD_DIR));
            c.sddl.push(("NANOFORGE_DEMO_STORE_SDDL", SD_CONTAINER_DIR));
            c.sddl.push(("NANOFORGE_DEMO_KEY_SDDL", SD_KEY));
            c.extra = format!(
                "  <directories>\r\n    <directory destinationPath=\"$(runtime.programData)\\NanoforgeDemo\" owner=\"true\">\r\n      \
                 <securityDescriptor name=\"NANOFORGE_DEMO_DIR_SDDL\" />\r\n    </directory>\r\n    \
                 <directory destinationPath=\"$(runtime.programData)\\NanoforgeDemo\\Containers\" owner=\"true\">\r\n      \
                 <securityDescriptor name=\"NANOFORGE_DEMO_STORE_SDDL\" />\r\n    </directory>\r\n  </directories>\r\n  \
                 <registryKeys>\r\n{}  </registryKeys>\r\n",
                reg_key(
                    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Nanoforge\\Demo\\Containers",
                    &[("StoreRoot", "REG_SZ", "$(runtime.programData)\\NanoforgeDemo\\Containers")],
                    Some("NANOFORGE_DEMO_KEY_SDDL"),
                )
            );
            vec![c]
        }
        SynthKind::OemDrivers => {
            let inf = demo_inf(
                "nfdemonet",
                "Net",
                "{4D36E972-E325-11CE-BFC1-08002BE10318}",
                3,
                "NDIS",
            );
            vec![driver_comp(
                "dual_nfdemonet.inf",
                "nfdemonet",
                "6e6664656e657430",
                inf,
                &[
                    ("ErrorControl", "REG_DWORD", "0x00000001"),
                    (
                        "ImagePath",
                        "REG_EXPAND_SZ",
                        "System32\\drivers\\nfdemonet.sys",
                    ),
                    ("Start", "REG_DWORD", "0x00000003"),
                    ("Type", "REG_DWORD", "0x00000001"),
                ],
            )]
        }
    }
}

fn lang_components(kind: SynthKind, lang: &str) -> Vec<Comp> {
    let (name, dest, file) = match kind {
        SynthKind::Guest => (
            "Nanoforge-Demo-Guest-Integration.Resources",
            "$(runtime.system32)",
            "nfdemoguest.dll.mui",
        ),
        SynthKind::Compute => (
            "Nanoforge-Demo-Compute-Services.Resources",
            "$(runtime.system32)",
            "nfdemovmms.exe.mui",
        ),
        SynthKind::Containers => (
            "Nanoforge-Demo-Containers.Resources",
            "$(runtime.system32)",
            "nfdemocontainer.dll.mui",
        ),
        SynthKind::OemDrivers => (
            "Nanoforge-Demo-OemDrivers.Resources",
            "$(runtime.drivers)",
            "nfdemonet.sys.mui",
        ),
    };
    vec![Comp::new(name, lang).file(
        file,
        &format!("{dest}\\{lang}\\"),
        demo_bytes(&format!("{lang} resources for {file}")),
    )]
}

fn update_mum(kind: SynthKind, language: Option<&str>, comps: &[Comp]) -> Vec<u8> {
    let name = kind.package_name();
    let ident = |lang: &str| {
        format!(
            "<assemblyIdentity name=\"{name}\" version=\"{VERSION}\" processorArchitecture=\"amd64\" \
             language=\"{lang}\" publicKeyToken=\"{PUBLIC_KEY_TOKEN}\" />"
        )
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\r\n");
    x.push_str(
        "<assembly xmlns=\"urn:schemas-microsoft-com:asm.v3\" manifestVersion=\"1.0\" \
         copyright=\"nanoforge demo data, not a Microsoft package\">\r\n",
    );
    x.push_str(&format!("  {}\r\n", ident(language.unwrap_or("neutral"))));
    x.push_str(&format!(
        "  <package identifier=\"{}\" releaseType=\"{}\">\r\n",
        kind.short_name(),
        if language.is_some() {
            "Language Pack"
        } else {
            "Feature Pack"
        }
    ));
    if language.is_some() {
        x.push_str(&format!(
            "    <parent buildCompare=\"EQ\" integrate=\"separate\" disposition=\"detect\">\r\n      {}\r\n    </parent>\r\n",
            ident("neutral")
        ));
    }
    for c in comps {
        x.push_str(&format!(
            "    <update name=\"{}\">\r\n      <component>\r\n        {}\r\n      </component>\r\n    </update>\r\n",
            c.name.to_ascii_lowercase(),
            c.identity_xml()
        ));
    }
    x.push_str("  </package>\r\n</assembly>\r\n");
    x.into_bytes()
}

/// The members of a synthetic package cab (cab member name with `\` separators → bytes),
/// sorted by name: update.mum, update.cat (placeholder), component manifests and payload.
pub fn synthetic_package(kind: SynthKind, language: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let comps = match language {
        None => components(kind),
        Some(l) => lang_components(kind, l),
    };
    let mut out = vec![
        ("update.mum".to_string(), update_mum(kind, language, &comps)),
        (
            "update.cat".to_string(),
            b"nanoforge synthetic placeholder catalog: not signed, not a Microsoft catalog.\r\n"
                .to_vec(),
        ),
    ];
    for c in &comps {
        out.extend(c.members());
    }
    out.sort();
    out
}

/// Write a cabinet holding `members` in one MSZIP folder, in the given order, every entry
/// dated [`CAB_DATETIME`] with the archive attribute, so equal input gives equal bytes.
pub fn write_cab(path: &Path, members: &[(String, Vec<u8>)]) -> io::Result<()> {
    let date = time::Date::from_calendar_date(
        CAB_DATETIME.0,
        time::Month::try_from(CAB_DATETIME.1).map_err(io::Error::other)?,
        CAB_DATETIME.2,
    )
    .map_err(io::Error::other)?;
    let dt = time::PrimitiveDateTime::new(date, time::Time::MIDNIGHT);
    let mut b = cab::CabinetBuilder::new();
    {
        let folder = b.add_folder(cab::CompressionType::MsZip);
        for (name, _) in members {
            folder.add_file(name.as_str()).set_datetime(dt);
        }
    }
    let file = std::fs::File::create(path)?;
    let mut w = b.build(file)?;
    let mut i = 0;
    while let Some(mut fw) = w.next_file()? {
        let (_, data) = members
            .get(i)
            .ok_or_else(|| io::Error::other("cab writer asked for more files than given"))?;
        fw.write_all(data)?;
        i += 1;
    }
    w.finish()?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicing::{manifest, mum};

    #[test]
    fn packages_parse_and_hash() {
        for k in SynthKind::ALL {
            for lang in [None, Some("en-US")] {
                let m = synthetic_package(k, lang);
                let mum_bytes = &m.iter().find(|(n, _)| n == "update.mum").unwrap().1;
                let pm = mum::parse_package("update.mum", mum_bytes).unwrap();
                assert_eq!(pm.identity.name, k.package_name());
                assert_eq!(pm.parent.is_some(), lang.is_some());
                let manifests: Vec<_> =
                    m.iter().filter(|(n, _)| n.ends_with(".manifest")).collect();
                assert_eq!(manifests.len(), pm.components.len());
                for (n, b) in manifests {
                    let c = manifest::parse(n, b).unwrap();
                    assert!(c.not_applied.is_empty(), "{:?}", c.not_applied);
                    let kf = keyform::keyform(&c.identity).unwrap();
                    assert_eq!(n, &format!("{kf}.manifest"));
                    for f in &c.files {
                        let payload = &m
                            .iter()
                            .find(|(p, _)| *p == format!("{kf}\\{}", f.name))
                            .unwrap()
                            .1;
                        assert!(f.hash.as_ref().unwrap().matches(payload));
                        assert!(
                            String::from_utf8_lossy(payload).contains("demo"),
                            "{}",
                            f.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn base64_known_vectors() {
        // RFC 4648 §10 test vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
