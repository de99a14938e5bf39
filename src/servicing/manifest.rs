//! Component manifests (`*.manifest`, assembly XML in `urn:schemas-microsoft-com:asm.v3`):
//! identity, files, directories, registry keys and values, named security descriptors and
//! services, turned into a plain description that `project` applies.
//!
//! Sources: domain.md §6; facts-cbs.md §6.1 (`$(runtime.*)` variables), §6.2 (named
//! descriptors are defined in the manifest's own `trustInfo`), §7 (`serviceData` and its
//! registry mapping); real manifests (the MessagingService and stornvme manifests named in
//! facts-cbs.md §7.3) for the value encodings:
//! - REG_SZ / REG_EXPAND_SZ: the text as written; `%SystemRoot%` stays unexpanded.
//! - REG_MULTI_SZ: `"a","b"` (each string in double quotes, comma separated) [C stornvme].
//! - REG_DWORD: `0x0000000A` [C]; decimal accepted too [I]. REG_QWORD the same, 64-bit [I].
//! - REG_BINARY: hex digits without separators (`01FF0000`) [C stornvme]; REG_NONE: `""`
//!   or hex [C]; REG_RESOURCE_LIST and the other resource types: hex like REG_BINARY [I].
//! - `$(runtime.*)` inside a value: expanded to `%SystemRoot%`-style text in REG_EXPAND_SZ
//!   and to `C:\…` paths otherwise [I: manifests rarely do this; the boot drive is C:].
//!
//! Everything the manifest asks for that is not applied offline is collected in
//! [`Component::not_applied`] as "not applied: <element> in <component>", never dropped.

use super::keyform::AssemblyIdentity;
use super::mum;
use crate::formats::regf::{value_type::*, Value};
use std::collections::BTreeMap;

/// Largest manifest accepted: real component manifests stay below a few hundred KiB
/// (the 120 KiB sdbus manifest is among the largest), so 16 MiB leaves ample room.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// Largest registry value data taken from a manifest: manifest values are short strings and
/// small blobs, and the limit bounds what a hostile manifest can make us allocate.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Errors reading a component manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Text(#[from] mum::Error),
    #[error(
        "{file}: {size} bytes, above the {MAX_MANIFEST_BYTES}-byte limit for a component manifest"
    )]
    TooLarge { file: String, size: usize },
    #[error("{file}: XML error: {msg}")]
    Xml { file: String, msg: String },
    #[error("{file}: no <assemblyIdentity> under <assembly>; not a component manifest")]
    NoIdentity { file: String },
    #[error("{file} (component {component}): {msg}")]
    Invalid {
        file: String,
        component: String,
        msg: String,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Digest algorithm of a `<hash>` (xmldsig DigestMethod).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DigestAlgorithm {
    Sha256,
    Sha1,
}

/// A file's expected digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub algorithm: DigestAlgorithm,
    pub value: Vec<u8>,
}

impl Digest {
    /// Whether `data` has this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        use sha2::Digest as _;
        match self.algorithm {
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).as_slice() == self.value,
            DigestAlgorithm::Sha1 => sha1::Sha1::digest(data).as_slice() == self.value,
        }
    }
}

/// A `<file>` element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileEntry {
    /// Name at the destination.
    pub name: String,
    /// Destination folder relative to the volume root (`Windows\System32`), resolved from
    /// `destinationPath` (empty for the root); `None` when the manifest gives none: the file
    /// then lives in the component store only, as side-by-side assembly files do.
    pub destination: Option<String>,
    /// `sourceName` (defaults to `name`).
    pub source_name: String,
    /// `sourcePath` as written (`.\` or empty usually).
    pub source_path: String,
    /// `importPath` as written (build-time only, kept for the report).
    pub import_path: String,
    pub hash: Option<Digest>,
    /// Name of the security descriptor (`<securityDescriptor name>`).
    pub security: Option<String>,
    /// Carries `<infFile/>`: the component is a driver package.
    pub inf: bool,
}

/// A `<directories><directory>` element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryEntry {
    /// Relative to the volume root.
    pub destination: String,
    pub owner: bool,
    pub security: Option<String>,
}

/// Which offline hive a key lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum HiveName {
    System,
    Software,
}

/// One `<registryValue>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegValue {
    pub value: Value,
    /// `operationHint="append"` on a REG_MULTI_SZ: add missing strings to the existing list.
    pub append: bool,
}

/// A `<registryKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryKeyEntry {
    pub hive: HiveName,
    /// Path inside the hive, as written (`CurrentControlSet\…` not yet mapped).
    pub path: String,
    pub values: Vec<RegValue>,
    pub security: Option<String>,
}

/// A `<serviceData>`, as the registry values of `Services\<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub values: Vec<Value>,
}

