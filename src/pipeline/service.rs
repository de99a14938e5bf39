//! The servicing step of a build: install the resolved packages, the update cabs and the
//! drivers into the volume tree and its SYSTEM and SOFTWARE hives, and say exactly what was
//! and was not applied.

use crate::formats::regf::Hive;
use crate::pipeline::build::Progress;
use crate::servicing::resolve::ResolvedPackage;
use crate::tree::Tree;
use serde::Serialize;
use std::io;
use std::path::PathBuf;

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
    pub packages: Vec<PackageReport>,
    pub drivers: Vec<String>,
    /// Commands the first-boot script must run before the user's (staged packages).
    pub first_boot_commands: Vec<String>,
}

/// One package.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageReport {
    pub name: String,
    /// `neutral` or `language pack`.
    pub part: String,
    pub cab: String,
    pub applied: Vec<String>,
    pub not_applied: Vec<String>,
    pub staged_for_first_boot: bool,
}

/// Install everything; on error the tree and hives may be partly changed (the caller
/// discards them: nothing has been written yet).
pub fn apply(
    _tree: &mut Tree,
    _system: &mut Hive,
    _software: &mut Hive,
    packages: &[ResolvedPackage],
    opts: &Options,
    _progress: &dyn Progress,
) -> io::Result<Report> {
    let mut report = Report::default();
    for p in packages {
        report.packages.push(PackageReport {
            name: p.name.clone(),
            part: match p.part {
                crate::servicing::resolve::Part::Neutral => "neutral".into(),
                crate::servicing::resolve::Part::LanguagePack => "language pack".into(),
            },
            cab: p.path.display().to_string(),
            applied: Vec::new(),
            not_applied: vec![
                "every component (offline component servicing is not available yet)".into(),
            ],
            staged_for_first_boot: false,
        });
    }
    if !opts.drivers.is_empty() || !opts.servicing_packages.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "driver injection and update cabs are not available yet",
        ));
    }
    if !report.packages.is_empty() && !opts.allow_partial {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} could not be applied offline; pass --allow-partial-servicing to build without them",
                report.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(report)
}
