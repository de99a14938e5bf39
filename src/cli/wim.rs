//! `nanoforge wim ...`: inspect, verify, extract, apply, capture and export WIM archives.

use crate::cli::parse_size;
use crate::core::units::Bytes;
use crate::formats::wim::{self, Wim};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum WimCommand {
    /// Show the header and every image's XML fields.
    #[command(after_help = "Examples:
  nanoforge wim info NanoServer.wim
  nanoforge wim info install.esd --json")]
    Info(InfoArgs),
    /// List the paths of an image (every image when INDEX is omitted).
    #[command(after_help = "Examples:
  nanoforge wim dir NanoServer.wim 1
  nanoforge wim dir NanoServer.wim 1 --detailed")]
    Dir(DirArgs),
    /// Decompress every blob and check its SHA-1 (and the integrity table if present).
    #[command(after_help = "Example:
  nanoforge wim verify NanoServer.wim")]
    Verify(VerifyArgs),
    /// Extract an image's files and data to a host folder.
    #[command(after_help = "Example:
  nanoforge wim extract NanoServer.wim 1 ./nano-files

A Linux folder cannot hold NTFS security descriptors, named streams, most reparse points or
short names; the summary says how many of each were left out. To keep them, apply the image
to an NTFS volume with `nanoforge wim apply`.")]
    Extract(ExtractArgs),
    /// Apply an image to a fresh NTFS volume image (a bare volume, no partition table).
    #[command(after_help = "Examples:
  nanoforge wim apply NanoServer.wim 1 --ntfs-image nano.ntfs
  nanoforge wim apply base.wim 1 --ntfs-image base.ntfs --size 4GiB --cluster-size 8192

Everything a WIM carries is kept: security descriptors, named streams, reparse points, hard
links, short names, attributes and times. Without --size the volume is sized to fit the image
with room to spare. The result reads with ntfs-3g tools (ntfsls, ntfscat, ntfsinfo).")]
    Apply(ApplyArgs),
    /// Capture a host folder as a one-image WIM.
    #[command(
        disable_version_flag = true,
        after_help = "Examples:
  nanoforge wim capture ./nano-files Nano.wim --name \"Nano Server\"
  nanoforge wim capture ./tree out.wim --compress xpress --edition-id ServerStandardNano \\
      --version 10.0.14393.0 --description \"test image\"

Files get the build time (SOURCE_DATE_EPOCH, else a fixed date) and FILE_ATTRIBUTE_ARCHIVE;
symbolic links become symlink reparse points; hard links stay hard links. Identical contents
are stored once. The same folder and options always give the same bytes; the WIM GUID is
derived from --seed (default: from the name and build time)."
    )]
    Capture(CaptureArgs),
    /// Copy one image of a WIM into a new one-image WIM (its XML fields are kept).
    #[command(after_help = "Examples:
  nanoforge wim export install.wim 2 standard.wim
  nanoforge wim export install.wim 1 small.wim --compress lzx --force")]
    Export(ExportArgs),
}

/// Compression choice on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Xpress,
    Lzx,
}

