//! Offline driver injection: what `DISM /Add-Driver` leaves in an offline Windows Server
//! 2016 / Nano Server image, done on the volume tree and the SYSTEM hive.
//!
//! Sources: docs/facts-drivers.md §1 (virt-v2v), §2 (distrobuilder and Windows' own inbox
//! driver manifests), §3 (DriverDatabase layout, FileRepository and `oemN.inf` naming), §4
//! (INF directives) and §5 (the derived recipe); INF rules as cited in [`super::inf`].
//!
//! What one [`inject`] call writes, for one INF:
//! - The whole package (every file of [`DriverPackage::files`], folders kept) in
//!   `Windows\System32\DriverStore\FileRepository\<inf>_amd64_<16 hex>\`, and the INF as
//!   `Windows\INF\oemN.inf`, N the lowest number not used by `Windows\INF\oem*.inf`,
//!   `DriverDatabase\DriverInfFiles\oem*.inf` or the `OemInfMap` bitmap (facts §3.5).
//! - The 16 hex digits: Windows' rule is not published (facts §3.5: the same INF gets
//!   different values on different builds, and Windows accepts any well-formed value). We
//!   use the first 8 bytes of SHA-256 of the INF's bytes, so the name is deterministic and
//!   changes whenever the INF does.
//! - Every CopyFiles of the chosen install sections to its destination (dirid 12 is
//!   `Windows\System32\drivers`, dirid 13 is the FileRepository folder itself, see
//!   [`dirid_path`]), as the "reflected" copies DISM writes (facts §3.2).
//! - `SYSTEM\DriverDatabase`: `OemInfMap` and `UpdateDate`; `DriverInfFiles\oemN.inf`;
//!   `DeviceIds\<enumerator>\<id>!oemN.inf` = `<rank> FF 00 00` (rank = 1-based position of
//!   the id on its models line) and `DeviceIds\{class guid}!oemN.inf` (REG_NONE);
//!   `DriverPackages\<package>` with the 48-byte `Version` value (facts §3.3),
//!   `Configurations\<install section>` (with the AddReg output under `Driver`, `Device` and
//!   `Services\<name>`), `Descriptors\<enumerator>\<id>` and `Strings` (facts §2.2, §3.1).
//! - For services that must run before Plug and Play can install anything, i.e. boot-start
//!   ones (StartType 0, facts §5), `<current control set>\Services\<name>` with Type,
//!   Start, ErrorControl, ImagePath, Group, Owners and the service AddReg, plus the event
//!   log source. Other services (and the HKLM AddReg of their install sections) are left to
//!   Plug and Play at first boot, as DISM leaves them, unless
//!   [`InjectOptions::all_services`] asks for them now.
//!   Windows 8 and later find boot drivers through the DriverDatabase; the
//!   CriticalDeviceDatabase of Windows 7 and older is not written (facts §1.2, §2.2).
//!
//! Not written, each listed in [`DriverReport::not_applied`] when the INF asks for it: the
//! catalog in CatRoot (its database cannot be updated offline), PnpLockdownFiles (SOFTWARE
//! hive), `oemN.pnf` (Windows rebuilds it), signer values (no signature is checked here),
//! co-installers, WDF sections, interfaces and any directive not named above.
//!
//! Everything is read, resolved and checked first; then the edits are made on copies of
//! the tree and hive, which replace the originals only when all succeeded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::inf::{
    self, addreg_flags, service_flags, AddRegLine, Arch, Inf, RegAction, RegRoot, TargetOs,
    MAX_INF_BYTES,
};
use crate::formats::regf::{self, value_type, Hive, Value, ValueData};
use crate::pipeline::settings::current_control_set;
use crate::tree::{self, Content, Meta, Tree};

/// FILE_ATTRIBUTE_ARCHIVE, which Windows sets on every new file.
const ATTR_ARCHIVE: u32 = 0x20;
/// Header of the DriverPackages `Version` value as virt-v2v and distrobuilder write it for
/// third-party packages (facts §3.3; inbox packages start with FF).
const VERSION_HEADER: [u8; 8] = [0x00, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
/// `StatusFlags` of installed packages, third-party and inbox alike (facts §2.2, §2.3).
const STATUS_FLAGS: u32 = 0x12;
/// `ConfigScope` distrobuilder copied from a real install (facts §2.2).
const CONFIG_SCOPE: u32 = 7;
/// Most `oemN.inf` numbers searched for a free one: far above any real image.
const MAX_OEM_NUMBER: u32 = 1 << 20;
/// Most files taken from one package folder: real driver packages have tens.
const MAX_PACKAGE_FILES: usize = 10_000;
/// Deepest folder searched for INFs by [`from_dir`].
const MAX_DIR_DEPTH: usize = 32;
/// Where the driver store lives, relative to the volume root.
pub const FILE_REPOSITORY: &str = "Windows\\System32\\DriverStore\\FileRepository";

/// Everything that can go wrong injecting drivers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("driver package {package}: {source}")]
    Inf {
        package: String,
        #[source]
        source: Box<inf::Error>,
    },
    #[error("driver package {package}: {inf} references {file} (expected at {path} beside the INF), which is missing; add it to the package")]
    MissingFile {
        package: String,
        inf: String,
        file: String,
        path: String,
    },
    #[error("driver package {package}: {inf}: {detail}")]
    Invalid {
        package: String,
        inf: String,
        detail: String,
    },
    #[error("driver package {package}: {inf} is already in the driver store as {id}; inject each package once")]
    AlreadyInStore {
        package: String,
        inf: String,
        id: String,
    },
    #[error("{0}")]
    Image(String),
    #[error("SYSTEM hive edit: {0}")]
    Hive(#[from] regf::Error),
    #[error("volume tree: {0}")]
    Tree(#[from] tree::Error),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A driver package: one INF and the files beside it.
#[derive(Debug, Clone)]
pub struct DriverPackage {
    /// Where it came from, for messages and the report.
    pub source: String,
    /// The INF's file name.
    pub inf: String,
    /// Every file of the package, the INF included, named relative to the INF's folder
    /// (`\` or `/` separated).
    pub files: Vec<(String, Content)>,
}

/// How to inject.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The Windows the INF's decorations are matched against.
    pub target: TargetOs,
    /// FILETIME for new files, keys and `DriverDatabase!UpdateDate`.
    pub timestamp: u64,
    /// Also create non-boot-start services (and apply their install sections' HKLM
    /// AddReg) now instead of leaving them to Plug and Play at first boot.
    pub all_services: bool,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            target: TargetOs::SERVER_2016,
            timestamp: 0,
            all_services: false,
        }
    }
}

/// One service of the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    pub name: String,
    pub service_type: u32,
    pub start_type: u32,
    pub error_control: u32,
    pub image_path: String,
    pub group: Option<String>,
    /// Whether `Services\<name>` was written now (else Plug and Play does it at first boot).
    pub created: bool,
}

/// What [`inject`] did for one INF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriverReport {
    pub source: String,
    pub inf: String,
    /// `oemN.inf`: the INF's name in `Windows\INF` and the DriverDatabase.
    pub published_name: String,
    /// `<inf>_amd64_<16 hex>`.
    pub package_id: String,
    /// The package's folder in the driver store, from the volume root.
    pub file_repository: String,
    /// The models sections read.
    pub models_sections: Vec<String>,
    /// The install sections (DriverDatabase configurations).
    pub configurations: Vec<String>,
    pub device_ids: Vec<String>,
    pub services: Vec<ServiceReport>,
    /// Files written outside the FileRepository folder, from the volume root.
    pub files: Vec<String>,
    /// Every directive or section the INF asks for that was not applied, with why.
    pub not_applied: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Reading packages from a host folder

