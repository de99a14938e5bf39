//! Offline projection of CBS packages into a volume tree and its SYSTEM and SOFTWARE hives:
//! what offline `DISM /Add-Package` leaves behind, as far as it can be done without Windows.
//!
//! Sources: domain.md §6 (what an offline add-package leaves in the image); facts-cbs.md §4
//! (keyforms), §5.1 (package store names, PackageIndex), §5.2 (the CBS `Packages\<identity>`
//! key and its values), §6 (runtime variables, named descriptors), §7 (services).
//!
//! Per component (manifest) of a package:
//! - payload into `Windows\WinSxS\<keyform>\<name>`, the manifest into
//!   `Windows\WinSxS\Manifests\<keyform>.manifest` (bytes as in the cab);
//! - each file at its destination as a hard link to the WinSxS copy, with the file's
//!   descriptor (named in the manifest, defined in its `trustInfo`, else the WRP defaults of
//!   facts-cbs.md §6.2; `(inherit)` takes the parent folder's);
//! - `<directories>` created with their descriptors; missing parent folders take their
//!   parent's descriptor;
//! - registry values into SYSTEM (`CurrentControlSet` mapped to the control set
//!   `Select!Current` names) and SOFTWARE, key descriptors set when named; services under
//!   `<control set>\Services\<name>`;
//! - driver components (a file with `<infFile/>`, type `dualModeDriver`/`driverUpdate`) go to
//!   the component store like any other, but their files, registry and services are handed
//!   to the driver injector as [`DriverPayload`]s instead of being projected here.
//!
//! Per package: `Windows\servicing\Packages\<identity>.mum` and `.cat`, and
//! `SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages\<identity>`
//! with CurrentState 0x70, InstallClient, InstallName (the identity, as the template of
//! facts-cbs.md §5.2), InstallLocation (the cab's path below the media's Packages folder,
//! so the bytes do not depend on the build host [I]), InstallTimeHigh/Low (the build time),
//! InstallUser S-1-5-18 [I], SelfUpdate 0, Visibility 1, and `Owners!<identity>` =
//! 0x00020070 (a top-level package owns itself, facts-cbs.md §5.2). `PackageIndex\<identity
//! with version 0.0.0.0>` gets a REG_NONE value named by the full identity [C name, I type].
//!
//! Payload lookup in the cab [I, the layout of Windows update cabs]: `<keyform>\<sourceName>`,
//! then `<sourcePath>\<sourceName>`, then `<sourceName>` at the cab root.
//!
//! Not written (reported in [`ServicingReport::limitations`]): the COMPONENTS hive, the
//! `Updates` subkey (its form is unknown, facts-cbs.md §5.2), WinSxS `Catalogs`. Files the
//! base image already has at a destination are not replaced: that is an error.
//!
//! Everything is checked before the tree or hives change, and the edits are made on copies
//! that replace the originals only on success, so on error they are untouched.

use super::cab;
use super::keyform;
use super::manifest::{self, Component, HiveName};
use super::mum::{self, PackageManifest};
use super::resolve::{Part, ResolvedPackage};
use super::sddl;
use crate::formats::regf::{self, value_type::*, Hive, Value, ValueData};
use crate::pipeline::settings::current_control_set;
use crate::tree::{self, Content, Meta, NodeId, SecurityId, Tree};
use std::collections::{BTreeMap, BTreeSet};

/// CurrentState of an installed package (facts-cbs.md §5.2).
pub const STATE_INSTALLED: u32 = 0x70;
/// `Owners` value data of a package that owns itself (facts-cbs.md §5.2, template).
pub const OWNER_SELF: u32 = 0x0002_0070;
/// The CBS key in SOFTWARE.
pub const CBS_KEY: &str = "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing";
/// Where package manifests and catalogs are kept.
pub const PACKAGES_DIR: &str = "Windows\\servicing\\Packages";
/// The component store.
pub const WINSXS_DIR: &str = "Windows\\WinSxS";
/// Most manifests one package may hold: real Nano packages have tens to hundreds.
pub const MAX_COMPONENTS: usize = 20_000;

