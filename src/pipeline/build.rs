//! `nanoforge build`: plan, then write. The plan resolves and hashes every input, picks the
//! image, orders the packages, services the Windows volume tree in memory (packages, drivers,
//! settings, copies, container base images), lays out the disk, derives every GUID and
//! builds the boot files; nothing is written before the whole plan succeeded. Writing puts
//! the output in a temporary file next to OUT and renames it when complete, then writes
//! `OUT.report.json` the same way.
//!
//! Output kinds follow the extension: `.vhdx` (GPT/UEFI, default), `.img` (raw), `.vhd`,
//! `.wim` (the serviced Windows volume as a one-image WIM).

use crate::containers;
use crate::core::output::PendingOutput;
use crate::core::time::unix_to_filetime;
use crate::core::units::Bytes;
use crate::formats::bcd::{self, Device};
use crate::formats::gpt::{GptLayout, Role, DEFAULT_MSR_SIZE};
use crate::formats::regf::Hive;
use crate::formats::wim::Wim;
use crate::image::ImageFormat;
use crate::pipeline::boot;
use crate::pipeline::config::{Config, Origin, Value};
use crate::pipeline::disk::{self, DiskPlan, DiskRequest, VolumeContent};
use crate::pipeline::seed::{self, SeedBuilder};
use crate::pipeline::settings::{self, Network, SecretSource, Settings, SettingsReport};
use crate::servicing::catalog::Catalog;
use crate::servicing::media::{self, Media};
use crate::servicing::resolve::{self, Part};
use crate::tree::wim as tree_wim;
use crate::tree::{Content, Meta, Tree};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ESP size of a build: the smallest FAT32 ESP with 512-byte sectors and 4 KiB clusters is
/// 260 MiB (65525 clusters), what Microsoft recommends for 4K-sector drives too.
pub const ESP_SIZE: u64 = 260 << 20;
/// SYSTEM and SOFTWARE hives inside the Windows volume.
pub const SYSTEM_HIVE: &str = "Windows\\System32\\config\\SYSTEM";
pub const SOFTWARE_HIVE: &str = "Windows\\System32\\config\\SOFTWARE";
/// Where staged `docker save` tarballs go inside the volume.
pub const DOCKER_STAGING: &str = "ProgramData\\nanoforge\\docker";
/// Largest file copied in with `copy_path` or staged (docker tarballs can be large, but
/// a whole-disk image pasted by mistake is refused).
const MAX_COPY_FILE: u64 = 64 << 30;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// What the build writes, from OUT's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Vhdx,
    Img,
    Vhd,
    Wim,
}

impl OutputKind {
    pub fn from_path(p: &Path) -> io::Result<OutputKind> {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        Ok(match ext.as_deref() {
            Some("vhdx") => OutputKind::Vhdx,
            Some("img") | Some("raw") => OutputKind::Img,
            Some("vhd") => OutputKind::Vhd,
            Some("wim") => OutputKind::Wim,
            _ => {
                return Err(invalid(format!(
                    "{}: the output's extension picks what is written: use .vhdx (UEFI VM disk), \
                     .img (raw, bare metal), .vhd or .wim",
                    p.display()
                )))
            }
        })
    }

    fn disk_format(self) -> Option<ImageFormat> {
        match self {
            OutputKind::Vhdx => Some(ImageFormat::Vhdx),
            OutputKind::Img => Some(ImageFormat::Raw),
            OutputKind::Vhd => Some(ImageFormat::Vhd),
            OutputKind::Wim => None,
        }
    }
}

/// One input file and its digest.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    pub role: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The Windows image picked from the media.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub wim: String,
    pub index: usize,
    pub name: String,
    pub edition_id: String,
    pub version: String,
    pub release: String,
    pub language: Option<String>,
}

/// A setting as the build used it.
#[derive(Debug, Clone, Serialize)]
pub struct SettingEntry {
    pub key: String,
    pub value: Value,
    pub origin: Origin,
}

/// One package cab in install order.
#[derive(Debug, Clone, Serialize)]
pub struct PackagePlan {
    pub name: String,
    pub part: String,
    pub cab: String,
}