/// A parsed component manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The manifest's file name in the cab.
    pub file: String,
    pub identity: AssemblyIdentity,
    pub files: Vec<FileEntry>,
    pub directories: Vec<DirectoryEntry>,
    pub registry: Vec<RegistryKeyEntry>,
    pub services: Vec<Service>,
    /// `securityDescriptorDefinition` name → SDDL.
    pub sddl: BTreeMap<String, String>,
    /// "not applied: <element> in <component>" lines.
    pub not_applied: Vec<String>,
}

impl Component {
    /// Display name: `name` (version, arch, language).
    pub fn display(&self) -> String {
        format!(
            "{} {} {} {}",
            self.identity.name,
            self.identity.version,
            self.identity.processor_architecture,
            if self.identity.language.is_empty() {
                "neutral"
            } else {
                &self.identity.language
            }
        )
    }

    /// A driver package: a `<file>` carries `<infFile/>`, or the identity type is
    /// `dualModeDriver` or `driverUpdate` (facts-cbs.md §4.4 #9, facts-drivers.md §2.3).
    pub fn is_driver(&self) -> bool {
        self.files.iter().any(|f| f.inf)
            || self.identity.type_.eq_ignore_ascii_case("dualModeDriver")
            || self.identity.type_.eq_ignore_ascii_case("driverUpdate")
    }
}

/// `$(runtime.*)` variables (facts-cbs.md §6.1): variable (lower case) → (volume-relative
/// path, `%…%` form for REG_EXPAND_SZ values). `system32` maps to SysWOW64 for `wow64`
/// and `x86`-on-amd64 components (handled in [`runtime_path`]).
const RUNTIME: &[(&str, &str, &str)] = &[
    ("windows", "Windows", "%SystemRoot%"),
    ("systemroot", "Windows", "%SystemRoot%"),
    ("windir", "Windows", "%SystemRoot%"),
    ("system32", "Windows\\System32", "%SystemRoot%\\System32"),
    ("system", "Windows\\System", "%SystemRoot%\\System"),
    (
        "drivers",
        "Windows\\System32\\Drivers",
        "%SystemRoot%\\System32\\Drivers",
    ),
    ("inf", "Windows\\INF", "%SystemRoot%\\INF"),
    ("fonts", "Windows\\Fonts", "%SystemRoot%\\Fonts"),
    ("help", "Windows\\Help", "%SystemRoot%\\Help"),
    (
        "wbem",
        "Windows\\System32\\wbem",
        "%SystemRoot%\\System32\\wbem",
    ),
    ("bootdrive", "", "%SystemDrive%"),
    ("systemdrive", "", "%SystemDrive%"),
    ("programfiles", "Program Files", "%ProgramFiles%"),
    (
        "programfilesx86",
        "Program Files (x86)",
        "%ProgramFiles(x86)%",
    ),
    (
        "commonfiles",
        "Program Files\\Common Files",
        "%CommonProgramFiles%",
    ),
    (
        "commonfilesx86",
        "Program Files (x86)\\Common Files",
        "%CommonProgramFiles(x86)%",
    ),
    ("programdata", "ProgramData", "%ProgramData%"),
    ("public", "Users\\Public", "%Public%"),
    (
        "startmenu",
        "ProgramData\\Microsoft\\Windows\\Start Menu",
        "%ProgramData%\\Microsoft\\Windows\\Start Menu",
    ),
    ("apppatch", "Windows\\AppPatch", "%SystemRoot%\\AppPatch"),
    ("syswow64", "Windows\\SysWOW64", "%SystemRoot%\\SysWOW64"),
];