/// Fallback definitions of the WRP descriptor names (facts-cbs.md §6.2), used only when a
/// manifest names one without defining it.
const WRP_DEFAULTS: &[(&str, &str)] = &[
    (
        "WRP_FILE_DEFAULT_SDDL",
        "O:TIG:TID:P(A;;FA;;;TI)(A;;GRGX;;;BA)(A;;GRGX;;;SY)(A;;GRGX;;;BU)(A;;GRGX;;;S-1-15-2-1)S:(AU;FASA;0x000D0116;;;WD)",
    ),
    (
        "WRP_REGKEY_DEFAULT_SDDL",
        "O:TIG:TID:P(A;CI;GA;;;TI)(A;CI;GR;;;SY)(A;CI;GR;;;BA)(A;CI;GR;;;BU)(A;CI;GR;;;S-1-15-2-1)",
    ),
    (
        "WRP_DIRECTORY_DEFAULT_SDDL",
        "O:TIG:TID:P(A;CI;GA;;;TI)(A;;0x1301bf;;;SY)(A;IOCIOI;GA;;;SY)(A;;0x1301bf;;;BA)(A;IOCIOI;GA;;;BA)(A;CIOI;GRGX;;;BU)(A;OICIIO;GA;;;CO)(A;CIOI;GRGX;;;S-1-15-2-1)",
    ),
    (
        "WRP_PARENT_DIR_DEFAULT_SDDL",
        "O:TIG:TID:P(A;CI;GA;;;TI)(A;;0x1301bf;;;SY)(A;IOCIOI;GA;;;SY)(A;;0x1301bf;;;BA)(A;IOCIOI;GA;;;BA)(A;CIOI;GRGX;;;BU)(A;OICIIO;GA;;;CO)(A;CIOI;GRGX;;;S-1-15-2-1)",
    ),
];

/// Errors projecting packages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cab(#[from] cab::Error),
    #[error(transparent)]
    Mum(#[from] mum::Error),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    #[error(transparent)]
    Keyform(#[from] keyform::Error),
    #[error("package {package}: {msg}")]
    Package { package: String, msg: String },
    #[error("package {package}, component {component}: {msg}")]
    Component {
        package: String,
        component: String,
        msg: String,
    },
    #[error("package {package}: {path}: {source}")]
    Tree {
        package: String,
        path: String,
        source: tree::Error,
    },
    #[error("package {package}: registry {path}: {source}")]
    Registry {
        package: String,
        path: String,
        source: regf::Error,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A package cab read into memory: its update.mum, catalog, component manifests and payload.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    /// Short name from the catalog (`Guest`).
    pub name: String,
    pub part: Part,
    /// The cab's path below the media's Packages folder (`en-US\X_en-US.cab`).
    pub cab: String,
    pub manifest: PackageManifest,
    pub mum_bytes: Vec<u8>,
    pub cat_bytes: Option<Vec<u8>>,
    /// Parsed component manifests with their raw bytes, sorted by manifest name.
    pub components: Vec<(Component, Vec<u8>)>,
    /// Every cab member: lower-cased `/` path → (stored path, bytes).
    pub members: BTreeMap<String, (String, Vec<u8>)>,
}

impl LoadedPackage {
    /// Identity string `name~pkt~arch~lang~version`.
    pub fn identity(&self) -> String {
        self.manifest.identity.package_string()
    }

    /// Build from cab members (relative `/` paths and bytes).
    pub fn from_members(
        name: &str,
        part: Part,
        cab: &str,
        members: Vec<(String, Vec<u8>)>,
    ) -> Result<LoadedPackage> {
        let perr = |msg: String| Error::Package {
            package: cab.to_string(),
            msg,
        };
        let mut map = BTreeMap::new();
        for (p, b) in members {
            let key = p.to_ascii_lowercase();
            if map.contains_key(&key) {
                return Err(perr(format!(
                    "member {p:?} appears twice (names are case-insensitive)"
                )));
            }
            map.insert(key, (p, b));
        }
        let (mum_name, mum_bytes) = map
            .get("update.mum")
            .cloned()
            .ok_or_else(|| perr("no update.mum; not a servicing package".into()))?;
        let manifest = mum::parse_package(&format!("{cab}:{mum_name}"), &mum_bytes)?;
        let cat_bytes = map.get("update.cat").map(|(_, b)| b.clone());
        let mut components = Vec::new();
        for (key, (stored, bytes)) in &map {
            // Component manifests sit at the cab root; a `.manifest` below a keyform folder
            // is payload (an application manifest, say).
            if !key.ends_with(".manifest") || key.contains('/') {
                continue;
            }
            if components.len() >= MAX_COMPONENTS {
                return Err(perr(format!(
                    "more than {MAX_COMPONENTS} component manifests"
                )));
            }
            let c = manifest::parse(&format!("{cab}:{stored}"), bytes)?;
            components.push((c, bytes.clone()));
        }
        Ok(LoadedPackage {
            name: name.to_string(),
            part,
            cab: cab.to_string(),
            manifest,
            mum_bytes,
            cat_bytes,
            components,
            members: map,
        })
    }
}

/// Read a resolved package's cab.
pub fn load(resolved: &ResolvedPackage) -> Result<LoadedPackage> {
    let file = resolved
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cab_name = match resolved.part {
        Part::Neutral => file,
        Part::LanguagePack => {
            let lang = resolved
                .path
                .parent()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{lang}\\{file}")
        }
    };
    let members = cab::extract_all(&resolved.path)?;
    LoadedPackage::from_members(&resolved.name, resolved.part, &cab_name, members)
}

/// Settings of the projection.
#[derive(Debug, Clone)]
pub struct ProjectOptions {
    /// Build time as a FILETIME: file times, key times and InstallTimeHigh/Low.
    pub timestamp: u64,
    /// InstallClient value.
    pub install_client: String,
}

impl Default for ProjectOptions {
    fn default() -> Self {
        ProjectOptions {
            timestamp: 0,
            install_client: "DISM Package Manager Provider".into(),
        }
    }
}

/// A driver package for the driver injector.
#[derive(Debug, Clone)]
pub struct DriverPayload {
    /// Package identity string.
    pub package: String,
    /// The INF file name.
    pub inf: String,
    /// Every file of the component: (name, bytes).
    pub files: Vec<(String, Content)>,
}

impl serde::Serialize for DriverPayload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let files: Vec<(&str, u64)> = self
            .files
            .iter()
            .map(|(n, c)| (n.as_str(), c.len()))
            .collect();
        let mut st = s.serialize_struct("DriverPayload", 3)?;
        st.serialize_field("package", &self.package)?;
        st.serialize_field("inf", &self.inf)?;
        st.serialize_field("files", &files)?;
        st.end()
    }
}