impl From<CompressArg> for wim::write::Compression {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::None => wim::write::Compression::None,
            CompressArg::Xpress => wim::write::Compression::Xpress,
            CompressArg::Lzx => wim::write::Compression::Lzx,
        }
    }
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Folder to capture (it becomes the image root).
    pub dir: PathBuf,
    /// Output WIM.
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "lzx")]
    pub compress: CompressArg,
    /// Chunk size: XPRESS 4096..65536, LZX 32768..2097152 (Windows reads only 32768).
    #[arg(long, default_value = "32768", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Image name (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Image DESCRIPTION.
    #[arg(long)]
    pub description: Option<String>,
    /// Image DISPLAYNAME (what Windows Setup lists).
    #[arg(long)]
    pub display_name: Option<String>,
    /// Image DISPLAYDESCRIPTION.
    #[arg(long)]
    pub display_description: Option<String>,
    /// WINDOWS/EDITIONID, also written as FLAGS.
    #[arg(long)]
    pub edition_id: Option<String>,
    /// WINDOWS/VERSION as MAJOR.MINOR.BUILD.SPBUILD.
    #[arg(long, value_parser = parse_version)]
    pub version: Option<(u32, u32, u32, u32)>,
    /// WINDOWS/ARCH: x86, arm, ia64, amd64 (also x64) or arm64.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<u32>,
    /// WINDOWS/INSTALLATIONTYPE (Nano Server images say "Nano Server").
    #[arg(long)]
    pub installation_type: Option<String>,
    /// WINDOWS/LANGUAGES entry (repeatable; the first is the default).
    #[arg(long = "language")]
    pub languages: Vec<String>,
    /// Seed for the WIM GUID.
    #[arg(long)]
    pub seed: Option<String>,
    /// Also write an integrity table (SHA-1s of the file's pieces; `wimlib-imagex verify`
    /// and `nanoforge wim verify` check it).
    #[arg(long)]
    pub check: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub file: PathBuf,
    /// Image index, from 1.
    pub index: usize,
    /// Output WIM.
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "lzx")]
    pub compress: CompressArg,
    #[arg(long, default_value = "32768", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Seed for the WIM GUID (default: derived from the source GUID and index).
    #[arg(long)]
    pub seed: Option<String>,
    /// Also write an integrity table (SHA-1s of the file's pieces; `wimlib-imagex verify`
    /// and `nanoforge wim verify` check it).
    #[arg(long)]
    pub check: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

fn parse_arch(s: &str) -> Result<u32, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "x86" => 0,
        "arm" => 5,
        "ia64" => 6,
        "amd64" | "x64" => 9,
        "arm64" => 12,
        _ => return Err(format!("{s:?}: expected x86, arm, ia64, amd64 or arm64")),
    })
}

fn parse_version(s: &str) -> Result<(u32, u32, u32, u32), String> {
    let p: Vec<&str> = s.split('.').collect();
    let n = |i: usize| -> Result<u32, String> {
        match p.get(i) {
            None => Ok(0),
            Some(x) => x
                .parse()
                .map_err(|_| format!("{s:?}: version parts must be numbers (like 10.0.14393.0)")),
        }
    };
    if p.len() < 3 || p.len() > 4 {
        return Err(format!("{s:?}: expected MAJOR.MINOR.BUILD[.SPBUILD]"));
    }
    Ok((n(0)?, n(1)?, n(2)?, n(3)?))
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    pub file: PathBuf,
    /// Image index, from 1.
    pub index: usize,
    /// Output volume image (raw, sparse).
    #[arg(long, value_name = "OUT")]
    pub ntfs_image: PathBuf,
    /// Volume size (default: what the image needs plus a quarter, at least 64 MiB).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Cluster size in bytes (512 to 65536, a power of two).
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub cluster_size: u64,
    /// Seed for the volume serial (default: derived from the WIM).
    #[arg(long)]
    pub seed: Option<String>,
    /// Keep names that differ only in case in one folder (WIMs captured from Linux
    /// folders have them; Windows itself then reaches only one of each pair).
    #[arg(long)]
    pub case_sensitive: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// WIM file (or the first .swm part of a split set).
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    pub file: PathBuf,
    /// Image index, from 1.
    pub index: Option<usize>,
    /// Show every entry's metadata (attributes, times, security, streams, links).
    #[arg(long)]
    pub detailed: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    pub file: PathBuf,
    /// Image index, from 1.
    pub index: usize,
    /// Destination folder (created; must be empty if it exists).
    pub dest: PathBuf,
}

/// Open a WIM, or a split set when given the first `.swm` part.
pub fn open(path: &Path) -> anyhow::Result<Wim> {
    let is_swm = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("swm"));
    let wim = if is_swm {
        let parts = split_parts(path)?;
        Wim::open_split(&parts)
    } else {
        Wim::open(path)
    };
    wim.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `name.swm` plus `name2.swm`, `name3.swm`, ... beside it, as wimlib names split parts.