/// Expand `$(runtime.x)` variables in `text`. `env_form` selects the `%…%` form (for
/// REG_EXPAND_SZ), otherwise volume paths (`C:\…` when `drive` is set, else relative).
pub fn runtime_path(text: &str, arch: &str, env_form: bool, drive: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find(')')
            .ok_or_else(|| format!("unterminated variable in {text:?}"))?;
        let var = &after[..end];
        let lower = var.to_ascii_lowercase();
        let name = lower
            .strip_prefix("runtime.")
            .ok_or_else(|| format!("variable $({var}) is not a $(runtime.*) variable"))?;
        let wow = arch.eq_ignore_ascii_case("wow64") || arch.eq_ignore_ascii_case("x86");
        let name = if name == "system32" && wow {
            "syswow64"
        } else {
            name
        };
        let (_, path, env) = RUNTIME
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| format!("unknown variable $({var}); known: $(runtime.system32), $(runtime.windows), $(runtime.drivers), $(runtime.programFiles), $(runtime.programData), …"))?;
        if env_form {
            out.push_str(env);
        } else if drive {
            out.push_str("C:");
            if !path.is_empty() {
                out.push('\\');
                out.push_str(path);
            }
        } else {
            out.push_str(path);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A destination folder, made relative to the volume root and checked: no `..`, no drive,
/// no stream names.
fn destination(text: &str, arch: &str) -> Result<String, String> {
    let p = runtime_path(text, arch, false, false)?;
    let mut parts = Vec::new();
    for part in p.split(['\\', '/']).filter(|s| !s.is_empty()) {
        if part == "." || part == ".." || part.contains(':') {
            return Err(format!(
                "destination {text:?} has an unsafe component {part:?}"
            ));
        }
        parts.push(part);
    }
    Ok(parts.join("\\"))
}

fn parse_number(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let t: String = text.chars().filter(|c| !matches!(c, ' ' | ',')).collect();
    if !t.len().is_multiple_of(2) || t.len() / 2 > MAX_VALUE_BYTES {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `"a","b"` → [a, b]; empty text → [].
fn parse_multi(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let r = rest.strip_prefix('"')?;
        let end = r.find('"')?;
        out.push(r[..end].to_string());
        rest = r[end + 1..].trim_start();
        if let Some(r2) = rest.strip_prefix(',') {
            rest = r2.trim_start();
            if rest.is_empty() {
                return None;
            }
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// A `<registryValue>` to a registry value.
pub fn registry_value(name: &str, vtype: &str, text: &str, arch: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("value {name:?} ({vtype}): {text:?} is not {what}");
    let expand = |env| runtime_path(text, arch, env, true);
    let v = match vtype {
        "REG_SZ" => Value::sz(name, &expand(false)?),
        "REG_EXPAND_SZ" => Value::expand_sz(name, &expand(true)?),
        "REG_MULTI_SZ" => {
            let items = parse_multi(text).ok_or_else(|| bad("a list of \"quoted\",\"strings\""))?;
            let items: Vec<String> = items
                .iter()
                .map(|s| runtime_path(s, arch, false, true))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&str> = items.iter().map(String::as_str).collect();
            Value::multi_sz(name, &refs)
        }
        "REG_DWORD" => {
            let n = parse_number(text)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit number"))?;
            Value::dword(name, n)
        }
        "REG_DWORD_BIG_ENDIAN" => {
            let n = parse_number(text)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit number"))?;
            Value::new(name, REG_DWORD_BIG_ENDIAN, n.to_be_bytes().to_vec())
        }
        "REG_QWORD" => Value::qword(
            name,
            parse_number(text).ok_or_else(|| bad("a 64-bit number"))?,
        ),
        "REG_LINK" => {
            let s = expand(false)?;
            Value::new(
                name,
                REG_LINK,
                s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            )
        }
        _ => {
            let t = match vtype {
                "REG_BINARY" => REG_BINARY,
                "REG_NONE" => REG_NONE,
                "REG_RESOURCE_LIST" => REG_RESOURCE_LIST,
                "REG_FULL_RESOURCE_DESCRIPTOR" => REG_FULL_RESOURCE_DESCRIPTOR,
                "REG_RESOURCE_REQUIREMENTS_LIST" => REG_RESOURCE_REQUIREMENTS_LIST,
                _ => return Err(format!("value {name:?}: unknown valueType {vtype:?}")),
            };
            Value::new(
                name,
                t,
                parse_hex(text).ok_or_else(|| bad("hex digits (at most 1 MiB)"))?,
            )
        }
    };
    if v.data.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value {name:?}: {} bytes, above {MAX_VALUE_BYTES}",
            v.data.len()
        ));
    }
    Ok(v)
}

/// Standard base64 (RFC 4648 §4), as xmldsig DigestValue uses; whitespace ignored.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    let mut pad = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            _ => return None,
        };
        if pad > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (pad <= 2).then_some(out)
}

/// Services category (facts-cbs.md §7.1).
const SERVICES_CATEGORY: &str = "Microsoft.Windows.Categories.Services";
/// The category whose `SvcHost` type registers a service in a svchost group (§7.1).
const SVCHOST_CATEGORY: &str = "Microsoft.Windows.Categories";
/// Where svchost groups are listed: one REG_MULTI_SZ per group naming its services
/// (Microsoft's svchost documentation; the shape every Windows SOFTWARE hive has).
pub const SVCHOST_KEY: &str = "Microsoft\\Windows NT\\CurrentVersion\\Svchost";

/// `<categoryInstance subcategory="group"><serviceGroup serviceName="svc"/>` → append the
/// service to the group's list; the list order does not matter to svchost, so `position`
/// is not kept.
fn svchost_groups(m: roxmltree::Node, c: &mut Component, comp: &str) {
    for inst in m.children().filter(|x| x.is_element()) {
        match inst.tag_name().name() {
            "id" => {}
            "categoryInstance" => {
                let group = inst.attribute("subcategory").unwrap_or("");
                for g in inst.children().filter(|x| x.is_element()) {
                    let svc = g.attribute("serviceName").unwrap_or("");
                    if g.tag_name().name() != "serviceGroup" || group.is_empty() || svc.is_empty() {
                        c.not_applied.push(format!(
                            "not applied: <{}> in svchost group {group:?} in {comp}",
                            g.tag_name().name()
                        ));
                        continue;
                    }
                    c.registry.push(RegistryKeyEntry {
                        hive: HiveName::Software,
                        path: SVCHOST_KEY.to_string(),
                        values: vec![RegValue {
                            value: Value::multi_sz(group, &[svc]),
                            append: true,
                        }],
                        security: None,
                    });
                }
            }
            other => c.not_applied.push(format!(
                "not applied: <{other}> in svchost membership in {comp}"
            )),
        }
    }
}