/// What one package did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackageReport {
    pub identity: String,
    pub name: String,
    pub language_pack: bool,
    pub cab: String,
    /// Keyforms of the components put into the store.
    pub components: Vec<String>,
    pub files: Vec<String>,
    pub directories: Vec<String>,
    pub registry_values: Vec<String>,
    pub services: Vec<String>,
    /// Driver components handed to the driver injector.
    pub drivers: Vec<String>,
    /// Components already in the store (from the image or an earlier package): kept as is.
    pub already_present: Vec<String>,
    /// Every element that was not applied, one line each.
    pub not_applied: Vec<String>,
}

/// What servicing did, for the build report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServicingReport {
    pub packages: Vec<PackageReport>,
    /// Packages given twice or already installed, applied once.
    pub skipped: Vec<String>,
    pub driver_payloads: Vec<DriverPayload>,
    /// What offline DISM writes that this projection does not.
    pub limitations: Vec<String>,
}

impl ServicingReport {
    /// True when no package element was left unapplied.
    pub fn fully_applied(&self) -> bool {
        self.packages.iter().all(|p| p.not_applied.is_empty())
    }
}

/// A descriptor resolved for a component: bytes, or inherit from the parent.
fn descriptor(c: &Component, name: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let text = c
        .sddl
        .get(name)
        .map(String::as_str)
        .or_else(|| WRP_DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s))
        .ok_or_else(|| {
            format!("security descriptor {name:?} is neither defined in the manifest's trustInfo nor a known WRP default")
        })?;
    if text.eq_ignore_ascii_case("(inherit)") {
        return Ok(None);
    }
    sddl::parse(text)
        .map(Some)
        .map_err(|e| format!("descriptor {name}: {e}"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}\\{name}")
    }
}

/// One planned file of a component.
struct PlannedFile {
    name: String,
    /// `None`: component store only.
    destination: Option<String>,
    bytes: Vec<u8>,
    security: Option<Vec<u8>>,
}

/// A registry key to write: hive, mapped key path, values, key descriptor.
struct PlannedKey {
    hive: HiveName,
    path: String,
    values: Vec<manifest::RegValue>,
    security: Option<Vec<u8>>,
}

struct PlannedComponent {
    keyform: String,
    manifest_bytes: Vec<u8>,
    files: Vec<PlannedFile>,
    /// (destination, descriptor)
    directories: Vec<(String, Option<Vec<u8>>)>,
    registry: Vec<PlannedKey>,
    services: Vec<manifest::Service>,
    driver: Option<DriverPayload>,
}

struct PlannedPackage<'a> {
    pkg: &'a LoadedPackage,
    components: Vec<PlannedComponent>,
    report: PackageReport,
}

fn find_payload<'a>(
    pkg: &'a LoadedPackage,
    keyform: &str,
    f: &manifest::FileEntry,
) -> Option<(&'a String, &'a Vec<u8>)> {
    let src = f.source_name.replace('\\', "/").to_ascii_lowercase();
    let sp = f
        .source_path
        .replace('\\', "/")
        .trim_matches('/')
        .trim_start_matches("./")
        .to_ascii_lowercase();
    let mut cands = vec![format!("{keyform}/{src}")];
    if !sp.is_empty() && sp != "." {
        cands.push(format!("{sp}/{src}"));
    }
    cands.push(src);
    cands
        .iter()
        .find_map(|c| pkg.members.get_key_value(c))
        .map(|(k, (_, b))| (k, b))
}

/// Map `CurrentControlSet` (any case) at the start of a SYSTEM path to the control set.
fn map_control_set(path: &str, cs: &str) -> String {
    let (first, rest) = path.split_once('\\').unwrap_or((path, ""));
    if first.eq_ignore_ascii_case("CurrentControlSet") {
        if rest.is_empty() {
            cs.to_string()
        } else {
            format!("{cs}\\{rest}")
        }
    } else {
        path.to_string()
    }
}