/// Find every `*.inf` under `path` (recursively, in name order) and make a package of each
/// with the files it references ([`referenced_files`], Windows Server 2016 amd64).
pub fn from_dir(path: &Path) -> Result<Vec<DriverPackage>> {
    let mut infs = Vec::new();
    find_infs(path, 0, &mut infs)?;
    let mut out = Vec::new();
    for inf_path in infs {
        let shown = inf_path.display().to_string();
        let dir = inf_path.parent().unwrap_or(path).to_path_buf();
        let name = inf_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let io = |source| Error::Io {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(&inf_path).map_err(io)?.len();
        if len > MAX_INF_BYTES as u64 {
            return Err(Error::Inf {
                package: shown.clone(),
                source: Box::new(inf::Error::TooLarge {
                    file: name,
                    size: usize::try_from(len).unwrap_or(usize::MAX),
                }),
            });
        }
        let bytes = std::fs::read(&inf_path).map_err(io)?;
        let parsed = Inf::parse(&name, &bytes).map_err(|source| Error::Inf {
            package: shown.clone(),
            source: Box::new(source),
        })?;
        let refs = referenced_files(&parsed, &TargetOs::SERVER_2016).map_err(|e| match e {
            Error::Inf { source, .. } => Error::Inf {
                package: shown.clone(),
                source,
            },
            other => other,
        })?;
        let mut files = vec![(name.clone(), Content::HostFile(inf_path.clone(), len))];
        for (rel, file) in refs.values() {
            let host = find_ci(&dir, rel).ok_or_else(|| Error::MissingFile {
                package: shown.clone(),
                inf: name.clone(),
                file: file.clone(),
                path: rel.clone(),
            })?;
            let meta = std::fs::metadata(&host).map_err(|source| Error::Io {
                path: host.display().to_string(),
                source,
            })?;
            if !meta.is_file() {
                return Err(Error::MissingFile {
                    package: shown.clone(),
                    inf: name.clone(),
                    file: file.clone(),
                    path: rel.clone(),
                });
            }
            if rel.eq_ignore_ascii_case(&name) {
                continue;
            }
            files.push((rel.clone(), Content::HostFile(host, meta.len())));
        }
        out.push(DriverPackage {
            source: shown,
            inf: name,
            files,
        });
    }
    Ok(out)
}

fn find_infs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DIR_DEPTH {
        return Err(Error::Image(format!(
            "{}: folders nested deeper than {MAX_DIR_DEPTH} levels; give the driver folder itself",
            dir.display()
        )));
    }
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        let ft = std::fs::symlink_metadata(&p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })?;
        if ft.is_dir() {
            find_infs(&p, depth + 1, out)?;
        } else if p
            .extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("inf"))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Check a package-relative path: `\` or `/` separated names, none empty, `.` or `..`.
fn check_rel(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split(['\\', '/'])
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains(':'))
}

/// Find `rel` under `base`, each component matched case-insensitively as Windows would.
fn find_ci(base: &Path, rel: &str) -> Option<PathBuf> {
    if !check_rel(rel) {
        return None;
    }
    let mut cur = base.to_path_buf();
    for part in rel.split(['\\', '/']) {
        let exact = cur.join(part);
        if exact.exists() {
            cur = exact;
            continue;
        }
        let lower = part.to_lowercase();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&cur)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().to_lowercase() == lower)
            })
            .collect();
        names.sort();
        cur = names.into_iter().next()?;
    }
    Some(cur)
}

/// The files an INF needs from its package for `os`, keyed by lower-cased path relative
/// to the INF's folder: (path, file name). Those are the catalog, every
/// `[SourceDisksFiles]` entry for the architecture, and the source of every CopyFiles
/// entry of the install sections the chosen models sections use.
pub fn referenced_files(inf: &Inf, os: &TargetOs) -> Result<BTreeMap<String, (String, String)>> {
    let wrap = |source| Error::Inf {
        package: inf.file.clone(),
        source: Box::new(source),
    };
    let mut out = BTreeMap::new();
    let mut add = |inf: &Inf, file: &str| {
        let rel = inf.source_path(file, os.arch);
        out.insert(rel.to_lowercase(), (rel, file.to_string()));
    };
    let version = inf.version().map_err(wrap)?;
    if let Some(c) = &version.catalog_file {
        add(inf, c);
    }
    for sf in inf.source_files(os.arch).values() {
        add(inf, &sf.name);
    }
    for m in inf.manufacturers().map_err(wrap)? {
        let Some(models) = inf.select_models(&m, os).map_err(wrap)?.section else {
            continue;
        };
        for d in inf.devices(&models).map_err(wrap)? {
            let Some(actual) = inf.install_section_name(&d.install_section, os.arch) else {
                continue;
            };
            for entry in inf.install_section(&actual).map_err(wrap)?.copy_files {
                for cf in inf.copy_list(&entry).map_err(wrap)? {
                    add(inf, &cf.source);
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Planning

/// A registry edit relative to some key.
#[derive(Debug, Clone)]
struct RegOp {
    subkey: String,
    flags: u32,
    action: RegAction,
}

#[derive(Debug, Clone)]
struct ServicePlan {
    name: String,
    si: inf::ServiceInstall,
    image_path: String,
    create: bool,
    reg: Vec<RegOp>,
    event_log: Option<(String, Vec<RegOp>)>,
}

#[derive(Debug, Clone, Default)]
struct ConfigPlan {
    name: String,
    service: Option<String>,
    driver_reg: Vec<RegOp>,
    device_reg: Vec<RegOp>,
    /// Service AddReg kept in the package record, per service name.
    service_reg: BTreeMap<String, (String, Vec<RegOp>)>,
    /// HKLM AddReg with a path inside the SYSTEM hive, applied when installed now.
    system_reg: Vec<RegOp>,
    installed_now: bool,
}

#[derive(Debug, Clone)]
struct IdPlan {
    id: String,
    rank: u8,
    config: String,
    description: String,
    manufacturer: String,
}

struct Plan {
    inf_name: String,
    package_id: String,
    oem: String,
    oem_number: u32,
    version_blob: Vec<u8>,
    class_guid: String,
    provider: Option<String>,
    catalog: Option<String>,
    file_size: u64,
    configs: BTreeMap<String, ConfigPlan>,
    services: Vec<ServicePlan>,
    ids: BTreeMap<String, IdPlan>,
    strings: BTreeMap<String, String>,
    /// (path from the volume root, content), store files first.
    files: Vec<(String, Content)>,
}

fn lower_token(raw: &str) -> String {
    if raw.len() > 2 && raw.starts_with('%') && raw.ends_with('%') {
        raw.to_lowercase()
    } else {
        raw.to_string()
    }
}

/// The folder of a dirid, from the volume root, or `None` when we do not map it
/// ("Using Dirids"; facts §4). 13 is the package's own driver store folder.
pub fn dirid_path(dirid: i64, store: &str) -> Option<String> {
    Some(
        match dirid {
            10 => "Windows",
            11 => "Windows\\System32",
            12 => "Windows\\System32\\drivers",
            13 => return Some(store.to_string()),
            17 => "Windows\\INF",
            18 => "Windows\\Help",
            20 => "Windows\\Fonts",
            24 => "",
            50 => "Windows\\System",
            16422 => "Program Files",
            16425 => "Windows\\SysWOW64",
            16426 => "Program Files (x86)",
            _ => return None,
        }
        .to_string(),
    )
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}\\{b}"),
    }
}

/// Split `%dirid%\rest` into (dirid, rest).
fn split_dirid(s: &str) -> Option<(i64, &str)> {
    let r = s.strip_prefix('%')?;
    let (n, rest) = r.split_once('%')?;
    let id = inf::parse_number(n)?;
    Some((id, rest.trim_start_matches('\\')))
}

/// ImagePath for a service binary. Kernel and file system drivers get the forms inbox
/// drivers use (`System32\drivers\x.sys`, `\SystemRoot\...`); other services a full
/// `%SystemRoot%` path (facts §4, AddService row).
fn image_path(binary: &str, service_type: u32, store: &str) -> Option<String> {
    let driver = service_type & 0x0F != 0;
    let Some((dirid, rest)) = split_dirid(binary) else {
        return Some(binary.to_string());
    };
    let sys_root = if driver {
        "\\SystemRoot"
    } else {
        "%SystemRoot%"
    };
    Some(match dirid {
        12 if driver => join("System32\\drivers", rest),
        11 if driver => join("System32", rest),
        16422 | 16426 if !driver => {
            let pf = if dirid == 16422 {
                "%ProgramFiles%"
            } else {
                "%ProgramFiles(x86)%"
            };
            join(pf, rest)
        }
        24 => return None,
        _ => {
            let dir = dirid_path(dirid, store)?;
            let under = dir.strip_prefix("Windows")?;
            join(&format!("{sys_root}{under}"), rest)
        }
    })
}

fn version_blob(class: &crate::core::Guid, dv: Option<&inf::DriverVer>) -> Vec<u8> {
    let mut v = Vec::with_capacity(48);
    v.extend_from_slice(&VERSION_HEADER);
    v.extend_from_slice(&class.to_mixed_endian());
    v.extend_from_slice(&dv.map_or(0, |d| d.filetime()).to_le_bytes());
    v.extend_from_slice(&dv.map_or(0, |d| d.version_u64()).to_le_bytes());
    v.extend_from_slice(&[0u8; 8]);
    v
}

fn oem_number(name: &str) -> Option<u32> {
    let l = name.to_ascii_lowercase();
    let n = l.strip_prefix("oem")?.strip_suffix(".inf")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

struct Planner<'a> {
    pkg: &'a DriverPackage,
    inf: Inf,
    os: TargetOs,
    store: String,
    not_applied: Vec<String>,
}

impl Planner<'_> {
    fn wrap(&self, source: inf::Error) -> Error {
        Error::Inf {
            package: self.pkg.source.clone(),
            source: Box::new(source),
        }
    }

    fn invalid(&self, detail: String) -> Error {
        Error::Invalid {
            package: self.pkg.source.clone(),
            inf: self.pkg.inf.clone(),
            detail,
        }
    }

    /// Read an AddReg list; HKR lines go to `hkr`, HKLM\SYSTEM lines to `system`, the rest
    /// is reported.
    fn add_reg(
        &mut self,
        sections: &[String],
        hkr: &mut Vec<RegOp>,
        mut system: Option<&mut Vec<RegOp>>,
        context: &str,
    ) -> Result<()> {
        for s in sections {
            let lines = self.inf.add_reg_section(s).map_err(|e| self.wrap(e))?;
            for l in lines {
                let action = self.inf.reg_action(&l).map_err(|e| self.wrap(e))?;
                self.route(&l, action, hkr, system.as_deref_mut(), context);
            }
        }
        Ok(())
    }

    fn route(
        &mut self,
        l: &AddRegLine,
        action: RegAction,
        hkr: &mut Vec<RegOp>,
        system: Option<&mut Vec<RegOp>>,
        context: &str,
    ) {
        let op = |subkey: String| RegOp {
            subkey,
            flags: l.flags,
            action: action.clone(),
        };
        let where_ = format!("[{}] line {}", l.section, l.line);
        match l.root {
            RegRoot::Hkr => hkr.push(op(l.subkey.clone())),
            RegRoot::Hklm => {
                let sub = l.subkey.trim_start_matches('\\');
                let lower = sub.to_ascii_lowercase();
                let rest = if lower == "system" {
                    Some("")
                } else if lower.starts_with("system\\") {
                    Some(&sub[7..])
                } else {
                    None
                };
                match (rest, system) {
                    (Some(rest), Some(sys)) => sys.push(op(rest.to_string())),
                    (Some(_), None) => self.not_applied.push(format!(
                        "{where_}: HKLM\\{sub} from {context} (only install sections' HKLM\\SYSTEM entries are applied)"
                    )),
                    (None, _) => self.not_applied.push(format!(
                        "{where_}: HKLM\\{sub} from {context} (only the SYSTEM hive is edited)"
                    )),
                }
            }
            r => self.not_applied.push(format!(
                "{where_}: {r:?} root from {context} (per-user and class-root keys are not edited offline)"
            )),
        }
    }

    /// Find a package file by its path relative to the INF (case-insensitive).
    fn package_file(&self, rel: &str) -> Option<&Content> {
        let norm = |s: &str| s.replace('/', "\\").to_lowercase();
        let want = norm(rel);
        self.pkg
            .files
            .iter()
            .find(|(n, _)| norm(n) == want)
            .map(|(_, c)| c)
    }

    fn plan(
        mut self,
        tree: &Tree,
        system: &Hive,
        opts: &InjectOptions,
    ) -> Result<(Plan, Vec<String>, DriverReport)> {
        let inf_file = self.pkg.inf.clone();
        let version = self.inf.version().map_err(|e| self.wrap(e))?;
        let class_guid = version.class_guid.ok_or_else(|| {
            self.invalid(
                "[Version] has no ClassGuid; a device driver package names its setup class".into(),
            )
        })?;

        let mut report = DriverReport {
            source: self.pkg.source.clone(),
            inf: inf_file.clone(),
            ..DriverReport::default()
        };

        // Models and devices.
        let mut devices = Vec::new();
        for m in self.inf.manufacturers().map_err(|e| self.wrap(e))? {
            let choice = self
                .inf
                .select_models(&m, &self.os)
                .map_err(|e| self.wrap(e))?;
            for s in &choice.skipped {
                self.not_applied.push(format!("models section {s}"));
            }
            let Some(section) = choice.section else {
                self.not_applied.push(format!(
                    "[Manufacturer] line {}: {} has no models section for {} {}.{} build {}",
                    m.line,
                    m.name,
                    self.os.arch.name(),
                    self.os.major,
                    self.os.minor,
                    self.os.build
                ));
                continue;
            };
            for d in self.inf.devices(&section).map_err(|e| self.wrap(e))? {
                devices.push((lower_token(&m.raw_name), d));
            }
            report.models_sections.push(section);
        }
        if devices.is_empty() {
            return Err(self.invalid(format!(
                "no device line applies to {} {}.{} build {}; check the [Manufacturer] decorations",
                self.os.arch.name(),
                self.os.major,
                self.os.minor,
                self.os.build
            )));
        }

        // Install sections (configurations), services, files.
        let mut configs: BTreeMap<String, ConfigPlan> = BTreeMap::new();
        let mut services: Vec<ServicePlan> = Vec::new();
        let mut copies: BTreeMap<String, (String, Content)> = BTreeMap::new();
        let mut ids: BTreeMap<String, IdPlan> = BTreeMap::new();
        let mut strings = BTreeMap::new();
        for (mfg, d) in &devices {
            let key = d.install_section.to_lowercase();
            if !configs.contains_key(&key) {
                let cfg =
                    self.plan_config(&d.install_section, d.line, opts, &mut services, &mut copies)?;
                configs.insert(key.clone(), cfg);
            }
            let config = configs[&key].name.clone();
            // The Strings subkey keeps the tokens the descriptors name, lower-cased.
            for tok in [mfg.clone(), lower_token(&d.raw_description)] {
                if let Some(k) = tok.strip_prefix('%').and_then(|x| x.strip_suffix('%')) {
                    if let Some(v) = self.inf.string(k) {
                        strings.insert(k.to_string(), v.to_string());
                    }
                }
            }
            let all = std::iter::once(&d.hardware_id).chain(d.compatible_ids.iter());
            for (i, id) in all.enumerate() {
                let rank = u8::try_from(i + 1).unwrap_or(u8::MAX);
                if !check_id(id) {
                    return Err(self.invalid(format!(
                        "device id {id:?} on line {} cannot be a registry path (empty part or a part over 255 characters)",
                        d.line
                    )));
                }
                let e = ids.entry(id.to_uppercase()).or_insert_with(|| IdPlan {
                    id: id.clone(),
                    rank,
                    config: config.clone(),
                    description: lower_token(&d.raw_description),
                    manufacturer: mfg.clone(),
                });
                e.rank = e.rank.min(rank);
            }
        }

        // Package identity and the oemN number.
        let inf_bytes = self
            .package_file(&inf_file)
            .ok_or_else(|| self.invalid("the INF itself is not among the package's files".into()))?
            .read_all()
            .map_err(|source| Error::Io {
                path: format!("{}\\{inf_file}", self.pkg.source),
                source,
            })?;
        let package_id = package_id(&inf_file, self.os.arch, &inf_bytes);
        let oem_number = free_oem_number(tree, system).ok_or_else(|| {
            Error::Image(format!("no free oemN.inf number below {MAX_OEM_NUMBER}"))
        })?;
        let oem = format!("oem{oem_number}.inf");

        // Files: the whole package into the store, then the INF and the copies.
        let mut files = Vec::new();
        let mut file_size = 0u64;
        for (rel, content) in &self.pkg.files {
            if !check_rel(rel) {
                return Err(self.invalid(format!(
                    "package file name {rel:?} is not a relative path of plain names"
                )));
            }
            file_size = file_size.saturating_add(content.len());
            files.push((join(&self.store, &rel.replace('/', "\\")), content.clone()));
        }
        files.push((
            format!("Windows\\INF\\{oem}"),
            Content::bytes(inf_bytes.clone()),
        ));
        for (path, content) in copies.into_values() {
            files.push((path, content));
        }
        let mut seen = BTreeSet::new();
        for (p, _) in &files {
            if !seen.insert(p.to_lowercase()) {
                return Err(self.invalid(format!("two files of the package go to {p}")));
            }
        }

        let ccs = current_control_set(system);
        for sv in services.iter().filter(|s| s.create) {
            if system
                .key(&format!("{ccs}\\Services\\{}", sv.name))
                .is_some()
            {
                self.not_applied.push(format!(
                    "{ccs}\\Services\\{} existed: the values the INF sets replaced the image's, the others were kept",
                    sv.name
                ));
            }
        }

        // Things the INF asks for that are not done offline.
        if let Some(c) = &version.catalog_file {
            self.not_applied.push(format!(
                "catalog {c}: copied to the driver store only, not registered in CatRoot (its database cannot be updated offline)"
            ));
        }
        if version.pnp_lockdown {
            self.not_applied
                .push("PnpLockdown=1: PnpLockdownFiles entries live in the SOFTWARE hive, which is not edited here".into());
        }

        let store = self.store.clone();
        report.published_name = oem.clone();
        report.package_id = package_id.clone();
        report.file_repository = store;
        report.configurations = configs.values().map(|c| c.name.clone()).collect();
        report.device_ids = ids.values().map(|i| i.id.clone()).collect();
        report.services = services
            .iter()
            .map(|s| ServiceReport {
                name: s.name.clone(),
                service_type: s.si.service_type,
                start_type: s.si.start_type,
                error_control: s.si.error_control,
                image_path: s.image_path.clone(),
                group: s.si.load_order_group.clone(),
                created: s.create,
            })
            .collect();
        report.files = files
            .iter()
            .filter(|(p, _)| !p.starts_with(&report.file_repository))
            .map(|(p, _)| p.clone())
            .collect();
        let plan = Plan {
            inf_name: inf_file,
            package_id,
            oem,
            oem_number,
            version_blob: version_blob(&class_guid, version.driver_ver.as_ref()),
            class_guid: class_guid.braced(),
            provider: version.provider.clone(),
            catalog: version.catalog_file.clone(),
            file_size,
            configs,
            services,
            ids,
            strings,
            files,
        };
        Ok((plan, self.not_applied, report))
    }

    fn plan_config(
        &mut self,
        name: &str,
        line: usize,
        opts: &InjectOptions,
        services: &mut Vec<ServicePlan>,
        copies: &mut BTreeMap<String, (String, Content)>,
    ) -> Result<ConfigPlan> {
        let actual = self
            .inf
            .install_section_name(name, self.os.arch)
            .ok_or_else(|| {
                self.wrap(inf::Error::MissingSection {
                    file: self.inf.file.clone(),
                    at: format!(" line {line}"),
                    section: format!("{name}.NT{}", self.os.arch.name()),
                    why: format!(
                    " (nor [{name}.NT] or [{name}]), the install section this models line names"
                ),
                })
            })?;
        let is = self
            .inf
            .install_section(&actual)
            .map_err(|e| self.wrap(e))?;
        let mut cfg = ConfigPlan {
            name: name.to_string(),
            ..ConfigPlan::default()
        };
        for (l, text) in &is.other {
            self.not_applied.push(format!(
                "[{actual}] line {l}: {text} (directive not applied offline)"
            ));
        }
        for x in &is.include {
            self.not_applied.push(format!(
                "[{actual}] Include={x} (sections of other INFs are not applied)"
            ));
        }
        for x in &is.needs {
            self.not_applied.push(format!(
                "[{actual}] Needs={x} (sections of other INFs are not applied)"
            ));
        }

        // Services first: they decide whether the configuration is installed now.
        let svc_name = format!("{actual}.Services");
        let mut svcs = Vec::new();
        if self.inf.section(&svc_name).is_some() {
            let ss = self
                .inf
                .services_section(&svc_name)
                .map_err(|e| self.wrap(e))?;
            for (l, text) in &ss.other {
                self.not_applied.push(format!(
                    "[{}] line {l}: {text} (directive not applied offline)",
                    ss.name
                ));
            }
            for a in ss.add_service {
                if a.name.is_empty() {
                    self.not_applied.push(format!(
                        "[{}] line {}: AddService with no name (a NULL driver; nothing to write)",
                        ss.name, a.line
                    ));
                    continue;
                }
                for (what, v) in [
                    ("service name", &a.name),
                    ("event log type", &a.event_log_type),
                    ("event source name", &a.event_name),
                ] {
                    if !check_key_name(v) {
                        return Err(self.invalid(format!(
                            "[{}] line {}: {what} {v:?} cannot be a registry key name (1 to 255 characters, no '\\')",
                            ss.name, a.line
                        )));
                    }
                }
                let si = self
                    .inf
                    .service_install(&a.install_section)
                    .map_err(|e| self.wrap(e))?;
                for (l, text) in &si.other {
                    self.not_applied.push(format!(
                        "[{}] line {l}: {text} (not applied offline)",
                        si.name
                    ));
                }
                let image = image_path(&si.service_binary, si.service_type, &self.store)
                    .ok_or_else(|| {
                        self.invalid(format!(
                            "[{}] ServiceBinary {:?}: its dirid has no known path in the image",
                            si.name, si.service_binary
                        ))
                    })?;
                let create = si.start_type == 0 || opts.all_services;
                let mut reg = Vec::new();
                self.add_reg(
                    &si.add_reg.clone(),
                    &mut reg,
                    None,
                    "a service-install section",
                )?;
                let event_log = match &a.event_log_section {
                    Some(ev) => {
                        let ev_sec = self.inf.install_section(ev).map_err(|e| self.wrap(e))?;
                        for (l, text) in &ev_sec.other {
                            self.not_applied
                                .push(format!("[{ev}] line {l}: {text} (not applied offline)"));
                        }
                        let mut ev_reg = Vec::new();
                        self.add_reg(&ev_sec.add_reg, &mut ev_reg, None, "an event-log section")?;
                        Some((
                            format!("Services\\EventLog\\{}\\{}", a.event_log_type, a.event_name),
                            ev_reg,
                        ))
                    }
                    None => None,
                };
                if a.flags & service_flags::ASSOCSERVICE != 0 {
                    cfg.service = Some(a.name.clone());
                }
                cfg.service_reg
                    .insert(a.name.to_lowercase(), (a.name.clone(), reg.clone()));
                if !create {
                    self.not_applied.push(format!(
                        "service {} (StartType {}): left to Plug and Play, which creates it when the device is first installed",
                        a.name, si.start_type
                    ));
                }
                svcs.push(ServicePlan {
                    name: a.name.clone(),
                    si,
                    image_path: image,
                    create,
                    reg,
                    event_log,
                });
            }
        }
        cfg.installed_now = svcs.iter().any(|s| s.create);

        let mut driver_reg = Vec::new();
        let mut system_reg = Vec::new();
        self.add_reg(
            &is.add_reg,
            &mut driver_reg,
            Some(&mut system_reg),
            "an install section",
        )?;
        cfg.driver_reg = driver_reg;
        let hw = format!("{actual}.HW");
        if self.inf.section(&hw).is_some() {
            let hs = self.inf.install_section(&hw).map_err(|e| self.wrap(e))?;
            for (l, text) in &hs.other {
                self.not_applied.push(format!(
                    "[{}] line {l}: {text} (directive not applied offline)",
                    hs.name
                ));
            }
            let mut device_reg = Vec::new();
            self.add_reg(
                &hs.add_reg,
                &mut device_reg,
                Some(&mut system_reg),
                "a .HW section",
            )?;
            cfg.device_reg = device_reg;
        }
        if !cfg.installed_now && !system_reg.is_empty() {
            self.not_applied.push(format!(
                "[{actual}]: {} HKLM\\SYSTEM AddReg entries left to Plug and Play (the configuration has no boot-start service)",
                system_reg.len()
            ));
            system_reg.clear();
        }
        cfg.system_reg = system_reg;

        // Other sections decorating this one (.CoInstallers, .Wdf, .Interfaces, ...).
        let prefix = format!("{}.", actual.to_lowercase());
        for s in self.inf.sections() {
            let l = s.name.to_lowercase();
            if let Some(suffix) = l.strip_prefix(&prefix) {
                if suffix != "hw" && suffix != "services" {
                    self.not_applied
                        .push(format!("[{}] (not applied offline)", s.name));
                }
            }
        }

        // Files.
        for entry in &is.copy_files {
            let list = self.inf.copy_list(entry).map_err(|e| self.wrap(e))?;
            let section = entry.strip_prefix('@').is_none().then_some(entry.as_str());
            let dest = self.inf.destination(section).map_err(|e| self.wrap(e))?;
            let Some(dest) = dest else {
                self.not_applied.push(format!(
                    "CopyFiles={entry} of [{actual}]: no [DestinationDirs] entry and no DefaultDestDir"
                ));
                continue;
            };
            let Some(dir) = dirid_path(dest.dirid, &self.store) else {
                self.not_applied.push(format!(
                    "CopyFiles={entry} of [{actual}]: dirid {} has no known path in the image",
                    dest.dirid
                ));
                continue;
            };
            for cf in list {
                let rel = self.inf.source_path(&cf.source, self.os.arch);
                let content =
                    self.package_file(&rel)
                        .cloned()
                        .ok_or_else(|| Error::MissingFile {
                            package: self.pkg.source.clone(),
                            inf: self.pkg.inf.clone(),
                            file: cf.source.clone(),
                            path: rel.clone(),
                        })?;
                if dest.dirid == 13 {
                    // Run from the driver store: the store copy is the one used.
                    continue;
                }
                if !check_rel(&cf.dest) || (!dest.subdir.is_empty() && !check_rel(&dest.subdir)) {
                    return Err(self.invalid(format!(
                        "CopyFiles={entry}: destination {:?} in {:?} is not a plain relative name",
                        cf.dest, dest.subdir
                    )));
                }
                let path = join(&join(&dir, &dest.subdir), &cf.dest);
                copies.entry(path.to_lowercase()).or_insert((path, content));
            }
        }
        services.extend(svcs);
        Ok(cfg)
    }
}

/// A single registry key name: 1..=255 UTF-16 units, no `\`.
fn check_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\\') && name.encode_utf16().count() <= 255
}

/// A device id usable as a registry path: `\`-separated parts, each 1..=255 characters.
fn check_id(id: &str) -> bool {
    id.split('\\')
        .all(|p| !p.is_empty() && p.encode_utf16().count() <= 255)
}

/// `<inf>_<arch>_<16 hex>`: the first 8 bytes of SHA-256 of the INF (see the module notes).
pub fn package_id(inf_name: &str, arch: Arch, inf_bytes: &[u8]) -> String {
    let h = Sha256::digest(inf_bytes);
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{}_{hex}", inf_name.to_lowercase(), arch.name())
}

/// The lowest `N` not used by `Windows\INF\oemN.inf`, `DriverInfFiles\oemN.inf` or a set
/// bit of `DriverDatabase!OemInfMap` (MSB first, facts §2.2).
fn free_oem_number(tree: &Tree, system: &Hive) -> Option<u32> {
    let mut used = BTreeSet::new();
    if let Some(dir) = tree.lookup("Windows\\INF") {
        for (name, _) in tree.node(dir).entries() {
            if let Some(n) = oem_number(&String::from_utf16_lossy(name)) {
                used.insert(n);
            }
        }
    }
    if let Some(k) = system.key("DriverDatabase\\DriverInfFiles") {
        for s in &k.subkeys {
            if let Some(n) = oem_number(&s.name) {
                used.insert(n);
            }
        }
    }
    if let Some(v) = system
        .key("DriverDatabase")
        .and_then(|k| k.value("OemInfMap"))
    {
        for (i, b) in v.data.iter().enumerate() {
            for bit in 0..8u32 {
                if b & (0x80 >> bit) != 0 {
                    used.insert(u32::try_from(i).ok()?.checked_mul(8)?.checked_add(bit)?);
                }
            }
        }
    }
    (0..MAX_OEM_NUMBER).find(|n| !used.contains(n))
}

// ---------------------------------------------------------------------------------------
// Applying

/// Inject one driver package into an offline image: its tree and SYSTEM hive. On error
/// neither is changed.
pub fn inject(
    tree: &mut Tree,
    system: &mut Hive,
    pkg: &DriverPackage,
    opts: &InjectOptions,
) -> Result<DriverReport> {
    if pkg.inf.contains(['\\', '/']) || pkg.inf.is_empty() {
        return Err(Error::Invalid {
            package: pkg.source.clone(),
            inf: pkg.inf.clone(),
            detail: "the INF name must be a plain file name; name the other files relative to its folder".into(),
        });
    }
    if pkg.files.len() > MAX_PACKAGE_FILES {
        return Err(Error::Invalid {
            package: pkg.source.clone(),
            inf: pkg.inf.clone(),
            detail: format!(
                "{} files, more than the {MAX_PACKAGE_FILES} accepted in one package",
                pkg.files.len()
            ),
        });
    }
    match tree.lookup("Windows\\System32") {
        Some(id) if tree.node(id).is_dir => {}
        _ => {
            return Err(Error::Image(
                "the volume tree has no Windows\\System32 folder; inject drivers into a Windows image tree".into(),
            ))
        }
    }
    let ccs = current_control_set(system);
    if system.key(&ccs).is_none() {
        return Err(Error::Image(format!(
            "the SYSTEM hive has no {ccs} key (named by Select!Current); is it a SYSTEM hive?"
        )));
    }
    let inf_content = pkg
        .files
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&pkg.inf))
        .map(|(_, c)| c.clone())
        .ok_or_else(|| Error::Invalid {
            package: pkg.source.clone(),
            inf: pkg.inf.clone(),
            detail: "the INF itself is not among the package's files".into(),
        })?;
    if inf_content.len() > MAX_INF_BYTES as u64 {
        return Err(Error::Inf {
            package: pkg.source.clone(),
            source: Box::new(inf::Error::TooLarge {
                file: pkg.inf.clone(),
                size: usize::try_from(inf_content.len()).unwrap_or(usize::MAX),
            }),
        });
    }
    let bytes = inf_content.read_all().map_err(|source| Error::Io {
        path: format!("{}\\{}", pkg.source, pkg.inf),
        source,
    })?;
    let parsed = Inf::parse(&pkg.inf, &bytes).map_err(|source| Error::Inf {
        package: pkg.source.clone(),
        source: Box::new(source),
    })?;
    let id = package_id(&pkg.inf, opts.target.arch, &bytes);
    let store = format!("{FILE_REPOSITORY}\\{id}");
    if tree.lookup(&store).is_some()
        || system
            .key(&format!("DriverDatabase\\DriverPackages\\{id}"))
            .is_some()
    {
        return Err(Error::AlreadyInStore {
            package: pkg.source.clone(),
            inf: pkg.inf.clone(),
            id,
        });
    }
    let planner = Planner {
        pkg,
        inf: parsed,
        os: opts.target,
        store,
        not_applied: Vec::new(),
    };
    let (plan, not_applied, mut report) = planner.plan(tree, system, opts)?;
    report.not_applied = not_applied;

    let mut new_tree = tree.clone();
    let mut new_system = system.clone();
    apply_files(&mut new_tree, &plan, opts.timestamp, &mut report)?;
    apply_registry(&mut new_system, &ccs, &plan, opts.timestamp)?;
    *tree = new_tree;
    *system = new_system;
    Ok(report)
}

fn apply_files(tree: &mut Tree, plan: &Plan, ts: u64, report: &mut DriverReport) -> Result<()> {
    for (path, content) in &plan.files {
        if put_file(tree, path, content.clone(), ts)? {
            report.not_applied.push(format!(
                "{path} existed and was replaced by the package's copy"
            ));
        }
    }
    Ok(())
}

/// Write a file, creating its folders; new nodes take the security descriptor of their
/// nearest existing ancestor. True when an existing file was replaced.
fn put_file(tree: &mut Tree, path: &str, content: Content, ts: u64) -> Result<bool> {
    let (dir, name) = path.rsplit_once('\\').unwrap_or(("", path));
    let mut cur = Tree::ROOT;
    let mut security = tree.node(cur).meta.security;
    for part in dir.split('\\').filter(|p| !p.is_empty()) {
        cur = match tree.child(cur, part) {
            Some(c) => c,
            None => {
                let meta = Meta {
                    security,
                    ..Meta::at(ts)
                };
                tree.add_dir(cur, part, meta)?
            }
        };
        security = tree.node(cur).meta.security.or(security);
    }
    if let Some(id) = tree.child(cur, name) {
        tree.set_data(id, content)?;
        return Ok(true);
    }
    let meta = Meta {
        attributes: ATTR_ARCHIVE,
        security,
        ..Meta::at(ts)
    };
    tree.add_file(cur, name, meta, content)?;
    Ok(false)
}

fn set(hive: &mut Hive, key: &str, value: Value, ts: u64) -> Result<()> {
    let k = hive.create_key(key, ts)?;
    k.set_value(value)?;
    k.last_written = ts;
    Ok(())
}

/// Apply AddReg edits under `base`, honouring NOCLOBBER, OVERWRITEONLY and APPEND.
fn apply_ops(hive: &mut Hive, base: &str, ops: &[RegOp], ts: u64) -> Result<()> {
    use addreg_flags::*;
    for op in ops {
        let path = join(base, op.subkey.trim_matches('\\'));
        match &op.action {
            RegAction::KeyOnly => {
                hive.create_key(&path, ts)?;
            }
            RegAction::DeleteValue(name) => {
                if let Some(k) = hive.key_mut(&path) {
                    k.delete_value(name);
                }
            }
            RegAction::Set {
                name,
                data_type,
                data,
            } => {
                let existing = hive.key(&path).and_then(|k| k.value(name)).cloned();
                if (op.flags & NOCLOBBER != 0 && existing.is_some())
                    || (op.flags & OVERWRITEONLY != 0 && existing.is_none())
                {
                    continue;
                }
                let mut value = Value::new(name, *data_type, data.clone());
                if op.flags & APPEND != 0 && *data_type == value_type::REG_MULTI_SZ {
                    if let Some(ValueData::MultiSz(mut old)) = existing.map(|v| v.decode()) {
                        if let ValueData::MultiSz(new) = value.decode() {
                            for s in new {
                                if !old.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
                                    old.push(s);
                                }
                            }
                        }
                        let items: Vec<&str> = old.iter().map(String::as_str).collect();
                        value = Value::multi_sz(name, &items);
                    }
                }
                set(hive, &path, value, ts)?;
            }
        }
    }
    Ok(())
}

fn apply_registry(hive: &mut Hive, ccs: &str, plan: &Plan, ts: u64) -> Result<()> {
    let db = "DriverDatabase";
    let oem = plan.oem.as_str();
    let pkg = format!("{db}\\DriverPackages\\{}", plan.package_id);

    // Root: the oemN bitmap and the update time.
    let mut map = hive
        .key(db)
        .and_then(|k| k.value("OemInfMap"))
        .filter(|v| v.data_type == value_type::REG_BINARY)
        .map(|v| v.data.clone())
        .unwrap_or_default();
    let byte = (plan.oem_number / 8) as usize;
    if map.len() <= byte {
        map.resize(byte + 1, 0);
    }
    map[byte] |= 0x80 >> (plan.oem_number % 8);
    set(hive, db, Value::binary("OemInfMap", &map), ts)?;
    set(hive, db, Value::binary("UpdateDate", &ts.to_le_bytes()), ts)?;

    // DriverInfFiles.
    let inf_key = format!("{db}\\DriverInfFiles\\{oem}");
    let configs: Vec<&str> = plan.configs.values().map(|c| c.name.as_str()).collect();
    set(hive, &inf_key, Value::multi_sz("", &[&plan.package_id]), ts)?;
    set(hive, &inf_key, Value::sz("Active", &plan.package_id), ts)?;
    set(
        hive,
        &inf_key,
        Value::multi_sz("Configurations", &configs),
        ts,
    )?;

    // DeviceIds.
    for idp in plan.ids.values() {
        let key = format!("{db}\\DeviceIds\\{}", idp.id);
        set(hive, &key, Value::binary(oem, &[idp.rank, 0xFF, 0, 0]), ts)?;
    }
    let class_key = format!("{db}\\DeviceIds\\{}", plan.class_guid);
    set(
        hive,
        &class_key,
        Value::new(oem, value_type::REG_NONE, Vec::new()),
        ts,
    )?;

    // DriverPackages.
    set(hive, &pkg, Value::sz("", oem), ts)?;
    if let Some(c) = &plan.catalog {
        set(hive, &pkg, Value::sz("Catalog", c), ts)?;
    }
    set(hive, &pkg, Value::qword("FileSize", plan.file_size), ts)?;
    set(hive, &pkg, Value::sz("InfName", &plan.inf_name), ts)?;
    if let Some(p) = &plan.provider {
        set(hive, &pkg, Value::sz("Provider", p), ts)?;
    }
    set(hive, &pkg, Value::dword("StatusFlags", STATUS_FLAGS), ts)?;
    set(hive, &pkg, Value::binary("Version", &plan.version_blob), ts)?;
    for c in plan.configs.values() {
        let ck = format!("{pkg}\\Configurations\\{}", c.name);
        set(hive, &ck, Value::dword("ConfigFlags", 0), ts)?;
        set(hive, &ck, Value::dword("ConfigScope", CONFIG_SCOPE), ts)?;
        if let Some(s) = &c.service {
            set(hive, &ck, Value::sz("Service", s), ts)?;
        }
        apply_ops(hive, &format!("{ck}\\Driver"), &c.driver_reg, ts)?;
        apply_ops(hive, &format!("{ck}\\Device"), &c.device_reg, ts)?;
        for (name, ops) in c.service_reg.values() {
            apply_ops(hive, &format!("{ck}\\Services\\{name}"), ops, ts)?;
        }
        if c.installed_now {
            apply_ops(hive, "", &rebase_ccs(&c.system_reg, ccs), ts)?;
        }
    }
    for idp in plan.ids.values() {
        let key = format!("{pkg}\\Descriptors\\{}", idp.id);
        set(hive, &key, Value::sz("Configuration", &idp.config), ts)?;
        set(hive, &key, Value::sz("Description", &idp.description), ts)?;
        set(hive, &key, Value::sz("Manufacturer", &idp.manufacturer), ts)?;
    }
    if !plan.strings.is_empty() {
        for (k, v) in &plan.strings {
            set(
                hive,
                &format!("{pkg}\\Strings"),
                Value::sz(&k.to_lowercase(), v),
                ts,
            )?;
        }
    }

    // Services installed now.
    for s in plan.services.iter().filter(|s| s.create) {
        let key = format!("{ccs}\\Services\\{}", s.name);
        let si = &s.si;
        set(hive, &key, Value::dword("Type", si.service_type), ts)?;
        set(hive, &key, Value::dword("Start", si.start_type), ts)?;
        set(
            hive,
            &key,
            Value::dword("ErrorControl", si.error_control),
            ts,
        )?;
        set(hive, &key, Value::expand_sz("ImagePath", &s.image_path), ts)?;
        if let Some(g) = &si.load_order_group {
            set(hive, &key, Value::sz("Group", g), ts)?;
        }
        if let Some(d) = &si.display_name {
            set(hive, &key, Value::sz("DisplayName", d), ts)?;
        }
        if let Some(d) = &si.description {
            set(hive, &key, Value::sz("Description", d), ts)?;
        }
        let (groups, svcs): (Vec<&String>, Vec<&String>) =
            si.dependencies.iter().partition(|d| d.starts_with('+'));
        if !svcs.is_empty() {
            let v: Vec<&str> = svcs.iter().map(|s| s.as_str()).collect();
            set(hive, &key, Value::multi_sz("DependOnService", &v), ts)?;
        }
        if !groups.is_empty() {
            let v: Vec<&str> = groups.iter().map(|s| &s[1..]).collect();
            set(hive, &key, Value::multi_sz("DependOnGroup", &v), ts)?;
        }
        if let Some(n) = &si.start_name {
            set(hive, &key, Value::sz("ObjectName", n), ts)?;
        } else if si.service_type & 0x30 != 0 {
            set(hive, &key, Value::sz("ObjectName", "LocalSystem"), ts)?;
        }
        set(hive, &key, Value::multi_sz("Owners", &[oem]), ts)?;
        apply_ops(hive, &key, &s.reg, ts)?;
        if let Some((ev_key, ops)) = &s.event_log {
            let k = format!("{ccs}\\{ev_key}");
            hive.create_key(&k, ts)?;
            apply_ops(hive, &k, ops, ts)?;
        }
    }
    Ok(())
}

/// HKLM\SYSTEM paths: `CurrentControlSet\...` goes to the current control set.
fn rebase_ccs(ops: &[RegOp], ccs: &str) -> Vec<RegOp> {
    ops.iter()
        .map(|op| {
            let sub = op.subkey.trim_start_matches('\\');
            let lower = sub.to_ascii_lowercase();
            let subkey = if lower == "currentcontrolset" {
                ccs.to_string()
            } else if lower.starts_with("currentcontrolset\\") {
                format!("{ccs}{}", &sub["currentcontrolset".len()..])
            } else {
                sub.to_string()
            };
            RegOp {
                subkey,
                ..op.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: u64 = 133_444_736_000_000_000;

    const INF: &str = r#"[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGuid={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%RH%
DriverVer=06/21/2016,62.72.104.12600
CatalogFile=viostor.cat

[DestinationDirs]
DefaultDestDir = 12

[SourceDisksNames]
1 = %Disk%,,,""

[SourceDisksFiles]
viostor.sys = 1,,

[Manufacturer]
%RH% = RH, NTamd64.10.0, NTx86

[RH.NTamd64.10.0]
%Dev% = scsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\VEN_1AF4&DEV_1001

[RH.NTx86]
%Dev% = scsi_inst, PCI\VEN_1AF4&DEV_1001

[scsi_inst]
CopyFiles = @viostor.sys
FeatureScore = 0x80

[scsi_inst.HW]
AddReg = msi

[scsi_inst.CoInstallers]
AddReg = msi

[scsi_inst.Services]
AddService = viostor, 0x00000002, svc, evt

[svc]
ServiceType = 1
StartType = 0
ErrorControl = 1
ServiceBinary = %12%\viostor.sys
LoadOrderGroup = SCSI miniport
AddReg = params

[evt]
AddReg = evt_reg

[evt_reg]
HKR,,EventMessageFile,0x00020000,"%%SystemRoot%%\System32\IoLogMsg.dll"
HKR,,TypesSupported,0x00010001,7

[params]
HKR, Parameters, BusType, 0x00010001, 1

[msi]
HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, 0x00010001, 1

[Strings]
RH = "Red Hat, Inc."
Dev = "Red Hat VirtIO SCSI controller"
Disk = "VirtIO disk"
"#;

    fn pkg() -> DriverPackage {
        DriverPackage {
            source: "test".into(),
            inf: "viostor.inf".into(),
            files: vec![
                (
                    "viostor.inf".into(),
                    Content::bytes(INF.as_bytes().to_vec()),
                ),
                ("viostor.sys".into(), Content::bytes(b"MZ driver".to_vec())),
                ("viostor.cat".into(), Content::bytes(b"catalog".to_vec())),
            ],
        }
    }

    fn image() -> (Tree, Hive) {
        let mut t = Tree::new(Meta::at(TS));
        t.mkdir_p("Windows\\System32\\drivers", &Meta::at(TS))
            .unwrap();
        let mut h = Hive::new_empty("SYSTEM", TS);
        h.create_key("ControlSet001", TS).unwrap();
        (t, h)
    }

    fn opts() -> InjectOptions {
        InjectOptions {
            timestamp: TS,
            ..InjectOptions::default()
        }
    }

    fn dword(h: &Hive, k: &str, v: &str) -> u32 {
        match h.key(k).and_then(|k| k.value(v)).map(|v| v.decode()) {
            Some(ValueData::Dword(d)) => d,
            other => panic!("{k}!{v}: {other:?}"),
        }
    }

    #[test]
    fn boot_driver_is_registered() {
        let (mut t, mut h) = image();
        let r = inject(&mut t, &mut h, &pkg(), &opts()).unwrap();
        assert_eq!(r.published_name, "oem0.inf");
        let id = package_id("viostor.inf", Arch::Amd64, INF.as_bytes());
        assert_eq!(r.package_id, id);
        assert!(
            id.starts_with("viostor.inf_amd64_") && id.len() == "viostor.inf_amd64_".len() + 16
        );
        let svc = "ControlSet001\\Services\\viostor";
        assert_eq!(dword(&h, svc, "Start"), 0);
        assert_eq!(dword(&h, svc, "Type"), 1);
        assert_eq!(dword(&h, &format!("{svc}\\Parameters"), "BusType"), 1);
        assert_eq!(
            h.key(svc).unwrap().value("ImagePath").unwrap().decode(),
            ValueData::ExpandSz("System32\\drivers\\viostor.sys".into())
        );
        assert_eq!(
            dword(
                &h,
                "ControlSet001\\Services\\EventLog\\System\\viostor",
                "TypesSupported"
            ),
            7
        );
        let v = h
            .key(&format!("DriverDatabase\\DriverPackages\\{id}"))
            .unwrap()
            .value("Version")
            .unwrap();
        assert_eq!(v.data.len(), 48);
        assert_eq!(&v.data[..8], &VERSION_HEADER);
        assert_eq!(&v.data[8..12], &[0x7B, 0xE9, 0x36, 0x4D]);
        let dev = h
            .key("DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001")
            .unwrap()
            .value("oem0.inf")
            .unwrap();
        assert_eq!(dev.data, [2, 0xFF, 0, 0]);
        assert_eq!(
            h.key("DriverDatabase")
                .unwrap()
                .value("OemInfMap")
                .unwrap()
                .data,
            [0x80]
        );
        assert_eq!(
            dword(
                &h,
                &format!("DriverDatabase\\DriverPackages\\{id}\\Configurations\\scsi_inst\\Device\\Interrupt Management\\MessageSignaledInterruptProperties"),
                "MSISupported"
            ),
            1
        );
        assert!(t
            .lookup("Windows\\System32\\drivers\\viostor.sys")
            .is_some());
        assert!(t.lookup("Windows\\INF\\oem0.inf").is_some());
        assert!(t
            .lookup(&format!("{FILE_REPOSITORY}\\{id}\\viostor.cat"))
            .is_some());
        assert!(
            r.not_applied.iter().any(|s| s.contains("CoInstallers")),
            "{:?}",
            r.not_applied
        );
        assert!(r.not_applied.iter().any(|s| s.contains("FeatureScore")));
        assert!(r.not_applied.iter().any(|s| s.contains("RH.NTx86")));
        // The same package again is refused, and nothing changes.
        let (t0, h0) = (t.len(), h.clone());
        assert!(matches!(
            inject(&mut t, &mut h, &pkg(), &opts()),
            Err(Error::AlreadyInStore { .. })
        ));
        assert_eq!((t.len(), &h), (t0, &h0));
    }

    #[test]
    fn next_package_gets_the_next_oem_number() {
        let (mut t, mut h) = image();
        inject(&mut t, &mut h, &pkg(), &opts()).unwrap();
        let mut p = pkg();
        let inf2 = INF.replace("62.72.104.12600", "62.72.104.12601");
        p.files[0].1 = Content::bytes(inf2.into_bytes());
        let r = inject(&mut t, &mut h, &p, &opts()).unwrap();
        assert_eq!(r.published_name, "oem1.inf");
        assert_eq!(
            h.key("DriverDatabase")
                .unwrap()
                .value("OemInfMap")
                .unwrap()
                .data,
            [0xC0]
        );
    }

    #[test]
    fn errors_leave_the_image_untouched() {
        let (mut t, mut h) = image();
        let (t0, h0) = (t.len(), h.clone());
        let mut p = pkg();
        p.files.retain(|(n, _)| n != "viostor.sys");
        let e = inject(&mut t, &mut h, &p, &opts()).unwrap_err().to_string();
        assert_eq!(
            e,
            "driver package test: viostor.inf references viostor.sys (expected at viostor.sys beside the INF), which is missing; add it to the package"
        );
        let mut p = pkg();
        p.files[0].1 = Content::bytes(INF.replace("ServiceBinary", "ServiceBinaryX").into_bytes());
        let e = inject(&mut t, &mut h, &p, &opts()).unwrap_err().to_string();
        assert!(e.contains("entry ServiceBinary"), "{e}");
        assert_eq!((t.len(), &h), (t0, &h0));
        let mut bare = Hive::new_empty("SYSTEM", TS);
        assert!(inject(&mut t, &mut bare, &pkg(), &opts())
            .unwrap_err()
            .to_string()
            .contains("no ControlSet001"));
    }

    #[test]
    fn mutated_packages_never_panic_and_failures_change_nothing() {
        const SPECIAL: &[u8] = b"\"\\;%[],=\n0x12@";
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let mut ok = 0;
        for _ in 0..400 {
            let mut b = INF.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let at = next() % b.len().max(1);
                if next() % 2 == 0 && !b.is_empty() {
                    b[at] = SPECIAL[next() % SPECIAL.len()];
                } else {
                    b.insert(at, SPECIAL[next() % SPECIAL.len()]);
                }
            }
            let mut p = pkg();
            p.files[0].1 = Content::bytes(b);
            let (mut t, mut h) = image();
            let (t0, h0) = (t.len(), h.clone());
            match inject(&mut t, &mut h, &p, &opts()) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.to_string().contains('\n'), "{e}");
                    assert_eq!((t.len(), &h), (t0, &h0));
                }
            }
        }
        assert!(ok > 0, "no mutation injected at all");
    }

    #[test]
    fn image_paths_per_dirid() {
        let st = "Windows\\System32\\DriverStore\\FileRepository\\x.inf_amd64_0";
        assert_eq!(
            image_path("%12%\\a.sys", 1, st).unwrap(),
            "System32\\drivers\\a.sys"
        );
        assert_eq!(
            image_path("%13%\\a.sys", 1, st).unwrap(),
            "\\SystemRoot\\System32\\DriverStore\\FileRepository\\x.inf_amd64_0\\a.sys"
        );
        assert_eq!(
            image_path("%11%\\svc.exe", 0x10, st).unwrap(),
            "%SystemRoot%\\System32\\svc.exe"
        );
        assert_eq!(
            image_path("%16422%\\V\\a.exe", 0x10, st).unwrap(),
            "%ProgramFiles%\\V\\a.exe"
        );
        assert_eq!(image_path("%99%\\a.sys", 1, st), None);
    }
}