/// `serviceData` attributes → `Services\<name>` values (facts-cbs.md §7.2).
fn service(
    n: roxmltree::Node,
    comp: &str,
    not_applied: &mut Vec<String>,
) -> Result<Service, String> {
    let name = n
        .attribute("name")
        .filter(|s| !s.is_empty() && !s.contains('\\'))
        .ok_or("serviceData without a valid name")?
        .to_string();
    let mut values = Vec::new();
    let enum_value = |attr: &str, v: &str, table: &[(&str, u32)]| -> Result<u32, String> {
        table
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(v))
            .map(|(_, x)| *x)
            .ok_or_else(|| {
                format!(
                    "service {name}: {attr}={v:?} is not one of {}",
                    table.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )
            })
    };
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let multi = |vname: &str, v: &str| {
        let items = list(v);
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        Value::multi_sz(vname, &refs)
    };
    let mut attrs: Vec<_> = n.attributes().collect();
    attrs.sort_by_key(|a| a.name());
    for a in attrs {
        let v = a.value();
        match a.name() {
            "name" => {}
            "displayName" => values.push(Value::sz("DisplayName", v)),
            "description" => values.push(Value::sz("Description", v)),
            "imagePath" => values.push(Value::expand_sz("ImagePath", v)),
            "objectName" => values.push(Value::sz("ObjectName", v)),
            "group" => values.push(Value::sz("Group", v)),
            "tag" => values.push(Value::dword(
                "Tag",
                parse_number(v)
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| format!("service {name}: tag {v:?} is not a number"))?,
            )),
            "type" => values.push(Value::dword(
                "Type",
                enum_value(
                    "type",
                    v,
                    &[
                        ("kernelDriver", 1),
                        ("fileSystemDriver", 2),
                        ("win32OwnProcess", 0x10),
                        ("win32ShareProcess", 0x20),
                        ("win32UserOwnProcess", 0x50),
                        ("win32UserShareProcess", 0x60),
                    ],
                )?,
            )),
            "start" => {
                let s = enum_value(
                    "start",
                    v,
                    &[
                        ("boot", 0),
                        ("system", 1),
                        ("auto", 2),
                        ("demand", 3),
                        ("disabled", 4),
                        ("delayedAuto", 2),
                    ],
                )?;
                values.push(Value::dword("Start", s));
                if v.eq_ignore_ascii_case("delayedAuto") {
                    values.push(Value::dword("DelayedAutoStart", 1));
                }
            }
            "errorControl" => values.push(Value::dword(
                "ErrorControl",
                enum_value(
                    "errorControl",
                    v,
                    &[("ignore", 0), ("normal", 1), ("severe", 2), ("critical", 3)],
                )?,
            )),
            "dependOnService" => values.push(multi("DependOnService", v)),
            "dependOnGroup" => values.push(multi("DependOnGroup", v)),
            "requiredPrivileges" => values.push(multi("RequiredPrivileges", v)),
            "sidType" => values.push(Value::dword(
                "ServiceSidType",
                enum_value(
                    "sidType",
                    v,
                    &[("none", 0), ("unrestricted", 1), ("restricted", 3)],
                )?,
            )),
            // Install-time start request: nothing to do offline (facts-cbs.md §7.2).
            "startAfterInstall" => {}
            other => not_applied.push(format!(
                "not applied: serviceData {name} attribute {other} in {comp}"
            )),
        }
    }
    for c in n.children().filter(|c| c.is_element()) {
        not_applied.push(format!(
            "not applied: serviceData {name} <{}> in {comp}",
            c.tag_name().name()
        ));
    }
    Ok(Service { name, values })
}

fn security_name(n: roxmltree::Node) -> Option<String> {
    n.children()
        .find(|c| c.tag_name().name() == "securityDescriptor")
        .and_then(|c| c.attribute("name"))
        .map(String::from)
}

