//! The servicing step of a build: install the resolved packages and the update cabs
//! (`servicing::project`, offline component servicing) and the drivers (the packages'
//! driver components and `--driver` folders) into the volume tree and its SYSTEM and
//! SOFTWARE hives, and say exactly what was and was not applied.
//!
//! A package with elements that could not be applied offline fails the build, unless
//! `allow_partial` (build without them) or `first_boot` (stage the package's cab in the image
//! and install it with `dism /online /add-package` from SetupComplete.cmd).

use crate::formats::regf::Hive;
use crate::pipeline::build::Progress;
use crate::servicing::cab;
use crate::servicing::drivers::{self, DriverPackage, InjectOptions};
use crate::servicing::project::{self, LoadedPackage, ProjectOptions, ServicingReport};
use crate::servicing::resolve::{Part, ResolvedPackage};
use crate::tree::{Content, Meta, Tree};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// Where staged package cabs go inside the volume.
pub const STAGING_DIR: &str = "Windows\\servicing\\nanoforge-staged";

/// How the step may behave.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Build even when elements could not be applied.
    pub allow_partial: bool,
    /// Stage packages with unapplied elements and install them with DISM at first boot.
    pub first_boot: bool,
    /// FILETIME of new files and keys.
    pub time: u64,
    /// `--driver` folders and INF files.
    pub drivers: Vec<PathBuf>,
    /// Update cabs, in order.
    pub servicing_packages: Vec<PathBuf>,
}

/// What the step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub packages: ServicingReport,
    /// Drivers injected (from packages and `--driver`).
    pub drivers: Vec<drivers::DriverReport>,
    /// Cabs staged in the image for DISM at first boot.
    pub staged: Vec<String>,
    /// Commands the first-boot script must run before the user's.
    pub first_boot_commands: Vec<String>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Read an update cab given by path.
fn load_update(path: &Path) -> io::Result<LoadedPackage> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let members = cab::extract_all(path).map_err(io::Error::from)?;
    LoadedPackage::from_members(&name, Part::Neutral, &file, members)
        .map_err(|e| invalid(e.to_string()))
}

/// Install everything. On error nothing has been written yet; the caller discards the tree.
pub fn apply(
    tree: &mut Tree,
    system: &mut Hive,
    software: &mut Hive,
    packages: &[ResolvedPackage],
    opts: &Options,
    progress: &dyn Progress,
) -> io::Result<Report> {
    let mut loaded = Vec::new();
    let mut sources: Vec<PathBuf> = Vec::new();
    for p in packages {
        progress.detail(&format!("reading {}", p.path.display()));
        loaded.push(project::load(p).map_err(|e| invalid(e.to_string()))?);
        sources.push(p.path.clone());
    }
    for p in &opts.servicing_packages {
        progress.detail(&format!("reading update {}", p.display()));
        loaded.push(load_update(p)?);
        sources.push(p.clone());
    }
    let popts = ProjectOptions {
        timestamp: opts.time,
        ..ProjectOptions::default()
    };
    let svc = project::apply_packages(tree, system, software, &loaded, &popts)
        .map_err(|e| invalid(e.to_string()))?;
    let mut report = Report {
        packages: svc,
        ..Report::default()
    };
    inject_drivers(tree, system, &mut report, opts)?;

    // Packages with unapplied elements.
    let partial: Vec<(String, String)> = report
        .packages
        .packages
        .iter()
        .filter(|p| !p.not_applied.is_empty())
        .map(|p| (p.name.clone(), p.cab.clone()))
        .collect();
    if !partial.is_empty() {
        if opts.first_boot {
            let meta = Meta::at(opts.time);
            let dir = tree
                .mkdir_p(STAGING_DIR, &meta)
                .map_err(|e| invalid(format!("{STAGING_DIR}: {e}")))?;
            for (name, cab) in &partial {
                let Some(src) = loaded
                    .iter()
                    .zip(&sources)
                    .find(|(l, _)| &l.cab == cab)
                    .map(|(_, s)| s.clone())
                else {
                    continue;
                };
                let file = src
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if tree.child(dir, &file).is_some() {
                    continue;
                }
                let len = std::fs::metadata(&src)?.len();
                tree.add_file(dir, &file, meta.clone(), Content::HostFile(src, len))
                    .map_err(|e| invalid(format!("{STAGING_DIR}\\{file}: {e}")))?;
                report.staged.push(format!("{name}: {STAGING_DIR}\\{file}"));
                report.first_boot_commands.push(format!(
                    "dism.exe /online /add-package /packagepath:\"%SystemRoot%\\{}\\{file}\" /quiet /norestart",
                    STAGING_DIR.trim_start_matches("Windows\\")
                ));
            }
        } else if !opts.allow_partial {
            let first = report
                .packages
                .packages
                .iter()
                .find(|p| !p.not_applied.is_empty())
                .map(|p| format!("{}: {}", p.cab, p.not_applied[0]))
                .unwrap_or_default();
            let mut names: Vec<&str> = partial.iter().map(|(n, _)| n.as_str()).collect();
            names.dedup();
            return Err(invalid(format!(
                "{} cannot be applied completely offline (first: {first}); pass \
                 --allow-partial-servicing to build without those elements, or \
                 --first-boot-servicing to install the packages with DISM at first boot; \
                 --dry-run lists every element",
                names.join(", ")
            )));
        }
    }
    Ok(report)
}

/// Driver injection: the packages' driver components, then `--driver` folders or INF files,
/// in the order given.
fn inject_drivers(
    tree: &mut Tree,
    system: &mut Hive,
    report: &mut Report,
    opts: &Options,
) -> io::Result<()> {
    let mut pkgs: Vec<DriverPackage> = report
        .packages
        .driver_payloads
        .iter()
        .map(|d| DriverPackage {
            source: format!("{} ({})", d.inf, d.package),
            inf: d.inf.clone(),
            files: d.files.clone(),
        })
        .collect();
    for path in &opts.drivers {
        let md = std::fs::metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("driver {}: {e}", path.display())))?;
        let found = if md.is_dir() {
            drivers::from_dir(path).map_err(|e| invalid(e.to_string()))?
        } else {
            // One INF: its folder's packages, keeping that INF only.
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
            let dir = path.parent().unwrap_or(Path::new("."));
            drivers::from_dir(dir)
                .map_err(|e| invalid(e.to_string()))?
                .into_iter()
                .filter(|p| Some(p.inf.to_lowercase()) == name)
                .collect()
        };
        if found.is_empty() {
            return Err(invalid(format!(
                "driver {}: no .inf file found; give a folder holding driver packages or an .inf file",
                path.display()
            )));
        }
        pkgs.extend(found);
    }
    let iopts = InjectOptions {
        timestamp: opts.time,
        ..InjectOptions::default()
    };
    for p in &pkgs {
        let r = drivers::inject(tree, system, p, &iopts).map_err(|e| invalid(e.to_string()))?;
        report.drivers.push(r);
    }
    Ok(())
}