fn plan_package<'a>(
    pkg: &'a LoadedPackage,
    cs: &str,
    tree: &Tree,
    taken: &mut BTreeSet<String>,
) -> Result<PlannedPackage<'a>> {
    let identity = pkg.identity();
    let mut report = PackageReport {
        identity: identity.clone(),
        name: pkg.name.clone(),
        language_pack: pkg.part == Part::LanguagePack,
        cab: pkg.cab.clone(),
        ..Default::default()
    };
    let mut used: BTreeSet<String> = ["update.mum".to_string(), "update.cat".to_string()]
        .into_iter()
        .collect();
    if pkg.cat_bytes.is_none() {
        report.not_applied.push(format!(
            "not applied: {PACKAGES_DIR}\\{identity}.cat (the cab has no update.cat) in {identity}"
        ));
    }
    let mut comps = Vec::new();
    let mut keyforms = BTreeSet::new();
    for (c, raw) in &pkg.components {
        used.insert(c.file.rsplit(':').next().unwrap_or("").to_ascii_lowercase());
        let cerr = |msg: String| Error::Component {
            package: identity.clone(),
            component: c.display(),
            msg,
        };
        let kf = keyform::keyform(&c.identity)?;
        if !keyforms.insert(kf.clone()) {
            return Err(cerr(format!("two manifests in the cab have keyform {kf}")));
        }
        let manifest_path = format!("{WINSXS_DIR}\\Manifests\\{kf}.manifest");
        if tree.lookup(&manifest_path).is_some() || !taken.insert(format!("keyform:{kf}")) {
            // A component shared with the image or an earlier package is installed once.
            report.already_present.push(kf);
            continue;
        }
        let mut files = Vec::new();
        for f in &c.files {
            let (member, bytes) = find_payload(pkg, &kf, f).ok_or_else(|| {
                cerr(format!(
                    "file {} (sourceName {}) is not in the cab (looked for {kf}\\{}, {}\\{} and {})",
                    f.name, f.source_name, f.source_name, f.source_path, f.source_name, f.source_name
                ))
            })?;
            used.insert(member.clone());
            if let Some(h) = &f.hash {
                if !h.matches(bytes) {
                    return Err(cerr(format!(
                        "file {}: {:?} digest does not match the payload in the cab; the package is damaged",
                        f.name, h.algorithm
                    )));
                }
            } else {
                report.not_applied.push(format!(
                    "not applied: hash check of {} (the manifest gives no <hash>) in {}",
                    f.name,
                    c.display()
                ));
            }
            let security = match &f.security {
                Some(n) => descriptor(c, n).map_err(|m| cerr(format!("file {}: {m}", f.name)))?,
                None => None,
            };
            files.push(PlannedFile {
                name: f.name.clone(),
                destination: f.destination.clone(),
                bytes: bytes.clone(),
                security,
            });
        }
        let driver = if c.is_driver() {
            let inf = c
                .files
                .iter()
                .find(|f| f.inf || f.name.to_ascii_lowercase().ends_with(".inf"))
                .map(|f| f.name.clone())
                .ok_or_else(|| cerr("a driver component without an .inf file".into()))?;
            report.drivers.push(format!(
                "{kf}: {inf} with {} files, {} registry keys, {} services handed to the driver injector",
                files.len(),
                c.registry.len(),
                c.services.len()
            ));
            Some(DriverPayload {
                package: identity.clone(),
                inf,
                files: files
                    .iter()
                    .map(|f| (f.name.clone(), Content::bytes(f.bytes.clone())))
                    .collect(),
            })
        } else {
            None
        };
        if driver.is_none() {
            for f in &files {
                let Some(folder) = &f.destination else {
                    continue;
                };
                let dest = join(folder, &f.name);
                if !taken.insert(dest.to_ascii_lowercase()) || tree.lookup(&dest).is_some() {
                    return Err(cerr(format!(
                        "file {dest} already exists in the image or in another component; replacing files is not supported"
                    )));
                }
                if let Some(p) = tree.lookup(folder) {
                    if !tree.node(p).is_dir {
                        return Err(cerr(format!("{folder} is a file, not a folder")));
                    }
                }
            }
        }
        let mut directories = Vec::new();
        let mut registry = Vec::new();
        let mut services = Vec::new();
        if driver.is_none() {
            for d in &c.directories {
                let sd = match &d.security {
                    Some(n) => descriptor(c, n)
                        .map_err(|m| cerr(format!("directory {}: {m}", d.destination)))?,
                    None => None,
                };
                if let Some(p) = tree.lookup(&d.destination) {
                    if !tree.node(p).is_dir {
                        return Err(cerr(format!("{} is a file, not a folder", d.destination)));
                    }
                }
                directories.push((d.destination.clone(), sd));
            }
            for k in &c.registry {
                let path = match k.hive {
                    HiveName::System => map_control_set(&k.path, cs),
                    HiveName::Software => k.path.clone(),
                };
                let sd = match &k.security {
                    Some(n) => {
                        descriptor(c, n).map_err(|m| cerr(format!("key {}: {m}", k.path)))?
                    }
                    None => None,
                };
                registry.push(PlannedKey {
                    hive: k.hive,
                    path,
                    values: k.values.clone(),
                    security: sd,
                });
            }
            services = c.services.clone();
        }
        report.not_applied.extend(c.not_applied.iter().cloned());
        report.components.push(kf.clone());
        comps.push(PlannedComponent {
            keyform: kf,
            manifest_bytes: raw.clone(),
            files,
            directories,
            registry,
            services,
            driver,
        });
    }
    for c in &pkg.manifest.components {
        let listed = pkg.components.iter().any(|(m, _)| {
            m.identity.name.eq_ignore_ascii_case(&c.name)
                && m.identity.version == c.version
                && m.identity
                    .processor_architecture
                    .eq_ignore_ascii_case(&c.processor_architecture)
        });
        if !listed {
            report.not_applied.push(format!(
                "not applied: {} {} listed in update.mum (no manifest for it in the cab) in {identity}",
                c.name, c.version
            ));
        }
    }
    for (k, (stored, _)) in &pkg.members {
        if !used.contains(k) {
            report.not_applied.push(format!(
                "not applied: cab member {stored} (no manifest refers to it) in {identity}"
            ));
        }
    }
    Ok(PlannedPackage {
        pkg,
        components: comps,
        report,
    })
}