/// The whole plan; `--dry-run` prints it, the report is it plus the output's digest.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub tool: String,
    pub output: PathBuf,
    pub kind: OutputKind,
    pub seed: String,
    pub source_date_epoch: i64,
    pub template: Option<String>,
    pub settings: Vec<SettingEntry>,
    pub media: String,
    pub image: ImagePlan,
    pub inputs: Vec<InputFile>,
    pub packages: Vec<PackagePlan>,
    pub servicing: crate::pipeline::service::Report,
    pub host_settings: SettingsReport,
    pub copies: Vec<String>,
    pub base_images: Vec<containers::StoreEntry>,
    /// Steps only Windows can do, and what was done about each.
    pub windows_only_steps: Vec<String>,
    pub wim_apply: tree_wim::WimApplyReport,
    /// Bytes of file data in the Windows volume.
    pub volume_data_bytes: u64,
    pub disk: Option<DiskPlan>,
    pub notes: Vec<String>,
    #[serde(skip)]
    tree: Option<Tree>,
    #[serde(skip)]
    request: Option<DiskRequest>,
    #[serde(skip)]
    image_info: crate::formats::wim::ImageInfo,
    #[serde(skip)]
    seed_bytes: Vec<u8>,
    /// Keeps generated demo media alive until the build is written.
    #[serde(skip)]
    _demo: Option<(tempfile::TempDir, Option<crate::core::output::PendingDir>)>,
}

/// The report written next to the output.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    #[serde(flatten)]
    pub plan: &'a Plan,
    pub output_bytes: u64,
    pub output_sha256: String,
}

/// Progress callbacks of a build (the CLI draws bars; tests pass no-ops).
pub trait Progress {
    /// A phase starts; `total` bytes of work when known.
    fn phase(&self, name: &str, total: u64);
    /// `n` more bytes of the current phase are done.
    fn advance(&self, n: u64);
    /// A line of detail (`-v`).
    fn detail(&self, line: &str);
    /// A callback for the current phase that other threads may hold.
    fn hook(&self) -> crate::formats::ntfs::ProgressHook {
        Default::default()
    }
}

/// Progress that shows nothing.
pub struct Silent;
impl Progress for Silent {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn detail(&self, _: &str) {}
}

/// Everything a build needs besides the settings.
pub struct BuildRequest<'a> {
    pub config: &'a Config,
    pub template: Option<PathBuf>,
    pub output: PathBuf,
    pub force: bool,
    /// Unix seconds (SOURCE_DATE_EPOCH).
    pub time: i64,
    pub progress: &'a dyn Progress,
}

fn sha256_file(path: &Path, progress: &dyn Progress) -> io::Result<(u64, String)> {
    crate::core::checksum::sha256_file(path, &|n| progress.advance(n))
}

/// Choose the image of NanoServer.wim: an index, an edition word (matched against EDITIONID,
/// e.g. ServerDatacenterNano), or an image name.
pub fn pick_image(path: &Path, wim: &Wim, edition: &str) -> io::Result<usize> {
    if let Ok(i) = edition.parse::<usize>() {
        disk::check_image_index(path, wim, i)?;
        return Ok(i);
    }
    let want = edition.to_ascii_lowercase();
    let images = wim.images();
    let by_edition: Vec<usize> = images
        .iter()
        .filter(|im| {
            im.edition_id
                .as_deref()
                .map(|e| e.to_ascii_lowercase().contains(&want))
                .unwrap_or(false)
        })
        .map(|im| im.index as usize)
        .collect();
    if by_edition.len() == 1 {
        return Ok(by_edition[0]);
    }
    if let Some(im) = images.iter().find(|im| {
        im.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(edition))
    }) {
        return Ok(im.index as usize);
    }
    let have: Vec<String> = images
        .iter()
        .map(|im| {
            format!(
                "{} = {} ({})",
                im.index,
                im.name.as_deref().unwrap_or("?"),
                im.edition_id.as_deref().unwrap_or("no edition id")
            )
        })
        .collect();
    Err(invalid(format!(
        "{}: no image matches edition {edition:?}; the file holds {}; set --edition to one of \
         them",
        path.display(),
        have.join(", ")
    )))
}

/// The media release from the image's build number (TP3 10514, TP4 10586, TP5 14300,
/// RTM 14393: the published build numbers of those releases).
pub fn release_of(build: Option<u32>) -> Option<&'static str> {
    match build? {
        10514 => Some("TP3"),
        10586 => Some("TP4"),
        14300 => Some("TP5"),
        14393 => Some("RTM"),
        _ => None,
    }
}