/// Parse a component manifest; `file` names it in errors and the report.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Component, Error> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge {
            file: file.to_string(),
            size: bytes.len(),
        });
    }
    let text = mum::decode(file, bytes)?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| Error::Xml {
        file: file.to_string(),
        msg: e.to_string(),
    })?;
    let root = doc.root_element();
    let idn = root
        .children()
        .find(|n| n.tag_name().name() == "assemblyIdentity")
        .ok_or_else(|| Error::NoIdentity {
            file: file.to_string(),
        })?;
    let a = |k: &str| idn.attribute(k).unwrap_or("").to_string();
    let identity = AssemblyIdentity {
        name: a("name"),
        version: a("version"),
        processor_architecture: a("processorArchitecture"),
        language: a("language"),
        public_key_token: a("publicKeyToken"),
        type_: a("type"),
        version_scope: a("versionScope"),
    };
    let mut c = Component {
        file: file.to_string(),
        identity,
        files: Vec::new(),
        directories: Vec::new(),
        registry: Vec::new(),
        services: Vec::new(),
        sddl: BTreeMap::new(),
        not_applied: Vec::new(),
    };
    let comp = c.display();
    let arch = c.identity.processor_architecture.clone();
    let invalid = |msg: String| Error::Invalid {
        file: file.to_string(),
        component: comp.clone(),
        msg,
    };
    let na = |what: String| format!("not applied: {what} in {comp}");
    for n in root.children().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "assemblyIdentity" => {}
            "file" => {
                let name = n
                    .attribute("name")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid("<file> without a name".into()))?;
                if name.contains(['\\', '/', ':']) || name == "." || name == ".." {
                    return Err(invalid(format!("file name {name:?} is not a plain name")));
                }
                let dest = n
                    .attribute("destinationPath")
                    .map(|d| destination(d, &arch))
                    .transpose()
                    .map_err(|m| invalid(format!("file {name}: {m}")))?;
                let mut f = FileEntry {
                    name: name.to_string(),
                    destination: dest,
                    source_name: n.attribute("sourceName").unwrap_or(name).to_string(),
                    source_path: n.attribute("sourcePath").unwrap_or("").to_string(),
                    import_path: n.attribute("importPath").unwrap_or("").to_string(),
                    hash: None,
                    security: security_name(n),
                    inf: false,
                };
                for ch in n.children().filter(|x| x.is_element()) {
                    match ch.tag_name().name() {
                        "securityDescriptor" => {}
                        "infFile" => f.inf = true,
                        "driverUpdate" | "driver"
                            if name.to_ascii_lowercase().ends_with(".inf") =>
                        {
                            f.inf = true
                        }
                        "hash" => {
                            let method = ch
                                .descendants()
                                .find(|d| d.tag_name().name() == "DigestMethod")
                                .and_then(|d| d.attribute("Algorithm"))
                                .unwrap_or("");
                            let value = ch
                                .descendants()
                                .find(|d| d.tag_name().name() == "DigestValue")
                                .and_then(|d| d.text())
                                .unwrap_or("");
                            let algorithm = if method.ends_with("#sha256") {
                                DigestAlgorithm::Sha256
                            } else if method.ends_with("#sha1") {
                                DigestAlgorithm::Sha1
                            } else {
                                c.not_applied.push(na(format!(
                                    "hash check of {name} (DigestMethod {method:?} unknown)"
                                )));
                                continue;
                            };
                            let value = base64_decode(value)
                                .filter(|v| {
                                    v.len()
                                        == match algorithm {
                                            DigestAlgorithm::Sha256 => 32,
                                            DigestAlgorithm::Sha1 => 20,
                                        }
                                })
                                .ok_or_else(|| {
                                    invalid(format!(
                                        "file {name}: DigestValue {value:?} is not a base64 {algorithm:?} digest"
                                    ))
                                })?;
                            f.hash = Some(Digest { algorithm, value });
                        }
                        other => c.not_applied.push(na(format!("<{other}> of file {name}"))),
                    }
                }
                c.files.push(f);
            }
            "directories" => {
                for d in n.children().filter(|x| x.is_element()) {
                    if d.tag_name().name() != "directory" {
                        c.not_applied
                            .push(na(format!("<{}> in <directories>", d.tag_name().name())));
                        continue;
                    }
                    let raw = d.attribute("destinationPath").unwrap_or("");
                    let dest =
                        destination(raw, &arch).map_err(|m| invalid(format!("directory: {m}")))?;
                    if dest.is_empty() {
                        return Err(invalid(format!("directory {raw:?} is the volume root")));
                    }
                    c.directories.push(DirectoryEntry {
                        destination: dest,
                        owner: d
                            .attribute("owner")
                            .is_some_and(|o| o.eq_ignore_ascii_case("true")),
                        security: d
                            .attribute("securityDescriptor")
                            .map(String::from)
                            .or_else(|| security_name(d)),
                    });
                }
            }
            "registryKeys" => {
                for k in n.children().filter(|x| x.is_element()) {
                    if k.tag_name().name() != "registryKey" {
                        c.not_applied
                            .push(na(format!("<{}> in <registryKeys>", k.tag_name().name())));
                        continue;
                    }
                    let key = k.attribute("keyName").unwrap_or("");
                    let upper = key.to_ascii_uppercase();
                    let (hive, path) = if let Some(p) = upper
                        .strip_prefix("HKEY_LOCAL_MACHINE\\SYSTEM")
                        .filter(|p| p.is_empty() || p.starts_with('\\'))
                    {
                        (HiveName::System, key[key.len() - p.len()..].to_string())
                    } else if let Some(p) = upper
                        .strip_prefix("HKEY_LOCAL_MACHINE\\SOFTWARE")
                        .filter(|p| p.is_empty() || p.starts_with('\\'))
                    {
                        (HiveName::Software, key[key.len() - p.len()..].to_string())
                    } else if let Some(p) = upper
                        .strip_prefix("HKEY_CLASSES_ROOT")
                        .filter(|p| p.is_empty() || p.starts_with('\\'))
                    {
                        // HKCR is a view of HKLM\SOFTWARE\Classes for machine-wide data.
                        (
                            HiveName::Software,
                            format!("Classes{}", &key[key.len() - p.len()..]),
                        )
                    } else {
                        c.not_applied
                            .push(na(format!("registryKey {key} (not in SYSTEM or SOFTWARE)")));
                        continue;
                    };
                    let path = path.trim_matches('\\').to_string();
                    if path.split('\\').any(|p| p.is_empty() && !path.is_empty()) {
                        return Err(invalid(format!(
                            "registry key {key:?} has an empty component"
                        )));
                    }
                    let mut e = RegistryKeyEntry {
                        hive,
                        path,
                        values: Vec::new(),
                        security: security_name(k),
                    };
                    for v in k.children().filter(|x| x.is_element()) {
                        match v.tag_name().name() {
                            "registryValue" => {
                                let vname = v.attribute("name").unwrap_or("");
                                let vtype = v.attribute("valueType").ok_or_else(|| {
                                    invalid(format!("{key}: value {vname:?} has no valueType"))
                                })?;
                                let val = registry_value(
                                    vname,
                                    vtype,
                                    v.attribute("value").unwrap_or(""),
                                    &arch,
                                )
                                .map_err(|m| invalid(format!("{key}: {m}")))?;
                                let hint = v.attribute("operationHint").unwrap_or("replace");
                                let append = match hint {
                                    "replace" => false,
                                    "append" if val.data_type == REG_MULTI_SZ => true,
                                    other => {
                                        c.not_applied.push(na(format!(
                                            "{key}!{vname} operationHint {other:?}"
                                        )));
                                        continue;
                                    }
                                };
                                e.values.push(RegValue { value: val, append });
                            }
                            "securityDescriptor" => {}
                            other => c.not_applied.push(na(format!("<{other}> in {key}"))),
                        }
                    }
                    c.registry.push(e);
                }
            }
            "trustInfo" => {
                for d in n.descendants().filter(|x| x.is_element()) {
                    match d.tag_name().name() {
                        "securityDescriptorDefinition" => {
                            let (Some(name), Some(s)) = (d.attribute("name"), d.attribute("sddl"))
                            else {
                                return Err(invalid(
                                    "securityDescriptorDefinition without name or sddl".into(),
                                ));
                            };
                            c.sddl.insert(name.to_string(), s.to_string());
                        }
                        "trustInfo"
                        | "security"
                        | "accessControl"
                        | "securityDescriptorDefinitions" => {}
                        other => c.not_applied.push(na(format!("<{other}> in <trustInfo>"))),
                    }
                }
            }
            "memberships" => {
                for m in n.children().filter(|x| x.is_element()) {
                    let id = m
                        .children()
                        .find(|x| x.tag_name().name() == "id")
                        .and_then(|x| x.attribute("name"))
                        .unwrap_or("")
                        .to_string();
                    let ty = m
                        .children()
                        .find(|x| x.tag_name().name() == "id")
                        .and_then(|x| x.attribute("typeName"))
                        .unwrap_or("");
                    if m.tag_name().name() == "categoryMembership"
                        && id == SVCHOST_CATEGORY
                        && ty == "SvcHost"
                    {
                        svchost_groups(m, &mut c, &comp);
                        continue;
                    }
                    if m.tag_name().name() != "categoryMembership" || id != SERVICES_CATEGORY {
                        c.not_applied
                            .push(na(format!("<{}> {id} {ty}", m.tag_name().name())));
                        continue;
                    }
                    for inst in m.children().filter(|x| x.is_element()) {
                        match inst.tag_name().name() {
                            "id" => {}
                            "categoryInstance" => {
                                for s in inst.children().filter(|x| x.is_element()) {
                                    if s.tag_name().name() == "serviceData" {
                                        let svc = service(s, &comp, &mut c.not_applied)
                                            .map_err(invalid)?;
                                        c.services.push(svc);
                                    } else {
                                        c.not_applied.push(na(format!(
                                            "<{}> in {SERVICES_CATEGORY}",
                                            s.tag_name().name()
                                        )));
                                    }
                                }
                            }
                            other => c
                                .not_applied
                                .push(na(format!("<{other}> in {SERVICES_CATEGORY}"))),
                        }
                    }
                }
            }
            "dependency" => c.not_applied.push(na(
                "<dependency> (dependencies between components are not checked offline)".into(),
            )),
            other => c.not_applied.push(na(format!("<{other}>"))),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::regf::ValueData;

    const MSG: &str = r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">
  <assemblyIdentity name="Demo-Service" version="10.0.14393.0" processorArchitecture="amd64" language="neutral" buildType="release" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS" />
  <memberships>
    <categoryMembership>
      <id name="Microsoft.Windows.Categories.Services" version="10.0.14393.0" publicKeyToken="31bf3856ad364e35" typeName="Service" />
      <categoryInstance>
        <serviceData name="DemoSvc" displayName="@%SystemRoot%\system32\demo.dll,-100" errorControl="ignore" start="delayedAuto" type="win32ShareProcess" imagePath="%SystemRoot%\system32\svchost.exe -k netsvcs" objectName="LocalSystem" dependOnService="rpcss,http" startAfterInstall="none">
          <failureActions resetPeriod="86400"><actions><action delay="10000" type="restartService" /></actions></failureActions>
        </serviceData>
      </categoryInstance>
    </categoryMembership>
    <categoryMembership>
      <id name="Microsoft.Windows.Categories" version="1.0.0.0" publicKeyToken="365143bb27e7ac8b" typeName="SvcHost" />
      <categoryInstance subcategory="netsvcs"><serviceGroup position="last" serviceName="DemoSvc" /></categoryInstance>
    </categoryMembership>
  </memberships>
  <file name="demo.dll" destinationPath="$(runtime.system32)\" sourceName="demo.dll" importPath="$(build.nttree)\" sourcePath=".\">
    <securityDescriptor name="WRP_FILE_DEFAULT_SDDL" />
    <asmv2:hash xmlns:asmv2="urn:schemas-microsoft-com:asm.v2" xmlns:dsig="http://www.w3.org/2000/09/xmldsig#">
      <dsig:Transforms><dsig:Transform Algorithm="urn:schemas-microsoft-com:HashTransforms.Identity" /></dsig:Transforms>
      <dsig:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha256" />
      <dsig:DigestValue>KpdRbDVLaISM29j1SiJqClWyHtE44getbFy7nACqWuo=</dsig:DigestValue>
    </asmv2:hash>
  </file>
  <directories>
    <directory destinationPath="$(runtime.programData)\Demo" owner="true"><securityDescriptor name="DIR_SDDL" /></directory>
  </directories>
  <trustInfo><security><accessControl><securityDescriptorDefinitions>
    <securityDescriptorDefinition name="WRP_FILE_DEFAULT_SDDL" sddl="O:BAG:BAD:(A;;FA;;;BU)" operationHint="replace" />
  </securityDescriptorDefinitions></accessControl></security></trustInfo>
  <registryKeys>
    <registryKey keyName="HKEY_LOCAL_MACHINE\System\CurrentControlSet\Services\DemoSvc\Parameters">
      <registryValue name="ServiceDll" valueType="REG_EXPAND_SZ" value="$(runtime.system32)\demo.dll" />
      <registryValue name="Count" valueType="REG_DWORD" value="0x0000000A" />
      <registryValue name="Big" valueType="REG_QWORD" value="0x100000000" />
      <registryValue name="Ids" valueType="REG_MULTI_SZ" value="&quot;a&amp;b&quot;,&quot;c&quot;" />
      <registryValue name="Blob" valueType="REG_BINARY" value="01FF0000" />
      <registryValue name="Marker" valueType="REG_NONE" value="" />
      <registryValue name="Res" valueType="REG_RESOURCE_LIST" value="0100" />
      <registryValue name="Where" valueType="REG_SZ" value="$(runtime.programFiles)\Demo" />
      <securityDescriptor name="WRP_FILE_DEFAULT_SDDL" />
    </registryKey>
    <registryKey keyName="HKEY_CURRENT_USER\Software\Demo"><registryValue name="x" valueType="REG_DWORD" value="1" /></registryKey>
  </registryKeys>
  <instrumentation><events/></instrumentation>
  <localization><resources/></localization>