/// Create missing folders of `path`; new ones take their parent's descriptor.
fn ensure_dir(t: &mut Tree, path: &str, ts: u64) -> std::result::Result<NodeId, tree::Error> {
    let mut cur = Tree::ROOT;
    for part in path.split('\\').filter(|p| !p.is_empty()) {
        cur = match t.child(cur, part) {
            Some(c) if t.node(c).is_dir => c,
            Some(c) => return Err(tree::Error::NotDir { path: t.path_of(c) }),
            None => {
                let meta = Meta {
                    security: t.node(cur).meta.security,
                    ..Meta::at(ts)
                };
                t.add_dir(cur, part, meta)?
            }
        };
    }
    Ok(cur)
}

fn put_file(
    t: &mut Tree,
    dir: &str,
    name: &str,
    bytes: &[u8],
    sd: Option<SecurityId>,
    ts: u64,
) -> std::result::Result<NodeId, tree::Error> {
    let d = ensure_dir(t, dir, ts)?;
    let meta = Meta {
        security: sd.or(t.node(d).meta.security),
        ..Meta::at(ts)
    };
    t.add_file(d, name, meta, Content::bytes(bytes.to_vec()))
}

fn show(v: &Value) -> String {
    match v.decode() {
        ValueData::Sz(s) => format!("sz:{s}"),
        ValueData::ExpandSz(s) => format!("expand_sz:{s}"),
        ValueData::MultiSz(m) => format!("multi_sz:{}", m.join(",")),
        ValueData::Dword(d) => format!("dword:{d:#010x}"),
        ValueData::Qword(q) => format!("qword:{q:#x}"),
        _ => format!("type {} ({} bytes)", v.data_type, v.data.len()),
    }
}

fn set_value(
    hive: &mut Hive,
    path: &str,
    v: &Value,
    append: bool,
    ts: u64,
) -> std::result::Result<(), regf::Error> {
    let k = hive.create_key(path, ts)?;
    let mut v = v.clone();
    if append {
        if let Some(ValueData::MultiSz(old)) = k.value(&v.name).map(Value::decode) {
            let ValueData::MultiSz(new) = v.decode() else {
                unreachable!("append is only set on REG_MULTI_SZ values")
            };
            let mut items = old.clone();
            for n in new {
                if !items.iter().any(|o| o.eq_ignore_ascii_case(&n)) {
                    items.push(n);
                }
            }
            let refs: Vec<&str> = items.iter().map(String::as_str).collect();
            v = Value::multi_sz(&v.name, &refs);
        }
    }
    k.set_value(v)?;
    // Windows stamps a key's last write time when one of its values changes.
    k.last_written = ts;
    Ok(())
}