fn split_parts(first: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let stem = first
        .file_stem()
        .context("split WIM part has no name")?
        .to_string_lossy()
        .into_owned();
    let dir = first.parent().unwrap_or(Path::new("."));
    let mut parts = vec![first.to_path_buf()];
    for n in 2.. {
        let p = dir.join(format!("{stem}{n}.swm"));
        if !p.exists() {
            break;
        }
        parts.push(p);
    }
    Ok(parts)
}

pub fn run(cmd: WimCommand, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        WimCommand::Apply(a) => apply(a, quiet),
        WimCommand::Info(a) => info(a),
        WimCommand::Dir(a) => dir(a),
        WimCommand::Verify(a) => verify(a),
        WimCommand::Extract(a) => extract(a),
        WimCommand::Capture(a) => capture(a, quiet),
        WimCommand::Export(a) => export(a, quiet),
    }
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let w = open(&a.file)?;
    if a.json {
        let v = serde_json::json!({ "header": w.header(), "images": w.images() });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let h = w.header();
    println!("file          {}", a.file.display());
    println!("version       {:#x}", h.version);
    println!("compression   {:?}", w.codec());
    println!("chunk size    {}", h.chunk_size);
    println!("part          {} of {}", h.part_number, h.total_parts);
    println!("images        {}", h.image_count);
    println!("boot index    {}", h.boot_index);
    println!("flags         {}", h.flag_names().join(" "));
    for i in w.images() {
        println!();
        println!("image {}", i.index);
        let opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                println!("  {k:<14}{v}");
            }
        };
        opt("name", &i.name);
        opt("description", &i.description);
        opt("display name", &i.display_name);
        opt("edition id", &i.edition_id);
        opt("flags", &i.flags);
        if let (Some(a), Some(b), Some(c)) = (i.version_major, i.version_minor, i.version_build) {
            println!(
                "  {:<14}{a}.{b}.{c}.{}",
                "version",
                i.version_spbuild.unwrap_or(0)
            );
        }
        if !i.languages.is_empty() {
            println!("  {:<14}{}", "languages", i.languages.join(", "));
        }
        if let Some(t) = i.total_bytes {
            println!("  {:<14}{} ({t} bytes)", "total bytes", Bytes(t));
        }
        if let Some(t) = i.creation_time {
            println!(
                "  {:<14}{}",
                "created",
                crate::containers::store::round_trip_time(t)
            );
        }
    }
    Ok(())
}

fn dir(a: DirArgs) -> anyhow::Result<()> {
    let w = open(&a.file)?;
    let indices: Vec<usize> = match a.index {
        Some(i) => vec![i],
        None => (1..=w.image_count()).collect(),
    };
    for i in indices {
        for line in w
            .dir_lines(i, a.detailed)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?
        {
            println!("{line}");
        }
    }
    Ok(())
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let w = open(&a.file)?;
    let r = w
        .verify()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    println!(
        "{}: OK: {} images, {} blobs, {} checked by SHA-1{}",
        a.file.display(),
        r.images,
        r.blobs,
        Bytes(r.bytes),
        if r.integrity_checked {
            ", integrity table matches"
        } else {
            ""
        }
    );
    Ok(())
}

fn extract(a: ExtractArgs) -> anyhow::Result<()> {
    let w = open(&a.file)?;
    let r = wim::extract(&w, a.index, &a.dest)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    eprintln!(
        "extracted {} files, {} folders, {} ({} hard links, {} symlinks) to {}",
        r.files,
        r.directories,
        Bytes(r.bytes),
        r.hard_links,
        r.symlinks,
        a.dest.display()
    );
    let skipped = [
        (r.named_streams_skipped, "named data streams"),
        (r.security_descriptors_skipped, "security descriptors"),
        (
            r.reparse_points_skipped,
            "reparse points other than symlinks and junctions",
        ),
        (r.short_names_skipped, "DOS short names"),
        (r.encrypted_skipped, "encrypted files"),
    ];
    for (n, what) in skipped {
        if n > 0 {
            eprintln!("not representable in a Linux folder, left out: {n} {what}");
        }
    }
    Ok(())
}

/// Smallest volume `wim apply` makes when sizing it itself.
const MIN_AUTO_SIZE: u64 = 64 << 20;