/// The packages the settings ask for, by short name, in the order given.
pub fn requested_packages(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    match c.text("deployment_type") {
        Some("host") => out.push("Host".to_string()),
        _ => out.push("Guest".to_string()),
    }
    for (key, name) in [
        ("compute", "Compute"),
        ("oem_drivers", "OEM-Drivers"),
        ("storage", "Storage"),
        ("clustering", "FailoverCluster"),
        ("defender", "Defender"),
        ("containers", "Containers"),
    ] {
        if c.flag(key) {
            out.push(name.to_string());
        }
    }
    for p in c.list("package") {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(p)) {
            out.push(p.clone());
        }
    }
    out
}

/// Split `FILE:INDEX`; a trailing `:N` is an index only when N is a number.
fn wim_ref(s: &str) -> (PathBuf, Option<usize>) {
    if let Some((f, i)) = s.rsplit_once(':') {
        if let Ok(n) = i.parse::<usize>() {
            return (PathBuf::from(f), Some(n));
        }
    }
    (PathBuf::from(s), None)
}

/// Host settings of the build, from the config.
fn host_settings(c: &Config, time: i64) -> io::Result<Settings> {
    let mut s = Settings {
        computer_name: c.text("computer_name").map(str::to_string),
        time_zone: c.text("time_zone").map(str::to_string),
        registered_owner: c.text("registered_owner").map(str::to_string),
        registered_organization: c.text("registered_organization").map(str::to_string),
        unattend_file: c.text("unattend").map(PathBuf::from),
        remote_management: c.flag("enable_remote_management_port"),
        setup_commands: c.list("setup_complete_command").to_vec(),
        development: c.flag("development"),
        timestamp: unix_to_filetime(time),
        ..Settings::default()
    };
    let sources = [
        c.text("admin_password_file")
            .map(|p| SecretSource::File(PathBuf::from(p))),
        c.text("admin_password_env")
            .map(|v| SecretSource::Env(v.to_string())),
        c.flag("admin_password_prompt")
            .then_some(SecretSource::Prompt),
    ];
    let mut given = sources.into_iter().flatten();
    s.admin_password = given.next();
    if given.next().is_some() {
        return Err(invalid(
            "give the Administrator password one way only: admin_password_file, \
             admin_password_env or admin_password_prompt",
        ));
    }
    s.domain_join_blob = c
        .text("domain_blob")
        .map(|p| SecretSource::File(PathBuf::from(p)));
    if let Some(iface) = c.text("interface") {
        s.network = Some(Network {
            interface: iface.to_string(),
            ipv4_address: c.text("ipv4_address").map(str::to_string),
            ipv4_mask: c.text("ipv4_subnet_mask").map(str::to_string),
            ipv4_gateway: c.text("ipv4_gateway").map(str::to_string),
            ipv4_dns: c.list("ipv4_dns").to_vec(),
            ipv6_address: c.text("ipv6_address").map(str::to_string),
            ipv6_dns: c.list("ipv6_dns").to_vec(),
        });
    } else if [
        "ipv4_address",
        "ipv4_subnet_mask",
        "ipv4_gateway",
        "ipv6_address",
    ]
    .iter()
    .any(|k| c.text(k).is_some())
        || !c.list("ipv4_dns").is_empty()
        || !c.list("ipv6_dns").is_empty()
    {
        return Err(invalid(
            "static addresses need --interface (the interface name Windows shows, e.g. Ethernet)",
        ));
    }
    s.load_secrets().map_err(|e| invalid(e.to_string()))?;
    Ok(s)
}