/// Put the planned packages into copies of the tree and hives.
fn write_all(
    plans: &mut [PlannedPackage],
    tree: &mut Tree,
    system: &mut Hive,
    software: &mut Hive,
    cs: &str,
    opts: &ProjectOptions,
    drivers: &mut Vec<DriverPayload>,
) -> Result<()> {
    let ts = opts.timestamp;
    for plan in plans.iter_mut() {
        let identity = plan.report.identity.clone();
        let terr = |path: &str| {
            let package = identity.clone();
            let path = path.to_string();
            move |source| Error::Tree {
                package,
                path,
                source,
            }
        };
        let rerr = |path: &str| {
            let package = identity.clone();
            let path = path.to_string();
            move |source| Error::Registry {
                package,
                path,
                source,
            }
        };
        for c in &mut plan.components {
            let mdir = format!("{WINSXS_DIR}\\Manifests");
            put_file(
                tree,
                &mdir,
                &format!("{}.manifest", c.keyform),
                &c.manifest_bytes,
                None,
                ts,
            )
            .map_err(terr(&mdir))?;
            let sxs = format!("{WINSXS_DIR}\\{}", c.keyform);
            for f in &c.files {
                let sd = match &f.security {
                    Some(b) => Some(tree.add_security(b).map_err(terr(&f.name))?),
                    None => None,
                };
                let node = put_file(tree, &sxs, &f.name, &f.bytes, sd, ts).map_err(terr(&sxs))?;
                let Some(folder) = f.destination.as_deref().filter(|_| c.driver.is_none()) else {
                    plan.report.files.push(format!(
                        "{sxs}\\{} ({} bytes, component store only)",
                        f.name,
                        f.bytes.len()
                    ));
                    continue;
                };
                let d = ensure_dir(tree, folder, ts).map_err(terr(folder))?;
                if sd.is_none() {
                    // "(inherit)" or no descriptor: take the destination folder's.
                    let mut m = tree.node(node).meta.clone();
                    m.security = tree.node(d).meta.security;
                    tree.set_meta(node, m).map_err(terr(&f.name))?;
                }
                tree.add_hard_link(node, d, &f.name, None)
                    .map_err(terr(&join(folder, &f.name)))?;
                plan.report.files.push(format!(
                    "{} ({} bytes, linked to {sxs}\\{})",
                    join(folder, &f.name),
                    f.bytes.len(),
                    f.name
                ));
            }
            for (dest, sd) in &c.directories {
                let d = ensure_dir(tree, dest, ts).map_err(terr(dest))?;
                if let Some(b) = sd {
                    let id = tree.add_security(b).map_err(terr(dest))?;
                    let mut m = tree.node(d).meta.clone();
                    m.security = Some(id);
                    tree.set_meta(d, m).map_err(terr(dest))?;
                }
                plan.report.directories.push(dest.clone());
            }
            for PlannedKey {
                hive: hive_name,
                path,
                values,
                security: sd,
            } in &c.registry
            {
                let (hive, label) = match hive_name {
                    HiveName::System => (&mut *system, "SYSTEM"),
                    HiveName::Software => (&mut *software, "SOFTWARE"),
                };
                hive.create_key(path, ts).map_err(rerr(path))?;
                if let Some(b) = sd {
                    hive.set_security(path, b.clone()).map_err(rerr(path))?;
                }
                for v in values {
                    set_value(hive, path, &v.value, v.append, ts).map_err(rerr(path))?;
                    plan.report.registry_values.push(format!(
                        "{label}\\{path}!{} = {}",
                        v.value.name,
                        show(&v.value)
                    ));
                }
            }
            for s in &c.services {
                let path = format!("{cs}\\Services\\{}", s.name);
                system.create_key(&path, ts).map_err(rerr(&path))?;
                for v in &s.values {
                    set_value(system, &path, v, false, ts).map_err(rerr(&path))?;
                }
                plan.report.services.push(format!("SYSTEM\\{path}"));
            }
            if let Some(d) = c.driver.take() {
                drivers.push(d);
            }
        }
        // Package registration.
        let pkg = plan.pkg;
        put_file(
            tree,
            PACKAGES_DIR,
            &format!("{identity}.mum"),
            &pkg.mum_bytes,
            None,
            ts,
        )
        .map_err(terr(PACKAGES_DIR))?;
        if let Some(cat) = &pkg.cat_bytes {
            put_file(
                tree,
                PACKAGES_DIR,
                &format!("{identity}.cat"),
                cat,
                None,
                ts,
            )
            .map_err(terr(PACKAGES_DIR))?;
        }
        let key = format!("{CBS_KEY}\\Packages\\{identity}");
        let values = [
            Value::dword("CurrentState", STATE_INSTALLED),
            Value::sz("InstallClient", &opts.install_client),
            Value::sz("InstallName", &identity),
            Value::sz("InstallLocation", &pkg.cab),
            Value::dword("InstallTimeHigh", (ts >> 32) as u32),
            Value::dword("InstallTimeLow", ts as u32),
            Value::sz("InstallUser", "S-1-5-18"),
            Value::dword("SelfUpdate", 0),
            Value::dword("Visibility", 1),
        ];
        for v in values {
            set_value(software, &key, &v, false, ts).map_err(rerr(&key))?;
        }
        let owners = format!("{key}\\Owners");
        set_value(
            software,
            &owners,
            &Value::dword(&identity, OWNER_SELF),
            false,
            ts,
        )
        .map_err(rerr(&owners))?;
        let id = &pkg.manifest.identity;
        let index_name = mum::Identity {
            version: "0.0.0.0".into(),
            ..id.clone()
        }
        .package_string();
        let index = format!("{CBS_KEY}\\PackageIndex\\{index_name}");
        set_value(
            software,
            &index,
            &Value::new(&identity, REG_NONE, Vec::new()),
            false,
            ts,
        )
        .map_err(rerr(&index))?;
    }
    Ok(())
}

