//! `nanoforge packages ...`

use crate::servicing::catalog::Catalog;
use crate::servicing::media::Media;
use crate::servicing::{cab, mum};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum PackagesCommand {
    /// List the package cabs on the media with their identities read from update.mum.
    #[command(after_help = "Examples:
  nanoforge packages list --media /mnt/iso
  nanoforge packages list --media /mnt/iso --language en-US --json")]
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Root of the installation media (holds the NanoServer folder).
    #[arg(long)]
    pub media: PathBuf,
    /// Language folder under NanoServer/Packages, when more than one exists.
    #[arg(long)]
    pub language: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Listed {
    file: String,
    known: Option<String>,
    identity: String,
    version: String,
    language_pack: Option<Box<Listed>>,
}

fn read_identity(path: &Path) -> anyhow::Result<mum::PackageManifest> {
    let files = cab::extract_all(path)?;
    let (_, bytes) = files
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("update.mum"))
        .with_context(|| format!("{}: no update.mum inside", path.display()))?;
    Ok(mum::parse_package(
        &format!("{}:update.mum", path.display()),
        bytes,
    )?)
}

fn cabs_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("cab")))
        .collect();
    v.sort();
    Ok(v)
}

/// Run a `packages` subcommand.
pub fn run(cmd: PackagesCommand) -> anyhow::Result<()> {
    let PackagesCommand::List(a) = cmd;
    let catalog = Catalog::embedded()?;
    let media = Media::open(&a.media, a.language.as_deref())?;
    let langs = match &media.language {
        Some((_, d)) => cabs_in(d)?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for p in cabs_in(&media.packages)? {
        let m = read_identity(&p)?;
        let stem = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let lp = langs.iter().find(|l| {
            let s = l
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_ascii_lowercase();
            let base = stem.to_ascii_lowercase();
            s == base || s.strip_prefix(&base).is_some_and(|r| r.starts_with('_'))
        });
        let language_pack = match lp {
            Some(l) => {
                let lm = read_identity(l)?;
                Some(Box::new(Listed {
                    file: l.display().to_string(),
                    known: None,
                    identity: lm.identity.package_string(),
                    version: lm.identity.version.clone(),
                    language_pack: None,
                }))
            }
            None => None,
        };
        out.push(Listed {
            file: p.display().to_string(),
            known: catalog.by_cab(&stem).map(|k| k.name.clone()),
            identity: m.identity.package_string(),
            version: m.identity.version.clone(),
            language_pack,
        });
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for l in &out {
            println!(
                "{:<18} {} (language pack: {})",
                l.known.as_deref().unwrap_or("(unknown)"),
                l.identity,
                l.language_pack
                    .as_ref()
                    .map(|x| x.identity.as_str())
                    .unwrap_or("missing")
            );
        }
    }
    Ok(())
}