fn apply(a: ApplyArgs, quiet: bool) -> anyhow::Result<()> {
    use crate::core::guid::Guid;
    use crate::core::output::PendingOutput;
    use crate::core::time::{build_epoch, unix_to_filetime};
    use crate::formats::{ntfs, raw};
    use crate::pipeline::seed::{self, SeedBuilder};
    use crate::tree::{wim as tree_wim, Meta, Tree};
    use std::sync::Arc;

    let w = Arc::new(open(&a.file)?);
    crate::pipeline::disk::check_image_index(&a.file, &w, a.index)?;
    let time = unix_to_filetime(build_epoch()?);
    let mut tree = Tree::new(Meta::at(time));
    tree.set_case_sensitive(a.case_sensitive);
    let report = tree_wim::add_image(&mut tree, Tree::ROOT, &w, a.index)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let mut sb = SeedBuilder::new("wim apply");
    sb.add("wim", &w.header().guid)
        .add("index", &(a.index as u64).to_le_bytes());
    let seed = seed::resolve(a.seed.as_deref(), sb);
    let cluster = u32::try_from(a.cluster_size).context("--cluster-size is too large")?;
    let mut opts = ntfs::NtfsOptions {
        size: 0,
        cluster_size: cluster,
        serial: Guid::derive_u64(&seed, "ntfs:serial"),
        time,
        ..ntfs::NtfsOptions::default()
    };
    opts.size = match a.size {
        Some(s) => s,
        None => {
            // Plan on a roomy volume to learn what the image needs, then size to fit.
            let probe = ntfs::NtfsOptions {
                size: 1 << 40,
                ..opts.clone()
            };
            let need = ntfs::check_volume(&tree, &probe)?.used_clusters * cluster as u64;
            (need + need / 4).max(MIN_AUTO_SIZE).div_ceil(1 << 20) << 20
        }
    };
    let (pending, file) = PendingOutput::create(&a.ntfs_image, a.force)?;
    let mut out = raw::RawWriter::create(file, opts.size)?;
    let r = ntfs::write_volume(&tree, &opts, &mut out, 0).map_err(|e| {
        anyhow::anyhow!(
            "{} image {} onto {}: {e}",
            a.file.display(),
            a.index,
            a.ntfs_image.display()
        )
    })?;
    crate::core::WriteAt::finish(Box::new(out))?;
    pending.commit()?;
    if !quiet {
        eprintln!(
            "wrote {}: {} NTFS volume, {} files, {} folders, {} of data, {} clusters of {} used",
            a.ntfs_image.display(),
            Bytes(opts.size),
            r.files,
            r.directories,
            Bytes(report.bytes),
            r.used_clusters,
            r.cluster_size
        );
        print_apply_notes(&report);
    }
    Ok(())
}

/// Say what was done with what an NTFS volume of ours does not carry as the WIM did.
pub fn print_apply_notes(r: &crate::tree::wim::WimApplyReport) {
    if r.compressed_written_plain > 0 {
        eprintln!(
            "note: {} files marked compressed were written uncompressed (attribute cleared)",
            r.compressed_written_plain
        );
    }
    if r.sparse_written_dense > 0 {
        eprintln!(
            "note: {} files marked sparse were written with all their data (attribute cleared)",
            r.sparse_written_dense
        );
    }
    if r.encrypted_skipped > 0 {
        eprintln!(
            "note: {} encrypted files were left out: EFS data cannot be applied offline",
            r.encrypted_skipped
        );
    }
}