/// EMS and debugger settings of the BCD store.
fn boot_settings(c: &Config, opts: &mut bcd::BuildOptions) -> io::Result<()> {
    let int = |k: &str| -> io::Result<u32> {
        let v = c
            .int(k)
            .ok_or_else(|| invalid(format!("{k} is needed by the debug_method chosen")))?;
        u32::try_from(v).map_err(|_| invalid(format!("{k} {v} is too large")))
    };
    if c.flag("ems") {
        opts.ems = Some(bcd::Ems {
            port: int("ems_port")?,
            baud: int("ems_baud_rate")?,
        });
    }
    use bcd::Debugger;
    opts.debugger = match c.text("debug_method") {
        None | Some("none") => None,
        Some("serial") => Some(Debugger::Serial {
            port: int("debug_port")?,
            baud: int("debug_baud_rate")?,
        }),
        Some("net") => {
            let host = c
                .text("debug_remote_ip")
                .ok_or_else(|| invalid("debug_method net needs debug_remote_ip"))?;
            let host = host
                .parse()
                .map_err(|_| invalid(format!("debug_remote_ip {host:?} is not an IPv4 address")))?;
            let key_file = c
                .text("debug_key_file")
                .ok_or_else(|| invalid("debug_method net needs debug_key_file"))?;
            let key = settings::Secret::from_file("debugger key", Path::new(key_file))
                .map_err(|e| invalid(e.to_string()))?;
            let port = u16::try_from(int("debug_port")?)
                .map_err(|_| invalid("debug_port is above 65535"))?;
            Some(Debugger::Net {
                host,
                port,
                key: key.expose().to_string(),
            })
        }
        Some("1394") => Some(Debugger::Ieee1394 {
            channel: int("debug_channel")?,
        }),
        Some("usb") => Some(Debugger::Usb {
            target: c
                .text("debug_target_name")
                .ok_or_else(|| invalid("debug_method usb needs debug_target_name"))?
                .to_string(),
        }),
        Some(other) => return Err(invalid(format!("unknown debug_method {other}"))),
    };
    Ok(())
}

fn read_hive(tree: &Tree, path: &str) -> io::Result<Hive> {
    let id = tree.lookup(path).ok_or_else(|| {
        invalid(format!(
            "the Windows image has no {path}; is it a Windows image at all?"
        ))
    })?;
    let bytes = tree.node(id).data.content.read_all()?;
    Hive::parse(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} in the image: {e}"),
        )
    })
}

fn write_hive(tree: &mut Tree, path: &str, hive: &Hive) -> io::Result<()> {
    let id = tree.lookup(path).expect("read before");
    let bytes = hive
        .to_bytes()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
    tree.set_data(id, Content::bytes(bytes))
        .map_err(|e| invalid(format!("{path}: {e}")))
}