</assembly>"#;

    #[test]
    fn service_component() {
        let c = parse("demo.manifest", MSG.as_bytes()).unwrap();
        assert_eq!(c.identity.version_scope, "nonSxS");
        let f = &c.files[0];
        assert_eq!(f.destination.as_deref(), Some("Windows\\System32"));
        assert_eq!(f.security.as_deref(), Some("WRP_FILE_DEFAULT_SDDL"));
        // The DigestValue is base64 of SHA-256("demo") (Python hashlib + base64).
        assert!(f.hash.as_ref().unwrap().matches(b"demo"));
        assert!(!f.hash.as_ref().unwrap().matches(b"demo\n"));
        assert_eq!(c.directories[0].destination, "ProgramData\\Demo");
        assert_eq!(c.directories[0].security.as_deref(), Some("DIR_SDDL"));
        assert!(c.sddl.contains_key("WRP_FILE_DEFAULT_SDDL"));
        let s = &c.services[0];
        let get = |n: &str| s.values.iter().find(|v| v.name == n).unwrap().decode();
        assert_eq!(get("Start"), ValueData::Dword(2));
        assert_eq!(get("DelayedAutoStart"), ValueData::Dword(1));
        assert_eq!(get("Type"), ValueData::Dword(0x20));
        assert_eq!(get("ErrorControl"), ValueData::Dword(0));
        assert_eq!(
            get("ImagePath"),
            ValueData::ExpandSz("%SystemRoot%\\system32\\svchost.exe -k netsvcs".into())
        );
        assert_eq!(
            get("DependOnService"),
            ValueData::MultiSz(vec!["rpcss".into(), "http".into()])
        );
        let k = c
            .registry
            .iter()
            .find(|k| k.hive == HiveName::System)
            .unwrap();
        assert_eq!(k.path, "CurrentControlSet\\Services\\DemoSvc\\Parameters");
        let v = |n: &str| {
            k.values
                .iter()
                .find(|v| v.value.name == n)
                .unwrap()
                .value
                .decode()
        };
        assert_eq!(
            v("ServiceDll"),
            ValueData::ExpandSz("%SystemRoot%\\System32\\demo.dll".into())
        );
        assert_eq!(v("Count"), ValueData::Dword(10));
        assert_eq!(v("Big"), ValueData::Qword(1 << 32));
        assert_eq!(v("Ids"), ValueData::MultiSz(vec!["a&b".into(), "c".into()]));
        assert_eq!(v("Blob"), ValueData::Binary(vec![1, 0xFF, 0, 0]));
        assert_eq!(v("Marker"), ValueData::None(vec![]));
        assert_eq!(
            v("Res"),
            ValueData::Raw {
                data_type: REG_RESOURCE_LIST,
                data: vec![1, 0]
            }
        );
        assert_eq!(v("Where"), ValueData::Sz("C:\\Program Files\\Demo".into()));
        let na = c.not_applied.join("\n");
        for want in [
            "serviceData DemoSvc <failureActions>",
            "registryKey HKEY_CURRENT_USER\\Software\\Demo",
            "<instrumentation>",
            "<localization>",
        ] {
            assert!(na.contains(want), "{want} missing from:\n{na}");
        }
        assert!(c.not_applied.iter().all(|l| l.starts_with("not applied: ")
            && l.ends_with("in Demo-Service 10.0.14393.0 amd64 neutral")));
        assert!(!c.is_driver());
        let sv = c
            .registry
            .iter()
            .find(|k| k.path == SVCHOST_KEY)
            .expect("svchost group registration");
        assert_eq!(sv.hive, HiveName::Software);
        assert!(sv.values[0].append);
        assert_eq!(
            sv.values[0].value.decode(),
            ValueData::MultiSz(vec!["DemoSvc".into()])
        );
    }

    #[test]
    fn digest_base64_and_check() {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(b"payload");
        let b64 = {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for ch in d.chunks(3) {
                let n =
                    ch.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - ch.len()));
                for i in 0..=ch.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
                for _ in ch.len()..3 {
                    s.push('=');
                }
            }
            s
        };
        assert_eq!(base64_decode(&b64).unwrap(), d.as_slice());
        let dig = Digest {
            algorithm: DigestAlgorithm::Sha256,
            value: d.to_vec(),
        };
        assert!(dig.matches(b"payload"));
        assert!(!dig.matches(b"payloaD"));
        assert!(base64_decode("ab$c").is_none());
    }

    #[test]
    fn errors_name_file_and_component() {
        let e = parse("x.manifest", b"DCM\x01PA30").unwrap_err().to_string();
        assert!(e.contains("x.manifest") && e.contains("DCM"), "{e}");
        let bad = MSG.replace("value=\"0x0000000A\"", "value=\"ten\"");
        let e = parse("d.manifest", bad.as_bytes()).unwrap_err().to_string();
        assert!(
            e.contains("d.manifest") && e.contains("Demo-Service") && e.contains("Count"),
            "{e}"
        );
        let bad = MSG.replace(
            "$(runtime.system32)\\\" sourceName",
            "$(runtime.nowhere)\\\" sourceName",
        );
        let e = parse("d.manifest", bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("runtime.nowhere"), "{e}");
        let bad = MSG.replace("$(runtime.programData)\\Demo", "..\\..\\etc");
        assert!(parse("d.manifest", bad.as_bytes()).is_err());
        let bad = MSG.replace("start=\"delayedAuto\"", "start=\"sometimes\"");
        let e = parse("d.manifest", bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("sometimes") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn runtime_table_and_wow64() {
        assert_eq!(
            runtime_path("$(runtime.system32)\\x", "wow64", false, false).unwrap(),
            "Windows\\SysWOW64\\x"
        );
        assert_eq!(
            runtime_path("$(RunTime.Drivers)", "amd64", false, true).unwrap(),
            "C:\\Windows\\System32\\Drivers"
        );
        assert_eq!(
            runtime_path("$(runtime.bootDrive)\\", "amd64", false, false).unwrap(),
            "\\"
        );
        assert!(runtime_path("$(build.nttree)", "amd64", false, false).is_err());
        assert!(runtime_path("$(runtime.system32", "amd64", false, false).is_err());
    }
}