fn same_package(a: &mum::Identity, b: &mum::Identity) -> bool {
    let lang = |l: &str| {
        if l.eq_ignore_ascii_case("neutral") {
            String::new()
        } else {
            l.to_ascii_lowercase()
        }
    };
    a.name.eq_ignore_ascii_case(&b.name)
        && a.public_key_token.eq_ignore_ascii_case(&b.public_key_token)
        && a.processor_architecture
            .eq_ignore_ascii_case(&b.processor_architecture)
        && a.version == b.version
        && lang(&a.language) == lang(&b.language)
}

/// Apply packages to the tree and hives. Neutral packages keep the given order (the
/// resolver puts dependencies first); each language pack follows its neutral package, and a
/// package given twice or already installed is applied once. Errors leave everything as it was.
pub fn apply_packages(
    tree: &mut Tree,
    system: &mut Hive,
    software: &mut Hive,
    packages: &[LoadedPackage],
    opts: &ProjectOptions,
) -> Result<ServicingReport> {
    let mut report = ServicingReport {
        limitations: vec![
            "the COMPONENTS hive (component store index) is not written".into(),
            "the CBS Packages\\<identity>\\Updates subkey is not written (its form is not documented)".into(),
            "WinSxS\\Catalogs is not written".into(),
        ],
        ..Default::default()
    };
    // Order: each package once; a language pack right after its neutral package.
    let installed = |id: &str| {
        software
            .key(&format!("{CBS_KEY}\\Packages\\{id}"))
            .and_then(|k| k.value("CurrentState"))
            .is_some_and(|v| v.decode() == ValueData::Dword(STATE_INSTALLED))
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut neutrals: Vec<&LoadedPackage> = Vec::new();
    let mut langs: Vec<&LoadedPackage> = Vec::new();
    for p in packages {
        let id = p.identity();
        if !seen.insert(id.to_ascii_lowercase()) {
            report
                .skipped
                .push(format!("{id}: given more than once, applied once"));
            continue;
        }
        if installed(&id) {
            report
                .skipped
                .push(format!("{id}: already installed in the image"));
            continue;
        }
        match (&p.manifest.parent, p.part) {
            (Some(_), _) => langs.push(p),
            (None, Part::LanguagePack) => {
                return Err(Error::Package {
                    package: id,
                    msg: format!(
                        "{} is given as a language pack but its update.mum names no <parent>",
                        p.cab
                    ),
                })
            }
            (None, Part::Neutral) => neutrals.push(p),
        }
    }
    let mut order: Vec<&LoadedPackage> = Vec::new();
    for n in &neutrals {
        order.push(n);
        for l in &langs {
            if l.manifest
                .parent
                .as_ref()
                .is_some_and(|par| same_package(par, &n.manifest.identity))
            {
                order.push(l);
            }
        }
    }
    for l in &langs {
        if order.iter().any(|o| std::ptr::eq(*o, *l)) {
            continue;
        }
        let parent = l
            .manifest
            .parent
            .as_ref()
            .expect("language packs have a parent");
        if installed(&parent.package_string()) {
            order.push(l);
        } else {
            return Err(Error::Package {
                package: l.identity(),
                msg: format!(
                    "language pack {} needs its neutral package {}, which is neither given nor installed; add the neutral package",
                    l.cab,
                    parent.package_string()
                ),
            });
        }
    }
    // Validate and plan everything first.
    let cs = current_control_set(system);
    let mut taken = BTreeSet::new();
    let mut plans = Vec::new();
    for p in order {
        plans.push(plan_package(p, &cs, tree, &mut taken)?);
    }
    // Write into copies; replace the originals only when every step worked.
    let mut t2 = tree.clone();
    let mut s2 = system.clone();
    let mut w2 = software.clone();
    let mut drivers = Vec::new();
    write_all(
        &mut plans,
        &mut t2,
        &mut s2,
        &mut w2,
        &cs,
        opts,
        &mut drivers,
    )?;
    *tree = t2;
    *system = s2;
    *software = w2;
    report.driver_payloads = drivers;
    report.packages = plans.into_iter().map(|p| p.report).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_set_mapping() {
        assert_eq!(
            map_control_set("CurrentControlset\\Services\\x", "ControlSet002"),
            "ControlSet002\\Services\\x"
        );
        assert_eq!(map_control_set("Setup", "ControlSet001"), "Setup");
        assert_eq!(
            map_control_set("CurrentControlSet", "ControlSet001"),
            "ControlSet001"
        );
    }

    const MUM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">
  <assemblyIdentity name="Demo-Package" version="1.0.0.0" processorArchitecture="amd64" language="neutral" publicKeyToken="0000000000000000"/>
  <package identifier="Demo" releaseType="Feature Pack">
    <update name="a"><component><assemblyIdentity name="Demo-A" version="1.0.0.0" processorArchitecture="amd64" language="neutral" publicKeyToken="0000000000000000" versionScope="nonSxS"/></component></update>
    <update name="b"><component><assemblyIdentity name="Demo-Missing" version="1.0.0.0" processorArchitecture="amd64" language="neutral" publicKeyToken="0000000000000000"/></component></update>
  </package>
</assembly>"#;

    const MAN: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">
  <assemblyIdentity name="Demo-A" version="1.0.0.0" processorArchitecture="amd64" language="neutral" publicKeyToken="0000000000000000" versionScope="nonSxS"/>
  <file name="a.dll" destinationPath="$(runtime.system32)" sourceName="a.dll"><securityDescriptor name="INHERIT"/></file>
  <file name="store-only.dll" sourceName="store-only.dll"/>
  <registryKeys>
    <registryKey keyName="HKEY_LOCAL_MACHINE\SOFTWARE\Demo"><registryValue name="List" valueType="REG_MULTI_SZ" value="&quot;b&quot;,&quot;c&quot;" operationHint="append"/></registryKey>
  </registryKeys>
  <trustInfo><security><accessControl><securityDescriptorDefinitions>
    <securityDescriptorDefinition name="INHERIT" sddl="(inherit)"/>
  </securityDescriptorDefinitions></accessControl></security></trustInfo>
</assembly>"#;

    fn package() -> LoadedPackage {
        let id = demo_identity();
        let kf = keyform::keyform(&id).unwrap();
        LoadedPackage::from_members(
            "Demo",
            Part::Neutral,
            "Demo.cab",
            vec![
                ("update.mum".into(), MUM.as_bytes().to_vec()),
                (format!("{kf}.manifest"), MAN.as_bytes().to_vec()),
                (format!("{kf}/a.dll"), b"demo a".to_vec()),
                ("store-only.dll".into(), b"demo store".to_vec()),
                ("stray.txt".into(), b"demo stray".to_vec()),
            ],
        )
        .unwrap()
    }

    fn demo_identity() -> keyform::AssemblyIdentity {
        keyform::AssemblyIdentity {
            name: "Demo-A".into(),
            version: "1.0.0.0".into(),
            processor_architecture: "amd64".into(),
            language: "neutral".into(),
            public_key_token: "0000000000000000".into(),
            type_: String::new(),
            version_scope: "nonSxS".into(),
        }
    }

    #[test]
    fn inherit_store_only_append_and_unapplied_lines() {
        let mut t = Tree::new(Meta::at(1));
        let s32 = t.mkdir_p("Windows\\System32", &Meta::at(1)).unwrap();
        let sd = t
            .add_security(&sddl::parse("O:BAG:BAD:(A;;FA;;;BU)").unwrap())
            .unwrap();
        t.set_meta(
            s32,
            Meta {
                security: Some(sd),
                ..Meta::at(1)
            },
        )
        .unwrap();
        let mut sys = Hive::new_empty("SYSTEM", 1);
        let mut soft = Hive::new_empty("SOFTWARE", 1);
        soft.create_key("Demo", 1).unwrap();
        soft.set_value("Demo", Value::multi_sz("List", &["a", "B"]))
            .unwrap();
        let opts = ProjectOptions {
            timestamp: 7,
            ..Default::default()
        };
        let r = apply_packages(&mut t, &mut sys, &mut soft, &[package()], &opts).unwrap();
        // "(inherit)": the destination folder's descriptor.
        let a = t.lookup("Windows\\System32\\a.dll").unwrap();
        assert_eq!(t.node(a).meta.security, Some(sd));
        assert_eq!(t.node(a).links.len(), 2);
        // No destinationPath: in the store only.
        assert!(t.lookup("Windows\\System32\\store-only.dll").is_none());
        let kf = keyform::keyform(&demo_identity()).unwrap();
        assert!(t
            .lookup(&format!("Windows\\WinSxS\\{kf}\\store-only.dll"))
            .is_some());
        // Append keeps existing strings and adds the missing ones (case-insensitively).
        assert_eq!(
            soft.key("Demo").unwrap().value("List").unwrap().decode(),
            ValueData::MultiSz(vec!["a".into(), "B".into(), "c".into()])
        );
        let na = r.packages[0].not_applied.join("\n");
        for want in [
            "hash check of a.dll",
            "Demo-Missing 1.0.0.0 listed in update.mum",
            "cab member stray.txt",
            ".cat (the cab has no update.cat)",
        ] {
            assert!(na.contains(want), "{want} missing:\n{na}");
        }
        assert!(!r.fully_applied());
        let v = soft
            .key(&format!(
                "{CBS_KEY}\\Packages\\Demo-Package~0000000000000000~amd64~~1.0.0.0"
            ))
            .unwrap();
        assert_eq!(
            v.value("InstallTimeLow").unwrap().decode(),
            ValueData::Dword(7)
        );
        assert_eq!(
            v.value("InstallLocation").unwrap().decode(),
            ValueData::Sz("Demo.cab".into())
        );
    }

    #[test]
    fn wrp_defaults_parse() {
        for (n, s) in WRP_DEFAULTS {
            assert!(sddl::parse(s).is_ok(), "{n}");
        }
    }
}