/// Copy a host file or folder into the tree at `dest` (a path inside the volume).
fn copy_into(tree: &mut Tree, src: &Path, dest: &str, meta: &Meta) -> io::Result<()> {
    let dest = dest
        .trim_matches(|c| c == '\\' || c == '/')
        .replace('/', "\\");
    let md = std::fs::metadata(src)
        .map_err(|e| io::Error::new(e.kind(), format!("copy_path {}: {e}", src.display())))?;
    let err = |e: crate::tree::Error| invalid(format!("copy_path {} → {dest}: {e}", src.display()));
    if md.is_dir() {
        let sub = Tree::from_host_dir(
            src,
            &crate::tree::host::HostOptions {
                time: meta.creation_time,
                symlinks: true,
                case_sensitive: false,
                windows_names: true,
            },
        )
        .map_err(|e| invalid(format!("copy_path {}: {e}", src.display())))?;
        tree.graft(&dest, &sub).map_err(err)?;
    } else {
        if md.len() > MAX_COPY_FILE {
            return Err(invalid(format!(
                "copy_path {}: {} is above the {} limit of one copied file",
                src.display(),
                Bytes(md.len()),
                Bytes(MAX_COPY_FILE)
            )));
        }
        let (parent, name) = match dest.rsplit_once('\\') {
            Some((p, n)) => (tree.mkdir_p(p, meta).map_err(err)?, n.to_string()),
            None => (Tree::ROOT, dest.clone()),
        };
        if name.is_empty() {
            return Err(invalid(format!(
                "copy_path {}: empty destination",
                src.display()
            )));
        }
        tree.add_file(
            parent,
            &name,
            meta.clone(),
            Content::HostFile(src.to_path_buf(), md.len()),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Plan the build: everything but writing the output.
pub fn plan(req: &BuildRequest) -> io::Result<Plan> {
    let c = req.config;
    let p = req.progress;
    let kind = OutputKind::from_path(&req.output)?;
    crate::core::output::check_dest(&req.output, req.force)?;
    let filetime = unix_to_filetime(req.time);
    let mut notes = Vec::new();
    if kind == OutputKind::Vhd {
        notes.push(
            "the .vhd holds a GPT disk that boots with UEFI only; BIOS boot (MBR, bootmgr) is not \
             provided yet"
                .to_string(),
        );
    }
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();

    // Media.
    p.phase("media", 0);
    let media_arg = c.text("media").ok_or_else(|| {
        invalid("no media: pass --media DIR (the installation media root) or --media demo")
    })?;
    let mut demo_guard = None;
    let (root, demo) = if media_arg == "demo" {
        let dir = tempfile::Builder::new()
            .prefix(".nanoforge-demo-media-")
            .tempdir()?;
        let guard = crate::core::output::PendingDir::register(dir.path());
        crate::pipeline::demo::write_media(dir.path(), &Default::default())?;
        demo_guard = Some(guard);
        notes.push(
            "media: the built-in demo media (synthetic files made by nanoforge, not Microsoft's)"
                .into(),
        );
        (dir.path().to_path_buf(), Some(dir))
    } else {
        (PathBuf::from(media_arg), None)
    };
    if let Some(lock) = c.text("locked") {
        let text = media::read_lock(Path::new(lock)).map_err(io::Error::from)?;
        media::verify_lock(&root, &text).map_err(io::Error::from)?;
    }
    let m = Media::open(&root, c.text("language")).map_err(io::Error::from)?;
    inputs.push(("windows image".into(), m.wim.clone()));
    let wim = Arc::new(Wim::open(&m.wim).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", m.wim.display()),
        )
    })?);
    let edition = c.text("edition").unwrap_or("Datacenter");
    let index = pick_image(&m.wim, &wim, edition)?;
    let info = wim.images()[index - 1].clone();
    let release = match c.text("release") {
        Some("auto") | None => release_of(info.version_build).ok_or_else(|| {
            invalid(format!(
                "{}: image {index} has build {:?}, not a known Nano Server release; set --release",
                m.wim.display(),
                info.version_build
            ))
        })?,
        Some(r) => r,
    };
    let edition_word = info
        .edition_id
        .as_deref()
        .map(|e| {
            if e.to_ascii_lowercase().contains("standard") {
                "Standard"
            } else {
                "Datacenter"
            }
        })
        .unwrap_or("Datacenter");

    // Packages.
    let catalog = Catalog::embedded().map_err(io::Error::from)?;
    let resolved = resolve::resolve(
        &resolve::Request {
            packages: requested_packages(c),
            edition: edition_word.into(),
            release: release.into(),
        },
        &catalog,
        &m,
    )
    .map_err(|e| invalid(e.to_string()))?;
    let packages: Vec<PackagePlan> = resolved
        .iter()
        .map(|r| PackagePlan {
            name: r.name.clone(),
            part: match r.part {
                Part::Neutral => "neutral".into(),
                Part::LanguagePack => "language pack".into(),
            },
            cab: shown_path(&r.path, demo.as_ref().map(|d| d.path())),
        })
        .collect();
    for r in &resolved {
        inputs.push((format!("package {}", r.name), r.path.clone()));
    }
    for s in c.list("servicing_package") {
        inputs.push(("servicing package".into(), PathBuf::from(s)));
    }
    for d in c.list("driver") {
        inputs.push(("driver".into(), PathBuf::from(d)));
    }
    let mut bases = Vec::new();
    for b in c.list("base_image") {
        let (path, idx) = wim_ref(b);
        let path = match path.to_str().and_then(|s| s.strip_prefix("media:")) {
            Some(rel) => root.join(rel),
            None => path,
        };
        inputs.push(("container base image".into(), path.clone()));
        bases.push((path, idx));
    }
    for d in c.list("docker_image") {
        inputs.push(("docker image".into(), PathBuf::from(d)));
    }
    for k in ["unattend", "locked"] {
        if let Some(f) = c.text(k) {
            inputs.push((k.replace('_', " "), PathBuf::from(f)));
        }
    }
    let mut copies = Vec::new();
    for cp in c.list("copy_path") {
        let (src, dest) = cp.split_once('=').ok_or_else(|| {
            invalid(format!(
                "copy_path {cp:?}: write SRC=DEST, DEST being a path inside the Windows volume"
            ))
        })?;
        copies.push((PathBuf::from(src), dest.to_string()));
    }
    if let Some(t) = &req.template {
        inputs.push(("template".into(), t.clone()));
    }

    // Hash every input (folders: every file below them).
    for (src, _) in &copies {
        inputs.push(("copied".into(), src.clone()));
    }
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    for (role, path) in &inputs {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("{role} {}: {e}", path.display()));
        let md = std::fs::metadata(path).map_err(named)?;
        if md.is_dir() {
            for rel in media::all_files(path).map_err(io::Error::from)? {
                let f = path.join(rel);
                let len = std::fs::metadata(&f).map_err(named)?.len();
                files.push((role.clone(), f, len));
            }
        } else {
            files.push((role.clone(), path.clone(), md.len()));
        }
    }
    // Hash the inputs on a thread of their own while the trees are read: nothing needs the
    // seed before the store's blank.vhdx.
    let demo_root = demo.as_ref().map(|d| d.path().to_path_buf());
    let hashing = std::thread::Builder::new()
        .name("input-hashes".into())
        .spawn(move || -> io::Result<Vec<InputFile>> {
            files
                .into_iter()
                .map(|(role, f, _)| {
                    let (bytes, sha256) = crate::core::checksum::sha256_file(&f, &|_| {})?;
                    Ok(InputFile {
                        role,
                        path: shown_path(&f, demo_root.as_deref()),
                        bytes,
                        sha256,
                    })
                })
                .collect()
        })?;
    let mut pending = Some(hashing);
    let mut settled: Option<(Vec<InputFile>, Vec<u8>)> = None;
    let mut seed_now = || -> io::Result<Vec<u8>> {
        if let Some(h) = pending.take() {
            if !h.is_finished() {
                p.phase("hashing inputs", 0);
            }
            let hashed = h
                .join()
                .map_err(|_| io::Error::other("the input hashing thread stopped"))??;
            // Seed: every setting (secrets by source only) and every input digest.
            let mut sb = SeedBuilder::new("build");
            for (k, v, _) in c.entries() {
                sb.add(k, serde_json::to_string(v).unwrap_or_default().as_bytes());
            }
            for f in &hashed {
                sb.add(&f.role, f.sha256.as_bytes());
            }
            sb.add("output kind", format!("{kind:?}").as_bytes());
            let seed = seed::resolve(c.text("seed"), sb);
            settled = Some((hashed, seed));
        }
        settled
            .as_ref()
            .map(|(_, seed)| seed.clone())
            .ok_or_else(|| io::Error::other("the input hashes were not kept"))
    };

    // The Windows volume.
    p.phase("reading image", 0);
    let mut tree = Tree::new(Meta::at(filetime));
    let wim_apply = tree_wim::add_image(&mut tree, Tree::ROOT, &wim, index)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", m.wim.display())))?;
    if wim_apply.encrypted_skipped > 0 {
        notes.push(format!(
            "{} encrypted files of the image were left out (EFS data cannot be re-encrypted offline)",
            wim_apply.encrypted_skipped
        ));
    }
    if wim_apply.compressed_written_plain > 0 {
        notes.push(format!(
            "{} files marked compressed were written uncompressed",
            wim_apply.compressed_written_plain
        ));
    }
    let mut system = read_hive(&tree, SYSTEM_HIVE)?;
    let mut software = read_hive(&tree, SOFTWARE_HIVE)?;

    p.phase("servicing", 0);
    let svc_opts = crate::pipeline::service::Options {
        allow_partial: c.flag("allow_partial_servicing"),
        first_boot: c.flag("first_boot_servicing"),
        time: filetime,
        drivers: c.list("driver").iter().map(PathBuf::from).collect(),
        servicing_packages: c
            .list("servicing_package")
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let servicing = crate::pipeline::service::apply(
        &mut tree,
        &mut system,
        &mut software,
        &resolved,
        &svc_opts,
        p,
    )?;

    // Copies, staged tarballs, the store, then settings (whose first-boot script lists the
    // staged work).
    let meta = Meta::at(filetime);
    let mut copied = Vec::new();
    for (src, dest) in &copies {
        copy_into(&mut tree, src, dest, &meta)?;
        copied.push(format!("{} → {dest}", src.display()));
    }
    let mut host = host_settings(c, req.time)?;
    host.setup_commands
        .splice(0..0, servicing.first_boot_commands.clone());
    for d in c.list("docker_image") {
        let src = Path::new(d);
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = format!("{DOCKER_STAGING}\\{name}");
        copy_into(&mut tree, src, &dest, &meta)?;
        host.setup_commands
            .push(format!("docker load -i \"C:\\{dest}\""));
        copied.push(format!(
            "{} → {dest} (loaded by docker at first boot)",
            src.display()
        ));
    }
    let opened = bases
        .iter()
        .map(|(path, idx)| {
            let w = Wim::open(path).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            let i = idx.unwrap_or(1);
            disk::check_image_index(path, &w, i)?;
            Ok((path.clone(), Arc::new(w), i))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let base_images = containers::add_base_images(&mut tree, &opened, filetime, &mut seed_now)?;
    let seed_bytes = seed_now()?;
    let hashed = settled.map(|(h, _)| h).unwrap_or_default();
    let mut windows_only_steps = Vec::new();
    if !base_images.is_empty() {
        windows_only_steps.push(
            "code-integrity cache of the base images' files: Windows builds it itself when each \
             binary is first loaded; nothing to do offline"
                .to_string(),
        );
        if base_images.iter().any(|b| b.utility_vm) {
            windows_only_steps.push(if c.flag("first_boot_container_setup") {
                "utility-VM template disks: prepared at first boot by restarting the Hyper-V \
                 management service (scripted in SetupComplete.cmd)"
                    .to_string()
            } else {
                "utility-VM template disks: not prepared; Windows prepares them when the Hyper-V \
                 management service starts (--first-boot-container-setup scripts a restart)"
                    .to_string()
            });
        }
        if c.flag("first_boot_container_setup") {
            host.setup_commands
                .push("sc.exe stop vmms & sc.exe start vmms".to_string());
            windows_only_steps.push(
                "image list: the store is read when the Hyper-V management service starts; \
                 restarted at first boot"
                    .to_string(),
            );
        }
    } else if c.flag("first_boot_container_setup") {
        notes.push("first_boot_container_setup has no effect: no base images".into());
    }
    let host_report = settings::apply(&host, &mut tree, &mut system, &mut software)
        .map_err(|e| invalid(e.to_string()))?;
    write_hive(&mut tree, SYSTEM_HIVE, &system)?;
    write_hive(&mut tree, SOFTWARE_HIVE, &software)?;
    let volume_data_bytes: u64 = tree.nodes().map(|(_, n)| n.data.content.len()).sum();

    let image = ImagePlan {
        wim: hashed.first().map(|f| f.path.clone()).unwrap_or_default(),
        index,
        name: info.name.clone().unwrap_or_default(),
        edition_id: info.edition_id.clone().unwrap_or_default(),
        version: format!(
            "{}.{}.{}.{}",
            info.version_major.unwrap_or(0),
            info.version_minor.unwrap_or(0),
            info.version_build.unwrap_or(0),
            info.version_spbuild.unwrap_or(0)
        ),
        release: release.to_string(),
        language: m.language.as_ref().map(|(l, _)| l.clone()),
    };

    // The disk.
    let (disk_plan, request, tree) = match kind.disk_format() {
        Some(format) => {
            let size = c.int("size").unwrap_or(4 << 30);
            let sector: u64 = c
                .text("sector_size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(512);
            let cluster = u32::try_from(c.int("cluster_size").unwrap_or(4096))
                .map_err(|_| invalid("cluster_size is too large"))?;
            let dreq = DiskRequest {
                output: req.output.clone(),
                format,
                size,
                sector_size: sector,
                fixed: c.flag("fixed"),
                block_size: None,
                esp_size: ESP_SIZE,
                msr_size: DEFAULT_MSR_SIZE,
                esp_dir: None,
                windows_wim: None,
                base_images: Vec::new(),
                case_sensitive: false,
                cluster_size: cluster,
                seed: c.text("seed").map(str::to_string),
                time: req.time,
                force: req.force,
                progress: Default::default(),
                // The report carries the output's SHA-256.
                digest: true,
            };
            let mut bopts =
                bcd::BuildOptions::new(Device::Boot, Device::Boot, &seed_bytes, filetime);
            bopts.test_signing = host_report.test_signing;
            boot_settings(c, &mut bopts)?;
            let esp = |layout: &GptLayout, t: Option<&Tree>| {
                let part = |r: Role| Device::GptPartition {
                    disk: layout.disk_guid,
                    partition: layout.partition(r).expect("layout has it").part_guid,
                };
                let mut o = bopts.clone();
                o.esp = part(Role::Esp);
                o.windows = part(Role::Windows);
                boot::boot_files(t.expect("a build always has a volume"), &o)
            };
            let dp = disk::plan_with(
                &dreq,
                seed_bytes.clone(),
                Some(VolumeContent {
                    tree,
                    wim: Some(wim_apply.clone()),
                    base_images: base_images.clone(),
                }),
                &esp,
            )?;
            (Some(dp), Some(dreq), None)
        }
        None => (None, None, Some(tree)),
    };

    Ok(Plan {
        tool: format!("nanoforge {}", env!("CARGO_PKG_VERSION")),
        output: req.output.clone(),
        kind,
        seed: seed::hex(&seed_bytes),
        source_date_epoch: req.time,
        template: req.template.as_ref().map(|t| t.display().to_string()),
        settings: c
            .entries()
            .into_iter()
            .map(|(k, v, o)| SettingEntry {
                key: k.to_string(),
                value: v.clone(),
                origin: o,
            })
            .collect(),
        media: if demo.is_some() {
            "demo".into()
        } else {
            root.display().to_string()
        },
        image,
        inputs: hashed,
        packages,
        servicing,
        host_settings: host_report,
        copies: copied,
        base_images,
        windows_only_steps,
        wim_apply,
        volume_data_bytes,
        disk: disk_plan,
        notes,
        tree,
        request,
        image_info: info,
        seed_bytes,
        _demo: demo.map(|d| (d, demo_guard)),
    })
}

/// How a path appears in the plan: files of the generated demo media as `demo:REL`, so
/// reports do not name a temporary folder.
fn shown_path(p: &Path, demo: Option<&Path>) -> String {
    match demo.and_then(|d| p.strip_prefix(d).ok()) {
        Some(rel) => format!("demo:{}", rel.display()),
        None => p.display().to_string(),
    }
}

/// Write the planned output and its report; returns the output's size and SHA-256.
pub fn write(plan: &Plan, progress: &dyn Progress) -> io::Result<(u64, String)> {
    let report_path = report_path(&plan.output);
    // The output's SHA-256 when the writer computed it on the way, and whether the file
    // went to disk past the page cache.
    let (digest, uncached) = match (&plan.disk, &plan.request) {
        (Some(dp), Some(dreq)) => {
            progress.phase("writing", plan.volume_data_bytes);
            let mut dreq = dreq.clone();
            dreq.progress = progress.hook();
            (disk::write(dp, &dreq)?, true)
        }
        _ => {
            let tree = plan.tree.as_ref().expect("a WIM build keeps its tree");
            progress.phase("writing", plan.volume_data_bytes);
            let (pending, mut file) = PendingOutput::create(&plan.output, true)?;
            let info = &plan.image_info;
            let options = crate::formats::wim::write::CaptureOptions {
                image_name: info.name.clone().unwrap_or_else(|| "Nano Server".into()),
                description: info.description.clone(),
                edition_id: info.edition_id.clone(),
                version: Some((
                    info.version_major.unwrap_or(0),
                    info.version_minor.unwrap_or(0),
                    info.version_build.unwrap_or(0),
                    info.version_spbuild.unwrap_or(0),
                )),
                languages: info.languages.clone(),
                time: unix_to_filetime(plan.source_date_epoch),
                guid: *crate::core::guid::Guid::derive(&plan.seed_bytes, "wim:guid").as_bytes(),
                ..Default::default()
            };
            crate::formats::wim::write::write_wim(
                &mut file,
                &[crate::formats::wim::write::ImageSpec { tree, options }],
                1,
                &|n| progress.advance(n),
            )
            .map_err(|e| io::Error::other(format!("{}: {e}", plan.output.display())))?;
            file.sync_all()?;
            drop(file);
            pending.commit()?;
            (None, false)
        }
    };
    progress.phase("report", 0);
    let (bytes, sha) = match digest {
        Some(d) => (
            std::fs::metadata(&plan.output)?.len(),
            d.iter().map(|b| format!("{b:02x}")).collect(),
        ),
        None if uncached => crate::core::checksum::sha256_file_uncached(&plan.output, &|_| {})?,
        None => sha256_file(&plan.output, &Silent)?,
    };
    let report = Report {
        plan,
        output_bytes: bytes,
        output_sha256: sha.clone(),
    };
    let text = serde_json::to_string_pretty(&report).map_err(io::Error::other)? + "\n";
    let (pending, mut f) = PendingOutput::create(&report_path, true)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    drop(f);
    if let Err(e) = pending.commit() {
        let _ = std::fs::remove_file(&plan.output);
        return Err(e);
    }
    Ok((bytes, sha))
}

/// `OUT.report.json` next to OUT.
pub fn report_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".report.json");
    PathBuf::from(s)
}