fn capture(a: CaptureArgs, quiet: bool) -> anyhow::Result<()> {
    use crate::core::guid::Guid;
    use crate::core::output::PendingOutput;
    use crate::core::time::{build_epoch, unix_to_filetime};
    use crate::pipeline::seed::{self, SeedBuilder};
    use crate::tree::{host::HostOptions, Tree};

    let time = unix_to_filetime(build_epoch()?);
    let host = HostOptions {
        time,
        symlinks: true,
        case_sensitive: true,
        windows_names: false,
    };
    let tree = Tree::from_host_dir(&a.dir, &host)
        .map_err(|e| anyhow::anyhow!("capturing {}: {e}", a.dir.display()))?;
    let name = match a.name {
        Some(n) => n,
        None => std::fs::canonicalize(&a.dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "image".into()),
    };
    let mut sb = SeedBuilder::new("wim capture");
    sb.add("name", name.as_bytes())
        .add("time", &time.to_le_bytes());
    let seed = seed::resolve(a.seed.as_deref(), sb);
    let options = wim::write::CaptureOptions {
        compression: a.compress.into(),
        chunk_size: u32::try_from(a.chunk_size).context("--chunk-size is too large")?,
        image_name: name,
        description: a.description,
        flags: a.edition_id.clone(),
        edition_id: a.edition_id,
        version: a.version,
        languages: a.languages,
        time,
        guid: Guid::derive(&seed, "wim:guid").to_mixed_endian(),
        display_name: a.display_name,
        display_description: a.display_description,
        last_modification_time: None,
        arch: a.arch,
        product_name: None,
        installation_type: a.installation_type,
    };
    let total = wim::write::stream_bytes(&tree);
    let (pending, mut file) = PendingOutput::create(&a.out, a.force)?;
    let pb = crate::cli::progress::bytes("capture", total, quiet);
    let images = [wim::write::ImageSpec {
        tree: &tree,
        options,
    }];
    let r = wim::write::write_wim(&mut file, &images, 0, &|n| pb.inc(n))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", a.out.display()))?;
    let size = finish_wim(file, pending, a.check, &pb)?;
    if !quiet {
        eprintln!(
            "wrote {}: {} in {} blobs, {} file",
            a.out.display(),
            Bytes(r.bytes_in),
            r.blobs,
            Bytes(size)
        );
    }
    Ok(())
}

fn export(a: ExportArgs, quiet: bool) -> anyhow::Result<()> {
    use crate::core::guid::Guid;
    use crate::core::output::PendingOutput;
    use crate::pipeline::seed::{self, SeedBuilder};
    use std::sync::Arc;

    let w = Arc::new(open(&a.file)?);
    crate::pipeline::disk::check_image_index(&a.file, &w, a.index)?;
    let mut sb = SeedBuilder::new("wim export");
    sb.add("wim", &w.header().guid)
        .add("index", &(a.index as u64).to_le_bytes());
    let seed = seed::resolve(a.seed.as_deref(), sb);
    let time = crate::core::time::unix_to_filetime(crate::core::time::build_epoch()?);
    let base = wim::write::CaptureOptions {
        compression: a.compress.into(),
        chunk_size: u32::try_from(a.chunk_size).context("--chunk-size is too large")?,
        guid: Guid::derive(&seed, "wim:guid").to_mixed_endian(),
        time,
        ..Default::default()
    };
    // Each distinct stream once: total bytes less the extra links' share.
    let total = w
        .images()
        .get(a.index - 1)
        .map(|i| {
            i.total_bytes
                .unwrap_or(0)
                .saturating_sub(i.hard_link_bytes.unwrap_or(0))
        })
        .unwrap_or(0);
    let (pending, mut file) = PendingOutput::create(&a.out, a.force)?;
    let pb = crate::cli::progress::bytes("export", total, quiet);
    let r =
        wim::write::export_image(&w, a.index, &mut file, &base, &|n| pb.inc(n)).map_err(|e| {
            anyhow::anyhow!(
                "{} image {} to {}: {e}",
                a.file.display(),
                a.index,
                a.out.display()
            )
        })?;
    let size = finish_wim(file, pending, a.check, &pb)?;
    if !quiet {
        eprintln!(
            "wrote {}: image {} of {}, {} in {} blobs, {} file",
            a.out.display(),
            a.index,
            a.file.display(),
            Bytes(r.bytes_in),
            r.blobs,
            Bytes(size)
        );
    }
    Ok(())
}

/// Add the integrity table when asked, flush, and move the finished WIM into place;
/// returns its size.
fn finish_wim(
    mut file: std::fs::File,
    pending: crate::core::output::PendingOutput,
    check: bool,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    if check {
        wim::write::add_integrity_table(&mut file)?;
    }
    pb.finish_and_clear();
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    pending.commit()?;
    Ok(size)
}
